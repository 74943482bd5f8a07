import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { testConfig } from '../src/config.ts';
import {
  APM_INSTANCE_PRUNE_SLICE,
  APM_INSTANCE_RETENTION_MS,
  addBatch,
  addInstanceStats,
  instanceCounts,
  newSketch,
  OTLP_RECEIPT_MS,
  OTLP_RECEIPT_PRUNE_SLICE,
  recordOtlpReceipt,
} from '../src/db/apm.ts';
import { insertBacktest } from '../src/db/backtests.ts';
import { openDb } from '../src/db/client.ts';
import { insertEvaluation, ruleEvaluationsOf } from '../src/db/evaluations.ts';
import { insertTransition, transitionsAfter } from '../src/db/monitors.ts';
import { insertChannel, insertOutbox } from '../src/db/notifications.ts';
import { APM_BUCKET_MS, apmErrors, apmStats, backtests, evaluations, notificationOutbox, otlpReceipts } from '../src/db/schema.ts';
import type { Deps } from '../src/domain/deps.ts';
import { createEvents } from '../src/domain/events.ts';
import { pruneHistory } from '../src/domain/housekeeping.ts';
import { newId } from '../src/domain/ids.ts';
import { createMonitor } from '../src/domain/monitors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { stamp } from '../src/domain/stamp.ts';
import { createLogger } from '../src/log.ts';
import { startServer } from './helpers/server.ts';
import { turnsDuring } from './helpers/tools.ts';

const DAY = 86_400_000;
const NOW = new Date('2025-06-01T12:00:00Z');
const daysAgo = (days: number) => new Date(NOW.getTime() - days * DAY);

function deps(): Deps {
  return {
    db: openDb(':memory:'),
    events: createEvents(),
    log: createLogger('silent'),
    config: testConfig({ retentionDays: 90, apmRetentionDays: 7 }),
    now: () => NOW,
    baseUrl: () => 'http://localhost',
    nodeId: 'test',
    planWindow: () => undefined,
  };
}

/** An evaluation with one rule, started `startedDaysAgo` and finished `finishedDaysAgo` (null: still running). */
async function evaluation(d: Deps, startedDaysAgo: number, finishedDaysAgo: number | null): Promise<string> {
  const id = newId();
  const startedAt = daysAgo(startedDaysAgo);
  const finishedAt = finishedDaysAgo === null ? null : daysAgo(finishedDaysAgo);
  const status = finishedAt ? 'pass' : 'in_progress';
  await insertEvaluation(
    d.db,
    {
      id,
      gateId: null,
      service: 'api',
      env: 'prod',
      identifier: 'default',
      dryRun: false,
      onSourceError: 'fail',
      status,
      justInTime: true,
      triggeredById: 'k',
      triggeredByName: 'k',
      startedAt,
      decidedAt: finishedAt,
      finishedAt,
    },
    [
      {
        id: newId(),
        evaluationId: id,
        position: 0,
        name: 'r',
        type: 'monitor',
        dryRun: false,
        options: {},
        status,
        startedAt,
        windowStartsAt: startedAt,
        windowEndsAt: startedAt,
        finishedAt,
      },
    ],
  );
  return id;
}

async function apmBucket(d: Deps, bucketDaysAgo: number): Promise<void> {
  const key = { service: 'api', env: 'prod', version: '1', resource: 'GET /', primaryTag: '', bucket: daysAgo(bucketDaysAgo).getTime() };
  await addBatch(d.db, [{ ...key, hits: 1, errors: 1, durations: newSketch() }], [{ ...key, errorType: 'Boom', count: 1, sampleMessage: null }]);
}

/** A backtest created `createdDaysAgo` and ended `endedDaysAgo` (null: still running). */
async function backtest(d: Deps, createdDaysAgo: number, endedDaysAgo: number | null): Promise<string> {
  const id = newId();
  await insertBacktest(d.db, {
    id,
    gateId: null,
    service: 'api',
    env: 'prod',
    configuration: {},
    from: daysAgo(createdDaysAgo + 1),
    to: daysAgo(createdDaysAgo),
    status: endedDaysAgo === null ? 'running' : 'done',
    results: [],
    skippedRules: [],
    nodeId: 'test',
    createdById: 'k',
    createdByName: 'k',
    createdAt: daysAgo(createdDaysAgo),
    finishedAt: endedDaysAgo === null ? null : daysAgo(endedDaysAgo),
  });
  return id;
}

