// The metric rule (issue 15, docs/rules/metric.md): its pure parts, its options through the
// API, and its verdicts against a real Prometheus and the APM store.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readGatesFile } from '../src/cli/apply.ts';
import { deriveBaseline, derivedBaselineProblem, expandPlaceholders, formatBound, limitOf, measurementTimes, parseBound, promqlProblem } from '../src/domain/metric.ts';
import { CREATE_GATE, driver, freePort, runTollgate, skipWithout, startServer, type TestServer, waitFor, which } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

const RATIO = (sel: string) => `sum(rate(http_requests_total{service="{{service}}",${sel},code=~"5.."}[5s])) / sum(rate(http_requests_total{service="{{service}}",${sel}}[5s]))`;
/** The error ratio of the evaluated version; its baseline is derived (every other version). */
const CANARY_RATIO = RATIO('version="{{version}}"');

const METRIC_EVIDENCE = `metricEvidence { source query baselineQuery apmMetric version baselineVersions bound failureLimit planned failures noData
  points { at value text baseline limit result note requests baselineRequests } }`;
const EVALUATION = `id status rules { name type status reason ${METRIC_EVIDENCE} }`;

const metric = (name: string, options: Record<string, unknown>, dryRun = false) => ({ name, dryRun, options: { metric: options } });

function expectError(r: { errors?: Array<{ message: string; extensions?: Record<string, any> }> }, code: string, field: string, message?: RegExp) {
  assert.ok(r.errors?.length, `expected a ${code} error, got ${JSON.stringify(r)}`);
  const e = r.errors[0]!;
  assert.equal(e.extensions?.code, code, JSON.stringify(e));
  assert.equal(e.extensions?.field, field, JSON.stringify(e));
  if (message) assert.match(e.message, message);
}

describe('the pure parts', () => {
  test('bounds: absolute and signed relative, one spelling stored, unsigned percentages refused', () => {
    assert.deepEqual(parseBound(' <=0.02 '), { op: '<=', value: 0.02, relative: false });
    assert.equal(formatBound(parseBound('<=+10%') as any), '<= +10%');
    assert.equal(formatBound(parseBound('>=  -5 %') as any), '>= -5%');
    assert.equal(formatBound(parseBound('< 1e3') as any), '< 1000');
    assert.match(parseBound('<= 10%') as string, /says its direction: "<= \+10%"/);
    assert.match(parseBound('== 3') as string, /not a comparison/);
    assert.match(parseBound('<= +20000%') as string, /between -100% and \+10000%/);
  });

  test('a relative limit moves by the magnitude of the baseline, widened by the margin', () => {
    assert.ok(Math.abs(limitOf(parseBound('<= +10%') as any, 0.01) - 0.011) < 1e-12);
    assert.ok(Math.abs(limitOf(parseBound('>= -5%') as any, 200) - 190) < 1e-9);
    // "+10%" of a negative baseline is still above it.
    assert.ok(Math.abs(limitOf(parseBound('<= +10%') as any, -2) - -1.8) < 1e-12);
    assert.equal(limitOf(parseBound('<= +10%') as any, 0, 0.001), 0.001);
    assert.equal(limitOf(parseBound('>= -10%') as any, 0, 0.5), -0.5);
    assert.equal(limitOf(parseBound('<= 0.02') as any, 123), 0.02);
  });

  test('PromQL: strings, brackets and placeholders are checked, each problem at its character', () => {
    assert.equal(promqlProblem(CANARY_RATIO), null);
    assert.equal(promqlProblem('up{job="a)"} # a comment with ( and "'), null);
    assert.match(promqlProblem('sum(rate(x[5m])')!, /"\(" at character 4 is never closed/);
    assert.match(promqlProblem('sum(x))')!, /"\)" at character 7 closes nothing/);
    assert.match(promqlProblem('sum(x]')!, /"\]" at character 6 does not close the "\(" at character 4/);
    assert.match(promqlProblem('x{a="b}')!, /string opened at character 5 is not closed/);
    assert.match(promqlProblem('x{a="{{canary}}"}')!, /unknown placeholder "\{\{canary\}\}"/);
    assert.match(promqlProblem('x{a=~"v-{{version}}"}')!, /whole label value in double quotes/);
  });

  test('the derived baseline negates each version matcher and drops unversioned series; values are escaped', () => {
    assert.equal(deriveBaseline('x{version="{{version}}",a="b"}'), 'x{version!="{{version}}",version!="",a="b"}');
    assert.equal(expandPlaceholders(deriveBaseline('x{v = "{{version}}"}'), { version: 'a"b\\c' }), 'x{v!="a\\"b\\\\c",v!=""}');
    assert.match(derivedBaselineProblem('x{a="b"}')!, /match the version in the query/);
    assert.match(derivedBaselineProblem('x{version!="{{version}}"}')!, /matched with !=/);
    assert.match(derivedBaselineProblem('label_replace(x{version="{{version}}"}, "v", "{{version}}", "", "")')!, /appears elsewhere/);
  });

  test('points: the window start, every interval, and the end', () => {
    assert.deepEqual(measurementTimes(0, 0, 60), [0]);
    assert.deepEqual(measurementTimes(0, 120_000, 60), [0, 60_000, 120_000]);
    assert.deepEqual(measurementTimes(0, 90_000, 60), [0, 60_000, 90_000]);
  });
});

