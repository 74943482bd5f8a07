DROP INDEX `evaluations_in_progress_by_key_idx`;--> statement-breakpoint
CREATE INDEX `evaluations_running_by_key_idx` ON `evaluations` (`triggered_by_id`) WHERE "evaluations"."finished_at" is null;