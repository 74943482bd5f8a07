import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ADMIN_KEY, CREATE_GATE, monitorRule, startServer, subscribeLive, type TestServer, wsOnce } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer({ allowedOrigins: ['https://tollgate.example'], wsMaxPayload: 4096 });
});
after(() => s.stop());

/** A raw graphql-transport-ws socket, acknowledged, for tests that need to see frames. */
async function rawSocket(headers: Record<string, string> = {}) {
  const ws = new WebSocket(s.wsUrl, 'graphql-transport-ws', { headers });
  const messages: any[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (data) => {
    messages.push(JSON.parse(String(data)));
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  const next = async (type: string, id?: string) => {
    for (;;) {
      const i = messages.findIndex((m) => m.type === type && (id === undefined || m.id === id));
      if (i >= 0) return messages.splice(i, 1)[0];
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } }));
  await next('connection_ack');
  return { ws, next };
}

describe('WebSocket transport', () => {
  test('gateEvents delivers created, updated and deleted, with the rules, in order', async () => {
    const client = s.ws();
    const sub = await subscribeLive(s, client, 'subscription { gateEvents(filter: { service: "ws-events" }) { kind actor gate { id service rules { name } } } }');
    const created = await s.gql(CREATE_GATE, { input: { service: 'ws-events', env: 'prod', rules: [monitorRule('m1')] } });
    const id = created.data.createGate.id;
    await s.gql('mutation($g: ID!) { createRule(gateId: $g, input: { name: "m2", options: { monitor: { query: "a" } } }) { id } }', { g: id });
    await s.gql('mutation($id: ID!) { deleteGate(id: $id) }', { id });
    const events = [await sub.next(), await sub.next(), await sub.next()].map((e) => e.data?.gateEvents);
    assert.deepEqual(events, [
      { kind: 'CREATED', actor: 'bootstrap', gate: { id, service: 'ws-events', rules: [{ name: 'm1' }] } },
      { kind: 'UPDATED', actor: 'bootstrap', gate: { id, service: 'ws-events', rules: [{ name: 'm1' }, { name: 'm2' }] } },
      { kind: 'DELETED', actor: 'bootstrap', gate: { id, service: 'ws-events', rules: [{ name: 'm1' }, { name: 'm2' }] } },
    ]);
    sub.dispose();
  });

  test('a malformed operation gets an error and the socket stays open for the next one', async () => {
    const { ws, next } = await rawSocket();
    ws.send(JSON.stringify({ id: 'a', type: 'subscribe', payload: { query: 'subscription { gateEvents {' } }));
    const syntax = await next('error', 'a');
    assert.match(syntax.payload[0].message, /Syntax Error/);
    ws.send(JSON.stringify({ id: 'b', type: 'subscribe', payload: { query: 'subscription { noSuchField }' } }));
    const invalid = await next('error', 'b');
    assert.match(invalid.payload[0].message, /noSuchField/);
    ws.send(JSON.stringify({ id: 'c', type: 'subscribe', payload: { query: '' } }));
    assert.match((await next('error', 'c')).payload[0].message, /non-empty/);
    ws.send(JSON.stringify({ id: 'd', type: 'subscribe', payload: { query: '{ gates(first: 1) { edges { cursor } } }' } }));
    const ok = await next('next', 'd');
    assert.ok(ok.payload.data.gates);
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.close();
  });

  test('mutations work over the WebSocket too, with the same validation', async () => {
    const client = s.ws();
    const bad = await wsOnce(client, CREATE_GATE, { input: { service: 'ws-mut', env: 'prod', rules: [monitorRule('m', { duration: 99999 })] } });
    assert.equal((bad.errors?.[0] as any)?.extensions.code, 'BAD_USER_INPUT');
    assert.equal((bad.errors?.[0] as any)?.extensions.field, 'input.rules[0].options.monitor.duration');
    const good = await wsOnce(s.ws(), CREATE_GATE, { input: { service: 'ws-mut', env: 'prod' } });
    assert.equal((good.data as any).createGate.service, 'ws-mut');
  });

  test('a message over maxPayload closes that socket only (1009)', async () => {
    const { ws } = await rawSocket();
    const code = new Promise<number>((r) => ws.once('close', (c) => r(c)));
    ws.send(JSON.stringify({ id: 'x', type: 'subscribe', payload: { query: `{ gates(first: 1) { edges { cursor } } } #${'x'.repeat(5000)}` } }));
    assert.equal(await code, 1009);
    const still = await wsOnce(s.ws(), '{ gates(first: 1) { edges { cursor } } }');
    assert.equal(still.errors, undefined);
  });

  test('origins outside the allow-list are refused; listed origins and non-browser clients are let in', async () => {
    // Closed with a code and reason a browser can show, not a bare HTTP 403 (1006 to a page).
    const evil = new WebSocket(s.wsUrl, 'graphql-transport-ws', { headers: { origin: 'https://evil.example' } });
    const [code, reason] = await new Promise<[number, string]>((r) => evil.once('close', (c, why) => r([c, String(why)])));
    assert.equal(code, 4403);
    assert.equal(reason, 'Forbidden: origin not allowed');
    const allowed = await rawSocket({ origin: 'https://tollgate.example' });
    allowed.ws.close();
    const noOrigin = await rawSocket();
    noOrigin.ws.close();
  });

  test('stop() closes live sockets with 1001 and finishes quickly', async () => {
    const other = await startServer();
    const { ws } = await (async () => {
      const w = new WebSocket(other.wsUrl, 'graphql-transport-ws');
      await new Promise((r) => w.once('open', r));
      w.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${ADMIN_KEY}` } }));
      await new Promise((r) => w.once('message', r));
      w.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { gateEvents { kind } }' } }));
      return { ws: w };
    })();
    const closed = new Promise<number>((r) => ws.once('close', (c) => r(c)));
    const t0 = Date.now();
    await other.stop();
    assert.equal(await closed, 1001);
    assert.ok(Date.now() - t0 < 5000);
  });
});
