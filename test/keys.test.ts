import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDb } from '../src/db/client.ts';
import { createAuthenticator, ensureBootstrapKey, revokeApiKey } from '../src/domain/apiKeys.ts';
import { createEvents } from '../src/domain/events.ts';
import { createKeyWatch, type KeyEnd } from '../src/domain/keyWatch.ts';
import { type Principal, SYSTEM } from '../src/domain/principal.ts';
import { CREATE_GATE, sleep, startServer, subscribeLive, type TestServer, wsOnce } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.stop());

const CREATE_KEY = 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret key { id name envs scopes expiresAt } } }';

async function newKey(input: Record<string, unknown>, by?: string) {
  const r = await s.gql(CREATE_KEY, { i: input }, by);
  if (!r.data) throw new Error(JSON.stringify(r.errors));
  return { secret: r.data.createApiKey.secret as string, id: r.data.createApiKey.key.id as string };
}

interface SseEvent {
  event: string;
  data: any;
}

/**
 * A GraphQL subscription over SSE (yoga's distinct-connection mode), read event by event.
 * `next()` resolves null once the server ended the stream.
 */
async function sse(key: string, query: string, variables?: Record<string, unknown>) {
  const controller = new AbortController();
  const res = await fetch(s.graphqlUrl, {
    method: 'POST',
    signal: controller.signal,
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let ended = false;
  return {
    async next(timeoutMs = 10_000): Promise<SseEvent | null> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const cut = buffer.indexOf('\n\n');
        if (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          if (!event) continue; // a keep-alive comment
          const data = /^data: (.*)$/m.exec(block)?.[1];
          return { event, data: data ? JSON.parse(data) : undefined };
        }
        if (ended) return null;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no SSE event within ${timeoutMs} ms`);
        let timer: NodeJS.Timeout | undefined;
        const chunk = await Promise.race([
          reader.read(),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no SSE event within ${timeoutMs} ms`)), left))),
        ]).finally(() => clearTimeout(timer));
        if (chunk.done) ended = true;
        else buffer += decoder.decode(chunk.value, { stream: true });
      }
    },
    /** Events until the stream ends; throws when it has not ended within the timeout. */
    async rest(timeoutMs = 10_000): Promise<SseEvent[]> {
      const events: SseEvent[] = [];
      for (let e = await this.next(timeoutMs); e; e = await this.next(timeoutMs)) events.push(e);
      return events;
    },
    close: () => controller.abort(),
  };
}

const GATE_EVENTS = 'subscription($f: GateFilter) { gateEvents(filter: $f) { kind gate { service } } }';

/** An SSE gateEvents stream that is known to be live: it has delivered one event. */
async function liveSse(key: string, service: string) {
  const stream = await sse(key, GATE_EVENTS, { f: { service } });
  // Keep creating gates until one arrives: the stream may attach after the first is published.
  for (let i = 0; ; i++) {
    await s.gql(CREATE_GATE, { input: { service, env: `warmup-${i}` } });
    const first = await stream.next(i < 20 ? 500 : 10_000).catch(() => null);
    if (first) {
      assert.equal(first.event, 'next');
      assert.equal(first.data.data.gateEvents.gate.service, service);
      return stream;
    }
  }
}

/** The final error a stream ended with, whatever the transport framed it in. */
function endingError(events: SseEvent[]) {
  const withErrors = events.filter((e) => e.event === 'next' && e.data?.errors);
  return withErrors.at(-1)?.data.errors[0];
}

