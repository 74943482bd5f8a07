import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CREATE_GATE, monitorRule, startServer, type TestServer, wsOnce } from './helpers.ts';

const INTROSPECTION = '{ __schema { queryType { name } } }';

describe('operations endpoints', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('/healthz answers without a key', async () => {
    const res = await fetch(`${s.url}/healthz`);
    assert.equal(res.status, 200);
  });

  test('/readyz is ready when the database answers and migrations are applied, 503 otherwise', async () => {
    assert.equal((await fetch(`${s.url}/readyz`)).status, 200);
    s.app.deps.db.$client.exec('delete from __drizzle_migrations');
    const res = await fetch(`${s.url}/readyz`);
    assert.equal(res.status, 503);
    assert.match(await res.text(), /0 of \d+ migrations applied/);
  });

  test('/metrics exposes GraphQL, process and WebSocket metrics in Prometheus format', async () => {
    await s.gql('{ gates(first: 1) { edges { cursor } } }');
    const client = s.ws();
    await wsOnce(client, '{ gates(first: 1) { edges { cursor } } }');
    const res = await fetch(`${s.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /graphql_envelop_request_duration/);
    assert.match(text, /graphql_yoga_http_duration/);
    assert.match(text, /tollgate_process_resident_memory_bytes/);
    assert.match(text, /tollgate_ws_connections \d+/);
  });

  test('introspection and GraphiQL are available in development', async () => {
    const r = await s.gql(INTROSPECTION);
    assert.equal(r.data.__schema.queryType.name, 'Query');
    const page = await fetch(s.graphqlUrl, { headers: { accept: 'text/html' } });
    assert.match(await page.text(), /GraphiQL|graphiql/);
  });

  test('unknown paths are 404', async () => {
    assert.equal((await fetch(`${s.url}/nope`)).status, 404);
  });
});

describe('production mode', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ mode: 'production' });
  });
  after(() => s.stop());

  test('introspection is off over HTTP and over WebSocket', async () => {
    const http = await s.gql(INTROSPECTION);
    assert.match(http.errors?.[0]?.message ?? '', /introspection/i);
    const ws = await wsOnce(s.ws(), INTROSPECTION);
    assert.match(ws.errors?.[0]?.message ?? '', /introspection/i);
    // Ordinary operations still work.
    assert.equal((await s.gql('{ gates(first: 1) { edges { cursor } } }')).errors, undefined);
  });

  test('no GraphiQL page', async () => {
    const page = await fetch(s.graphqlUrl, { headers: { accept: 'text/html' } });
    assert.doesNotMatch(await page.text(), /graphiql/i);
  });

  test('field suggestions do not leak the schema', async () => {
    const r = await s.gql('{ gatez(first: 1) { edges { cursor } } }');
    assert.doesNotMatch(r.errors?.[0]?.message ?? '', /Did you mean/);
  });
});

describe('query limits apply to both transports', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  // Rule.gate makes the schema cyclic, so depth can grow without bound.
  const nest = (levels: number) => `{ gates(first: 1) { edges { node { ${'rules { gate { '.repeat(levels)}id${' } }'.repeat(levels)} } } } }`;
  const aliases = `{ ${Array.from({ length: 30 }, (_, i) => `a${i}: gates(first: 1) { edges { cursor } }`).join(' ')} }`;
  const tokens = `{ gates(first: 1) { edges { ${'cursor '.repeat(2100)} } } }`;

  for (const transport of ['http', 'ws'] as const) {
    const run = async (query: string) => (transport === 'http' ? s.gql(query) : await wsOnce(s.ws(), query));
    test(`${transport}: too many aliases, too many tokens are refused`, async () => {
      const a = await run(aliases);
      assert.match(a.errors?.[0]?.message ?? '', /aliases/i);
      const t = await run(tokens);
      assert.match(t.errors?.[0]?.message ?? '', /token/i);
    });

    test(`${transport}: a query deeper than the limit is refused`, async () => {
      assert.equal((await run(nest(3))).errors, undefined);
      const r = await run(nest(6));
      assert.match(r.errors?.[0]?.message ?? '', /depth/i, JSON.stringify(r));
    });
  }
});

describe('response cache', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ responseCacheTtlMs: 60_000 });
  });
  after(() => s.stop());

  const LIST = '{ gates(first: 100, filter: { service: "cached" }) { edges { node { env dryRun rules { name } } } } }';

  test('a repeated read is served from the cache without touching the gates table', async () => {
    await s.gql(CREATE_GATE, { input: { service: 'cached', env: 'prod', rules: [monitorRule('a')] } });
    await s.gql(LIST);
    s.queries.length = 0;
    const again = await s.gql(LIST);
    assert.equal(again.data.gates.edges.length, 1);
    assert.ok(!s.queries.some((q) => /from "gates"/.test(q)), s.queries.join('\n'));
  });

  test('every write is visible to the next read at once', async () => {
    const before = await s.gql(LIST);
    const id = (await s.gql('{ gateByKey(service: "cached", env: "prod") { id rules { id } } }')).data.gateByKey;
    await s.gql('mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }', { id: id.id });
    const afterUpdate = await s.gql(LIST);
    assert.notDeepEqual(afterUpdate.data, before.data);
    assert.equal(afterUpdate.data.gates.edges[0].node.dryRun, true);
    await s.gql('mutation($id: ID!) { deleteRule(id: $id) }', { id: id.rules[0].id });
    assert.deepEqual((await s.gql(LIST)).data.gates.edges[0].node.rules, []);
    await s.gql(CREATE_GATE, { input: { service: 'cached', env: 'staging' } });
    assert.equal((await s.gql(LIST)).data.gates.edges.length, 2);
  });

  test('entries are per API key: an env-limited key never sees what another key cached', async () => {
    const staging = await s.createKey(['gates:read'], ['staging']);
    await s.gql(LIST); // cached for the admin key
    const limited = await s.gql(LIST, undefined, staging);
    assert.deepEqual(
      limited.data.gates.edges.map((e: any) => e.node.env),
      ['staging'],
    );
  });

  test('a revoked key is refused even for a read that is cached for it', async () => {
    const created = await s.gql('mutation { createApiKey(input: { name: "soon-revoked", scopes: [GATES_READ] }) { secret key { id } } }');
    const { secret, key } = created.data.createApiKey;
    assert.equal((await s.gql(LIST, undefined, secret)).status, 200);
    assert.equal((await s.gql(LIST, undefined, secret)).status, 200); // now cached
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id });
    assert.equal((await s.gql(LIST, undefined, secret)).status, 401);
  });
});

test('a cached empty list is not served after the first gate is created', async () => {
  const s = await startServer({ responseCacheTtlMs: 60_000 });
  try {
    const q = '{ gates(first: 10, filter: { service: "first-one" }) { edges { node { id } } } }';
    assert.equal((await s.gql(q)).data.gates.edges.length, 0);
    assert.equal((await s.gql(q)).data.gates.edges.length, 0); // cached
    await s.gql(CREATE_GATE, { input: { service: 'first-one', env: 'prod' } });
    assert.equal((await s.gql(q)).data.gates.edges.length, 1);
  } finally {
    await s.stop();
  }
});
