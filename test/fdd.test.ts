import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { driver, sleep, startServer, type TestServer } from './helpers.ts';
import { sendTraffic, type Traffic } from './traffic.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
let ingestKey: string;
before(async () => {
  s = await startServer();
  d = driver(s);
  ingestKey = await s.createKey(['ingest']);
});
after(() => s.stop());

/** Requests as an instrumented service reports them, stamped with the times given. */
const send = (t: Traffic) => sendTraffic(s, t, ingestKey);

async function fdd(service: string, version: string | undefined, options: Record<string, unknown>) {
  const r = await d.evaluate({ service, env: 'prod', version, configuration: { rules: [{ name: 'fdd', options: { faultyDeploymentDetection: options } }] } });
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data.evaluateGate;
}

/**
 * The start of the evaluation's window, once the traffic spread over its first second lies in the
 * past: the rule only counts spans up to its own clock, so sending spans stamped ahead of it would
 * let a check see part of a batch and make exact counts in the evidence a race.
 */
async function pastWindowStart(ev: { startedAt: string }): Promise<number> {
  const from = Date.parse(ev.startedAt);
  await sleep(from + 1000 - Date.now());
  return from;
}

async function evidenceOf(id: string) {
  const r = await s.gql('query($id: ID!) { evaluation(id: $id) { rules { evidenceJson } } }', { id });
  return r.data.evaluation.rules[0].evidenceJson;
}

const RESOURCES = ['GET /cart', 'POST /pay', 'GET /search'];

/** A stable version and a canary serving side by side, 1% errors everywhere unless told. */
async function sideBySide(service: string, from: number, canaryErrors: Record<string, number> = {}, canaryRequests = 400, spreadMs = 900) {
  for (const resource of RESOURCES) {
    const baselineRequests = Math.max(2000, canaryRequests);
    await send({ service, version: 'v1', resource, count: baselineRequests, errors: baselineRequests / 100, errorType: 'TimeoutError', from, spreadMs });
    await send({
      service,
      version: 'v2',
      resource,
      count: canaryRequests,
      errors: canaryErrors[resource] ?? Math.round(canaryRequests / 100),
      errorType: 'TimeoutError',
      from,
      spreadMs,
    });
  }
}

const BUCKET_MS = 10_000;
const PER_POD = 400;
/**
 * Nine baseline pods' error-rate multipliers per 10-s bucket (each averaging 1 over the four
 * buckets): each pod has its bad and its quiet seconds, as real pods do.
 */
const BASELINE_PODS = [
  [1, 1, 1, 1],
  [2, 0, 1, 1],
  [1, 1, 0, 2],
  [0, 2, 1, 1],
  [1, 1, 2, 0],
  [1, 0, 1, 2],
  [1, 2, 1, 0],
  [2, 1, 0, 1],
  [0, 1, 2, 1],
];

/**
 * Four buckets of a service on ten pods, each bucket sent as it begins (the rule reads a bucket
 * once its time has come): nine baseline pods (v1) and one canary pod (v2), PER_POD requests
 * per endpoint and bucket at 1% errors times the pod's multiplier of the bucket; `payEffect`
 * multiplies the canary's POST /pay errors.
 */
async function podsSideBySide(service: string, startedAt: number, canaryPod: number[], payEffect = 1) {
  const first = Math.floor(startedAt / BUCKET_MS) * BUCKET_MS;
  for (let b = 0; b < canaryPod.length; b++) {
    const from = first + b * BUCKET_MS;
    await sleep(from - Date.now());
    // Baseline first: a check between two sends then sees a bucket without the canary, never the reverse.
    for (const [i, pod] of BASELINE_PODS.entries()) {
      for (const resource of RESOURCES)
        await send({
          service,
          version: 'v1',
          resource,
          count: PER_POD,
          errors: Math.round(PER_POD * 0.01 * pod[b]!),
          errorType: 'TimeoutError',
          from: from + 500,
          spreadMs: 9000,
          pod: `${service}-v1-${i}`,
        });
    }
    for (const resource of RESOURCES) {
      const errors = Math.round(PER_POD * 0.01 * canaryPod[b]! * (resource === 'POST /pay' ? payEffect : 1));
      await send({ service, version: 'v2', resource, count: PER_POD, errors, errorType: 'TimeoutError', from: from + 500, spreadMs: 9000, pod: `${service}-v2-0` });
    }
  }
}

