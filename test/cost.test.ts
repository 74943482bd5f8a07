// The query cost limit (src/server/queryCost.ts): what the schema documents as allowed passes,
// an absurd query is refused with QUERY_TOO_COSTLY, its cost and the limit, over HTTP and WebSocket.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { type GraphQLError, type GraphQLNamedType, type GraphQLObjectType, GraphQLSchema, getNamedType, isLeafType, isObjectType, isUnionType, parse } from 'graphql';
import { rulesOf as keptRulesOf, listGates } from '../src/domain/gates.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { schema } from '../src/graphql/index.ts';
import { queriesTakeOneOf } from '../src/server/compiledQueries.ts';
import { estimateCost, MAX_QUERY_COST } from '../src/server/queryCost.ts';
import { driver, startServer, type TestServer } from './helpers.ts';

/**
 * Every field of a type, its objects' fields and its unions' members, as a user asking for
 * "everything" would: fields needing an argument are left out, and so are types already on
 * the path (Rule.gate inside a gate).
 */
function everyField(type: GraphQLNamedType, path: string[] = [], skip: string[] = []): string {
  if (isUnionType(type))
    return `__typename ${type
      .getTypes()
      .map((t) => `... on ${t.name} { ${everyField(t, path, skip)} }`)
      .join(' ')}`;
  if (!isObjectType(type)) return '';
  const parts: string[] = [];
  for (const field of Object.values(type.getFields())) {
    if (skip.includes(`${type.name}.${field.name}`)) continue;
    if (field.args.some((a) => String(a.type).endsWith('!') && a.defaultValue === undefined)) continue;
    const named = getNamedType(field.type);
    if (isLeafType(named)) parts.push(field.name);
    else if (!path.includes(named.name)) parts.push(`${field.name} { ${everyField(named, [...path, type.name], skip)} }`);
  }
  return parts.join(' ');
}

const GATE = everyField(schema.getType('Gate')!, ['GateConnection', 'GateEdge'], ['Gate.lastEvaluations']);
const EVALUATION = everyField(schema.getType('Evaluation')!, ['EvaluationConnection', 'EvaluationEdge']);
const PAGE = 'totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }';

/** Nested lists that multiply: 100 gates × 20 evaluations × their rules × 500 transitions. */
const ABSURD = '{ gates(first: 100) { edges { node { lastEvaluations(first: 20) { rules { monitorTransitions(first: 500) { at group from to } } } } } } }';

describe('what a query costs', () => {
  const cost = (query: string) => estimateCost({ schema, document: parse(query) });
  /** 100 evaluations × 10 rules (the estimate for a list without first), with this selection of each rule. */
  const rules = (selection: string) => cost(`{ evaluations(first: 100) { edges { node { rules { id ${selection} } } } } }`);
  const fdd = 'fddEvidence { version faultyResources { name canary { requests } } }';
  const metric = 'metricEvidence { query points { at value } }';
  const monitor = 'evidence { matchedMonitors { name } } monitorTransitions { at to }';

  test("a rule's evidence of one type costs that type's: the other types' fields answer null and cost 1", () => {
    const base = rules('');
    const [f, m, mon] = [rules(fdd) - base, rules(metric) - base, rules(monitor) - base];
    assert.ok(f > 1000 && m > 1000 && mon > 1000, `each kind costs more than its field: ${f} ${m} ${mon}`);
    // The most expensive kind at its cost; each field of the other kinds at 1 per rule (1,000 rules).
    assert.equal(rules(`${fdd} ${metric}`) - base, Math.max(f, m) + 1000);
    assert.equal(rules(`${fdd} ${metric} ${monitor}`) - base, Math.max(f + 2000, m + 2000, mon + 2000));
  });

  test('aliases of one evidence field add up: each of them resolves', () => {
    const base = rules('');
    const one = rules(fdd) - base;
    assert.equal(rules(`a: ${fdd} b: ${fdd}`) - base, 2 * one);
  });

  test("kinds are compared per rule, wherever the rules are selected (a fragment, a gate's evaluations)", () => {
    const inline = rules(`${fdd} ${metric}`);
    const spread = cost(`{ evaluations(first: 100) { edges { node { rules { id ...r } } } } } fragment r on RuleEvaluation { ${fdd} ${metric} }`);
    assert.equal(spread, inline);
    const nested = cost(`{ gates(first: 10) { edges { node { lastEvaluations(first: 10) { rules { ${fdd} ${metric} } } } } } }`);
    const nestedFdd = cost(`{ gates(first: 10) { edges { node { lastEvaluations(first: 10) { rules { ${fdd} } } } } } }`);
    assert.equal(nested, nestedFdd + 1000);
  });

  test('a page of 100 evaluations with every field leaves a third of the limit for fields to come', () => {
    const c = cost(`{ evaluations(first: 100) { ${PAGE} edges { cursor node { ${EVALUATION} } } } }`);
    assert.ok(c < MAX_QUERY_COST * (2 / 3), `cost ${c}`);
  });
});

