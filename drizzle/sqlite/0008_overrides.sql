ALTER TABLE `evaluations` ADD `override_status` text;--> statement-breakpoint
ALTER TABLE `evaluations` ADD `override_reason` text;--> statement-breakpoint
ALTER TABLE `evaluations` ADD `overridden_at` integer;--> statement-breakpoint
ALTER TABLE `evaluations` ADD `overridden_by_id` text;--> statement-breakpoint
ALTER TABLE `evaluations` ADD `overridden_by_name` text;--> statement-breakpoint
ALTER TABLE `evaluations` ADD `override_replaced` text;