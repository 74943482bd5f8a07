// The public GraphQL API the explorer (issue 11) is built on, tried as internal tooling would:
// counts, rule filters, typed evidence, filters, facets and insights, each within the caller's
// environments.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readFddEvidence } from '../src/domain/fddEvidence.ts';
import { normalizeReason, readableReason } from '../src/domain/insights.ts';
import { CREATE_GATE, driver, jitMonitor, monitorRule, startServer, subscribeLive, subscribeQueue, type TestServer } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
before(async () => {
  s = await startServer();
  d = driver(s);
});
after(() => s.stop());

let n = 0;
const tag = () => `explorer:t${++n}`;

function code(r: { errors?: Array<{ extensions?: Record<string, any> }> }) {
  return r.errors?.[0]?.extensions?.code;
}
function field(r: { errors?: Array<{ extensions?: Record<string, any> }> }) {
  return r.errors?.[0]?.extensions?.field;
}

async function must(query: string, variables?: Record<string, unknown>, key?: string) {
  const r = await s.gql(query, variables, key);
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data;
}

/** A monitor in `env` in the given state, and a just-in-time evaluation of it that finishes at once. */
async function monitorIn(env: string, state: 'OK' | 'ALERT', name = `${state.toLowerCase()} ${env}`) {
  const t = tag();
  const id = await d.monitor(name, [t, `env:${env}`]);
  await d.report(id, state);
  return t;
}

async function finished(input: Record<string, unknown>) {
  const r = await d.evaluate(input);
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return (await d.follow(r.data.evaluateGate.id)).at(-1);
}

describe('totalCount', () => {
  test('every connection counts what its filter selects, only within the caller’s environments, and only when asked', async () => {
    const okProd = await monitorIn('count-prod', 'OK');
    const okStaging = await monitorIn('count-staging', 'OK');
    for (let i = 0; i < 3; i++) await finished({ service: 'counted', env: 'count-prod', configuration: { rules: [jitMonitor('m', { query: okProd })] } });
    await finished({ service: 'counted', env: 'count-staging', configuration: { rules: [jitMonitor('m', { query: okStaging })] } });
    await s.gql(CREATE_GATE, { input: { service: 'counted', env: 'count-prod', rules: [monitorRule('m', { query: okProd })] } });
    await s.gql(CREATE_GATE, { input: { service: 'counted', env: 'count-staging' } });

    const q = `query($f: EvaluationFilter, $g: GateFilter) {
      evaluations(filter: $f, first: 1) { totalCount edges { node { id } } }
      gates(filter: $g, first: 1) { totalCount edges { node { id } } }
      monitors(query: "explorer:*", first: 1) { totalCount edges { node { id } } } }`;
    const all = await must(q, { f: { service: ['counted'] }, g: { service: 'counted' } });
    assert.equal(all.evaluations.totalCount, 4);
    assert.equal(all.evaluations.edges.length, 1);
    assert.equal(all.gates.totalCount, 2);
    assert.equal(all.monitors.totalCount >= 2, true);

    const prodOnly = await must(q, { f: { service: ['counted'], env: ['count-prod'] }, g: { service: 'counted', env: 'count-prod' } });
    assert.equal(prodOnly.evaluations.totalCount, 3);
    assert.equal(prodOnly.gates.totalCount, 1);

    // A key limited to staging counts only staging, whatever its filter asks for.
    const staging = await s.createKey(['gates:read'], ['count-staging']);
    const limited = await must(q, { f: { service: ['counted'] }, g: { service: 'counted' } }, staging);
    assert.equal(limited.evaluations.totalCount, 1);
    assert.equal(limited.gates.totalCount, 1);
    assert.equal(limited.monitors.totalCount, 1);
    const asked = await must(q, { f: { service: ['counted'], env: ['count-prod'] }, g: { service: 'counted', env: 'count-prod' } }, staging);
    assert.equal(asked.evaluations.totalCount, 0);
    assert.equal(asked.gates.totalCount, 0);

    // Not selected, not counted.
    s.queries.length = 0;
    await must('{ evaluations(first: 1) { edges { node { id } } } gates(first: 1) { edges { node { id } } } }');
    assert.deepEqual(
      s.queries.filter((x) => /count\(\*\)/.test(x)),
      [],
    );
    await must('{ evaluations(first: 1) { totalCount } }');
    assert.equal(s.queries.filter((x) => /count\(\*\)/.test(x) && /from "evaluations"/.test(x)).length, 1);
  });
});

describe('Evaluation.rules(status:)', () => {
  test('keeps only the rules with the statuses asked for, in their order; an empty or absent list keeps all', async () => {
    const ok = await monitorIn('rules-prod', 'OK');
    const bad = await monitorIn('rules-prod', 'ALERT');
    const e = await finished({
      service: 'rules',
      env: 'rules-prod',
      configuration: { rules: [jitMonitor('fine', { query: ok }), jitMonitor('broken', { query: bad }), jitMonitor('also broken', { query: bad })] },
    });
    assert.equal(e.status, 'FAIL');
    const q = `query($id: ID!, $st: [EvaluationStatus!]) { evaluation(id: $id) { rules(status: $st) { name status reason } } }`;
    const failing = (await must(q, { id: e.id, st: ['FAIL'] })).evaluation.rules;
    assert.deepEqual(
      failing.map((r: any) => r.name),
      ['broken', 'also broken'],
    );
    assert.match(failing[0].reason, /ALERT/);
    assert.deepEqual(
      (await must(q, { id: e.id, st: ['PASS', 'CANCELED'] })).evaluation.rules.map((r: any) => r.name),
      ['fine'],
    );
    assert.equal((await must(q, { id: e.id, st: [] })).evaluation.rules.length, 3);
    assert.equal((await must(q, { id: e.id })).evaluation.rules.length, 3);
    // A list page asks every row for its failing rules in one query.
    const page = await must(`{ evaluations(filter: { service: ["rules"] }, first: 5) { edges { node { rules(status: [FAIL]) { name } } } } }`);
    assert.deepEqual(
      page.evaluations.edges[0].node.rules.map((r: any) => r.name),
      ['broken', 'also broken'],
    );
    const long = await s.gql(q, { id: e.id, st: Array(101).fill('FAIL') });
    assert.equal(code(long), 'BAD_USER_INPUT');
    assert.equal(field(long), 'status');
  });
});

