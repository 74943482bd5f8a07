// The dry-run math for the rule types of issue 15, through the engine on an in-memory database
// at a test clock: a failing metric, webhook or freeze rule marked dryRun is run and recorded
// with its real status, FAIL, and the gate still passes on its other rule (a monitor rule on an
// OK monitor). The webhook answers from a real local HTTP server.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { testConfig } from '../src/config.ts';
import type { Db } from '../src/db/client.ts';
import type { Deps } from '../src/domain/deps.ts';
import { createFreeze } from '../src/domain/freezes.ts';
import { createMonitor, reportMonitorState } from '../src/domain/monitors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { reported } from '../src/domain/verdict.ts';
import { engineOn, ingest, memoryDb, recorded, T0, TestClock, trigger } from './helpers/engine.ts';
import { startReceiver } from './helpers/tools.ts';

let hook: Awaited<ReturnType<typeof startReceiver>>;
before(async () => {
  hook = await startReceiver('/check', () => 500, 'load test failed');
});
after(() => hook.close());

let db: Db;
let clock: TestClock;
let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
  db.$client.close();
});

/** A started engine whose deps allow webhooks to this test's server, and the counted rule that passes: an OK monitor. */
async function setup() {
  db = memoryDb();
  clock = new TestClock();
  const a = engineOn(db, clock);
  a.deps.config = testConfig({ logLevel: 'silent', webhookAllowedHosts: [{ host: '127.0.0.1', wildcard: false, port: null }] });
  stop = () => a.engine.stop();
  a.engine.start();
  await a.engine.idle();
  const monitorId = (await createMonitor(a.deps, SYSTEM, { name: 'steady', type: 'external', tags: ['unit:steady'] })).id;
  await reportMonitorState(a.deps, SYSTEM, { monitorId, state: 'ok', group: '*' } as never);
  return a;
}
const counted = { name: 'steady', options: { monitor: { query: 'unit:steady' } } };

/** The gate passes (real status and what the deploy is told) while the dry-run rule's own status is FAIL. */
async function assertDryRunMath(deps: Deps, evaluationId: string, reason: RegExp) {
  const { evaluation, rules } = await recorded(deps.db, evaluationId);
  const [steady, dry] = [rules.find((r) => r.name === 'steady')!, rules.find((r) => r.name !== 'steady')!];
  assert.equal(steady.status, 'pass', steady.reason ?? undefined);
  assert.equal(dry.dryRun, true);
  assert.equal(dry.status, 'fail', `the dry-run rule's real status: ${dry.reason}`);
  assert.match(dry.reason ?? '', reason);
  assert.equal(evaluation.status, 'pass', 'a failing dry-run rule is never counted');
  assert.equal(reported(evaluation), 'pass');
}

describe('dry-run rules of the new types: recorded FAIL, the gate PASS', () => {
  test('metric: an APM error rate above an absolute bound', async () => {
    const a = await setup();
    // Half the canary's requests fail in the minute before the point at T0.
    await ingest(a.deps, { version: 'v2', resource: 'GET /cart', count: 100, errors: 50, from: T0 - 60_000, spreadMs: 50_000 });
    const e = await trigger(a.deps, [counted, { name: 'error rate', dryRun: true, options: { metric: { apm: { metric: 'error_rate' }, bound: '<= 0.02' } } }], {
      version: 'v2',
    });
    await a.fire();
    // The point at T0 is read once its last bucket is complete and exporters had their 5 s.
    clock.advance(5_000);
    await a.fire();
    await assertDryRunMath(a.deps, e.id, /1 of 1 point\(s\) broke value <= 0\.02/);
  });

  test('webhook: the check answers 500', async () => {
    const a = await setup();
    hook.reset();
    const e = await trigger(a.deps, [counted, { name: 'load test', dryRun: true, options: { webhook: { url: hook.url, retries: 0 } } }]);
    await a.fire();
    assert.equal(hook.calls(), 1);
    await assertDryRunMath(a.deps, e.id, /answered HTTP 500/);
  });

  test('freeze: an ad-hoc freeze of the environment', async () => {
    const a = await setup();
    await createFreeze(a.deps, SYSTEM, { env: 'prod', reason: 'quarter end' });
    const e = await trigger(a.deps, [counted, { name: 'no freeze', dryRun: true, options: { freeze: { adHoc: true } } }]);
    await a.fire();
    await assertDryRunMath(a.deps, e.id, /Frozen: freeze "quarter end"/);
  });
});