describe('query cost limit', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ logLevel: 'error' });
    const d = driver(s);
    const monitor = await d.monitor('api latency', ['service:api']);
    await d.report(monitor, 'OK');
    for (let i = 0; i < 100; i++) {
      const r = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
        i: {
          service: `svc-${i}`,
          env: 'prod',
          rules: [
            { name: 'latency', options: { monitor: { query: 'service:api', duration: 600 } } },
            { name: 'pinned', options: { monitor: { monitorIds: [{ id: monitor }], duration: 600 } } },
            { name: 'errors', options: { faultyDeploymentDetection: { duration: 600, excludedResources: ['GET /healthz'] } } },
          ],
        },
      });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    }
    for (let i = 0; i < 3; i++) {
      const r = await d.evaluate({ service: `svc-${i}`, env: 'prod', version: 'v2' });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    }
  });
  after(() => s?.stop());

  test('a page of 100 gates with every field of their rules and options passes', async () => {
    const r = await s.gql(`{ gates(first: 100) { ${PAGE} edges { cursor node { ${GATE} } } } }`);
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.equal(r.data.gates.edges.length, 100);
    const rules = r.data.gates.edges[0].node.rules;
    assert.deepEqual(rules.map((x: any) => x.options.__typename).sort(), ['FddRuleOptions', 'MonitorRuleOptions', 'MonitorRuleOptions']);
    assert.deepEqual(rules.find((x: any) => x.name === 'errors').options.excludedResources, ['GET /healthz']);
  });

  test('the same page through a variable, with the last evaluations of each gate, passes', async () => {
    const r = await s.gql(`query($n: Int) { gates(first: $n) { edges { node { ${GATE} lastEvaluations(first: 20) { id status } } } } }`, { n: 100 });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.equal(r.data.gates.edges.length, 100);
  });

  test('a page of 100 evaluations with every field of their rules and evidence (FDD evidence and monitor transitions included) passes', async () => {
    const query = `{ evaluations(first: 100) { ${PAGE} edges { cursor node { ${EVALUATION} } } } }`;
    assert.match(query, /fddEvidence \{.*faultyResources/);
    assert.match(query, /monitorTransitions \{/);
    const r = await s.gql(query);
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.equal(r.data.evaluations.edges.length, 3);
  });

  test('GraphiQL-style introspection passes', async () => {
    const r = await s.gql(
      '{ __schema { types { name fields(includeDeprecated: true) { name args { name type { name kind ofType { name kind ofType { name kind } } } } type { name kind ofType { name kind ofType { name kind } } } } } } }',
    );
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  });

  test('over HTTP an absurd query is refused before it runs: 400, QUERY_TOO_COSTLY, its cost and the limit', async () => {
    const before = s.queries.length;
    const r = await s.gql(ABSURD);
    assert.equal(r.status, 400);
    assert.equal(r.data, undefined);
    const error = r.errors![0]!;
    assert.equal(error.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(r));
    assert.equal(error.extensions?.maxCost, MAX_QUERY_COST);
    assert.ok((error.extensions?.cost as number) > MAX_QUERY_COST, JSON.stringify(error));
    assert.equal(error.extensions?.http, undefined, 'the status is not sent in the body');
    assert.match(error.message, /too costly.*limit of/);
    assert.equal(s.queries.slice(before).filter((q) => /from "gates"/i.test(q)).length, 0, 'no gate was read');
  });

  test('variables count: the same document is refused when first is large and passes when small', async () => {
    const query = 'query($n: Int, $m: Int) { gates(first: $n) { edges { node { lastEvaluations(first: 20) { rules { monitorTransitions(first: $m) { at } } } } } } }';
    const refused = await s.gql(query, { n: 100, m: 500 });
    assert.equal(refused.errors?.[0]?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(refused));
    const passed = await s.gql(query, { n: 2, m: 5 });
    assert.equal(passed.errors, undefined, JSON.stringify(passed.errors));
  });

  test('aliases add up: twenty copies of an allowed page are refused (each alone passes)', async () => {
    const one = 'evaluations(first: 100) { edges { node { rules { monitorTransitions { at group from to message } } } } }';
    assert.equal((await s.gql(`{ ${one} }`)).errors, undefined);
    const r = await s.gql(`{ ${Array.from({ length: 20 }, (_, i) => `e${i}: ${one}`).join(' ')} }`);
    assert.equal(r.status, 400);
    assert.equal(r.errors?.[0]?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(r));
  });

  test("unbounded lists and aggregates cost what they may run: a monitor's groups, facets, insights", async () => {
    // A PromQL monitor has a group per series: 100 monitors may hold 100,000 groups.
    const groups = 'monitors(first: 100) { edges { node { groups { group state since lastReportedAt message } } } }';
    assert.equal((await s.gql(`{ ${groups} }`)).errors, undefined, 'one page of monitors with their groups passes');
    const manyGroups = await s.gql(`{ ${Array.from({ length: 5 }, (_, i) => `m${i}: ${groups}`).join(' ')} }`);
    assert.equal(manyGroups.errors?.[0]?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(manyGroups));
    // Each aggregate runs grouped SQL over up to 30 days: a few per request, not twenty.
    const insights = 'evaluationInsights { days { day } }';
    assert.equal((await s.gql(`{ ${insights} evaluationFacets { service { value } } }`)).errors, undefined, 'what the explorer asks passes');
    const manyInsights = await s.gql(`{ ${Array.from({ length: 10 }, (_, i) => `i${i}: ${insights}`).join(' ')} }`);
    assert.equal(manyInsights.errors?.[0]?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(manyInsights));
  });

  test("a backtest's deploys and each one's rules cost what they may hold (100 deploys of up to 50 rules)", async () => {
    const one = 'backtests(first: 100) { deploys { rules { name type dryRun status reason decidedAt } } }';
    const r = await s.gql(`{ ${one} }`);
    assert.equal(r.errors?.[0]?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(r));
    assert.equal((await s.gql('{ backtests(first: 100) { id status summary { deploys failed } deploys { version verdict reason } } }')).errors, undefined);
  });

  test('over WebSocket the same refusal, with its code, cost and limit, and the socket stays usable', async () => {
    const client = s.ws();
    try {
      const first = await new Promise<any>((resolve) => {
        client.subscribe({ query: ABSURD }, { next: (v) => resolve(v), error: (e) => resolve({ errors: e }), complete: () => {} });
      });
      const error = (Array.isArray(first.errors) ? first.errors : [first.errors])[0];
      assert.equal(error?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(first));
      assert.equal(error.extensions.maxCost, MAX_QUERY_COST);
      assert.ok(error.extensions.cost > MAX_QUERY_COST);
      const ok = await new Promise<any>((resolve) => {
        client.subscribe({ query: '{ gates(first: 1) { edges { node { id } } } }' }, { next: (v) => resolve(v), error: (e) => resolve({ errors: e }), complete: () => {} });
      });
      assert.equal(ok.errors, undefined, JSON.stringify(ok));
    } finally {
      await client.dispose();
    }
  });

  test('a subscription over the limit is refused with the code, one within it runs', async () => {
    const client = s.ws();
    const subscribe = (query: string, variables: Record<string, unknown>) =>
      new Promise<any>((resolve) => {
        const stop = client.subscribe({ query, variables }, { next: (v) => resolve(v), error: (e) => resolve({ errors: e }), complete: () => resolve({ completed: true }) });
        // A running subscription that has nothing to send yet: it was accepted.
        setTimeout(() => {
          stop();
          resolve({ running: true });
        }, 1000);
      });
    try {
      // One top-level field (a subscription's rule), costly through what it selects.
      const aliases = Array.from({ length: 10 }, (_, i) => `g${i}: gate { lastEvaluations(first: 20) { rules { monitorTransitions(first: $m) { at group from to message } } } }`);
      const query = `subscription($m: Int) { evaluationEvents { ${aliases.join(' ')} } }`;
      const refused = await subscribe(query, { m: 500 });
      const error = (Array.isArray(refused.errors) ? refused.errors : [refused.errors])[0];
      assert.equal(error?.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(refused));
      const accepted = await subscribe('subscription($m: Int) { evaluationEvents { rules { monitorTransitions(first: $m) { at } } } }', { m: 5 });
      assert.deepEqual(accepted, { running: true });
    } finally {
      await client.dispose();
    }
  });
});

