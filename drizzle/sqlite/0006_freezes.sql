CREATE TABLE `freezes` (
	`id` text PRIMARY KEY NOT NULL,
	`env` text NOT NULL,
	`service` text,
	`reason` text NOT NULL,
	`starts_at` integer NOT NULL,
	`ends_at` integer,
	`ended_at` integer,
	`ended_by_id` text,
	`ended_by_name` text,
	`end_reason` text,
	`created_at` integer NOT NULL,
	`created_by_id` text NOT NULL,
	`created_by_name` text NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by_id` text NOT NULL,
	`updated_by_name` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `freezes_env_idx` ON `freezes` (`env`,`starts_at`);