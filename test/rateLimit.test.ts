import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect as connectTcp } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Client } from 'graphql-ws';
import WebSocket from 'ws';
import { ConfigError, loadConfig, type RateLimitConfig } from '../src/config.ts';
import { clientAddress } from '../src/server/rateLimit.ts';
import {
  ADMIN_KEY,
  CREATE_GATE,
  driver,
  type HttpResult,
  jitMonitor,
  monitorRule,
  sleep,
  startServer,
  subscribeLive,
  subscribeQueue,
  type TestServer,
  UNREACHABLE_LIMITS,
  wsOnce,
} from './helpers.ts';

const limits = (overrides: Partial<RateLimitConfig>): RateLimitConfig => ({ ...UNREACHABLE_LIMITS, ...overrides });

/** Sends bursts of the same request until one is refused; a limit of 2 a second is always passed. */
async function until429(send: () => Promise<HttpResult>): Promise<HttpResult> {
  for (let burst = 0; burst < 100; burst++) {
    const answers = await Promise.all(Array.from({ length: 6 }, send));
    const refused = answers.find((a) => a.status === 429);
    if (refused) return refused;
    for (const a of answers) assert.ok(a.status < 300, `unexpected ${a.status}: ${a.text}`);
  }
  assert.fail('never refused');
}

function assertRetryAfter(res: HttpResult, atMost: number): number {
  const header = Number(res.headers['retry-after']);
  assert.ok(Number.isInteger(header) && header >= 1 && header <= atMost, `Retry-After ${res.headers['retry-after']}`);
  return header;
}

const ingestBody = { resourceSpans: [] };

describe('requests per key per second', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ rateLimits: limits({ requestsPerSecond: 2, ingestPerSecond: 2 }) });
    await s.gql(CREATE_GATE, { input: { service: 'rl-hook', env: 'prod', rules: [monitorRule('m', { query: 'service:nothing-here' })] } });
  });
  after(() => s.stop());

  /** The admin key that creates keys has the same small budget: it waits its turn. */
  async function newKey(scopes: string[]): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await s.createKey(scopes);
      } catch (err) {
        if (attempt > 20 || !/RATE_LIMITED/.test(String(err))) throw err;
        await sleep(1000);
      }
    }
  }

  test('GraphQL over HTTP answers 429 with Retry-After and RATE_LIMITED, and another key is unaffected', async () => {
    const key = await newKey(['gates:read']);
    const other = await newKey(['gates:read']);
    const refused = await until429(async () => s.request('POST', '/graphql', { body: { query: '{ gates(first: 1) { edges { cursor } } }' }, key }));
    const retryAfter = assertRetryAfter(refused, 1);
    assert.equal(refused.json.errors[0].extensions.code, 'RATE_LIMITED');
    assert.equal(refused.json.errors[0].extensions.retryAfter, retryAfter);
    assert.match(refused.json.errors[0].message, /requests per second/);
    const fine = await s.request('POST', '/graphql', { body: { query: '{ gates(first: 1) { edges { cursor } } }' }, key: other });
    assert.equal(fine.status, 200, fine.text);
  });

  test('REST answers 429 in its own error shape', async () => {
    const key = await newKey(['gates:read']);
    const refused = await until429(async () => s.request('GET', '/api/v2/deployment_gates', { key }));
    assertRetryAfter(refused, 1);
    assert.equal(refused.json.errors[0].status, '429');
    assert.equal(refused.json.errors[0].title, 'Too Many Requests');
    assert.match(refused.json.errors[0].detail, /requests per second/);
  });

  test('the gate hooks answer 429', async () => {
    const key = await newKey(['evaluations:write']);
    const refused = await until429(async () => s.request('GET', `/hooks/gate?service=rl-hook&env=prod&version=v1&key=${key}`, { key: null }));
    assertRetryAfter(refused, 1);
    assert.equal(refused.json.errors[0].status, '429');
  });

  test('a key in the query string is read as the handler reads it: a fragment after it does not dodge the budget', async () => {
    const key = await newKey(['evaluations:write']);
    // Raw, since every HTTP client drops the fragment before sending.
    const { port } = new URL(s.url);
    const rawGet = (path: string) =>
      new Promise<HttpResult>((resolve, reject) => {
        // Written, not ended: a client that half-closes before the answer may get none (the PostgreSQL
        // pass saw an empty reply once), and the server closes after answering anyway.
        const socket = connectTcp(Number(port), '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
        let text = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk) => (text += chunk));
        socket.on('error', reject);
        socket.on('end', () => {
          const [head, body = ''] = text.split('\r\n\r\n');
          const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head!)?.[1]);
          let json: any;
          try {
            json = JSON.parse(body);
          } catch {}
          resolve({ status, text: body, json, headers: {} });
        });
      });
    const refused = await until429(() => rawGet(`/hooks/gate?service=rl-hook&env=prod&version=v1&key=${key}#dodge`));
    assert.equal(refused.json.errors[0].status, '429');
  });

  test('OTLP ingestion answers 429 in the OTLP shape, from a budget of its own', async () => {
    const key = await newKey(['ingest', 'gates:read']);
    // Exhaust the key's request budget: ingestion still goes through.
    await until429(async () => s.request('POST', '/graphql', { body: { query: '{ gates(first: 1) { edges { cursor } } }' }, key }));
    const accepted = await s.request('POST', '/v1/traces', { body: ingestBody, key });
    assert.equal(accepted.status, 200, accepted.text);
    const refused = await until429(async () => s.request('POST', '/v1/traces', { body: ingestBody, key }));
    assertRetryAfter(refused, 1);
    assert.equal(refused.json.code, 429);
    assert.match(refused.json.message, /per second/);
  });

  test('over WebSocket an operation past the limit gets RATE_LIMITED and the socket stays open', async () => {
    const key = await newKey(['gates:read']);
    const client = s.ws(key, { lazy: false });
    let closed = false;
    client.on('closed', () => (closed = true));
    let refused: any;
    for (let burst = 0; burst < 100 && !refused; burst++) {
      const results = await Promise.all(Array.from({ length: 6 }, async () => wsOnce(client, '{ gates(first: 1) { edges { cursor } } }')));
      refused = results.flatMap((r) => r.errors ?? []).find((e: any) => e.extensions?.code === 'RATE_LIMITED');
    }
    assert.ok(refused, 'never refused');
    assert.equal(typeof refused.extensions.retryAfter, 'number');
    assert.equal(closed, false);
    // The same socket answers again once the second is over.
    await sleep(1100);
    const again = await wsOnce(client, '{ gates(first: 1) { edges { cursor } } }');
    assert.equal(again.errors, undefined, JSON.stringify(again.errors));
    assert.equal(closed, false);
  });

  test('health, readiness and metrics are not counted against anyone', async () => {
    for (let i = 0; i < 20; i++) assert.equal((await s.request('GET', '/healthz', { key: null })).status, 200);
  });
});

