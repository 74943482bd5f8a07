// The monitor rule's runner asked directly, on an in-memory database at a test clock: what one
// check answers from what is recorded, with no engine and no server.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import type { Db } from '../src/db/client.ts';
import { getEvaluation, getRuleEvaluation } from '../src/db/evaluations.ts';
import type { MonitorStateValue } from '../src/db/schema.ts';
import type { Deps } from '../src/domain/deps.ts';
import { createMonitor, getMonitor, recordSourceHealth, reportMonitorState, updateMonitor } from '../src/domain/monitors.ts';
import { type Principal, SYSTEM } from '../src/domain/principal.ts';
import { MAX_MONITORS, monitorRunner } from '../src/engine/monitorRule.ts';
import type { CheckResult } from '../src/engine/runner.ts';
import { memoryDb, recorded, T0, TestClock, trigger, unitDeps } from './helpers/engine.ts';

let db: Db;
let clock: TestClock;
let deps: Deps;
beforeEach(() => {
  db?.$client.close();
  db = memoryDb();
  clock = new TestClock();
  deps = unitDeps(db, clock);
});

const iso = (ms: number) => new Date(ms).toISOString();

async function monitor(name: string, tags: string[] = [`unit:${name}`]): Promise<string> {
  return (await createMonitor(deps, SYSTEM, { name, type: 'external', tags })).id;
}
async function report(monitorId: string, state: MonitorStateValue, group = '*'): Promise<void> {
  await reportMonitorState(deps, SYSTEM, { monitorId, state, group } as never);
}

/** A started rule and a function asking its runner where it stands at the clock. */
async function rule(options: Record<string, unknown>, actor?: Principal) {
  const e = actor ? await triggerAs(actor, options) : await trigger(deps, [{ name: 'r', options: { monitor: options } }]);
  const id = (await recorded(db, e.id)).rules[0]!.id;
  return {
    row: async () => (await getRuleEvaluation(db, id))!,
    check: async () => monitorRunner.check(deps, { rule: (await getRuleEvaluation(db, id))!, evaluation: (await getEvaluation(db, e.id))!, now: clock.now() }) as CheckResult,
  };
}

async function triggerAs(actor: Principal, options: Record<string, unknown>) {
  return trigger(deps, [{ name: 'r', options: { monitor: options } }], { env: actor.envs![0] }, actor);
}

describe('monitor runner: windows', () => {
  test('plans the window after the warmup, first looked at when it starts', () => {
    const w = monitorRunner.plan({ warmup: 30, duration: 60 }, new Date(T0));
    assert.deepEqual(w, { windowStartsAt: new Date(T0 + 30_000), windowEndsAt: new Date(T0 + 90_000), nextCheckAt: new Date(T0 + 30_000) });
  });

  test('warming up, watching, then passing at the window end, each saying until when', async () => {
    const id = await monitor('steady');
    await report(id, 'ok');
    const r = await rule({ query: 'unit:steady', warmup: 30, duration: 60 });
    assert.deepEqual(await r.check(), { status: 'in_progress', reason: `Warming up until ${iso(T0 + 30_000)}.`, nextCheckAt: new Date(T0 + 30_000) });

    clock.advance(30_000);
    const watching = await r.check();
    assert.equal(watching.status, 'in_progress');
    assert.equal(watching.reason, `Watching 1 monitor(s), 1 group(s) until ${iso(T0 + 90_000)}.`);
    assert.equal(watching.status === 'in_progress' && watching.nextCheckAt.getTime(), T0 + 90_000, 'transitions wake it; the timer is for the end');

    clock.advance(60_000);
    const done = await r.check();
    assert.equal(done.status, 'pass');
    assert.equal(done.reason, `All 1 monitor(s), 1 group(s) were OK or WARN from ${iso(T0 + 30_000)} to ${iso(T0 + 90_000)}.`);
    assert.deepEqual((done.evidence as { matchedMonitors: unknown[] }).matchedMonitors, [{ id, name: 'steady', groups: 1, envs: [] }]);
  });

  test('an ALERT that ended before the window is not counted; a group in ALERT when it starts is', async () => {
    const before = await monitor('before');
    const atStart = await monitor('at-start');
    await report(before, 'ok');
    await report(atStart, 'ok');
    const r1 = await rule({ query: 'unit:before', warmup: 60, duration: 60 });
    const r2 = await rule({ query: 'unit:at-start', warmup: 60, duration: 60 });
    clock.advance(10_000);
    await report(before, 'alert');
    await report(atStart, 'alert');
    clock.advance(10_000);
    await report(before, 'ok');
    clock.advance(100_000);
    assert.equal((await r1.check()).status, 'pass');
    const failed = await r2.check();
    assert.equal(failed.status, 'fail');
    const [group] = (failed.evidence as { failingGroups: Array<{ state: string; since: string }> }).failingGroups;
    assert.deepEqual([group!.state, group!.since], ['alert', iso(T0 + 10_000)], 'ALERT since before the window, and still when it started');
  });

  test('an ALERT after the window end is not counted; one just before it is, looked at later', async () => {
    const after = await monitor('after');
    const late = await monitor('late');
    await report(after, 'ok');
    await report(late, 'ok');
    const r1 = await rule({ query: 'unit:after', duration: 60 });
    const r2 = await rule({ query: 'unit:late', duration: 60 });
    clock.advance(59_000);
    await report(late, 'alert');
    clock.advance(2_000);
    await report(after, 'alert');
    assert.equal((await r1.check()).status, 'pass');
    assert.equal((await r2.check()).status, 'fail');
  });

  test('NO_DATA fails with failOnNoData (the default) and passes without it', async () => {
    const id = await monitor('silent');
    await report(id, 'no_data');
    const strict = await rule({ query: 'unit:silent' });
    const lenient = await rule({ query: 'unit:silent', failOnNoData: false });
    assert.equal((await strict.check()).status, 'fail');
    assert.equal((await lenient.check()).status, 'pass');
  });
});