test('pruneHistory deletes finished evaluations and transitions past retention, APM buckets past APM retention and OTLP receipts past an hour; keeps the rest', async () => {
  const d = deps();
  const old = await evaluation(d, 100, 91);
  const recent = await evaluation(d, 100, 89);
  const running = await evaluation(d, 200, null);
  const monitor = await createMonitor(d, SYSTEM, { name: 'm', type: 'external', tags: [], query: '', muted: false, comparator: 'above' });
  for (const days of [91, 89]) await insertTransition(d.db, { id: newId(), monitorId: monitor.id, group: '*', from: null, to: 'ok', at: daysAgo(days), message: null });
  await apmBucket(d, 8);
  await apmBucket(d, 6);
  assert.ok(await recordOtlpReceipt(d.db, 'retry expected no more', NOW.getTime() - OTLP_RECEIPT_MS - 1));
  assert.ok(await recordOtlpReceipt(d.db, 'retry still expected', NOW.getTime() - OTLP_RECEIPT_MS + 60_000));
  await backtest(d, 100, 91);
  const keptBacktests = [await backtest(d, 100, 89), await backtest(d, 200, null)];

  const pruned = await pruneHistory(d);

  assert.deepEqual(pruned, { evaluations: 1, transitions: 1, apmRows: 2, apmInstanceRows: 0, otlpReceipts: 1, backtests: 1, notifications: 0, horizon: daysAgo(90) });
  assert.deepEqual(d.db.select({ digest: otlpReceipts.digest }).from(otlpReceipts).all(), [{ digest: 'retry still expected' }]);
  assert.deepEqual(
    d.db
      .select({ id: backtests.id })
      .from(backtests)
      .all()
      .map((b) => b.id)
      .sort(),
    keptBacktests.sort(),
  );
  const left = d.db
    .select({ id: evaluations.id })
    .from(evaluations)
    .all()
    .map((e) => e.id);
  assert.deepEqual(left.sort(), [recent, running].sort());
  assert.equal((await ruleEvaluationsOf(d.db, [old])).length, 0, 'rule evaluations go with their evaluation');
  assert.deepEqual(
    (await transitionsAfter(d.db, [monitor.id], new Date(0))).map((t) => t.at),
    [daysAgo(89)],
  );
  assert.deepEqual(d.db.select({ bucket: apmStats.bucket }).from(apmStats).all(), [{ bucket: daysAgo(6).getTime() }]);
  assert.deepEqual(d.db.select({ bucket: apmErrors.bucket }).from(apmErrors).all(), [{ bucket: daysAgo(6).getTime() }]);

  assert.deepEqual(
    await pruneHistory(d),
    { evaluations: 0, transitions: 0, apmRows: 0, apmInstanceRows: 0, otlpReceipts: 0, backtests: 0, notifications: 0, horizon: daysAgo(90) },
    'a second run finds nothing more',
  );
});

test('pruneHistory deletes notification deliveries settled past retention; a pending one stays however old', async () => {
  const d = deps();
  const channel = await insertChannel(d.db, { id: newId(), name: 'c', type: 'slack', url: 'https://hooks.example.com/x', secret: null, envs: ['prod'], ...stamp(SYSTEM, NOW) });
  const row = async (status: 'delivered' | 'failed' | 'pending', days: number) => {
    const id = newId();
    await insertOutbox(d.db, [
      { id, eventKey: id, event: 'test', channelId: channel.id, env: 'prod', payload: {}, status, nextAttemptAt: daysAgo(days), createdAt: daysAgo(days) },
    ]);
    return id;
  };
  await row('delivered', 91);
  await row('failed', 91);
  const pending = await row('pending', 91);
  const recent = await row('delivered', 89);

  assert.equal((await pruneHistory(d)).notifications, 2);
  const left = d.db
    .select({ id: notificationOutbox.id })
    .from(notificationOutbox)
    .all()
    .map((r) => r.id);
  assert.deepEqual(left.sort(), [pending, recent].sort());
});