/** A graphql-transport-ws socket for `key`: resolves with the ack, or with the close code and reason. */
function connect(s: TestServer, key: string): Promise<{ ws: WebSocket; acked: true } | { code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(s.wsUrl, 'graphql-transport-ws');
    ws.once('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } })));
    ws.on('message', (data) => {
      if (JSON.parse(String(data)).type === 'connection_ack') resolve({ ws, acked: true });
    });
    ws.once('close', (code, reason) => resolve({ code, reason: String(reason) }));
    ws.once('error', reject);
  });
}

describe('WebSocket connections and operations per key', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ rateLimits: limits({ sockets: 2, operations: 3 }) });
  });
  after(() => s.stop());

  test('the third socket of a key is closed with 4429; another key connects; a closed socket frees its place', async () => {
    const key = await s.createKey(['gates:read']);
    const first = await connect(s, key);
    const second = await connect(s, key);
    assert.ok('acked' in first && 'acked' in second);
    const third = await connect(s, key);
    assert.deepEqual(third, { code: 4429, reason: 'too many open connections for this API key (at most 2)' });
    const other = await connect(s, await s.createKey(['gates:read']));
    assert.ok('acked' in other);
    other.ws.close();
    first.ws.close();
    let again: Awaited<ReturnType<typeof connect>> | undefined;
    for (let i = 0; i < 50 && !(again && 'acked' in again); i++) {
      await sleep(20);
      again = await connect(s, key);
    }
    assert.ok(again && 'acked' in again, JSON.stringify(again));
    again.ws.close();
    second.ws.close();
  });

  test('a GraphQL stream over SSE holds a connection of its key', async () => {
    const key = await s.createKey(['gates:read']);
    const { hostname, port } = new URL(s.url);
    const body = JSON.stringify({ query: 'subscription { gateEvents { kind } }' });
    const stream = () =>
      new Promise<{ status: number; json?: any; retryAfter?: string; close: () => void }>((resolve, reject) => {
        const req = httpRequest({
          hostname,
          port,
          path: '/graphql',
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${key}` },
        });
        req.on('response', (res) => {
          if (res.statusCode === 200) return resolve({ status: 200, close: () => req.destroy() });
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text), retryAfter: res.headers['retry-after'], close: () => {} }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const first = await stream();
    const socket = await connect(s, key);
    assert.equal(first.status, 200);
    assert.ok('acked' in socket);
    const refused = await stream();
    assert.equal(refused.status, 429);
    assert.equal(refused.json.errors[0].extensions.code, 'RATE_LIMITED');
    assert.ok(Number(refused.retryAfter) >= 1);
    assert.deepEqual(await connect(s, key), { code: 4429, reason: 'too many open connections for this API key (at most 2)' });
    first.close();
    let again: Awaited<ReturnType<typeof stream>> | undefined;
    for (let i = 0; i < 50 && again?.status !== 200; i++) {
      await sleep(20);
      again = await stream();
    }
    assert.equal(again?.status, 200);
    again!.close();
    socket.ws.close();
  });

  test('an operation that names no operation of its document gives its place back', async () => {
    const key = await s.createKey(['gates:read']);
    const ws = new WebSocket(s.wsUrl, 'graphql-transport-ws');
    const frames: any[] = [];
    const frame = async (id: string) => {
      for (let i = 0; i < 250; i++) {
        const found = frames.find((f) => f.id === id);
        if (found) return found;
        await sleep(20);
      }
      throw new Error(`no frame for ${id}`);
    };
    ws.on('message', (data) => frames.push(JSON.parse(String(data))));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${key}` } }));
    for (let i = 0; i < 250 && !frames.some((f) => f.type === 'connection_ack'); i++) await sleep(20);
    for (let i = 0; i < 4; i++) {
      ws.send(JSON.stringify({ id: `bad${i}`, type: 'subscribe', payload: { query: 'query One { gates(first: 1) { edges { cursor } } }', operationName: 'Two' } }));
      assert.equal((await frame(`bad${i}`)).type, 'error');
    }
    ws.send(JSON.stringify({ id: 'good', type: 'subscribe', payload: { query: 'query One { gates(first: 1) { edges { cursor } } }', operationName: 'One' } }));
    const good = await frame('good');
    assert.equal(good.type, 'next', JSON.stringify(good));
    ws.close();
  });

  test('operations are counted over all sockets of a key; the one past the cap gets RATE_LIMITED until one ends', async () => {
    const key = await s.createKey(['gates:read']);
    const a: Client = s.ws(key);
    const b: Client = s.ws(key);
    const subs = [
      await subscribeLive(s, a, 'subscription { gateEvents { kind } }'),
      await subscribeLive(s, a, 'subscription { gateEvents { kind } }'),
      await subscribeLive(s, b, 'subscription { gateEvents { kind } }'),
    ];
    const refused = await subscribeQueue(b, 'subscription { gateEvents { kind } }').next();
    const error = refused.errors?.[0] as any;
    assert.equal(error?.extensions?.code, 'RATE_LIMITED', JSON.stringify(refused));
    assert.match(error.message, /at most 3 operations/);
    // Another key is not affected.
    const otherResult = await wsOnce(s.ws(await s.createKey(['gates:read'])), '{ gates(first: 1) { edges { cursor } } }');
    assert.equal(otherResult.errors, undefined);
    // Ending one frees its slot for the key's other socket.
    subs[0]!.dispose();
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) {
      await sleep(20);
      const r = await wsOnce(b, '{ gates(first: 1) { edges { cursor } } }');
      ok = r.errors === undefined;
    }
    assert.ok(ok, 'the slot was never freed');
    for (const sub of subs.slice(1)) sub.dispose();
  });
});

