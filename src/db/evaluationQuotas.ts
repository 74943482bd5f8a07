// The counts behind the per-key evaluation limits (src/domain/triggerLimits.ts), read from the
// evaluations themselves so they hold across restarts. Each answers with one row at most, found
// by skipping along an index no further than the limit asked about: a key with a long history,
// or a limit raised very high, costs no more than a key at its limit and sends nothing back.
import { and, desc, eq, gt, isNull, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { evaluations } from './schema.ts';

/**
 * Whether the key has at least `n` evaluations still running (index
 * evaluations_running_by_key_idx): in progress, or decided with rules still watching (dry-run
 * rules run their whole window; a gate of dry-run rules only is decided at once).
 */
export async function hasRunningAtLeast(db: Tx, keyId: string, n: number): Promise<boolean> {
  const rows = await db
    .select({ one: sql`1` })
    .from(evaluations)
    .where(and(eq(evaluations.triggeredById, keyId), isNull(evaluations.finishedAt)))
    .limit(1)
    .offset(n - 1);
  return rows.length > 0;
}

/**
 * When the key's `n`-th newest evaluation started, if after `since`; null when fewer than `n`
 * started since (index evaluations_triggered_by_started_idx).
 */
export async function nthStartSince(db: Tx, keyId: string, since: Date, n: number): Promise<Date | null> {
  const rows = await db
    .select({ startedAt: evaluations.startedAt })
    .from(evaluations)
    .where(and(eq(evaluations.triggeredById, keyId), gt(evaluations.startedAt, since)))
    .orderBy(desc(evaluations.startedAt))
    .limit(1)
    .offset(n - 1);
  return rows[0]?.startedAt ?? null;
}
