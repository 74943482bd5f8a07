// The backtester on an in-memory store and a test clock: monitor rules replayed from the recorded
// transition history, and the per-key limit on running backtests.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BacktestRow } from '../src/db/backtests.ts';
import { type DeployResult, getBacktest, MAX_RUNNING_BACKTESTS, MAX_RUNNING_BACKTESTS_PER_KEY, startBacktest } from '../src/domain/backtests.ts';
import type { Deps } from '../src/domain/deps.ts';
import { DomainError } from '../src/domain/errors.ts';
import { LEASE_MS } from '../src/domain/evaluations.ts';
import { createFreeze, createFreezeInputSchema } from '../src/domain/freezes.ts';
import { createMonitor, reportMonitorState } from '../src/domain/monitors.ts';
import { type Principal, SYSTEM } from '../src/domain/principal.ts';
import { createBacktester } from '../src/engine/backtest.ts';
import { engineOn, ingest, ManualTimers, memoryDb, recorded, T0, TestClock, trigger, unitDeps } from './helpers/engine.ts';
import { waitFor } from './helpers/tools.ts';

const MIN = 60_000;
const HOUR = 60 * MIN;

/** Resolves with the backtest once it has ended. */
function ended(deps: Deps, id: string): Promise<BacktestRow> {
  return new Promise((resolve) => {
    const off = deps.events.on('backtest.changed', (row) => {
      if (row.id === id && row.status !== 'running') {
        off();
        resolve(row);
      }
    });
  });
}

/** One backtest run to its end by a backtester of its own; the ended row. */
async function backtest(deps: Deps, actor: Principal, input: Parameters<typeof startBacktest>[2]): Promise<BacktestRow> {
  const backtester = createBacktester(deps);
  await backtester.start();
  try {
    const row = await startBacktest(deps, actor, input);
    return await ended(deps, row.id);
  } finally {
    await backtester.stop();
  }
}