const watchRule = (duration = 600) => jitMonitor('watch', { query: 'service:rl-watched', duration });
const EVALUATE = 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id status } }';
const restTrigger = (service: string, duration = 600) => ({
  data: {
    type: 'deployment_gates_evaluation_request',
    attributes: { service, env: 'prod', configuration: { rules: [{ name: 'watch', type: 'monitor', options: { query: 'service:rl-watched', duration } }] } },
  },
});

describe('evaluations in progress per key', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-rl-'));
  let s: TestServer;
  const config = { rateLimits: limits({ inProgress: 2 }) };
  before(async () => {
    s = await startServer(config, { dir });
    const d = driver(s);
    await d.report(await d.monitor('rl-watched', ['service:rl-watched']), 'OK');
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the trigger past the cap is refused on every interface, frees up when one finishes, and the count survives a restart', async () => {
    const key = await s.createKey(['evaluations:write', 'gates:read']);
    const evaluate = (service: string) => s.gql(EVALUATE, { i: { service, env: 'prod', configuration: { rules: [watchRule()] } } }, key);
    const first = await evaluate('rl-a');
    const second = await evaluate('rl-b');
    assert.equal(first.data.evaluateGate.status, 'IN_PROGRESS');
    assert.equal(second.data.evaluateGate.status, 'IN_PROGRESS');

    const refused = await evaluate('rl-c');
    assert.equal(refused.status, 429);
    assert.equal(refused.errors?.[0]?.extensions?.code, 'RATE_LIMITED');
    assert.match(refused.errors![0]!.message, /2 evaluations in progress/);
    assert.ok(refused.errors![0]!.extensions!.retryAfter >= 1);
    const rest = await s.request('POST', '/api/v2/deployments/gates/evaluation', { body: restTrigger('rl-c'), key });
    assert.equal(rest.status, 429, rest.text);
    assertRetryAfter(rest, 60);
    assert.equal(rest.json.errors[0].title, 'Too Many Requests');
    const rerun = await s.gql('mutation($id: ID!) { rerunEvaluation(id: $id) { id } }', { id: first.data.evaluateGate.id }, key);
    assert.equal(rerun.errors?.[0]?.extensions?.code, 'RATE_LIMITED');
    // Another key is not affected by this one's evaluations.
    assert.equal((await s.gql(EVALUATE, { i: { service: 'rl-admin', env: 'prod', configuration: { rules: [watchRule(0)] } } })).errors, undefined);

    // Still refused after a restart: the count comes from the database.
    await s.stop();
    s = await startServer(config, { dir });
    assert.equal((await evaluate('rl-c')).errors?.[0]?.extensions?.code, 'RATE_LIMITED');

    const canceled = await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { status } }', { id: first.data.evaluateGate.id }, key);
    assert.equal(canceled.data.cancelEvaluation.status, 'CANCELED');
    const third = await evaluate('rl-c');
    assert.equal(third.errors, undefined, JSON.stringify(third.errors));
  });

  test('both counts read an index, never the whole table', async () => {
    s.queries.length = 0;
    await s.gql(EVALUATE, { i: { service: 'rl-plan', env: 'prod', configuration: { rules: [watchRule(0)] } } });
    const plan = (needle: string) => {
      const sql = s.queries.find((q) => q.includes('triggered_by_id') && q.includes(needle));
      assert.ok(sql, `no query with ${needle}: ${s.queries.join('\n')}`);
      const params = Array((sql.match(/\?/g) ?? []).length).fill(1);
      return s.app.deps.db.$client
        .prepare(`explain query plan ${sql}`)
        .all(...params)
        .map((r: any) => r.detail)
        .join('; ');
    };
    assert.match(plan('is null'), /USING (COVERING )?INDEX evaluations_running_by_key_idx \(triggered_by_id=\?\)/);
    assert.match(plan('order by'), /USING COVERING INDEX evaluations_triggered_by_started_idx/);
  });

  test('evaluations decided at once whose dry-run rules keep watching still hold their place', async () => {
    const key = await s.createKey(['evaluations:write', 'gates:read']);
    const dryRunOnly = (service: string) =>
      s.gql(EVALUATE, { i: { service, env: 'prod', configuration: { rules: [jitMonitor('watch', { query: 'service:rl-watched', duration: 600 }, true)] } } }, key);
    assert.equal((await dryRunOnly('rl-dry-a')).data.evaluateGate.status, 'PASS');
    assert.equal((await dryRunOnly('rl-dry-b')).data.evaluateGate.status, 'PASS');
    const refused = await dryRunOnly('rl-dry-c');
    assert.equal(refused.errors?.[0]?.extensions?.code, 'RATE_LIMITED', JSON.stringify(refused));
  });

  test('an evaluation that is decided gives its place back', async () => {
    const key = await s.createKey(['evaluations:write', 'gates:read']);
    const checkOnce = await s.gql(EVALUATE, { i: { service: 'rl-once', env: 'prod', configuration: { rules: [watchRule(0)] } } }, key);
    const id = checkOnce.data.evaluateGate.id;
    await driver(s).follow(id);
    await s.gql(EVALUATE, { i: { service: 'rl-d', env: 'prod', configuration: { rules: [watchRule()] } } }, key);
    const second = await s.gql(EVALUATE, { i: { service: 'rl-e', env: 'prod', configuration: { rules: [watchRule()] } } }, key);
    assert.equal(second.errors, undefined, JSON.stringify(second.errors));
  });
});