/**
 * The nine baseline pods' last five minutes before now (a tenth of the window's traffic, 1%
 * errors), so that the rule has each pod's hour before and measures placebo instances.
 */
async function podsBefore(service: string) {
  const from = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS - 5 * 60_000;
  for (const [i] of BASELINE_PODS.entries())
    for (const resource of RESOURCES)
      await send({
        service,
        version: 'v1',
        resource,
        count: 30 * 40,
        errorsEvery: 100,
        errorType: 'TimeoutError',
        from,
        spreadMs: 5 * 60_000 - BUCKET_MS,
        pod: `${service}-v1-${i}`,
      });
}

/** The placebo figure the rule recorded, as GraphQL types it: nine baseline pods, measured on the window and the five minutes before. */
async function assertPlacebo(id: string) {
  const r = await s.gql('query($id: ID!) { evaluation(id: $id) { rules { fddEvidence { clustering { spells placebo { instances degreesOfFreedom factor } } } } } }', { id });
  const clustering = r.data.evaluation.rules[0].fddEvidence.clustering;
  assert.ok(clustering.placebo, `placebo instances were measured: ${JSON.stringify(clustering)}`);
  assert.equal(clustering.placebo.instances, 9);
  assert.ok(clustering.placebo.degreesOfFreedom >= 16, `degrees of freedom ${clustering.placebo.degreesOfFreedom}`);
  assert.ok(clustering.placebo.factor >= 1 && clustering.spells >= clustering.placebo.factor, `the spells factor is at least the placebo's: ${JSON.stringify(clustering)}`);
}

