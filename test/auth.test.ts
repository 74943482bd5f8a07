import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { SCOPES, type Scope } from '../src/domain/principal.ts';
import { CREATE_GATE, monitorRule, startServer, subscribeLive, subscribeQueue, type TestServer, wsOnce } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.stop());

let seq = 0;
/** A fresh gate with one rule, made by the admin, for an operation to act on. */
async function fixture(env = 'prod') {
  const r = await s.gql(CREATE_GATE, { input: { service: `auth-${++seq}`, env, rules: [monitorRule('r1')] } });
  const gate = r.data.createGate;
  const key = await s.gql('mutation { createApiKey(input: { name: "victim", scopes: [GATES_READ] }) { key { id } } }');
  const tag = `auth:fixture-${seq}`;
  const monitor = await s.gql('mutation($t: String!) { createMonitor(input: { name: "m", type: EXTERNAL, tags: [$t] }) { id } }', { t: tag });
  // A long window on a matching monitor: still running when the operation under test acts on it.
  const evaluation = await s.gql(
    'mutation($s: String!, $q: String!) { evaluateGate(input: { service: $s, env: "prod", configuration: { rules: [{ name: "m", options: { monitor: { query: $q, duration: 3600 } } }] } }) { id } }',
    { s: `auth-${seq}`, q: tag },
  );
  return {
    gate,
    ruleId: gate.rules[0].id as string,
    keyId: key.data.createApiKey.key.id as string,
    monitorId: monitor.data.createMonitor.id as string,
    evaluationId: evaluation.data.evaluateGate.id as string,
  };
}

interface Operation {
  name: string;
  /** Any one of these scopes is enough. */
  needs: Scope | Scope[];
  run: (f: Awaited<ReturnType<typeof fixture>>) => { query: string; variables?: Record<string, unknown> };
}

const OPERATIONS: Operation[] = [
  { name: 'gate', needs: 'gates:read', run: (f) => ({ query: 'query($id: ID!) { gate(id: $id) { id } }', variables: { id: f.gate.id } }) },
  { name: 'gateByKey', needs: 'gates:read', run: (f) => ({ query: 'query($s: String!) { gateByKey(service: $s, env: "prod") { id } }', variables: { s: f.gate.service } }) },
  { name: 'gates', needs: 'gates:read', run: () => ({ query: '{ gates(first: 1) { edges { node { id } } } }' }) },
  { name: 'rule', needs: 'gates:read', run: (f) => ({ query: 'query($id: ID!) { rule(id: $id) { id } }', variables: { id: f.ruleId } }) },
  { name: 'createGate', needs: 'gates:write', run: () => ({ query: CREATE_GATE, variables: { input: { service: `auth-new-${++seq}`, env: 'prod' } } }) },
  { name: 'updateGate', needs: 'gates:write', run: (f) => ({ query: 'mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }', variables: { id: f.gate.id } }) },
  { name: 'deleteGate', needs: 'gates:write', run: (f) => ({ query: 'mutation($id: ID!) { deleteGate(id: $id) }', variables: { id: f.gate.id } }) },
  {
    name: 'createRule',
    needs: 'gates:write',
    run: (f) => ({ query: 'mutation($id: ID!, $i: RuleInput!) { createRule(gateId: $id, input: $i) { id } }', variables: { id: f.gate.id, i: monitorRule('r2') } }),
  },
  { name: 'updateRule', needs: 'gates:write', run: (f) => ({ query: 'mutation($id: ID!) { updateRule(id: $id, input: { dryRun: true }) { id } }', variables: { id: f.ruleId } }) },
  { name: 'deleteRule', needs: 'gates:write', run: (f) => ({ query: 'mutation($id: ID!) { deleteRule(id: $id) }', variables: { id: f.ruleId } }) },
  { name: 'evaluation', needs: ['gates:read', 'evaluations:write'], run: (f) => ({ query: 'query($id: ID!) { evaluation(id: $id) { id } }', variables: { id: f.evaluationId } }) },
  { name: 'evaluations', needs: ['gates:read', 'evaluations:write'], run: () => ({ query: '{ evaluations(first: 1) { edges { node { id } } } }' }) },
  { name: 'evaluationStats', needs: ['gates:read', 'evaluations:write'], run: () => ({ query: '{ evaluationStats { total } }' }) },
  {
    name: 'evaluateGate',
    needs: 'evaluations:write',
    run: (f) => ({ query: 'mutation($s: String!) { evaluateGate(input: { service: $s, env: "prod" }) { id } }', variables: { s: f.gate.service } }),
  },
  { name: 'cancelEvaluation', needs: 'evaluations:write', run: (f) => ({ query: 'mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', variables: { id: f.evaluationId } }) },
  { name: 'rerunEvaluation', needs: 'evaluations:write', run: (f) => ({ query: 'mutation($id: ID!) { rerunEvaluation(id: $id) { id } }', variables: { id: f.evaluationId } }) },
  { name: 'monitor', needs: ['gates:read', 'monitors:write'], run: (f) => ({ query: 'query($id: ID!) { monitor(id: $id) { id } }', variables: { id: f.monitorId } }) },
  { name: 'monitors', needs: ['gates:read', 'monitors:write'], run: () => ({ query: '{ monitors(first: 1, query: "auth:fixture") { edges { node { id } } } }' }) },
  { name: 'createMonitor', needs: 'monitors:write', run: () => ({ query: 'mutation { createMonitor(input: { name: "x", type: EXTERNAL }) { id } }' }) },
  {
    name: 'updateMonitor',
    needs: 'monitors:write',
    run: (f) => ({ query: 'mutation($id: ID!) { updateMonitor(id: $id, input: { muted: true }) { id } }', variables: { id: f.monitorId } }),
  },
  { name: 'deleteMonitor', needs: 'monitors:write', run: (f) => ({ query: 'mutation($id: ID!) { deleteMonitor(id: $id) }', variables: { id: f.monitorId } }) },
  {
    name: 'reportMonitorState',
    needs: 'monitors:write',
    run: (f) => ({ query: 'mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', variables: { id: f.monitorId } }),
  },
  { name: 'apiKeys', needs: 'admin', run: () => ({ query: '{ apiKeys { id } }' }) },
  { name: 'createApiKey', needs: 'admin', run: () => ({ query: 'mutation { createApiKey(input: { name: "k", scopes: [INGEST] }) { secret } }' }) },
  { name: 'revokeApiKey', needs: 'admin', run: (f) => ({ query: 'mutation($id: ID!) { revokeApiKey(id: $id) { id } }', variables: { id: f.keyId } }) },
];

