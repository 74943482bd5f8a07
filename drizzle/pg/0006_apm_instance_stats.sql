CREATE TABLE "apm_instance_stats" (
	"service" text NOT NULL,
	"env" text NOT NULL,
	"version" text NOT NULL,
	"instance" text NOT NULL,
	"bucket" bigint NOT NULL,
	"hits" bigint NOT NULL,
	"errors" bigint NOT NULL,
	CONSTRAINT "apm_instance_stats_service_env_version_instance_bucket_pk" PRIMARY KEY("service","env","version","instance","bucket")
);
--> statement-breakpoint
CREATE INDEX "apm_instance_stats_service_bucket_idx" ON "apm_instance_stats" USING btree ("service","env","bucket");--> statement-breakpoint
CREATE INDEX "apm_instance_stats_bucket_idx" ON "apm_instance_stats" USING btree ("bucket");