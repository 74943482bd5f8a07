CREATE TABLE `evaluation_revisions` (
	`evaluation_id` text NOT NULL,
	`revision` integer NOT NULL,
	`at` integer NOT NULL,
	`snapshot` text NOT NULL,
	PRIMARY KEY(`evaluation_id`, `revision`),
	FOREIGN KEY (`evaluation_id`) REFERENCES `evaluations`(`id`) ON UPDATE no action ON DELETE cascade
);