describe('metric rule options through the API', () => {
  let s: TestServer;
  // Nothing listens there: these tests never reach a check.
  before(async () => {
    s = await startServer({ prometheusUrl: 'http://127.0.0.1:9' });
  });
  after(() => s.stop());

  const create = (rules: unknown[], env = 'prod', key?: string) => s.gql(CREATE_GATE, { input: { service: `svc-${Math.random().toString(36).slice(2)}`, env, rules } }, key);
  const at = (field: string) => `input.rules[0].options.metric.${field}`;
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['no bound', { query: 'up' }, 'bound', /bound is required/],
    ['an unsigned relative bound', { query: 'up', bound: '<= 10%' }, 'bound', /direction/],
    ['neither query nor apm', { bound: '<= 1' }, 'query', /needs a PromQL query or an apm metric/],
    ['both query and apm', { query: 'up', apm: { metric: 'ERROR_RATE' }, bound: '<= 1' }, 'apm', /not both/],
    ['unbalanced PromQL', { query: 'sum(up', bound: '<= 1' }, 'query', /invalid PromQL: the "\(" at character 4 is never closed/],
    ['an unknown placeholder', { query: 'up{v="{{canary}}"}', bound: '<= 1' }, 'query', /unknown placeholder/],
    // Inside another string the escaping of the value does not hold: a version with ' or ` would end it and write PromQL.
    ['a placeholder inside a single-quoted string', { query: `up{v='"{{version}}"'}`, bound: '<= 1' }, 'query', /\{\{version\}\} must be a whole label value in double quotes/],
    ['a placeholder inside a raw string', { query: 'up{v=`"{{version}}"`}', bound: '<= 1' }, 'query', /\{\{version\}\} must be a whole label value in double quotes/],
    ['a relative bound without a version matcher or baselineQuery', { query: 'up', bound: '<= +10%' }, 'query', /match the version in the query/],
    ['baselineQuery with an absolute bound', { query: 'up', baselineQuery: 'up', bound: '<= 1' }, 'baselineQuery', /only read with a relative bound/],
    ['margin with an absolute bound', { query: 'up', bound: '<= 1', margin: 0.1 }, 'margin', /widens a relative bound/],
    ['too many points', { query: 'up', bound: '<= 1', duration: 7200, interval: 10 }, 'interval', /721 points; a metric rule takes at most 241: use an interval of at least 30 s/],
    ['an interval under 10 s', { query: 'up', bound: '<= 1', interval: 5 }, 'interval', /between 10 and 3600/],
    [
      'a failureLimit that can never be reached',
      { query: 'up', bound: '<= 1', duration: 60, interval: 30, failureLimit: 3 },
      'failureLimit',
      /every one of the window's 3 point\(s\): the rule could never fail/,
    ],
    ['failureLimit -1 without consecutiveSuccessLimit', { query: 'up', bound: '<= 1', failureLimit: -1 }, 'failureLimit', /needs consecutiveSuccessLimit/],
    [
      'an impossible consecutiveSuccessLimit',
      { query: 'up', bound: '<= 1', duration: 60, interval: 60, consecutiveSuccessLimit: 3 },
      'consecutiveSuccessLimit',
      /has 2 point\(s\)/,
    ],
    ['an APM rule without its metric', { apm: { resource: 'GET /cart' }, bound: '<= 1' }, 'apm.metric', /metric must be error_rate/],
    ['an APM window out of range', { apm: { metric: 'P99', window: 5 }, bound: '<= 300' }, 'apm.window', /between 10 and 3600/],
  ];
  for (const [name, options, field, message] of cases) {
    test(`refused, naming the field: ${name}`, async () => expectError(await create([metric('m', options)]), 'BAD_USER_INPUT', at(field), message));
  }

  test('defaults are stored and read back; an APM window defaults to the interval', async () => {
    const r = await create([
      metric('p', { query: CANARY_RATIO, bound: '<=+10%' }),
      metric('a', { apm: { metric: 'P99', resource: 'GET /cart' }, bound: '< 250', interval: 30, duration: 300 }),
    ]);
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const read = await s.gql(
      `query($id: ID!) { gate(id: $id) { rules { type options { __typename ... on MetricRuleOptions { query baselineQuery apm { metric resource window minRequests } bound margin duration warmup interval failureLimit consecutiveSuccessLimit failOnNoData } } } } }`,
      { id: r.data.createGate.id },
    );
    const [p, a] = read.data.gate.rules;
    assert.deepEqual(p, {
      type: 'METRIC',
      options: {
        __typename: 'MetricRuleOptions',
        query: CANARY_RATIO,
        baselineQuery: null,
        apm: null,
        bound: '<= +10%',
        margin: null,
        duration: 0,
        warmup: 0,
        interval: 60,
        failureLimit: 0,
        consecutiveSuccessLimit: 0,
        failOnNoData: true,
      },
    });
    assert.deepEqual(a.options.apm, { metric: 'P99', resource: 'GET /cart', window: 30, minRequests: 1 });
  });

  test('only a key for every environment writes PromQL; an env key may write APM rules and send a query back unchanged', async () => {
    const envKey = await s.createKey(['gates:write'], ['staging']);
    expectError(await create([metric('p', { query: 'up', bound: '<= 1' })], 'staging', envKey), 'FORBIDDEN', at('query'), /only a key for every environment/);
    const apm = await create([metric('a', { apm: { metric: 'ERROR_RATE' }, bound: '<= 0.02' })], 'staging', envKey);
    assert.equal(apm.errors, undefined, JSON.stringify(apm.errors));

    const byAdmin = await create([metric('p', { query: 'up', bound: '<= 1' })], 'staging');
    const ruleId = (await s.gql('query($id: ID!) { gate(id: $id) { rules { id } } }', { id: byAdmin.data.createGate.id })).data.gate.rules[0].id;
    const update = (options: Record<string, unknown>) =>
      s.gql('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', { id: ruleId, i: { options: { metric: options } } }, envKey);
    assert.equal((await update({ query: 'up', bound: '<= 2' })).errors, undefined, 'the same query with another bound');
    expectError(await update({ query: 'up or vector(1)', bound: '<= 2' }), 'FORBIDDEN', 'input.options.metric.query');

    const jit = await s.gql(
      'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }',
      { i: { service: 'x', env: 'staging', version: 'v2', configuration: { rules: [metric('p', { query: 'up', bound: '<= 1' })] } } },
      await s.createKey(['evaluations:write'], ['staging']),
    );
    expectError(jit, 'FORBIDDEN', 'input.configuration.rules[0].options.metric.query');
  });

  test("a rule that matches {{version}} or compares with the baseline needs the evaluation's version", async () => {
    const r = await s.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
      i: { service: 'x', env: 'prod', configuration: { rules: [metric('ratio', { query: CANARY_RATIO, bound: '<= 0.02' })] } },
    });
    expectError(r, 'BAD_USER_INPUT', 'input.version', /metric rule "ratio": its query matches \{\{version\}\}/);
    const apm = await s.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
      i: { service: 'x', env: 'prod', configuration: { rules: [metric('apm', { apm: { metric: 'ERROR_RATE' }, bound: '<= +10%' })] } },
    });
    expectError(apm, 'BAD_USER_INPUT', 'input.version', /compares the version with the others/);
  });

  test('REST: type "metric" with snake_case options (apm one level down) is created and read back; errors name the wire field', async () => {
    const api = async (method: string, path: string, body?: unknown) => {
      const r = await s.request(method, path, { body });
      return { status: r.status, body: r.json };
    };
    const gate = (await api('POST', '/api/v2/deployment_gates', { data: { type: 'deployment_gate', attributes: { service: 'rest-metric', env: 'prod' } } })).body.data;
    const options = {
      apm: { metric: 'error_rate', resource: 'GET /cart', min_requests: 20 },
      bound: '<=+25%',
      margin: 0.002,
      duration: 600,
      interval: 30,
      failure_limit: 2,
      consecutive_success_limit: 0,
      fail_on_no_data: false,
    };
    const rule = await api('POST', `/api/v2/deployment_gates/${gate.id}/rules`, {
      data: { type: 'deployment_rule', attributes: { name: 'errors vs baseline', type: 'metric', options } },
    });
    assert.equal(rule.status, 200, JSON.stringify(rule.body));
    const expected = { ...options, apm: { ...options.apm, window: 30 }, bound: '<= +25%', warmup: 0 };
    assert.equal(rule.body.data.attributes.type, 'metric');
    assert.deepEqual(rule.body.data.attributes.options, expected);
    const read = await api('GET', `/api/v2/deployment_gates/${gate.id}/rules/${rule.body.data.id}`);
    assert.deepEqual(read.body.data.attributes.options, expected);
    const promql = await api('POST', `/api/v2/deployment_gates/${gate.id}/rules`, {
      data: { type: 'deployment_rule', attributes: { name: 'ratio', type: 'metric', options: { query: CANARY_RATIO, baseline_query: RATIO('track="stable"'), bound: '<= +10%' } } },
    });
    assert.equal(promql.status, 200, JSON.stringify(promql.body));
    assert.equal(promql.body.data.attributes.options.baseline_query, RATIO('track="stable"'));

    const bad = await api('POST', `/api/v2/deployment_gates/${gate.id}/rules`, {
      data: { type: 'deployment_rule', attributes: { name: 'x', type: 'metric', options: { query: 'up', bound: '<= 1', failure_limit: -1 } } },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errors[0].detail, 'options.failure_limit: failure_limit -1 counts no failure, so the rule needs consecutive_success_limit (> 0) to decide');
    const unknown = await api('POST', `/api/v2/deployment_gates/${gate.id}/rules`, {
      data: { type: 'deployment_rule', attributes: { name: 'x', type: 'metric', options: { apm: { metric: 'hits', minRequests: 3 }, bound: '>= 1' } } },
    });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.errors[0].detail, 'data.attributes.options.apm: unknown option "minRequests"');
    const badType = await api('POST', `/api/v2/deployment_gates/${gate.id}/rules`, { data: { type: 'deployment_rule', attributes: { name: 'x', type: 'metrics', options: {} } } });
    assert.match(badType.body.errors[0].detail, /invalid rule type: metrics \(must be monitor, faulty_deployment_detection, metric, webhook or freeze\)/);
  });

  test('tollgate apply: metric rules are created, unchanged on a second run, exported and applied back as they are', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-metric-apply-'));
    const key = await s.createKey(['gates:write']);
    const tollgate = async (args: string[]) => runTollgate([...args, '--url', s.url, '--api-key', key]);
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    try {
      const gates = file(
        'gates.yaml',
        [
          'gates:',
          '  - service: apply-metric',
          '    env: prod',
          '    rules:',
          '      - name: errors vs baseline',
          '        metric:',
          `          query: '${CANARY_RATIO}'`,
          '          bound: "<= +10%"',
          '          duration: 600',
          '          failureLimit: 1',
          '      - name: latency',
          '        metric: { apm: { metric: p99, resource: "GET /cart" }, bound: "< 250", interval: 30 }',
        ].join('\n'),
      );
      const first = await tollgate(['apply', '-f', gates]);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /\+ gate apply-metric\/prod\/default with 2 rule\(s\)/);
      assert.match((await tollgate(['apply', '-f', gates])).stdout, /No changes/);

      const exported = await tollgate(['export']);
      assert.equal(exported.code, 0, exported.stderr);
      assert.match(exported.stdout, /metric: p99/);
      assert.match(exported.stdout, /bound: < 250/);
      assert.match((await tollgate(['apply', '-f', file('export.yaml', exported.stdout)])).stdout, /No changes/);

      // The file's own checks run before the server is asked (in process: a spawn costs seconds).
      const bad = file('bad.yaml', readFileSync(gates, 'utf8').replace('failureLimit: 1', 'failureLimit: 99'));
      assert.throws(
        () => readGatesFile(bad),
        /bad\.yaml:\d+: gates\[0\]\.rules\[0\]\.metric\.failureLimit: failureLimit 99 tolerates a failure at every one of the window's 11 point\(s\)/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without a Prometheus, a PromQL rule is refused at creation', async () => {
    const bare = await startServer();
    try {
      const r = await bare.gql(CREATE_GATE, { input: { service: 'x', env: 'prod', rules: [metric('p', { query: 'up', bound: '<= 1' })] } });
      expectError(r, 'BAD_USER_INPUT', at('query'), /TOLLGATE_PROMETHEUS_URL is not set/);
    } finally {
      await bare.stop();
    }
  });
});

