// Issue 9, item 1: no key learns anything about a monitor, gate or evaluation outside its
// environments, through rule verdicts, reasons, evidence, errors or idempotency keys.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ruleEvaluationFor } from '../src/domain/ruleEvidence.ts';
import { ADMIN_KEY, CREATE_GATE, driver, jitMonitor, sleep, startServer, subscribeLive, type TestServer, wsOnce } from './helpers.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
let staging: string;
before(async () => {
  s = await startServer();
  d = driver(s);
  staging = await s.createKey(['gates:write', 'evaluations:write'], ['staging']);
});
after(() => s.stop());

const FIELDS = `id env status reportedStatus finishedAt
  rules { name status reason evidenceJson
    evidence { matchedMonitors { id name groups } failingGroups { monitorId monitorName group state since url } } }`;
const EVALUATE = `mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { ${FIELDS} } }`;
const READ = `query($id: ID!) { evaluation(id: $id) { ${FIELDS} } }`;
const FOLLOW = `subscription($id: ID!) { evaluationUpdated(id: $id) { ${FIELDS} } }`;
const EVENTS = `subscription($f: EvaluationFilter) { evaluationEvents(filter: $f) { ${FIELDS} } }`;

let n = 0;
/** Names no other test uses: each test has its own service, monitors and groups. */
function world() {
  const t = `t${++n}-${randomUUID().slice(0, 8)}`;
  return { service: `svc-${t}`, prodName: `prod-secret-xmon-${t}`, prodGroup: `host:prodbox-${t}`, stagingName: `staging-mon-${t}` };
}

/** A prod monitor in ALERT and a staging monitor OK, both tagged with the world's service. */
async function monitors(w: ReturnType<typeof world>) {
  const prod = await d.monitor(w.prodName, ['env:prod', `service:${w.service}`]);
  await d.report(prod, 'ALERT', w.prodGroup);
  const stagingMonitor = await d.monitor(w.stagingName, ['env:staging', `service:${w.service}`]);
  await d.report(stagingMonitor, 'OK', 'host:stagebox');
  return { prod, staging: stagingMonitor };
}

/** Fails when anything a reader got names the prod monitor: its name, id or group. */
function assertNothingOf(what: string, value: unknown, secrets: string[]) {
  const text = JSON.stringify(value);
  for (const secret of secrets) assert.ok(!text.includes(secret), `${what} reveals "${secret}": ${text}`);
}

async function gqlAs(key: string, query: string, variables?: Record<string, unknown>) {
  const r = await s.gql(query, variables, key);
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data;
}

/** Polls until the evaluation has finished (every rule ran to its end), as `key` reads it. */
async function finished(key: string, id: string) {
  for (let i = 0; i < 100; i++) {
    const e = (await gqlAs(key, READ, { id })).evaluation;
    if (e.finishedAt) return e;
    await sleep(50);
  }
  throw new Error(`evaluation ${id} did not finish`);
}

/** Every read path of one evaluation as `key` sees it, once it has finished. */
async function everyView(key: string, id: string) {
  const query = await finished(key, id);
  const follow = await wsOnce(s.ws(key), FOLLOW, { id });
  assert.equal(follow.errors, undefined, JSON.stringify(follow.errors));
  const rest = await s.request('GET', `/api/v2/deployments/gates/evaluation/${id}`, { key });
  assert.equal(rest.status, 200, rest.text);
  const history = await s.request('GET', `/api/v2/deployment_gates/evaluations/rules?filter[gate_evaluation_id]=${id}`, { key });
  assert.equal(history.status, 200, history.text);
  assert.equal(history.json.data.length, query.rules.length);
  return { query, subscription: follow.data!.evaluationUpdated, rest: rest.json, history: history.json };
}

