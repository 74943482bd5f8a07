// The faulty_deployment_detection runner asked directly (and once through the engine), on an
// in-memory APM store at a test clock: no OTLP, no server, no waiting for buckets to pass.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { Db } from '../src/db/client.ts';
import { getEvaluation, getRuleEvaluation } from '../src/db/evaluations.ts';
import type { Deps } from '../src/domain/deps.ts';
import { ratioGrid } from '../src/domain/fdd.ts';
import { fddRunner, SETTLE_MS } from '../src/engine/fddRule.ts';
import type { CheckResult } from '../src/engine/runner.ts';
import { engineOn, ingest, memoryDb, recorded, T0, TestClock, trigger, unitDeps } from './helpers/engine.ts';

let db: Db;
let clock: TestClock;
let deps: Deps;
beforeEach(() => {
  db = memoryDb();
  clock = new TestClock();
  deps = unitDeps(db, clock);
});
afterEach(() => db.$client.close());

const RESOURCES = ['GET /cart', 'POST /pay', 'GET /search'];
type Evidence = Record<string, any>;

/** A started rule; `check()` asks the runner at the clock, carrying its state from check to check as the engine does. */
async function fdd(options: Record<string, unknown>, version = 'v2') {
  const e = await trigger(deps, [{ name: 'fdd', options: { faultyDeploymentDetection: options } }], { version });
  const id = (await recorded(db, e.id)).rules[0]!.id;
  let state: Record<string, unknown> | null = null;
  return {
    row: async () => (await getRuleEvaluation(db, id))!,
    async check(): Promise<CheckResult & { evidence: Evidence }> {
      const rule = { ...(await getRuleEvaluation(db, id))!, ...(state && { state }) };
      const result = (await fddRunner.check(deps, { rule, evaluation: (await getEvaluation(db, e.id))!, now: clock.now() })) as CheckResult & { evidence: Evidence };
      state = result.state ?? state;
      return result;
    },
  };
}

/** v1 and the canary v2 side by side over [from, from + spreadMs), 1% errors unless told. */
async function sideBySide(from: number, spreadMs: number, canaryErrors: Record<string, number> = {}, canary = 400, baseline = 2000) {
  for (const resource of RESOURCES) {
    await ingest(deps, { version: 'v1', resource, count: baseline, errors: baseline / 100, errorType: 'TimeoutError', from, spreadMs });
    await ingest(deps, { version: 'v2', resource, count: canary, errors: canaryErrors[resource] ?? canary / 100, errorType: 'TimeoutError', from, spreadMs });
  }
}

describe('FDD runner: windows and the clock', () => {
  test('plans a window of its duration, first looked at after one bucket (or the window, if shorter)', () => {
    assert.deepEqual(fddRunner.plan({ duration: 600 }, new Date(T0)), { windowStartsAt: new Date(T0), windowEndsAt: new Date(T0 + 600_000), nextCheckAt: new Date(T0 + 10_000) });
    assert.equal(fddRunner.plan({ duration: 3 }, new Date(T0)).nextCheckAt.getTime(), T0 + 3_000);
  });

  test('without traffic it waits, looking again every bucket and last when the window has settled', async () => {
    const r = await fdd({ duration: 60 });
    clock.advance(10_000);
    const waiting = await r.check();
    assert.equal(waiting.status, 'in_progress');
    assert.equal(waiting.reason, 'Waiting for traffic of version v2; nothing significant so far.');
    assert.equal(waiting.status === 'in_progress' && waiting.nextCheckAt.getTime(), T0 + 20_000);
    clock.advance(45_000);
    const last = await r.check();
    assert.equal(last.status === 'in_progress' && last.nextCheckAt.getTime(), T0 + 60_000 + SETTLE_MS, 'the last look waits for late spans');
  });

  test('reads only the buckets the clock has reached', async () => {
    const r = await fdd({ duration: 60 });
    await sideBySide(T0, 5_000);
    await sideBySide(T0 + 30_000, 5_000); // stamped ahead of the clock
    clock.advance(15_000);
    assert.equal((await r.check()).evidence.canaryRequests, 1200);
    clock.advance(20_000);
    assert.equal((await r.check()).evidence.canaryRequests, 2400);
  });

  test('a window that ended is decided only once it has settled', async () => {
    const r = await fdd({ duration: 10, minRelativeIncrease: 1 });
    await sideBySide(T0, 9_000, {}, 4000, 4000);
    clock.advance(10_000);
    assert.equal((await r.check()).status, 'in_progress', 'spans of the last seconds may still come');
    clock.advance(SETTLE_MS);
    const done = await r.check();
    assert.equal(done.status, 'pass', done.reason);
    assert.match(
      done.reason,
      /^No significant error-rate increase or new error type for version v2 over 12000 requests \(\d+ tests, alpha 0\.01; closest test: e-value [\d.e^]+ of [\d.]+ needed\)\. Baseline: concurrent traffic of other versions\.$/,
    );
    assert.equal(done.evidence.insufficientData, undefined);
  });
});

