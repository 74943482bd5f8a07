import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CREATE_GATE, driver, EVALUATION_FIELDS, fddRule, jitMonitor, monitorRule, startServer, subscribeLive, subscribeQueue, type TestServer } from './helpers.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
before(async () => {
  s = await startServer({ publicUrl: 'https://tollgate.example.com' });
  d = driver(s);
});
after(() => s.stop());

let n = 0;
const tag = () => `eval:t${++n}`;

async function okMonitor(t: string) {
  const id = await d.monitor(`ok ${t}`, [t]);
  await d.report(id, 'OK');
  return id;
}

async function alertMonitor(t: string) {
  const id = await d.monitor(`alert ${t}`, [t]);
  await d.report(id, 'ALERT');
  return id;
}

function code(r: { errors?: Array<{ extensions?: Record<string, any> }> }) {
  return r.errors?.[0]?.extensions?.code;
}

describe('evaluateGate', () => {
  test('a preconfigured gate is evaluated with its stored rules; the answer comes back at once', async () => {
    const t = tag();
    await okMonitor(t);
    await s.gql(CREATE_GATE, { input: { service: 'pre', env: 'prod', rules: [monitorRule('m', { query: t })] } });
    const r = await d.evaluate({ service: 'pre', env: 'prod', version: 'v2' });
    const ev = r.data.evaluateGate;
    assert.equal(ev.justInTime, false);
    assert.ok(ev.gateId);
    assert.equal(ev.status, 'IN_PROGRESS');
    assert.equal(ev.evaluationUrl, `https://tollgate.example.com/evaluations/${ev.id}`);
    const final = (await d.follow(ev.id)).at(-1);
    assert.equal(final.status, 'PASS');
    assert.equal(final.rules[0].ruleId !== null, true);
  });

  test('errors: no gate, a gate without rules, JIT without rules, FDD without version', async () => {
    const missing = await d.evaluate({ service: 'nope', env: 'prod' });
    assert.equal(code(missing), 'NOT_FOUND');
    assert.equal(missing.errors![0]!.message, 'no gate found for service nope, env prod, and identifier default');

    await s.gql(CREATE_GATE, { input: { service: 'empty', env: 'prod' } });
    const empty = await d.evaluate({ service: 'empty', env: 'prod' });
    assert.equal(code(empty), 'NOT_FOUND');
    assert.match(empty.errors![0]!.message, /has no rules/);

    const jit = await d.evaluate({ service: 'x', env: 'prod', configuration: { rules: [] } });
    assert.equal(code(jit), 'BAD_USER_INPUT');
    assert.equal(jit.errors![0]!.extensions!.field, 'input.configuration.rules');

    const fdd = await d.evaluate({ service: 'x', env: 'prod', configuration: { rules: [fddRule('f')] } });
    assert.equal(code(fdd), 'BAD_USER_INPUT');
    assert.equal(fdd.errors![0]!.extensions!.field, 'input.version');

    const env = await d.evaluate({ service: 'x', env: '', configuration: { rules: [jitMonitor('m', { query: 'a' })] } });
    assert.equal(env.errors![0]!.extensions!.field, 'input.env');
  });

  test('just-in-time rules win over a stored gate', async () => {
    const t = tag();
    await alertMonitor(t);
    const ok = tag();
    await okMonitor(ok);
    await s.gql(CREATE_GATE, { input: { service: 'both', env: 'prod', rules: [monitorRule('stored', { query: t })] } });
    const r = await d.evaluate({ service: 'both', env: 'prod', configuration: { rules: [jitMonitor('inline', { query: ok })] } });
    const final = (await d.follow(r.data.evaluateGate.id)).at(-1);
    assert.equal(final.justInTime, true);
    assert.equal(final.gateId, null);
    assert.deepEqual(
      final.rules.map((x: any) => [x.name, x.status]),
      [['inline', 'PASS']],
    );
  });

  test('the same idempotencyKey returns the first evaluation, not a second one', async () => {
    const t = tag();
    await okMonitor(t);
    const input = { service: 'idem', env: 'prod', idempotencyKey: `deploy-${t}`, configuration: { rules: [jitMonitor('m', { query: t })] } };
    const a = (await d.evaluate(input)).data.evaluateGate;
    const b = (await d.evaluate(input)).data.evaluateGate;
    assert.equal(b.id, a.id);
    const count = (await s.sql<{ n: number }>('select count(*) as n from evaluations where idempotency_key = ?', input.idempotencyKey))[0]!;
    assert.equal(count.n, 1);
    const other = await d.evaluate({ ...input, service: 'other' });
    assert.equal(code(other), 'CONFLICT');
    // A retry carries the same version; a different version (or primary tag) under the same key is
    // another deploy, which must not be answered with the first one's verdict.
    for (const change of [{ version: 'v2' }, { primaryTag: 'region:eu' }]) {
      const first = (await d.evaluate({ ...input, idempotencyKey: `deploy-${t}-${Object.keys(change)[0]}`, version: 'v1' })).data.evaluateGate;
      assert.ok(first.id);
      const reused = await d.evaluate({ ...input, idempotencyKey: `deploy-${t}-${Object.keys(change)[0]}`, version: 'v1', ...change });
      assert.equal(code(reused), 'CONFLICT', JSON.stringify(change));
      assert.equal(reused.errors![0]!.extensions?.field, 'input.idempotencyKey');
      const retried = (await d.evaluate({ ...input, idempotencyKey: `deploy-${t}-${Object.keys(change)[0]}`, version: 'v1' })).data.evaluateGate;
      assert.equal(retried.id, first.id);
    }
  });

  test('requests racing on one idempotencyKey get what a later duplicate gets: the winner, a conflict, or their own env’s evaluation', async () => {
    const t = tag();
    await okMonitor(t);
    const idempotencyKey = `race-${t}`;
    const configuration = { rules: [jitMonitor('m', { query: t })] };
    const staging = await s.createKey(['evaluations:write', 'gates:read'], ['staging']);
    const requests: Array<[Record<string, unknown>, string | undefined]> = [];
    for (let i = 0; i < 4; i++) {
      requests.push([{ service: 'race-a', env: 'prod', idempotencyKey, configuration }, undefined]);
      requests.push([{ service: 'race-b', env: 'prod', idempotencyKey, configuration }, undefined]);
      requests.push([{ service: 'race-a', env: 'staging', idempotencyKey, configuration }, staging]);
    }
    const EVALUATE = 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }';
    const answer = (r: any) => (r.errors ? { code: code(r), field: r.errors[0].extensions?.field, message: r.errors[0].message } : { id: r.data.evaluateGate.id });
    // All in flight at once, each on its own HTTP request.
    const raced = (await Promise.all(requests.map(([i, key]) => s.gql(EVALUATE, { i }, key)))).map(answer);
    const sequential = [];
    for (const [i, key] of requests) sequential.push(answer(await s.gql(EVALUATE, { i }, key)));
    assert.deepEqual(raced, sequential);

    const rows = (await s.sql('select id, service, env from evaluations where idempotency_key = ? order by env', idempotencyKey)) as Array<{
      id: string;
      service: string;
      env: string;
    }>;
    assert.deepEqual(
      rows.map((r) => r.env),
      ['prod', 'staging'],
      'one evaluation per environment',
    );
    const [prod, stagingRow] = rows;
    raced.forEach((a, i) => {
      const [input] = requests[i]!;
      if (input.env === 'staging') assert.deepEqual(a, { id: stagingRow!.id }, 'staging gets its own evaluation, never the prod one');
      else if (input.service === prod!.service) assert.deepEqual(a, { id: prod!.id });
      else assert.deepEqual(a, { code: 'CONFLICT', field: 'input.idempotencyKey', message: 'idempotencyKey was already used for a different service or identifier' });
    });
  });

  test('rules are snapshotted: editing the gate mid-window changes nothing', async () => {
    const t = tag();
    const id = await okMonitor(t);
    const gate = (await s.gql(CREATE_GATE, { input: { service: 'snap', env: 'prod', rules: [monitorRule('m', { query: t, duration: 2 })] } })).data.createGate;
    const ev = (await d.evaluate({ service: 'snap', env: 'prod' })).data.evaluateGate;
    await s.gql('mutation($id: ID!) { updateRule(id: $id, input: { dryRun: true, options: { monitor: { query: "nothing:matches" } } }) { id } }', { id: gate.rules[0].id });
    await s.gql('mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }', { id: gate.id });
    await d.report(id, 'ALERT');
    const final = (await d.follow(ev.id)).at(-1);
    assert.equal(final.dryRun, false);
    assert.equal(final.rules[0].dryRun, false);
    assert.equal(final.status, 'FAIL');
    assert.equal(final.reportedStatus, 'FAIL');
  });
});