describe('evaluation triggers per key per minute', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ rateLimits: limits({ triggersPerMinute: 2 }) });
    const d = driver(s);
    await d.report(await d.monitor('rl-watched', ['service:rl-watched']), 'OK');
    await s.gql(CREATE_GATE, { input: { service: 'rl-hooked', env: 'prod', rules: [monitorRule('m', { query: 'service:rl-watched', duration: 600 })] } });
  });
  after(() => s.stop());

  test('the third evaluation in a minute is refused with Retry-After; an idempotent repeat and another key are not', async () => {
    const key = await s.createKey(['evaluations:write', 'gates:read']);
    const input = (service: string, idempotencyKey?: string) => ({ i: { service, env: 'prod', idempotencyKey, configuration: { rules: [watchRule(0)] } } });
    const first = await s.gql(EVALUATE, input('rl-t1', 'same-request'), key);
    assert.equal(first.errors, undefined);
    assert.equal((await s.gql(EVALUATE, input('rl-t2'), key)).errors, undefined);
    const refused = await s.gql(EVALUATE, input('rl-t3'), key);
    assert.equal(refused.status, 429);
    assert.equal(refused.errors?.[0]?.extensions?.code, 'RATE_LIMITED');
    assert.match(refused.errors![0]!.message, /2 evaluations per minute/);
    const retryAfter = refused.errors![0]!.extensions!.retryAfter;
    assert.ok(retryAfter >= 1 && retryAfter <= 60, String(retryAfter));
    const repeat = await s.gql(EVALUATE, input('rl-t1', 'same-request'), key);
    assert.equal(repeat.data?.evaluateGate.id, first.data.evaluateGate.id);
    assert.equal((await s.gql(EVALUATE, input('rl-t3'))).errors, undefined);
  });

  test('concurrent triggers of one key cannot all pass the limit: exactly 2 of 12 sent at once start', async () => {
    const key = await s.createKey(['evaluations:write', 'gates:read']);
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => s.gql(EVALUATE, { i: { service: `rl-burst${i}`, env: 'prod', configuration: { rules: [watchRule(0)] } } }, key)),
    );
    const started = answers.filter((a) => a.errors === undefined);
    const refused = answers.filter((a) => a.errors?.[0]?.extensions?.code === 'RATE_LIMITED');
    assert.equal(started.length, 2, JSON.stringify(answers.map((a) => a.errors?.[0]?.message ?? 'started')));
    assert.equal(refused.length, 10);
    const stored = await s.sql("select count(*) as n from evaluations where service like 'rl-burst%'");
    assert.equal(Number(stored[0]!.n), 2, 'refused triggers leave no evaluation behind');
  });

  test('REST and the Flagger hook answer 429 with Retry-After; polling an evaluation the hook started still works', async () => {
    const key = await s.createKey(['evaluations:write', 'gates:read']);
    const hook = async (run: string) =>
      s.request('POST', `/hooks/flagger?key=${key}`, {
        key: null,
        body: { name: 'podinfo', namespace: 'test', phase: 'Progressing', checksum: run, metadata: { service: 'rl-hooked', env: 'prod', version: 'v2' } },
      });
    assert.equal((await hook('r1')).status, 409);
    assert.equal((await s.request('POST', '/api/v2/deployments/gates/evaluation', { body: restTrigger('rl-rest', 0), key })).status, 202);
    const rest = await s.request('POST', '/api/v2/deployments/gates/evaluation', { body: restTrigger('rl-rest', 0), key });
    assert.equal(rest.status, 429, rest.text);
    assertRetryAfter(rest, 60);
    assert.match(rest.json.errors[0].detail, /evaluations per minute/);
    const refused = await hook('r2');
    assert.equal(refused.status, 429, refused.text);
    assertRetryAfter(refused, 60);
    assert.equal(refused.json.errors[0].status, '429');
    assert.equal((await hook('r1')).status, 409);
  });
});

