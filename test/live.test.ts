// Live streams as domain operations (src/domain/live.ts) on the event bus, called the way any
// transport calls them; the GraphQL suites (evaluations, fanout, leaks, websocket) cover them
// through graphql-ws.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { deleteFinishedBefore } from '../src/db/evaluations.ts';
import { createEvents } from '../src/domain/events.ts';
import { followEvaluation, monitorTransitions } from '../src/domain/live.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { CREATE_GATE, driver, jitMonitor, monitorRule, startServer, subscribeQueue, type TestServer } from './helpers.ts';

describe('the event bus: a state, then its changes, until the last', () => {
  test('the current state comes first, changes follow in order, and the stream ends after the last', async () => {
    const events = createEvents();
    let state = 1;
    const stream = events.subscribe('config.changed', () => ++state, { current: () => state, last: (n) => n === 3 });
    const first = stream.next(); // the stream starts: listening, then the state read
    events.publish('config.changed', null);
    events.publish('config.changed', null);
    events.publish('config.changed', null); // after the last: not sent
    const got = [(await first).value, (await stream.next()).value, (await stream.next()).value];
    assert.deepEqual(got, [1, 2, 3]);
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
    const calls = state;
    events.publish('config.changed', null);
    assert.equal(state, calls, 'an ended stream no longer listens');
  });

  test('without a current state the stream ends at once', async () => {
    const events = createEvents();
    const stream = events.subscribe('config.changed', () => 1, { current: () => undefined, last: () => false });
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
  });

  test('a filter that throws fails its own stream only; the publisher and other subscribers go on', async () => {
    const events = createEvents();
    const failing = events.subscribe('config.changed', () => {
      throw new Error('the filter could not read');
    });
    const healthy = events.subscribe('config.changed', () => 'heard');
    const failed = failing.next();
    const heard = healthy.next();
    events.publish('config.changed', null);
    await assert.rejects(failed, /the filter could not read/);
    assert.equal((await heard).value, 'heard');
    await healthy.return();
  });
});

describe('live operations', () => {
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  before(async () => {
    s = await startServer();
    d = driver(s);
  });
  after(() => s.stop());

  test('following an evaluation removed before its stream starts ends the stream instead of failing', async () => {
    const monitor = await d.monitor('live ok', ['live:gone']);
    await d.report(monitor, 'OK');
    const id = (await d.evaluate({ service: 'live-gone', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'live:gone' })] } })).data.evaluateGate.id;
    await d.follow(id); // until it finishes
    const stream = await followEvaluation(s.app.deps, SYSTEM, id); // found now
    assert.ok((await deleteFinishedBefore(s.app.deps.db, new Date(Date.now() + 60_000))) >= 1); // retention removes it
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
  });

  test('each pushed event reads what it shows anew: a gate edited while its evaluation is followed shows the edit with the next revision', async () => {
    const monitor = await d.monitor('live gate edit', ['live:gate-edit']);
    await d.report(monitor, 'OK');
    const created = await s.gql(CREATE_GATE, { input: { service: 'live-gate-edit', env: 'prod', rules: [monitorRule('m', { query: 'live:gate-edit', duration: 600 })] } });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const gateId = created.data.createGate.id;
    const id = (await d.evaluate({ service: 'live-gate-edit', env: 'prod' })).data.evaluateGate.id;
    const q = subscribeQueue(s.ws(), 'subscription($id: ID!) { evaluationUpdated(id: $id) { revision status gate { dryRun } } }', { id });
    try {
      const first = await q.next();
      assert.deepEqual([first.data?.evaluationUpdated.status, first.data?.evaluationUpdated.gate.dryRun], ['IN_PROGRESS', false]);
      const edited = await s.gql('mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { dryRun } }', { id: gateId });
      assert.equal(edited.errors, undefined, JSON.stringify(edited.errors));
      await d.report(monitor, 'ALERT');
      // A check recorded before the edit may come first (each is a revision): the verdict is what shows the edit.
      let failed = await q.next(10_000);
      while (failed.data?.evaluationUpdated.status === 'IN_PROGRESS') failed = await q.next(10_000);
      assert.deepEqual([failed.data?.evaluationUpdated.status, failed.data?.evaluationUpdated.gate.dryRun], ['FAIL', true]);
    } finally {
      q.dispose();
    }
  });

  test('a monitor search that does not parse is refused naming its field, as the monitors query refuses it', async () => {
    await assert.rejects(async () => monitorTransitions(s.app.deps, SYSTEM, { query: 'service:(' }), { code: 'BAD_USER_INPUT', field: 'query' });
    const listed = await s.gql('{ monitors(query: "service:(") { totalCount } }');
    const watched = await s.gql('subscription { monitorStateChanged(query: "service:(") { to } }');
    assert.equal(listed.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.equal(watched.errors?.[0]?.message, listed.errors?.[0]?.message);
  });
});