/** Subscribes `key` to a service's evaluation events; `until` collects them up to the finished one. */
async function events(key: string, service: string) {
  const sub = await subscribeLive(s, s.ws(key), EVENTS, { f: { service: [service] } });
  return {
    async until(id: string) {
      const seen: any[] = [];
      for (;;) {
        const ev = await sub.next(15_000);
        assert.equal(ev.errors, undefined, JSON.stringify(ev.errors));
        const e = (ev.data as any).evaluationEvents;
        if (e.id !== id) continue;
        seen.push(e);
        if (e.finishedAt) break;
      }
      sub.dispose();
      return seen;
    },
  };
}

describe('rules match only monitors the trigger may see', () => {
  test('a staging key cannot reach prod monitors with a just-in-time rule', async () => {
    const w = world();
    const { prod, staging: stagingMonitor } = await monitors(w);
    const secrets = [w.prodName, prod, w.prodGroup];
    const live = await events(staging, w.service);
    const rules = [
      // Matches both monitors by tag: only the staging one (OK) may count, so the rule passes.
      jitMonitor('by-service', { query: `service:${w.service}` }),
      jitMonitor('by-env', { query: 'env:prod' }),
      jitMonitor('by-name', { query: `name:*xmon-${w.service.slice(4)}*` }),
      jitMonitor('by-ids', {
        monitorIds: [
          { id: prod, groups: [] },
          { id: stagingMonitor, groups: [] },
        ],
      }),
      jitMonitor('by-prod-id', { monitorIds: [{ id: prod, groups: [] }] }),
    ];
    const started = await gqlAs(staging, EVALUATE, { i: { service: w.service, env: 'staging', configuration: { rules } } });
    const id = started.evaluateGate.id;
    const views = await everyView(staging, id);
    const seenLive = await live.until(id);
    // The prod monitor id is the caller's own input: in by-prod-id's reason (checked below) and
    // in the rules' configuration the history shows.
    for (const r of views.history.data) delete r.attributes.configuration;
    const withoutIdEcho = (v: any) => JSON.parse(JSON.stringify(v).replaceAll(`monitor ids ${prod}`, 'monitor ids X'));
    assertNothingOf('the trigger', withoutIdEcho(started), secrets);
    assertNothingOf('every read path', withoutIdEcho(views), secrets);
    assertNothingOf('evaluationEvents', withoutIdEcho(seenLive), secrets);

    const byName = Object.fromEntries(views.query.rules.map((r: any) => [r.name, r]));
    assert.equal(byName['by-service'].status, 'PASS', byName['by-service'].reason);
    assert.deepEqual(
      byName['by-service'].evidence.matchedMonitors.map((m: any) => m.name),
      [w.stagingName],
    );
    assert.equal(byName['by-ids'].status, 'PASS', byName['by-ids'].reason);
    for (const name of ['by-env', 'by-name', 'by-prod-id']) {
      assert.equal(byName[name].status, 'FAIL');
      assert.match(byName[name].reason, /^No unmuted monitor matches/);
      assert.deepEqual(byName[name].evidence.matchedMonitors, []);
    }
    // A prod monitor's id behaves exactly as an id that does not exist.
    const ghost = randomUUID();
    const other = await gqlAs(staging, EVALUATE, {
      i: { service: w.service, env: 'staging', configuration: { rules: [jitMonitor('by-prod-id', { monitorIds: [{ id: ghost, groups: [] }] })] } },
    });
    const ghostRule = (await finished(staging, other.evaluateGate.id)).rules[0];
    assert.deepEqual({ ...byName['by-prod-id'], reason: byName['by-prod-id'].reason.replace(prod, 'X') }, { ...ghostRule, reason: ghostRule.reason.replace(ghost, 'X') });
  });

  test('a stored staging gate evaluated by a staging key ignores the prod monitors its rule matches', async () => {
    const w = world();
    const { prod } = await monitors(w);
    const gate = await s.gql(CREATE_GATE, {
      input: { service: w.service, env: 'staging', rules: [{ name: 'service monitors', options: { monitor: { query: `service:${w.service}` } } }] },
    });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const started = await gqlAs(staging, EVALUATE, { i: { service: w.service, env: 'staging' } });
    const views = await everyView(staging, started.evaluateGate.id);
    assert.equal(views.query.status, 'PASS', views.query.rules[0].reason);
    assertNothingOf('every read path', views, [w.prodName, prod, w.prodGroup]);
    // The hooks trigger as the calling key too.
    const url = `/hooks/gate?service=${w.service}&env=staging&run=r1`;
    let hook = await s.request('GET', url, { key: staging });
    for (let i = 0; i < 100 && hook.json?.status === 'in_progress'; i++) {
      await sleep(50);
      hook = await s.request('GET', url, { key: staging });
    }
    assert.equal(hook.json.status, 'pass', hook.text);
    assertNothingOf('the gate hook', hook.json, [w.prodName, prod, w.prodGroup]);
  });

  test('a rerun matches what the rerunning key may see', async () => {
    const w = world();
    const { prod } = await monitors(w);
    const started = await gqlAs(ADMIN_KEY, EVALUATE, {
      i: { service: w.service, env: 'staging', configuration: { rules: [jitMonitor('all', { query: `service:${w.service}` })] } },
    });
    assert.equal((await finished(ADMIN_KEY, started.evaluateGate.id)).status, 'FAIL', 'the unlimited trigger sees the prod ALERT');
    const rerun = await gqlAs(staging, 'mutation($id: ID!) { rerunEvaluation(id: $id) { id } }', { id: started.evaluateGate.id });
    const asAdmin = await finished(ADMIN_KEY, rerun.rerunEvaluation.id);
    assert.equal(asAdmin.status, 'PASS', asAdmin.rules[0].reason);
    assertNothingOf('the rerun, even read by an unlimited key', asAdmin, [w.prodName, prod, w.prodGroup]);
  });
});