describe('monitor runner: what it watches', () => {
  test('no match, or more than the cap, fails naming the count', async () => {
    assert.match((await (await rule({ query: 'unit:nothing' })).check()).reason, /^No unmuted monitor matches the query `unit:nothing`\.$/);
    for (let i = 0; i <= MAX_MONITORS; i++) await monitor(`m${i}`, ['unit:many']);
    const many = await (await rule({ query: 'unit:many' })).check();
    assert.equal(many.status, 'fail');
    assert.match(many.reason, new RegExp(`^${MAX_MONITORS + 1} monitors match .* at most ${MAX_MONITORS}\\.$`));
    assert.equal((many.evidence as { matchedMonitors: unknown[] }).matchedMonitors.length, MAX_MONITORS, 'the evidence lists the cap, not every match');
  });

  test('muted monitors are left out whatever the query says', async () => {
    const id = await monitor('muted');
    await report(id, 'alert');
    await updateMonitor(deps, SYSTEM, id, { muted: true });
    assert.match((await (await rule({ monitorIds: [{ id }] })).check()).reason, /^No unmuted monitor matches the monitor ids/);
  });

  test('failOnNoGroupsFound fails monitors that never reported', async () => {
    await monitor('mute');
    assert.equal((await (await rule({ query: 'unit:mute' })).check()).status, 'pass');
    assert.match((await (await rule({ query: 'unit:mute', failOnNoGroupsFound: true })).check()).reason, /no groups with data, and failOnNoGroupsFound is set/);
  });

  test('a group term restricts the groups judged', async () => {
    const id = await monitor('regions', ['unit:regions']);
    await report(id, 'alert', 'region:eu');
    await report(id, 'ok', 'region:us');
    assert.equal((await (await rule({ query: 'unit:regions group:"region:us"' })).check()).status, 'pass');
    assert.equal((await (await rule({ query: 'unit:regions' })).check()).status, 'fail');
    assert.equal((await (await rule({ monitorIds: [{ id, groups: ['region:us'] }] })).check()).status, 'pass');
  });

  test("a monitor whose source fails is the rule's source failing, with the evidence found", async () => {
    const id = await monitor('broken');
    await report(id, 'ok');
    await recordSourceHealth(deps, id, 'connection refused');
    await assert.rejects(
      async () => (await rule({ query: 'unit:broken' })).check(),
      (err: Error & { evidence?: { matchedMonitors: Array<{ id: string }> } }) =>
        err.name === 'SourceError' && err.message === 'monitor "broken": connection refused' && err.evidence?.matchedMonitors[0]?.id === id,
    );
  });

  test("a trigger limited to one env matches only that env's monitors", async () => {
    const prod = await monitor('prod', ['unit:envs', 'env:prod']);
    const staging = await monitor('staging', ['unit:envs', 'env:staging']);
    await report(prod, 'alert');
    await report(staging, 'ok');
    const stagingKey: Principal = { id: 'k', name: 'staging deployer', scopes: new Set(['evaluations:write']), envs: ['staging'] };
    const r = await (await rule({ query: 'unit:envs' }, stagingKey)).check();
    assert.equal(r.status, 'pass', r.reason);
    assert.deepEqual(
      (r.evidence as { matchedMonitors: Array<{ id: string }> }).matchedMonitors.map((m) => m.id),
      [staging],
    );
  });

  test('watches monitor ids by key and a query by one shared predicate', async () => {
    assert.deepEqual(monitorRunner.watch!({ monitorIds: [{ id: 'a' }, { id: 'b' }] }, { service: 's', env: 'e' }), { keys: ['monitor:a', 'monitor:b'] });
    const w = monitorRunner.watch!({ query: 'unit:watched' }, { service: 's', env: 'e' });
    assert.ok('shareKey' in w);
    const id = await monitor('watched');
    const other = await monitor('other');
    const event = async (monitorId: string) => ({ kind: 'monitor.transition' as const, monitor: (await getMonitor(deps, SYSTEM, monitorId))!, group: '*', at: clock.now() });
    assert.equal(w.matches(await event(id)), true);
    assert.equal(w.matches(await event(other)), false);
    assert.equal(w.matches({ kind: 'apm.ingested', service: 's', env: 'e', at: clock.now() }), false);
  });
});