describe('RuleEvaluation.fddEvidence', () => {
  let ingestKey: string;
  before(async () => {
    ingestKey = await s.createKey(['ingest']);
  });

  /** `count` server spans of `resource` spread over the first 900 ms after `from`, the first `errors` failed with `errorType`. */
  const spans = (service: string, version: string, resource: string, count: number, errors: number, errorType: string, from: number) =>
    sendTraffic(s, { service, version, resource, count, errors, errorType, message: `${errorType} at row 42`, from, spreadMs: 900, env: 'fdd-prod' }, ingestKey);

  const FDD_EVIDENCE = `fddEvidence { version baseline baselineVersions tests alpha canaryRequests largestEValue clustering { resources aggregate spells baselineDispersion placebo { instances degreesOfFreedom factor } }
    familyEValue familyThreshold
    faultyResources { scope name canary { requests errors errorRate } baseline { requests errors errorRate } eValue threshold jointly }
    newErrorTypes { errorType count resources sampleMessage eValue threshold jointly } insufficientData requestsNeeded sourceErrors }`;

  test('a failing canary: the faulty resource with both sides’ counts and rates, its e-value against its threshold, the new error type with a sample', async () => {
    const r = await d.evaluate({
      service: 'typed-fdd',
      env: 'fdd-prod',
      version: 'v2',
      configuration: { rules: [{ name: 'fdd', options: { faultyDeploymentDetection: { duration: 600 } } }] },
    });
    const ev = r.data.evaluateGate;
    const from = Date.parse(ev.startedAt);
    await new Promise((res) => setTimeout(res, from + 1000 - Date.now()));
    await spans('typed-fdd', 'v1', 'GET /cart', 2000, 20, 'TimeoutError', from);
    await spans('typed-fdd', 'v1', 'POST /pay', 2000, 20, 'TimeoutError', from);
    await spans('typed-fdd', 'v2', 'GET /cart', 400, 4, 'TimeoutError', from);
    await spans('typed-fdd', 'v2', 'POST /pay', 400, 120, 'CardDeclinedPanic', from);
    const final = (await d.follow(ev.id, 30_000)).at(-1);
    assert.equal(final.status, 'FAIL', final.rules[0].reason);

    const prodKey = await s.createKey(['gates:read'], ['fdd-prod']);
    const q = `query($id: ID!) { evaluation(id: $id) { rules(status: [FAIL]) { type ${FDD_EVIDENCE} } } }`;
    for (const key of [undefined, prodKey]) {
      const rule = (await must(q, { id: ev.id }, key)).evaluation.rules[0];
      const e = rule.fddEvidence;
      assert.equal(e.version, 'v2');
      assert.equal(e.baseline, 'CONCURRENT');
      assert.deepEqual(e.baselineVersions, ['v1']);
      assert.equal(e.canaryRequests, 800);
      assert.equal(e.insufficientData, false);
      // One bucket of baseline: no block to measure spells on, so no deflation.
      assert.equal(e.clustering.spells, 1);
      assert.ok(e.clustering.baselineDispersion >= 1, JSON.stringify(e.clustering));
      // The spans name no pod: no placebo instances.
      assert.equal(e.clustering.placebo, null);
      const pay = e.faultyResources.find((f: any) => f.name === 'POST /pay');
      assert.ok(pay, JSON.stringify(e.faultyResources));
      assert.equal(pay.scope, 'RESOURCE');
      assert.deepEqual(pay.canary, { requests: 400, errors: 120, errorRate: 0.3 });
      assert.deepEqual(pay.baseline, { requests: 2000, errors: 20, errorRate: 0.01 });
      assert.ok(pay.eValue >= pay.threshold && pay.threshold > 1, `${pay.eValue} ≥ ${pay.threshold}`);
      assert.equal(pay.jointly, false);
      assert.equal(e.familyThreshold, 1 / e.alpha);
      assert.ok(e.familyEValue === null || e.familyEValue >= 0);
      const panic = e.newErrorTypes.find((t: any) => t.errorType === 'CardDeclinedPanic');
      assert.ok(panic, JSON.stringify(e.newErrorTypes));
      assert.equal(panic.count, 120);
      assert.deepEqual(panic.resources, ['POST /pay']);
      assert.equal(panic.sampleMessage, 'CardDeclinedPanic at row 42');
    }
    // Another environment's key does not see the evaluation at all.
    const staging = await s.createKey(['gates:read'], ['fdd-staging']);
    assert.equal((await must(q, { id: ev.id }, staging)).evaluation, null);
  });

  test('a canary without traffic: insufficient data and the requests it needed; monitor rules have no FDD evidence', async () => {
    const ok = await monitorIn('fdd-prod', 'OK');
    const r = await d.evaluate({
      service: 'quiet-fdd',
      env: 'fdd-prod',
      version: 'v9',
      configuration: { rules: [{ name: 'fdd', options: { faultyDeploymentDetection: { duration: 1 } } }, jitMonitor('m', { query: ok })] },
    });
    const final = (await d.follow(r.data.evaluateGate.id, 30_000)).at(-1);
    const rules = (await must(`query($id: ID!) { evaluation(id: $id) { rules { name insufficientData ${FDD_EVIDENCE} } } }`, { id: final.id })).evaluation.rules;
    assert.equal(rules[0].fddEvidence.insufficientData, true);
    assert.equal(rules[0].insufficientData, true);
    assert.equal(rules[0].fddEvidence.canaryRequests, 0);
    assert.deepEqual(rules[0].fddEvidence.faultyResources, []);
    assert.equal(rules[1].fddEvidence, null);
  });

  test('evidence written by another version of the rule reads with what it has: missing or mistyped fields are null or empty', () => {
    assert.equal(readFddEvidence(null), null);
    assert.equal(readFddEvidence([1, 2]), null);
    const old = readFddEvidence({
      version: 'v2',
      faultyResources: [{ name: 'GET /a', canary: { requests: 10 } }, { scope: 'resource' }, 'junk'],
      newErrorTypes: [{ errorType: 'X', resources: ['a', 3] }],
      clustering: 'no',
    })!;
    assert.equal(old.version, 'v2');
    assert.equal(old.baseline, null);
    assert.deepEqual(old.baselineVersions, []);
    assert.equal(old.insufficientData, false);
    assert.equal(old.clustering, null);
    assert.deepEqual(old.faultyResources, [
      {
        scope: null,
        name: 'GET /a',
        canary: { requests: 10, errors: null, errorRate: null },
        baseline: { requests: null, errors: null, errorRate: null },
        eValue: null,
        threshold: null,
        jointly: false,
      },
    ]);
    assert.deepEqual(old.newErrorTypes, [{ errorType: 'X', count: null, resources: ['a'], sampleMessage: null, eValue: null, threshold: null, jointly: false }]);
  });
});

