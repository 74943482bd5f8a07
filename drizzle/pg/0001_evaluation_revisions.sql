CREATE TABLE "evaluation_revisions" (
	"evaluation_id" text NOT NULL,
	"revision" integer NOT NULL,
	"at" bigint NOT NULL,
	"snapshot" jsonb NOT NULL,
	CONSTRAINT "evaluation_revisions_evaluation_id_revision_pk" PRIMARY KEY("evaluation_id","revision")
);
--> statement-breakpoint
ALTER TABLE "evaluation_revisions" ADD CONSTRAINT "evaluation_revisions_evaluation_id_evaluations_id_fk" FOREIGN KEY ("evaluation_id") REFERENCES "public"."evaluations"("id") ON DELETE cascade ON UPDATE no action;