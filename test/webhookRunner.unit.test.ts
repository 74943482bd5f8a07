// The webhook rule's runner at a test clock on an in-memory database, against a real local HTTP
// server: its tries are scheduled through the recorded state, so a rule asked early (a restart
// looks at every running rule at once) never calls before its time, and polls keep their times.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { testConfig } from '../src/config.ts';
import type { Db } from '../src/db/client.ts';
import { getEvaluation, getRuleEvaluation } from '../src/db/evaluations.ts';
import type { Deps } from '../src/domain/deps.ts';
import type { CheckResult } from '../src/engine/runner.ts';
import { webhookRunner } from '../src/engine/webhookRule.ts';
import { memoryDb, recordCheck, recorded, T0, TestClock, trigger, unitDeps } from './helpers/engine.ts';
import { startReceiver } from './helpers/tools.ts';

/** Status to answer each request with, in order; 200 once they run out. */
let script: number[] = [];
let hook: Awaited<ReturnType<typeof startReceiver>>;
let url: string;
before(async () => {
  hook = await startReceiver('/hook', () => script.shift() ?? 200);
  url = hook.url;
});
after(() => hook.close());

let db: Db;
let clock: TestClock;
let deps: Deps;
beforeEach(() => {
  db?.$client.close();
  db = memoryDb();
  clock = new TestClock();
  deps = { ...unitDeps(db, clock), config: testConfig({ logLevel: 'silent', webhookAllowedHosts: [{ host: '127.0.0.1', wildcard: false, port: null }] }) };
  script = [];
  hook.reset();
});

/** A started rule; `check` asks its runner at the clock and records the answer, as the engine would. */
async function rule(options: Record<string, unknown>) {
  const e = await trigger(deps, [{ name: 'hook', options: { webhook: { url, ...options } } }]);
  const id = (await recorded(db, e.id)).rules[0]!.id;
  return async (): Promise<CheckResult> => {
    const result = await webhookRunner.check(deps, { rule: (await getRuleEvaluation(db, id))!, evaluation: (await getEvaluation(db, e.id))!, now: clock.now() });
    return recordCheck(deps, id, result);
  };
}

const next = (r: CheckResult) => (r.status === 'in_progress' ? r.nextCheckAt.getTime() : null);

describe('webhook runner', () => {
  test('a retry is due after its backoff; asked before, the rule does not call', async () => {
    script = [503, 503];
    const check = await rule({ retries: 2 });
    const first = await check();
    assert.equal(first.status, 'in_progress');
    assert.equal(next(first), T0 + 1000, 'first retry after 1 s');
    assert.equal(hook.calls(), 1);
    const early = await check();
    assert.equal(hook.calls(), 1, 'asked again at once (a restart): no call');
    assert.equal(next(early), T0 + 1000);
    clock.advance(1000);
    const second = await check();
    assert.equal(next(second), T0 + 1000 + 2000, 'then after 2 s');
    clock.advance(2000);
    const third = await check();
    assert.equal(third.status, 'pass');
    assert.equal(hook.calls(), 3);
  });

  test('poll: calls at the start and every interval, passing at the window end when all passed', async () => {
    const check = await rule({ mode: 'poll', interval: 30, duration: 70 });
    const first = await check();
    assert.equal(next(first), T0 + 30_000);
    clock.advance(30_000);
    assert.equal(next(await check()), T0 + 60_000);
    clock.advance(30_000);
    const third = await check();
    assert.equal(next(third), T0 + 70_000, 'no call fits before the end: the end is awaited');
    assert.match(third.reason, /All 3 calls answered 2xx; passing when the window ends/);
    clock.advance(10_000);
    const done = await check();
    assert.equal(done.status, 'pass');
    assert.equal(hook.calls(), 3);
  });

  test('the once window covers every try: tries × timeout plus the backoffs', () => {
    const w = webhookRunner.plan({ url, headers: [], timeout: 10, retries: 2, mode: 'once' }, new Date(T0));
    assert.equal(w.windowEndsAt.getTime() - T0, 3 * 10_000 + 1000 + 2000);
  });
});
