// The engine on an in-memory database with a test clock and hand-fired timers: windows,
// warmup, retries, leases and takeover, in milliseconds of real time. The end-to-end suites
// (monitorRule, crash, resilience) check the same through a server.
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, test } from 'node:test';
import { testConfig } from '../src/config.ts';
import type { Db } from '../src/db/client.ts';
import type { Deps } from '../src/domain/deps.ts';
import { LEASE_MS } from '../src/domain/evaluations.ts';
import { createMonitor, recordSourceHealth, reportMonitorState } from '../src/domain/monitors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { engineOn, memoryDb, recorded, T0, TestClock, trigger } from './helpers/engine.ts';
import { waitFor } from './helpers/tools.ts';

const jit = (name: string, options: Record<string, unknown>) => ({ name, options: { monitor: options } });
const running: Array<{ engine: { stop(): Promise<void> } }> = [];
let db: Db;
let clock: TestClock;

/** An engine of node `nodeId` on the test's database, stopped after the test. */
function node(nodeId = 'node-a', options = {}) {
  const n = engineOn(db, clock, nodeId, options);
  running.push(n);
  return n;
}

async function started(nodeId = 'node-a', options = {}) {
  const n = node(nodeId, options);
  n.engine.start();
  await n.engine.idle();
  return n;
}

async function monitor(deps: Deps, name: string, extra: Record<string, unknown> = {}): Promise<string> {
  return (await createMonitor(deps, SYSTEM, { name, type: 'external', tags: [`unit:${name}`], ...extra })).id;
}
const report = async (deps: Deps, monitorId: string, state: 'ok' | 'warn' | 'alert' | 'no_data') => reportMonitorState(deps, SYSTEM, { monitorId, state, group: '*' } as never);

function fresh(): void {
  db = memoryDb();
  clock = new TestClock();
}
fresh();
afterEach(async () => {
  for (const n of running.splice(0)) await n.engine.stop();
  db.$client.close();
  fresh();
});

describe('engine: windows and warmup', () => {
  test('a rule is looked at when its window ends by the clock, and passes then', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'steady');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('steady', { query: 'unit:steady', duration: 60 })]);
    await a.fire(); // the first look, at the window's start
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'in_progress');
    assert.equal(a.timers.armedMs, 60_000, 'the wake-up is the window end, measured on the test clock');

    clock.advance(59_999);
    await a.fire(); // a timer firing early only looks again
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'in_progress');
    assert.equal(a.timers.armedMs, 1);

    clock.advance(1);
    await a.fire();
    const { evaluation, rules } = await recorded(db, e.id);
    assert.equal(rules[0]!.status, 'pass', rules[0]!.reason ?? undefined);
    assert.equal(evaluation.status, 'pass');
    assert.equal(evaluation.finishedAt?.getTime(), T0 + 60_000, 'finished at the test clock');
    assert.equal(a.timers.armedMs, undefined, 'nothing left to wake up for');
    assert.equal(a.engine.stats().activeRules, 0);
  });

  test('an ALERT inside the window fails the rule at once, without waiting for a timer', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'flaky');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('flaky', { query: 'unit:flaky', duration: 600 })]);
    await a.fire();
    clock.advance(10_000);
    await report(a.deps, id, 'alert');
    await a.engine.idle();
    const rule = (await recorded(db, e.id)).rules[0]!;
    assert.equal(rule.status, 'fail');
    assert.match(rule.reason ?? '', /flaky/);
    assert.equal(rule.finishedAt?.getTime(), T0 + 10_000);
  });

  test('warmup: an ALERT that ends before the window does not count; one inside it does', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'warm');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('warm', { query: 'unit:warm', warmup: 30, duration: 30 })]);
    const rule = async () => (await recorded(db, e.id)).rules[0]!;
    assert.equal(a.timers.armedMs, 30_000, 'first look at the window start');

    clock.advance(5_000);
    await report(a.deps, id, 'alert');
    await a.engine.idle();
    clock.advance(5_000);
    await report(a.deps, id, 'ok');
    await a.engine.idle();
    assert.equal((await rule()).status, 'in_progress', 'an ALERT during warmup is not the window');

    clock.advance(20_000);
    await a.fire();
    assert.equal((await rule()).status, 'in_progress');
    assert.equal((await rule()).windowStartsAt.getTime(), T0 + 30_000);

    clock.advance(10_000);
    await report(a.deps, id, 'alert');
    await a.engine.idle();
    assert.equal((await rule()).status, 'fail', (await rule()).reason ?? undefined);
  });

  test('an ALERT shorter than any check still fails the rule', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'blip');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('blip', { query: 'unit:blip', duration: 60 })]);
    await a.fire();
    // Both transitions recorded before the engine runs a check.
    clock.advance(1_000);
    await report(a.deps, id, 'alert');
    await report(a.deps, id, 'ok');
    await a.engine.idle();
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'fail');
  });

  test('a monitor silent past its noDataTimeframe goes NO_DATA at housekeeping, and the rule fails', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'quiet', { noDataTimeframe: 60 });
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('quiet', { query: 'unit:quiet', duration: 600 })]);
    await a.fire();
    clock.advance(30_000);
    await a.housekeep();
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'in_progress', 'within its timeframe');
    clock.advance(31_000);
    await a.housekeep();
    const rule = (await recorded(db, e.id)).rules[0]!;
    assert.equal(rule.status, 'fail');
    assert.match(rule.reason ?? '', /NO_DATA/i);
  });
});