// ---- against a real Prometheus ----

/**
 * Request counters of each service and version, growing at fixed rates from the exporter's
 * start, so rate() of errors over rate() of requests is exactly the error ratio given.
 */
const TRAFFIC: Array<{ service: string; version: string; perSecond: number; errorRatio: number }> = [
  // checkout: the canary errs three times as often as the baseline.
  { service: 'checkout', version: 'v1', perSecond: 100, errorRatio: 0.01 },
  { service: 'checkout', version: 'v2', perSecond: 100, errorRatio: 0.03 },
  // cart: the canary is 5% worse, within "+10%".
  { service: 'cart', version: 'v1', perSecond: 100, errorRatio: 0.01 },
  { service: 'cart', version: 'v2', perSecond: 100, errorRatio: 0.0105 },
  // idle: no requests, so the ratio is 0/0.
  { service: 'idle', version: 'v2', perSecond: 0, errorRatio: 0 },
];

describe('metric rules against a real Prometheus', { skip: skipWithout('prometheus') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-metric-'));
  let exporter: Server;
  let prometheus: ChildProcess;
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  const started = Date.now();

  before(async () => {
    exporter = createServer((_req, res) => {
      const seconds = (Date.now() - started) / 1000;
      const lines = ['# TYPE http_requests_total counter'];
      for (const t of TRAFFIC) {
        const labels = `service="${t.service}",version="${t.version}"`;
        lines.push(`http_requests_total{${labels},code="200"} ${t.perSecond * (1 - t.errorRatio) * seconds}`);
        lines.push(`http_requests_total{${labels},code="500"} ${t.perSecond * t.errorRatio * seconds}`);
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(`${lines.join('\n')}\n`);
    });
    await new Promise<void>((r) => exporter.listen(0, '127.0.0.1', r));
    const promPort = await freePort();
    const promUrl = `http://127.0.0.1:${promPort}`;
    writeFileSync(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s }',
        'scrape_configs:',
        '  - job_name: demo',
        `    static_configs: [{ targets: ["127.0.0.1:${(exporter.address() as AddressInfo).port}"] }]`,
      ].join('\n'),
    );
    prometheus = spawn(
      which('prometheus')!,
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`],
      { stdio: 'ignore' },
    );
    // Ready once the ratio of every service can be computed (two scrapes inside rate's 5 s).
    const ratio = encodeURIComponent(expandPlaceholders(CANARY_RATIO, { service: 'cart', version: 'v2' }));
    await waitFor('Prometheus to have two scrapes', async () => ((await (await fetch(`${promUrl}/api/v1/query?query=${ratio}`)).json()) as any).data?.result?.length === 1);
    s = await startServer({ prometheusUrl: promUrl });
    d = driver(s);
  });

  after(async () => {
    prometheus?.kill('SIGTERM');
    await s?.stop();
    exporter?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function run(input: Record<string, unknown>, timeoutMs?: number) {
    const r = await s.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }`, { i: input });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    await d.follow(r.data.evaluateGate.id, timeoutMs);
    return (await s.gql(`query($id: ID!) { evaluation(id: $id) { ${EVALUATION} } }`, { id: r.data.evaluateGate.id })).data.evaluation;
  }

  test('a canary whose error ratio is above the baseline by more than the bound fails at the first point', async () => {
    const e = await run({
      service: 'checkout',
      env: 'prod',
      version: 'v2',
      configuration: { rules: [metric('errors vs baseline', { query: CANARY_RATIO, bound: '<= +10%', duration: 60, interval: 30 })] },
    });
    assert.equal(e.status, 'FAIL');
    const [rule] = e.rules;
    assert.match(rule.reason, /^1 of 1 point\(s\) broke <= \+10% of the baseline: \S+Z 0\.03 against the limit 0\.011, baseline 0\.01\.$/);
    const ev = rule.metricEvidence;
    assert.equal(ev.source, 'PROMETHEUS');
    assert.match(ev.query, /version="v2"/);
    assert.match(ev.baselineQuery, /version!="v2",version!=""/);
    assert.equal(ev.planned, 3);
    assert.equal(ev.failures, 1);
    const [p] = ev.points;
    assert.equal(p.result, 'FAIL');
    assert.ok(Math.abs(p.value - 0.03) < 1e-9 && Math.abs(p.baseline - 0.01) < 1e-9 && Math.abs(p.limit - 0.011) < 1e-9, JSON.stringify(p));
  });

  test('a canary within the bound passes at the end of the window, every point recorded', async () => {
    const e = await run({
      service: 'cart',
      env: 'prod',
      version: 'v2',
      configuration: { rules: [metric('errors vs baseline', { query: CANARY_RATIO, bound: '<= +10%', duration: 10, interval: 10 })] },
    });
    assert.equal(e.status, 'PASS', e.rules[0].reason);
    const ev = e.rules[0].metricEvidence;
    assert.deepEqual(
      ev.points.map((p: any) => p.result),
      ['PASS', 'PASS'],
    );
    assert.equal(Date.parse(ev.points[1].at) - Date.parse(ev.points[0].at), 10_000);
    assert.match(e.rules[0].reason, /^All 2 point\(s\) from \S+ to \S+ were within <= \+10% of the baseline\.$/);
  });

  test('an absolute threshold: the baseline version passes, the canary fails', async () => {
    const absolute = (version: string) =>
      run({ service: 'checkout', env: 'prod', version, configuration: { rules: [metric('ratio', { query: CANARY_RATIO, bound: '<= 0.02' })] } });
    const [v1, v2] = await Promise.all([absolute('v1'), absolute('v2')]);
    assert.equal(v1.status, 'PASS', v1.rules[0].reason);
    assert.equal(v1.rules[0].metricEvidence.baselineQuery, null);
    assert.equal(v2.status, 'FAIL');
    assert.match(v2.rules[0].reason, /broke value <= 0\.02: \S+ 0\.03 against the limit 0\.02\./);
  });

  test('NaN (0/0 without traffic) is no data, never a pass, even when no-data points are skipped', async () => {
    const idle = (failOnNoData: boolean) =>
      run({ service: 'idle', env: 'prod', version: 'v2', configuration: { rules: [metric('ratio', { query: CANARY_RATIO, bound: '<= 0.02', failOnNoData })] } });
    const [counted, skipped] = await Promise.all([idle(true), idle(false)]);
    assert.equal(counted.status, 'FAIL');
    assert.match(counted.rules[0].reason, /no data \(the query returned NaN\)/);
    assert.equal(skipped.status, 'FAIL');
    assert.match(skipped.rules[0].reason, /^None of the 1 point\(s\) had data \(the query returned NaN\): a rule that saw nothing fails\.$/);
    assert.deepEqual(
      skipped.rules[0].metricEvidence.points.map((p: any) => [p.result, p.value, p.text]),
      [['NO_DATA', null, 'no data']],
    );
  });

  test('a query Prometheus refuses, or one giving several series, fails the rule at once (not onSourceError)', async () => {
    const e = await run({
      service: 'checkout',
      env: 'prod',
      configuration: {
        onSourceError: 'PASS',
        rules: [metric('refused', { query: 'http_requests_total +', bound: '<= 1' }), metric('several', { query: 'http_requests_total', bound: '<= 1' })],
      },
    });
    const [refused, several] = e.rules;
    assert.equal(refused.status, 'FAIL');
    assert.match(refused.reason, /^Prometheus refused the query: Prometheus at \S+ answered 400: .*parse error/);
    assert.equal(several.status, 'FAIL');
    assert.match(several.reason, /the query returned 10 series \(\{.*\}, \{.*\}, …\); a metric rule judges one value: aggregate it/);
  });

  test('a stored gate: evaluated like a just-in-time rule, the failing points in the evidence', async () => {
    const created = await s.gql(CREATE_GATE, {
      input: { service: 'checkout', env: 'prod', rules: [metric('errors vs baseline', { query: CANARY_RATIO, bound: '<= +50%', margin: 0.001 })] },
    });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const e = await run({ service: 'checkout', env: 'prod', version: 'v2' });
    assert.equal(e.status, 'FAIL');
    assert.match(e.rules[0].reason, /<= \+50% of the baseline \(margin 0\.001\): \S+ 0\.03 against the limit 0\.016, baseline 0\.01/);
  });

  test("Prometheus down: retried, then the gate's onSourceError decides, saying so", async () => {
    prometheus.kill('SIGTERM');
    await new Promise((r) => prometheus.once('exit', r));
    const policy = (onSourceError: string) =>
      run({ service: 'cart', env: 'prod', version: 'v2', configuration: { onSourceError, rules: [metric('ratio', { query: CANARY_RATIO, bound: '<= +10%' })] } }, 30_000);
    const [passed, failed] = await Promise.all([policy('PASS'), policy('FAIL')]);
    assert.equal(passed.rules[0].status, 'PASS');
    assert.match(passed.rules[0].reason, /data source failed 4 times in a row .*Prometheus at .* unreachable.*onSourceError policy makes the rule pass/);
    assert.equal(failed.rules[0].status, 'FAIL');
    assert.match(failed.rules[0].reason, /onSourceError policy makes the rule fail/);
  });
});