describe('type scopes', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s?.stop());

  test("a type's scopes run with its fields: without them, each field is refused with the scope named", async () => {
    // Root fields refuse first, so this calls the type's field resolvers directly, as both executors do.
    const principal = { id: 'k', name: 'ci', scopes: new Set(['evaluations:write'] as const), envs: null };
    for (const [typeName, fieldName] of [
      ['Gate', 'service'],
      ['Rule', 'name'],
      ['ApiKey', 'name'],
    ] as const) {
      const field = (schema.getType(typeName) as GraphQLObjectType).getFields()[fieldName]!;
      const info = { parentType: schema.getType(typeName), fieldName, path: { key: fieldName, prev: undefined } } as never;
      const row = { id: 'x', service: 'api', name: 'n' };
      await assert.rejects(
        async () => field.resolve!(row, {}, { deps: {} as never, principal }, info),
        (err: GraphQLError) => {
          assert.equal(err.extensions.code, 'FORBIDDEN', typeName);
          assert.match(err.message, /API key "ci" lacks the (gates:read|admin) scope/);
          return true;
        },
      );
      const admin = { deps: {} as never, principal: { ...principal, scopes: new Set(['admin'] as const) } };
      assert.equal(await field.resolve!(row, {}, admin, info), row[fieldName], typeName);
    }
  });

  test("a key without gates:read sees an evaluation's own fields and no gate", async () => {
    await s.gql('mutation { createGate(input: { service: "api", env: "prod", rules: [{ name: "m", options: { monitor: { query: "service:api", duration: 60 } } }] }) { id } }');
    const writer = await s.gql('mutation { createApiKey(input: { name: "ci", scopes: [EVALUATIONS_WRITE] }) { secret } }');
    const key = writer.data.createApiKey.secret as string;
    const started = await s.gql('mutation { evaluateGate(input: { service: "api", env: "prod", version: "v1" }) { id } }', undefined, key);
    assert.equal(started.errors, undefined, JSON.stringify(started.errors));
    const id = started.data.evaluateGate.id;
    const r = await s.gql(`{ evaluation(id: "${id}") { id service gate { id service rules { name } } } }`, undefined, key);
    assert.equal(r.data.evaluation.service, 'api');
    assert.equal(r.data.evaluation.gate, null);
    const admin = await s.gql(`{ evaluation(id: "${id}") { gate { service rules { name } } } }`);
    assert.deepEqual(admin.data.evaluation.gate, { service: 'api', rules: [{ name: 'm' }] });
  });
});

