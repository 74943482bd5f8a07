// Shared execution of identical WebSocket subscriptions (issue 12, item 1): one execution per
// event per (operation, visibility), every subscriber served what its own key may see.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Client } from 'graphql-ws';
import WebSocket from 'ws';
import { insertBacktest } from '../src/db/backtests.ts';
import { newId } from '../src/domain/ids.ts';
import type { MonitorStateChange } from '../src/domain/monitors.ts';
import { schema } from '../src/graphql/index.ts';
import { startsWithState } from '../src/server/sharedSubscriptions.ts';
import { ADMIN_KEY, driver, jitMonitor, sleep, startServer, subscribeQueue, type TestServer } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.stop());

const CREATE_KEY = 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret key { id } } }';

async function newKey(name: string, envs?: string[]): Promise<{ secret: string; id: string }> {
  const r = await s.gql(CREATE_KEY, { i: { name, scopes: ['GATES_READ'], envs } });
  if (!r.data) throw new Error(JSON.stringify(r.errors));
  return { secret: r.data.createApiKey.secret, id: r.data.createApiKey.key.id };
}

async function metric(name: string): Promise<number> {
  const { text } = await s.request('GET', '/metrics');
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
}

/** Waits until the server runs `groups` shared subscriptions (and at least `operations` operations over WebSocket). */
async function untilRunning(groups: number, operations: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if ((await metric('tollgate_ws_shared_subscriptions')) === groups && (await metric('tollgate_ws_operations')) >= operations) {
      await sleep(50); // from the group's start to its listener on the bus
      return;
    }
    await sleep(25);
  }
  throw new Error(
    `the server runs ${await metric('tollgate_ws_shared_subscriptions')} shared subscriptions and ${await metric('tollgate_ws_operations')} operations, not ${groups} and ${operations}`,
  );
}