describe('backtester', () => {
  it('replays a monitor rule from the transition history: the deploy fails when the monitor turned ALERT', async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    // v1 serves from T0; v2 appears at T0 + 1h (deploy A), v3 at T0 + 2h (deploy B).
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 600, from: T0, spreadMs: HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 600, from: T0 + HOUR, spreadMs: HOUR });
    await ingest(deps, { version: 'v3', resource: 'GET /a', count: 600, from: T0 + 2 * HOUR, spreadMs: HOUR });
    const monitor = (await createMonitor(deps, SYSTEM, { name: 'checkout errors', type: 'external', tags: ['service:checkout', 'env:prod'] } as never)).id;
    const report = async (at: number, state: 'ok' | 'alert') => {
      clock.ms = at;
      await reportMonitorState(deps, SYSTEM, { monitorId: monitor, state, group: '*' } as never);
    };
    await report(T0, 'ok');
    // ALERT for three minutes, five minutes after v2 appeared; all quiet around v3.
    await report(T0 + HOUR + 5 * MIN, 'alert');
    await report(T0 + HOUR + 8 * MIN, 'ok');
    clock.ms = T0 + 4 * HOUR;

    const backtester = createBacktester(deps);
    await backtester.start();
    const row = await startBacktest(deps, SYSTEM, {
      service: 'checkout',
      env: 'prod',
      configuration: { rules: [{ name: 'no alerts', options: { monitor: { query: 'service:checkout', duration: 900 } } }] },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 4 * HOUR),
    });
    const done = await ended(deps, row.id);
    // The same rule in a dry-run gate: it reports PASS, and the summary counts what it would have failed.
    const dry = await startBacktest(deps, SYSTEM, {
      service: 'checkout',
      env: 'prod',
      configuration: { dryRun: true, rules: [{ name: 'no alerts', options: { monitor: { query: 'service:checkout', duration: 900 } } }] },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 4 * HOUR),
    });
    const dryDone = await ended(deps, dry.id);
    await backtester.stop();
    assert.deepEqual(
      (dryDone.results as unknown as DeployResult[]).map((d) => [d.version, d.verdict, d.realVerdict]),
      [
        ['v2', 'pass', 'fail'],
        ['v3', 'pass', 'pass'],
      ],
    );
    assert.equal((dryDone.summary as { failed: number }).failed, 1);

    assert.equal(done.status, 'done');
    const deploys = done.results as unknown as DeployResult[];
    assert.deepEqual(
      deploys.map((d) => [d.version, d.verdict]),
      [
        ['v2', 'fail'],
        ['v3', 'pass'],
      ],
    );
    // Failed when the monitor turned ALERT, not at the first check of the replayed clock.
    assert.equal(deploys[0]!.decidedAt, new Date(T0 + HOUR + 5 * MIN).toISOString());
    assert.equal(deploys[0]!.timeToVerdictMs, 5 * MIN);
    assert.match(deploys[0]!.reason, /no alerts: Monitor "checkout errors" was ALERT/);
    // A pass needs the whole window watched.
    assert.equal(deploys[1]!.timeToVerdictMs, 15 * MIN);
    // v2 kept serving past its hour: no rollback.
    assert.equal(deploys[0]!.rollback, null);

    // A key of prod only may see the backtest (its env), but the backtest was started by a key
    // of every env: the monitor rule's verdict stays, the reason naming monitors does not.
    const prodOnly: Principal = { id: 'p', name: 'prod reader', scopes: new Set(['gates:read']), envs: ['prod'] };
    const seen = (await getBacktest(deps, prodOnly, row.id))!.results as unknown as DeployResult[];
    assert.equal(seen[0]!.verdict, 'fail');
    assert.doesNotMatch(JSON.stringify(seen), /checkout errors/);
    assert.match(seen[0]!.reason, /monitors outside your environments are not shown/);
    const staging: Principal = { ...prodOnly, envs: ['staging'] };
    assert.equal(await getBacktest(deps, staging, row.id), null);
  });

  it('replays freeze rules on the freezes as they were: a deploy during an ad-hoc freeze fails', async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 600, from: T0, spreadMs: HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 600, from: T0 + HOUR, spreadMs: HOUR });
    await ingest(deps, { version: 'v3', resource: 'GET /a', count: 600, from: T0 + 3 * HOUR, spreadMs: HOUR });
    // Frozen from T0 + 50 min to T0 + 2 h: v2 came out during it, v3 after.
    clock.ms = T0 + 50 * MIN;
    await createFreeze(deps, SYSTEM, createFreezeInputSchema.parse({ env: 'prod', reason: 'end-of-year freeze', endsAt: new Date(T0 + 2 * HOUR) }));
    clock.ms = T0 + 5 * HOUR;

    const backtester = createBacktester(deps);
    await backtester.start();
    const row = await startBacktest(deps, SYSTEM, {
      service: 'checkout',
      env: 'prod',
      configuration: {
        rules: [
          { name: 'no freeze', options: { freeze: {} } },
          { name: 'incidents', options: { freeze: { incidentQuery: 'service:checkout' } } },
        ],
      },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 5 * HOUR),
    });
    assert.deepEqual(
      row.skippedRules.map((r) => r.name),
      ['incidents'],
    );
    const done = await ended(deps, row.id);
    await backtester.stop();
    const deploys = done.results as unknown as DeployResult[];
    assert.deepEqual(
      deploys.map((d) => [d.version, d.verdict, d.decidingRule]),
      [
        ['v2', 'fail', 'no freeze'],
        ['v3', 'pass', 'no freeze'],
      ],
    );
    assert.match(deploys[0]!.reason, /end-of-year freeze/);
  });

  it(`refuses a key's backtest past ${MAX_RUNNING_BACKTESTS_PER_KEY} running, as RATE_LIMITED`, async () => {
    const clock = new TestClock(T0 + 2 * HOUR);
    const deps = unitDeps(memoryDb(), clock);
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 60, from: T0, spreadMs: HOUR });
    // No backtester runs: they stay running.
    for (let i = 0; i < MAX_RUNNING_BACKTESTS_PER_KEY; i++) await startBacktest(deps, SYSTEM, hourOfFdd);
    await assert.rejects(
      async () => startBacktest(deps, SYSTEM, hourOfFdd),
      (err: unknown) => err instanceof DomainError && err.code === 'RATE_LIMITED' && /already has 2 backtests running/.test(err.message),
    );
  });
});

