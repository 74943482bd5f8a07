CREATE TABLE "api_keys" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"secret_hash" text NOT NULL,
	"prefix" text NOT NULL,
	"scopes" jsonb NOT NULL,
	"envs" jsonb,
	"created_at" bigint NOT NULL,
	"created_by_id" text,
	"expires_at" bigint,
	"last_used_at" bigint,
	"revoked_at" bigint
);
--> statement-breakpoint
CREATE TABLE "apm_errors" (
	"service" text NOT NULL,
	"env" text NOT NULL,
	"version" text NOT NULL,
	"resource" text NOT NULL,
	"primary_tag" text NOT NULL,
	"bucket" bigint NOT NULL,
	"error_type" text NOT NULL,
	"count" bigint NOT NULL,
	"sample_message" text,
	CONSTRAINT "apm_errors_pk" PRIMARY KEY("service","env","version","resource","primary_tag","error_type","bucket")
);
--> statement-breakpoint
CREATE TABLE "apm_stats" (
	"service" text NOT NULL,
	"env" text NOT NULL,
	"version" text NOT NULL,
	"resource" text NOT NULL,
	"primary_tag" text NOT NULL,
	"bucket" bigint NOT NULL,
	"hits" bigint NOT NULL,
	"errors" bigint NOT NULL,
	"durations" "bytea" NOT NULL,
	CONSTRAINT "apm_stats_service_env_version_resource_primary_tag_bucket_pk" PRIMARY KEY("service","env","version","resource","primary_tag","bucket")
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" text PRIMARY KEY NOT NULL,
	"at" bigint NOT NULL,
	"actor_id" text NOT NULL,
	"actor_name" text NOT NULL,
	"action" text NOT NULL,
	"target_type" text NOT NULL,
	"target_id" text NOT NULL,
	"before" jsonb,
	"after" jsonb
);
--> statement-breakpoint
CREATE TABLE "backtests" (
	"id" text PRIMARY KEY NOT NULL,
	"gate_id" text,
	"service" text NOT NULL,
	"env" text NOT NULL,
	"configuration" jsonb NOT NULL,
	"from" bigint NOT NULL,
	"to" bigint NOT NULL,
	"status" text NOT NULL,
	"done" integer DEFAULT 0 NOT NULL,
	"total" integer DEFAULT 0 NOT NULL,
	"results" jsonb NOT NULL,
	"skipped_rules" jsonb NOT NULL,
	"summary" jsonb,
	"error" text,
	"node_id" text NOT NULL,
	"trigger_envs" jsonb,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"created_at" bigint NOT NULL,
	"finished_at" bigint,
	"revision" integer DEFAULT 1 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "evaluations" (
	"id" text PRIMARY KEY NOT NULL,
	"gate_id" text,
	"service" text NOT NULL,
	"env" text NOT NULL,
	"identifier" text NOT NULL,
	"version" text,
	"primary_tag" text,
	"dry_run" boolean NOT NULL,
	"on_source_error" text NOT NULL,
	"status" text NOT NULL,
	"just_in_time" boolean NOT NULL,
	"idempotency_key" text,
	"rerun_of" text,
	"trigger_envs" jsonb,
	"triggered_by_id" text NOT NULL,
	"triggered_by_name" text NOT NULL,
	"started_at" bigint NOT NULL,
	"decided_at" bigint,
	"finished_at" bigint,
	"lease_owner" text,
	"lease_expires_at" bigint,
	"revision" integer DEFAULT 1 NOT NULL,
	"override_status" text,
	"override_reason" text,
	"overridden_at" bigint,
	"overridden_by_id" text,
	"overridden_by_name" text,
	"override_replaced" text
);
--> statement-breakpoint
CREATE TABLE "freezes" (
	"id" text PRIMARY KEY NOT NULL,
	"env" text NOT NULL,
	"service" text,
	"reason" text NOT NULL,
	"starts_at" bigint NOT NULL,
	"ends_at" bigint,
	"ended_at" bigint,
	"ended_by_id" text,
	"ended_by_name" text,
	"end_reason" text,
	"created_at" bigint NOT NULL,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by_id" text NOT NULL,
	"updated_by_name" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "gates" (
	"id" text PRIMARY KEY NOT NULL,
	"service" text NOT NULL,
	"env" text NOT NULL,
	"identifier" text NOT NULL,
	"dry_run" boolean NOT NULL,
	"on_source_error" text NOT NULL,
	"created_at" bigint NOT NULL,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by_id" text NOT NULL,
	"updated_by_name" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "monitor_groups" (
	"monitor_id" text NOT NULL,
	"group" text NOT NULL,
	"state" text NOT NULL,
	"since" bigint NOT NULL,
	"message" text,
	"last_reported_at" bigint NOT NULL,
	CONSTRAINT "monitor_groups_monitor_id_group_pk" PRIMARY KEY("monitor_id","group")
);
--> statement-breakpoint
CREATE TABLE "monitor_transitions" (
	"id" text PRIMARY KEY NOT NULL,
	"monitor_id" text NOT NULL,
	"group" text NOT NULL,
	"from" text,
	"to" text NOT NULL,
	"at" bigint NOT NULL,
	"message" text
);
--> statement-breakpoint
CREATE TABLE "monitors" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"tags" jsonb NOT NULL,
	"query" text DEFAULT '' NOT NULL,
	"definition" jsonb,
	"critical" double precision,
	"warning" double precision,
	"muted" boolean NOT NULL,
	"priority" integer,
	"no_data_timeframe" integer,
	"source_errors" integer DEFAULT 0 NOT NULL,
	"last_source_error" text,
	"created_at" bigint NOT NULL,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by_id" text NOT NULL,
	"updated_by_name" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "notification_channels" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"url" text NOT NULL,
	"secret" text,
	"envs" jsonb NOT NULL,
	"created_at" bigint NOT NULL,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by_id" text NOT NULL,
	"updated_by_name" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "notification_outbox" (
	"id" text PRIMARY KEY NOT NULL,
	"event_key" text NOT NULL,
	"event" text NOT NULL,
	"channel_id" text NOT NULL,
	"subscription_id" text,
	"evaluation_id" text,
	"env" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" text NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" bigint NOT NULL,
	"claimed_by" text,
	"claim_expires_at" bigint,
	"last_status" integer,
	"last_error" text,
	"delivered_at" bigint,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "notification_subscriptions" (
	"id" text PRIMARY KEY NOT NULL,
	"channel_id" text NOT NULL,
	"gate_id" text,
	"service" text,
	"env" text NOT NULL,
	"events" jsonb NOT NULL,
	"created_at" bigint NOT NULL,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by_id" text NOT NULL,
	"updated_by_name" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "rule_evaluations" (
	"id" text PRIMARY KEY NOT NULL,
	"evaluation_id" text NOT NULL,
	"rule_id" text,
	"position" integer NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"dry_run" boolean NOT NULL,
	"options" jsonb NOT NULL,
	"status" text NOT NULL,
	"reason" text,
	"evidence" jsonb,
	"started_at" bigint NOT NULL,
	"window_starts_at" bigint NOT NULL,
	"window_ends_at" bigint NOT NULL,
	"finished_at" bigint,
	"next_check_at" bigint,
	"consecutive_errors" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"state" jsonb
);
--> statement-breakpoint
CREATE TABLE "rules" (
	"id" text PRIMARY KEY NOT NULL,
	"gate_id" text NOT NULL,
	"name" text NOT NULL,
	"type" text NOT NULL,
	"dry_run" boolean NOT NULL,
	"options" jsonb NOT NULL,
	"created_at" bigint NOT NULL,
	"created_by_id" text NOT NULL,
	"created_by_name" text NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by_id" text NOT NULL,
	"updated_by_name" text NOT NULL
);
--> statement-breakpoint
ALTER TABLE "backtests" ADD CONSTRAINT "backtests_gate_id_gates_id_fk" FOREIGN KEY ("gate_id") REFERENCES "public"."gates"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "evaluations" ADD CONSTRAINT "evaluations_gate_id_gates_id_fk" FOREIGN KEY ("gate_id") REFERENCES "public"."gates"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "monitor_groups" ADD CONSTRAINT "monitor_groups_monitor_id_monitors_id_fk" FOREIGN KEY ("monitor_id") REFERENCES "public"."monitors"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "monitor_transitions" ADD CONSTRAINT "monitor_transitions_monitor_id_monitors_id_fk" FOREIGN KEY ("monitor_id") REFERENCES "public"."monitors"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notification_outbox" ADD CONSTRAINT "notification_outbox_channel_id_notification_channels_id_fk" FOREIGN KEY ("channel_id") REFERENCES "public"."notification_channels"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notification_subscriptions" ADD CONSTRAINT "notification_subscriptions_gate_id_gates_id_fk" FOREIGN KEY ("gate_id") REFERENCES "public"."gates"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notification_subscriptions" ADD CONSTRAINT "notification_subscriptions_channel_id_fk" FOREIGN KEY ("channel_id") REFERENCES "public"."notification_channels"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rule_evaluations" ADD CONSTRAINT "rule_evaluations_evaluation_id_evaluations_id_fk" FOREIGN KEY ("evaluation_id") REFERENCES "public"."evaluations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rules" ADD CONSTRAINT "rules_gate_id_gates_id_fk" FOREIGN KEY ("gate_id") REFERENCES "public"."gates"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "api_keys_secret_hash_unique" ON "api_keys" USING btree ("secret_hash");--> statement-breakpoint
CREATE INDEX "apm_errors_service_bucket_idx" ON "apm_errors" USING btree ("service","env","bucket");--> statement-breakpoint
CREATE INDEX "apm_stats_service_bucket_idx" ON "apm_stats" USING btree ("service","env","bucket");--> statement-breakpoint
CREATE INDEX "apm_stats_bucket_idx" ON "apm_stats" USING btree ("bucket");--> statement-breakpoint
CREATE INDEX "audit_log_target_idx" ON "audit_log" USING btree ("target_type","target_id");--> statement-breakpoint
CREATE INDEX "audit_log_at_idx" ON "audit_log" USING btree ("at");--> statement-breakpoint
CREATE INDEX "backtests_env_idx" ON "backtests" USING btree ("env","id");--> statement-breakpoint
CREATE INDEX "backtests_running_by_key_idx" ON "backtests" USING btree ("created_by_id") WHERE "backtests"."status" = 'running';--> statement-breakpoint
CREATE INDEX "backtests_gate_idx" ON "backtests" USING btree ("gate_id");--> statement-breakpoint
CREATE UNIQUE INDEX "evaluations_env_idempotency_unique" ON "evaluations" USING btree ("env","idempotency_key") WHERE "evaluations"."idempotency_key" is not null;--> statement-breakpoint
CREATE INDEX "evaluations_key_started_idx" ON "evaluations" USING btree ("service","env","identifier","started_at");--> statement-breakpoint
CREATE INDEX "evaluations_status_idx" ON "evaluations" USING btree ("status");--> statement-breakpoint
CREATE INDEX "evaluations_started_idx" ON "evaluations" USING btree ("started_at");--> statement-breakpoint
CREATE INDEX "evaluations_gate_idx" ON "evaluations" USING btree ("gate_id");--> statement-breakpoint
CREATE INDEX "evaluations_unfinished_idx" ON "evaluations" USING btree ("finished_at","lease_owner");--> statement-breakpoint
CREATE INDEX "evaluations_triggered_by_started_idx" ON "evaluations" USING btree ("triggered_by_id","started_at");--> statement-breakpoint
CREATE INDEX "evaluations_running_by_key_idx" ON "evaluations" USING btree ("triggered_by_id") WHERE "evaluations"."finished_at" is null;--> statement-breakpoint
CREATE INDEX "freezes_env_idx" ON "freezes" USING btree ("env","starts_at");--> statement-breakpoint
CREATE UNIQUE INDEX "gates_key_unique" ON "gates" USING btree ("service","env","identifier");--> statement-breakpoint
CREATE INDEX "gates_env_idx" ON "gates" USING btree ("env");--> statement-breakpoint
CREATE INDEX "monitor_transitions_monitor_at_idx" ON "monitor_transitions" USING btree ("monitor_id","at");--> statement-breakpoint
CREATE INDEX "monitor_transitions_at_idx" ON "monitor_transitions" USING btree ("at");--> statement-breakpoint
CREATE INDEX "monitors_name_idx" ON "monitors" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "notification_outbox_event_key_unique" ON "notification_outbox" USING btree ("event_key");--> statement-breakpoint
CREATE INDEX "notification_outbox_due_idx" ON "notification_outbox" USING btree ("status","next_attempt_at");--> statement-breakpoint
CREATE INDEX "notification_outbox_env_idx" ON "notification_outbox" USING btree ("env","id");--> statement-breakpoint
CREATE INDEX "notification_outbox_channel_idx" ON "notification_outbox" USING btree ("channel_id","id");--> statement-breakpoint
CREATE INDEX "notification_outbox_channel_due_idx" ON "notification_outbox" USING btree ("channel_id","status","next_attempt_at","id");--> statement-breakpoint
CREATE INDEX "notification_subscriptions_env_idx" ON "notification_subscriptions" USING btree ("env");--> statement-breakpoint
CREATE INDEX "notification_subscriptions_channel_idx" ON "notification_subscriptions" USING btree ("channel_id");--> statement-breakpoint
CREATE INDEX "rule_evaluations_evaluation_idx" ON "rule_evaluations" USING btree ("evaluation_id","position");--> statement-breakpoint
CREATE INDEX "rule_evaluations_due_idx" ON "rule_evaluations" USING btree ("status","next_check_at");--> statement-breakpoint
CREATE INDEX "rule_evaluations_rule_idx" ON "rule_evaluations" USING btree ("rule_id");--> statement-breakpoint
CREATE UNIQUE INDEX "rules_gate_name_unique" ON "rules" USING btree ("gate_id","name");