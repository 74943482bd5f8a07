import { and, asc, eq, gt, gte, lt, or, sql } from 'drizzle-orm';
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

/**
 * Which revisions were written at `since` or later (by the writer's clock), oldest first: their
 * keys only, so a reader that missed events can tell those it lacks before reading them.
 */
export async function revisionKeysSince(db: Tx, since: Date): Promise<Array<{ evaluationId: string; revision: number }>> {
  return await db
    .select({ evaluationId: evaluationRevisions.evaluationId, revision: evaluationRevisions.revision })
    .from(evaluationRevisions)
    .where(gte(evaluationRevisions.at, since))
    .orderBy(asc(evaluationRevisions.at));
}

/** For each evaluation, its revisions from `from` on, ordered by evaluation then revision. */
export async function revisionsFrom(db: Tx, starts: ReadonlyArray<{ evaluationId: string; from: number }>): Promise<Snapshot[]> {
  if (starts.length === 0) return [];
  const rows = await db
    .select({ snapshot: evaluationRevisions.snapshot })
    .from(evaluationRevisions)
    .where(or(...starts.map((s) => and(eq(evaluationRevisions.evaluationId, s.evaluationId), gte(evaluationRevisions.revision, s.from)))))
    .orderBy(asc(evaluationRevisions.evaluationId), asc(evaluationRevisions.revision));
  return rows.map((r) => fromTaggedJson(r.snapshot) as Snapshot);
}
