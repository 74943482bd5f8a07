import { and, count, desc, eq, getTableColumns, gte, isNull, lt, max, min, ne, or, type SQL, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { changed } from './dialect.ts';
import { inList } from './lists.ts';
import { apmStats, type BacktestStatus, backtests } from './schema.ts';

export type BacktestRow = typeof backtests.$inferSelect;
export type NewBacktestRow = typeof backtests.$inferInsert;

export async function insertBacktest(db: Tx, row: NewBacktestRow): Promise<BacktestRow> {
  return (await db.insert(backtests).values(row).returning())[0]!;
}

export async function getBacktest(db: Tx, id: string): Promise<BacktestRow | undefined> {
  return (await db.select().from(backtests).where(eq(backtests.id, id)))[0];
}

/** A backtest without its per-deploy results (they can be megabytes; a list seldom shows them). */
export type BacktestListRow = Omit<BacktestRow, 'results'>;
const { results: _results, ...listColumns } = getTableColumns(backtests);

/** Newest first; keyset on the id (UUIDv7, creation order). Results are left out: see BacktestListRow. */
export async function listBacktests(db: Tx, filter: { envs: readonly string[] | null; gateId?: string }, page: { after?: string; limit: number }): Promise<BacktestListRow[]> {
  const where: SQL[] = [];
  if (filter.envs) where.push(inList(db, backtests.env, filter.envs));
  if (filter.gateId) where.push(eq(backtests.gateId, filter.gateId));
  if (page.after) where.push(lt(backtests.id, page.after));
  return await db
    .select(listColumns)
    .from(backtests)
    .where(and(...where))
    .orderBy(desc(backtests.id))
    .limit(page.limit);
}

/** Backtests of a key still running (the partial index holds only those). */
export async function countRunningBacktestsBy(db: Tx, createdById: string): Promise<number> {
  return (
    await db
      .select({ n: count() })
      .from(backtests)
      .where(and(eq(backtests.createdById, createdById), eq(backtests.status, 'running')))
  )[0]!.n;
}

/** Backtests running on the whole server, every key's. */
export async function countRunningBacktests(db: Tx): Promise<number> {
  return (await db.select({ n: count() }).from(backtests).where(eq(backtests.status, 'running')))[0]!.n;
}

/**
 * Changes a backtest only while it runs (a canceled one stays canceled whatever its job still
 * writes); the row after the change, or undefined when it was no longer running.
 */
export async function updateRunningBacktest(db: Tx, id: string, patch: Partial<NewBacktestRow>): Promise<BacktestRow | undefined> {
  return (
    await db
      .update(backtests)
      .set({ ...patch, revision: sql`${backtests.revision} + 1` })
      .where(and(eq(backtests.id, id), eq(backtests.status, 'running')))
      .returning()
  )[0];
}

/** Keeps the backtests this process runs (`ids`) its own until `until`; those no longer running are left as they are. */
export async function renewBacktestLeases(db: Tx, nodeId: string, ids: readonly string[], until: Date): Promise<void> {
  if (ids.length === 0) return;
  await db
    .update(backtests)
    .set({ leaseExpiresAt: until })
    .where(and(eq(backtests.status, 'running' satisfies BacktestStatus), eq(backtests.nodeId, nodeId), inList(db, backtests.id, ids)));
}

/**
 * Fails the running backtests no live process runs: their lease lapsed (or they have none), and
 * at start (`ownNodeId`) those of an earlier process under this node id, which cannot be running
 * (two processes never share one). Another instance's backtest whose lease it keeps renewing is
 * left alone. Jobs are not resumed: their progress lives in the job.
 */
export async function failOrphanedBacktests(db: Tx, at: Date, ownNodeId: string | null): Promise<BacktestRow[]> {
  const lapsed = or(isNull(backtests.leaseExpiresAt), lt(backtests.leaseExpiresAt, at));
  return await db
    .update(backtests)
    .set({ status: 'failed', error: 'interrupted: the server stopped while it ran; start it again', finishedAt: at, revision: sql`${backtests.revision} + 1` })
    .where(and(eq(backtests.status, 'running' satisfies BacktestStatus), ownNodeId === null ? lapsed : or(lapsed, eq(backtests.nodeId, ownNodeId))))
    .returning();
}

export interface VersionSpan {
  version: string;
  /** First and last bucket (ms) with requests of the version inside the window asked about. */
  firstSeen: number;
  lastSeen: number;
}

/**
 * The versions with requests in [from, to) of a service/env, first seen first, at most `limit`
 * (the service/env/bucket index bounds the scan to the window).
 */
export async function versionsIn(db: Tx, w: { service: string; env: string; from: number; to: number }, limit: number): Promise<VersionSpan[]> {
  const first = min(apmStats.bucket);
  return await db
    .select({ version: apmStats.version, firstSeen: sql<number>`${first}`, lastSeen: sql<number>`${max(apmStats.bucket)}` })
    .from(apmStats)
    .where(and(eq(apmStats.service, w.service), eq(apmStats.env, w.env), gte(apmStats.bucket, w.from), lt(apmStats.bucket, w.to), ne(apmStats.version, '')))
    .groupBy(apmStats.version)
    .orderBy(first, apmStats.version)
    .limit(limit);
}

/** Ends a running backtest as canceled; undefined when it was no longer running. */
export async function cancelBacktestRow(db: Tx, id: string, at: Date, byName: string): Promise<BacktestRow | undefined> {
  return updateRunningBacktest(db, id, { status: 'canceled', finishedAt: at, error: `canceled by ${byName}` });
}

/** Ended backtests whose end is before `horizon` go (retention); running ones stay. */
export async function deleteBacktestsFinishedBefore(db: Tx, horizon: Date): Promise<number> {
  return changed(await db.delete(backtests).where(lt(backtests.finishedAt, horizon)));
}