describe('FDD runner: decisions', () => {
  test('an endpoint whose error rate rose fails at the first look, naming it and nothing else', async () => {
    const r = await fdd({ duration: 600 });
    await sideBySide(T0, 900, { 'POST /pay': 120 });
    clock.advance(1_000);
    const result = await r.check();
    assert.equal(result.status, 'fail');
    assert.match(result.reason, /^Version v2: error rate of POST \/pay rose from 1\.00% \(baseline\) to 30\.00% \(120 of 400 requests\), e-value \S+ ≥ \S+/);
    assert.deepEqual(
      result.evidence.faultyResources.filter((f: Evidence) => f.scope === 'resource').map((f: Evidence) => f.name),
      ['POST /pay'],
    );
    assert.deepEqual(result.evidence.baselineVersions, ['v1']);
  });

  test('a new error type fails, with its count and a sample message', async () => {
    const r = await fdd({ duration: 600 });
    await sideBySide(T0, 900);
    await ingest(deps, { version: 'v2', resource: 'GET /cart', count: 30, errors: 30, errorType: 'NullPointerException', from: T0, spreadMs: 900 });
    clock.advance(1_000);
    const result = await r.check();
    assert.equal(result.status, 'fail');
    assert.match(result.reason, /new error type NullPointerException \(30 times, e\.g\. "boom"\) never seen in the baseline/);
    assert.deepEqual(
      result.evidence.newErrorTypes.map((t: Evidence) => [t.errorType, t.count, t.resources]),
      [['NullPointerException', 30, ['GET /cart']]],
    );
  });

  test('an error type the baseline had over the last day is not new', async () => {
    const r = await fdd({ duration: 600 });
    await ingest(deps, { version: 'v1', resource: 'GET /cart', count: 10, errors: 1, errorType: 'NullPointerException', from: T0 - 3 * 3_600_000, spreadMs: 1000 });
    await sideBySide(T0, 900);
    await ingest(deps, { version: 'v2', resource: 'GET /cart', count: 30, errors: 30, errorType: 'NullPointerException', from: T0, spreadMs: 900 });
    clock.advance(1_000);
    assert.deepEqual((await r.check()).evidence.newErrorTypes, []);
  });

  test('excluded resources are not read at all', async () => {
    const r = await fdd({ duration: 600, excludedResources: ['GET /healthz'] });
    await sideBySide(T0, 900);
    await ingest(deps, { version: 'v1', resource: 'GET /healthz', count: 500, from: T0, spreadMs: 900 });
    await ingest(deps, { version: 'v2', resource: 'GET /healthz', count: 500, errors: 400, errorType: 'HealthcheckDown', from: T0, spreadMs: 900 });
    clock.advance(1_000);
    const result = await r.check();
    assert.equal(result.status, 'in_progress', result.reason);
    assert.equal(result.evidence.canaryRequests, 1200);
  });

  test('without concurrent baseline traffic the hour before is the baseline', async () => {
    const r = await fdd({ duration: 600 });
    for (const resource of RESOURCES) await ingest(deps, { version: 'v1', resource, count: 2000, errors: 20, from: T0 - 1_800_000, spreadMs: 600_000 });
    for (const resource of RESOURCES) await ingest(deps, { version: 'v2', resource, count: 400, errors: resource === 'POST /pay' ? 120 : 4, from: T0, spreadMs: 900 });
    clock.advance(1_000);
    const result = await r.check();
    assert.equal(result.evidence.baseline, 'lookback');
    assert.equal(result.status, 'fail');
    assert.match(result.reason, /POST \/pay.*Baseline: the hour before the evaluation started\.$/);
  });

  test('a version without traffic resolves by onInsufficientData, saying why', async () => {
    const r = await fdd({ duration: 30, onInsufficientData: 'fail' }, 'v9');
    await ingest(deps, { version: 'v1', resource: 'GET /cart', count: 100, from: T0, spreadMs: 20_000 });
    clock.advance(30_000 + SETTLE_MS);
    const result = await r.check();
    assert.equal(result.status, 'fail');
    assert.equal(result.reason, 'Not enough data: version v9 received no traffic during the window; onInsufficientData makes the rule fail.');
    assert.equal(result.evidence.insufficientData, true);
  });

  test('too little canary traffic says how much more it needed, at the current rate', async () => {
    const r = await fdd({ duration: 60, minRelativeIncrease: 0.5 });
    await sideBySide(T0, 50_000, {}, 100, 2000);
    clock.advance(60_000 + SETTLE_MS);
    const result = await r.check();
    assert.equal(result.status, 'pass');
    assert.match(
      result.reason,
      /^Not enough data: the canary served 300 requests; detecting a \+50% error-rate increase over a 1\.00% baseline needs about (\d+), so about \d+ more \(≈ \d+ min at the current 300\.0 requests\/min\); onInsufficientData makes the rule pass\.$/,
    );
    assert.ok(result.evidence.requestsNeeded > 300);
  });

  test('resources keep the slot they were first given from check to check', async () => {
    const r = await fdd({ duration: 600 });
    await sideBySide(T0, 900);
    clock.advance(1_000);
    const first = await r.check();
    const names = (first.state as { family: { resources: string[] } }).family.resources;
    await ingest(deps, { version: 'v2', resource: 'GET /new', count: 50, from: T0 + 10_000, spreadMs: 900 });
    await ingest(deps, { version: 'v1', resource: 'GET /aaa', count: 5000, from: T0 + 10_000, spreadMs: 900 });
    clock.advance(11_000);
    const second = ((await r.check()).state as { family: { resources: string[] } }).family.resources;
    assert.deepEqual(second.slice(0, names.length), names, 'the earlier ones first, in their order');
    assert.deepEqual(second.slice(names.length).sort(), ['GET /aaa', 'GET /new']);
  });

  test('the ratio grid runs from half the smallest increase to ×8, as its comment says', () => {
    const grid = ratioGrid(0.5);
    assert.equal(grid.length, 6);
    assert.ok(Math.abs(grid[0]! - 1.25) < 1e-9);
    assert.ok(Math.abs(grid.at(-1)! - 8) < 1e-9);
    assert.ok(Math.abs(ratioGrid(9).at(-1)! - 11) < 1e-9, 'past ×8 when the increase asked for is larger');
  });
});

describe('FDD runner through the engine', () => {
  test('ingested spans wake the rule, which fails without waiting for its next look', async () => {
    const a = engineOn(db, clock);
    a.engine.start();
    await a.engine.idle();
    const e = await trigger(a.deps, [{ name: 'fdd', options: { faultyDeploymentDetection: { duration: 600 } } }], { version: 'v2' });
    assert.equal(a.timers.armedMs, 10_000);
    clock.advance(1_000);
    // Stored on the engine's own bus, as OTLP ingestion does.
    for (const resource of RESOURCES) {
      await ingest(a.deps, { version: 'v1', resource, count: 2000, errors: 20, from: T0, spreadMs: 900 });
      await ingest(a.deps, { version: 'v2', resource, count: 400, errors: resource === 'POST /pay' ? 120 : 4, from: T0, spreadMs: 900 });
    }
    await a.engine.idle();
    const rule = (await recorded(db, e.id)).rules[0]!;
    assert.equal(rule.status, 'fail', rule.reason ?? undefined);
    assert.equal(rule.finishedAt?.getTime(), T0 + 1_000);
    await a.engine.stop();
  });
});