describe('engine: retries', () => {
  test('a failing source is retried with doubling delays on the clock, then onSourceError decides', async () => {
    const a = await started('node-a', { sourceErrorLimit: 3, retryBaseMs: 1000 });
    const id = await monitor(a.deps, 'broken');
    await report(a.deps, id, 'ok');
    await recordSourceHealth(a.deps, id, 'connection refused');
    const e = await trigger(a.deps, [jit('broken', { query: 'unit:broken', duration: 600 })]);
    const rule = async () => (await recorded(db, e.id)).rules[0]!;

    await a.fire();
    assert.equal((await rule()).consecutiveErrors, 1);
    assert.match((await rule()).reason ?? '', /1 of 3 tries.*connection refused/);
    assert.equal((await rule()).nextCheckAt?.getTime(), T0 + 1000);
    assert.equal(a.timers.armedMs, 1000);

    clock.advance(1000);
    await a.fire();
    assert.equal((await rule()).consecutiveErrors, 2);
    assert.equal((await rule()).nextCheckAt?.getTime(), T0 + 1000 + 2000, 'the delay doubles');

    clock.advance(2000);
    await a.fire();
    assert.equal((await rule()).status, 'fail');
    assert.match((await rule()).reason ?? '', /failed 3 times in a row.*onSourceError policy makes the rule fail/);
    assert.deepEqual(((await rule()).evidence as { sourceErrors: number }).sourceErrors, 3);
  });

  test('onSourceError pass passes the rule; a source that recovers resets the count', async () => {
    const a = await started('node-a', { sourceErrorLimit: 2, retryBaseMs: 1000 });
    const flaky = await monitor(a.deps, 'recovers');
    const down = await monitor(a.deps, 'down');
    for (const m of [flaky, down]) {
      await report(a.deps, m, 'ok');
      await recordSourceHealth(a.deps, m, 'timeout');
    }
    const recovering = await trigger(a.deps, [jit('recovers', { query: 'unit:recovers', duration: 60 })]);
    const lenient = await trigger(a.deps, [jit('down', { query: 'unit:down', duration: 60 })], {
      configuration: { onSourceError: 'pass', rules: [jit('down', { query: 'unit:down', duration: 60 })] },
    });
    await a.fire();
    await recordSourceHealth(a.deps, flaky, null);
    clock.advance(1000);
    await a.fire();
    const r = (await recorded(db, recovering.id)).rules[0]!;
    assert.equal(r.status, 'in_progress');
    assert.equal(r.consecutiveErrors, 0);
    assert.equal(r.lastError, null);
    const l = await recorded(db, lenient.id);
    assert.equal(l.rules[0]!.status, 'pass', l.rules[0]!.reason ?? undefined);
    assert.match(l.rules[0]!.reason ?? '', /makes the rule pass/);
  });
});