test("pruneHistory deletes a busy hour's OTLP receipts (one a request) in slices, the event loop turning between them", async () => {
  const d = deps();
  // A single DELETE of an hour's receipts at 100 requests a second held SQLite's connection,
  // and with it every request, for seconds (measured in a scratch script; no timing here).
  const OLD = 4 * OTLP_RECEIPT_PRUNE_SLICE + 1234;
  // Digests as the receiver makes them (random, so spread over the whole primary key); some
  // receipts share a millisecond across a slice's edge.
  const digest = (s: string) => createHash('sha256').update(s).digest('hex');
  const insert = d.db.$client.prepare('insert into otlp_receipts (digest, received_at) values (?, ?)');
  const oldAt = (i: number) => NOW.getTime() - OTLP_RECEIPT_MS - 1 - Math.floor(i / 3);
  d.db.$client.transaction(() => {
    for (let i = 0; i < OLD; i++) insert.run(digest(`old-${i}`), oldAt(i));
    for (let i = 0; i < 1000; i++) insert.run(digest(`new-${i}`), NOW.getTime() - i);
  })();
  const deletes: number[] = [];
  const deleteStatement = /^delete from "otlp_receipts"/;
  const client = d.db.$client;
  const prepare = client.prepare.bind(client);
  client.prepare = ((source: string) => {
    const statement = prepare(source);
    if (!deleteStatement.test(source)) return statement;
    const run = statement.run.bind(statement);
    statement.run = ((...params: unknown[]) => {
      const result = run(...params);
      deletes.push(result.changes);
      return result;
    }) as typeof statement.run;
    return statement;
  }) as typeof client.prepare;
  const { result: pruned, turns } = await turnsDuring(() => pruneHistory(d)).finally(() => {
    client.prepare = prepare;
  });
  assert.equal(pruned.otlpReceipts, OLD);
  assert.equal(deletes.length, 5, `deleted in ${deletes.length} statements: ${deletes}`);
  assert.ok(Math.max(...deletes) <= OTLP_RECEIPT_PRUNE_SLICE + 3, `a statement deleted ${Math.max(...deletes)} receipts`);
  assert.ok(turns >= deletes.length - 1, `the event loop turned ${turns} times over ${deletes.length} slices`);
  assert.equal((client.prepare('select count(*) as n from otlp_receipts').get() as { n: number }).n, 1000);
});

test('pruneHistory deletes per-instance APM counts past 6 hours, a slice at a time, and keeps newer ones (on the test store: SQLite, or PostgreSQL)', async (t) => {
  const s = await startServer();
  t.after(() => s.stop());
  // A clock a month ahead, so that the rows written here are in the future for the server's own
  // hourly housekeeping (real time) and it never prunes them under this test.
  const now = Math.floor((Date.now() + 30 * DAY) / APM_BUCKET_MS) * APM_BUCKET_MS;
  const d: Deps = { ...s.app.deps, now: () => new Date(now) };
  const horizon = now - APM_INSTANCE_RETENTION_MS;
  const row = (instance: string, bucket: number) => ({ service: 'api', env: 'prod', version: 'v1', instance, bucket, hits: 2, errors: 1 });
  // More than two slices of old rows, 50 instances a bucket, the newest of them in the last bucket before the horizon.
  const OLD = 2 * APM_INSTANCE_PRUNE_SLICE + 150;
  const old = Array.from({ length: OLD }, (_, i) => row(`pod-${i % 50}`, horizon - APM_BUCKET_MS - Math.floor(i / 50) * APM_BUCKET_MS));
  const kept = [row('pod-0', horizon), row('pod-1', horizon), row('pod-0', now - APM_BUCKET_MS)];
  await addInstanceStats(d.db, [...old, ...kept]);
  s.queries.length = 0;

  const { result: pruned, turns } = await turnsDuring(() => pruneHistory(d));

  assert.equal(pruned.apmInstanceRows, OLD);
  const deletes = s.queries.filter((q) => /^delete from "apm_instance_stats"/.test(q)).length;
  assert.equal(deletes, 3, 'a statement a slice');
  assert.ok(turns >= deletes - 1, `the event loop turned ${turns} times over ${deletes} slices`);
  const left = await instanceCounts(d.db, { service: 'api', env: 'prod', from: 0, to: now + APM_BUCKET_MS });
  assert.deepEqual(left.map((r) => [r.instance, r.bucket, r.hits, r.errors]).sort(), kept.map((r) => [r.instance, r.bucket, r.hits, r.errors]).sort());
  assert.equal((await pruneHistory(d)).apmInstanceRows, 0, 'a second run finds nothing more');
});
