import { and, asc, eq, gt, gte, lt, lte, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { changed, jsonArrayElements } from './dialect.ts';
import { inList, preparedSet } from './lists.ts';
import { allRows, firstRow, prepared, runStatement } from './prepared.ts';
import { type MonitorStateValue, monitorGroups, monitors, monitorTransitions } from './schema.ts';

export type MonitorRow = typeof monitors.$inferSelect;
export type MonitorGroupRow = typeof monitorGroups.$inferSelect;
export type TransitionRow = typeof monitorTransitions.$inferSelect;

/**
 * Bumped by every write below that can change which monitors a query selects or how their
 * groups stand (not by report-time refreshes), so readers may cache what they derive from
 * monitors until it moves. Bumped even when the transaction later rolls back: one needless
 * re-read, never a stale one. Process-wide; other instances sharing a PostgreSQL database move
 * it through their events (monitorsChangedElsewhere).
 * `rowsGeneration` moves only with the monitors' own rows, not with their groups' states.
 */
let generation = 0;
let rowsGeneration = 0;
export const monitorsGeneration = (): number => generation;
export const monitorRowsGeneration = (): number => rowsGeneration;
const rowsChanged = () => {
  rowsGeneration++;
  generation++;
};

/** Another instance wrote monitors (`rows`) or their groups' states, as its events tell this one. */
export function monitorsChangedElsewhere(what: 'rows' | 'groups'): void {
  if (what === 'rows') rowsChanged();
  else generation++;
}

export async function getMonitor(db: Tx, id: string): Promise<MonitorRow | undefined> {
  return (await db.select().from(monitors).where(eq(monitors.id, id)))[0];
}

// Rules read these on every check: prepared once per connection, any number of ids.
export async function getMonitors(db: Tx, ids: readonly string[]): Promise<MonitorRow[]> {
  if (ids.length === 0) return [];
  return await allRows(
    prepared(db, 'getMonitors', () =>
      db
        .select()
        .from(monitors)
        .where(inList(db, monitors.id, { placeholder: 'ids' }))
        .prepare(),
    ),
    { ids: JSON.stringify(ids) },
  );
}

/**
 * External monitors carrying any of these tags, oldest first: one statement for any number of
 * tags, so a receiver looks up the monitors a notification names without reading them all.
 */
export async function externalMonitorsTagged(db: Tx, tags: readonly string[]): Promise<MonitorRow[]> {
  if (tags.length === 0) return [];
  return await db
    .select()
    .from(monitors)
    .where(and(eq(monitors.type, 'external'), sql`exists (select 1 from ${jsonArrayElements(db, monitors.tags)} where ${inList(db, sql`j.value`, tags)})`))
    .orderBy(asc(monitors.id));
}

/** The monitors the Alertmanager receiver created under these keys (one per key at most). */
export async function monitorsByAlertKey(db: Tx, keys: readonly string[]): Promise<MonitorRow[]> {
  if (keys.length === 0) return [];
  return await db
    .select()
    .from(monitors)
    .where(inList(db, monitors.alertKey, keys));
}

/** Monitors of these types, in creation order: the evaluator's own, without the pushed ones. */
export async function monitorsOfType(db: Tx, types: readonly MonitorRow['type'][]): Promise<MonitorRow[]> {
  return await db
    .select()
    .from(monitors)
    .where(inList(db, monitors.type, types))
    .orderBy(asc(monitors.id));
}

/** Every monitor: queries in the monitor search language are matched in memory. */
export async function allMonitors(db: Tx): Promise<MonitorRow[]> {
  return await db.select().from(monitors).orderBy(asc(monitors.id));
}

/**
 * Up to `limit` monitors after `afterId` (from the first without it), in creation order: a
 * search reads every monitor a page per turn of the event loop, not 40,000 rows in one go.
 */
export async function monitorsPage(db: Tx, afterId: string | null, limit: number): Promise<MonitorRow[]> {
  return await db
    .select()
    .from(monitors)
    .where(afterId === null ? undefined : gt(monitors.id, afterId))
    .orderBy(asc(monitors.id))
    .limit(limit);
}

export async function insertMonitor(db: Tx, row: typeof monitors.$inferInsert): Promise<MonitorRow> {
  rowsChanged();
  return (await db.insert(monitors).values(row).returning())[0]!;
}

export async function updateMonitorRow(db: Tx, id: string, patch: Partial<typeof monitors.$inferInsert>): Promise<MonitorRow> {
  rowsChanged();
  return (await db.update(monitors).set(patch).where(eq(monitors.id, id)).returning())[0]!;
}

export async function deleteMonitorRow(db: Tx, id: string): Promise<void> {
  rowsChanged();
  await db.delete(monitors).where(eq(monitors.id, id));
}

export async function groupsOf(db: Tx, monitorIds: readonly string[]): Promise<MonitorGroupRow[]> {
  if (monitorIds.length === 0) return [];
  return await allRows(
    prepared(db, 'groupsOf', () =>
      db
        .select()
        .from(monitorGroups)
        .where(inList(db, monitorGroups.monitorId, { placeholder: 'ids' }))
        .orderBy(asc(monitorGroups.monitorId), asc(monitorGroups.group))
        .prepare(),
    ),
    { ids: JSON.stringify(monitorIds) },
  );
}

export async function getGroup(db: Tx, monitorId: string, group: string): Promise<MonitorGroupRow | undefined> {
  return (
    await db
      .select()
      .from(monitorGroups)
      .where(and(eq(monitorGroups.monitorId, monitorId), eq(monitorGroups.group, group)))
  )[0];
}

export async function upsertGroup(db: Tx, row: typeof monitorGroups.$inferInsert): Promise<void> {
  generation++;
  await db
    .insert(monitorGroups)
    .values(row)
    .onConflictDoUpdate({
      target: [monitorGroups.monitorId, monitorGroups.group],
      set: { state: row.state, since: row.since, message: row.message, lastReportedAt: row.lastReportedAt },
    });
}

export async function touchGroup(db: Tx, monitorId: string, group: string, at: Date, message: string | null): Promise<void> {
  await db
    .update(monitorGroups)
    .set({ lastReportedAt: at, message })
    .where(and(eq(monitorGroups.monitorId, monitorId), eq(monitorGroups.group, group)));
}

export async function insertTransition(db: Tx, row: typeof monitorTransitions.$inferInsert): Promise<TransitionRow> {
  return (await db.insert(monitorTransitions).values(row).returning())[0]!;
}

/** Transitions of these monitors strictly after `after`, oldest first. */
export async function transitionsAfter(db: Tx, monitorIds: readonly string[], after: Date): Promise<TransitionRow[]> {
  if (monitorIds.length === 0) return [];
  return await allRows(
    prepared(db, 'transitionsAfter', () =>
      db
        .select()
        .from(monitorTransitions)
        // A placeholder skips the column's encoder: `after` is bound as epoch milliseconds.
        .where(and(inList(db, monitorTransitions.monitorId, { placeholder: 'ids' }), gt(monitorTransitions.at, sql.placeholder('after'))))
        .orderBy(asc(monitorTransitions.at), asc(monitorTransitions.id))
        .prepare(),
    ),
    { ids: JSON.stringify(monitorIds), after: after.getTime() },
  );
}

/**
 * Transitions of these monitors in (after, until], oldest first. Bounded by `until`: a window
 * in the past (a backtest) does not read the history since.
 */
export async function transitionsWithin(db: Tx, monitorIds: readonly string[], after: Date, until: Date): Promise<TransitionRow[]> {
  if (monitorIds.length === 0) return [];
  return await allRows(
    prepared(db, 'transitionsWithin', () =>
      db
        .select()
        .from(monitorTransitions)
        // Placeholders skip the column's encoder: the bounds are bound as epoch milliseconds.
        .where(
          and(
            inList(db, monitorTransitions.monitorId, { placeholder: 'ids' }),
            gt(monitorTransitions.at, sql.placeholder('after')),
            lte(monitorTransitions.at, sql.placeholder('until')),
          ),
        )
        .orderBy(asc(monitorTransitions.at), asc(monitorTransitions.id))
        .prepare(),
    ),
    { ids: JSON.stringify(monitorIds), after: after.getTime(), until: until.getTime() },
  );
}

/** A group's first transition strictly after `after` (the monitor/at index, then its group). */
export async function firstTransitionAfter(db: Tx, monitorId: string, group: string, after: Date): Promise<TransitionRow | undefined> {
  return await firstRow(
    prepared(db, 'firstTransitionAfter', () =>
      db
        .select()
        .from(monitorTransitions)
        .where(
          and(
            eq(monitorTransitions.monitorId, sql.placeholder('monitorId')),
            gt(monitorTransitions.at, sql.placeholder('after')),
            eq(monitorTransitions.group, sql.placeholder('group')),
          ),
        )
        .orderBy(asc(monitorTransitions.at), asc(monitorTransitions.id))
        .limit(1)
        .prepare(),
    ),
    { monitorId, group, after: after.getTime() },
  );
}

export async function recentTransitions(db: Tx, monitorId: string, limit: number): Promise<TransitionRow[]> {
  return await db
    .select()
    .from(monitorTransitions)
    .where(eq(monitorTransitions.monitorId, monitorId))
    .orderBy(sql`${monitorTransitions.at} desc`, sql`${monitorTransitions.id} desc`)
    .limit(limit);
}

export async function setSourceHealth(db: Tx, monitorId: string, error: string | null): Promise<void> {
  rowsChanged();
  await db
    .update(monitors)
    .set(error === null ? { sourceErrors: 0, lastSourceError: null } : { sourceErrors: sql`${monitors.sourceErrors} + 1`, lastSourceError: error })
    .where(eq(monitors.id, monitorId));
}

/**
 * Puts silent groups in NO_DATA, each with its transition, as recording their states one by
 * one would, with the statements prepared once and the transitions inserted a hundred per
 * statement: a sweep records thousands of groups.
 */
export async function markNoData(
  db: Tx,
  rows: ReadonlyArray<{ id: string; monitorId: string; group: string; from: MonitorStateValue; message: string }>,
  at: Date,
): Promise<TransitionRow[]> {
  if (rows.length === 0) return [];
  generation++;
  const patch = (message: string) => ({ state: 'no_data' as const, since: at, lastReportedAt: at, message });
  const update = prepared(db, 'markNoData', () =>
    db
      .update(monitorGroups)
      .set(preparedSet(patch('')).set as Partial<typeof monitorGroups.$inferInsert>)
      .where(and(eq(monitorGroups.monitorId, sql.placeholder('monitorId')), eq(monitorGroups.group, sql.placeholder('group'))))
      .prepare(),
  );
  for (const r of rows) await runStatement(update, { ...patch(r.message), monitorId: r.monitorId, group: r.group });
  const transitions: TransitionRow[] = [];
  for (let i = 0; i < rows.length; i += 100) {
    const chunk = rows.slice(i, i + 100).map((r) => ({ id: r.id, monitorId: r.monitorId, group: r.group, from: r.from, to: 'no_data' as const, at, message: r.message }));
    transitions.push(...(await db.insert(monitorTransitions).values(chunk).returning()));
  }
  return transitions;
}

/**
 * Groups of monitors with a no-data timeframe whose last report is older than it, at most
 * `limit` of them after `after` in (monitor, group) order, so a sweep goes through them in pages.
 */
export async function silentGroups(
  db: Tx,
  now: Date,
  page: { after?: { monitorId: string; group: string }; limit?: number } = {},
): Promise<Array<{ monitorId: string; group: string; state: MonitorStateValue; timeframe: number }>> {
  const query = db
    .select({ monitorId: monitorGroups.monitorId, group: monitorGroups.group, state: monitorGroups.state, timeframe: sql<number>`${monitors.noDataTimeframe}` })
    .from(monitorGroups)
    .innerJoin(monitors, eq(monitorGroups.monitorId, monitors.id))
    .where(
      and(
        sql`${monitors.noDataTimeframe} is not null`,
        sql`${monitorGroups.state} != 'no_data'`,
        // The column side holds the arithmetic: PostgreSQL types the parameter from what it meets (bigint here, not integer).
        sql`${monitorGroups.lastReportedAt} + ${monitors.noDataTimeframe} * 1000 < ${now.getTime()}`,
        page.after && sql`(${monitorGroups.monitorId}, ${monitorGroups.group}) > (${page.after.monitorId}, ${page.after.group})`,
      ),
    )
    .orderBy(asc(monitorGroups.monitorId), asc(monitorGroups.group));
  return await (page.limit === undefined ? query : query.limit(page.limit));
}

/** Transitions older than the retention horizon; running windows never reach that far back. */
export async function deleteTransitionsBefore(db: Tx, horizon: Date): Promise<number> {
  return changed(await db.delete(monitorTransitions).where(lt(monitorTransitions.at, horizon)));
}

export type { MonitorStateValue };

const SEVERITY_SQL = sql<number>`max(case ${monitorGroups.state} when 'alert' then 3 when 'no_data' then 2 when 'warn' then 1 else 0 end)`;
const BY_SEVERITY: MonitorStateValue[] = ['ok', 'warn', 'no_data', 'alert'];

/** Each monitor's worst group state, one aggregate row per monitor (none for a monitor no group reported). */
export async function worstStatesOf(db: Tx, monitorIds: readonly string[]): Promise<Map<string, MonitorStateValue>> {
  if (monitorIds.length === 0) return new Map();
  const rows = await db
    .select({ monitorId: monitorGroups.monitorId, severity: SEVERITY_SQL })
    .from(monitorGroups)
    .where(inList(db, monitorGroups.monitorId, monitorIds))
    .groupBy(monitorGroups.monitorId);
  return new Map(rows.map((r) => [r.monitorId, BY_SEVERITY[r.severity]!]));
}

/** Transitions of these monitors within [from, to], oldest first, at most `limit`. */
export async function transitionsBetween(db: Tx, monitorIds: readonly string[], from: Date, to: Date, limit: number): Promise<TransitionRow[]> {
  if (monitorIds.length === 0) return [];
  return await db
    .select()
    .from(monitorTransitions)
    .where(and(inList(db, monitorTransitions.monitorId, monitorIds), gte(monitorTransitions.at, from), lte(monitorTransitions.at, to)))
    .orderBy(asc(monitorTransitions.at), asc(monitorTransitions.id))
    .limit(limit);
}