describe('revocation and expiry end every open stream', () => {
  test('SSE: a revoked key loses its stream at once, told why', async () => {
    const key = await newKey({ name: 'sse-revoked', scopes: ['GATES_READ'] });
    const stream = await liveSse(key.secret, 'sse-revoked');
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id });
    await s.gql(CREATE_GATE, { input: { service: 'sse-revoked', env: 'after-revocation' } });
    // Without the fix the stream stays open and this times out.
    const events = await stream.rest(5_000);
    const error = endingError(events);
    assert.equal(error?.extensions?.code, 'UNAUTHENTICATED', JSON.stringify(events));
    assert.match(error.message, /"sse-revoked" was revoked/);
    // Nothing published after the revocation reaches it.
    assert.ok(
      events.every((e) => !e.data?.data),
      JSON.stringify(events),
    );
    stream.close();
  });

  test('a revocation made by another process (tollgate keys revoke) ends the streams too', async () => {
    const key = await newKey({ name: 'cli-revoked', scopes: ['GATES_READ'] });
    const stream = await liveSse(key.secret, 'cli-revoked');
    const closed = new Promise<{ code: number; reason: string }>((resolve) => {
      const client = s.ws(key.secret, { on: { closed: (e: any) => resolve({ code: e.code, reason: e.reason }) } });
      void subscribeLive(s, client, GATE_EVENTS, { f: { service: 'cli-revoked' } });
    });
    await sleep(300);
    // Another process shares the database file but not this server's event bus.
    await revokeApiKey({ ...s.app.deps, events: createEvents() }, SYSTEM, key.id);
    const error = endingError(await stream.rest(10_000));
    assert.equal(error?.extensions?.code, 'UNAUTHENTICATED');
    assert.match(error.message, /"cli-revoked" was revoked/);
    const ws = await Promise.race([closed, sleep(10_000).then(() => null)]);
    assert.equal(ws?.code, 4403);
  });

  test('an expiring key loses its WebSocket and its SSE stream, and starts nothing afterwards', async () => {
    const expiresAt = new Date(Date.now() + 4_000);
    const key = await newKey({ name: 'short-lived', scopes: ['GATES_READ'], expiresAt: expiresAt.toISOString() });
    const closed = new Promise<{ code: number; reason: string }>((resolve) => {
      const client = s.ws(key.secret, { on: { closed: (e: any) => resolve({ code: e.code, reason: e.reason }) } });
      void subscribeLive(s, client, GATE_EVENTS, { f: { service: 'short-lived' } });
    });
    const stream = await liveSse(key.secret, 'short-lived');
    // Without the fix neither ends: the socket stays open and the stream keeps delivering.
    const events = await stream.rest(10_000);
    const error = endingError(events);
    assert.equal(error?.extensions?.code, 'UNAUTHENTICATED', JSON.stringify(events));
    assert.match(error.message, /"short-lived" has expired/);
    const ws = await Promise.race([closed, sleep(10_000).then(() => null)]);
    assert.ok(ws, 'the WebSocket was not closed at expiry');
    assert.equal(ws.code, 4403);
    assert.match(ws.reason, /"short-lived" has expired/);
    assert.ok(Date.now() >= expiresAt.getTime());

    // New operations: refused on every transport.
    const http = await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, key.secret);
    assert.equal(http.status, 401);
    const again = await new Promise<{ code: number; reason: string }>((resolve) => {
      const client = s.ws(key.secret, { on: { closed: (e: any) => resolve({ code: e.code, reason: e.reason }) } });
      client.subscribe({ query: '{ gates(first: 1) { edges { cursor } } }' }, { next() {}, error() {}, complete() {} });
    });
    assert.equal(again.code, 4403);
    assert.match(again.reason, /has expired/);
  });

  test("a key expiring beyond setTimeout's range keeps its streams", async () => {
    // 2^31 ms is about 24.8 days; a naive timer fires at once for anything later.
    const key = await newKey({ name: 'long-lived', scopes: ['GATES_READ'], expiresAt: new Date(Date.now() + 40 * 86_400_000).toISOString() });
    const client = s.ws(key.secret);
    const sub = await subscribeLive(s, client, GATE_EVENTS, { f: { service: 'long-lived' } });
    await sleep(200);
    await s.gql(CREATE_GATE, { input: { service: 'long-lived', env: 'prod' } });
    assert.deepEqual((await sub.next()).data, { gateEvents: { kind: 'CREATED', gate: { service: 'long-lived' } } });
    const ok = await wsOnce(client, '{ gates(first: 1) { edges { cursor } } }');
    assert.equal(ok.errors, undefined);
    sub.dispose();
  });
});

