// The REST history endpoints against Datadog's documented filters (reference §4.7), on a real
// server: every filter of both list endpoints, the item attributes, the window, paging, bad
// input and what an env-limited key may learn.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN_KEY, driver, startServer, type TestServer } from './helpers.ts';

const HOUR = 3_600_000;
/** The server's clock runs this far from the real one; the oldest evaluation starts 25 h back. */
let offset = 0;
let s: TestServer;
let prodKey: string;

/** Evaluations by name, their rule evaluations' ids by `E1:canary`, rules of stored gates. */
const ev: Record<string, string> = {};
const ruleEval: Record<string, string> = {};
const label: Record<string, string> = {};
const startedAt: Record<string, string> = {};
const gateIds: Record<string, string> = {};
const ruleIds: Record<string, string> = {};

async function api(method: string, path: string, body?: unknown, key: string = ADMIN_KEY) {
  const res = await fetch(`${s.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json', 'DD-API-KEY': key },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const RULES = '/api/v2/deployment_gates/evaluations/rules';
const GATES = '/api/v2/deployment_gates/evaluations';

/** The rule evaluations a query lists (one page of 100), as `E2:api` labels, in order. */
async function rules(query: string, key = ADMIN_KEY): Promise<string[]> {
  const r = await api('GET', `${RULES}?page[size]=100${query}`, undefined, key);
  assert.equal(r.status, 200, `${query}: ${JSON.stringify(r.body)}`);
  return r.body.data.map((d: any) => label[d.id] ?? `unknown ${d.id}`);
}

/** The gate evaluations a query lists, as `E2` labels, in order. */
async function gates(query: string, key = ADMIN_KEY): Promise<string[]> {
  const r = await api('GET', `${GATES}?page[size]=100${query}`, undefined, key);
  assert.equal(r.status, 200, `${query}: ${JSON.stringify(r.body)}`);
  const names = Object.fromEntries(Object.entries(ev).map(([k, v]) => [v, k]));
  return r.body.data.map((d: any) => names[d.id] ?? `unknown ${d.id}`);
}

/** A 400 whose detail names the parameter at fault. */
async function refused(path: string, parameter: string, key = ADMIN_KEY): Promise<string> {
  const r = await api('GET', path, undefined, key);
  assert.equal(r.status, 400, `${path}: ${JSON.stringify(r.body)}`);
  const detail = r.body.errors[0].detail as string;
  assert.ok(detail.includes(parameter), `${path}: "${detail}" names ${parameter}`);
  return detail;
}

async function trigger(name: string, attributes: Record<string, unknown>) {
  const r = await api('POST', '/api/v2/deployments/gates/evaluation', { data: { type: 'deployment_gates_evaluation_request', attributes } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  ev[name] = r.body.data.attributes.evaluation_id;
}

async function storedGate(name: string, attributes: Record<string, unknown>, gateRules: Array<Record<string, unknown>>) {
  const g = await api('POST', '/api/v2/deployment_gates', { data: { type: 'deployment_gate', attributes } });
  assert.equal(g.status, 200, JSON.stringify(g.body));
  gateIds[name] = g.body.data.id;
  for (const attrs of gateRules) {
    const r = await api('POST', `/api/v2/deployment_gates/${g.body.data.id}/rules`, { data: { type: 'deployment_rule', attributes: attrs } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    ruleIds[`${name}:${attrs.name}`] = r.body.data.id;
  }
}

const monitorRule = (name: string, query: string, dry_run: boolean) => ({ name, type: 'monitor', dry_run, options: { query } });

/**
 * E0  25 h old   JIT   hist/prod/old, no version          canary(pass)
 * E1  gate G1 (dry run) hist/prod/default v1               canary(fail) api(dry run, pass)     real status fail
 * E2  JIT              hist/prod/blue v2                   canary(dry run, fail) api(pass) errors(FDD, dry run, in progress)   pass
 * E4  gate G2          hist/staging/default v4             canary(pass)                          pass
 */
before(async () => {
  s = await startServer({}, { now: () => new Date(Date.now() + offset) });
  const d = driver(s);
  await d.report(await d.monitor('history ok', ['hist:ok']), 'OK');
  await d.report(await d.monitor('history bad', ['hist:bad']), 'ALERT');
  prodKey = await s.createKey(['gates:read'], ['prod']);

  offset = -25 * HOUR;
  await trigger('E0', { service: 'hist', env: 'prod', identifier: 'old', configuration: { rules: [monitorRule('canary', 'hist:ok', false)] } });
  await d.follow(ev.E0!);
  offset = 0;

  await storedGate('G1', { service: 'hist', env: 'prod', dry_run: true }, [monitorRule('canary', 'hist:bad', false), monitorRule('api', 'hist:ok', true)]);
  await trigger('E1', { service: 'hist', env: 'prod', version: 'v1' });
  await d.follow(ev.E1!);

  await trigger('E2', {
    service: 'hist',
    env: 'prod',
    identifier: 'blue',
    version: 'v2',
    configuration: {
      rules: [
        monitorRule('canary', 'hist:bad', true),
        monitorRule('api', 'hist:ok', false),
        { name: 'errors', type: 'faulty_deployment_detection', dry_run: true, options: { duration: 3600 } },
      ],
    },
  });
  // Its FDD rule runs for an hour: wait for the verdict and the two monitor rules only.
  for (let i = 0; i < 400; i++) {
    const e = await d.get(ev.E2!);
    if (e.status !== 'IN_PROGRESS' && e.rules.filter((r: any) => r.type === 'MONITOR').every((r: any) => r.status !== 'IN_PROGRESS')) break;
    await new Promise((r) => setTimeout(r, 50));
  }

  await storedGate('G2', { service: 'hist', env: 'staging' }, [monitorRule('canary', 'hist:ok', false)]);
  await trigger('E4', { service: 'hist', env: 'staging', version: 'v4' });
  await d.follow(ev.E4!);

  for (const name of ['E0', 'E1', 'E2', 'E4']) {
    const e = await d.get(ev[name]!);
    startedAt[name] = e.startedAt;
    for (const r of e.rules) {
      ruleEval[`${name}:${r.name}`] = r.id;
      label[r.id] = `${name}:${r.name}`;
    }
  }
});
after(() => s.stop());

describe('GET /deployment_gates/evaluations/rules: Datadog filters', () => {
  test('the data set is as planned (the listing without filters, newest first, last 24 h)', async () => {
    assert.deepEqual(await rules(''), ['E4:canary', 'E2:canary', 'E2:api', 'E2:errors', 'E1:canary', 'E1:api']);
    const e2 = await driver(s).get(ev.E2!);
    assert.deepEqual(
      e2.rules.map((r: any) => `${r.name}:${r.status}`),
      ['canary:FAIL', 'api:PASS', 'errors:IN_PROGRESS'],
    );
  });

  test('filter[dry_run] is the rule dry run, filter[gate_dry_run] the gate dry run', async () => {
    assert.deepEqual(await rules('&filter[dry_run]=true'), ['E2:canary', 'E2:errors', 'E1:api']);
    assert.deepEqual(await rules('&filter[dry_run]=false'), ['E4:canary', 'E2:api', 'E1:canary']);
    assert.deepEqual(await rules('&filter[gate_dry_run]=true'), ['E1:canary', 'E1:api']);
    assert.deepEqual(await rules('&filter[gate_dry_run]=false'), ['E4:canary', 'E2:canary', 'E2:api', 'E2:errors']);
    assert.deepEqual(await rules('&filter[gate_dry_run]=true&filter[dry_run]=true'), ['E1:api']);
  });

  test('filter[status] is the rule status, ORed', async () => {
    assert.deepEqual(await rules('&filter[status]=fail'), ['E2:canary', 'E1:canary']);
    assert.deepEqual(await rules('&filter[status]=in_progress'), ['E2:errors']);
    assert.deepEqual(await rules('&filter[status]=pass'), ['E4:canary', 'E2:api', 'E1:api']);
    assert.deepEqual(await rules('&filter[status]=fail,in_progress'), ['E2:canary', 'E2:errors', 'E1:canary']);
    assert.deepEqual(await rules('&filter[status]=fail&filter[status]=in_progress'), ['E2:canary', 'E2:errors', 'E1:canary']);
  });

  test('filter[evaluation_id] is the rule evaluation, filter[gate_evaluation_id] the gate evaluation', async () => {
    assert.deepEqual(await rules(`&filter[evaluation_id]=${ruleEval['E2:api']}`), ['E2:api']);
    assert.deepEqual(await rules(`&filter[evaluation_id]=${ev.E2}`), [], 'a gate evaluation id is no rule evaluation');
    assert.deepEqual(await rules('&filter[evaluation_id]=0190a000-0000-7000-8000-000000000000'), []);
    assert.deepEqual(await rules(`&filter[gate_evaluation_id]=${ev.E1}`), ['E1:canary', 'E1:api']);
    assert.deepEqual(await rules(`&filter[gate_evaluation_id]=${ev.E1}&filter[evaluation_id]=${ruleEval['E1:api']}`), ['E1:api']);
    assert.deepEqual(await rules(`&filter[gate_evaluation_id]=${ev.E2}&filter[evaluation_id]=${ruleEval['E1:api']}`), []);
  });

  test('filter[rule_id] and filter[gate_id] are the configured rule and gate', async () => {
    assert.deepEqual(await rules(`&filter[rule_id]=${ruleIds['G1:canary']}`), ['E1:canary']);
    assert.deepEqual(await rules(`&filter[gate_id]=${gateIds.G1}`), ['E1:canary', 'E1:api']);
    assert.deepEqual(await rules(`&filter[gate_id]=${gateIds.G1}&filter[rule_id]=${ruleIds['G2:canary']}`), []);
  });

  test('filter[type] and filter[name]: repeated or comma-separated, ORed', async () => {
    assert.deepEqual(await rules('&filter[type]=faulty_deployment_detection'), ['E2:errors']);
    assert.deepEqual(await rules('&filter[type]=monitor,faulty_deployment_detection'), await rules(''));
    assert.deepEqual(await rules('&filter[type]=monitor&filter[type]=faulty_deployment_detection'), await rules(''));
    assert.deepEqual(await rules('&filter[name]=api&filter[name]=errors'), ['E2:api', 'E2:errors', 'E1:api']);
    assert.deepEqual(await rules('&filter[name]=api,errors'), ['E2:api', 'E2:errors', 'E1:api']);
    assert.deepEqual(await rules('&filter[name]=api&filter[type]=faulty_deployment_detection'), []);
  });

  test('gate filters: service, env, identifier, version (multi-valued)', async () => {
    assert.deepEqual(await rules('&filter[env]=staging'), ['E4:canary']);
    assert.deepEqual(await rules('&filter[service]=nope,hist&filter[env]=staging'), ['E4:canary']);
    assert.deepEqual(await rules('&filter[identifier]=blue'), ['E2:canary', 'E2:api', 'E2:errors']);
    assert.deepEqual(await rules('&filter[version]=v1,v4'), ['E4:canary', 'E1:canary', 'E1:api']);
    assert.deepEqual(await rules('&filter[version]=v1&filter[version]=v4'), ['E4:canary', 'E1:canary', 'E1:api']);
  });

  test('the window is on the gate evaluation start: from inclusive, to exclusive, 24 h by default', async () => {
    const t0 = Date.parse(startedAt.E0!);
    assert.deepEqual(await rules(`&filter[from]=${new Date(t0).toISOString()}&filter[to]=${new Date(t0 + 1).toISOString()}`), ['E0:canary']);
    assert.deepEqual(await rules(`&filter[from]=${new Date(t0 - HOUR).toISOString()}&filter[to]=${new Date(t0).toISOString()}`), []);
    assert.deepEqual(await rules(`&filter[from]=${new Date(t0 + 1).toISOString()}&filter[to]=${new Date(t0 + HOUR).toISOString()}`), []);
    // filter[to] alone: the 24 h before it.
    assert.deepEqual(await rules(`&filter[to]=${new Date(t0 + HOUR).toISOString()}`), ['E0:canary']);
    // As Python's client writes a datetime: microseconds and a +00:00 offset (URL-encoded).
    const python = (t: number) => encodeURIComponent(new Date(t).toISOString().replace('Z', '000+00:00'));
    assert.deepEqual(await rules(`&filter[from]=${python(t0)}&filter[to]=${python(t0 + 1)}`), ['E0:canary']);
    // filter[from] alone: up to now.
    assert.deepEqual((await rules(`&filter[from]=${new Date(t0).toISOString()}`)).at(-1), 'E0:canary');
  });

  test('each item carries the attributes Datadog documents', async () => {
    const r = await api('GET', `${RULES}?filter[gate_evaluation_id]=${ev.E1}`);
    const item = r.body.data[0];
    assert.equal(item.type, 'deployment_gate_rule_evaluation');
    assert.equal(item.id, ruleEval['E1:canary']);
    const a = item.attributes;
    for (const key of [
      'configuration',
      'dry_run',
      'gate_dry_run',
      'duration_seconds',
      'env',
      'evaluation_id',
      'gate_evaluation_id',
      'gate_id',
      'rule_id',
      'failures',
      'finished_at',
      'identifier',
      'name',
      'reason',
      'service',
      'started_at',
      'status',
      'type',
      'version',
    ]) {
      assert.ok(key in a, `attribute ${key}`);
    }
    assert.deepEqual(
      [a.evaluation_id, a.gate_evaluation_id, a.gate_id, a.rule_id, a.dry_run, a.gate_dry_run, a.status, a.type, a.name, a.identifier, a.version, a.env, a.service],
      [ruleEval['E1:canary'], ev.E1, gateIds.G1, ruleIds['G1:canary'], false, true, 'fail', 'monitor', 'canary', 'default', 'v1', 'prod', 'hist'],
    );
    assert.equal(a.configuration.query, 'hist:bad');
    assert.deepEqual(Object.keys(a.failures).sort(), ['faulty_apm_resources', 'monitors', 'narratives']);
    assert.equal(a.failures.monitors[0].state, 'ALERT');
    const jit = (await api('GET', `${RULES}?filter[evaluation_id]=${ruleEval['E2:errors']}`)).body.data[0].attributes;
    assert.deepEqual(
      [jit.gate_id, jit.rule_id, jit.status, jit.finished_at, jit.duration_seconds, jit.type],
      [null, null, 'in_progress', null, null, 'faulty_deployment_detection'],
    );
  });

  test('paged over what the filters keep: every page full, the last without next_cursor', async () => {
    const pages: string[][] = [];
    let cursor: string | undefined;
    do {
      const r = await api('GET', `${RULES}?filter[dry_run]=false&page[size]=1${cursor ? `&page[cursor]=${cursor}` : ''}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      pages.push(r.body.data.map((d: any) => label[d.id]));
      cursor = r.body.meta.page.next_cursor;
      assert.ok(pages.length <= 5, 'paging ends');
    } while (cursor);
    assert.deepEqual(pages, [['E4:canary'], ['E2:api'], ['E1:canary']]);
  });

  test('bad values are a 400 naming the parameter', async () => {
    await refused(`${RULES}?filter[dry_run]=yes`, 'filter[dry_run]');
    await refused(`${RULES}?filter[gate_dry_run]=1`, 'filter[gate_dry_run]');
    await refused(`${RULES}?filter[dry_run]=true&filter[dry_run]=false`, 'filter[dry_run]');
    await refused(`${RULES}?filter[status]=failed`, 'filter[status]');
    await refused(`${RULES}?filter[type]=bogus`, 'filter[type]');
    await refused(`${RULES}?filter[evaluation_id]=nope`, 'filter[evaluation_id]');
    await refused(`${RULES}?filter[gate_evaluation_id]=nope`, 'filter[gate_evaluation_id]');
    await refused(`${RULES}?filter[rule_id]=nope`, 'filter[rule_id]');
    await refused(`${RULES}?filter[gate_id]=nope`, 'filter[gate_id]');
    await refused(`${RULES}?filter[from]=yesterday`, 'filter[from]');
    await refused(`${RULES}?filter[to]=2026-13-45T00:00:00Z`, 'filter[to]');
    await refused(`${RULES}?filter[from]=2026-02-30T00:00:00Z`, 'filter[from]');
    await refused(`${RULES}?filter[from]=2026-01-02T00:00:00Z&filter[to]=2026-01-01T00:00:00Z`, 'filter[to]');
    await refused(`${RULES}?filter[from]=2026-01-01T00:00:00Z&filter[to]=2026-03-01T00:00:00Z`, 'filter[from]');
    await refused(`${RULES}?page[size]=0`, 'page[size]');
    await refused(`${RULES}?page[size]=101`, 'page[size]');
    await refused(`${RULES}?page[cursor]=abc`, 'page[cursor]');
    await refused(`${RULES}?page[cursor]=0190a000-0000-7000-8000-000000000000`, 'page[cursor]');
    await refused(`${RULES}?page[cursor]=${ev.E1}`, 'page[cursor]');
    await refused(`${RULES}?filter[rules]=x`, 'filter[rules]');
    await refused(`${RULES}?filter[service]=${Array.from({ length: 101 }, (_, i) => `s${i}`).join(',')}`, 'filter[service]');
  });

  test("an env-limited key sees its envs only; another env's ids match nothing", async () => {
    assert.deepEqual(await rules('', prodKey), ['E2:canary', 'E2:api', 'E2:errors', 'E1:canary', 'E1:api']);
    assert.deepEqual(await rules('&filter[env]=staging', prodKey), []);
    assert.deepEqual(await rules(`&filter[gate_evaluation_id]=${ev.E4}`, prodKey), []);
    assert.deepEqual(await rules(`&filter[evaluation_id]=${ruleEval['E4:canary']}`, prodKey), []);
    assert.deepEqual(await rules(`&filter[rule_id]=${ruleIds['G2:canary']}`, prodKey), []);
    assert.deepEqual(await rules(`&filter[gate_id]=${gateIds.G2}`, prodKey), []);
    const elsewhere = await refused(`${RULES}?page[cursor]=${ruleEval['E4:canary']}`, 'page[cursor]', prodKey);
    const nowhere = await refused(`${RULES}?page[cursor]=0190a000-0000-7000-8000-000000000000`, 'page[cursor]', prodKey);
    assert.equal(elsewhere, nowhere, 'an id of another env answers as one that does not exist');
  });
});

