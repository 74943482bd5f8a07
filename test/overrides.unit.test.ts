// An override of a running evaluation and the engine (in-memory database, test clock): the
// engine lets the evaluation go at once, nothing it checks later changes it, and a node
// restarting does not resume it. test/overrides.test.ts covers the API end to end.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { overrideEvaluation, reported } from '../src/domain/evaluations.ts';
import { createMonitor, reportMonitorState } from '../src/domain/monitors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { engineOn, memoryDb, recorded, TestClock, trigger } from './helpers/engine.ts';

let db = memoryDb();
let clock = new TestClock();
const running: Array<{ engine: { stop(): Promise<void> } }> = [];
afterEach(async () => {
  for (const n of running.splice(0)) await n.engine.stop();
  db.$client.close();
  db = memoryDb();
  clock = new TestClock();
});

async function started(nodeId = 'node-a') {
  const n = engineOn(db, clock, nodeId);
  running.push(n);
  n.engine.start();
  await n.engine.idle();
  return n;
}

test('the engine lets an overridden evaluation go: no rule left to check, later alerts and the window end change nothing', async () => {
  const a = await started();
  const monitorId = (await createMonitor(a.deps, SYSTEM, { name: 'watched', type: 'external', tags: ['unit:watched'] })).id;
  await reportMonitorState(a.deps, SYSTEM, { monitorId, state: 'ok', group: '*' } as never);
  const e = await trigger(a.deps, [{ name: 'watched', options: { monitor: { query: 'unit:watched', duration: 600 } } }]);
  await a.fire();
  assert.equal(a.engine.stats().activeRules, 1);

  clock.advance(1000);
  const snap = await overrideEvaluation(a.deps, SYSTEM, e.id, { verdict: 'pass', reason: 'hotfix' });
  await a.engine.idle();
  assert.equal(a.engine.stats().activeRules, 0, 'the engine dropped the rule');
  const after = await recorded(db, e.id);
  assert.deepEqual([after.evaluation.status, reported(after.evaluation), after.rules[0]!.status], ['canceled', 'pass', 'canceled']);
  assert.equal(after.evaluation.finishedAt?.getTime(), clock.ms);
  assert.equal(after.evaluation.revision, snap.evaluation.revision);

  // An ALERT that would have failed the rule, then the window's end: nothing is recorded.
  await reportMonitorState(a.deps, SYSTEM, { monitorId, state: 'alert', group: '*' } as never);
  await a.engine.idle();
  clock.advance(600_000);
  await a.fire();
  await a.housekeep();
  const later = await recorded(db, e.id);
  assert.deepEqual(later, after);
});

test('a node restarting on the store does not resume an evaluation ended by an override', async () => {
  const a = await started('node-a');
  const monitorId = (await createMonitor(a.deps, SYSTEM, { name: 'resumed', type: 'external', tags: ['unit:resumed'] })).id;
  await reportMonitorState(a.deps, SYSTEM, { monitorId, state: 'ok', group: '*' } as never);
  const e = await trigger(a.deps, [{ name: 'resumed', options: { monitor: { query: 'unit:resumed', duration: 600 } } }]);
  await a.fire();
  await overrideEvaluation(a.deps, SYSTEM, e.id, { verdict: 'fail', reason: 'the release is withdrawn' });
  const before = await recorded(db, e.id);
  const again = await started('node-a');
  assert.equal(again.engine.stats().activeRules, 0);
  clock.advance(600_000);
  await again.fire();
  assert.deepEqual(await recorded(db, e.id), before);
  assert.equal(reported(before.evaluation), 'fail');
});