describe('evidence shown to a reader holds only what the reader may see', () => {
  test("an unlimited key's evaluation of a staging gate watching a prod monitor, read by a staging key", async () => {
    const w = world();
    const { prod } = await monitors(w);
    const secrets = [w.prodName, prod, w.prodGroup];
    const gate = await s.gql(CREATE_GATE, {
      input: { service: w.service, env: 'staging', rules: [{ name: 'service monitors', options: { monitor: { query: `service:${w.service}` } } }] },
    });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const live = await events(staging, w.service);
    const started = await gqlAs(ADMIN_KEY, EVALUATE, { i: { service: w.service, env: 'staging' } });
    const id = started.evaluateGate.id;

    // The unlimited key sees everything.
    const full = await everyView(ADMIN_KEY, id);
    assert.equal(full.query.status, 'FAIL');
    assert.match(full.query.rules[0].reason, new RegExp(`"${w.prodName}" \\(${w.prodGroup}\\) was ALERT`));
    assert.deepEqual(
      full.query.rules[0].evidence.failingGroups.map((g: any) => g.monitorId),
      [prod],
    );
    assert.deepEqual(full.query.rules[0].evidence.matchedMonitors.map((m: any) => m.name).sort(), [w.prodName, w.stagingName].sort());
    assert.ok(JSON.stringify(full.rest).includes(w.prodName));
    assert.ok(JSON.stringify(full.history).includes(prod));

    // The staging key: the verdict stays, the prod monitor is gone from everything.
    const limited = await everyView(staging, id);
    const seenLive = await live.until(id);
    assertNothingOf('every read path', limited, secrets);
    assertNothingOf('evaluationEvents', seenLive, secrets);
    assert.equal(limited.query.status, 'FAIL');
    assert.equal(limited.rest.data.attributes.gate_status, 'fail');
    const rule = limited.query.rules[0];
    assert.equal(rule.status, 'FAIL');
    assert.deepEqual(
      rule.evidence.matchedMonitors.map((m: any) => m.name),
      [w.stagingName],
    );
    assert.deepEqual(rule.evidence.failingGroups, []);
    assert.deepEqual(rule.evidenceJson.failingGroups, []);
    // No count of what was withheld either: not "2 monitors", not "1 more".
    assert.doesNotMatch(rule.reason, /\d+ (monitor|group)|ALERT/);
    assert.deepEqual(limited.history.data[0].attributes.failures.monitors, []);

    // The hook answers the same evaluation (same run) to the staging key in its own terms.
    const url = `/hooks/gate?service=${w.service}&env=staging&run=r2`;
    let hook = await s.request('GET', url);
    for (let i = 0; i < 100 && hook.json?.status === 'in_progress'; i++) {
      await sleep(50);
      hook = await s.request('GET', url);
    }
    assert.equal(hook.json.status, 'fail');
    assert.ok(JSON.stringify(hook.json).includes(w.prodName), 'the unlimited caller sees the prod monitor');
    const limitedHook = await s.request('GET', url, { key: staging });
    assert.equal(limitedHook.json.evaluation_id, hook.json.evaluation_id);
    assert.equal(limitedHook.json.status, 'fail');
    assertNothingOf('the gate hook', limitedHook.json, secrets);
    const flagger = await s.request('POST', `/hooks/flagger?service=${w.service}&env=staging&run=r2`, { key: staging });
    assert.equal(flagger.status, 412);
    assertNothingOf('the Flagger hook', flagger.json, secrets);
  });
});