/** An hour of FDD backtest over checkout in prod, started by a numbered admin key. */
const hourOfFdd = {
  service: 'checkout',
  env: 'prod',
  configuration: { rules: [{ name: 'errors', options: { faultyDeploymentDetection: {} } }] },
  from: new Date(T0),
  to: new Date(T0 + HOUR),
};
const adminKey = (n: number): Principal => ({ id: `key-${n}`, name: `team ${n}`, scopes: new Set(['admin']), envs: null });

describe('backtests, the server-wide limit', () => {
  it(`refuses any key's backtest past ${MAX_RUNNING_BACKTESTS} running on the server, naming no other key`, async () => {
    const clock = new TestClock(T0 + 2 * HOUR);
    const deps = unitDeps(memoryDb(), clock);
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 60, from: T0, spreadMs: HOUR });
    // No backtester runs: they stay running. Each key stays within its own limit.
    for (let i = 0; i < MAX_RUNNING_BACKTESTS; i++) await startBacktest(deps, adminKey(Math.floor(i / MAX_RUNNING_BACKTESTS_PER_KEY)), hourOfFdd);
    await assert.rejects(
      async () => startBacktest(deps, adminKey(99), hourOfFdd),
      (err: unknown) => err instanceof DomainError && err.code === 'RATE_LIMITED' && /as many backtests as it allows at once \(8\)/.test(err.message) && !/team/.test(err.message),
    );
  });
});

describe('backtests left running by a process that died', () => {
  it('are failed once their lease lapses, by an instance under another node id (a new container hostname), not while it may be running', async () => {
    // Failing only this node id's left the rest running forever, holding the server-wide limit:
    // a store with 8 such rows refused every backtest of every key. Failing every running one at
    // start failed what another live instance on the same store was running.
    const clock = new TestClock(T0 + 2 * HOUR);
    const db = memoryDb();
    const before = unitDeps(db, clock, 'old-host');
    await ingest(before, { version: 'v1', resource: 'GET /a', count: 60, from: T0, spreadMs: HOUR });
    // No backtester runs them: as if their process died once they were stored.
    const left = [];
    for (let i = 0; i < MAX_RUNNING_BACKTESTS; i++) left.push(await startBacktest(before, adminKey(Math.floor(i / MAX_RUNNING_BACKTESTS_PER_KEY)), hourOfFdd));

    const after = unitDeps(db, clock, 'new-host');
    const timers = new ManualTimers();
    const backtester = createBacktester(after, { scheduler: timers });
    await backtester.start();
    try {
      for (const b of left) assert.equal((await getBacktest(after, SYSTEM, b.id))!.status, 'running', 'its lease is live: another instance may be running it');
      clock.advance(LEASE_MS + 1);
      const failed = new Set<string>();
      const off = after.events.on('backtest.changed', (row) => row.status === 'failed' && failed.add(row.id));
      timers.housekeep();
      await waitFor('the lapsed backtests to be failed', async () => failed.size === left.length, 10_000);
      off();
      for (const b of left) {
        const now = (await getBacktest(after, SYSTEM, b.id))!;
        assert.equal(now.status, 'failed');
        assert.match(now.error ?? '', /interrupted/);
      }
    } finally {
      await backtester.stop();
    }
    const row = await backtest(after, adminKey(99), hourOfFdd);
    assert.equal(row.status, 'done');
  });

  it('are failed at once when a process starts under their node id (its earlier self, which cannot be running them)', async () => {
    const clock = new TestClock(T0 + 2 * HOUR);
    const db = memoryDb();
    const first = unitDeps(db, clock, 'host');
    const left = await startBacktest(first, adminKey(1), hourOfFdd);
    const other = await startBacktest(unitDeps(db, clock, 'other-host'), adminKey(2), hourOfFdd);
    const again = unitDeps(db, clock, 'host');
    const backtester = createBacktester(again, { scheduler: new ManualTimers() });
    await backtester.start();
    await backtester.stop();
    assert.equal((await getBacktest(again, SYSTEM, left.id))!.status, 'failed');
    assert.equal((await getBacktest(again, SYSTEM, other.id))!.status, 'running', "another live node's");
  });
});

