// The counts behind the per-key evaluation limits (src/domain/triggerLimits.ts), read from the
// evaluations themselves so they hold across restarts. Each stops at the limit it is asked
// about, so a key with a long history costs no more than one at its limit.
import { and, desc, eq, gt, isNull, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { evaluations } from './schema.ts';

/**
 * How many of the key's evaluations are still running, counting no further than `atMost`
 * (index evaluations_running_by_key_idx): in progress, or decided with rules still watching
 * (dry-run rules run their whole window; a gate of dry-run rules only is decided at once).
 */
export async function countRunningBy(db: Tx, keyId: string, atMost: number): Promise<number> {
  const rows = await db
    .select({ one: sql`1` })
    .from(evaluations)
    .where(and(eq(evaluations.triggeredById, keyId), isNull(evaluations.finishedAt)))
    .limit(atMost);
  return rows.length;
}

/**
 * When the key's evaluations started after `since`, newest first, at most `atMost` of them
 * (index evaluations_triggered_by_started_idx).
 */
export async function startsSince(db: Tx, keyId: string, since: Date, atMost: number): Promise<Date[]> {
  return (
    await db
      .select({ startedAt: evaluations.startedAt })
      .from(evaluations)
      .where(and(eq(evaluations.triggeredById, keyId), gt(evaluations.startedAt, since)))
      .orderBy(desc(evaluations.startedAt))
      .limit(atMost)
  ).map((r) => r.startedAt);
}