describe('the reader view fails closed', () => {
  const rule = (evidence: Record<string, unknown> | null, reason: string, extra: Record<string, unknown> = {}) =>
    ({ id: 'r', evaluationId: 'e', type: 'monitor', status: 'fail', reason, evidence, lastError: null, consecutiveErrors: 0, ...extra }) as any;
  const stagingReader = { envs: ['staging'] };

  test("a source error naming another env's monitor is withheld, its verdict kept", () => {
    const viewed = ruleEvaluationFor(
      stagingReader,
      { triggerEnvs: null },
      rule(
        {
          matchedMonitors: [
            { id: 'm-prod', name: 'prod-db-latency', groups: 1, envs: ['prod'] },
            { id: 'm-st', name: 'staging-ok', groups: 1, envs: ['staging'] },
          ],
          failingGroups: [],
          sourceErrors: 4,
          lastError: 'monitor "prod-db-latency": timeout',
        },
        'The data source failed 4 times in a row (last: monitor "prod-db-latency": timeout); the gate\'s onSourceError policy makes the rule fail.',
        { lastError: 'monitor "prod-db-latency": timeout', consecutiveErrors: 4 },
      ),
    );
    assertNothingOf('the view', viewed, ['prod-db-latency', 'm-prod']);
    assert.equal(viewed.status, 'fail');
    assert.deepEqual(
      (viewed.evidence as any).matchedMonitors.map((m: any) => m.name),
      ['staging-ok'],
    );
  });

  test('evidence recorded before entries carried envs is shown to unlimited readers only', () => {
    const old = rule(
      {
        matchedMonitors: [{ id: 'm1', name: 'old-monitor', groups: 1 }],
        failingGroups: [{ monitorId: 'm1', monitorName: 'old-monitor', group: '*', state: 'alert', since: 'x', url: 'u' }],
      },
      'Monitor "old-monitor" was ALERT at x.',
    );
    // Such rows were triggered before trigger_envs existed: null, as if by an unlimited key.
    assertNothingOf('a limited reader', ruleEvaluationFor(stagingReader, { triggerEnvs: null }, old), ['old-monitor', 'm1']);
    assert.equal(ruleEvaluationFor({ envs: null }, { triggerEnvs: null }, old), old);
    // An error recorded without the list of monitors cannot be vouched for either.
    const bare = rule({ sourceErrors: 1, lastError: 'monitor "old-monitor": down' }, 'The data source failed (1 of 4 tries): monitor "old-monitor": down. Retrying.', {
      status: 'in_progress',
    });
    assertNothingOf('a limited reader', ruleEvaluationFor(stagingReader, { triggerEnvs: null }, bare), ['old-monitor']);
  });

  test('a reader who sees every env of the trigger sees the rule as recorded', () => {
    const r = rule({ matchedMonitors: [{ id: 'm', name: 'n', groups: 1, envs: ['staging'] }], failingGroups: [] }, 'All 1 monitor(s), 1 group(s) were OK or WARN at x.');
    assert.equal(ruleEvaluationFor({ envs: ['staging', 'prod'] }, { triggerEnvs: ['staging'] }, r), r);
  });
});

