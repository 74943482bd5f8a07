import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { createEvents, MAX_PENDING_EVENTS, SlowSubscriberError } from '../src/domain/events.ts';
import { sweepNoData } from '../src/domain/monitors.ts';
import { MAX_OPERATIONS_PER_SOCKET } from '../src/server/ws.ts';
import { ADMIN_KEY, driver, jitMonitor, sleep, startServer, subscribeQueue, type TestServer } from './helpers.ts';

async function metric(s: TestServer, name: string): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
}

describe('the event bus', () => {
  test('a subscriber that stops reading is cut off alone; publishing never throws', async () => {
    const events = createEvents();
    const slow = events.subscribe('config.changed');
    const first = slow.next(); // starts listening, then never reads again
    let heard = 0;
    events.on('config.changed', () => heard++);
    for (let i = 0; i < MAX_PENDING_EVENTS + 50; i++) events.publish('config.changed', null);
    assert.equal(heard, MAX_PENDING_EVENTS + 50, 'synchronous listeners hear everything');
    await first;
    await assert.rejects(
      (async () => {
        for await (const _ of slow) {
          /* drain */
        }
      })(),
      SlowSubscriberError,
    );
  });
});

describe('under load and across failures', () => {
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  let clock = 0;
  before(async () => {
    s = await startServer({}, { now: () => new Date(Date.now() + clock) });
    d = driver(s);
  });
  after(() => s.stop());

  test('one transition waking 1,100 running rules neither crashes nor loses any of them', async () => {
    const id = await d.monitor('busy', ['load:busy']);
    await d.report(id, 'OK');
    for (let i = 0; i < 1100; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, j) =>
          d.evaluate({ service: 'busy', env: 'prod', version: `v${i + j}`, configuration: { rules: [jitMonitor('m', { query: 'load:busy', duration: 3600 })] } }),
        ),
      );
    }
    await d.report(id, 'WARN'); // wakes every rule; all stay in progress
    await sleep(500);
    await d.report(id, 'ALERT'); // wakes them again; all fail
    let failed = 0;
    for (let i = 0; i < 100 && failed < 1100; i++) {
      await sleep(200);
      failed = (await s.gql('{ evaluationStats(filter: { service: ["busy"], status: [FAIL] }) { total } }')).data.evaluationStats.total;
    }
    assert.equal(failed, 1100);
  });

  test('a client that goes away leaves no subscription running', async () => {
    const id = await d.monitor('watched', ['load:watched']);
    await d.report(id, 'OK');
    const r = await d.evaluate({ service: 'gone', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'load:watched', duration: 3600 })] } });
    const client = s.ws();
    const a = subscribeQueue(client, `subscription { evaluationUpdated(id: "${r.data.evaluateGate.id}") { status } }`);
    subscribeQueue(client, 'subscription { evaluationEvents(filter: { service: ["never-matches"] }) { id } }');
    subscribeQueue(client, 'subscription { gateEvents(filter: { service: "never-matches" }) { kind } }');
    await a.next();
    for (let i = 0; i < 100 && (await metric(s, 'tollgate_ws_operations')) < 3; i++) await sleep(50);
    assert.equal(await metric(s, 'tollgate_ws_operations'), 3);
    await client.dispose();
    for (let i = 0; i < 50 && (await metric(s, 'tollgate_ws_operations')) > 0; i++) await sleep(50);
    assert.equal(await metric(s, 'tollgate_ws_operations'), 0);
    assert.equal(await metric(s, 'tollgate_ws_connections'), 0);
  });

  test('revoking a key closes its open WebSockets at once', async () => {
    const created = await s.gql('mutation { createApiKey(input: { name: "short-lived", scopes: [GATES_READ] }) { secret key { id } } }');
    const { secret, key } = created.data.createApiKey;
    const closed = new Promise<{ code: number; reason: string }>((resolve) => {
      const client = s.ws(secret, { on: { closed: (e: any) => resolve({ code: e.code, reason: e.reason }) } });
      client.subscribe({ query: 'subscription { gateEvents { kind } }' }, { next() {}, error() {}, complete() {} });
    });
    await sleep(100);
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id });
    const result = await closed;
    assert.equal(result.code, 4403);
    assert.match(result.reason, /revoked/);
  });

  test(`one socket runs at most ${MAX_OPERATIONS_PER_SOCKET} operations`, async () => {
    const ws = new WebSocket(s.wsUrl, 'graphql-transport-ws');
    const errors: any[] = [];
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      if (m.type === 'error') errors.push(m);
    });
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } }));
    await sleep(100);
    for (let i = 0; i <= MAX_OPERATIONS_PER_SOCKET; i++) {
      ws.send(JSON.stringify({ id: `s${i}`, type: 'subscribe', payload: { query: 'subscription { gateEvents { kind } }' } }));
    }
    for (let i = 0; i < 50 && errors.length === 0; i++) await sleep(50);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].id, `s${MAX_OPERATIONS_PER_SOCKET}`);
    assert.match(errors[0].payload[0].message, /at most/);
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.close();
  });

  test('a monitor that stops reporting goes NO_DATA after its timeframe, and rules see it', async () => {
    const id = await d.monitor('heartbeat', ['load:heartbeat'], { noDataTimeframe: 60 });
    await d.report(id, 'OK', 'host:a');
    const r = await d.evaluate({ service: 'quiet', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'load:heartbeat', duration: 3600 })] } });
    assert.equal(await sweepNoData(s.app.deps), 0, 'fresh reports are not stale');
    clock = 61_000;
    try {
      assert.equal(await sweepNoData(s.app.deps), 1);
    } finally {
      clock = 0;
    }
    const m = await s.gql('query($id: ID!) { monitor(id: $id) { state groups { group state message } } }', { id });
    assert.deepEqual(m.data.monitor.groups, [{ group: 'host:a', state: 'NO_DATA', message: 'no report for more than 60 s' }]);
    const final = (await d.follow(r.data.evaluateGate.id)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /NO_DATA/);
  });

  test('a gate whose rules are all dry run is decided (pass) from the start', async () => {
    const r = await d.evaluate({ service: 'all-dry', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'nothing:matches', warmup: 600 }, true)] } });
    const ev = r.data.evaluateGate;
    assert.equal(ev.status, 'PASS');
    assert.ok(ev.decidedAt);
    assert.equal(ev.finishedAt, null);
    await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id: ev.id });
  });

  test('group names in monitorIds match however their tags are ordered', async () => {
    const id = await d.monitor('ordered', ['load:ordered']);
    await d.report(id, 'ALERT', 'region:eu,host:a');
    const r = await d.evaluate({ service: 'order', env: 'prod', configuration: { rules: [jitMonitor('m', { monitorIds: [{ id, groups: ['region:eu,host:a'] }] })] } });
    assert.equal((await d.follow(r.data.evaluateGate.id)).at(-1).status, 'FAIL');
  });
});