// ---- against the APM store ----

describe('metric rules against the APM store', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('error rate against the baseline, an absolute latency bound, per resource; each point with its requests', async () => {
    // Stamped just before now; each point reads the 600 s before the evaluation's start, so
    // however long the machine takes to start it, all of this traffic is behind the point.
    const from = Date.now() - 50_000;
    const spread = 40_000;
    await sendTraffic(s, { service: 'shop', version: 'v1', resource: 'GET /cart', count: 1000, errors: 10, from, spreadMs: spread });
    await sendTraffic(s, { service: 'shop', version: 'v2', resource: 'GET /cart', count: 500, errors: 25, from, spreadMs: spread });
    await sendTraffic(s, { service: 'shop', version: 'v2', resource: 'GET /health', count: 500, from, spreadMs: spread });
    const evaluate = async (rules: unknown[]) => {
      const r = await s.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }`, {
        i: { service: 'shop', env: 'prod', version: 'v2', configuration: { rules } },
      });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      await driver(s).follow(r.data.evaluateGate.id, 30_000);
      return (await s.gql(`query($id: ID!) { evaluation(id: $id) { ${EVALUATION} } }`, { id: r.data.evaluateGate.id })).data.evaluation;
    };
    const e = await evaluate([
      metric('cart errors vs baseline', { apm: { metric: 'ERROR_RATE', resource: 'GET /cart', window: 600 }, bound: '<= +50%' }, true),
      metric('service errors vs baseline', { apm: { metric: 'ERROR_RATE', window: 600 }, bound: '<= +200%' }, true),
      metric('latency', { apm: { metric: 'P99', window: 600 }, bound: '< 250' }, true),
      metric('cart traffic', { apm: { metric: 'HITS', resource: 'GET /cart', window: 600, minRequests: 1 }, bound: '>= 1000' }, true),
    ]);
    const byName = Object.fromEntries(e.rules.map((r: any) => [r.name, r]));

    const cart = byName['cart errors vs baseline'];
    assert.equal(cart.status, 'FAIL', cart.reason);
    const [p] = cart.metricEvidence.points;
    assert.deepEqual([p.value, p.baseline, p.requests, p.baselineRequests, p.result], [0.05, 0.01, 500, 1000, 'FAIL']);
    assert.ok(Math.abs(p.limit - 0.015) < 1e-12);
    assert.deepEqual(cart.metricEvidence.baselineVersions, ['v1']);
    assert.equal(cart.metricEvidence.apmMetric, 'error_rate');

    // The whole service: v2's 25 errors over 1000 requests (2.5%) within 3 × 1%.
    const service = byName['service errors vs baseline'];
    assert.equal(service.status, 'PASS', service.reason);
    assert.deepEqual([service.metricEvidence.points[0].value, service.metricEvidence.points[0].requests], [0.025, 1000]);

    // Spans last 3 ms: p99 within the sketch's 1%.
    const latency = byName.latency;
    assert.equal(latency.status, 'PASS', latency.reason);
    assert.ok(Math.abs(latency.metricEvidence.points[0].value - 3) < 0.05, JSON.stringify(latency.metricEvidence.points));

    const traffic = byName['cart traffic'];
    assert.equal(traffic.status, 'FAIL', 'v2 served 500 of the 1000 requests asked for');
    assert.match(traffic.reason, /broke value >= 1000: \S+ 500 against the limit 1000/);
  });

  test('no traffic in the window is no data: with minRequests, too few requests too', async () => {
    const r = await s.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }`, {
      i: { service: 'nobody', env: 'prod', version: 'v2', configuration: { rules: [metric('errors', { apm: { metric: 'ERROR_RATE' }, bound: '<= 0.02', interval: 10 })] } },
    });
    await driver(s).follow(r.data.evaluateGate.id, 30_000);
    const e = (await s.gql(`query($id: ID!) { evaluation(id: $id) { ${EVALUATION} } }`, { id: r.data.evaluateGate.id })).data.evaluation;
    assert.equal(e.status, 'FAIL');
    assert.match(e.rules[0].reason, /no data \(no requests\)/);
  });
});
