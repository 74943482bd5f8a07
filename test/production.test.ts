import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer, wsOnce } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer({ mode: 'production' });
});
after(() => s.stop());

/** Anything that tells a caller about the schema or how its document was read. */
const SCHEMA_TALK = /Syntax Error|Expected|Cannot query|Unknown|Did you mean|enum|argument|type "/i;

describe('production: authenticate before parsing', () => {
  const broken = [
    '{ gates(first: ',
    '{ gatez { id } }',
    'mutation { createApiKey(input: { name: "x", scopes: [ADMN] }) { secret } }',
    'query($f: GateFiltr) { gates(filter: $f) { edges { cursor } } }',
  ];
  for (const key of [null, 'tgk_not-a-real-key']) {
    test(`${key ? 'a bad key' : 'no key'}: 401 and nothing about the document`, async () => {
      for (const query of broken) {
        const r = await s.request('POST', '/graphql', { body: { query }, key });
        assert.equal(r.status, 401, `${query}: ${r.text}`);
        assert.doesNotMatch(r.text, SCHEMA_TALK, `${query}: ${r.text}`);
        assert.equal(r.json?.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED', r.text);
        assert.match(r.json.errors[0].message, key ? /invalid API key/ : /missing API key/);
      }
      // A body that is not even JSON, and GET: the same answer.
      const garbage = await fetch(s.graphqlUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": "{ gat' });
      assert.equal(garbage.status, 401);
      const get = await fetch(`${s.graphqlUrl}?query=${encodeURIComponent('{ gatez }')}`);
      assert.equal(get.status, 401);
      assert.doesNotMatch(await get.text(), SCHEMA_TALK);
    });
  }

  test('SSE without a key: 401 before the document is read', async () => {
    const r = await fetch(s.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: 'subscription { gateEventz { kind } }' }),
    });
    assert.equal(r.status, 401);
    assert.doesNotMatch(await r.text(), SCHEMA_TALK);
  });
});

describe('production: no suggestions anywhere', () => {
  // Each misspelling must still be named (the caller learns what is wrong), never the right name.
  const cases: Array<{ wrong: string; query: string; variables?: Record<string, unknown> }> = [
    { wrong: 'gatez', query: '{ gatez(first: 1) { edges { cursor } } }' },
    { wrong: 'ADMN', query: 'mutation { createApiKey(input: { name: "x", scopes: [ADMN] }) { secret } }' },
    { wrong: 'ADMN', query: 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', variables: { i: { name: 'x', scopes: ['ADMN'] } } },
    { wrong: 'nam', query: 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', variables: { i: { name: 'x', nam: 'y', scopes: ['INGEST'] } } },
    { wrong: 'firts', query: '{ gates(firts: 1) { edges { cursor } } }' },
    { wrong: 'GateFiltr', query: 'query($f: GateFiltr) { gates(filter: $f) { edges { cursor } } }' },
    { wrong: 'servic', query: '{ gates(first: 1, filter: { servic: "x" }) { edges { cursor } } }' },
  ];
  for (const transport of ['http', 'ws'] as const) {
    test(`${transport}: misspelt names are refused without naming the right ones`, async () => {
      for (const c of cases) {
        const r = transport === 'http' ? await s.gql(c.query, c.variables) : await wsOnce(s.ws(), c.query, c.variables);
        assert.ok(r.errors?.length, `${c.wrong}: ${JSON.stringify(r)}`);
        const messages = r.errors!.map((e) => e.message).join(' | ');
        assert.ok(messages.includes(c.wrong), `${c.wrong}: ${messages}`);
        assert.doesNotMatch(messages, /Did you mean|\?$/, `${c.wrong}: ${messages}`);
      }
    });
  }
});

describe('development keeps the suggestions', () => {
  test('a misspelt enum value is answered with the right one', async () => {
    const dev = await startServer({ mode: 'development' });
    try {
      const r = await dev.gql('mutation { createApiKey(input: { name: "x", scopes: [ADMN] }) { secret } }');
      assert.match(r.errors?.[0]?.message ?? '', /Did you mean the enum value "ADMIN"\?/);
    } finally {
      await dev.stop();
    }
  });
});
