// The APM store's write side: requests aggregated into buckets by their own start time and
// written in one transaction per batch; the engine hears which services changed.
import { addBatch, type ErrorDelta, newSketch, pruneApm, type StatDelta } from '../db/apm.ts';
import { APM_BUCKET_MS } from '../db/schema.ts';
import type { Deps } from '../domain/deps.ts';
import type { RequestSpan } from './otlp.ts';

export const bucketOf = (ms: number) => Math.floor(ms / APM_BUCKET_MS) * APM_BUCKET_MS;

/**
 * Aggregates a batch of requests (yielding to the event loop every `chunk` spans) and stores
 * it in one transaction; returns the service/env pairs it touched.
 */
export async function ingestRequests(deps: Deps, spans: readonly RequestSpan[], chunk = Number.POSITIVE_INFINITY): Promise<Array<{ service: string; env: string }>> {
  if (spans.length === 0) return [];
  const stats = new Map<string, StatDelta>();
  const errors = new Map<string, ErrorDelta>();
  let n = 0;
  for (const s of spans) {
    if (++n % chunk === 0) await new Promise((r) => setImmediate(r));
    const bucket = bucketOf(s.startMs);
    const key = [s.service, s.env, s.version, s.resource, s.primaryTag, bucket].join('\u0000');
    let stat = stats.get(key);
    if (!stat) {
      stat = { service: s.service, env: s.env, version: s.version, resource: s.resource, primaryTag: s.primaryTag, bucket, hits: 0, errors: 0, durations: newSketch() };
      stats.set(key, stat);
    }
    stat.hits++;
    stat.durations.accept(Math.max(s.durationMs, 0));
    if (s.error) {
      stat.errors++;
      const type = s.errorType ?? 'error';
      const errorKey = `${key}\u0000${type}`;
      const e = errors.get(errorKey);
      if (e) e.count++;
      else errors.set(errorKey, { service: s.service, env: s.env, version: s.version, resource: s.resource, primaryTag: s.primaryTag, bucket, errorType: type, count: 1, sampleMessage: s.errorMessage });
    }
  }
  // The root handle inside the transaction: same connection, and its prepared statements.
  deps.db.transaction(() => addBatch(deps.db, [...stats.values()], [...errors.values()]));
  const touched = new Map<string, { service: string; env: string }>();
  for (const s of stats.values()) touched.set(`${s.service}\u0000${s.env}`, { service: s.service, env: s.env });
  for (const t of touched.values()) deps.events.publish('apm.ingested', { ...t, at: deps.now() });
  return [...touched.values()];
}

export function pruneApmStore(deps: Deps, retentionDays: number): number {
  return pruneApm(deps.db, deps.now().getTime() - retentionDays * 86_400_000);
}