describe('viewer', () => {
  test('any valid key reads itself: name, scopes as given and as they act, envs; a bad key is UNAUTHENTICATED', async () => {
    const key = await s.createKey(['gates:write'], ['viewer-staging']);
    const q = '{ viewer { id name scopes effectiveScopes envs expiresAt } }';
    const me = (await must(q, undefined, key)).viewer;
    assert.equal(me.name, 'key-gates:write');
    assert.deepEqual(me.scopes, ['GATES_WRITE']);
    assert.deepEqual(me.effectiveScopes, ['GATES_READ', 'GATES_WRITE']);
    assert.deepEqual(me.envs, ['viewer-staging']);
    assert.equal(me.expiresAt, null);
    const admin = (await must(q)).viewer;
    assert.equal(admin.envs, null);
    assert.ok(admin.effectiveScopes.includes('ADMIN') && admin.effectiveScopes.includes('EVALUATIONS_WRITE'));
    const bad = await s.gql(q, undefined, 'tgk_not_a_key_at_all_0000000000');
    assert.equal(code(bad), 'UNAUTHENTICATED');
  });
});

describe('filters of one shape', () => {
  test('monitors(filter:) by state, type and muted beside the search string, counted within the key’s envs', async () => {
    const t = tag();
    const ids: Record<string, string> = {};
    for (const [name, state, env] of [
      ['a', 'ALERT', 'mf-prod'],
      ['b', 'OK', 'mf-prod'],
      ['c', 'WARN', 'mf-staging'],
      ['d', 'ALERT', 'mf-staging'],
    ] as const) {
      ids[name] = await d.monitor(`mf ${name}`, [t, `env:${env}`], name === 'b' ? { muted: true } : {});
      await d.report(ids[name]!, state);
    }
    ids.silent = await d.monitor('mf silent', [t, 'env:mf-prod']);
    const q = `query($q: String, $f: MonitorFilter) { monitors(query: $q, filter: $f) { totalCount edges { node { name state } } } }`;
    const names = async (f: Record<string, unknown>, key?: string) => {
      const r = (await must(q, { q: t, f }, key)).monitors;
      assert.equal(r.totalCount, r.edges.length);
      return r.edges.map((e: any) => e.node.name);
    };
    assert.deepEqual(await names({ states: ['ALERT'] }), ['mf a', 'mf d']);
    assert.deepEqual(await names({ states: ['ALERT', 'WARN'] }), ['mf a', 'mf c', 'mf d']);
    assert.deepEqual(await names({ muted: true }), ['mf b']);
    assert.deepEqual(await names({ muted: false, states: ['OK', 'ALERT'] }), ['mf a', 'mf d']);
    assert.deepEqual(await names({ types: ['EXTERNAL'] }), ['mf a', 'mf b', 'mf c', 'mf d', 'mf silent']);
    assert.deepEqual(await names({ types: ['APM'] }), []);
    // The silent monitor has no state: no state filter selects it.
    assert.deepEqual(await names({ states: ['OK', 'WARN', 'ALERT', 'NO_DATA'] }), ['mf a', 'mf b', 'mf c', 'mf d']);
    const staging = await s.createKey(['gates:read'], ['mf-staging']);
    assert.deepEqual(await names({ states: ['ALERT'] }, staging), ['mf d']);
    const long = await s.gql(q, { f: { states: Array(101).fill('OK') } });
    assert.equal(code(long), 'BAD_USER_INPUT');
    assert.equal(field(long), 'filter.states');
  });

  test('GateFilter takes lists like EvaluationFilter; the single-valued fields still work, deprecated', async () => {
    for (const [service, env] of [
      ['gf-a', 'gf-prod'],
      ['gf-b', 'gf-prod'],
      ['gf-a', 'gf-staging'],
      ['gf-c', 'gf-dev'],
    ]) {
      const r = await s.gql(CREATE_GATE, { input: { service, env } });
      assert.equal(r.errors, undefined);
    }
    const q = `query($f: GateFilter) { gates(filter: $f, first: 50) { totalCount edges { node { service env } } } }`;
    const keys = async (f: Record<string, unknown>, key?: string) => (await must(q, { f }, key)).gates.edges.map((e: any) => `${e.node.service}/${e.node.env}`);
    assert.deepEqual(await keys({ services: ['gf-a', 'gf-b'] }), ['gf-a/gf-prod', 'gf-b/gf-prod', 'gf-a/gf-staging']);
    assert.deepEqual(await keys({ services: ['gf-a', 'gf-b', 'gf-c'], envs: ['gf-prod', 'gf-dev'] }), ['gf-a/gf-prod', 'gf-b/gf-prod', 'gf-c/gf-dev']);
    assert.deepEqual(await keys({ service: 'gf-a' }), ['gf-a/gf-prod', 'gf-a/gf-staging']);
    assert.deepEqual(await keys({ service: 'gf-a', envs: ['gf-staging', 'gf-dev'] }), ['gf-a/gf-staging']);
    // A document written against the old field, with a variable typed String, is still valid.
    const old = await must('query($e: String) { gates(filter: { env: $e }) { edges { node { service } } } }', { e: 'gf-dev' });
    assert.deepEqual(
      old.gates.edges.map((e: any) => e.node.service),
      ['gf-c'],
    );
    const dev = await s.createKey(['gates:read'], ['gf-dev']);
    assert.deepEqual(await keys({ services: ['gf-a', 'gf-c'] }, dev), ['gf-c/gf-dev']);
    const long = await s.gql(q, { f: { envs: Array(101).fill('x') } });
    assert.equal(field(long), 'filter.envs');
    const sdl = await import('node:fs').then((fs) => fs.readFileSync(new URL('../schema/schema.graphql', import.meta.url), 'utf8'));
    assert.match(sdl, /env: String @deprecated\(reason: "Use envs, a list\."\)/);
  });
});

