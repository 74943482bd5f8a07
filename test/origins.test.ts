import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ConfigError, loadConfig } from '../src/config.ts';
import { ADMIN_KEY, startServer, type TestServer } from './helpers.ts';

const UI = 'https://ui.example';
const EVIL = 'https://evil.example';

/** A raw HTTP exchange with the headers a browser would send; returns status and headers. */
function call(s: TestServer, method: string, path: string, headers: Record<string, string>, body?: string) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }>((resolve, reject) => {
    const req = request(`${s.url}${path}`, { method, headers, agent: false });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const PATHS = [
  { path: '/graphql', method: 'POST', body: JSON.stringify({ query: '{ gates(first: 1) { edges { cursor } } }' }) },
  { path: '/api/v2/deployment_gates', method: 'GET' },
  { path: '/hooks/alertmanager', method: 'POST', body: JSON.stringify({ version: '4', status: 'firing', alerts: [] }) },
  { path: '/v1/traces', method: 'POST', body: JSON.stringify({ resourceSpans: [] }) },
];

const preflight = (s: TestServer, path: string, origin: string, method = 'POST') =>
  call(s, 'OPTIONS', path, { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization, content-type' });

describe('CORS: one allow-list for every HTTP path', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ allowedOrigins: [UI] });
  });
  after(() => s.stop());

  for (const { path, method, body } of PATHS) {
    test(`${path}: a listed origin is reflected without credentials; others get no CORS headers`, async () => {
      const ok = await preflight(s, path, UI, method);
      assert.equal(ok.status, 204, ok.text);
      assert.equal(ok.headers['access-control-allow-origin'], UI);
      assert.match(String(ok.headers['access-control-allow-headers']), /authorization/i);
      assert.match(String(ok.headers['access-control-allow-methods']), new RegExp(method));
      assert.equal(ok.headers['access-control-allow-credentials'], undefined);

      const refused = await preflight(s, path, EVIL, method);
      assert.equal(refused.headers['access-control-allow-origin'], undefined);
      assert.equal(refused.headers['access-control-allow-credentials'], undefined);
      assert.notEqual(refused.status, 204);

      const headers = { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` };
      const actual = await call(s, method, path, { ...headers, origin: UI }, body);
      assert.ok(actual.status < 300, `${actual.status} ${actual.text}`);
      assert.equal(actual.headers['access-control-allow-origin'], UI);
      assert.equal(actual.headers['access-control-allow-credentials'], undefined);
      assert.match(String(actual.headers.vary), /origin/i);

      const foreign = await call(s, method, path, { ...headers, origin: EVIL }, body);
      assert.equal(foreign.headers['access-control-allow-origin'], undefined);
      assert.equal(foreign.headers['access-control-allow-credentials'], undefined);
    });
  }
});

describe('CORS when no allow-list is set: same origin only', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('a foreign origin gets no CORS headers and no credentials flag', async () => {
    const r = await call(s, 'POST', '/graphql', { origin: EVIL, 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` }, PATHS[0]!.body);
    assert.equal(r.status, 200);
    assert.equal(r.headers['access-control-allow-origin'], undefined);
    assert.equal(r.headers['access-control-allow-credentials'], undefined);
    const pre = await preflight(s, '/graphql', EVIL);
    assert.equal(pre.headers['access-control-allow-origin'], undefined);
  });

  test("a browser WebSocket from a foreign origin is closed with 4403 and a reason; the server's own origin and non-browsers are let in", async () => {
    const foreign = await openWs(s, EVIL);
    assert.deepEqual(foreign, { code: 4403, reason: 'Forbidden: origin not allowed' });
    assert.equal(await openWs(s, s.url), 'acknowledged');
    assert.equal(await openWs(s), 'acknowledged');
  });
});

describe('WebSocket origins follow the same allow-list', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ allowedOrigins: [UI] });
  });
  after(() => s.stop());

  test('a refused origin is told with 4403 "origin not allowed", not a bare HTTP 403 (1006 in browsers)', async () => {
    assert.deepEqual(await openWs(s, EVIL), { code: 4403, reason: 'Forbidden: origin not allowed' });
    assert.equal(await openWs(s, UI), 'acknowledged');
  });
});

/** Opens a graphql-transport-ws socket (with this Origin) and says how it went. */
function openWs(s: TestServer, origin?: string): Promise<'acknowledged' | { code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(s.wsUrl, 'graphql-transport-ws', { headers: origin ? { origin } : {} });
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
    ws.once('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } })));
    ws.on('message', (data) => {
      if (JSON.parse(String(data)).type === 'connection_ack') {
        ws.close();
        resolve('acknowledged');
      }
    });
    ws.once('close', (code, reason) => resolve({ code, reason: String(reason) }));
  });
}

describe('TOLLGATE_ALLOWED_ORIGINS', () => {
  test('origins are normalised; a path or a non-http scheme is refused, naming the variable', () => {
    assert.deepEqual(loadConfig({ TOLLGATE_ALLOWED_ORIGINS: 'https://UI.example:443, http://localhost:3000/' }).allowedOrigins, ['https://ui.example', 'http://localhost:3000']);
    assert.deepEqual(loadConfig({ TOLLGATE_ALLOWED_ORIGINS: '*' }).allowedOrigins, ['*']);
    assert.equal(loadConfig({}).allowedOrigins, null);
    for (const bad of ['https://ui.example/app', 'ftp://ui.example', 'ui.example']) {
      assert.throws(
        () => loadConfig({ TOLLGATE_ALLOWED_ORIGINS: bad }),
        (err: unknown) => err instanceof ConfigError && /TOLLGATE_ALLOWED_ORIGINS/.test(err.message),
        bad,
      );
    }
  });

  test('TOLLGATE_WS_ALLOWED_ORIGINS is a deprecated alias: used alone, refused when it disagrees', () => {
    assert.deepEqual(loadConfig({ TOLLGATE_WS_ALLOWED_ORIGINS: UI }).allowedOrigins, [UI]);
    assert.deepEqual(loadConfig({ TOLLGATE_WS_ALLOWED_ORIGINS: UI, TOLLGATE_ALLOWED_ORIGINS: `${UI}/` }).allowedOrigins, [UI]);
    assert.throws(
      () => loadConfig({ TOLLGATE_WS_ALLOWED_ORIGINS: EVIL, TOLLGATE_ALLOWED_ORIGINS: UI }),
      (err: unknown) => err instanceof ConfigError && /TOLLGATE_WS_ALLOWED_ORIGINS.*deprecated.*TOLLGATE_ALLOWED_ORIGINS/.test(err.message),
    );
  });
});
