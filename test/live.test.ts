// Live streams as domain operations (src/domain/live.ts) on the event bus, called the way any
// transport calls them; the GraphQL suites (evaluations, fanout, leaks, websocket) cover them
// through graphql-ws.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { deleteFinishedBefore } from '../src/db/evaluations.ts';
import { cancelEvaluation, type EvaluationSnapshot, loadSnapshot, recordRuleUpdate } from '../src/domain/evaluations.ts';
import { createEvents, Several } from '../src/domain/events.ts';
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

  test('several values for one event come out in order, and none after the last', async () => {
    const events = createEvents();
    const stream = events.subscribe('config.changed', async () => new Several([2, 3, 4, 5]), { current: () => 1, last: (n) => n === 4 });
    const first = stream.next();
    events.publish('config.changed', null);
    const got = [(await first).value];
    for await (const n of stream) got.push(n);
    assert.deepEqual(got, [1, 2, 3, 4]);
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
    const logged = 'select count(*) as n from evaluation_revisions where evaluation_id = ?';
    assert.ok((await s.sql<{ n: number }>(logged, id))[0]!.n >= 2, 'each revision is in the log');
    assert.ok((await deleteFinishedBefore(s.app.deps.db, new Date(Date.now() + 60_000))) >= 1); // retention removes it
    assert.equal((await s.sql<{ n: number }>(logged, id))[0]!.n, 0, 'its revision log goes with it');
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

  test('a follower that hears only a later revision gets the ones it missed first, from the revision log, exactly as published', async () => {
    const monitor = await d.monitor('live missed', ['live:missed']);
    await d.report(monitor, 'OK');
    const id = (await d.evaluate({ service: 'live-missed', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'live:missed', duration: 600 })] } })).data.evaluateGate
      .id;
    const deps = s.app.deps;
    // Every revision as the instance that wrote it published it (the engine may add checks of its own).
    const published = new Map<number, EvaluationSnapshot>();
    const off = deps.events.on('evaluation.changed', (snap) => {
      if (snap.evaluation.id === id) published.set(snap.evaluation.revision, snap);
    });
    // The follower's bus hears nothing but what the test hands it: events between instances lost.
    const bus = createEvents();
    try {
      const stream = await followEvaluation({ ...deps, events: bus }, SYSTEM, id);
      const first = (await stream.next()).value as EvaluationSnapshot;
      const ruleId = (await loadSnapshot(deps, id))!.rules[0]!.id;
      for (const reason of ['check one', 'check two']) {
        const written = await recordRuleUpdate(deps, ruleId, { status: 'in_progress', reason, nextCheckAt: new Date(Date.now() + 60_000), consecutiveErrors: 0 });
        assert.ok(written, 'the rule is still running');
      }
      const last = await cancelEvaluation(deps, SYSTEM, id);
      assert.ok(last.evaluation.revision >= first.evaluation.revision + 3);
      bus.publish('evaluation.changed', published.get(last.evaluation.revision)!); // the only event it hears
      const got = [first];
      for await (const snap of stream) got.push(snap);
      const revisions = got.map((g) => g.evaluation.revision);
      assert.deepEqual(
        revisions,
        Array.from({ length: last.evaluation.revision - first.evaluation.revision + 1 }, (_, i) => first.evaluation.revision + i),
        'every revision once, in order, through to the last',
      );
      for (const snap of got.slice(1)) assert.deepStrictEqual(snap, published.get(snap.evaluation.revision), `revision ${snap.evaluation.revision} as published`);
      const reasons = got.map((g) => g.rules[0]!.reason);
      assert.ok(reasons.indexOf('check one') > 0 && reasons.indexOf('check two') > reasons.indexOf('check one'), reasons.join(' | '));
      assert.equal(reasons.at(-1), `Canceled by ${SYSTEM.name}.`);
    } finally {
      off();
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