describe('evaluation facets and rule filters', () => {
  const FACETS = `query($f: EvaluationFilter, $top: Int) { evaluationFacets(filter: $f, top: $top) { startedAfter startedBefore
    service { value count } env { value count } identifier { value count } version { value count } status { value count }
    dryRun { value count } gate { value count label } ruleType { value count } ruleName { value count } } }`;
  const asMap = (values: Array<{ value: string; count: number }>) => Object.fromEntries(values.map((v) => [v.value, v.count]));

  test('each facet lists its values with counts over the range, leaving out its own selection, within the key’s envs', async () => {
    const okProd = await monitorIn('fc-prod', 'OK');
    const badProd = await monitorIn('fc-prod', 'ALERT');
    const okStaging = await monitorIn('fc-staging', 'OK');
    const gate = (await must(CREATE_GATE, { input: { service: 'fc-web', env: 'fc-prod', rules: [monitorRule('stored', { query: okProd })] } })).createGate;
    await finished({ service: 'fc-web', env: 'fc-prod', version: 'v1' });
    await finished({ service: 'fc-web', env: 'fc-prod', version: 'v2', configuration: { rules: [jitMonitor('alerts', { query: badProd })] } });
    await finished({
      service: 'fc-api',
      env: 'fc-prod',
      version: 'v2',
      configuration: { dryRun: true, rules: [jitMonitor('alerts', { query: badProd }), jitMonitor('fine', { query: okProd })] },
    });
    await finished({ service: 'fc-api', env: 'fc-staging', version: 'v3', configuration: { rules: [jitMonitor('fine', { query: okStaging })] } });

    const all = (await must(FACETS, { f: { service: ['fc-web', 'fc-api'] } })).evaluationFacets;
    assert.equal(asMap(all.service)['fc-web'], 2);
    assert.equal(asMap(all.service)['fc-api'], 2);
    assert.deepEqual(asMap(all.env), { 'fc-prod': 3, 'fc-staging': 1 });
    assert.deepEqual(asMap(all.version), { v2: 2, v1: 1, v3: 1 });
    assert.deepEqual(asMap(all.status), { FAIL: 2, PASS: 2 });
    assert.deepEqual(asMap(all.dryRun), { false: 3, true: 1 });
    assert.deepEqual(all.gate, [{ value: gate.id, count: 1, label: 'fc-web/fc-prod/default' }]);
    assert.deepEqual(asMap(all.ruleType), { MONITOR: 4 });
    assert.deepEqual(asMap(all.ruleName), { alerts: 2, fine: 2, stored: 1 });
    assert.ok(Date.parse(all.startedBefore) - Date.parse(all.startedAfter) === 7 * 24 * 3600_000, 'default range: 7 days');

    // Choosing a service narrows the other facets, not its own.
    const web = (await must(FACETS, { f: { service: ['fc-web'], env: ['fc-prod', 'fc-staging'] } })).evaluationFacets;
    assert.deepEqual(asMap(web.service), { 'fc-web': 2, 'fc-api': 2 });
    assert.deepEqual(asMap(web.version), { v1: 1, v2: 1 });
    assert.deepEqual(asMap(web.ruleName), { alerts: 1, stored: 1 });

    // The rule filters select evaluations by their rules, in the list and its count alike.
    const list = async (f: Record<string, unknown>, key?: string) =>
      (await must('query($f: EvaluationFilter) { evaluations(filter: $f) { totalCount edges { node { service version } } } }', { f }, key)).evaluations;
    const alerts = await list({ service: ['fc-web', 'fc-api'], ruleName: ['alerts'] });
    assert.equal(alerts.totalCount, 2);
    assert.deepEqual(
      alerts.edges.map((e: any) => `${e.node.service}@${e.node.version}`),
      ['fc-api@v2', 'fc-web@v2'],
    );
    assert.equal((await list({ service: ['fc-web', 'fc-api'], ruleType: ['FAULTY_DEPLOYMENT_DETECTION'] })).totalCount, 0);
    assert.equal((await list({ gateIds: [gate.id] })).totalCount, 1);

    // A key of one env: its facets count only that env, the env facet included.
    const staging = await s.createKey(['gates:read'], ['fc-staging']);
    const limited = (await must(FACETS, { f: { service: ['fc-web', 'fc-api'] } }, staging)).evaluationFacets;
    assert.deepEqual(asMap(limited.env), { 'fc-staging': 1 });
    assert.deepEqual(asMap(limited.service), { 'fc-api': 1 });
    assert.deepEqual(asMap(limited.ruleName), { fine: 1 });
    assert.deepEqual(limited.gate, []);
    const asked = (await must(FACETS, { f: { env: ['fc-prod'] } }, staging)).evaluationFacets;
    assert.deepEqual(asked.service, []);
    assert.deepEqual(asMap(asked.env), { 'fc-staging': 1 });

    // top bounds every list.
    assert.equal((await must(FACETS, { f: { service: ['fc-web', 'fc-api'] }, top: 1 })).evaluationFacets.ruleName.length, 1);
  });

  test('a range over 30 days, a reversed range, a bad top and a bad gate id are refused naming the field', async () => {
    const now = Date.now();
    const wide = await s.gql(FACETS, { f: { startedAfter: new Date(now - 31 * 86400_000).toISOString() } });
    assert.equal(code(wide), 'BAD_USER_INPUT');
    assert.equal(field(wide), 'filter.startedAfter');
    assert.match(wide.errors![0]!.message, /at most 30 days/);
    const reversed = await s.gql(FACETS, { f: { startedAfter: new Date(now).toISOString(), startedBefore: new Date(now - 1000).toISOString() } });
    assert.equal(field(reversed), 'filter.startedAfter');
    assert.equal(field(await s.gql(FACETS, { top: 0 })), 'top');
    assert.equal(field(await s.gql(FACETS, { top: 101 })), 'top');
    assert.equal(field(await s.gql(FACETS, { f: { gateIds: ['nope'] } })), 'filter.gateIds[0]');
    assert.equal(field(await s.gql(FACETS, { f: { ruleName: Array(101).fill('x') } })), 'filter.ruleName');
    const thirty = await s.gql(FACETS, { f: { startedAfter: new Date(now - 30 * 86400_000).toISOString(), startedBefore: new Date(now).toISOString() } });
    assert.equal(thirty.errors, undefined);
  });

  test('evaluationEvents takes the rule filters too', async () => {
    const ok = await monitorIn('fc-live', 'OK');
    const client = s.ws();
    const events = await subscribeLive(s, client, 'subscription { evaluationEvents(filter: { env: ["fc-live"], ruleName: ["wanted"] }) { service rules { name } } }');
    await finished({ service: 'fc-ignored', env: 'fc-live', configuration: { rules: [jitMonitor('other', { query: ok })] } });
    await finished({ service: 'fc-wanted', env: 'fc-live', configuration: { rules: [jitMonitor('wanted', { query: ok })] } });
    const first = await events.next();
    assert.equal(first.data.evaluationEvents.service, 'fc-wanted');
    await client.dispose();
  });
});