describe('engine: leases and takeover', () => {
  test('housekeeping renews the leases on the clock; stop hands them back', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'leased');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('leased', { query: 'unit:leased', duration: 3600 })]);
    assert.equal((await recorded(db, e.id)).evaluation.leaseOwner, 'node-a');
    assert.equal((await recorded(db, e.id)).evaluation.leaseExpiresAt?.getTime(), T0 + LEASE_MS);
    // Every 4 s: leases renewed long before they lapse, another node's lapsed ones taken over soon after.
    assert.equal(a.timers.housekeepingMs, 4_000);

    clock.advance(4_000);
    await a.housekeep();
    assert.equal((await recorded(db, e.id)).evaluation.leaseExpiresAt?.getTime(), T0 + 4_000 + LEASE_MS);

    await a.engine.stop();
    assert.equal((await recorded(db, e.id)).evaluation.leaseExpiresAt?.getTime(), 0);
    assert.equal(a.timers.armedMs, undefined);
    assert.equal(a.timers.housekeepingMs, undefined);
  });

  test('another node takes over once the lease expires, and judges what happened meanwhile', async () => {
    const a = await started('node-a');
    const id = await monitor(a.deps, 'orphan');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('orphan', { query: 'unit:orphan', duration: 600 })]);
    await a.fire();
    // node-a dies here: it renews nothing from now on.

    const b = await started('node-b');
    assert.equal(b.engine.stats().activeRules, 0, 'a live lease is not taken');
    clock.advance(LEASE_MS - 1);
    await b.housekeep();
    assert.equal((await recorded(db, e.id)).evaluation.leaseOwner, 'node-a', 'not before it expires');

    // What happens while nobody drives the evaluation is recorded, and counts.
    await report(b.deps, id, 'alert');
    clock.advance(2);
    await b.housekeep();
    assert.equal((await recorded(db, e.id)).evaluation.leaseOwner, 'node-b');
    assert.equal((await recorded(db, e.id)).evaluation.leaseExpiresAt?.getTime(), clock.ms + LEASE_MS);
    assert.equal(b.timers.armedMs, 0, 'looked at as soon as it is taken over');
    await b.fire();
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'fail');
  });

  test('a node whose lease was taken over stops checking the rules it still indexes', async () => {
    const a = await started('node-a');
    const id = await monitor(a.deps, 'paused');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('paused', { query: 'unit:paused', duration: 600 })]);
    await a.fire();
    // node-a stalls (a long GC pause, a frozen VM) past its lease: it renews nothing, node-b takes over.
    const b = await started('node-b');
    clock.advance(LEASE_MS + 1);
    await b.housekeep();
    assert.equal((await recorded(db, e.id)).evaluation.leaseOwner, 'node-b');

    // node-a wakes up with the rule still in its index, hears an ALERT and finds its timer due:
    // the rule is node-b's now.
    await report(a.deps, id, 'alert');
    clock.advance(600_000);
    await a.fire();
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'in_progress', 'node-a recorded nothing');
    assert.equal(a.engine.stats().activeRules, 0, 'and forgot the rule');
    await b.fire();
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'fail', 'node-b judges it');
  });

  test('a node taking over drives the window to its end on its own timer', async () => {
    const a = await started('node-a');
    const id = await monitor(a.deps, 'handed');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('handed', { query: 'unit:handed', duration: 120 })]);
    await a.fire();
    await a.engine.stop(); // a clean shutdown hands the lease back at once

    const b = await started('node-b');
    const rule = async () => (await recorded(db, e.id)).rules[0]!;
    assert.equal((await recorded(db, e.id)).evaluation.leaseOwner, 'node-b', 'taken at start, without waiting for the lease');
    assert.equal(b.engine.stats().activeRules, 1);
    assert.equal(b.timers.armedMs, 0, 'looked at as soon as it is taken over');
    await b.fire();
    assert.equal(b.timers.armedMs, 120_000, 'then at the window end');
    clock.advance(120_000);
    await b.fire();
    assert.equal((await rule()).status, 'pass', (await rule()).reason ?? undefined);
  });

  test('a restarted node resumes its own evaluations at once, leased or not', async () => {
    const first = await started('node-a');
    const id = await monitor(first.deps, 'mine');
    await report(first.deps, id, 'ok');
    const e = await trigger(first.deps, [jit('mine', { query: 'unit:mine', duration: 60 })]);
    await first.fire();
    // The same node id after a crash: its lease is still live, and it is its own.
    const again = node('node-a');
    again.engine.start();
    await again.engine.idle();
    assert.equal(again.engine.stats().activeRules, 1);
    assert.equal(again.timers.armedMs, 0, 'looked at at once');
    clock.advance(60_000);
    await again.fire();
    assert.equal((await recorded(db, e.id)).rules[0]!.status, 'pass');
  });
});