describe("another environment's ids answer as ids that do not exist", () => {
  test('evaluations, gates and rules, over GraphQL and REST', async () => {
    const w = world();
    const gate = await s.gql(CREATE_GATE, { input: { service: w.service, env: 'prod', rules: [{ name: 'r', options: { monitor: { query: 'env:prod' } } }] } });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const gateId = gate.data.createGate.id;
    const ruleId = gate.data.createGate.rules[0].id;
    const evaluationId = (await gqlAs(ADMIN_KEY, EVALUATE, { i: { service: w.service, env: 'prod' } })).evaluateGate.id;

    /** What the staging key gets for `id`, with the id itself blanked out. */
    const answer = async (call: (id: string) => Promise<unknown>, id: string) => JSON.stringify(await call(id)).replaceAll(id, '<id>');
    const same = async (what: string, call: (id: string) => Promise<unknown>, prodId: string) => {
      const forProd = await answer(call, prodId);
      const forNothing = await answer(call, randomUUID());
      assert.equal(forProd, forNothing, what);
      assert.doesNotMatch(forProd, /prod|FORBIDDEN|limited to/, what);
    };
    const gql =
      (query: string, extra: Record<string, unknown> = {}) =>
      async (id: string) => {
        const r = await s.gql(query, { id, ...extra }, staging);
        return { data: r.data, errors: r.errors?.map((e) => ({ message: e.message, code: e.extensions?.code, field: e.extensions?.field })) };
      };
    const rest = (method: string, path: (id: string) => string, body?: unknown) => async (id: string) => {
      const r = await s.request(method, path(id), { key: staging, body });
      return { status: r.status, body: r.json };
    };
    const ws = (query: string) => async (id: string) => {
      const r = await wsOnce(s.ws(staging), query, { id });
      return { data: r.data, errors: r.errors?.map((e: any) => ({ message: e.message, code: e.extensions?.code })) };
    };

    await same('evaluation', gql('query($id: ID!) { evaluation(id: $id) { id } }'), evaluationId);
    await same('cancelEvaluation', gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }'), evaluationId);
    await same('rerunEvaluation', gql('mutation($id: ID!) { rerunEvaluation(id: $id) { id } }'), evaluationId);
    await same('evaluationUpdated', ws('subscription($id: ID!) { evaluationUpdated(id: $id) { id } }'), evaluationId);
    await same(
      'REST evaluation result',
      rest('GET', (id) => `/api/v2/deployments/gates/evaluation/${id}`),
      evaluationId,
    );

    await same('gate', gql('query($id: ID!) { gate(id: $id) { id } }'), gateId);
    await same('updateGate', gql('mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }'), gateId);
    await same('deleteGate', gql('mutation($id: ID!) { deleteGate(id: $id) }'), gateId);
    await same('createRule', gql('mutation($id: ID!) { createRule(gateId: $id, input: { name: "x", options: { monitor: { query: "a" } } }) { id } }'), gateId);
    await same(
      'REST gate',
      rest('GET', (id) => `/api/v2/deployment_gates/${id}`),
      gateId,
    );
    await same(
      'REST gate update',
      rest('PUT', (id) => `/api/v2/deployment_gates/${id}`, { data: { type: 'deployment_gate', attributes: { dry_run: true } } }),
      gateId,
    );
    await same(
      'REST gate delete',
      rest('DELETE', (id) => `/api/v2/deployment_gates/${id}`),
      gateId,
    );
    await same(
      'REST rules',
      rest('GET', (id) => `/api/v2/deployment_gates/${id}/rules`),
      gateId,
    );
    await same(
      'REST rule create',
      rest('POST', (id) => `/api/v2/deployment_gates/${id}/rules`, { data: { type: 'deployment_rule', attributes: { name: 'x', type: 'monitor', options: { query: 'a' } } } }),
      gateId,
    );

    await same('rule', gql('query($id: ID!) { rule(id: $id) { id } }'), ruleId);
    await same('updateRule', gql('mutation($id: ID!) { updateRule(id: $id, input: { dryRun: true }) { id } }'), ruleId);
    await same('deleteRule', gql('mutation($id: ID!) { deleteRule(id: $id) }'), ruleId);
    await same(
      'REST rule',
      rest('GET', (id) => `/api/v2/deployment_gates/${gateId}/rules/${id}`),
      ruleId,
    );
    await same(
      'REST rule update',
      rest('PUT', (id) => `/api/v2/deployment_gates/${gateId}/rules/${id}`, { data: { type: 'deployment_rule', attributes: { dry_run: true } } }),
      ruleId,
    );
    await same(
      'REST rule delete',
      rest('DELETE', (id) => `/api/v2/deployment_gates/${gateId}/rules/${id}`),
      ruleId,
    );

    // Monitors the same, for a key that may write them.
    const monitorKey = await s.createKey(['monitors:write'], ['staging']);
    const prodMonitor = await d.monitor(`prod-${w.service}`, ['env:prod']);
    const asMonitorKey = (query: string) => async (id: string) => {
      const r = await s.gql(query, { id }, monitorKey);
      return { data: r.data, errors: r.errors?.map((e) => ({ message: e.message, code: e.extensions?.code, field: e.extensions?.field })) };
    };
    await same('monitor', asMonitorKey('query($id: ID!) { monitor(id: $id) { id } }'), prodMonitor);
    await same('updateMonitor', asMonitorKey('mutation($id: ID!) { updateMonitor(id: $id, input: { muted: true }) { id } }'), prodMonitor);
    await same('deleteMonitor', asMonitorKey('mutation($id: ID!) { deleteMonitor(id: $id) }'), prodMonitor);
    await same('reportMonitorState', asMonitorKey('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }'), prodMonitor);

    // Nothing was touched.
    const still = await gqlAs(ADMIN_KEY, 'query($g: ID!, $e: ID!) { gate(id: $g) { dryRun rules { id } } evaluation(id: $e) { status } }', { g: gateId, e: evaluationId });
    assert.deepEqual(still.gate, { dryRun: false, rules: [{ id: ruleId }] });
    const monitor = await gqlAs(ADMIN_KEY, 'query($id: ID!) { monitor(id: $id) { muted groups { group } } }', { id: prodMonitor });
    assert.deepEqual(monitor.monitor, { muted: false, groups: [] });

    // The hooks name an environment, not an id: another one is refused whether or not its gate exists.
    const hook = async (service: string) => {
      const r = await s.request('GET', `/hooks/gate?service=${service}&env=prod&run=x`, { key: staging });
      return { status: r.status, body: JSON.stringify(r.json).replaceAll(service, '<service>') };
    };
    assert.deepEqual(await hook(w.service), await hook(`nothing-${w.service}`));
  });
});