describe('failed authentications per address', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ rateLimits: limits({ authFailuresPerMinute: 3 }) });
  });
  after(() => s.stop());

  test('after 3 bad keys from one address the next request is 429 before its key is checked; keys seen working still pass', async () => {
    const unused = await s.createKey(['gates:read']);
    const query = { query: '{ gates(first: 1) { edges { cursor } } }' };
    for (let i = 0; i < 3; i++) assert.equal((await s.request('POST', '/graphql', { body: query, key: `tgk_guess${i}` })).status, 401);
    const refused = await s.request('POST', '/graphql', { body: query, key: 'tgk_guess3' });
    assert.equal(refused.status, 429, refused.text);
    assertRetryAfter(refused, 60);
    assert.equal(refused.json.errors[0].extensions.code, 'RATE_LIMITED');
    assert.match(refused.json.errors[0].message, /failed authentications/);
    const rest = await s.request('GET', '/api/v2/deployment_gates', { key: 'tgk_guess4' });
    assert.equal(rest.status, 429);
    assert.equal(rest.json.errors[0].title, 'Too Many Requests');
    const otlp = await s.request('POST', '/v1/traces', { body: ingestBody, key: 'tgk_guess5' });
    assert.equal(otlp.status, 429);
    assert.equal(otlp.json.code, 429);
    // Even a valid key is not looked at from this address, unless it has worked recently.
    assert.equal((await s.request('POST', '/graphql', { body: query, key: unused })).status, 429);
    assert.equal((await s.request('POST', '/graphql', { body: query, key: ADMIN_KEY })).status, 200);
    const ws = await connect(s, 'tgk_guess8');
    assert.ok('code' in ws && ws.code === 4429 && /failed authentications/.test(ws.reason), JSON.stringify(ws));
  });
});