describe('gates and rules kept between reads', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s?.stop());

  const page = '{ gates(first: 100) { edges { node { id service dryRun rules { id name dryRun options { ... on MonitorRuleOptions { query duration } } } } } } }';
  const rulesRead = (from: number) => s.queries.slice(from).filter((q) => /from "rules"/i.test(q)).length;
  const must = async (query: string, variables?: Record<string, unknown>) => {
    const r = await s.gql(query, variables);
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data;
  };
  const rulesOf = async (service: string) => (await must(page)).gates.edges.find((e: any) => e.node.service === service)?.node.rules;

  test('a page read again reads no rule; every kind of write is seen by the next read', async () => {
    const monitor = (query: string) => ({ monitor: { query, duration: 60 } });
    const created = await must('mutation($i: CreateGateInput!) { createGate(input: $i) { id rules { id } } }', {
      i: { service: 'api', env: 'prod', rules: [{ name: 'a', options: monitor('service:api') }] },
    });
    const gateId = created.createGate.id;
    await must('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', { i: { service: 'web', env: 'prod' } });

    let from = s.queries.length;
    assert.deepEqual(
      (await rulesOf('api')).map((r: any) => r.name),
      ['a'],
    );
    assert.equal(rulesRead(from), 1);
    from = s.queries.length;
    assert.deepEqual(
      (await rulesOf('api')).map((r: any) => r.name),
      ['a'],
    );
    assert.deepEqual(await rulesOf('web'), []);
    assert.equal(rulesRead(from), 0, 'kept: no statement');
    const gateRowsRead = s.queries.slice(from).filter((q) => /^select "id", "service"/i.test(q)).length;
    assert.equal(gateRowsRead, 0, 'kept: only the page of ids is read');

    const added = await must('mutation($g: ID!, $i: RuleInput!) { createRule(gateId: $g, input: $i) { id } }', { g: gateId, i: { name: 'b', options: monitor('service:b') } });
    assert.deepEqual(
      (await rulesOf('api')).map((r: any) => r.name),
      ['a', 'b'],
    );

    await must('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', {
      id: added.createRule.id,
      i: { name: 'b2', dryRun: true, options: monitor('service:b2') },
    });
    const updated = (await rulesOf('api')).find((r: any) => r.id === added.createRule.id);
    assert.deepEqual({ name: updated.name, dryRun: updated.dryRun, query: updated.options.query }, { name: 'b2', dryRun: true, query: 'service:b2' });

    await must('mutation($id: ID!) { deleteRule(id: $id) }', { id: added.createRule.id });
    assert.deepEqual(
      (await rulesOf('api')).map((r: any) => r.name),
      ['a'],
    );

    await must('mutation($id: ID!, $i: UpdateGateInput!) { updateGate(id: $id, input: $i) { id } }', { id: gateId, i: { dryRun: true } });
    assert.equal((await must(page)).gates.edges.find((e: any) => e.node.id === gateId).node.dryRun, true);

    await must('mutation($id: ID!) { deleteGate(id: $id) }', { id: gateId });
    assert.equal(await rulesOf('api'), undefined);
    const again = await must('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: { service: 'api', env: 'prod', rules: [{ name: 'z', options: monitor('service:z') }] },
    });
    assert.ok(again.createGate.id);
    assert.deepEqual(
      (await rulesOf('api')).map((r: any) => r.name),
      ['z'],
    );
  });
});