/** What each scope grants: admin everything, gates:write also reads gates. */
const grants = (scope: Scope, needs: Scope | Scope[]) => [needs].flat().some((need) => scope === 'admin' || scope === need || (need === 'gates:read' && scope === 'gates:write'));
const scopeText = (needs: Scope | Scope[]) => [needs].flat().join(' or ');

describe('authorization matrix: every operation × every scope', () => {
  const keys = new Map<Scope, string>();
  before(async () => {
    for (const scope of SCOPES) keys.set(scope, await s.createKey([scope]));
  });

  for (const transport of ['http', 'ws'] as const) {
    for (const op of OPERATIONS) {
      test(`${transport}: ${op.name} needs ${scopeText(op.needs)}`, async () => {
        for (const scope of SCOPES) {
          const f = await fixture();
          const { query, variables } = op.run(f);
          const key = keys.get(scope)!;
          let result: { data?: any; errors?: readonly any[] | undefined };
          if (transport === 'http') {
            result = await s.gql(query, variables, key);
          } else {
            const client = s.ws(key);
            result = await wsOnce(client, query, variables);
            await client.dispose();
          }
          const codes = (result.errors ?? []).map((e) => e.extensions?.code);
          if (grants(scope, op.needs)) {
            assert.equal(result.errors, undefined, `${scope} should be allowed ${op.name}: ${JSON.stringify(result.errors)}`);
            assert.ok(result.data?.[op.name] !== undefined, `${op.name} returned data for ${scope}`);
          } else {
            assert.deepEqual(codes, ['FORBIDDEN'], `${scope} must be refused ${op.name}: ${JSON.stringify(result)}`);
            assert.match(result.errors![0].message, new RegExp(`lacks the ${scopeText(op.needs)}`), result.errors![0].message);
          }
        }
      });
    }

    test(`${transport}: gateEvents needs gates:read`, async () => {
      for (const scope of SCOPES) {
        const key = keys.get(scope)!;
        const service = `sub-${transport}-${scope}`;
        if (transport === 'ws') {
          const client = s.ws(key);
          const query = 'subscription($f: GateFilter) { gateEvents(filter: $f) { kind gate { service } } }';
          const sub = grants(scope, 'gates:read') ? await subscribeLive(s, client, query, { f: { service } }) : subscribeQueue(client, query, { f: { service } });
          if (grants(scope, 'gates:read')) {
            await s.gql(CREATE_GATE, { input: { service, env: 'prod' } });
            const ev = await sub.next();
            assert.deepEqual(ev.data, { gateEvents: { kind: 'CREATED', gate: { service } } });
          } else {
            const ev = await sub.next();
            assert.equal((ev.errors?.[0] as any)?.extensions?.code, 'FORBIDDEN', JSON.stringify(ev));
          }
          sub.dispose();
          await client.dispose();
        } else {
          const controller = new AbortController();
          const res = await fetch(`${s.graphqlUrl}`, {
            method: 'POST',
            signal: controller.signal,
            headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${key}` },
            body: JSON.stringify({ query: 'subscription($f: GateFilter) { gateEvents(filter: $f) { kind gate { service } } }', variables: { f: { service } } }),
          });
          const reader = res.body!.getReader();
          const decoder = new TextDecoder();
          const readEvent = async () => {
            let text = '';
            while (!text.includes('event: next')) {
              const { value, done } = await reader.read();
              if (done) break;
              text += decoder.decode(value);
            }
            return JSON.parse(/data: (.*)/.exec(text.slice(text.indexOf('event: next')))![1]!);
          };
          if (grants(scope, 'gates:read')) {
            await new Promise((r) => setTimeout(r, 300)); // SSE: the stream is open once headers came
            await s.gql(CREATE_GATE, { input: { service, env: 'prod' } });
            assert.deepEqual((await readEvent()).data, { gateEvents: { kind: 'CREATED', gate: { service } } });
          } else {
            assert.equal((await readEvent()).errors[0].extensions.code, 'FORBIDDEN');
          }
          controller.abort();
        }
      }
    });
  }
});

describe('authorization matrix: the other subscriptions × every scope (WebSocket)', () => {
  const SUBSCRIPTIONS: Array<{
    name: string;
    needs: Scope[];
    query: (f: Awaited<ReturnType<typeof fixture>>) => string;
    poke: (f: Awaited<ReturnType<typeof fixture>>) => Promise<unknown>;
  }> = [
    {
      name: 'evaluationUpdated',
      needs: ['gates:read', 'evaluations:write'],
      query: (f) => `subscription { evaluationUpdated(id: "${f.evaluationId}") { id } }`,
      poke: async () => {},
    },
    {
      name: 'evaluationEvents',
      needs: ['gates:read', 'evaluations:write'],
      query: (f) => `subscription { evaluationEvents(filter: { service: ["${f.gate.service}"] }) { id } }`,
      poke: (f) => s.gql('mutation($s: String!) { evaluateGate(input: { service: $s, env: "prod" }) { id } }', { s: f.gate.service }),
    },
    {
      name: 'monitorStateChanged',
      needs: ['gates:read', 'monitors:write'],
      query: (f) => `subscription { monitorStateChanged(query: "id:${f.monitorId}") { to } }`,
      poke: (f) => s.gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: WARN }) { id } }', { id: f.monitorId }),
    },
  ];
  for (const sub of SUBSCRIPTIONS) {
    test(`${sub.name} needs ${scopeText(sub.needs)}`, async () => {
      for (const scope of SCOPES) {
        const f = await fixture();
        const key = await s.createKey([scope]);
        const client = s.ws(key);
        const q = grants(scope, sub.needs) ? await subscribeLive(s, client, sub.query(f)) : subscribeQueue(client, sub.query(f));
        await sub.poke(f);
        const ev = await q.next();
        if (grants(scope, sub.needs)) assert.equal(ev.errors, undefined, `${scope}: ${JSON.stringify(ev.errors)}`);
        else assert.equal((ev.errors?.[0] as any)?.extensions?.code, 'FORBIDDEN', `${scope}: ${JSON.stringify(ev)}`);
        q.dispose();
        await client.dispose();
      }
    });
  }
});

describe('authentication', () => {
  test('HTTP without a key, with a bad key or a revoked key: 401 with a clear message', async () => {
    const none = await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, null);
    assert.equal(none.status, 401);
    assert.equal(none.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
    assert.match(none.errors![0]!.message, /missing API key/);

    const bad = await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, 'tgk_not-a-real-key');
    assert.equal(bad.status, 401);
    assert.match(bad.errors![0]!.message, /invalid API key/);

    const created = await s.gql('mutation { createApiKey(input: { name: "temp", scopes: [GATES_READ] }) { secret key { id prefix } } }');
    const { secret, key } = created.data.createApiKey;
    assert.ok(secret.startsWith(key.prefix));
    assert.equal((await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, secret)).status, 200);
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }', { id: key.id });
    const revoked = await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, secret);
    assert.equal(revoked.status, 401);
    assert.match(revoked.errors![0]!.message, /"temp" was revoked/);
  });

  test('secrets are stored hashed, never in clear', async () => {
    const secret = await s.createKey(['gates:read']);
    const rows = await s.sql('select * from api_keys');
    assert.ok(!JSON.stringify(rows).includes(secret));
    assert.ok(!JSON.stringify(rows).includes(secret.slice(12)));
  });

  test('WebSocket with a bad key is refused at connection_init; a good one connects', async () => {
    for (const key of [null, 'tgk_wrong']) {
      const closed = await new Promise<{ code: number; reason: string }>((resolve) => {
        const client = s.ws(key, { on: { closed: (e: any) => resolve({ code: e.code, reason: e.reason }) } });
        client.subscribe({ query: '{ gates(first: 1) { edges { cursor } } }' }, { next() {}, error() {}, complete() {} });
      });
      assert.equal(closed.code, 4403);
      assert.match(closed.reason, key ? /invalid API key/ : /missing API key/);
    }
    const ok = await wsOnce(s.ws(), '{ gates(first: 1) { edges { cursor } } }');
    assert.equal(ok.errors, undefined);
  });

  test('a key limited to staging cannot touch a prod gate, on either transport', async () => {
    const key = await s.createKey(['gates:write'], ['staging']);
    const prod = await fixture('prod');
    const staging = await fixture('staging');
    const update = 'mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }';

    // Another env's gate is answered as a gate that does not exist (test/leaks.test.ts has every path).
    const refused = await s.gql(update, { id: prod.gate.id }, key);
    assert.equal(refused.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    assert.equal(refused.errors![0]!.message, `gate ${prod.gate.id} does not exist`);
    assert.equal((await s.gql(update, { id: staging.gate.id }, key)).errors, undefined);

    const create = await s.gql(CREATE_GATE, { input: { service: 'limited', env: 'prod' } }, key);
    assert.equal(create.errors?.[0]?.extensions?.code, 'FORBIDDEN');
    const read = await s.gql('query($id: ID!) { gate(id: $id) { id } }', { id: prod.gate.id }, key);
    assert.deepEqual(read.data, { gate: null });

    // Lists and subscriptions only show what the key may see.
    const list = await s.gql('{ gates(first: 100) { edges { node { env } } } }', undefined, key);
    assert.ok(list.data.gates.edges.length > 0);
    assert.ok(list.data.gates.edges.every((e: any) => e.node.env === 'staging'));

    const client = s.ws(key);
    const viaWs = await wsOnce(client, update, { id: prod.gate.id });
    assert.equal((viaWs.errors?.[0] as any)?.extensions?.code, 'NOT_FOUND');
    // A fresh client: a lazy graphql-ws client that just closed cannot take a new operation.
    const sub = await subscribeLive(s, s.ws(key), 'subscription { gateEvents { gate { env service } } }');
    await s.gql(CREATE_GATE, { input: { service: 'hidden-from-staging', env: 'prod' } });
    await s.gql(CREATE_GATE, { input: { service: 'visible-to-staging', env: 'staging' } });
    const ev = await sub.next();
    assert.deepEqual(ev.data, { gateEvents: { gate: { env: 'staging', service: 'visible-to-staging' } } });
    sub.dispose();
  });

  test('WebSocket connections without a key never reach a resolver', async () => {
    // A raw socket that skips connection_init entirely is closed by graphql-ws's init timeout.
    const ws = new WebSocket(s.wsUrl, 'graphql-transport-ws');
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: '{ gates(first: 1) { edges { cursor } } }' } }));
    const code = await new Promise<number>((r) => ws.once('close', (c) => r(c)));
    assert.equal(code, 4401); // Unauthorized: subscribe before connection_init
  });
});