describe('configuration', () => {
  test('every limit is validated at start and named when wrong; 0 turns one off', () => {
    assert.deepEqual(loadConfig({}).rateLimits, {
      requestsPerSecond: 100,
      ingestPerSecond: 500,
      triggersPerMinute: 120,
      inProgress: 500,
      sockets: 200,
      operations: 2000,
      authFailuresPerMinute: 30,
    });
    assert.equal(loadConfig({ TOLLGATE_RATE_LIMIT_SOCKETS: '0' }).rateLimits.sockets, 0);
    for (const name of [
      'TOLLGATE_RATE_LIMIT_REQUESTS_PER_SECOND',
      'TOLLGATE_RATE_LIMIT_IN_PROGRESS',
      'TOLLGATE_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE',
      'TOLLGATE_TRUSTED_PROXY_HOPS',
    ]) {
      assert.throws(
        () => loadConfig({ [name]: '-1' }),
        (err: ConfigError) => err instanceof ConfigError && err.problems.some((p) => p.startsWith(`${name} ("-1")`)),
      );
      assert.throws(
        () => loadConfig({ [name]: 'lots' }),
        (err: ConfigError) => err.problems.some((p) => p.startsWith(name) && /number/.test(p)),
      );
    }
  });

  test('the client address: IPv6 counted per /64, forwarded addresses only from trusted proxies', () => {
    const req = (remoteAddress: string, forwarded?: string) => ({ socket: { remoteAddress }, headers: forwarded ? { 'x-forwarded-for': forwarded } : {} }) as any;
    assert.equal(clientAddress(req('10.1.2.3'), 0), '10.1.2.3');
    assert.equal(clientAddress(req('::ffff:10.1.2.3'), 0), '10.1.2.3');
    assert.equal(clientAddress(req('2001:db8:1:2:aaaa::1'), 0), '2001:db8:1:2::/64');
    assert.equal(clientAddress(req('2001:db8:1:2:bbbb:cccc:dddd:eeee'), 0), '2001:db8:1:2::/64');
    assert.equal(clientAddress(req('2001:db8::1'), 0), '2001:db8:0:0::/64');
    assert.equal(clientAddress(req('10.0.0.9', '1.1.1.1, 203.0.113.7'), 0), '10.0.0.9', 'not trusted: the header is ignored');
    assert.equal(clientAddress(req('10.0.0.9', '1.1.1.1, 203.0.113.7'), 1), '203.0.113.7', 'the address the proxy saw, not what the client claims');
    assert.equal(clientAddress(req('10.0.0.9', '203.0.113.7, 10.0.0.8'), 2), '203.0.113.7');
    assert.equal(clientAddress(req('10.0.0.9'), 1), '10.0.0.9');
  });
});