describe('environment limits on monitors', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('a key limited to staging neither sees nor touches prod monitors', async () => {
    const d = driver(s);
    const prod = await d.monitor('prod only', ['env:prod']);
    const staging = await d.monitor('staging only', ['env:staging']);
    const key = await s.createKey(['monitors:write'], ['staging']);
    const as = (q: string, v?: Record<string, unknown>) => s.gql(q, v, key);

    const list = await as('{ monitors(first: 50) { edges { node { id } } } }');
    assert.deepEqual(
      list.data.monitors.edges.map((e: any) => e.node.id),
      [staging],
    );
    // Another env's monitor is answered as one that does not exist (test/leaks.test.ts compares them).
    assert.deepEqual((await as('query($id: ID!) { monitor(id: $id) { id } }', { id: prod })).data, { monitor: null });
    const report = await as('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', { id: prod });
    assert.equal(report.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    const mute = await as('mutation($id: ID!) { updateMonitor(id: $id, input: { muted: true }) { id } }', { id: prod });
    assert.equal(mute.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    const create = await as('mutation { createMonitor(input: { name: "x", type: EXTERNAL, tags: ["env:prod"] }) { id } }');
    assert.equal(create.errors?.[0]?.extensions?.code, 'FORBIDDEN');
    assert.equal(create.errors?.[0]?.extensions?.field, 'input.tags');
    const ok = await as('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: WARN }) { id } }', { id: staging });
    assert.equal(ok.errors, undefined);
  });
});

describe('Alertmanager notifications and environment limits', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('a key limited to staging cannot report a prod alert, nor one without an env label', async () => {
    const key = await s.createKey(['ingest'], ['staging']);
    const notify = (labels: Record<string, string>) =>
      fetch(`${s.url}/hooks/alertmanager?key=${key}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ version: '4', status: 'firing', alerts: [{ status: 'firing', labels: { alertname: 'HighErrors', ...labels } }] }),
      }).then((r) => r.json() as Promise<any>);
    assert.deepEqual((await notify({ env: 'staging' })).received, 1);
    const prod = await notify({ env: 'prod' });
    assert.equal(prod.received, 0);
    assert.match(prod.problems[0], /limited to env staging/);
    assert.equal((await notify({})).received, 0);
    const groups = (await s.gql('{ monitors(first: 5, query: "alertname:HighErrors") { edges { node { groups { group state } } } } }')).data.monitors.edges[0].node.groups;
    assert.deepEqual(groups, [{ group: 'env:staging', state: 'ALERT' }]);
  });

  test('a malformed notification is a 400 naming the problem', async () => {
    const r = await fetch(`${s.url}/hooks/alertmanager`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
      body: JSON.stringify({ version: '3', alerts: [] }),
    });
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as any).errors[0].detail, /version must be "4"/);
  });
});

test('Prometheus infinities read as infinities', async () => {
  const { sampleValue } = await import('../src/sources/prometheus.ts');
  assert.equal(sampleValue('+Inf'), Number.POSITIVE_INFINITY);
  assert.equal(sampleValue('-Inf'), Number.NEGATIVE_INFINITY);
  assert.equal(sampleValue('0.25'), 0.25);
});