describe('no key creates, sees or revokes keys beyond its own reach', () => {
  let staging: { secret: string; id: string };
  before(async () => {
    staging = await newKey({ name: 'staging-admin', scopes: ['ADMIN'], envs: ['staging'] });
  });

  test('an admin limited to staging cannot create an unlimited key or one for prod', async () => {
    for (const envs of [undefined, ['prod'], ['staging', 'prod']]) {
      const r = await s.gql(CREATE_KEY, { i: { name: 'escalate', scopes: ['ADMIN'], envs } }, staging.secret);
      assert.equal(r.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(r));
      assert.equal(r.errors![0]!.extensions!.field, 'input.envs');
      assert.match(r.errors![0]!.message, /^input\.envs: .*limited to env staging/);
      assert.equal(r.data, null);
    }
    const ok = await s.gql(CREATE_KEY, { i: { name: 'narrower', scopes: ['ADMIN', 'GATES_WRITE'], envs: ['staging'] } }, staging.secret);
    assert.equal(ok.errors, undefined);
    assert.deepEqual(ok.data.createApiKey.key.envs, ['staging']);
  });

  test('an expiring admin cannot create a key that outlives it', async () => {
    const until = new Date(Date.now() + 3_600_000);
    const expiring = await newKey({ name: 'expiring-admin', scopes: ['ADMIN'], expiresAt: until.toISOString() });
    for (const expiresAt of [undefined, new Date(until.getTime() + 1000).toISOString()]) {
      const r = await s.gql(CREATE_KEY, { i: { name: 'outlive', scopes: ['INGEST'], expiresAt } }, expiring.secret);
      assert.equal(r.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(r));
      assert.equal(r.errors![0]!.extensions!.field, 'input.expiresAt');
    }
    const ok = await s.gql(CREATE_KEY, { i: { name: 'within', scopes: ['INGEST'], expiresAt: until.toISOString() } }, expiring.secret);
    assert.equal(ok.errors, undefined);
  });

  test("apiKeys lists only keys inside the actor's environments; others revoke as not found", async () => {
    const prod = await newKey({ name: 'prod-only', scopes: ['GATES_READ'], envs: ['prod'] });
    const both = await newKey({ name: 'staging-and-prod', scopes: ['GATES_READ'], envs: ['staging', 'prod'] });
    const unlimited = await newKey({ name: 'everywhere', scopes: ['GATES_READ'] });
    const inside = await newKey({ name: 'staging-reader', scopes: ['GATES_READ'], envs: ['staging'] });

    const list = await s.gql('{ apiKeys { id name envs } }', undefined, staging.secret);
    assert.equal(list.errors, undefined);
    const ids = list.data.apiKeys.map((k: any) => k.id);
    assert.ok(ids.includes(inside.id) && ids.includes(staging.id));
    for (const outside of [prod, both, unlimited]) assert.ok(!ids.includes(outside.id), `${outside.id} must not be listed`);
    assert.ok(
      list.data.apiKeys.every((k: any) => k.envs?.every((e: string) => e === 'staging')),
      JSON.stringify(list.data),
    );

    const revoke = 'mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }';
    const missing = await s.gql(revoke, { id: '00000000-0000-4000-8000-000000000000' }, staging.secret);
    for (const outside of [prod, both, unlimited]) {
      const r = await s.gql(revoke, { id: outside.id }, staging.secret);
      assert.equal(r.errors?.[0]?.extensions?.code, 'NOT_FOUND', JSON.stringify(r));
      // Indistinguishable from an id that does not exist.
      assert.equal(r.errors![0]!.message.replace(outside.id, '<id>'), missing.errors![0]!.message.replace('00000000-0000-4000-8000-000000000000', '<id>'));
      assert.equal((await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, outside.secret)).status, 200, 'still valid');
    }
    const done = await s.gql(revoke, { id: inside.id }, staging.secret);
    assert.ok(done.data.revokeApiKey.revokedAt);

    // The unlimited admin still sees and may revoke all of them.
    const all = (await s.gql('{ apiKeys { id } }')).data.apiKeys.map((k: any) => k.id);
    for (const k of [prod, both, unlimited, inside]) assert.ok(all.includes(k.id));
  });
});

