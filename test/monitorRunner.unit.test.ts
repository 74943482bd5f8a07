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

function monitor(name: string, tags: string[] = [`unit:${name}`]): string {
  return createMonitor(deps, SYSTEM, { name, type: 'external', tags }).id;
}
function report(monitorId: string, state: MonitorStateValue, group = '*'): void {
  reportMonitorState(deps, SYSTEM, { monitorId, state, group } as never);
}

/** A started rule and a function asking its runner where it stands at the clock. */
function rule(options: Record<string, unknown>, actor?: Principal) {
  const e = actor ? triggerAs(actor, options) : trigger(deps, [{ name: 'r', options: { monitor: options } }]);
  const id = recorded(db, e.id).rules[0]!.id;
  return {
    row: () => getRuleEvaluation(db, id)!,
    check: () => monitorRunner.check(deps, { rule: getRuleEvaluation(db, id)!, evaluation: getEvaluation(db, e.id)!, now: clock.now() }) as CheckResult,
  };
}

function triggerAs(actor: Principal, options: Record<string, unknown>) {
  return trigger(deps, [{ name: 'r', options: { monitor: options } }], { env: actor.envs![0] }, actor);
}

describe('monitor runner: windows', () => {
  test('plans the window after the warmup, first looked at when it starts', () => {
    const w = monitorRunner.plan({ warmup: 30, duration: 60 }, new Date(T0));
    assert.deepEqual(w, { windowStartsAt: new Date(T0 + 30_000), windowEndsAt: new Date(T0 + 90_000), nextCheckAt: new Date(T0 + 30_000) });
  });

  test('warming up, watching, then passing at the window end, each saying until when', () => {
    const id = monitor('steady');
    report(id, 'ok');
    const r = rule({ query: 'unit:steady', warmup: 30, duration: 60 });
    assert.deepEqual(r.check(), { status: 'in_progress', reason: `Warming up until ${iso(T0 + 30_000)}.`, nextCheckAt: new Date(T0 + 30_000) });

    clock.advance(30_000);
    const watching = r.check();
    assert.equal(watching.status, 'in_progress');
    assert.equal(watching.reason, `Watching 1 monitor(s), 1 group(s) until ${iso(T0 + 90_000)}.`);
    assert.equal(watching.status === 'in_progress' && watching.nextCheckAt.getTime(), T0 + 90_000, 'transitions wake it; the timer is for the end');

    clock.advance(60_000);
    const done = r.check();
    assert.equal(done.status, 'pass');
    assert.equal(done.reason, `All 1 monitor(s), 1 group(s) were OK or WARN from ${iso(T0 + 30_000)} to ${iso(T0 + 90_000)}.`);
    assert.deepEqual((done.evidence as { matchedMonitors: unknown[] }).matchedMonitors, [{ id, name: 'steady', groups: 1, envs: [] }]);
  });

  test('an ALERT that ended before the window is not counted; a group in ALERT when it starts is', () => {
    const before = monitor('before');
    const atStart = monitor('at-start');
    report(before, 'ok');
    report(atStart, 'ok');
    const r1 = rule({ query: 'unit:before', warmup: 60, duration: 60 });
    const r2 = rule({ query: 'unit:at-start', warmup: 60, duration: 60 });
    clock.advance(10_000);
    report(before, 'alert');
    report(atStart, 'alert');
    clock.advance(10_000);
    report(before, 'ok');
    clock.advance(100_000);
    assert.equal(r1.check().status, 'pass');
    const failed = r2.check();
    assert.equal(failed.status, 'fail');
    const [group] = (failed.evidence as { failingGroups: Array<{ state: string; since: string }> }).failingGroups;
    assert.deepEqual([group!.state, group!.since], ['alert', iso(T0 + 10_000)], 'ALERT since before the window, and still when it started');
  });

  test('an ALERT after the window end is not counted; one just before it is, looked at later', () => {
    const after = monitor('after');
    const late = monitor('late');
    report(after, 'ok');
    report(late, 'ok');
    const r1 = rule({ query: 'unit:after', duration: 60 });
    const r2 = rule({ query: 'unit:late', duration: 60 });
    clock.advance(59_000);
    report(late, 'alert');
    clock.advance(2_000);
    report(after, 'alert');
    assert.equal(r1.check().status, 'pass');
    assert.equal(r2.check().status, 'fail');
  });

  test('NO_DATA fails with failOnNoData (the default) and passes without it', () => {
    const id = monitor('silent');
    report(id, 'no_data');
    const strict = rule({ query: 'unit:silent' });
    const lenient = rule({ query: 'unit:silent', failOnNoData: false });
    assert.equal(strict.check().status, 'fail');
    assert.equal(lenient.check().status, 'pass');
  });
});