describe('insights', () => {
  const INSIGHTS = `query($f: EvaluationFilter, $top: Int) { evaluationInsights(filter: $f, top: $top) { startedAfter startedBefore
    days { day pass fail canceled inProgress total }
    mostFailingGates { gateId service env identifier failures evaluations }
    mostFailingRules { gateId ruleId service env identifier name type failures evaluations }
    failureReasons { pattern sample label ruleType count } failedRulesRead failedRulesComplete
    timeToVerdict { decided p50Seconds p90Seconds p95Seconds maxSeconds } } }`;

  test('most failing gates are gates by id and rules carry their gate and rule ids (evaluationStats too)', async () => {
    const bad = await monitorIn('ins-prod', 'ALERT');
    const gate = (await must(CREATE_GATE, { input: { service: 'ins-a', env: 'ins-prod', rules: [monitorRule('stored alert', { query: bad })] } })).createGate;
    await finished({ service: 'ins-a', env: 'ins-prod' });
    await finished({ service: 'ins-a', env: 'ins-prod' });
    // A just-in-time evaluation of the same key is not the gate.
    await finished({ service: 'ins-a', env: 'ins-prod', configuration: { rules: [jitMonitor('stored alert', { query: bad })] } });

    const insights = (await must(INSIGHTS, { f: { service: ['ins-a'] } })).evaluationInsights;
    assert.deepEqual(
      insights.mostFailingGates.map((g: any) => [g.gateId, g.failures, g.evaluations]),
      [
        [gate.id, 2, 2],
        [null, 1, 1],
      ],
    );
    assert.deepEqual(
      insights.mostFailingRules.map((r: any) => [r.gateId, r.ruleId, r.name, r.type, r.failures]),
      [
        [gate.id, gate.rules[0].id, 'stored alert', 'MONITOR', 2],
        [null, null, 'stored alert', 'MONITOR', 1],
      ],
    );
    const stats = (
      await must(
        `query($f: EvaluationFilter) { evaluationStats(filter: $f) {
      mostFailingGates { gateId failures } mostFailingRules { gateId ruleId failures } } }`,
        { f: { service: ['ins-a'] } },
      )
    ).evaluationStats;
    assert.deepEqual(stats.mostFailingGates, [
      { gateId: gate.id, failures: 2 },
      { gateId: null, failures: 1 },
    ]);
    assert.deepEqual(stats.mostFailingRules, [
      { gateId: gate.id, ruleId: gate.rules[0].id, failures: 2 },
      { gateId: null, ruleId: null, failures: 1 },
    ]);
  });

  test('a stored rule is one row whatever it was called (its newest name); just-in-time rules are their name and type', async () => {
    const bad = await monitorIn('ins-rename', 'ALERT');
    const gate = (await must(CREATE_GATE, { input: { service: 'ins-r', env: 'ins-rename', rules: [monitorRule('old name', { query: bad })] } })).createGate;
    await finished({ service: 'ins-r', env: 'ins-rename' });
    await must('mutation($id: ID!) { updateRule(id: $id, input: { name: "new name" }) { id } }', { id: gate.rules[0].id });
    await finished({ service: 'ins-r', env: 'ins-rename' });
    // Two just-in-time rules called "smoke", of two types: two rules, each with its own type.
    await finished({ service: 'ins-r', env: 'ins-rename', identifier: 'jit', configuration: { rules: [jitMonitor('smoke', { query: bad })] } });
    const fdd = { name: 'smoke', options: { faultyDeploymentDetection: { duration: 1, onInsufficientData: 'FAIL' } } };
    await finished({ service: 'ins-r', env: 'ins-rename', identifier: 'jit', version: 'v-none', configuration: { rules: [fdd] } });

    const rows = (q: any) => q.mostFailingRules.map((r: any) => [r.gateId, r.ruleId, r.name, r.type, r.failures, r.evaluations]);
    const expected = [
      [gate.id, gate.rules[0].id, 'new name', 'MONITOR', 2, 2],
      [null, null, 'smoke', 'FAULTY_DEPLOYMENT_DETECTION', 1, 1],
      [null, null, 'smoke', 'MONITOR', 1, 1],
    ];
    assert.deepEqual(rows((await must(INSIGHTS, { f: { service: ['ins-r'] } })).evaluationInsights), expected);
    const stats = await must('query($f: EvaluationFilter) { evaluationStats(filter: $f) { mostFailingRules { gateId ruleId name type failures evaluations } } }', {
      f: { service: ['ins-r'] },
    });
    assert.deepEqual(rows(stats.evaluationStats), expected);
  });

  test('per day with zeros, time to verdict, failure reasons grouped across times and ids', async () => {
    const ok = await monitorIn('ins-days', 'OK');
    const t1 = tag();
    const m1 = await d.monitor('payments latency', [t1, 'env:ins-days']);
    await d.report(m1, 'ALERT', 'host:a1b2c3d4e5f6');
    for (let i = 0; i < 3; i++) await finished({ service: 'ins-b', env: 'ins-days', configuration: { rules: [jitMonitor('latency', { query: t1 })] } });
    await finished({ service: 'ins-b', env: 'ins-days', configuration: { rules: [jitMonitor('fine', { query: ok })] } });
    const canceled = await d.evaluate({ service: 'ins-b', env: 'ins-days', configuration: { rules: [jitMonitor('long', { query: ok, duration: 3600 })] } });
    await must('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id: canceled.data.evaluateGate.id });

    const now = Date.now();
    const f = { service: ['ins-b'], startedAfter: new Date(now - 3 * 86400_000).toISOString(), startedBefore: new Date(now + 60_000).toISOString() };
    const i = (await must(INSIGHTS, { f })).evaluationInsights;
    assert.equal(
      i.days.length,
      Math.ceil(
        (Date.parse(f.startedBefore) - Date.UTC(...([new Date(f.startedAfter)].map((x) => [x.getUTCFullYear(), x.getUTCMonth(), x.getUTCDate()])[0] as [number, number, number]))) /
          86400_000,
      ),
    );
    const today = i.days.find((x: any) => x.day === new Date().toISOString().slice(0, 10));
    assert.deepEqual(today, { day: today.day, pass: 1, fail: 3, canceled: 1, inProgress: 0, total: 5 });
    assert.equal(
      i.days.reduce((n: number, x: any) => n + x.total, 0),
      5,
      'the other days are zeros',
    );

    assert.equal(i.timeToVerdict.decided, 4, 'pass and fail only');
    assert.ok(i.timeToVerdict.p50Seconds >= 0 && i.timeToVerdict.p50Seconds <= i.timeToVerdict.p90Seconds);
    assert.ok(i.timeToVerdict.p90Seconds <= i.timeToVerdict.p95Seconds && i.timeToVerdict.p95Seconds <= i.timeToVerdict.maxSeconds);

    // Three failures at three times, one group; the sample is a real reason.
    assert.equal(i.failureReasons.length, 1);
    assert.equal(i.failureReasons[0].count, 3);
    assert.equal(i.failureReasons[0].ruleType, 'MONITOR');
    assert.match(i.failureReasons[0].pattern, /^Monitor "payments latency" \(host:<id>\) was ALERT at <time>\.$/);
    assert.match(i.failureReasons[0].sample, /^Monitor "payments latency" \(host:a1b2c3d4e5f6\) was ALERT at \d{4}-/);
    // Read by people: the group's words without the time that differs between its failures.
    assert.equal(i.failureReasons[0].label, 'Monitor "payments latency" (host:a1b2c3d4e5f6) was ALERT.');
    assert.equal(i.failedRulesRead, 3);
    assert.equal(i.failedRulesComplete, true);

    const wide = await s.gql(INSIGHTS, { f: { startedAfter: new Date(now - 40 * 86400_000).toISOString() } });
    assert.equal(field(wide), 'filter.startedAfter');
  });

  test('a key of one env: its counts only, and failure reasons through the per-reader view (no other env’s monitor named)', async () => {
    const t = tag();
    const hidden = await d.monitor('secret-billing-monitor', [t, 'env:ins-other']);
    await d.report(hidden, 'ALERT');
    // Started by the admin key, whose rules see every env: the reason names the other env's monitor.
    const e = await finished({ service: 'ins-c', env: 'ins-prod2', configuration: { rules: [jitMonitor('cross', { query: t })] } });
    assert.equal(e.status, 'FAIL');
    assert.match(e.rules[0].reason, /secret-billing-monitor/);
    await finished({ service: 'ins-c', env: 'ins-other', configuration: { rules: [jitMonitor('cross', { query: t })] } });

    const reader = await s.createKey(['gates:read'], ['ins-prod2']);
    const i = (await must(INSIGHTS, { f: { service: ['ins-c'] } }, reader)).evaluationInsights;
    assert.equal(
      i.days.reduce((n: number, x: any) => n + x.total, 0),
      1,
    );
    assert.deepEqual(
      i.mostFailingGates.map((g: any) => g.env),
      ['ins-prod2'],
    );
    assert.equal(i.failureReasons.length, 1);
    assert.doesNotMatch(JSON.stringify(i.failureReasons), /secret-billing-monitor/);
    assert.match(i.failureReasons[0].sample, /outside your environments/);
    // The same reader sees the same words on the evaluation itself.
    const shown = (await must('query($id: ID!) { evaluation(id: $id) { rules { reason } } }', { id: e.id }, reader)).evaluation.rules[0].reason;
    assert.equal(i.failureReasons[0].sample, shown);
    // The admin sees both envs and the monitor's name.
    const admin = (await must(INSIGHTS, { f: { service: ['ins-c'] } })).evaluationInsights;
    assert.equal(admin.failureReasons[0].count, 2);
    assert.match(admin.failureReasons[0].sample, /secret-billing-monitor/);
  });

  test('normalizeReason: times, ids and numbers become placeholders; words and names stay', () => {
    assert.equal(
      normalizeReason('Version v2: error rate of GET /cart rose from 1.00% (baseline) to 9.80% (12 of 400 requests), e-value 1.2e+05 ≥ 234'),
      'Version v<n>: error rate of GET /cart rose from <n>% (baseline) to <n>% (<n> of <n> requests), e-value <n> ≥ <n>',
    );
    assert.equal(normalizeReason('evaluation 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b at 2026-01-31T12:00:00.123Z'), 'evaluation <id> at <time>');
  });

  test('readableReason: the times a group differs in are left out, with the words that introduce them', () => {
    assert.equal(
      readableReason('Monitor "a" was ALERT at 2026-01-31T12:00:00.123Z; "b" (host:1) was NO_DATA at 2026-01-31T12:01:00.000Z and 2 more group(s).'),
      'Monitor "a" was ALERT; "b" (host:1) was NO_DATA and 2 more group(s).',
    );
    assert.equal(
      readableReason('All 2 monitor(s), 3 group(s) were OK or WARN from 2026-01-31T12:00:00Z to 2026-01-31T12:05:00Z.'),
      'All 2 monitor(s), 3 group(s) were OK or WARN.',
    );
    assert.equal(readableReason('deploy frozen since 2026-01-31 12:00 by ops'), 'deploy frozen by ops');
    assert.equal(readableReason('stopped: 2026-01-31T12:00:00Z'), 'stopped: (a time)');
    assert.equal(readableReason('error rate of GET /cart rose from 1.00% to 9.80%'), 'error rate of GET /cart rose from 1.00% to 9.80%', 'numbers stay: only times go');
  });
});

describe('Gate.lastEvaluations', () => {
  test('each gate of a page with its newest evaluations, in one batch; not the just-in-time ones of its key', async () => {
    const ok = await monitorIn('le-prod', 'OK');
    const a = (await must(CREATE_GATE, { input: { service: 'le-a', env: 'le-prod', rules: [monitorRule('m', { query: ok })] } })).createGate;
    const b = (await must(CREATE_GATE, { input: { service: 'le-b', env: 'le-prod', rules: [monitorRule('m', { query: ok })] } })).createGate;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await finished({ service: 'le-a', env: 'le-prod', version: `v${i}` })).id);
    await finished({ service: 'le-a', env: 'le-prod', configuration: { rules: [jitMonitor('jit', { query: ok })] } });
    const q = `query($first: Int) { gates(filter: { services: ["le-a", "le-b"] }) { edges { node { id lastEvaluations(first: $first) { id version status } } } } }`;
    s.queries.length = 0;
    const gates = (await must(q, { first: 2 })).gates.edges.map((e: any) => e.node);
    assert.deepEqual(
      gates.map((g: any) => g.id),
      [a.id, b.id],
    );
    assert.deepEqual(
      gates[0].lastEvaluations.map((e: any) => e.id),
      [ids[2], ids[1]],
    );
    assert.deepEqual(gates[1].lastEvaluations, []);
    assert.equal(s.queries.filter((x) => /from "evaluations"/.test(x)).length, 2, 'one indexed read per gate');
    assert.equal(field(await s.gql(q, { first: 21 })), 'first');
  });
});

