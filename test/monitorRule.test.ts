import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { driver, jitMonitor, sleep, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
before(async () => {
  s = await startServer();
  d = driver(s);
});
after(() => s.stop());

let n = 0;
/** A tag no other test uses, so each test has its own monitors. */
const suite = () => `suite:t${++n}`;

/** Triggers a JIT evaluation with one monitor rule and returns its final snapshot. */
async function run(options: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('monitors', options)] }, ...extra });
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  const events = await d.follow(r.data.evaluateGate.id);
  return events.at(-1);
}

describe('monitor rule', () => {
  test('fails when no monitor matches', async () => {
    const final = await run({ query: `${suite()} nothing:here` });
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /No unmuted monitor matches the query/);
  });

  test('fails when more than 50 monitors match', async () => {
    const tag = suite();
    for (let i = 0; i < 51; i++) await d.monitor(`m${i}`, [tag]);
    const final = await run({ query: tag });
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /51 monitors match .* at most 50/);
    await d.monitor('one more', [`${tag}-small`]);
    assert.equal((await run({ query: `${tag}-small` })).status, 'PASS', '50 or fewer are fine');
  });

  test('fails on ALERT, with evidence naming the monitor group', async () => {
    const tag = suite();
    const id = await d.monitor('Checkout 5xx', [tag, 'service:checkout']);
    await d.report(id, 'OK', 'region:us-east-1');
    await d.report(id, 'ALERT', 'region:eu-west-1');
    const final = await run({ query: `${tag} service:checkout` });
    assert.equal(final.status, 'FAIL');
    assert.equal(final.reportedStatus, 'FAIL');
    const failing = final.rules[0].evidence.failingGroups;
    assert.deepEqual(
      failing.map((f: any) => [f.monitorId, f.monitorName, f.group, f.state]),
      [[id, 'Checkout 5xx', 'region:eu-west-1', 'ALERT']],
    );
    assert.match(failing[0].url, new RegExp(`/monitors/${id}$`));
    assert.match(final.rules[0].reason, /"Checkout 5xx" \(region:eu-west-1\) was ALERT at/);
  });

  test('OK and WARN pass; the reason says what was watched', async () => {
    const tag = suite();
    const a = await d.monitor('a', [tag]);
    const b = await d.monitor('b', [tag]);
    await d.report(a, 'OK');
    await d.report(b, 'WARN', 'host:1');
    const final = await run({ query: tag });
    assert.equal(final.status, 'PASS');
    assert.match(final.rules[0].reason, /All 2 monitor\(s\), 2 group\(s\) were OK or WARN/);
  });

  test('NO_DATA fails with failOnNoData (the default) and passes without it', async () => {
    const tag = suite();
    const id = await d.monitor('quiet', [tag]);
    await d.report(id, 'NO_DATA');
    assert.equal((await run({ query: tag })).status, 'FAIL');
    assert.equal((await run({ query: tag, failOnNoData: false })).status, 'PASS');
  });

  test('failOnNoGroupsFound fails a rule whose monitors never reported', async () => {
    const tag = suite();
    await d.monitor('silent', [tag]);
    assert.equal((await run({ query: tag })).status, 'PASS');
    const final = await run({ query: tag, failOnNoGroupsFound: true });
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /no groups with data/);
  });

  test('an ALERT shorter than any check still fails the rule', async () => {
    const tag = suite();
    const id = await d.monitor('flappy', [tag]);
    await d.report(id, 'OK');
    const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('m', { query: tag, duration: 3 })] } });
    const evaluationId = r.data.evaluateGate.id;
    // ALERT and back to OK in one request: both commit before any check can run, so only
    // the recorded transitions can tell the rule about the ALERT.
    const both = await s.gql(
      `mutation($id: ID!) { a: reportMonitorState(input: { monitorId: $id, state: ALERT }) { id } b: reportMonitorState(input: { monitorId: $id, state: OK }) { id } }`,
      { id },
    );
    assert.equal(both.errors, undefined);
    const final = (await d.follow(evaluationId)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.equal(final.rules[0].evidence.failingGroups[0].state, 'ALERT');
  });

  test('a transition in a long window fails the rule at once, not at the window end', async () => {
    const tag = suite();
    const id = await d.monitor('slow burn', [tag]);
    await d.report(id, 'OK');
    const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('m', { query: tag, duration: 3600 })] } });
    const evaluationId = r.data.evaluateGate.id;
    await sleep(100);
    assert.equal((await d.get(evaluationId)).status, 'IN_PROGRESS');
    await d.report(id, 'ALERT', 'pod:a');
    const final = (await d.follow(evaluationId)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.ok(new Date(final.decidedAt) < new Date(final.rules[0].windowEndsAt));
  });

  test('warmup: what happens before the window does not count, what happens in it does', async () => {
    const tag = suite();
    const id = await d.monitor('warming', [tag]);
    await d.report(id, 'ALERT');
    const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('m', { query: tag, warmup: 1, duration: 1 })] } });
    const ev = r.data.evaluateGate;
    assert.equal(new Date(ev.rules[0].windowStartsAt).getTime() - new Date(ev.startedAt).getTime(), 1000);
    await d.report(id, 'OK'); // recovers during warmup
    const final = (await d.follow(ev.id)).at(-1);
    assert.equal(final.status, 'PASS', JSON.stringify(final.rules[0]));

    const r2 = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('m', { query: tag, warmup: 1, duration: 2 })] } });
    await sleep(1300); // into the window
    await d.report(id, 'ALERT');
    assert.equal((await d.follow(r2.data.evaluateGate.id)).at(-1).status, 'FAIL');
  });

  test('group filters restrict the evaluation to matching groups', async () => {
    const tag = suite();
    const id = await d.monitor('regional', [tag]);
    await d.report(id, 'ALERT', 'region:a');
    await d.report(id, 'OK', 'region:b');
    assert.equal((await run({ query: `${tag} group:"region:b"` })).status, 'PASS');
    assert.equal((await run({ query: `${tag} group:"region:a"` })).status, 'FAIL');
    assert.equal((await run({ query: `${tag} NOT group:("region:a")` })).status, 'PASS');
    assert.equal((await run({ monitorIds: [{ id, groups: ['region:b'] }] })).status, 'PASS');
    assert.equal((await run({ monitorIds: [{ id, groups: [] }] })).status, 'FAIL');
  });

  test('muted monitors are excluded whatever the query says', async () => {
    const tag = suite();
    const id = await d.monitor('muted alert', [tag], { muted: true });
    await d.report(id, 'ALERT');
    const final = await run({ query: `${tag} muted:true` });
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /No unmuted monitor matches/);
    const ok = await d.monitor('loud ok', [tag]);
    await d.report(ok, 'OK');
    assert.equal((await run({ query: tag })).status, 'PASS');
  });

  test('a malformed query is refused at trigger with its position', async () => {
    const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'service:a AND' })] } });
    assert.equal(r.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.equal(r.errors?.[0]?.extensions?.field, 'input.configuration.rules[0].options.monitor.query');
    assert.match(r.errors![0]!.message, /expected a term after 'AND' at column 14/);
  });
});
