// Housekeeping: history past its retention is deleted, so the database holds what anyone may
// still ask about and no more. The engine's housekeeping timer runs it once an hour.
import { APM_INSTANCE_RETENTION_MS, OTLP_RECEIPT_MS, pruneApm, pruneApmInstances, pruneOtlpReceipts } from '../db/apm.ts';
import { deleteBacktestsFinishedBefore } from '../db/backtests.ts';
import { deleteFinishedBefore } from '../db/evaluations.ts';
import { deleteTransitionsBefore } from '../db/monitors.ts';
import { deleteSettledBefore } from '../db/notifications.ts';
import type { Deps } from './deps.ts';

const DAY_MS = 86_400_000;

export interface Pruned {
  evaluations: number;
  transitions: number;
  /** Rows of both APM tables. */
  apmRows: number;
  /** Per-instance APM counts (apm_instance_stats) of buckets more than APM_INSTANCE_RETENTION_MS (6 h) old. */
  apmInstanceRows: number;
  /** Digests of OTLP requests stored more than OTLP_RECEIPT_MS ago (a retry is no longer expected). */
  otlpReceipts: number;
  /** Backtests that ended. */
  backtests: number;
  /** Notification deliveries settled (delivered or failed). */
  notifications: number;
  /** Evaluations finished and transitions recorded before it went. */
  horizon: Date;
}

/**
 * Deletes evaluations finished, and monitor transitions recorded, more than
 * TOLLGATE_RETENTION_DAYS ago (rule evaluations go with their evaluation), and APM buckets
 * older than TOLLGATE_APM_RETENTION_DAYS (per-instance APM counts past 6 hours, OTLP receipts
 * past an hour); backtests ended, and notification deliveries delivered or failed, before the
 * same horizon as evaluations. Running evaluations (and
 * backtests) and pending deliveries are kept, however old.
 */
export async function pruneHistory(deps: Deps): Promise<Pruned> {
  const now = deps.now().getTime();
  const horizon = new Date(now - deps.config.retentionDays * DAY_MS);
  const evaluations = await deleteFinishedBefore(deps.db, horizon);
  const transitions = await deleteTransitionsBefore(deps.db, horizon);
  const apmRows = await pruneApm(deps.db, now - deps.config.apmRetentionDays * DAY_MS);
  const apmInstanceRows = await pruneApmInstances(deps.db, now - APM_INSTANCE_RETENTION_MS);
  const otlpReceipts = await pruneOtlpReceipts(deps.db, now - OTLP_RECEIPT_MS);
  const backtests = await deleteBacktestsFinishedBefore(deps.db, horizon);
  const notifications = await deleteSettledBefore(deps.db, horizon);
  return { evaluations, transitions, apmRows, apmInstanceRows, otlpReceipts, backtests, notifications, horizon };
}
