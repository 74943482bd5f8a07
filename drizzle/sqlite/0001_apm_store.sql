CREATE TABLE `apm_errors` (
	`service` text NOT NULL,
	`env` text NOT NULL,
	`version` text NOT NULL,
	`resource` text NOT NULL,
	`primary_tag` text NOT NULL,
	`bucket` integer NOT NULL,
	`error_type` text NOT NULL,
	`count` integer NOT NULL,
	`sample_message` text,
	PRIMARY KEY(`service`, `env`, `version`, `resource`, `primary_tag`, `error_type`, `bucket`)
);
--> statement-breakpoint
CREATE INDEX `apm_errors_service_bucket_idx` ON `apm_errors` (`service`,`env`,`bucket`);--> statement-breakpoint
CREATE TABLE `apm_stats` (
	`service` text NOT NULL,
	`env` text NOT NULL,
	`version` text NOT NULL,
	`resource` text NOT NULL,
	`primary_tag` text NOT NULL,
	`bucket` integer NOT NULL,
	`hits` integer NOT NULL,
	`errors` integer NOT NULL,
	`durations` blob NOT NULL,
	PRIMARY KEY(`service`, `env`, `version`, `resource`, `primary_tag`, `bucket`)
);
--> statement-breakpoint
CREATE INDEX `apm_stats_service_bucket_idx` ON `apm_stats` (`service`,`env`,`bucket`);--> statement-breakpoint
CREATE INDEX `apm_stats_bucket_idx` ON `apm_stats` (`bucket`);