describe('backtester, what it shows and sees', () => {
  it("hides an undecided monitor rule's reason from a reader who cannot see every env of the starting key", async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 600, from: T0, spreadMs: HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 600, from: T0 + HOUR, spreadMs: HOUR });
    // The query matches a monitor of prod and one of staging; the starting key sees both.
    await createMonitor(deps, SYSTEM, { name: 'checkout prod', type: 'external', tags: ['service:checkout', 'env:prod'] } as never);
    await createMonitor(deps, SYSTEM, { name: 'checkout staging', type: 'external', tags: ['service:checkout', 'env:staging'] } as never);
    clock.ms = T0 + 2.5 * HOUR;
    // A window of two hours: still open at the present, so the deploy is undecided on the monitor rule.
    const done = await backtest(deps, SYSTEM, {
      service: 'checkout',
      env: 'prod',
      configuration: { rules: [{ name: 'no alerts', options: { monitor: { query: 'service:checkout', duration: 7200 } } }] },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 2.5 * HOUR),
    });
    const all = done.results as unknown as DeployResult[];
    assert.deepEqual(
      all.map((d) => [d.version, d.verdict]),
      [['v2', 'undecided']],
    );
    assert.match(all[0]!.reason, /2 monitor\(s\)/);
    const prodOnly: Principal = { id: 'p', name: 'prod reader', scopes: new Set(['gates:read']), envs: ['prod'] };
    const seen = (await getBacktest(deps, prodOnly, done.id))!.results as unknown as DeployResult[];
    assert.equal(seen[0]!.verdict, 'undecided');
    assert.doesNotMatch(JSON.stringify(seen), /monitor\(s\)/);
    assert.match(seen[0]!.reason, /monitors outside your environments are not shown/);
  });

  it('replays a monitor rule on the monitors the starting key could see only', async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 600, from: T0, spreadMs: HOUR, env: 'staging' });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 600, from: T0 + HOUR, spreadMs: HOUR, env: 'staging' });
    const prod = (await createMonitor(deps, SYSTEM, { name: 'checkout prod', type: 'external', tags: ['service:checkout', 'env:prod'] } as never)).id;
    const staging = (await createMonitor(deps, SYSTEM, { name: 'checkout staging', type: 'external', tags: ['service:checkout', 'env:staging'] } as never)).id;
    await reportMonitorState(deps, SYSTEM, { monitorId: staging, state: 'ok', group: '*' } as never);
    await reportMonitorState(deps, SYSTEM, { monitorId: prod, state: 'ok', group: '*' } as never);
    clock.ms = T0 + HOUR + 5 * MIN;
    await reportMonitorState(deps, SYSTEM, { monitorId: prod, state: 'alert', group: '*' } as never);
    clock.ms = T0 + 3 * HOUR;
    const backtester = createBacktester(deps);
    await backtester.start();
    const stagingKey: Principal = { id: 's', name: 'staging key', scopes: new Set(['evaluations:write', 'gates:read']), envs: ['staging'] };
    const row = await startBacktest(deps, stagingKey, {
      service: 'checkout',
      env: 'staging',
      configuration: { rules: [{ name: 'no alerts', options: { monitor: { query: 'service:checkout', duration: 900 } } }] },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 3 * HOUR),
    });
    const done = await ended(deps, row.id);
    await backtester.stop();
    const deploys = done.results as unknown as DeployResult[];
    assert.deepEqual(
      deploys.map((d) => [d.version, d.verdict]),
      [['v2', 'pass']],
    );
    assert.doesNotMatch(JSON.stringify(done), /checkout prod|2 monitor/);
  });
});

