// OTLP batches that write the same APM rows, sent at once to two instances on one PostgreSQL
// database: every request is accepted and every span counted once (issue 14, ingestion on any
// instance). The rows are new when the first requests arrive, so they race to create them too.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DDSketch } from '@datadog/sketches-js';
import { errorTypes, statsRows } from '../src/db/apm.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { startServer, type TestServer } from './helpers.ts';

const noPg = await skipWithoutPg();

const SERVICE = 'contended';
const RESOURCES = ['GET /a', 'GET /b', 'GET /c', 'POST /d', 'POST /e', 'PUT /f'];
const VERSIONS = ['v1', 'v2'];
/** Per batch, per resource, version and bucket: spans, of which errors (two error types). */
const SPANS = 4;
const ERRORS = 2;
const CONCURRENT = 16;
const ROUNDS = 4;

describe('OTLP on two instances sharing PostgreSQL', { skip: noPg }, () => {
  const servers: TestServer[] = [];
  let drop: (() => Promise<void>) | undefined;
  let key: string;
  before(async () => {
    if (noPg) return;
    const database = await createPgDatabase();
    drop = database.drop;
    servers.push(await startServer({ postgresUrl: database.url, nodeId: 'otlp-a' }));
    servers.push(await startServer({ postgresUrl: database.url, nodeId: 'otlp-b' }));
    key = await servers[0]!.createKey(['ingest']);
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await drop?.();
  });

  // Two 10 s buckets; every batch writes all of their rows, in an order of its own.
  const now = Date.now();
  const buckets = [now - 10_000, now];
  function batch(n: number, service = SERVICE) {
    const spans: Array<{ version: string; span: object }> = [];
    for (const start of buckets)
      for (const resource of RESOURCES)
        for (const version of VERSIONS)
          for (let i = 0; i < SPANS; i++) {
            const failed = i < ERRORS;
            spans.push({
              version,
              span: {
                name: resource,
                kind: 2,
                startTimeUnixNano: String(BigInt(start) * 1_000_000n),
                endTimeUnixNano: String(BigInt(start + 5 + i + n) * 1_000_000n),
                status: { code: failed ? 2 : 1 },
                events: failed ? [{ name: 'exception', attributes: [{ key: 'exception.type', value: { stringValue: i % 2 ? 'Timeout' : 'Refused' } }] }] : [],
              },
            });
          }
    // A different order per batch (rotated), one resource per version.
    const rotated = spans.map((_, i) => spans[(i + n * 7) % spans.length]!);
    return {
      resourceSpans: VERSIONS.map((version) => ({
        resource: {
          attributes: [
            { key: 'service.name', value: { stringValue: service } },
            { key: 'deployment.environment', value: { stringValue: 'prod' } },
            { key: 'service.version', value: { stringValue: version } },
          ],
        },
        scopeSpans: [{ spans: rotated.filter((s) => s.version === version).map((s) => s.span) }],
      })),
    };
  }

  test('batches writing the same rows at once are all accepted and counted exactly once', async () => {
    const statuses: Record<number, number> = {};
    let n = 0;
    for (let round = 0; round < ROUNDS; round++) {
      await Promise.all(
        Array.from({ length: CONCURRENT }, async () => {
          const i = n++;
          const r = await fetch(`${servers[i % servers.length]!.url}/v1/traces`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
            body: JSON.stringify(batch(i)),
          });
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
          await r.arrayBuffer();
        }),
      );
    }
    const sent = CONCURRENT * ROUNDS;
    assert.deepEqual(statuses, { 200: sent });

    const window = { service: SERVICE, env: 'prod', from: 0, to: now + 60_000 };
    const rows = await statsRows(servers[1]!.app.deps.db, window);
    assert.equal(rows.length, buckets.length * RESOURCES.length * VERSIONS.length);
    for (const row of rows) {
      const where = `${row.version} ${row.resource}`;
      assert.equal(row.hits, sent * SPANS, where);
      assert.equal(row.errors, sent * ERRORS, where);
      // Every batch's latencies are in the sketch: none was merged into a stale copy and lost.
      assert.equal(DDSketch.fromProto(row.durations).count, sent * SPANS, where);
    }
    const types = await errorTypes(servers[0]!.app.deps.db, window);
    assert.equal(types.length, RESOURCES.length * VERSIONS.length * 2);
    // Summed over both buckets.
    for (const t of types) assert.equal(t.count, (sent * ERRORS * buckets.length) / 2, `${t.version} ${t.resource} ${t.errorType}`);
  });

  test('one request sent again and again to both instances at once is counted once', async () => {
    const body = JSON.stringify(batch(0, 'retried'));
    const statuses = await Promise.all(
      Array.from({ length: CONCURRENT }, async (_, i) => {
        const r = await fetch(`${servers[i % servers.length]!.url}/v1/traces`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body,
        });
        await r.arrayBuffer();
        return r.status;
      }),
    );
    assert.deepEqual(new Set(statuses), new Set([200]));
    const rows = await statsRows(servers[0]!.app.deps.db, { service: 'retried', env: 'prod', from: 0, to: now + 60_000 });
    assert.equal(rows.length, buckets.length * RESOURCES.length * VERSIONS.length);
    for (const row of rows) assert.deepEqual([row.hits, row.errors], [SPANS, ERRORS], `${row.version} ${row.resource}`);
  });

  test('a batch is written in the same few statements whatever its number of rows', async () => {
    const s = servers[0]!;
    const send = async (n: number) => {
      s.queries.length = 0;
      const r = await fetch(`${s.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify(batch(n, 'statements')),
      });
      assert.equal(r.status, 200);
      // Writes and the reads they lock (not a prune, should one run meanwhile).
      return s.queries.filter((q) => /apm_(stats|errors)/.test(q) && !/^delete/i.test(q)).length;
    };
    // 24 rows and 48 error rows: inserted, then the error counts.
    assert.equal(await send(0), 2);
    // Another batch on the same rows: the insert finds them all, so they are locked and read,
    // then updated with the error counts.
    assert.equal(await send(1), 3);
  });
});