describe('engine: network checks wait in their own lane', () => {
  test('webhook checks stuck on a silent endpoint hold up only webhook rules: a monitor ALERT is judged at once', async () => {
    // An endpoint that reads every request and answers none until the test ends.
    const held: ServerResponse[] = [];
    const silent = createServer((req, res) => {
      req.resume();
      held.push(res);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/slow`;
    try {
      const a = await started();
      Object.assign(a.deps, { config: testConfig({ logLevel: 'silent', webhookAllowedHosts: [{ host: '127.0.0.1', wildcard: false, port: null }] }) });
      const hooks = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `hook-${i}`, options: { webhook: { url, timeout: 60, retries: 0 } } }));
      await trigger(a.deps, hooks(40), { service: 'hooks-a' });
      await trigger(a.deps, hooks(40), { service: 'hooks-b' });
      a.timers.fire();
      await waitFor('the webhook lane to fill', async () => held.length >= 64);

      const id = await monitor(a.deps, 'meanwhile');
      await report(a.deps, id, 'alert');
      const e = await trigger(a.deps, [jit('meanwhile', { query: 'unit:meanwhile', duration: 600 })]);
      a.timers.fire();
      const failed = await waitFor('the monitor rule to be judged while 64 webhook calls hang', async () => (await recorded(db, e.id)).evaluation.status === 'fail');
      assert.ok(failed);
      assert.equal(held.length, 64, 'no more than 64 webhook calls at once');
      assert.equal(a.engine.stats().queuedChecks, 16, 'the other webhook checks wait their turn');
    } finally {
      for (const res of held) res.end('late');
      silent.closeAllConnections();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

describe('engine: a lease lost during a network check', () => {
  test('a webhook answer arriving after another node took the evaluation over is not recorded', async () => {
    // The lease is read before the call; a call may hang for its whole timeout, long enough for
    // the lease to lapse and another node to take the evaluation and start its own calls.
    const held: ServerResponse[] = [];
    const hook = createServer((req, res) => {
      req.resume();
      held.push(res);
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/check`;
    try {
      const a = await started('node-a');
      Object.assign(a.deps, { config: testConfig({ logLevel: 'silent', webhookAllowedHosts: [{ host: '127.0.0.1', wildcard: false, port: null }] }) });
      const e = await trigger(a.deps, [{ name: 'hook', options: { webhook: { url, timeout: 60, retries: 0 } } }], { service: 'lapsed' });
      a.timers.fire();
      await waitFor("node-a's call to reach the endpoint", async () => held.length === 1);

      const b = await started('node-b');
      clock.advance(LEASE_MS + 1);
      await b.housekeep();
      assert.equal((await recorded(db, e.id)).evaluation.leaseOwner, 'node-b');

      // node-a's call answers now: the rule is node-b's, whose own call decides it.
      held[0]!.writeHead(200).end('ok');
      await a.engine.idle();
      assert.equal((await recorded(db, e.id)).rules[0]!.status, 'in_progress', 'node-a recorded nothing');
    } finally {
      for (const res of held) if (!res.writableEnded) res.end('late');
      hook.closeAllConnections();
      await new Promise((resolve) => hook.close(resolve));
    }
  });
});

describe('engine: retention', () => {
  test('history past retention is pruned by the clock at start', async () => {
    const a = await started();
    const id = await monitor(a.deps, 'old');
    await report(a.deps, id, 'ok');
    const e = await trigger(a.deps, [jit('old', { query: 'unit:old', duration: 0 })]);
    await a.fire();
    assert.equal((await recorded(db, e.id)).evaluation.status, 'pass');
    await a.engine.stop();

    clock.advance((a.deps.config.retentionDays + 1) * 86_400_000);
    await started('node-a');
    assert.equal((await recorded(db, e.id)).evaluation, undefined);
  });
});
