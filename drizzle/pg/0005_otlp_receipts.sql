CREATE TABLE "otlp_receipts" (
	"digest" text PRIMARY KEY NOT NULL,
	"received_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "otlp_receipts_received_at_idx" ON "otlp_receipts" USING btree ("received_at");