describe('backtester, what a deploy is', () => {
  it('counts a version back after more than a day without requests as deployed anew, whatever the window starts at', async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    // v1 serves throughout; v2 serves 30 min from T0 + 1 h, then again from T0 + 31 h (30 h later);
    // v3 appears at T0 + 3 h, is gone 20 min later, and is back at T0 + 4 h (one deploy).
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 40 * 60, from: T0, spreadMs: 40 * HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 300, from: T0 + HOUR, spreadMs: 30 * MIN });
    await ingest(deps, { version: 'v3', resource: 'GET /a', count: 200, from: T0 + 3 * HOUR, spreadMs: 20 * MIN });
    await ingest(deps, { version: 'v3', resource: 'GET /a', count: 200, from: T0 + 4 * HOUR, spreadMs: 20 * MIN });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 600, from: T0 + 31 * HOUR, spreadMs: HOUR });
    clock.ms = T0 + 40 * HOUR;
    const backtester = createBacktester(deps);
    await backtester.start();
    const run = async (from: number) => {
      const row = await startBacktest(deps, SYSTEM, {
        service: 'checkout',
        env: 'prod',
        configuration: { rules: [{ name: 'no freeze', options: { freeze: {} } }] },
        from: new Date(from),
        to: new Date(T0 + 40 * HOUR),
      });
      return ((await ended(deps, row.id)).results as unknown as DeployResult[]).map((d) => [d.version, d.firstSeenAt]);
    };
    const whole = await run(T0 + 30 * MIN);
    const late = await run(T0 + 30 * HOUR);
    await backtester.stop();
    const redeploy = ['v2', new Date(T0 + 31 * HOUR).toISOString()];
    assert.deepEqual(whole, [['v2', new Date(T0 + HOUR).toISOString()], ['v3', new Date(T0 + 3 * HOUR).toISOString()], redeploy]);
    assert.deepEqual(late, [redeploy]);
  });
});

describe('backtester, rollbacks', () => {
  it('takes a newer version replacing a short-lived one for a roll forward, even while an older one keeps serving', async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    // v1 serves throughout (canaries beside it). v2 serves 20 min from T0 + 1 h, v3 replaces it
    // (a roll forward); v4 serves 20 min from T0 + 3 h, nothing newer after it (a rollback to v1, v3).
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 6 * 60, from: T0, spreadMs: 6 * HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 120, from: T0 + HOUR, spreadMs: 20 * MIN });
    await ingest(deps, { version: 'v3', resource: 'GET /a', count: 300, from: T0 + HOUR + 20 * MIN, spreadMs: 5 * HOUR });
    await ingest(deps, { version: 'v4', resource: 'GET /a', count: 120, from: T0 + 3 * HOUR, spreadMs: 20 * MIN });
    clock.ms = T0 + 6 * HOUR;
    const done = await backtest(deps, SYSTEM, {
      service: 'checkout',
      env: 'prod',
      configuration: { rules: [{ name: 'no freeze', options: { freeze: {} } }] },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 6 * HOUR),
    });
    const deploys = done.results as unknown as DeployResult[];
    assert.deepEqual(
      deploys.map((d) => [d.version, d.rollback?.versions ?? null]),
      [
        ['v2', null],
        ['v3', null],
        ['v4', ['v1', 'v3']],
      ],
    );
  });
});

