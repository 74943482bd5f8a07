// The public GraphQL API the explorer (issue 11) is built on, tried as internal tooling would:
// counts, rule filters, typed evidence, filters, facets and insights, each within the caller's
// environments.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CREATE_GATE, driver, jitMonitor, monitorRule, startServer, type TestServer } from './helpers.ts';

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
    assert.deepEqual(s.queries.filter((x) => /count\(\*\)/.test(x)), []);
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
    assert.deepEqual(failing.map((r: any) => r.name), ['broken', 'also broken']);
    assert.match(failing[0].reason, /ALERT/);
    assert.deepEqual((await must(q, { id: e.id, st: ['PASS', 'CANCELED'] })).evaluation.rules.map((r: any) => r.name), ['fine']);
    assert.equal((await must(q, { id: e.id, st: [] })).evaluation.rules.length, 3);
    assert.equal((await must(q, { id: e.id })).evaluation.rules.length, 3);
    // A list page asks every row for its failing rules in one query.
    const page = await must(`{ evaluations(filter: { service: ["rules"] }, first: 5) { edges { node { rules(status: [FAIL]) { name } } } } }`);
    assert.deepEqual(page.evaluations.edges[0].node.rules.map((r: any) => r.name), ['broken', 'also broken']);
    const long = await s.gql(q, { id: e.id, st: Array(101).fill('FAIL') });
    assert.equal(code(long), 'BAD_USER_INPUT');
    assert.equal(field(long), 'status');
  });
});
