import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CREATE_GATE, fddRule, GATE_FIELDS, monitorRule, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.stop());

let n = 0;
/** A service name no other test uses, so tests stay independent on one database. */
const svc = () => `svc-${++n}`;

async function createGate(input: Record<string, unknown>) {
  const r = await s.gql(CREATE_GATE, { input });
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data.createGate;
}

function expectError(r: { errors?: Array<{ message: string; extensions?: Record<string, any> }> }, code: string, field?: string, message?: RegExp) {
  assert.ok(r.errors?.length, `expected a ${code} error, got ${JSON.stringify(r)}`);
  const e = r.errors[0]!;
  assert.equal(e.extensions?.code, code, JSON.stringify(e));
  if (field) assert.equal(e.extensions?.field, field, JSON.stringify(e));
  if (message) assert.match(e.message, message);
}

describe('gates and rules CRUD', () => {
  test('createGate with rules stores defaults for every option and returns them', async () => {
    const service = svc();
    const gate = await createGate({ service, env: 'prod', rules: [monitorRule('monitors'), fddRule('fdd', { excludedResources: ['GET /healthz'] })] });
    assert.equal(gate.identifier, 'default');
    assert.equal(gate.dryRun, false);
    assert.equal(gate.onSourceError, 'FAIL');
    assert.equal(gate.createdBy, 'bootstrap');
    assert.deepEqual(
      gate.rules.map((r: any) => [r.name, r.type, r.dryRun]),
      [
        ['monitors', 'MONITOR', false],
        ['fdd', 'FAULTY_DEPLOYMENT_DETECTION', false],
      ],
    );
    assert.deepEqual(gate.rules[0].options, {
      __typename: 'MonitorRuleOptions',
      query: 'service:checkout',
      monitorIds: null,
      duration: 0,
      warmup: 0,
      failOnNoData: true,
      failOnNoGroupsFound: false,
    });
    assert.deepEqual(gate.rules[1].options, {
      __typename: 'FddRuleOptions',
      duration: 900,
      excludedResources: ['GET /healthz'],
      allowedResources: null,
      alpha: 0.01,
      minRelativeIncrease: 0.5,
      newErrorTypes: true,
      onInsufficientData: 'PASS',
    });
    const read = await s.gql(`query($id: ID!) { gate(id: $id) { ${GATE_FIELDS} } }`, { id: gate.id });
    assert.deepEqual(read.data.gate, gate);
  });

  test('gateByKey finds a gate by service, env and identifier', async () => {
    const service = svc();
    const a = await createGate({ service, env: 'prod' });
    const b = await createGate({ service, env: 'prod', identifier: 'canary-20pct' });
    const q = 'query($s: String!, $e: String!, $i: String) { gateByKey(service: $s, env: $e, identifier: $i) { id } }';
    assert.equal((await s.gql(q, { s: service, e: 'prod' })).data.gateByKey.id, a.id);
    assert.equal((await s.gql(q, { s: service, e: 'prod', i: 'canary-20pct' })).data.gateByKey.id, b.id);
    assert.equal((await s.gql(q, { s: service, e: 'staging' })).data.gateByKey, null);
  });

  test('gates pages forward and backward and filters', async () => {
    const service = svc();
    const ids: string[] = [];
    for (const env of ['e1', 'e2', 'e3', 'e4', 'e5']) ids.push((await createGate({ service, env, dryRun: env === 'e3' })).id);
    const page = `query($f: GateFilter, $first: Int, $after: String, $last: Int, $before: String) {
      gates(filter: $f, first: $first, after: $after, last: $last, before: $before) {
        edges { cursor node { id env } } pageInfo { hasNextPage hasPreviousPage endCursor startCursor } } }`;
    const p1 = (await s.gql(page, { f: { service }, first: 2 })).data.gates;
    assert.deepEqual(
      p1.edges.map((e: any) => e.node.id),
      ids.slice(0, 2),
    );
    assert.equal(p1.pageInfo.hasNextPage, true);
    const p2 = (await s.gql(page, { f: { service }, first: 2, after: p1.pageInfo.endCursor })).data.gates;
    assert.deepEqual(
      p2.edges.map((e: any) => e.node.id),
      ids.slice(2, 4),
    );
    const p3 = (await s.gql(page, { f: { service }, first: 2, after: p2.pageInfo.endCursor })).data.gates;
    assert.deepEqual(
      p3.edges.map((e: any) => e.node.id),
      ids.slice(4),
    );
    assert.equal(p3.pageInfo.hasNextPage, false);
    const back = (await s.gql(page, { f: { service }, last: 2, before: p3.pageInfo.startCursor })).data.gates;
    assert.deepEqual(
      back.edges.map((e: any) => e.node.id),
      ids.slice(2, 4),
    );
    const dry = (await s.gql(page, { f: { service, dryRun: true }, first: 10 })).data.gates;
    assert.deepEqual(
      dry.edges.map((e: any) => e.node.env),
      ['e3'],
    );
    const byEnv = (await s.gql(page, { f: { service, env: 'e5', identifier: 'default' }, first: 10 })).data.gates;
    assert.deepEqual(
      byEnv.edges.map((e: any) => e.node.id),
      [ids[4]],
    );
    expectError(await s.gql(page, { f: { service }, first: 2, after: 'not-a-cursor' }), 'BAD_USER_INPUT', 'after');
  });

  test('updateGate changes dryRun and onSourceError, records who and when', async () => {
    const gate = await createGate({ service: svc(), env: 'prod' });
    const r = await s.gql('mutation($id: ID!, $input: UpdateGateInput!) { updateGate(id: $id, input: $input) { id dryRun onSourceError updatedAt createdAt } }', {
      id: gate.id,
      input: { dryRun: true, onSourceError: 'PASS', service: gate.service },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.equal(r.data.updateGate.dryRun, true);
    assert.equal(r.data.updateGate.onSourceError, 'PASS');
    assert.ok(r.data.updateGate.updatedAt >= r.data.updateGate.createdAt);
  });

  test('service, env and identifier are immutable', async () => {
    const gate = await createGate({ service: svc(), env: 'prod' });
    for (const [field, value] of [
      ['service', 'other'],
      ['env', 'staging'],
      ['identifier', 'x'],
    ] as const) {
      const r = await s.gql('mutation($id: ID!, $input: UpdateGateInput!) { updateGate(id: $id, input: $input) { id } }', {
        id: gate.id,
        input: { [field]: value },
      });
      expectError(r, 'BAD_USER_INPUT', `input.${field}`, new RegExp(`${field} cannot change`));
    }
  });

  test('rule CRUD: create, update, rename, delete; the type cannot change', async () => {
    const gate = await createGate({ service: svc(), env: 'prod', rules: [monitorRule('a')] });
    const created = await s.gql('mutation($g: ID!, $i: RuleInput!) { createRule(gateId: $g, input: $i) { id name type gateId } }', {
      g: gate.id,
      i: fddRule('b', { allowedResources: ['GET /api'] }),
    });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const ruleId = created.data.createRule.id;
    assert.equal(created.data.createRule.gateId, gate.id);

    const dup = await s.gql('mutation($g: ID!, $i: RuleInput!) { createRule(gateId: $g, input: $i) { id } }', { g: gate.id, i: monitorRule('a') });
    expectError(dup, 'CONFLICT', 'input.name', /already has a rule named "a"/);

    const upd = await s.gql(
      'mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { name dryRun options { ... on FddRuleOptions { duration allowedResources } } } }',
      { id: ruleId, i: { name: 'b2', dryRun: true, options: { faultyDeploymentDetection: { duration: 1200 } } } },
    );
    assert.equal(upd.errors, undefined, JSON.stringify(upd.errors));
    assert.deepEqual(upd.data.updateRule, { name: 'b2', dryRun: true, options: { duration: 1200, allowedResources: null } });

    const typeChange = await s.gql('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', {
      id: ruleId,
      i: { options: { monitor: { query: 'x' } } },
    });
    expectError(typeChange, 'BAD_USER_INPUT', 'input.options', /type cannot change/);

    const rename = await s.gql('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', { id: ruleId, i: { name: 'a' } });
    expectError(rename, 'CONFLICT', 'input.name');

    const del = await s.gql('mutation($id: ID!) { deleteRule(id: $id) }', { id: ruleId });
    assert.equal(del.data.deleteRule, ruleId);
    expectError(await s.gql('mutation($id: ID!) { deleteRule(id: $id) }', { id: ruleId }), 'NOT_FOUND', 'id');
    const after = await s.gql('query($id: ID!) { gate(id: $id) { rules { name } } }', { id: gate.id });
    assert.deepEqual(after.data.gate.rules, [{ name: 'a' }]);
  });

  test('deleteGate removes its rules with it', async () => {
    const gate = await createGate({ service: svc(), env: 'prod', rules: [monitorRule('a'), monitorRule('b')] });
    const r = await s.gql('mutation($id: ID!) { deleteGate(id: $id) }', { id: gate.id });
    assert.equal(r.data.deleteGate, gate.id);
    assert.equal((await s.gql('query($id: ID!) { gate(id: $id) { id } }', { id: gate.id })).data.gate, null);
    for (const rule of gate.rules) {
      assert.equal((await s.gql('query($id: ID!) { rule(id: $id) { id } }', { id: rule.id })).data.rule, null);
    }
    const count = (await s.sql<{ n: number }>('select count(*) as n from rules where gate_id = ?', gate.id))[0]!;
    assert.equal(count.n, 0);
    expectError(await s.gql('mutation($id: ID!) { deleteGate(id: $id) }', { id: gate.id }), 'NOT_FOUND', 'id');
  });

  test('every change leaves an audit entry in the same transaction', async () => {
    const gate = await createGate({ service: svc(), env: 'prod', rules: [monitorRule('a')] });
    await s.gql('mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }', { id: gate.id });
    await s.gql('mutation($id: ID!) { deleteGate(id: $id) }', { id: gate.id });
    const rows = (await s.sql('select action, actor_name from audit_log where target_id = ? order by id', gate.id)) as Array<{
      action: string;
      actor_name: string;
    }>;
    assert.deepEqual(
      rows.map((r) => r.action),
      ['gate.created', 'gate.updated', 'gate.deleted'],
    );
    assert.ok(rows.every((r) => r.actor_name === 'bootstrap'));
  });
});

describe('validation: each failure names its field, and nothing is written', () => {
  const cases: Array<[string, Record<string, unknown>, string, string, RegExp?]> = [
    ['empty service', { service: '', env: 'prod' }, 'BAD_USER_INPUT', 'input.service', /must not be empty/],
    ['blank env', { service: 'x', env: '   ' }, 'BAD_USER_INPUT', 'input.env', /must not be empty/],
    [
      'duration above 7200',
      { service: 'x', env: 'prod', rules: [monitorRule('m', { duration: 7201 })] },
      'BAD_USER_INPUT',
      'input.rules[0].options.monitor.duration',
      /between 0 and 7200/,
    ],
    [
      'negative duration',
      { service: 'x', env: 'prod', rules: [fddRule('f', { duration: -1 })] },
      'BAD_USER_INPUT',
      'input.rules[0].options.faultyDeploymentDetection.duration',
      /between 0 and 7200/,
    ],
    ['negative warmup', { service: 'x', env: 'prod', rules: [monitorRule('m', { warmup: -5 })] }, 'BAD_USER_INPUT', 'input.rules[0].options.monitor.warmup'],
    [
      'excludedResources with allowedResources',
      { service: 'x', env: 'prod', rules: [fddRule('f', { excludedResources: ['a'], allowedResources: ['b'] })] },
      'BAD_USER_INPUT',
      'input.rules[0].options.faultyDeploymentDetection.allowedResources',
      /not both/,
    ],
    [
      'query with monitorIds',
      { service: 'x', env: 'prod', rules: [monitorRule('m', { monitorIds: [{ id: '1' }] })] },
      'BAD_USER_INPUT',
      'input.rules[0].options.monitor.monitorIds',
      /not both/,
    ],
    [
      'neither query nor monitorIds',
      { service: 'x', env: 'prod', rules: [{ name: 'm', options: { monitor: { duration: 5 } } }] },
      'BAD_USER_INPUT',
      'input.rules[0].options.monitor.query',
      /needs a query or monitorIds/,
    ],
    ['duplicate rule names', { service: 'x', env: 'prod', rules: [monitorRule('m'), monitorRule('m')] }, 'BAD_USER_INPUT', 'input.rules[1].name', /duplicate rule name "m"/],
    ['empty rule name', { service: 'x', env: 'prod', rules: [monitorRule('')] }, 'BAD_USER_INPUT', 'input.rules[0].name'],
    ['alpha out of range', { service: 'x', env: 'prod', rules: [fddRule('f', { alpha: 0 })] }, 'BAD_USER_INPUT', 'input.rules[0].options.faultyDeploymentDetection.alpha'],
  ];
  for (const [name, input, code, field, message] of cases) {
    test(name, async () => {
      const before = (await s.sql('select (select count(*) from gates) g, (select count(*) from rules) r'))[0];
      const r = await s.gql(CREATE_GATE, { input });
      expectError(r, code, field, message);
      const after = (await s.sql('select (select count(*) from gates) g, (select count(*) from rules) r'))[0];
      assert.deepEqual(after, before);
    });
  }

  test('both options of a @oneOf input are refused by GraphQL itself', async () => {
    const r = await s.gql(CREATE_GATE, {
      input: { service: 'x', env: 'prod', rules: [{ name: 'm', options: { monitor: { query: 'a' }, faultyDeploymentDetection: {} } }] },
    });
    assert.ok(r.errors?.[0]?.message.includes('RuleOptionsInput'), JSON.stringify(r.errors));
  });

  test('duplicate (service, env, identifier) is a CONFLICT, and leaves the first gate intact', async () => {
    const service = svc();
    const first = await createGate({ service, env: 'prod', rules: [monitorRule('a')] });
    const r = await s.gql(CREATE_GATE, { input: { service, env: 'prod', rules: [monitorRule('b')] } });
    expectError(r, 'CONFLICT', 'input.identifier', new RegExp(`service ${service}, env prod and identifier default`));
    const read = await s.gql('query($id: ID!) { gate(id: $id) { rules { name } } }', { id: first.id });
    assert.deepEqual(read.data.gate.rules, [{ name: 'a' }]);
  });

  test('a bad id is BAD_USER_INPUT, an unknown one NOT_FOUND', async () => {
    expectError(await s.gql('mutation { deleteGate(id: "nope") }'), 'BAD_USER_INPUT', 'id', /not a valid UUID/);
    expectError(await s.gql('mutation { deleteGate(id: "0190a000-0000-7000-8000-000000000000") }'), 'NOT_FOUND', 'id');
    expectError(
      await s.gql('mutation { createRule(gateId: "0190a000-0000-7000-8000-000000000000", input: { name: "x", options: { monitor: { query: "a" } } }) { id } }'),
      'NOT_FOUND',
      'gateId',
    );
  });
});
