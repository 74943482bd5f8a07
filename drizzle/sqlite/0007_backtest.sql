CREATE TABLE `backtests` (
	`id` text PRIMARY KEY NOT NULL,
	`gate_id` text,
	`service` text NOT NULL,
	`env` text NOT NULL,
	`configuration` text NOT NULL,
	`from` integer NOT NULL,
	`to` integer NOT NULL,
	`status` text NOT NULL,
	`done` integer DEFAULT 0 NOT NULL,
	`total` integer DEFAULT 0 NOT NULL,
	`results` text NOT NULL,
	`skipped_rules` text NOT NULL,
	`summary` text,
	`error` text,
	`node_id` text NOT NULL,
	`trigger_envs` text,
	`created_by_id` text NOT NULL,
	`created_by_name` text NOT NULL,
	`created_at` integer NOT NULL,
	`finished_at` integer,
	`revision` integer DEFAULT 1 NOT NULL,
	FOREIGN KEY (`gate_id`) REFERENCES `gates`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `backtests_env_idx` ON `backtests` (`env`,`id`);--> statement-breakpoint
CREATE INDEX `backtests_running_by_key_idx` ON `backtests` (`created_by_id`) WHERE "backtests"."status" = 'running';--> statement-breakpoint
CREATE INDEX `backtests_gate_idx` ON `backtests` (`gate_id`);