describe('monitors read only their own environments', () => {
  test("a staging key cannot make an APM monitor that measures prod's traffic", async () => {
    const key = await s.createKey(['monitors:write'], ['staging']);
    const apm = (env: string) => ({
      i: { name: `apm-${env}-${randomUUID()}`, type: 'APM', tags: ['env:staging'], critical: 0.05, apm: { metric: 'ERROR_RATE', service: 'checkout', env } },
    });
    const create = 'mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }';
    const refused = await s.gql(create, apm('prod'), key);
    assert.equal(refused.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(refused));
    assert.equal(refused.errors?.[0]?.extensions?.field, 'input.apm.env');
    assert.equal((await s.gql(create, apm('staging'), key)).errors, undefined);
    assert.equal((await s.gql(create, apm('prod'))).errors, undefined, 'an unlimited key may');
  });

  test('a limited key cannot write PromQL, which reads every environment', async () => {
    const key = await s.createKey(['monitors:write'], ['staging']);
    const create = 'mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }';
    const promql = { i: { name: `promql-${randomUUID()}`, type: 'PROMETHEUS', tags: ['env:staging'], query: 'sum(rate(http_errors_total{env="prod"}[5m]))', critical: 1 } };
    const refused = await s.gql(create, promql, key);
    assert.equal(refused.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(refused));
    assert.equal(refused.errors?.[0]?.extensions?.field, 'input.type');
    const made = await s.gql<{ createMonitor: { id: string } }>(create, promql);
    assert.equal(made.errors, undefined, 'an unlimited key may');
    // Nor may it rewrite the expression of a PromQL monitor it can see.
    const visible = await s.gql<{ createMonitor: { id: string } }>(create, { i: { ...promql.i, name: `promql-${randomUUID()}`, query: 'up' } });
    const update = 'mutation($id: ID!, $i: UpdateMonitorInput!) { updateMonitor(id: $id, input: $i) { id } }';
    const rewritten = await s.gql(update, { id: visible.data!.createMonitor.id, i: { query: 'up{env="prod"}' } }, key);
    assert.equal(rewritten.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(rewritten));
    assert.equal(rewritten.errors?.[0]?.extensions?.field, 'input.query');
  });
});

