import { and, asc, eq, gt, lt, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import type { EvaluationRow, RuleEvaluationRow } from './evaluations.ts';
import { allRows, prepared, runStatement } from './prepared.ts';
import { evaluationRevisions } from './schema.ts';
import { fromTaggedJson, toTaggedJson } from './taggedJson.ts';

// The revision log: each revision of an evaluation as it was published, written in the
// transaction that made it, so a live reader that missed events can show the ones between.

type Snapshot = { evaluation: EvaluationRow; rules: RuleEvaluationRow[] };

/** Keeps `snapshot` as its evaluation's revision; call it in the transaction that wrote that revision. */
export async function appendRevision(db: Tx, snapshot: Snapshot, at: Date): Promise<void> {
  await runStatement(
    prepared(db, 'appendRevision', () =>
      db
        .insert(evaluationRevisions)
        .values({
          evaluationId: sql.placeholder('evaluationId'),
          revision: sql.placeholder('revision'),
          at: sql.placeholder('at'),
          snapshot: sql.placeholder('snapshot'),
        })
        .prepare(),
    ),
    { evaluationId: snapshot.evaluation.id, revision: snapshot.evaluation.revision, at, snapshot: toTaggedJson(snapshot) },
  );
}

/**
 * The revisions of an evaluation after `after` and before `before` (both excluded), oldest
 * first, exactly as they were published; those the log never held (written before it existed)
 * are missing.
 */
export async function revisionsBetween(db: Tx, evaluationId: string, after: number, before: number): Promise<Snapshot[]> {
  if (before - after < 2) return [];
  const rows = await allRows(
    prepared(db, 'revisionsBetween', () =>
      db
        .select({ snapshot: evaluationRevisions.snapshot })
        .from(evaluationRevisions)
        .where(
          and(
            eq(evaluationRevisions.evaluationId, sql.placeholder('evaluationId')),
            gt(evaluationRevisions.revision, sql.placeholder('after')),
            lt(evaluationRevisions.revision, sql.placeholder('before')),
          ),
        )
        .orderBy(asc(evaluationRevisions.revision))
        .prepare(),
    ),
    { evaluationId, after, before },
  );
  return rows.map((r) => fromTaggedJson(r.snapshot) as Snapshot);
}
