import { DDSketch } from '@datadog/sketches-js';
import { and, eq, gte, lt, type SQL, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { changed } from './dialect.ts';
import { firstRow, prepared, runStatement } from './prepared.ts';
import { apmErrors, apmStats } from './schema.ts';

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
 * error type is kept. Call inside a transaction, with the root handle (prepared statements).
 */
export async function addBatch(db: Tx, stats: readonly StatDelta[], errors: readonly ErrorDelta[]): Promise<void> {
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
