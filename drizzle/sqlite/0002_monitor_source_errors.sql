ALTER TABLE `monitors` ADD `source_errors` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `monitors` ADD `last_source_error` text;