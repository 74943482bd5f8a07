// The freeze rule's runner on an in-memory database at a test clock, and the engine waking it
// when a freeze is lifted: no server, no sleeping.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import type { Db } from '../src/db/client.ts';
import { getEvaluation, getRuleEvaluation } from '../src/db/evaluations.ts';
import type { Deps } from '../src/domain/deps.ts';
import type { FreezeEvidence } from '../src/domain/freezeEvidence.ts';
import { createFreeze, endFreeze } from '../src/domain/freezes.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { freezeRunner } from '../src/engine/freezeRule.ts';
import type { CheckResult } from '../src/engine/runner.ts';
import { engineOn, memoryDb, recordCheck, recorded, T0, TestClock, trigger, unitDeps } from './helpers/engine.ts';

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
const HOUR = 3_600_000;

/** A started rule; `check` asks its runner where it stands at the clock and records the answer, as the engine would. */
async function rule(options: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const e = await trigger(deps, [{ name: 'freeze', options: { freeze: options } }], extra);
  const id = (await recorded(db, e.id)).rules[0]!.id;
  return {
    check: async () => {
      const result = (await freezeRunner.check(deps, { rule: (await getRuleEvaluation(db, id))!, evaluation: (await getEvaluation(db, e.id))!, now: clock.now() })) as CheckResult;
      return recordCheck(deps, id, result);
    },
  };
}

const freezes = (r: CheckResult) => r.evidence as unknown as FreezeEvidence;

describe('freeze runner', () => {
  // T0 is 2031-01-01T00:00Z, a Wednesday.
  test('a calendar window ending inside the wait: waits for its end (by timer), then passes', async () => {
    const r = await rule({ adHoc: false, duration: 7200, calendars: [{ name: 'nightly', cron: '0 0 * * *', duration: 3600, timeZone: 'UTC' }] });
    const waiting = await r.check();
    assert.equal(waiting.status, 'in_progress');
    assert.equal(waiting.reason, `Frozen: calendar window "nightly" (0 0 * * *, UTC) until ${iso(T0 + HOUR)}; waiting until ${iso(T0 + 2 * HOUR)} for it to end.`);
    assert.equal(waiting.status === 'in_progress' && waiting.nextCheckAt.getTime(), T0 + HOUR, 'looked at again when the window closes');
    clock.advance(HOUR);
    const done = await r.check();
    assert.equal(done.status, 'pass');
    assert.deepEqual(
      freezes(done).waitedFor.map((f) => [f.kind, f.name, f.endsAt]),
      [['calendar', 'nightly', iso(T0 + HOUR)]],
    );
  });

  test('a calendar window outlasting the wait fails at once; with no wait, any freeze fails at once', async () => {
    const calendars = [{ name: 'nightly', cron: '0 0 * * *', duration: 3600, timeZone: 'UTC' }];
    const outlasting = await (await rule({ adHoc: false, duration: 600, calendars })).check();
    assert.equal(outlasting.status, 'fail');
    assert.match(outlasting.reason, /, past the end of the rule's wait at /);
    assert.equal((await (await rule({ adHoc: false, calendars })).check()).status, 'fail');
  });

  test("ad-hoc freezes: its environment's (for every service or this one) apply, not another's", async () => {
    await createFreeze(deps, SYSTEM, { env: 'staging', reason: 'other env' });
    await createFreeze(deps, SYSTEM, { env: 'prod', service: 'payments', reason: 'other service' });
    assert.equal((await (await rule({})).check()).status, 'pass');
    await createFreeze(deps, SYSTEM, { env: 'prod', reason: 'whole env' });
    const frozen = await (await rule({})).check();
    assert.equal(frozen.status, 'fail');
    assert.deepEqual(
      freezes(frozen).active.map((f) => f.name),
      ['whole env'],
    );
  });

  test('a planned end is when the rule looks again; past it, the rule passes', async () => {
    await createFreeze(deps, SYSTEM, { env: 'prod', service: 'checkout', reason: 'migration', endsAt: new Date(T0 + 5 * 60_000) });
    const r = await rule({ duration: 3600 });
    const waiting = await r.check();
    assert.equal(waiting.status === 'in_progress' && waiting.nextCheckAt.getTime(), T0 + 5 * 60_000);
    clock.advance(5 * 60_000);
    assert.equal((await r.check()).status, 'pass');
  });

  test('the engine: lifting a freeze wakes the waiting rule at once, no timer fired', async () => {
    const node = engineOn(db, clock);
    node.engine.start();
    try {
      const freeze = await createFreeze(node.deps, SYSTEM, { env: 'prod', reason: 'release train' });
      const e = await trigger(node.deps, [{ name: 'freeze', options: { freeze: { duration: 3600 } } }]);
      await node.fire();
      assert.match((await recorded(db, e.id)).rules[0]!.reason!, /^Frozen: freeze "release train"/);
      clock.advance(60_000);
      await endFreeze(node.deps, SYSTEM, freeze.id);
      await node.engine.idle();
      const after = await recorded(db, e.id);
      assert.equal(after.evaluation.status, 'pass');
      assert.equal(after.rules[0]!.finishedAt?.getTime(), T0 + 60_000, 'decided at the lift, not at the end of the wait');
    } finally {
      await node.engine.stop();
    }
  });
});