describe('the key watch leaves nothing behind', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-keywatch-'));
  const db = openDb(join(dir, 'keys.db'));
  after(() => {
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const principal = (id: string, expiresAt: Date | null = null): Principal => ({ id, name: id, scopes: new Set(['gates:read']), envs: null, expiresAt });

  test('each stream ends once, on revocation or expiry; unwatching drops the key, its timer and the poll', async () => {
    const events = createEvents();
    const watch = createKeyWatch(db, events);
    const ends: Array<[string, KeyEnd['reason']]> = [];
    const a1 = watch.watch(principal('a'), (e) => ends.push(['a1', e.reason]));
    watch.watch(principal('a'), (e) => ends.push(['a2', e.reason]));
    watch.watch(principal('b', new Date(Date.now() + 50)), (e) => ends.push(['b', e.reason]));
    const c = watch.watch(principal('c', new Date(Date.now() + 60_000)), () => ends.push(['c', 'expired']));
    assert.equal(watch.size(), 3);
    a1();
    events.publish('apiKey.revoked', { id: 'a' });
    events.publish('apiKey.revoked', { id: 'a' });
    await sleep(300);
    assert.deepEqual(ends, [
      ['a2', 'revoked'],
      ['b', 'expired'],
    ]);
    assert.equal(watch.size(), 1);
    c();
    assert.equal(watch.size(), 0);
    watch.close();
  });

  test("an expiry beyond setTimeout's 2^31 ms does not fire early", async () => {
    const watch = createKeyWatch(db, createEvents());
    let ended = false;
    const stop = watch.watch(principal('far', new Date(Date.now() + 30 * 86_400_000)), () => (ended = true));
    await sleep(100);
    assert.equal(ended, false);
    stop();
    watch.close();
  });
});

describe('authentication merges concurrent lookups of one secret', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-auth-burst-'));
  const statements: string[] = [];
  const db = openDb(join(dir, 'keys.db'), { onQuery: (sql) => statements.push(sql) });
  after(() => {
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const lookups = (from: number) => statements.slice(from).filter((q) => /^select .* from "api_keys"/i.test(q)).length;

  test('50 concurrent authentications of one key (no cache, as on PostgreSQL) cost one lookup; the next one looks again', async () => {
    const secret = 'burst-key-0123456789abcdefghijklmn';
    await ensureBootstrapKey(db, new Date(), secret);
    const events = createEvents();
    const authenticate = createAuthenticator(db, () => new Date(), events, { cacheMs: 0 });
    let from = statements.length;
    const results = await Promise.all(Array.from({ length: 50 }, () => authenticate(secret)));
    assert.ok(results.every((r) => r.ok && r.principal.name === 'bootstrap'));
    assert.equal(lookups(from), 1, 'one lookup for the burst');
    // Settled: nothing is held past the lookup (no cache here), so a later request asks again.
    from = statements.length;
    assert.equal((await authenticate(secret)).ok, true);
    assert.equal(lookups(from), 1);
    // Concurrent lookups of different secrets are not merged, and each gets its own answer.
    from = statements.length;
    const [good, bad] = await Promise.all([authenticate(secret), authenticate('not-a-key-0123456789abcdefghijklmn')]);
    assert.equal(good.ok, true);
    assert.deepEqual(bad, { ok: false, reason: 'invalid API key' });
    assert.equal(lookups(from), 2);
    // A configuration change (a revocation) while a lookup runs: the requests after it look again.
    from = statements.length;
    const before = authenticate(secret);
    events.publish('config.changed', null);
    const afterChange = authenticate(secret);
    assert.equal((await before).ok, true);
    assert.equal((await afterChange).ok, true);
    assert.equal(lookups(from), 2);
  });

  test('an answer read before a configuration change (a revocation) arrived is not cached', async () => {
    const secret = 'cache-key-0123456789abcdefghijklmn';
    await ensureBootstrapKey(db, new Date(), secret);
    const events = createEvents();
    const authenticate = createAuthenticator(db, () => new Date(), events, { cacheMs: 60_000 });
    // The lookup has read the row; the change arrives before its answer is kept.
    const overtaken = authenticate(secret);
    events.publish('config.changed', null);
    assert.equal((await overtaken).ok, true);
    let from = statements.length;
    assert.equal((await authenticate(secret)).ok, true);
    assert.equal(lookups(from), 1, 'the overtaken answer was not kept');
    from = statements.length;
    assert.equal((await authenticate(secret)).ok, true);
    assert.equal(lookups(from), 0, 'an answer no change overtook is kept');
  });
});