describe('RuleEvaluation.monitorTransitions', () => {
  test('the matched monitors’ state changes while the rule watched, oldest first, only monitors the reader may see', async () => {
    const t = tag();
    const seen = await d.monitor('tr visible', [t, 'env:tr-prod']);
    const hidden = await d.monitor('tr hidden', [t, 'env:tr-other']);
    await d.report(seen, 'OK');
    await d.report(hidden, 'OK');
    const r = await d.evaluate({ service: 'tr', env: 'tr-prod', configuration: { rules: [jitMonitor('watch', { query: t, duration: 2 })] } });
    const ev = r.data.evaluateGate;
    // Wait for the first check to record what the rule matched, then change states inside the window.
    for (let i = 0; i < 100 && !(await d.get(ev.id)).rules[0].evidence?.matchedMonitors?.length; i++) await new Promise((res) => setTimeout(res, 20));
    await d.report(seen, 'WARN');
    await d.report(hidden, 'WARN');
    await d.report(seen, 'OK');
    const final = (await d.follow(ev.id)).at(-1);
    assert.equal(final.status, 'PASS');
    await d.report(seen, 'WARN'); // after the window: not the rule's

    const q = `query($id: ID!, $first: Int) { evaluation(id: $id) { rules { monitorTransitions(first: $first) { monitorId monitorName group from to at } } } }`;
    const all = (await must(q, { id: ev.id })).evaluation.rules[0].monitorTransitions;
    assert.deepEqual(
      all.map((x: any) => [x.monitorName, x.from, x.to]),
      [
        ['tr visible', 'OK', 'WARN'],
        ['tr hidden', 'OK', 'WARN'],
        ['tr visible', 'WARN', 'OK'],
      ],
    );
    assert.deepEqual((await must(q, { id: ev.id, first: 1 })).evaluation.rules[0].monitorTransitions.length, 1);

    const reader = await s.createKey(['gates:read'], ['tr-prod']);
    const limited = (await must(q, { id: ev.id }, reader)).evaluation.rules[0].monitorTransitions;
    assert.deepEqual(
      limited.map((x: any) => [x.monitorName, x.to]),
      [
        ['tr visible', 'WARN'],
        ['tr visible', 'OK'],
      ],
    );
    assert.doesNotMatch(JSON.stringify(limited), new RegExp(hidden));

    assert.equal(field(await s.gql(q, { id: ev.id, first: 501 })), 'first');
  });
});

