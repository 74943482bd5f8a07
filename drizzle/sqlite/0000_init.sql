CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`secret_hash` text NOT NULL,
	`prefix` text NOT NULL,
	`scopes` text NOT NULL,
	`envs` text,
	`created_at` integer NOT NULL,
	`created_by_id` text,
	`expires_at` integer,
	`last_used_at` integer,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_secret_hash_unique` ON `api_keys` (`secret_hash`);--> statement-breakpoint
CREATE TABLE `audit_log` (
	`id` text PRIMARY KEY NOT NULL,
	`at` integer NOT NULL,
	`actor_id` text NOT NULL,
	`actor_name` text NOT NULL,
	`action` text NOT NULL,
	`target_type` text NOT NULL,
	`target_id` text NOT NULL,
	`before` text,
	`after` text
);
--> statement-breakpoint
CREATE INDEX `audit_log_target_idx` ON `audit_log` (`target_type`,`target_id`);--> statement-breakpoint
CREATE INDEX `audit_log_at_idx` ON `audit_log` (`at`);--> statement-breakpoint
CREATE TABLE `evaluations` (
	`id` text PRIMARY KEY NOT NULL,
	`gate_id` text,
	`service` text NOT NULL,
	`env` text NOT NULL,
	`identifier` text NOT NULL,
	`version` text,
	`primary_tag` text,
	`dry_run` integer NOT NULL,
	`on_source_error` text NOT NULL,
	`status` text NOT NULL,
	`just_in_time` integer NOT NULL,
	`idempotency_key` text,
	`rerun_of` text,
	`triggered_by_id` text NOT NULL,
	`triggered_by_name` text NOT NULL,
	`started_at` integer NOT NULL,
	`decided_at` integer,
	`finished_at` integer,
	`lease_owner` text,
	`lease_expires_at` integer,
	`revision` integer DEFAULT 1 NOT NULL,
	FOREIGN KEY (`gate_id`) REFERENCES `gates`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE UNIQUE INDEX `evaluations_idempotency_unique` ON `evaluations` (`idempotency_key`) WHERE "evaluations"."idempotency_key" is not null;--> statement-breakpoint
CREATE INDEX `evaluations_key_started_idx` ON `evaluations` (`service`,`env`,`identifier`,`started_at`);--> statement-breakpoint
CREATE INDEX `evaluations_status_idx` ON `evaluations` (`status`);--> statement-breakpoint
CREATE INDEX `evaluations_started_idx` ON `evaluations` (`started_at`);--> statement-breakpoint
CREATE INDEX `evaluations_gate_idx` ON `evaluations` (`gate_id`);--> statement-breakpoint
CREATE INDEX `evaluations_unfinished_idx` ON `evaluations` (`finished_at`,`lease_owner`);--> statement-breakpoint
CREATE TABLE `gates` (
	`id` text PRIMARY KEY NOT NULL,
	`service` text NOT NULL,
	`env` text NOT NULL,
	`identifier` text NOT NULL,
	`dry_run` integer NOT NULL,
	`on_source_error` text NOT NULL,
	`created_at` integer NOT NULL,
	`created_by_id` text NOT NULL,
	`created_by_name` text NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by_id` text NOT NULL,
	`updated_by_name` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `gates_key_unique` ON `gates` (`service`,`env`,`identifier`);--> statement-breakpoint
CREATE INDEX `gates_env_idx` ON `gates` (`env`);--> statement-breakpoint
CREATE TABLE `monitor_groups` (
	`monitor_id` text NOT NULL,
	`group` text NOT NULL,
	`state` text NOT NULL,
	`since` integer NOT NULL,
	`message` text,
	`last_reported_at` integer NOT NULL,
	PRIMARY KEY(`monitor_id`, `group`),
	FOREIGN KEY (`monitor_id`) REFERENCES `monitors`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `monitor_transitions` (
	`id` text PRIMARY KEY NOT NULL,
	`monitor_id` text NOT NULL,
	`group` text NOT NULL,
	`from` text,
	`to` text NOT NULL,
	`at` integer NOT NULL,
	`message` text,
	FOREIGN KEY (`monitor_id`) REFERENCES `monitors`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `monitor_transitions_monitor_at_idx` ON `monitor_transitions` (`monitor_id`,`at`);--> statement-breakpoint
CREATE INDEX `monitor_transitions_at_idx` ON `monitor_transitions` (`at`);--> statement-breakpoint
CREATE TABLE `monitors` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`type` text NOT NULL,
	`tags` text NOT NULL,
	`query` text DEFAULT '' NOT NULL,
	`definition` text,
	`critical` real,
	`warning` real,
	`muted` integer NOT NULL,
	`priority` integer,
	`no_data_timeframe` integer,
	`created_at` integer NOT NULL,
	`created_by_id` text NOT NULL,
	`created_by_name` text NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by_id` text NOT NULL,
	`updated_by_name` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `monitors_name_idx` ON `monitors` (`name`);--> statement-breakpoint
CREATE TABLE `rule_evaluations` (
	`id` text PRIMARY KEY NOT NULL,
	`evaluation_id` text NOT NULL,
	`rule_id` text,
	`position` integer NOT NULL,
	`name` text NOT NULL,
	`type` text NOT NULL,
	`dry_run` integer NOT NULL,
	`options` text NOT NULL,
	`status` text NOT NULL,
	`reason` text,
	`evidence` text,
	`started_at` integer NOT NULL,
	`window_starts_at` integer NOT NULL,
	`window_ends_at` integer NOT NULL,
	`finished_at` integer,
	`next_check_at` integer,
	`consecutive_errors` integer DEFAULT 0 NOT NULL,
	`last_error` text,
	`state` text,
	FOREIGN KEY (`evaluation_id`) REFERENCES `evaluations`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `rule_evaluations_evaluation_idx` ON `rule_evaluations` (`evaluation_id`,`position`);--> statement-breakpoint
CREATE INDEX `rule_evaluations_due_idx` ON `rule_evaluations` (`status`,`next_check_at`);--> statement-breakpoint
CREATE TABLE `rules` (
	`id` text PRIMARY KEY NOT NULL,
	`gate_id` text NOT NULL,
	`name` text NOT NULL,
	`type` text NOT NULL,
	`dry_run` integer NOT NULL,
	`options` text NOT NULL,
	`created_at` integer NOT NULL,
	`created_by_id` text NOT NULL,
	`created_by_name` text NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by_id` text NOT NULL,
	`updated_by_name` text NOT NULL,
	FOREIGN KEY (`gate_id`) REFERENCES `gates`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `rules_gate_name_unique` ON `rules` (`gate_id`,`name`);