describe('GET /deployment_gates/evaluations: Datadog filters', () => {
  test('filters: dry_run and status on the gate, evaluation_id, gate_id, multi-valued tags', async () => {
    assert.deepEqual(await gates(''), ['E4', 'E2', 'E1']);
    assert.deepEqual(await gates('&filter[dry_run]=true'), ['E1']);
    assert.deepEqual(await gates('&filter[dry_run]=false'), ['E4', 'E2']);
    assert.deepEqual(await gates('&filter[status]=fail'), ['E1']);
    assert.deepEqual(await gates('&filter[status]=pass'), ['E4', 'E2']);
    assert.deepEqual(await gates('&filter[status]=in_progress'), []);
    assert.deepEqual(await gates('&filter[status]=pass,fail'), ['E4', 'E2', 'E1']);
    assert.deepEqual(await gates('&filter[status]=pass&filter[status]=fail'), ['E4', 'E2', 'E1']);
    assert.deepEqual(await gates(`&filter[evaluation_id]=${ev.E2}`), ['E2']);
    assert.deepEqual(await gates(`&filter[evaluation_id]=${ruleEval['E2:api']}`), []);
    assert.deepEqual(await gates('&filter[evaluation_id]=0190a000-0000-7000-8000-000000000000'), []);
    assert.deepEqual(await gates(`&filter[gate_id]=${gateIds.G1}`), ['E1']);
    assert.deepEqual(await gates('&filter[identifier]=blue,old'), ['E2']);
    assert.deepEqual(await gates('&filter[version]=v1&filter[version]=v4'), ['E4', 'E1']);
    assert.deepEqual(await gates('&filter[env]=staging,qa'), ['E4']);
    assert.deepEqual(await gates('&filter[service]=hist&filter[service]=other'), ['E4', 'E2', 'E1']);
  });

  test('the window: from inclusive, to exclusive, 24 h by default', async () => {
    const t0 = Date.parse(startedAt.E0!);
    assert.deepEqual(await gates(`&filter[from]=${startedAt.E0}&filter[to]=${new Date(t0 + 1).toISOString()}`), ['E0']);
    assert.deepEqual(await gates(`&filter[from]=${new Date(t0 - HOUR).toISOString()}&filter[to]=${startedAt.E0}`), []);
    assert.deepEqual(await gates(`&filter[from]=${t0}&filter[to]=${t0 + 1}`), ['E0'], 'epoch milliseconds');
    assert.deepEqual(await gates(`&filter[to]=${new Date(t0 + HOUR).toISOString()}`), ['E0']);
  });

  test('each item carries the attributes Datadog documents', async () => {
    const r = await api('GET', `${GATES}?filter[from]=${startedAt.E0}&filter[to]=${new Date(Date.parse(startedAt.E0!) + 1).toISOString()}`);
    const item = r.body.data[0];
    assert.equal(item.type, 'deployment_gate_evaluation');
    assert.deepEqual(Object.keys(item.attributes).sort(), [
      'dry_run',
      'duration_seconds',
      'env',
      'evaluation_id',
      'finished_at',
      'gate_id',
      'identifier',
      'service',
      'started_at',
      'status',
      'version',
    ]);
    assert.deepEqual([item.attributes.evaluation_id, item.attributes.gate_id, item.attributes.version, item.attributes.status], [ev.E0, null, '', 'pass']);
    const e1 = (await api('GET', `${GATES}?filter[evaluation_id]=${ev.E1}`)).body.data[0].attributes;
    assert.deepEqual([e1.gate_id, e1.dry_run, e1.status, e1.version], [gateIds.G1, true, 'fail', 'v1']);
  });

  test('bad values are a 400 naming the parameter', async () => {
    await refused(`${GATES}?filter[dry_run]=maybe`, 'filter[dry_run]');
    await refused(`${GATES}?filter[status]=passed`, 'filter[status]');
    await refused(`${GATES}?filter[evaluation_id]=x`, 'filter[evaluation_id]');
    await refused(`${GATES}?filter[evaluation_id]=${ev.E1}&filter[evaluation_id]=${ev.E2}`, 'filter[evaluation_id]');
    await refused(`${GATES}?filter[gate_id]=x`, 'filter[gate_id]');
    await refused(`${GATES}?filter[rule_id]=${ruleIds['G1:canary']}`, 'filter[rule_id]');
    await refused(`${GATES}?filter[gate_dry_run]=true`, 'filter[gate_dry_run]');
    await refused(`${GATES}?filter[from]=soon`, 'filter[from]');
    await refused(`${GATES}?filter[from]=2026-01-01T00:00:00Z&filter[to]=2026-02-15T00:00:00Z`, 'filter[to]');
    await refused(`${GATES}?page[size]=101`, 'page[size]');
    await refused(`${GATES}?page[cursor]=not-a-cursor`, 'page[cursor]');
    await refused(`${GATES}?page[cursor]=0190a000-0000-7000-8000-000000000000`, 'page[cursor]');
  });

  test("an env-limited key sees its envs only; another env's ids match nothing", async () => {
    assert.deepEqual(await gates('', prodKey), ['E2', 'E1']);
    assert.deepEqual(await gates(`&filter[evaluation_id]=${ev.E4}`, prodKey), []);
    assert.deepEqual(await gates(`&filter[gate_id]=${gateIds.G2}`, prodKey), []);
    const elsewhere = await refused(`${GATES}?page[cursor]=${ev.E4}`, 'page[cursor]', prodKey);
    const nowhere = await refused(`${GATES}?page[cursor]=0190a000-0000-7000-8000-000000000000`, 'page[cursor]', prodKey);
    assert.equal(elsewhere, nowhere, 'an id of another env answers as one that does not exist');
  });
});
