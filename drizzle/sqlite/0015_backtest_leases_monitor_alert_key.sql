ALTER TABLE `backtests` ADD `lease_expires_at` integer;--> statement-breakpoint
ALTER TABLE `monitors` ADD `alert_key` text;--> statement-breakpoint
CREATE UNIQUE INDEX `monitors_alert_key_idx` ON `monitors` (`alert_key`);