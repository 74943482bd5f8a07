ALTER TABLE "backtests" ADD COLUMN "lease_expires_at" bigint;--> statement-breakpoint
ALTER TABLE "monitors" ADD COLUMN "alert_key" text;--> statement-breakpoint
CREATE UNIQUE INDEX "monitors_alert_key_idx" ON "monitors" USING btree ("alert_key");