describe('a read a configuration change overtakes is answered, not kept', () => {
  let s: TestServer;
  const statements: string[] = [];
  /** Runs once, synchronously, as the next statement it matches is sent: the change arrives while that read is in flight. */
  let during: { statement: RegExp; run: () => void } | undefined;
  before(async () => {
    s = await startServer(
      {},
      {
        onQuery: (sql) => {
          statements.push(sql);
          if (!during?.statement.test(sql)) return;
          const { run } = during;
          during = undefined;
          run();
        },
      },
    );
  });
  after(() => s?.stop());

  const configChanged = () => s.app.deps.events.publish('config.changed', null);
  const since = (from: number, statement: RegExp) => statements.slice(from).filter((q) => statement.test(q)).length;
  const RULES_READ = /from "rules"/i;
  const GATE_ROWS_READ = /^select "id", "service"/i;
  async function gate(service: string, rule: string): Promise<string> {
    const r = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: { service, env: 'prod', rules: [{ name: rule, options: { monitor: { query: `service:${service}`, duration: 60 } } }] },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data.createGate.id;
  }

  test('rules: the overtaken read is answered, read again next time, then kept; rules kept before it stay in its answer', async () => {
    const kept = await gate('overtaken-a', 'a');
    const other = await gate('overtaken-b', 'b');
    const names = (rules: readonly { name: string }[]) => rules.map((r) => r.name);
    assert.deepEqual(names(await keptRulesOf(s.app.deps, [kept])), ['a']);
    during = { statement: RULES_READ, run: configChanged };
    assert.deepEqual(names(await keptRulesOf(s.app.deps, [kept, other])), ['a', 'b'], 'the kept gate’s rules and the read ones');
    assert.equal(during, undefined, 'the change arrived during the read');
    let from = statements.length;
    assert.deepEqual(names(await keptRulesOf(s.app.deps, [kept, other])), ['a', 'b']);
    assert.equal(since(from, RULES_READ), 1, 'nothing of the overtaken read was kept');
    from = statements.length;
    assert.deepEqual(names(await keptRulesOf(s.app.deps, [kept, other])), ['a', 'b']);
    assert.equal(since(from, RULES_READ), 0, 'a read nothing overtook is kept');
  });

  test('gates: the overtaken read is answered, read again next time, then kept', async () => {
    await gate('overtaken-c', 'c');
    const page = { limit: 100, inverted: false };
    const services = async () => (await listGates(s.app.deps, SYSTEM, {}, page)).map((g) => g.service).sort();
    configChanged();
    during = { statement: GATE_ROWS_READ, run: configChanged };
    const all = await services();
    assert.ok(all.includes('overtaken-c'));
    assert.equal(during, undefined, 'the change arrived during the read');
    let from = statements.length;
    assert.deepEqual(await services(), all);
    assert.equal(since(from, GATE_ROWS_READ), 1, 'nothing of the overtaken read was kept');
    from = statements.length;
    assert.deepEqual(await services(), all);
    assert.equal(since(from, GATE_ROWS_READ), 0, 'a read nothing overtook is kept');
  });
});