/** Events of a subscription as they come, until `until` holds for the list. */
function collect(client: Client, query: string, variables?: Record<string, unknown>) {
  const values: any[] = [];
  const errors: unknown[] = [];
  let completed = false;
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  const dispose = client.subscribe<any>(
    { query, variables },
    {
      next: (v) => {
        values.push(v);
        wake();
      },
      error: (e) => {
        errors.push(e);
        wake();
      },
      complete: () => {
        completed = true;
        wake();
      },
    },
  );
  return {
    values,
    errors,
    get completed() {
      return completed;
    },
    async until(done: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!done()) {
        if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (${values.length} events, errors ${JSON.stringify(errors)})`);
        await Promise.race([new Promise<void>((r) => waiters.push(r)), sleep(100)]);
      }
    },
    dispose,
  };
}

const WATCH = 'subscription($q: String) { monitorStateChanged(query: $q) { monitor { name } group to message } }';

describe('shared subscriptions', () => {
  test('identical subscriptions share one execution per event, each subscriber under its own id', async () => {
    const d = driver(s);
    const monitor = await d.monitor('fan-one', ['service:fan-one', 'env:prod']);
    const N = 100;
    const executionsBefore = await metric('tollgate_ws_shared_executions_total');
    const operationsBefore = await metric('tollgate_ws_operations');
    const subs = Array.from({ length: N }, () => collect(s.ws(), WATCH, { q: 'service:fan-one' }));
    await untilRunning(1, operationsBefore + N);
    await d.report(monitor, 'ALERT');
    await Promise.all(subs.map((sub) => sub.until(() => sub.values.length >= 1, 'the transition')));
    for (const sub of subs) assert.deepEqual(sub.values, [{ data: { monitorStateChanged: { monitor: { name: 'fan-one' }, group: '*', to: 'ALERT', message: null } } }]);
    assert.equal((await metric('tollgate_ws_shared_executions_total')) - executionsBefore, 1, 'one execution for the hundred subscribers');
    for (const sub of subs) sub.dispose();
    await untilRunning(0, 0);
  });

  test('subscribers of other environments get their own execution and never another environment’s data', async () => {
    const d = driver(s);
    const prodA = await newKey('prod-a', ['prod']);
    const prodB = await newKey('prod-b', ['prod']);
    const staging = await newKey('staging', ['staging']);
    const prodMonitor = await d.monitor('fan-env-prod', ['service:fan-env', 'env:prod']);
    const stagingMonitor = await d.monitor('fan-env-staging', ['service:fan-env', 'env:staging']);
    const bothMonitor = await d.monitor('fan-env-both', ['service:fan-env', 'env:prod', 'env:staging']);
    const operationsBefore = await metric('tollgate_ws_operations');
    const executionsBefore = await metric('tollgate_ws_shared_executions_total');
    const watch = (secret: string) => collect(s.ws(secret), WATCH, { q: 'service:fan-env' });
    const prod = [...Array.from({ length: 30 }, () => watch(prodA.secret)), ...Array.from({ length: 30 }, () => watch(prodB.secret))];
    const stagingSubs = Array.from({ length: 30 }, () => watch(staging.secret));
    const admin = Array.from({ length: 10 }, () => watch(ADMIN_KEY));
    // Two keys limited to prod see the same: one group for both; staging and admin have one each.
    await untilRunning(3, operationsBefore + 100);
    await d.report(prodMonitor, 'ALERT');
    await d.report(stagingMonitor, 'ALERT');
    await d.report(bothMonitor, 'WARN'); // the last, seen by all: once it arrived, everything did
    const names = (sub: ReturnType<typeof watch>) => sub.values.map((v) => v.data.monitorStateChanged.monitor.name);
    const all = [...prod, ...stagingSubs, ...admin];
    await Promise.all(all.map((sub) => sub.until(() => names(sub).includes('fan-env-both'), 'the last transition')));
    for (const sub of prod) assert.deepEqual(names(sub), ['fan-env-prod', 'fan-env-both']);
    for (const sub of stagingSubs) assert.deepEqual(names(sub), ['fan-env-staging', 'fan-env-both']);
    for (const sub of admin) assert.deepEqual(names(sub), ['fan-env-prod', 'fan-env-staging', 'fan-env-both']);
    // prod: 2 results, staging: 2, admin: 3, whatever the number of subscribers.
    assert.equal((await metric('tollgate_ws_shared_executions_total')) - executionsBefore, 7);
    for (const sub of all) sub.dispose();
    await untilRunning(0, 0);
  });

  test('a revoked key ends its subscribers; the others of the same group keep receiving', async () => {
    const d = driver(s);
    const doomed = await newKey('doomed', ['prod']);
    const kept = await newKey('kept', ['prod']);
    const monitor = await d.monitor('fan-revoke', ['service:fan-revoke', 'env:prod']);
    const operationsBefore = await metric('tollgate_ws_operations');
    const closes: number[] = [];
    const doomedSubs = Array.from({ length: 20 }, () =>
      collect(s.ws(doomed.secret, { on: { closed: (e) => closes.push((e as { code: number }).code) } }), WATCH, { q: 'service:fan-revoke' }),
    );
    const keptSubs = Array.from({ length: 20 }, () => collect(s.ws(kept.secret), WATCH, { q: 'service:fan-revoke' }));
    await untilRunning(1, operationsBefore + 40);
    await d.report(monitor, 'WARN');
    await Promise.all([...doomedSubs, ...keptSubs].map((sub) => sub.until(() => sub.values.length === 1, 'the first transition')));
    const revoked = await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: doomed.id });
    assert.equal(revoked.errors, undefined);
    for (let i = 0; i < 200 && closes.length < 20; i++) await sleep(25);
    assert.deepEqual(closes, Array(20).fill(4403), 'every socket of the revoked key is closed, Forbidden');
    await d.report(monitor, 'ALERT');
    await Promise.all(keptSubs.map((sub) => sub.until(() => sub.values.length === 2, 'the transition after the revocation')));
    for (const sub of keptSubs) assert.equal(sub.values[1].data.monitorStateChanged.to, 'ALERT');
    for (const sub of doomedSubs) assert.equal(sub.values.length, 1, 'nothing after the revocation');
    assert.equal(await metric('tollgate_ws_shared_subscriptions'), 1, 'the group runs on for the key that is left');
    for (const sub of keptSubs) sub.dispose();
    await untilRunning(0, 0);
  });

  test('a subscriber whose socket does not read is cut off alone; the group goes on', async () => {
    const d = driver(s);
    const monitor = await d.monitor('fan-slow', ['service:fan-slow', 'env:prod']);
    let real: MonitorStateChange | undefined;
    const off = s.app.deps.events.on('monitor.transition', (c) => (real ??= c));
    await d.report(monitor, 'WARN');
    off();
    assert.ok(real);
    const query = 'subscription { monitorStateChanged(query: "service:fan-slow") { to message } }';
    const operationsBefore = await metric('tollgate_ws_operations');
    const fast = [collect(s.ws(), query), collect(s.ws(), query)];
    // A raw socket that stops reading once subscribed: the server's writes pile up.
    const slow = new WebSocket(s.wsUrl, 'graphql-transport-ws');
    const slowMessages: any[] = [];
    slow.on('message', (data) => slowMessages.push(JSON.parse(String(data))));
    await new Promise((resolve) => slow.once('open', resolve));
    slow.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } }));
    while (!slowMessages.some((m) => m.type === 'connection_ack')) await sleep(10);
    slow.send(JSON.stringify({ id: 'slow-1', type: 'subscribe', payload: { query } }));
    await untilRunning(1, operationsBefore + 3);
    (slow as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();

    // Large events on the server's own bus, in batches the group keeps up with.
    const EVENTS = 2000;
    const message = 'x'.repeat(16 * 1024);
    for (let i = 0; i < EVENTS; i += 100) {
      for (let j = i; j < i + 100; j++) s.app.deps.events.publish('monitor.transition', { ...real, message: `${j} ${message}` });
      await fast[0]!.until(() => fast[0]!.values.length >= i + 50, 'the fast subscriber keeping up', 60_000);
    }
    await Promise.all(fast.map((f) => f.until(() => f.values.length === EVENTS, 'every event to the fast subscribers', 60_000)));
    for (const f of fast) {
      assert.deepEqual(
        f.values.map((v) => Number.parseInt(v.data.monitorStateChanged.message, 10)),
        Array.from({ length: EVENTS }, (_, i) => i),
        'every event, in order',
      );
      assert.equal(f.errors.length, 0);
    }
    (slow as unknown as { _socket: { resume(): void } })._socket.resume();
    for (let i = 0; i < 400 && !slowMessages.some((m) => m.type === 'error'); i++) await sleep(25);
    const error = slowMessages.find((m) => m.type === 'error');
    assert.equal(error?.id, 'slow-1');
    assert.match(error.payload[0].message, /more than 1000 events were waiting for this client/);
    const received = slowMessages.filter((m) => m.type === 'next').length;
    assert.ok(received < EVENTS, `the slow subscriber was cut off before the end (${received} events)`);
    assert.equal(await metric('tollgate_ws_shared_subscriptions'), 1, 'the group runs on');
    slow.close();
    for (const f of fast) f.dispose();
    await untilRunning(0, 0);
  });

  test('evaluationUpdated: a late joiner gets the current state, then every revision in order, from the same execution', async () => {
    const d = driver(s);
    const monitor = await d.monitor('fan-eval', ['service:fan-eval', 'env:prod']);
    const started = await d.evaluate({ service: 'fan-eval', env: 'prod', configuration: { rules: [jitMonitor('long', { query: 'service:fan-eval', duration: 3600 })] } });
    const id = started.data.evaluateGate.id as string;
    const query = 'subscription($id: ID!) { evaluationUpdated(id: $id) { id revision status rules { status evidence { failingGroups { monitorName state } } } } }';
    const executionsBefore = await metric('tollgate_ws_shared_executions_total');
    const operationsBefore = await metric('tollgate_ws_operations');
    const early = Array.from({ length: 20 }, () => collect(s.ws(), query, { id }));
    await untilRunning(1, operationsBefore + 20);
    await Promise.all(early.map((sub) => sub.until(() => sub.values.length >= 1, 'the current state')));
    await d.report(monitor, 'WARN'); // a new revision: the rule's evidence changes
    await early[0]!.until(() => early[0]!.values.length >= 2, 'the revision after WARN');
    const revisionAtJoin = early[0]!.values.at(-1).data.evaluationUpdated.revision as number;
    const late = Array.from({ length: 20 }, () => collect(s.ws(), query, { id }));
    await Promise.all(late.map((sub) => sub.until(() => sub.values.length >= 1, 'the current state for a late joiner')));
    for (const sub of late) assert.ok(sub.values[0].data.evaluationUpdated.revision >= revisionAtJoin, 'the late joiner starts from the current state');
    await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id });
    const all = [...early, ...late];
    await Promise.all(all.map((sub) => sub.until(() => sub.completed, 'the end of the stream')));
    const revisions = (sub: (typeof all)[number]) => sub.values.map((v) => v.data.evaluationUpdated.revision as number);
    const full = revisions(early[0]!);
    assert.equal(early[0]!.values.at(-1).data.evaluationUpdated.status, 'CANCELED');
    assert.deepEqual(
      [...full].sort((a, b) => a - b),
      full,
      'in order',
    );
    assert.equal(new Set(full).size, full.length, 'each revision once');
    for (const sub of early) assert.deepEqual(revisions(sub), full);
    for (const sub of late) {
      const mine = revisions(sub);
      // From the state it joined at, every later revision the early subscribers saw.
      assert.deepEqual(mine, full.slice(full.indexOf(mine[0]!)), 'a suffix of the whole stream');
      assert.deepEqual(sub.values.at(-1), early[0]!.values.at(-1));
    }
    assert.equal((await metric('tollgate_ws_shared_executions_total')) - executionsBefore, full.length, 'one execution per revision for all forty');
    await untilRunning(0, 0);
  });

  test('backtestProgress: a second identical subscriber joining the running group gets the current state', async () => {
    // A running backtest no job replays (not published): nothing changes it, so the current
    // state is all either subscriber can be shown.
    const row = await insertBacktest(s.app.deps.db, {
      id: newId(),
      gateId: null,
      service: 'fan-backtest',
      env: 'prod',
      configuration: { dryRun: false, onSourceError: 'fail', rules: [] },
      from: new Date(Date.now() - 3_600_000),
      to: new Date(),
      status: 'running',
      results: [],
      skippedRules: [],
      nodeId: s.app.deps.nodeId,
      triggerEnvs: null,
      createdById: 'fanout-test',
      createdByName: 'fanout-test',
      createdAt: new Date(),
    });
    const query = 'subscription($id: ID!) { backtestProgress(id: $id) { id status revision } }';
    const operationsBefore = await metric('tollgate_ws_operations');
    const executionsBefore = await metric('tollgate_ws_shared_executions_total');
    const first = collect(s.ws(), query, { id: row.id });
    await first.until(() => first.values.length >= 1, 'the current state for the first subscriber');
    await untilRunning(1, operationsBefore + 1);
    const second = collect(s.ws(), query, { id: row.id });
    await untilRunning(1, operationsBefore + 2);
    await second.until(() => second.values.length >= 1, 'the current state for the second subscriber', 1000);
    const state = { data: { backtestProgress: { id: row.id, status: 'RUNNING', revision: 1 } } };
    assert.deepEqual(first.values, [state]);
    assert.deepEqual(second.values, [state]);
    assert.equal((await metric('tollgate_ws_shared_executions_total')) - executionsBefore, 1, 'the state the second was sent is the group’s, not an execution of its own');
    first.dispose();
    second.dispose();
    await untilRunning(0, 0);
  });

  test('every Subscription field declares whether its stream starts with the current state', () => {
    // A late joiner of a shared group is sent the group's newest result only for the fields that
    // say so: one that starts with a state but did not say it would leave such joiners waiting.
    const fields = Object.values(schema.getSubscriptionType()!.getFields());
    assert.ok(fields.length > 0);
    for (const field of fields) {
      assert.equal(typeof field.extensions.startsWithState, 'boolean', `Subscription.${field.name} declares STARTS_WITH_STATE or CHANGES_ONLY (src/graphql/builder.ts)`);
    }
    assert.deepEqual(
      fields
        .filter((f) => startsWithState(schema, f.name))
        .map((f) => f.name)
        .sort(),
      ['backtestProgress', 'evaluationUpdated'],
    );
  });

  test('subscriptions that differ only in variables, or that fail to start, are not mixed up', async () => {
    const unknown = '0190a000-0000-7000-8000-000000000000';
    const a = subscribeQueue(s.ws(), 'subscription($id: ID!) { evaluationUpdated(id: $id) { id } }', { id: unknown });
    const b = subscribeQueue(s.ws(), 'subscription($id: ID!) { evaluationUpdated(id: $id) { id } }', { id: unknown });
    for (const sub of [a, b]) {
      const r = await sub.next();
      assert.equal((r.errors as any)?.[0]?.extensions?.code, 'NOT_FOUND');
    }
    await untilRunning(0, 0);
  });
});

describe('shared subscriptions under churn (adversary, issue 12)', () => {
  /** A raw graphql-transport-ws socket: acknowledged, then driven message by message. */
  async function rawSocket(): Promise<WebSocket> {
    const socket = new WebSocket(s.wsUrl, 'graphql-transport-ws');
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } })));
      socket.on('message', (data) => {
        if (JSON.parse(String(data)).type === 'connection_ack') resolve();
      });
      socket.once('error', reject);
    });
    return socket;
  }
  const subscribe = (socket: WebSocket, id: string, query = WATCH, variables: Record<string, unknown> = {}) =>
    socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));

  test('subscribe/complete/close in every order leaves no group and no operation behind', async () => {
    await untilRunning(0, 0);
    for (let round = 0; round < 15; round++) {
      const a = await rawSocket();
      const b = await rawSocket();
      // Completed at once, before its group has started.
      subscribe(a, `a${round}`);
      a.send(JSON.stringify({ id: `a${round}`, type: 'complete' }));
      // Two of one group on one socket, and the socket dropped while they start.
      subscribe(b, `b${round}`);
      subscribe(b, `c${round}`);
      subscribe(b, `d${round}`, 'subscription($id: ID!) { evaluationUpdated(id: $id) { id } }', { id: '0190a000-0000-7000-8000-000000000000' });
      if (round % 2) b.terminate();
      else b.close();
      // The same id again after completing it, while it still starts: a protocol error (4409).
      const closed = new Promise<number>((resolve) => a.once('close', resolve));
      subscribe(a, `a${round}`, WATCH, { q: 'service:x' });
      await sleep(round % 3 === 0 ? 0 : 20);
      const code = round % 3 === 0 ? undefined : await Promise.race([closed, sleep(500)]);
      // Closed by the server only when the id was still held (it usually is, not always).
      if (typeof code === 'number') assert.equal(code, 4409, 'an id still in use closes the socket');
      a.close();
    }
    await untilRunning(0, 0);
    for (let i = 0; i < 200 && (await metric('tollgate_ws_operations')) !== 0; i++) await sleep(25);
    assert.equal(await metric('tollgate_ws_operations'), 0, 'every operation gave its slot back');
    assert.equal(await metric('tollgate_ws_shared_subscriptions'), 0, 'no group outlives its members');
    // And a fresh subscriber is served by a fresh group.
    const d = driver(s);
    const monitor = await d.monitor('churn-check', ['service:churn']);
    const live = collect(s.ws(), WATCH, { q: 'service:churn' });
    await untilRunning(1, 1);
    await d.report(monitor, 'ALERT');
    await live.until(() => live.values.length >= 1, 'the fresh subscriber gets the transition');
    live.dispose();
    await untilRunning(0, 0);
  });
});
