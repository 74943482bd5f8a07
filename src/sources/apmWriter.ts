// The APM store's write side: requests aggregated into buckets by their own start time and
// written in one transaction per batch; the engine hears which services changed.

import { addBatch, addInstanceStats, type ErrorDelta, type InstanceDelta, newSketch, recordOtlpReceipt, type StatDelta } from '../db/apm.ts';
import { transaction } from '../db/client.ts';
import { APM_BUCKET_MS } from '../db/schema.ts';
import type { Deps } from '../domain/deps.ts';
import type { RequestSpan } from './otlp.ts';

const bucketOf = (ms: number) => Math.floor(ms / APM_BUCKET_MS) * APM_BUCKET_MS;

/**
 * The most instances of one service, env and version an OTLP request records per instance
 * (apm_instance_stats): the first ones its spans name. The spans of the others still count in
 * apm_stats; only their per-instance rows are not kept. A request naming thousands of made-up
 * instances then writes at most this many rows per version and bucket, whatever it sends. An
 * exporter (a Collector) batching the spans of more pods than this loses the per-pod counts
 * of the rest from that request.
 */
export const APM_INSTANCES_PER_REQUEST = 64;

/**
 * Requests aggregated into the store's rows (one per service, env, version, resource,
 * primary tag and bucket, with a latency sketch; and per instance, one per service, env,
 * version, instance and bucket), as they are decoded: a large request keeps its aggregates in
 * memory, never its spans.
 */
export class ApmAggregate {
  private readonly stats = new Map<string, StatDelta>();
  private readonly errors = new Map<string, ErrorDelta>();
  private readonly instanceStats = new Map<string, InstanceDelta>();
  /** The instances recorded per service, env and version (at most APM_INSTANCES_PER_REQUEST each). */
  private readonly instancesOf = new Map<string, Set<string>>();

  add(s: RequestSpan): void {
    const bucket = bucketOf(s.startMs);
    const key = `${s.service}\u0000${s.env}\u0000${s.version}\u0000${s.resource}\u0000${s.primaryTag}\u0000${bucket}`;
    if (s.instance !== '') this.addInstance(s, bucket);
    let stat = this.stats.get(key);
    if (!stat) {
      stat = { service: s.service, env: s.env, version: s.version, resource: s.resource, primaryTag: s.primaryTag, bucket, hits: 0, errors: 0, durations: newSketch() };
      this.stats.set(key, stat);
    }
    stat.hits++;
    stat.durations.accept(Math.max(s.durationMs, 0));
    if (s.error) {
      stat.errors++;
      const type = s.errorType ?? 'error';
      const errorKey = `${key}\u0000${type}`;
      const e = this.errors.get(errorKey);
      if (e) e.count++;
      else
        this.errors.set(errorKey, {
          service: s.service,
          env: s.env,
          version: s.version,
          resource: s.resource,
          primaryTag: s.primaryTag,
          bucket,
          errorType: type,
          count: 1,
          sampleMessage: s.errorMessage,
        });
    }
  }

  /** The row the previous span went to: a resource's spans share it, mostly, and skip two keys. */
  private lastInstance: InstanceDelta | null = null;

  private addInstance(s: RequestSpan, bucket: number): void {
    const last = this.lastInstance;
    if (last && last.bucket === bucket && last.instance === s.instance && last.version === s.version && last.service === s.service && last.env === s.env) {
      last.hits++;
      if (s.error) last.errors++;
      return;
    }
    const version = `${s.service}\u0000${s.env}\u0000${s.version}`;
    let instances = this.instancesOf.get(version);
    if (!instances) this.instancesOf.set(version, (instances = new Set()));
    if (!instances.has(s.instance)) {
      if (instances.size >= APM_INSTANCES_PER_REQUEST) return;
      instances.add(s.instance);
    }
    const key = `${version}\u0000${s.instance}\u0000${bucket}`;
    let row = this.instanceStats.get(key);
    if (!row) {
      row = { service: s.service, env: s.env, version: s.version, instance: s.instance, bucket, hits: 0, errors: 0 };
      this.instanceStats.set(key, row);
    }
    row.hits++;
    if (s.error) row.errors++;
    this.lastInstance = row;
  }

  /**
   * Stores everything in one transaction (all or nothing: an exporter's retry after a
   * failure never counts a span twice) and tells the engine which services changed.
   * With `receipt` (a digest of the request, and when it was received), a request stored before
   * is not stored again: an exporter that lost the answer to a stored request sends it again. It
   * then returns null.
   */
  async store(deps: Deps, receipt?: { digest: string; at: number }): Promise<Array<{ service: string; env: string }> | null> {
    if (this.stats.size === 0) return [];
    // Read committed: on PostgreSQL addBatch locks the rows it merges into and reads what the
    // previous holder committed, so concurrent batches on the same rows wait instead of failing.
    const stored = await transaction(
      deps.db,
      async (tx) => {
        if (receipt !== undefined && !(await recordOtlpReceipt(tx, receipt.digest, receipt.at))) return false;
        // Before addBatch on PostgreSQL: its rows are the ones every instance of a service
        // writes, these mostly one instance's, so the locks others wait for are held the shorter.
        await addInstanceStats(tx, [...this.instanceStats.values()]);
        await addBatch(tx, [...this.stats.values()], [...this.errors.values()]);
        return true;
      },
      { readCommitted: true },
    );
    if (!stored) return null;
    const touched = new Map<string, { service: string; env: string }>();
    for (const s of this.stats.values()) touched.set(`${s.service}\u0000${s.env}`, { service: s.service, env: s.env });
    for (const t of touched.values()) deps.events.publish('apm.ingested', { ...t, at: deps.now() });
    return [...touched.values()];
  }
}

/**
 * Aggregates a batch of requests (yielding to the event loop every `chunk` spans) and stores
 * it in one transaction; returns the service/env pairs it touched.
 */
export async function ingestRequests(deps: Deps, spans: readonly RequestSpan[], chunk = Number.POSITIVE_INFINITY): Promise<Array<{ service: string; env: string }>> {
  const aggregate = new ApmAggregate();
  let n = 0;
  for (const s of spans) {
    if (++n % chunk === 0) await new Promise((r) => setImmediate(r));
    aggregate.add(s);
  }
  return (await aggregate.store(deps)) ?? [];
}
