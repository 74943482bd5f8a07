DROP INDEX `evaluations_idempotency_unique`;--> statement-breakpoint
ALTER TABLE `evaluations` ADD `trigger_envs` text;--> statement-breakpoint
CREATE UNIQUE INDEX `evaluations_env_idempotency_unique` ON `evaluations` (`env`,`idempotency_key`) WHERE "evaluations"."idempotency_key" is not null;