describe('idempotency keys', () => {
  test('a key used in prod and reused by a staging key reveals nothing', async () => {
    const w = world();
    const rules = [jitMonitor('r', { query: 'env:prod' })];
    const key = `deploy-${w.service}`;
    const prodEvaluation = await gqlAs(ADMIN_KEY, EVALUATE, { i: { service: w.service, env: 'prod', idempotencyKey: key, configuration: { rules } } });
    const used = await s.gql(
      `mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id env } }`,
      { i: { service: w.service, env: 'staging', idempotencyKey: key, configuration: { rules } } },
      staging,
    );
    const fresh = await s.gql(
      `mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id env } }`,
      { i: { service: w.service, env: 'staging', idempotencyKey: `${key}-never-used`, configuration: { rules } } },
      staging,
    );
    // Both start a staging evaluation of their own: the prod one is neither returned nor hinted at.
    assert.equal(used.errors, undefined, JSON.stringify(used.errors));
    assert.equal(fresh.errors, undefined, JSON.stringify(fresh.errors));
    assert.equal(used.data.evaluateGate.env, 'staging');
    assert.notEqual(used.data.evaluateGate.id, prodEvaluation.evaluateGate.id);
    // Within staging the key still answers the same request with the same evaluation.
    const again = await s.gql(
      `mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }`,
      { i: { service: w.service, env: 'staging', idempotencyKey: key, configuration: { rules } } },
      staging,
    );
    assert.equal(again.data.evaluateGate.id, used.data.evaluateGate.id);
    // And in prod the first evaluation is still the key's.
    const prodAgain = await gqlAs(ADMIN_KEY, `mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }`, {
      i: { service: w.service, env: 'prod', idempotencyKey: key, configuration: { rules } },
    });
    assert.equal(prodAgain.evaluateGate.id, prodEvaluation.evaluateGate.id);
    // Over REST the same.
    const viaRest = await s.request('POST', '/api/v2/deployments/gates/evaluation', {
      key: staging,
      body: { data: { type: 'deployment_gates_evaluation_request', attributes: { service: w.service, env: 'staging', idempotency_key: key } } },
    });
    assert.notEqual(viaRest.status, 500, viaRest.text);
    assertNothingOf('REST', viaRest.json, [prodEvaluation.evaluateGate.id, 'prod', 'already used']);
  });
});
