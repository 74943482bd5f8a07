CREATE TABLE `apm_instance_stats` (
	`service` text NOT NULL,
	`env` text NOT NULL,
	`version` text NOT NULL,
	`instance` text NOT NULL,
	`bucket` integer NOT NULL,
	`hits` integer NOT NULL,
	`errors` integer NOT NULL,
	PRIMARY KEY(`service`, `env`, `version`, `instance`, `bucket`)
);
--> statement-breakpoint
CREATE INDEX `apm_instance_stats_service_bucket_idx` ON `apm_instance_stats` (`service`,`env`,`bucket`);--> statement-breakpoint
CREATE INDEX `apm_instance_stats_bucket_idx` ON `apm_instance_stats` (`bucket`);