describe('backtester against the live engine', () => {
  it('reaches the verdict, deciding rule and time a live evaluation reached on the same data', async () => {
    const clock = new TestClock(T0);
    const db = memoryDb();
    const live = engineOn(db, clock);
    const deps = live.deps;
    // v1 serves three hours, 2% errors; v2 (one request in three fails) canaries beside it from T0 + 1 h.
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 3 * 3600, errors: 3 * 72, from: T0, spreadMs: 3 * HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 900, errors: 300, from: T0 + HOUR, spreadMs: 15 * MIN });
    const monitor = (await createMonitor(deps, SYSTEM, { name: 'checkout latency', type: 'external', tags: ['service:checkout', 'env:prod'] } as never)).id;
    await reportMonitorState(deps, SYSTEM, { monitorId: monitor, state: 'ok', group: '*' } as never);
    const rules = [
      { name: 'errors', options: { faultyDeploymentDetection: { duration: 900, minRelativeIncrease: 1 } } },
      { name: 'latency', options: { monitor: { query: 'service:checkout', duration: 600 } } },
    ];
    // Live: evaluated when v2 appeared, the engine's timers fired on the test clock until it ends.
    clock.ms = T0 + HOUR;
    live.engine.start();
    await live.engine.idle();
    const e = await trigger(deps, rules, { version: 'v2' });
    for (let i = 0; i < 1000 && (await recorded(db, e.id)).evaluation.status === 'in_progress'; i++) {
      clock.advance(live.timers.armedMs ?? 10_000);
      await live.fire();
    }
    await live.engine.stop();
    const { evaluation, rules: liveRules } = await recorded(db, e.id);
    assert.equal(evaluation.status, 'fail');
    const liveDecider = liveRules.filter((r) => r.status === 'fail').sort((a, b) => a.finishedAt!.getTime() - b.finishedAt!.getTime())[0]!;

    clock.ms = T0 + 3 * HOUR;
    const done = await backtest(deps, SYSTEM, { service: 'checkout', env: 'prod', configuration: { rules }, from: new Date(T0 + 30 * MIN), to: new Date(T0 + 3 * HOUR) });
    const [d] = done.results as unknown as DeployResult[];
    assert.deepEqual([d!.version, d!.verdict, d!.decidingRule], ['v2', 'fail', liveDecider.name]);
    assert.equal(d!.decidedAt, liveDecider.finishedAt!.toISOString());
    assert.equal(d!.timeToVerdictMs, liveDecider.finishedAt!.getTime() - evaluation.startedAt.getTime());
  });
});

describe('backtester, monitor history', () => {
  it("reads a group's state at a past window from the transitions around it, not from the whole history since", async () => {
    const clock = new TestClock(T0);
    const deps = unitDeps(memoryDb(), clock);
    await ingest(deps, { version: 'v1', resource: 'GET /a', count: 600, from: T0, spreadMs: HOUR });
    await ingest(deps, { version: 'v2', resource: 'GET /a', count: 600, from: T0 + HOUR, spreadMs: HOUR });
    await ingest(deps, { version: 'v3', resource: 'GET /a', count: 600, from: T0 + 3 * HOUR, spreadMs: HOUR });
    const id = (await createMonitor(deps, SYSTEM, { name: 'checkout errors', type: 'external', tags: ['service:checkout', 'env:prod'] } as never)).id;
    const report = async (at: number, state: 'ok' | 'alert', group: string) => {
      clock.ms = at;
      await reportMonitorState(deps, SYSTEM, { monitorId: id, state, group } as never);
    };
    // host:a: ALERT from before v2 until after its window (no transition inside it), then flapping
    // on; host:b: OK throughout, its ALERT only after v3's window.
    await report(T0, 'ok', 'host:b');
    await report(T0 + 50 * MIN, 'alert', 'host:a');
    await report(T0 + 2 * HOUR, 'ok', 'host:a');
    for (let t = T0 + 4 * HOUR; t < T0 + 6 * HOUR; t += 10 * MIN) await report(t, t % (20 * MIN) === 0 ? 'alert' : 'ok', 'host:a');
    await report(T0 + 3 * HOUR + 20 * MIN, 'alert', 'host:b');
    clock.ms = T0 + 6 * HOUR;
    const done = await backtest(deps, SYSTEM, {
      service: 'checkout',
      env: 'prod',
      configuration: { rules: [{ name: 'no alerts', options: { monitor: { query: 'service:checkout', duration: 900 } } }] },
      from: new Date(T0 + 30 * MIN),
      to: new Date(T0 + 6 * HOUR),
    });
    const deploys = done.results as unknown as DeployResult[];
    assert.deepEqual(
      deploys.map((d) => [d.version, d.verdict, d.decidedAt]),
      [
        ['v2', 'fail', new Date(T0 + HOUR).toISOString()],
        ['v3', 'pass', new Date(T0 + 3 * HOUR + 15 * MIN).toISOString()],
      ],
    );
    assert.match(deploys[0]!.reason, /host:a/);
  });
});