describe('compiled queries answer as the standard executor does', () => {
  // Two servers on one database state each: compiled queries off (always the standard
  // executor) and on (a document is compiled from its second run). The response cache is off.
  let standard: TestServer;
  let compiled: TestServer;
  const keys: Record<string, { standard: string; compiled: string }> = {};
  const PROD_MONITOR = 'prod-secret-monitor';

  async function world(s: TestServer) {
    const d = driver(s);
    const prod = await d.monitor(PROD_MONITOR, ['env:prod', 'service:api']);
    await d.report(prod, 'ALERT', 'host:prodbox');
    const staging = await d.monitor('staging-monitor', ['env:staging', 'service:api']);
    await d.report(staging, 'OK', 'host:stagebox');
    const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: {
        service: 'api',
        env: 'staging',
        rules: [
          { name: 'service monitors', options: { monitor: { query: 'service:api' } } },
          { name: 'errors', options: { faultyDeploymentDetection: { duration: 600 } } },
        ],
      },
    });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const started = await d.evaluate({ service: 'api', env: 'staging', version: 'v2' });
    assert.equal(started.errors, undefined, JSON.stringify(started.errors));
    for (let i = 0; i < 100; i++) {
      const r = await s.gql('{ evaluations(first: 1) { edges { node { rules { name status } } } } }');
      if (r.data.evaluations.edges[0].node.rules.some((x: any) => x.name === 'service monitors' && x.status === 'FAIL')) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return {
      staging: await s.createKey(['gates:read', 'evaluations:write'], ['staging']),
      writer: await s.createKey(['evaluations:write']),
      ingest: await s.createKey(['ingest']),
    };
  }

  before(async () => {
    [standard, compiled] = await Promise.all([startServer({ compiledQueries: false, responseCacheTtlMs: 0 }), startServer({ compiledQueries: true, responseCacheTtlMs: 0 })]);
    const [a, b] = [await world(standard), await world(compiled)];
    for (const name of Object.keys(a) as (keyof typeof a)[]) keys[name] = { standard: a[name], compiled: b[name] };
  });
  after(async () => {
    await standard?.stop();
    await compiled?.stop();
  });

  /** Ids, cursors and times differ between the two servers' databases: compared by shape. */
  function normalized(value: unknown): unknown {
    const text = JSON.stringify(value)
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<id>')
      .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<time>')
      .replace(/"(cursor|startCursor|endCursor)":"[^"]*"/g, '"$1":"<cursor>"')
      .replace(/"prefix":"[^"]*"/g, '"prefix":"<prefix>"')
      .replace(/http:\/\/127\.0\.0\.1:\d+/g, '<origin>')
      .replace(/"lastUsedAt":"[^"]*"/g, '"lastUsedAt":"<time>"');
    return JSON.parse(text);
  }

  const corpus: { name: string; key?: string; primeAsAdmin?: boolean; query: string; variables?: Record<string, unknown>; operation?: string }[] = [
    { name: 'every field of a page of gates', query: `{ gates(first: 10) { ${PAGE} edges { cursor node { ${GATE} lastEvaluations { id status } } } } }` },
    { name: 'every field of a page of evaluations (evidence, FDD evidence, transitions)', query: `{ evaluations(first: 10) { ${PAGE} edges { cursor node { ${EVALUATION} } } } }` },
    { name: 'the same page read by a staging key (per-reader evidence)', key: 'staging', query: `{ evaluations(first: 10) { edges { node { ${EVALUATION} } } } }` },
    {
      name: 'a gate through an evaluation, by a key without gates:read (null)',
      key: 'writer',
      query: '{ evaluations(first: 5) { edges { node { service gate { service rules { name } } } } } }',
    },
    { name: 'a root field the key may not read (FORBIDDEN)', key: 'ingest', query: '{ gates(first: 5) { edges { node { id } } } }' },
    { name: 'a partial failure beside data', key: 'ingest', query: '{ viewer { name scopes } gates(first: 1) { totalCount } }' },
    { name: 'a bad argument (BAD_USER_INPUT)', query: '{ evaluation(id: "not-an-id") { id } }' },
    { name: 'a page size out of range', query: 'query($n: Int) { gates(first: $n) { edges { node { id } } } }', variables: { n: 1000 } },
    {
      name: 'an id that does not exist (null)',
      query: '{ evaluation(id: "00000000-0000-7000-8000-000000000000") { id } gate(id: "00000000-0000-7000-8000-000000000000") { id } }',
    },
    {
      name: 'variables, aliases, fragments, __typename',
      query:
        'query($n: Int, $f: GateFilter) { a: gates(first: $n, filter: $f) { ...page } b: gates(last: 1) { ...page } } fragment page on GateConnection { __typename totalCount edges { node { __typename service rules { options { __typename ... on MonitorRuleOptions { query duration } ... on FddRuleOptions { alpha duration } } } } } }',
      variables: { n: 2, f: { envs: ['staging'] } },
    },
    {
      name: 'a variable with a value its enum lacks',
      query: 'query($f: EvaluationFilter) { evaluations(filter: $f) { edges { cursor } } }',
      variables: { f: { status: ['PASSED'] } },
    },
    { name: 'a required variable missing', query: 'query($id: ID!) { evaluation(id: $id) { id } }' },
    { name: 'a variable of the wrong type', query: 'query($n: Int) { gates(first: $n) { edges { cursor } } }', variables: { n: 'ten' } },
    {
      name: '@include and @skip by variables',
      query: 'query($a: Boolean!, $b: Boolean!) { gates(first: 2) { edges { node { service @include(if: $a) env @skip(if: $b) } } } }',
      variables: { a: false, b: false },
    },
    { name: 'a document of two queries, the first named', query: 'query A { gates(first: 1) { edges { node { service } } } } query B { viewer { name } }', operation: 'A' },
    { name: 'the same document, the second named', query: 'query A { gates(first: 1) { edges { node { service } } } } query B { viewer { name } }', operation: 'B' },
    {
      name: 'monitors with groups and transitions',
      query: '{ monitors(first: 10) { edges { node { name state tags groups { group state } transitions(last: 5) { from to group } } } } }',
    },
    { name: 'monitors as the staging key sees them', key: 'staging', query: '{ monitors(first: 10) { edges { node { name state } } } }' },
    { name: 'API keys (admin only) and the viewer', query: '{ apiKeys { name scopes envs revokedAt } viewer { name } }' },
    { name: 'API keys asked by a key without admin', key: 'staging', query: '{ apiKeys { name } }' },
    // Adversary (issue 12): a document compiled on an admin's runs, then run by a limited key.
    {
      name: 'compiled for admin, then read by a staging key (per-reader evidence)',
      primeAsAdmin: true,
      key: 'staging',
      query: `{ evaluations(first: 10) { edges { node { ${EVALUATION} } } } monitors(first: 10) { edges { node { name } } } }`,
    },
    {
      name: 'compiled for admin, then read by a key without gates:read (FORBIDDEN, nulls)',
      primeAsAdmin: true,
      key: 'writer',
      query: '{ evaluations(first: 5) { edges { node { service gate { service rules { name } } } } } gates(first: 2) { edges { node { id } } } }',
    },
    {
      name: 'compiled for admin, then read by a key without admin (apiKeys)',
      primeAsAdmin: true,
      key: 'staging',
      query: '{ viewer { name effectiveScopes envs } apiKeys { name } }',
    },
    {
      name: 'literal @include/@skip on fragments and inline fragments',
      query:
        '{ gates(first: 2) { edges { node { ...a @include(if: false) ...b @skip(if: false) ... on Gate @include(if: true) { env } } } } } fragment a on Gate { service } fragment b on Gate { identifier rules { name } }',
    },
    {
      name: 'a named fragment on the options union, __typename on both members',
      query:
        '{ gates(first: 5) { edges { node { rules { options { ...o } } } } } } fragment o on RuleOptions { __typename ... on FddRuleOptions { alpha excludedResources } ... on MonitorRuleOptions { query monitorIds { id } } }',
    },
    {
      name: 'a variable default, a single value coerced to a list, a deprecated argument',
      query:
        'query($n: Int = 3, $s: [EvaluationStatus!], $e: String = "staging") { evaluations(first: $n, filter: { status: $s }) { edges { node { status } } } gates(filter: { env: $e }) { edges { node { env } } } }',
      variables: { s: 'FAIL' },
    },
    { name: 'an Int variable past 32 bits', query: 'query($n: Int) { gates(first: $n) { edges { cursor } } }', variables: { n: 2 ** 40 } },
    { name: 'an operationName the one-operation document lacks', query: 'query A { viewer { name } }', operation: 'B' },
    {
      name: 'an input object variable with a field it lacks',
      query: 'query($f: GateFilter) { gates(filter: $f) { edges { cursor } } }',
      variables: { f: { envs: ['staging'], colour: 'red' } },
    },
    {
      name: '@include by a nullable variable given null (an error, not a skip)',
      query: 'query Q($x: Boolean = true) { viewer @include(if: $x) { name } gates(first: 1) @skip(if: $x) { totalCount } }',
      variables: { x: null },
    },
    { name: 'null for a non-null list item inside a variable', query: 'query($f: GateFilter) { gates(filter: $f) { edges { cursor } } }', variables: { f: { envs: [null] } } },
  ];

  for (const c of corpus) {
    test(c.name, async () => {
      const as = (which: 'standard' | 'compiled') => (c.key ? keys[c.key]![which] : undefined);
      const ask = async (server: TestServer, key: string | undefined) => {
        const res = await server.request('POST', '/graphql', { body: { query: c.query, variables: c.variables, operationName: c.operation }, ...(key && { key }) });
        return { ...res.json, status: res.status };
      };
      const reference = await ask(standard, as('standard'));
      // Compiled on the admin's two runs: the limited key below runs the compiled code.
      if (c.primeAsAdmin) for (let i = 0; i < 2; i++) await ask(compiled, undefined);
      const first = await ask(compiled, as('compiled'));
      const again = await ask(compiled, as('compiled'));
      assert.deepEqual(normalized(first), normalized(reference), 'first run (standard executor)');
      assert.deepEqual(normalized(again), normalized(reference), 'second run (compiled)');
      if (c.key === 'staging') assert.ok(!JSON.stringify(again).includes(PROD_MONITOR), 'the staging key sees no prod monitor');
    });
  }

  test('the corpus exercises evidence, errors and nulls', async () => {
    const evidence = await compiled.gql(`{ evaluations(first: 1) { edges { node { rules { name evidence { matchedMonitors { name } } } } } } }`);
    assert.ok(JSON.stringify(evidence).includes(PROD_MONITOR), JSON.stringify(evidence));
    const limited = await compiled.gql(`{ evaluations(first: 1) { edges { node { rules { name evidence { matchedMonitors { name } } } } } } }`, undefined, keys.staging!.compiled);
    assert.ok(JSON.stringify(limited).includes('staging-monitor') && !JSON.stringify(limited).includes(PROD_MONITOR), JSON.stringify(limited));
  });

  test(// graphql-jit kept only the serializer's message: maskError took it for the client's mistake.
  'a stored value the schema cannot serialize is an internal error compiled too, not the client’s mistake', async () => {
    // A group state written outside the domain (an older version, a hand edit): not one of MonitorState's values.
    for (const server of [standard, compiled]) {
      const monitor = await driver(server).monitor('corrupt-state', ['env:staging']);
      const db = new Database(server.dbPath);
      try {
        db.prepare('insert into monitor_groups (monitor_id, "group", state, since, message, last_reported_at) values (?, ?, ?, ?, ?, ?)').run(
          monitor,
          'host:corrupt',
          'OK',
          Date.now(),
          null,
          Date.now(),
        );
      } finally {
        db.close();
      }
    }
    const query = '{ monitors(first: 100, query: "corrupt-state") { edges { node { name groups { group state } } } } }';
    const ask = async (server: TestServer) => (await server.request('POST', '/graphql', { body: { query } })).json;
    const reference = await ask(standard);
    assert.equal(reference.errors?.[0]?.extensions?.code, 'INTERNAL_SERVER_ERROR', JSON.stringify(reference));
    await ask(compiled);
    const again = await ask(compiled);
    assert.equal(again.errors?.[0]?.extensions?.code, 'INTERNAL_SERVER_ERROR', JSON.stringify(again));
    assert.equal(again.errors?.[0]?.message, reference.errors[0].message);
    assert.deepEqual(again.errors?.[0]?.path, reference.errors[0].path, 'the same error, where it occurred, not the whole request failing');
    assert.ok(again.errors[0].path?.length > 0, JSON.stringify(again));
  });

  test("the schema's queries take no @oneOf input, so the compiled path is on", () => {
    assert.equal(queriesTakeOneOf(schema), false);
    assert.ok(schema.getMutationType() && queriesTakeOneOf(new GraphQLSchema({ query: schema.getMutationType()! })), 'mutations do take one: the check finds it');
  });
});