describe('dry run, decided and finished', () => {
  test('a dry-run gate reports PASS while its real status is FAIL', async () => {
    const t = tag();
    await alertMonitor(t);
    const r = await d.evaluate({ service: 'dry', env: 'prod', configuration: { dryRun: true, rules: [jitMonitor('m', { query: t })] } });
    const final = (await d.follow(r.data.evaluateGate.id)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.equal(final.reportedStatus, 'PASS');
    assert.equal(final.dryRun, true);
  });

  test('a failing dry-run rule is recorded but not counted', async () => {
    const bad = tag();
    await alertMonitor(bad);
    const good = tag();
    await okMonitor(good);
    const r = await d.evaluate({
      service: 'dry',
      env: 'prod',
      configuration: { rules: [jitMonitor('would fail', { query: bad }, true), jitMonitor('real', { query: good })] },
    });
    const final = (await d.follow(r.data.evaluateGate.id)).at(-1);
    assert.deepEqual(
      final.rules.map((x: any) => [x.name, x.dryRun, x.status]),
      [
        ['would fail', true, 'FAIL'],
        ['real', false, 'PASS'],
      ],
    );
    assert.equal(final.status, 'PASS');
  });

  test('a real failure decides at once; the other rules run to their end and are recorded', async () => {
    const bad = tag();
    await alertMonitor(bad);
    const good = tag();
    await okMonitor(good);
    const r = await d.evaluate({
      service: 'early',
      env: 'prod',
      configuration: { rules: [jitMonitor('fails now', { query: bad }), jitMonitor('runs on', { query: good, duration: 2 })] },
    });
    const events = await d.follow(r.data.evaluateGate.id);
    const decided = events.find((e) => e.status === 'FAIL');
    assert.ok(decided, 'a FAIL snapshot was pushed');
    assert.equal(decided.finishedAt, null, 'decided before the slow rule finished');
    assert.equal(decided.rules[1].status, 'IN_PROGRESS');
    const final = events.at(-1);
    assert.equal(final.status, 'FAIL');
    assert.equal(final.rules[1].status, 'PASS');
    assert.ok(new Date(final.finishedAt) > new Date(final.decidedAt));
  });
});

describe('subscriptions', () => {
  test('a subscriber sees IN_PROGRESS, each rule change, and the verdict, in order', async () => {
    const a = tag();
    await okMonitor(a);
    const r = await d.evaluate({
      service: 'sub',
      env: 'prod',
      configuration: { rules: [jitMonitor('quick', { query: a }), jitMonitor('slower', { query: a, duration: 1 })] },
    });
    const events = await d.follow(r.data.evaluateGate.id);
    const revisions = events.map((e) => e.revision);
    assert.deepEqual(
      revisions,
      [...revisions].sort((x, y) => x - y),
      'revisions only grow',
    );
    assert.equal(new Set(revisions).size, revisions.length, 'no snapshot twice');
    assert.equal(events.at(-1).status, 'PASS');
    const progression = events.map((e) => e.rules.map((x: any) => x.status).join('/'));
    assert.ok(progression.includes('PASS/IN_PROGRESS'), progression.join(' → '));
    assert.equal(progression.at(-1), 'PASS/PASS');
  });

  test('a subscriber that arrives after the end gets the final state at once, then completion', async () => {
    const t = tag();
    await okMonitor(t);
    const r = await d.evaluate({ service: 'late', env: 'prod', configuration: { rules: [jitMonitor('m', { query: t })] } });
    await d.follow(r.data.evaluateGate.id);
    const late = await d.follow(r.data.evaluateGate.id);
    assert.equal(late.length, 1);
    assert.equal(late[0].status, 'PASS');
    assert.ok(late[0].finishedAt);
  });

  test('evaluationEvents streams every change of matching evaluations only', async () => {
    const t = tag();
    await okMonitor(t);
    const client = s.ws();
    const sub = await subscribeLive(s, client, `subscription { evaluationEvents(filter: { service: ["stream-me"] }) { service status } }`);
    await d.evaluate({ service: 'not-me', env: 'prod', configuration: { rules: [jitMonitor('m', { query: t })] } });
    await d.evaluate({ service: 'stream-me', env: 'prod', configuration: { rules: [jitMonitor('m', { query: t })] } });
    const first = await sub.next();
    const second = await sub.next();
    assert.deepEqual(
      [first.data, second.data],
      [{ evaluationEvents: { service: 'stream-me', status: 'IN_PROGRESS' } }, { evaluationEvents: { service: 'stream-me', status: 'PASS' } }],
    );
    sub.dispose();
  });

  test('evaluationUpdated for an unknown id is NOT_FOUND', async () => {
    const sub = subscribeQueue(s.ws(), 'subscription { evaluationUpdated(id: "0190a000-0000-7000-8000-000000000000") { id } }');
    const ev = await sub.next();
    assert.equal((ev.errors?.[0] as any)?.extensions?.code, 'NOT_FOUND');
  });
});

describe('cancel, rerun, history', () => {
  test('cancel stops a running evaluation; a finished one cannot be canceled', async () => {
    const t = tag();
    await okMonitor(t);
    const r = await d.evaluate({ service: 'cancel', env: 'prod', configuration: { rules: [jitMonitor('long', { query: t, duration: 3600 })] } });
    const id = r.data.evaluateGate.id;
    const c = await s.gql(`mutation($id: ID!) { cancelEvaluation(id: $id) { ${EVALUATION_FIELDS} } }`, { id });
    assert.equal(c.data.cancelEvaluation.status, 'CANCELED');
    assert.equal(c.data.cancelEvaluation.reportedStatus, 'CANCELED');
    assert.equal(c.data.cancelEvaluation.rules[0].status, 'CANCELED');
    assert.match(c.data.cancelEvaluation.rules[0].reason, /Canceled by bootstrap/);
    const again = await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id });
    assert.equal(code(again), 'CONFLICT');
    assert.equal(s.app.engine.stats().activeRules, 0, 'nothing of it left in the scheduler');
  });

  test('rerun starts a new evaluation with the same inputs and rules', async () => {
    const t = tag();
    await okMonitor(t);
    const r = await d.evaluate({ service: 'rerun', env: 'prod', version: 'v9', primaryTag: 'region:eu', configuration: { rules: [jitMonitor('m', { query: t })] } });
    const first = (await d.follow(r.data.evaluateGate.id)).at(-1);
    const again = await s.gql(`mutation($id: ID!) { rerunEvaluation(id: $id) { ${EVALUATION_FIELDS} } }`, { id: first.id });
    const second = again.data.rerunEvaluation;
    assert.notEqual(second.id, first.id);
    assert.equal(second.rerunOf, first.id);
    assert.deepEqual([second.service, second.version, second.primaryTag], ['rerun', 'v9', 'region:eu']);
    assert.deepEqual(
      second.rules.map((x: any) => x.name),
      ['m'],
    );
    assert.equal((await d.follow(second.id)).at(-1).status, 'PASS');
  });

  test('evaluations are listed newest first, filtered and paged; stats count real statuses', async () => {
    const ok = tag();
    await okMonitor(ok);
    const bad = tag();
    await alertMonitor(bad);
    const ids: string[] = [];
    for (const [i, q] of [ok, bad, ok, bad, bad].entries()) {
      const r = await d.evaluate({ service: 'hist', env: 'prod', version: `v${i}`, configuration: { rules: [jitMonitor('m', { query: q })] } });
      ids.push(r.data.evaluateGate.id);
      await d.follow(r.data.evaluateGate.id);
    }
    const list = await s.gql('{ evaluations(first: 3, filter: { service: ["hist"] }) { edges { node { id } } pageInfo { hasNextPage endCursor } } }');
    assert.deepEqual(
      list.data.evaluations.edges.map((e: any) => e.node.id),
      ids.slice().reverse().slice(0, 3),
    );
    const next = await s.gql('query($a: String) { evaluations(first: 3, after: $a, filter: { service: ["hist"] }) { edges { node { id } } } }', {
      a: list.data.evaluations.pageInfo.endCursor,
    });
    assert.deepEqual(
      next.data.evaluations.edges.map((e: any) => e.node.id),
      ids.slice().reverse().slice(3),
    );
    const failed = await s.gql('{ evaluations(first: 10, filter: { service: ["hist"], status: [FAIL], version: ["v1", "v3"] }) { edges { node { version } } } }');
    assert.deepEqual(
      failed.data.evaluations.edges.map((e: any) => e.node.version),
      ['v3', 'v1'],
    );

    const stats = await s.gql(
      '{ evaluationStats(filter: { service: ["hist"] }) { total byStatus { status count } byDay { day status count } mostFailingGates { service failures evaluations } mostFailingRules { name failures evaluations } } }',
    );
    const st = stats.data.evaluationStats;
    assert.equal(st.total, 5);
    assert.deepEqual(Object.fromEntries(st.byStatus.map((b: any) => [b.status, b.count])), { PASS: 2, FAIL: 3 });
    assert.deepEqual(st.mostFailingGates, [{ service: 'hist', failures: 3, evaluations: 5 }]);
    assert.deepEqual(st.mostFailingRules, [{ name: 'm', failures: 3, evaluations: 5 }]);
    assert.equal(
      st.byDay.reduce((n: number, b: any) => n + b.count, 0),
      5,
    );
  });
});