describe('monitor runner: what it watches', () => {
  test('no match, or more than the cap, fails naming the count', () => {
    assert.match(rule({ query: 'unit:nothing' }).check().reason, /^No unmuted monitor matches the query `unit:nothing`\.$/);
    for (let i = 0; i <= MAX_MONITORS; i++) monitor(`m${i}`, ['unit:many']);
    const many = rule({ query: 'unit:many' }).check();
    assert.equal(many.status, 'fail');
    assert.match(many.reason, new RegExp(`^${MAX_MONITORS + 1} monitors match .* at most ${MAX_MONITORS}\\.$`));
    assert.equal((many.evidence as { matchedMonitors: unknown[] }).matchedMonitors.length, MAX_MONITORS, 'the evidence lists the cap, not every match');
  });

  test('muted monitors are left out whatever the query says', () => {
    const id = monitor('muted');
    report(id, 'alert');
    updateMonitor(deps, SYSTEM, id, { muted: true });
    assert.match(rule({ monitorIds: [{ id }] }).check().reason, /^No unmuted monitor matches the monitor ids/);
  });

  test('failOnNoGroupsFound fails monitors that never reported', () => {
    monitor('mute');
    assert.equal(rule({ query: 'unit:mute' }).check().status, 'pass');
    assert.match(rule({ query: 'unit:mute', failOnNoGroupsFound: true }).check().reason, /no groups with data, and failOnNoGroupsFound is set/);
  });

  test('a group term restricts the groups judged', () => {
    const id = monitor('regions', ['unit:regions']);
    report(id, 'alert', 'region:eu');
    report(id, 'ok', 'region:us');
    assert.equal(rule({ query: 'unit:regions group:"region:us"' }).check().status, 'pass');
    assert.equal(rule({ query: 'unit:regions' }).check().status, 'fail');
    assert.equal(rule({ monitorIds: [{ id, groups: ['region:us'] }] }).check().status, 'pass');
  });

  test("a monitor whose source fails is the rule's source failing, with the evidence found", () => {
    const id = monitor('broken');
    report(id, 'ok');
    recordSourceHealth(deps, id, 'connection refused');
    assert.throws(
      () => rule({ query: 'unit:broken' }).check(),
      (err: Error & { evidence?: { matchedMonitors: Array<{ id: string }> } }) =>
        err.name === 'SourceError' && err.message === 'monitor "broken": connection refused' && err.evidence?.matchedMonitors[0]?.id === id,
    );
  });

  test("a trigger limited to one env matches only that env's monitors", () => {
    const prod = monitor('prod', ['unit:envs', 'env:prod']);
    const staging = monitor('staging', ['unit:envs', 'env:staging']);
    report(prod, 'alert');
    report(staging, 'ok');
    const stagingKey: Principal = { id: 'k', name: 'staging deployer', scopes: new Set(['evaluations:write']), envs: ['staging'] };
    const r = rule({ query: 'unit:envs' }, stagingKey).check();
    assert.equal(r.status, 'pass', r.reason);
    assert.deepEqual(
      (r.evidence as { matchedMonitors: Array<{ id: string }> }).matchedMonitors.map((m) => m.id),
      [staging],
    );
  });

  test('watches monitor ids by key and a query by one shared predicate', () => {
    assert.deepEqual(monitorRunner.watch!({ monitorIds: [{ id: 'a' }, { id: 'b' }] }, { service: 's', env: 'e' }), { keys: ['monitor:a', 'monitor:b'] });
    const w = monitorRunner.watch!({ query: 'unit:watched' }, { service: 's', env: 'e' });
    assert.ok('shareKey' in w);
    const id = monitor('watched');
    const other = monitor('other');
    const event = (monitorId: string) => ({ kind: 'monitor.transition' as const, monitor: getMonitor(deps, SYSTEM, monitorId)!, group: '*', at: clock.now() });
    assert.equal(w.matches(event(id)), true);
    assert.equal(w.matches(event(other)), false);
    assert.equal(w.matches({ kind: 'apm.ingested', service: 's', env: 'e', at: clock.now() }), false);
  });
});