describe('a gate asked for by many parents in one page', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s?.stop());

  test("each evaluation's gate lists its own `first` last evaluations, read once for the page", async () => {
    // Loaders batch without a cache, so 3 evaluations of one gate put it in the batch 3 times:
    // each copy was read (a statement per parent) and every copy's rows went to each parent.
    const gate = await s.gql(
      'mutation { createGate(input: { service: "dup-batch", env: "prod", rules: [{ name: "quiet", options: { monitor: { query: "service:none", duration: 0 } } }] }) { id } }',
    );
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    for (let i = 0; i < 3; i++) {
      const r = await s.gql('mutation { evaluateGate(input: { service: "dup-batch", env: "prod" }) { id } }');
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    }
    const from = s.queries.length;
    const r = await s.gql('{ evaluations(filter: { service: ["dup-batch"] }, first: 3) { edges { node { gate { lastEvaluations(first: 2) { id } } } } } }');
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const lists = r.data.evaluations.edges.map((e: any) => e.node.gate.lastEvaluations.length);
    assert.deepEqual(lists, [2, 2, 2]);
    const lastReads = s.queries.slice(from).filter((q) => /from "evaluations" where .*"gate_id" = \?.*limit/i.test(q)).length;
    assert.equal(lastReads, 1, 'one read for the one gate');
  });
});