describe('faulty deployment detection, end to end through OTLP', () => {
  test('a canary pod with a bad few seconds passes: clustered errors are not a regression', async () => {
    // The canary pod's errors all land in the first bucket (4% there, none after): 1% over the
    // window, as the baseline. Counted as independent draws, the first bucket alone was
    // "significant" (e-value about 1900 against 234 on GET /cart before issue 10).
    await podsBefore('fdd-clustered');
    const ev = await fdd('fdd-clustered', 'v2', { duration: 30, minRelativeIncrease: 1 });
    await podsSideBySide('fdd-clustered', Date.parse(ev.startedAt), [4, 0, 0, 0]);
    const updates = await d.follow(ev.id, 30_000);
    const final = updates.at(-1);
    assert.ok(!updates.some((e) => e.status === 'FAIL'), 'never failed on the way');
    assert.equal(final.status, 'PASS', final.rules[0].reason);
    assert.match(final.rules[0].reason, /No significant error-rate increase or new error type for version v2 over 4800 requests/);
    const evidence = await evidenceOf(ev.id);
    assert.ok(evidence.clustering.resources > 0.05, `the clustering was measured: ${JSON.stringify(evidence.clustering)}`);
    assert.ok(evidence.clustering.spells >= 1 && evidence.clustering.baselineDispersion >= 1, `the baseline's noise was measured: ${JSON.stringify(evidence.clustering)}`);
    await assertPlacebo(ev.id);
    const flags = await s.gql('query($id: ID!) { evaluation(id: $id) { passedWithoutEvidence rules { insufficientData } } }', { id: ev.id });
    assert.deepEqual(flags.data.evaluation, { passedWithoutEvidence: false, rules: [{ insufficientData: false }] });
  });

  test('a real 5× regression on one endpoint fails, naming it, among the same pods', async () => {
    await podsBefore('fdd-regressed');
    const ev = await fdd('fdd-regressed', 'v2', { duration: 30, minRelativeIncrease: 1 });
    await podsSideBySide('fdd-regressed', Date.parse(ev.startedAt), [1, 1, 1, 1], 5);
    const final = (await d.follow(ev.id, 30_000)).find((e) => e.status === 'FAIL');
    assert.ok(final, 'failed within the window');
    assert.match(final.rules[0].reason, /error rate of POST \/pay rose from 1\.00% \(baseline\) to 5\.00%/);
    const evidence = await evidenceOf(ev.id);
    assert.deepEqual(
      evidence.faultyResources.filter((f: any) => f.scope === 'resource').map((f: any) => f.name),
      ['POST /pay'],
      'only the regressed endpoint is blamed',
    );
    await assertPlacebo(ev.id);
  });

  test('a canary with injected errors on one endpoint fails at once, with evidence naming it', async () => {
    const ev = await fdd('fdd-bad', 'v2', { duration: 600 });
    await sideBySide('fdd-bad', await pastWindowStart(ev), { 'POST /pay': 120 });
    const final = (await d.follow(ev.id)).find((e) => e.status === 'FAIL');
    assert.ok(final, 'failed before the 10-minute window ended');
    const rule = final.rules[0];
    assert.match(rule.reason, /error rate of POST \/pay rose from 1\.00% \(baseline\) to 30\.00% \(120 of 400 requests\)/);
    assert.match(rule.reason, /Baseline: concurrent traffic of other versions/);
    const evidence = await evidenceOf(ev.id);
    assert.equal(evidence.baseline, 'concurrent');
    assert.deepEqual(evidence.baselineVersions, ['v1']);
    const pay = evidence.faultyResources.find((f: any) => f.name === 'POST /pay');
    assert.deepEqual(pay.canary, { requests: 400, errors: 120, errorRate: 0.3 });
    assert.deepEqual(pay.baseline, { requests: 2000, errors: 20, errorRate: 0.01 });
    assert.ok(pay.eValue >= pay.threshold);
    assert.ok(!evidence.faultyResources.some((f: any) => f.name === 'GET /cart'), 'healthy endpoints are not blamed');
  });

  test('the same version with the baseline error rate passes, with the traffic it needed', async () => {
    const ev = await fdd('fdd-good', 'v2', { duration: 1, minRelativeIncrease: 1 });
    await sideBySide('fdd-good', Date.parse(ev.startedAt), {}, 4000);
    const final = (await d.follow(ev.id, 20_000)).at(-1);
    assert.equal(final.status, 'PASS', final.rules[0].reason);
    assert.match(final.rules[0].reason, /No significant error-rate increase or new error type for version v2 over 12000 requests/);
    const flags = await s.gql('query($id: ID!) { evaluation(id: $id) { passedWithoutEvidence rules { insufficientData } } }', { id: ev.id });
    assert.deepEqual(flags.data.evaluation, { passedWithoutEvidence: false, rules: [{ insufficientData: false }] }, 'a pass with evidence says so');
  });

  test('a new exception type fails, named with a sample message', async () => {
    const ev = await fdd('fdd-new', 'v2', { duration: 600 });
    const from = await pastWindowStart(ev);
    await sideBySide('fdd-new', from);
    await send({
      service: 'fdd-new',
      version: 'v2',
      resource: 'GET /cart',
      count: 30,
      errors: 30,
      errorType: 'NullPointerException',
      message: 'cart.items is null',
      from,
      spreadMs: 900,
    });
    const final = (await d.follow(ev.id)).find((e) => e.status === 'FAIL');
    assert.ok(final);
    assert.match(final.rules[0].reason, /new error type NullPointerException \(30 times, e\.g\. "cart\.items is null"\) never seen in the baseline/);
    const evidence = await evidenceOf(ev.id);
    assert.deepEqual(
      evidence.newErrorTypes.map((t: any) => [t.errorType, t.count, t.resources]),
      [['NullPointerException', 30, ['GET /cart']]],
    );
  });

  test('excluded resources are ignored', async () => {
    const ev = await fdd('fdd-excluded', 'v2', { duration: 1, excludedResources: ['GET /healthz'], onInsufficientData: 'PASS' });
    const from = Date.parse(ev.startedAt);
    await sideBySide('fdd-excluded', from);
    await send({ service: 'fdd-excluded', version: 'v1', resource: 'GET /healthz', count: 500, errors: 0, from, spreadMs: 900 });
    await send({ service: 'fdd-excluded', version: 'v2', resource: 'GET /healthz', count: 500, errors: 400, errorType: 'HealthcheckDown', from, spreadMs: 900 });
    const final = (await d.follow(ev.id, 20_000)).at(-1);
    assert.equal(final.status, 'PASS', final.rules[0].reason);
    assert.doesNotMatch(final.rules[0].reason, /healthz|HealthcheckDown/);
  });

  test('a version with no traffic resolves by onInsufficientData, saying why', async () => {
    await send({ service: 'fdd-silent', version: 'v1', resource: 'GET /cart', count: 100, from: Date.now() - 60_000, spreadMs: 30_000 });
    const ev = await fdd('fdd-silent', 'v9', { duration: 1, onInsufficientData: 'FAIL' });
    const final = (await d.follow(ev.id, 20_000)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /Not enough data: version v9 received no traffic during the window; onInsufficientData makes the rule fail/);
    const flags = await s.gql('query($id: ID!) { evaluation(id: $id) { passedWithoutEvidence rules { insufficientData } } }', { id: ev.id });
    assert.deepEqual(flags.data.evaluation, { passedWithoutEvidence: false, rules: [{ insufficientData: true }] }, 'a failure for lack of data is not a pass');
  });

  test('tollgate evaluate tells a pass for lack of data from a pass with evidence', async () => {
    await send({ service: 'fdd-cli', version: 'v1', resource: 'GET /cart', count: 100, from: Date.now() - 60_000, spreadMs: 30_000 });
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-fdd-cli-'));
    try {
      const file = join(dir, 'gate.json');
      writeFileSync(file, JSON.stringify({ rules: [{ type: 'faulty_deployment_detection', name: 'fdd', options: { duration: 1 } }] }));
      const key = await s.createKey(['evaluations:write']);
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', 'src/cli/main.ts', 'evaluate', '--service', 'fdd-cli', '--env', 'prod', '--version', 'v2', '--config', file, '--json'],
        {
          env: { ...process.env, TOLLGATE_API_KEY: key, TOLLGATE_URL: s.url },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c) => (stdout += c));
      child.stderr.on('data', (c) => (stderr += c));
      const code = await new Promise((resolve) => child.once('exit', resolve));
      assert.equal(code, 0, stdout + stderr);
      assert.match(stderr, /Gate PASSED WITHOUT EVIDENCE \(a rule had too little data to decide\)/);
      assert.match(stderr, /PASS\s+fdd \(insufficient data\) — Not enough data: version v2 received no traffic/);
      const result = JSON.parse(stdout);
      assert.equal(result.passed_without_evidence, true);
      assert.equal(result.rules[0].insufficient_data, true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('too little canary traffic says how much more was needed', async () => {
    const ev = await fdd('fdd-thin', 'v2', { duration: 1 });
    await sideBySide('fdd-thin', Date.parse(ev.startedAt), {}, 100);
    const final = (await d.follow(ev.id, 20_000)).at(-1);
    assert.equal(final.status, 'PASS', 'onInsufficientData defaults to pass');
    assert.match(
      final.rules[0].reason,
      /Not enough data: the canary served 300 requests; detecting a \+50% error-rate increase over a 1\.00% baseline needs about \d+, so about \d+ more \(≈ \d+ min at the current/,
    );
    // A pass for lack of data is told apart from a pass with evidence, in fields of their own.
    const flags = await s.gql('query($id: ID!) { evaluation(id: $id) { status passedWithoutEvidence rules { status insufficientData } } }', { id: ev.id });
    assert.deepEqual(flags.data.evaluation, { status: 'PASS', passedWithoutEvidence: true, rules: [{ status: 'PASS', insufficientData: true }] });
    const rest = await s.request('GET', `/api/v2/deployments/gates/evaluation/${ev.id}`);
    assert.equal(rest.status, 200);
    assert.equal(rest.json.data.attributes.gate_status, 'pass');
    assert.equal(rest.json.data.attributes.passed_without_evidence, true);
    assert.equal(rest.json.data.attributes.rules[0].insufficient_data, true);
    const history = await s.request('GET', `/api/v2/deployment_gates/evaluations/rules?filter[gate_evaluation_id]=${ev.id}`);
    assert.equal(history.json.data[0].attributes.insufficient_data, true);
  });

  test('a missing version is refused at trigger', async () => {
    const r = await d.evaluate({ service: 'fdd-bad', env: 'prod', configuration: { rules: [{ name: 'fdd', options: { faultyDeploymentDetection: {} } }] } });
    assert.equal(r.errors?.[0]?.extensions?.field, 'input.version');
  });
});
