import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CREATE_GATE, driver, monitorRule, sleep, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let key: string;
before(async () => {
  s = await startServer();
  key = await s.createKey(['evaluations:write']);
  const d = driver(s);
  await d.report(await d.monitor('hook ok', ['hook:ok']), 'OK');
  await d.report(await d.monitor('hook bad', ['hook:bad']), 'ALERT');
  await s.gql(CREATE_GATE, { input: { service: 'podinfo', env: 'prod', rules: [monitorRule('monitors', { query: 'hook:ok', duration: 2 })] } });
  await s.gql(CREATE_GATE, { input: { service: 'broken', env: 'prod', rules: [monitorRule('monitors', { query: 'hook:bad' })] } });
});
after(() => s.stop());

/** What Flagger sends to a webhook: the canary, its phase and checksum, and the hook's metadata. */
const flagger = (service: string, checksum: string) =>
  fetch(`${s.url}/hooks/flagger?key=${key}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: service, namespace: 'test', phase: 'Progressing', checksum, metadata: { service, env: 'prod', version: 'v2' } }),
  });

describe('orchestrator hooks', () => {
  test('Flagger: 409 while the gate evaluates (one evaluation per canary revision), then 200 once it passed', async () => {
    const first = await flagger('podinfo', 'rev-1');
    assert.equal(first.status, 409);
    const firstBody = (await first.json()) as any;
    assert.equal(firstBody.status, 'in_progress');
    const again = (await (await flagger('podinfo', 'rev-1')).json()) as any;
    assert.equal(again.evaluation_id, firstBody.evaluation_id, 'repeated calls read the same evaluation');
    let status = 409;
    for (let i = 0; i < 40 && status === 409; i++) {
      await sleep(200);
      status = (await flagger('podinfo', 'rev-1')).status;
    }
    assert.equal(status, 200);
    const next = (await (await flagger('podinfo', 'rev-2')).json()) as any;
    assert.notEqual(next.evaluation_id, firstBody.evaluation_id, 'a new revision is a new evaluation');
  });

  test('Flagger: a failed gate answers 412 with the reason, an unknown gate 404, no key 401', async () => {
    let r = await flagger('broken', 'rev-1');
    for (let i = 0; i < 20 && r.status === 409; i++) {
      await sleep(100);
      r = await flagger('broken', 'rev-1');
    }
    assert.equal(r.status, 412);
    assert.match(((await r.json()) as any).rules[0].reason, /"hook bad" was ALERT/);
    assert.equal((await flagger('nothing-here', 'x')).status, 404);
    assert.equal((await fetch(`${s.url}/hooks/flagger`, { method: 'POST' })).status, 401);
  });

  test('Argo Rollouts web metric: always 200, the verdict in the body for jsonPath', async () => {
    // What Argo's web provider sends: a GET with the headers of the AnalysisTemplate.
    const url = `${s.url}/hooks/gate?service=podinfo&env=prod&version=v3&run=rollout-7`;
    const measure = async () => {
      const r = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
      assert.equal(r.status, 200);
      return ((await r.json()) as any).status as string;
    };
    assert.equal(await measure(), 'in_progress');
    let result = 'in_progress';
    for (let i = 0; i < 40 && result === 'in_progress'; i++) {
      await sleep(200);
      result = await measure();
    }
    assert.equal(result, 'pass');
  });
});

describe('hook bodies', () => {
  test('a "__proto__" key in a body is a field like any other, never the parameters\' prototype', async () => {
    // {"__proto__": {...}} must not smuggle service/env in through the prototype chain.
    const r = await fetch(`${s.url}/hooks/gate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: '{"__proto__": {"service": "podinfo", "env": "prod"}}',
    });
    assert.equal(r.status, 400, await r.clone().text());
    assert.match(((await r.json()) as any).errors[0].detail, /service/);
  });
});