describe('monitorStateChanged(monitorId:)', () => {
  const WATCH = 'subscription($id: ID) { monitorStateChanged(monitorId: $id) { monitor { id name } to } }';

  test("one monitor's transitions only; another env's monitor is not found for a key limited to its own env", async () => {
    const mine = await d.monitor('ms one', [tag(), 'env:ms-staging']);
    const neighbour = await d.monitor('ms neighbour', [tag(), 'env:ms-staging']);
    const prod = await d.monitor('ms prod', [tag(), 'env:ms-prod']);
    const staging = await s.createKey(['gates:read'], ['ms-staging']);
    const client = s.ws(staging);
    const events = await subscribeLive(s, client, WATCH, { id: mine });
    await d.report(neighbour, 'ALERT');
    await d.report(mine, 'WARN');
    assert.deepEqual((await events.next()).data, { monitorStateChanged: { monitor: { id: mine, name: 'ms one' }, to: 'WARN' } });

    // The prod monitor reads as one that does not exist, before any event could tell otherwise.
    const refused = await subscribeQueue(client, WATCH, { id: prod }).next();
    assert.equal((refused.errors?.[0] as any)?.extensions?.code, 'NOT_FOUND', JSON.stringify(refused));
    assert.equal((refused.errors?.[0] as any)?.extensions?.field, 'monitorId');
    assert.doesNotMatch(JSON.stringify(refused), /ms prod/);
    const badId = await subscribeQueue(client, WATCH, { id: 'not-a-uuid' }).next();
    assert.equal((badId.errors?.[0] as any)?.extensions?.field, 'monitorId', JSON.stringify(badId));

    // Moved into prod after the subscription started: its changes are no longer heard.
    await must('mutation($id: ID!, $i: UpdateMonitorInput!) { updateMonitor(id: $id, input: $i) { id } }', { id: mine, i: { tags: ['env:ms-prod'] } });
    await d.report(mine, 'ALERT');
    await must('mutation($id: ID!, $i: UpdateMonitorInput!) { updateMonitor(id: $id, input: $i) { id } }', { id: mine, i: { tags: ['env:ms-staging'] } });
    await d.report(mine, 'OK');
    assert.deepEqual((await events.next()).data, { monitorStateChanged: { monitor: { id: mine, name: 'ms one' }, to: 'OK' } }, 'the prod-time ALERT was never sent');
    events.dispose();
    await client.dispose();
  });
});
