import { DDSketch } from '@datadog/sketches-js';
import { and, eq, gt, gte, lt, lte, type SQL, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { changed, dialectOf } from './dialect.ts';
import { firstRow, prepared, runStatement } from './prepared.ts';
import { apmErrors, apmInstanceStats, apmStats, otlpReceipts } from './schema.ts';

export interface ApmKey {
  service: string;
  env: string;
  version: string;
  resource: string;
  primaryTag: string;
  bucket: number;
}

/**
 * A request's primary tags as stored: `tag:value` pairs, sorted, joined by commas
 * ("region:eu,zone:a"; '' for none). They are written and read only through the functions
 * below, so the FDD rule's per-value tests and an evaluation's primaryTag filter agree.
 */
export function joinPrimaryTags(tags: ReadonlyArray<readonly [tag: string, value: string]>): string {
  // A comma or a space in a value would split it, or make it one an evaluation cannot name.
  return tags
    .map(([tag, value]) => `${tag}:${value.replace(/[\s,]+/g, '_')}`)
    .sort()
    .join(',');
}

/** The `tag:value` pairs of a stored string (or of an evaluation's primaryTag, which may name several). */
export function primaryTagsOf(stored: string | null): string[] {
  return stored ? stored.split(',') : [];
}

/** Whether the stored tags hold `tag` (`region:eu`), without splitting them: tests call it per row. */
export function carriesPrimaryTag(stored: string, tag: string): boolean {
  for (let i = stored.indexOf(tag); i >= 0; i = stored.indexOf(tag, i + 1)) {
    const end = i + tag.length;
    if ((i === 0 || stored[i - 1] === ',') && (end === stored.length || stored[end] === ',')) return true;
  }
  return false;
}

export interface StatDelta extends ApmKey {
  hits: number;
  errors: number;
  durations: DDSketch;
}

export interface ErrorDelta extends ApmKey {
  errorType: string;
  count: number;
  sampleMessage: string | null;
}

/** Relative accuracy of latency sketches: p99 within 1% of the truth. */
const SKETCH_ACCURACY = 0.01;
export const newSketch = () => new DDSketch({ relativeAccuracy: SKETCH_ACCURACY });

function statements(db: Tx) {
  return prepared(db, 'apm.addBatch', () => {
    const p = sql.placeholder;
    const key = and(
      eq(apmStats.service, p('service')),
      eq(apmStats.env, p('env')),
      eq(apmStats.version, p('version')),
      eq(apmStats.resource, p('resource')),
      eq(apmStats.primaryTag, p('primaryTag')),
      eq(apmStats.bucket, p('bucket')),
    );
    return {
      find: db.select({ durations: apmStats.durations }).from(apmStats).where(key).prepare(),
      add: db
        .update(apmStats)
        .set({ hits: sql`${apmStats.hits} + ${p('hits')}`, errors: sql`${apmStats.errors} + ${p('errors')}`, durations: sql`${p('durations')}` })
        .where(key)
        .prepare(),
      insert: db
        .insert(apmStats)
        .values({
          service: p('service'),
          env: p('env'),
          version: p('version'),
          resource: p('resource'),
          primaryTag: p('primaryTag'),
          bucket: p('bucket'),
          hits: p('hits'),
          errors: p('errors'),
          durations: p('durations'),
        })
        .prepare(),
      addError: db
        .insert(apmErrors)
        .values({
          service: p('service'),
          env: p('env'),
          version: p('version'),
          resource: p('resource'),
          primaryTag: p('primaryTag'),
          bucket: p('bucket'),
          errorType: p('errorType'),
          count: p('count'),
          sampleMessage: p('sampleMessage'),
        })
        .onConflictDoUpdate({
          target: [apmErrors.service, apmErrors.env, apmErrors.version, apmErrors.resource, apmErrors.primaryTag, apmErrors.errorType, apmErrors.bucket],
          set: { count: sql`${apmErrors.count} + excluded.count`, sampleMessage: sql`coalesce(${apmErrors.sampleMessage}, excluded.sample_message)` },
        })
        .prepare(),
    };
  });
}

/**
 * Adds a batch to the store: counts add up, sketches merge, the first sample message of an
 * error type is kept. Call inside a transaction, read committed on PostgreSQL
 * (`transaction(db, work, { readCommitted: true })`): rows are locked there, not retried.
 */
export async function addBatch(db: Tx, stats: readonly StatDelta[], errors: readonly ErrorDelta[]): Promise<void> {
  if (dialectOf(db) === 'pg') return addBatchPg(db as unknown as Executor, stats, errors);
  // SQLite: one connection, its transactions one at a time, so a row read is still the row written.
  const st = statements(db);
  for (const { durations, ...s } of stats) {
    const existing = await firstRow(st.find, s);
    if (existing) {
      const merged = DDSketch.fromProto(existing.durations);
      merged.merge(durations);
      await runStatement(st.add, { ...s, durations: Buffer.from(merged.toProto()) });
    } else {
      await runStatement(st.insert, { ...s, durations: Buffer.from(durations.toProto()) });
    }
  }
  for (const e of errors) await runStatement(st.addError, { ...e });
}

type Executor = { execute(q: SQL): Promise<{ rows: Array<Record<string, unknown>> }> };

const keyOf = (k: ApmKey): string => `${k.service}\u0000${k.env}\u0000${k.version}\u0000${k.resource}\u0000${k.primaryTag}\u0000${k.bucket}`;

/** One delta per row, in key order: every transaction locks the rows they share in the same order, so none waits for another in a cycle. */
function byKey<T>(rows: readonly T[], key: (row: T) => string, merge: (into: T, row: T) => void): T[] {
  const one = new Map<string, T>();
  for (const row of rows) {
    const k = key(row);
    const seen = one.get(k);
    if (seen) merge(seen, row);
    else one.set(k, { ...row });
  }
  return [...one.keys()].sort().map((k) => one.get(k)!);
}

/** `rows` as parallel arrays, one bound parameter per column (typed `type[]`), unnested back into rows. */
function unnest<T>(rows: readonly T[], columns: ReadonlyArray<[type: string, value: (row: T) => unknown]>): SQL {
  return sql`unnest(${sql.join(
    columns.map(([type, value]) => sql`${sql.param(rows.map(value))}::${sql.raw(type)}[]`),
    sql`, `,
  )})`;
}
const keyColumns = sql.raw('service, env, version, resource, primary_tag, bucket');
const KEY: ReadonlyArray<[string, (k: ApmKey) => unknown]> = [
  ['text', (k) => k.service],
  ['text', (k) => k.env],
  ['text', (k) => k.version],
  ['text', (k) => k.resource],
  ['text', (k) => k.primaryTag],
  ['bigint', (k) => k.bucket],
];
type StatRow = ApmKey & { hits: number; errors: number; durations: Buffer };
const STAT: ReadonlyArray<[string, (s: StatRow) => unknown]> = [...KEY, ['bigint', (s) => s.hits], ['bigint', (s) => s.errors], ['bytea', (s) => s.durations]];
const ERROR: ReadonlyArray<[string, (e: ErrorDelta) => unknown]> = [...KEY, ['text', (e) => e.errorType], ['bigint', (e) => e.count], ['text', (e) => e.sampleMessage]];

/**
 * PostgreSQL, where instances write the same rows at once: a statement per step whatever the
 * batch's size, and no read-modify-write that a concurrent one can invalidate.
 * 1. The batch's new rows are inserted whole (their key order is the insert's); the rows that
 *    exist are left alone and come back as not inserted.
 * 2. Those are locked and read in key order (FOR UPDATE, waiting for a transaction holding
 *    one, then reading what it committed) and their sketches merged here. A row gone meanwhile
 *    (pruned) goes through 1 again.
 * 3. One statement updates the locked rows and upserts the error counts (commutative
 *    increments) in key order.
 */
async function addBatchPg(db: Executor, stats: readonly StatDelta[], errors: readonly ErrorDelta[]): Promise<void> {
  let pending = byKey(stats, keyOf, (into, s) => {
    into.hits += s.hits;
    into.errors += s.errors;
    into.durations = mergedSketch(into.durations, s.durations);
  });
  /** Rows locked here, with the sketches to write: updated in the last statement, with the error counts. */
  const updates: StatRow[] = [];
  while (pending.length > 0) {
    const inserted = await db.execute(
      sql`insert into apm_stats (${keyColumns}, hits, errors, durations) select * from ${unnest(
        pending.map((s) => ({ ...s, durations: Buffer.from(s.durations.toProto()) })),
        STAT,
      )}
        on conflict do nothing returning ${keyColumns}`,
    );
    const done = new Set(inserted.rows.map((r) => keyOf(asKey(r))));
    const existing = pending.filter((s) => !done.has(keyOf(s)));
    if (existing.length === 0) break;
    const locked = await db.execute(
      sql`select s.service, s.env, s.version, s.resource, s.primary_tag, s.bucket, s.durations
        from apm_stats s join ${unnest(existing, KEY)} as k(${keyColumns}) using (${keyColumns})
        order by s.service, s.env, s.version, s.resource, s.primary_tag, s.bucket for update of s`,
    );
    const current = new Map(locked.rows.map((r) => [keyOf(asKey(r)), r.durations as Buffer]));
    for (const s of existing) {
      const stored = current.get(keyOf(s));
      if (!stored) continue;
      const merged = DDSketch.fromProto(stored);
      merged.merge(s.durations);
      updates.push({ ...s, durations: Buffer.from(merged.toProto()) });
    }
    pending = existing.filter((s) => !current.has(keyOf(s)));
  }
  const errorRows = byKey(
    errors,
    (e) => `${keyOf(e)}\u0000${e.errorType}`,
    (into, e) => {
      into.count += e.count;
      into.sampleMessage ??= e.sampleMessage;
    },
  );
  const update = sql`update apm_stats s set hits = s.hits + d.hits, errors = s.errors + d.errors, durations = d.durations
    from ${unnest(updates, STAT)} as d(${keyColumns}, hits, errors, durations)
    where (s.service, s.env, s.version, s.resource, s.primary_tag, s.bucket) = (d.service, d.env, d.version, d.resource, d.primary_tag, d.bucket)`;
  const upsertErrors = sql`insert into apm_errors (${keyColumns}, error_type, count, sample_message)
    select * from ${unnest(errorRows, ERROR)}
    on conflict (service, env, version, resource, primary_tag, error_type, bucket)
    do update set count = apm_errors.count + excluded.count, sample_message = coalesce(apm_errors.sample_message, excluded.sample_message)`;
  // One statement for both while the rows stay locked: a round trip less that others wait for.
  if (updates.length > 0 && errorRows.length > 0) await db.execute(sql`with updated as (${update}) ${upsertErrors}`);
  else if (updates.length > 0) await db.execute(update);
  else if (errorRows.length > 0) await db.execute(upsertErrors);
}

const asKey = (r: Record<string, unknown>): ApmKey => ({
  service: r.service as string,
  env: r.env as string,
  version: r.version as string,
  resource: r.resource as string,
  primaryTag: r.primary_tag as string,
  bucket: Number(r.bucket),
});

function mergedSketch(a: DDSketch, b: DDSketch): DDSketch {
  const merged = newSketch();
  merged.merge(a);
  merged.merge(b);
  return merged;
}

/** Requests of one instance of a version in a bucket (apm_instance_stats). */
export interface InstanceDelta {
  service: string;
  env: string;
  version: string;
  instance: string;
  bucket: number;
  hits: number;
  errors: number;
}

function instanceStatements(db: Tx) {
  return prepared(db, 'apm.addInstanceStats', () => {
    const p = sql.placeholder;
    return {
      upsert: db
        .insert(apmInstanceStats)
        .values({ service: p('service'), env: p('env'), version: p('version'), instance: p('instance'), bucket: p('bucket'), hits: p('hits'), errors: p('errors') })
        .onConflictDoUpdate({
          target: [apmInstanceStats.service, apmInstanceStats.env, apmInstanceStats.version, apmInstanceStats.instance, apmInstanceStats.bucket],
          set: { hits: sql`${apmInstanceStats.hits} + excluded.hits`, errors: sql`${apmInstanceStats.errors} + excluded.errors` },
        })
        .prepare(),
    };
  });
}

const instanceKeyOf = (r: InstanceDelta): string => `${r.service}\u0000${r.env}\u0000${r.version}\u0000${r.instance}\u0000${r.bucket}`;
const INSTANCE: ReadonlyArray<[string, (r: InstanceDelta) => unknown]> = [
  ['text', (r) => r.service],
  ['text', (r) => r.env],
  ['text', (r) => r.version],
  ['text', (r) => r.instance],
  ['bigint', (r) => r.bucket],
  ['bigint', (r) => r.hits],
  ['bigint', (r) => r.errors],
];

/**
 * Adds per-instance counts (hits and errors add up), in the transaction that stores the batch's
 * apm_stats rows. On PostgreSQL one statement whatever the batch's size, its rows in key order
 * (transactions sharing rows lock them in the same order).
 */
export async function addInstanceStats(db: Tx, rows: readonly InstanceDelta[]): Promise<void> {
  if (rows.length === 0) return;
  if (dialectOf(db) === 'pg') {
    const sorted = byKey(rows, instanceKeyOf, (into, r) => {
      into.hits += r.hits;
      into.errors += r.errors;
    });
    await (db as unknown as Executor).execute(
      sql`insert into apm_instance_stats (service, env, version, instance, bucket, hits, errors) select * from ${unnest(sorted, INSTANCE)}
        on conflict (service, env, version, instance, bucket)
        do update set hits = apm_instance_stats.hits + excluded.hits, errors = apm_instance_stats.errors + excluded.errors`,
    );
    return;
  }
  const st = instanceStatements(db);
  for (const r of rows) await runStatement(st.upsert, { ...r });
}

export interface Window {
  service: string;
  env: string;
  /** Inclusive, ms. */
  from: number;
  /** Exclusive, ms. */
  to: number;
}

const inWindow = (w: Window, t: typeof apmStats | typeof apmErrors): SQL => and(eq(t.service, w.service), eq(t.env, w.env), gte(t.bucket, w.from), lt(t.bucket, w.to))!;

export interface CountRow {
  version: string;
  resource: string;
  primaryTag: string;
  hits: number;
  errors: number;
}

/** Hits and errors per version, resource and primary-tag value over a window. */
export async function countsByResource(db: Tx, w: Window): Promise<CountRow[]> {
  return await db
    .select({
      version: apmStats.version,
      resource: apmStats.resource,
      primaryTag: apmStats.primaryTag,
      hits: sql<number>`sum(${apmStats.hits})`,
      errors: sql<number>`sum(${apmStats.errors})`,
    })
    .from(apmStats)
    .where(inWindow(w, apmStats))
    .groupBy(apmStats.version, apmStats.resource, apmStats.primaryTag);
}

export interface BucketRow extends CountRow {
  bucket: number;
}

/** Hits and errors per bucket, version, resource and primary-tag value (sequential tests). */
export async function bucketCounts(db: Tx, w: Window): Promise<BucketRow[]> {
  return await db
    .select({
      bucket: apmStats.bucket,
      version: apmStats.version,
      resource: apmStats.resource,
      primaryTag: apmStats.primaryTag,
      hits: apmStats.hits,
      errors: apmStats.errors,
    })
    .from(apmStats)
    .where(inWindow(w, apmStats));
}

export interface InstanceRow {
  version: string;
  instance: string;
  bucket: number;
  hits: number;
  errors: number;
}

/** The most instances of one version instanceCounts returns: the busiest, by hits over its window. */
export const INSTANCES_READ_PER_VERSION = 200;

/**
 * Hits and errors per version, instance and bucket over a window, by bucket; at most
 * `perVersion` instances of a version (the busiest over the window, ties by name), so a rule's
 * read stays bounded however many pods a service had.
 */
export async function instanceCounts(db: Tx, w: Window, perVersion = INSTANCES_READ_PER_VERSION): Promise<InstanceRow[]> {
  const t = apmInstanceStats;
  const inRange = and(eq(t.service, w.service), eq(t.env, w.env), gte(t.bucket, w.from), lt(t.bucket, w.to));
  const busiest = db
    .select({
      version: t.version,
      instance: t.instance,
      rank: sql<number>`row_number() over (partition by ${t.version} order by sum(${t.hits}) desc, ${t.instance})`.as('rank'),
    })
    .from(t)
    .where(inRange)
    .groupBy(t.version, t.instance)
    .as('busiest');
  return await db
    .select({ version: t.version, instance: t.instance, bucket: t.bucket, hits: t.hits, errors: t.errors })
    .from(t)
    .innerJoin(busiest, and(eq(busiest.version, t.version), eq(busiest.instance, t.instance)))
    .where(and(inRange, lte(busiest.rank, perVersion)))
    .orderBy(t.bucket, t.version, t.instance);
}

export interface ErrorTypeRow {
  version: string;
  resource: string;
  primaryTag: string;
  errorType: string;
  count: number;
  sampleMessage: string | null;
}

/** Error types seen per version (and resource) over a window, with a sample message. */
export async function errorTypes(db: Tx, w: Window): Promise<ErrorTypeRow[]> {
  return await db
    .select({
      version: apmErrors.version,
      resource: apmErrors.resource,
      primaryTag: apmErrors.primaryTag,
      errorType: apmErrors.errorType,
      count: sql<number>`sum(${apmErrors.count})`,
      sampleMessage: sql<string | null>`max(${apmErrors.sampleMessage})`,
    })
    .from(apmErrors)
    .where(inWindow(w, apmErrors))
    .groupBy(apmErrors.version, apmErrors.resource, apmErrors.primaryTag, apmErrors.errorType);
}

export interface SketchRow extends CountRow {
  durations: Buffer;
}

/** Every stored row of a window, sketches included, for metrics that need latency. */
export async function statsRows(db: Tx, w: Window): Promise<SketchRow[]> {
  return await db
    .select({
      version: apmStats.version,
      resource: apmStats.resource,
      primaryTag: apmStats.primaryTag,
      hits: apmStats.hits,
      errors: apmStats.errors,
      durations: apmStats.durations,
    })
    .from(apmStats)
    .where(inWindow(w, apmStats));
}

/** Buckets older than the horizon go (both tables). */
export async function pruneApm(db: Tx, before: number): Promise<number> {
  const stats = changed(await db.delete(apmStats).where(lt(apmStats.bucket, before)));
  return stats + changed(await db.delete(apmErrors).where(lt(apmErrors.bucket, before)));
}

/**
 * How long a stored OTLP request is remembered. Exporters retry for minutes (the Collector's
 * retry_on_failure gives up after 5 by default); a persistent queue may replay after a restart.
 */
export const OTLP_RECEIPT_MS = 60 * 60_000;

/**
 * Records that the request with `digest` is being stored, in the transaction that stores it:
 * false when it was stored before (a retry), then nothing is to be written. On PostgreSQL a
 * concurrent copy waits on the key until the first commits (then it is a retry) or rolls back.
 */
export async function recordOtlpReceipt(db: Tx, digest: string, at: number): Promise<boolean> {
  const inserted = await db.insert(otlpReceipts).values({ digest, receivedAt: at }).onConflictDoNothing().returning({ digest: otlpReceipts.digest });
  return inserted.length > 0;
}

/** When the request with `digest` was received (the time its spans were judged by), while its receipt is kept. */
export async function otlpReceiptAt(db: Tx, digest: string): Promise<number | undefined> {
  const [row] = await db.select({ at: otlpReceipts.receivedAt }).from(otlpReceipts).where(eq(otlpReceipts.digest, digest));
  return row?.at;
}

/** Receipts deleted by one statement of pruneOtlpReceipts (and those recorded in the same millisecond as the last). */
export const OTLP_RECEIPT_PRUNE_SLICE = 5000;

/**
 * Deletes the receipts recorded before `before`, oldest first, a slice per statement with a
 * turn of the event loop between: there is one a request, an hour's worth at each run, and one
 * DELETE of them all held SQLite (and with it every request) for seconds.
 */
export async function pruneOtlpReceipts(db: Tx, before: number): Promise<number> {
  return await pruneInSlices(db, otlpReceipts, otlpReceipts.receivedAt, before, OTLP_RECEIPT_PRUNE_SLICE);
}

/**
 * How long per-instance counts are kept: enough for the FDD rule's windows (a deployment's
 * baseline and canary hours), far less than apm_stats (TOLLGATE_APM_RETENTION_DAYS), as a
 * service has many instances.
 */
export const APM_INSTANCE_RETENTION_MS = 6 * 3_600_000;

/** Instance rows deleted by one statement of pruneApmInstances (and those of the same bucket as the last). */
export const APM_INSTANCE_PRUNE_SLICE = 5000;

/**
 * Deletes the per-instance counts of buckets before `before`, oldest first, in slices like the
 * receipts: an hour of a service with many pods is hundreds of thousands of rows.
 */
export async function pruneApmInstances(db: Tx, before: number): Promise<number> {
  return await pruneInSlices(db, apmInstanceStats, apmInstanceStats.bucket, before, APM_INSTANCE_PRUNE_SLICE);
}

/** Deletes the rows of `table` whose `at` is before `before`, oldest first, about `slice` per statement, the event loop turning between. */
async function pruneInSlices(
  db: Tx,
  table: typeof otlpReceipts | typeof apmInstanceStats,
  at: typeof otlpReceipts.receivedAt | typeof apmInstanceStats.bucket,
  before: number,
  slice: number,
): Promise<number> {
  let pruned = 0;
  let done: number | undefined;
  for (;;) {
    // The row a slice from the oldest left (those up to `done` are gone: not scanned again).
    const [edge] = await db
      .select({ at })
      .from(table)
      .where(and(lt(at, before), done === undefined ? undefined : gt(at, done)))
      .orderBy(at)
      .limit(1)
      .offset(slice);
    pruned += changed(await db.delete(table).where(edge === undefined ? lt(at, before) : lte(at, edge.at)));
    if (edge === undefined) return pruned;
    done = edge.at;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
