import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN_KEY, driver, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.stop());

/** A request as the Datadog clients send it: DD-API-KEY, JSON:API bodies. */
async function api(method: string, path: string, body?: unknown, key: string | null = ADMIN_KEY) {
  const res = await fetch(`${s.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { 'DD-API-KEY': key } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const errorDetail = (r: { body: any }) => r.body.errors[0].detail as string;

describe('Datadog-compatible REST API', () => {
  test('trigger a just-in-time evaluation (202, evaluation_id) and read its result', async () => {
    const d = driver(s);
    const monitor = await d.monitor('rest monitor', ['rest:ok']);
    await d.report(monitor, 'OK');
    const trigger = await api('POST', '/api/v2/deployments/gates/evaluation', {
      data: {
        type: 'deployment_gates_evaluation_request',
        attributes: {
          service: 'rest-svc',
          env: 'prod',
          version: 'v2',
          apm_primary_tag: 'region:eu-west-1',
          configuration: { dry_run: false, rules: [{ type: 'monitor', name: 'monitors', dry_run: false, options: { query: 'rest:ok', duration: 0 } }] },
        },
      },
    });
    assert.equal(trigger.status, 202, JSON.stringify(trigger.body));
    assert.equal(trigger.body.data.type, 'deployment_gates_evaluation_response');
    const id = trigger.body.data.attributes.evaluation_id;
    assert.equal(trigger.body.data.id, id);
    await d.follow(id);
    const result = await api('GET', `/api/unstable/deployments/gates/evaluation/${id}`);
    assert.equal(result.status, 200);
    assert.deepEqual(result.body.data.attributes, {
      dry_run: false,
      evaluation_id: id,
      evaluation_url: `${s.url}/evaluations/${id}`,
      gate_id: null,
      gate_status: 'pass',
      // Passed on evidence (its monitors were watched), not for lack of data.
      passed_without_evidence: false,
      rules: [{ name: 'monitors', status: 'pass', reason: result.body.data.attributes.rules[0].reason, dry_run: false, insufficient_data: false }],
    });
    assert.match(result.body.data.attributes.rules[0].reason, /were OK or WARN/);
  });

  test('errors have the documented status codes and details', async () => {
    const missing = await api('POST', '/api/v2/deployments/gates/evaluation', {
      data: { type: 'deployment_gates_evaluation_request', attributes: { service: 'non-existent-service-xyz', env: 'staging' } },
    });
    assert.equal(missing.status, 404);
    assert.equal(errorDetail(missing), 'no gate found for service non-existent-service-xyz, env staging, and identifier default');
    const noEnv = await api('POST', '/api/v2/deployments/gates/evaluation', { data: { attributes: { service: 'x', env: '' } } });
    assert.equal(noEnv.status, 400);
    assert.equal(errorDetail(noEnv), 'required env field is missing');
    const badType = await api('POST', '/api/v2/deployments/gates/evaluation', {
      data: { attributes: { service: 'x', env: 'prod', configuration: { rules: [{ type: 'moniyor', name: 'm', options: {} }] } } },
    });
    assert.equal(badType.status, 400);
    assert.match(errorDetail(badType), /invalid configuration: invalid rule at index 0: invalid rule type: moniyor/);
    // Validation shared with GraphQL, told in the REST body's own paths and snake_case names.
    const jit = (options: Record<string, unknown>, type = 'faulty_deployment_detection') =>
      api('POST', '/api/v2/deployments/gates/evaluation', {
        data: { attributes: { service: 'x', env: 'prod', version: '1', configuration: { rules: [{ type, name: 'r', options }] } } },
      });
    const both = await jit({ excluded_resources: ['a'], allowed_resources: ['b'] });
    assert.equal(both.status, 400);
    assert.equal(errorDetail(both), 'configuration.rules[0].options.allowed_resources: give either excluded_resources or allowed_resources, not both');
    const tooLong = await jit({ query: 'service:x', duration: 99999 }, 'monitor');
    assert.equal(errorDetail(tooLong), 'configuration.rules[0].options.duration: duration must be between 0 and 7200 seconds');
    const camel = await jit({ excludedResources: ['a'] });
    assert.equal(errorDetail(camel), 'configuration.rules[0].options: unknown option "excludedResources"');
    const badId = await api('GET', '/api/v2/deployments/gates/evaluation/nope');
    assert.equal(badId.status, 400);
    assert.equal(errorDetail(badId), 'attribute "id" Invalid id');
    const unknown = await api('GET', '/api/v2/deployments/gates/evaluation/0190a000-0000-7000-8000-000000000000');
    assert.equal(unknown.status, 404);
    assert.equal(errorDetail(unknown), 'gate evaluation with id 0190a000-0000-7000-8000-000000000000 not found');
    assert.equal((await api('GET', '/api/v2/deployment_gates', undefined, null)).status, 401);
    const notJson = await fetch(`${s.url}/api/v2/deployment_gates`, { method: 'POST', headers: { 'DD-API-KEY': ADMIN_KEY }, body: '{' });
    assert.equal(notJson.status, 400);
    assert.equal((await api('PATCH', '/api/v2/deployment_gates')).status, 405);
  });

  test('gate and rule CRUD in the Datadog shapes, preconfigured evaluation, delete cascades', async () => {
    const created = await api('POST', '/api/v2/deployment_gates', { data: { type: 'deployment_gate', attributes: { service: 'rest-crud', env: 'prod', dry_run: true } } });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const gate = created.body.data;
    assert.equal(gate.type, 'deployment_gate');
    assert.deepEqual([gate.attributes.identifier, gate.attributes.dry_run, gate.attributes.created_by.name], ['default', true, 'bootstrap']);
    const dup = await api('POST', '/api/v2/deployment_gates', { data: { type: 'deployment_gate', attributes: { service: 'rest-crud', env: 'prod' } } });
    assert.equal(dup.status, 400);
    assert.equal(errorDetail(dup), 'Gate already exists with the given env, service and identifier');

    const rule = await api('POST', `/api/v2/deployment_gates/${gate.id}/rules`, {
      data: {
        type: 'deployment_rule',
        attributes: { name: 'fdd', type: 'faulty_deployment_detection', dry_run: false, options: { duration: 1200, excluded_resources: ['GET /healthz'] } },
      },
    });
    assert.equal(rule.status, 200, JSON.stringify(rule.body));
    assert.equal(rule.body.data.attributes.options.excluded_resources[0], 'GET /healthz');
    assert.equal(rule.body.data.attributes.options.duration, 1200);
    const list = await api('GET', `/api/v2/deployment_gates/${gate.id}/rules`);
    assert.equal(list.body.data.type, 'list_deployment_rules');
    assert.deepEqual(
      list.body.data.attributes.rules.map((r: any) => r.name),
      ['fdd'],
    );
    const updated = await api('PUT', `/api/v2/deployment_gates/${gate.id}/rules/${rule.body.data.id}`, {
      data: { type: 'deployment_rule', attributes: { name: 'fdd2', dry_run: true, options: { duration: 600 } } },
    });
    assert.equal(updated.status, 200, JSON.stringify(updated.body));
    assert.deepEqual([updated.body.data.attributes.name, updated.body.data.attributes.dry_run, updated.body.data.attributes.options.duration], ['fdd2', true, 600]);

    const put = await api('PUT', `/api/v2/deployment_gates/${gate.id}`, { data: { type: 'deployment_gate', id: gate.id, attributes: { dry_run: false } } });
    assert.equal(put.body.data.attributes.dry_run, false);
    const page = await api('GET', '/api/v2/deployment_gates?filter[service]=rest-crud&page[size]=1');
    assert.deepEqual(
      page.body.data.map((g: any) => g.id),
      [gate.id],
    );

    const evaluation = await api('POST', '/api/v2/deployments/gates/evaluation', { data: { attributes: { service: 'rest-crud', env: 'prod' } } });
    assert.equal(evaluation.status, 400, 'the gate has a faulty_deployment_detection rule: version is required');
    assert.equal(errorDetail(evaluation), 'version: version is required to evaluate a faulty_deployment_detection rule');

    assert.equal((await api('DELETE', `/api/v2/deployment_gates/${gate.id}`)).status, 204);
    assert.equal((await api('DELETE', `/api/v2/deployment_gates/${gate.id}`)).status, 404);
    assert.equal((await api('GET', `/api/v2/deployment_gates/${gate.id}/rules/${rule.body.data.id}`)).status, 404);
  });
});

describe('evaluation history endpoints', () => {
  test('gate evaluations and rule evaluations, filtered and paged, newest first', async () => {
    const d = driver(s);
    await d.report(await d.monitor('history bad', ['rest:bad']), 'ALERT');
    const ids: string[] = [];
    for (const query of ['rest:ok', 'rest:bad', 'rest:bad']) {
      const r = await api('POST', '/api/v2/deployments/gates/evaluation', {
        data: { attributes: { service: 'rest-history', env: 'prod', version: query, configuration: { rules: [{ type: 'monitor', name: 'monitors', options: { query } }] } } },
      });
      ids.push(r.body.data.attributes.evaluation_id);
      await d.follow(ids.at(-1)!);
    }
    const page1 = await api('GET', '/api/v2/deployment_gates/evaluations?filter[service]=rest-history&page[size]=2');
    assert.equal(page1.status, 200, JSON.stringify(page1.body));
    assert.deepEqual(
      page1.body.data.map((e: any) => e.id),
      [ids[2], ids[1]],
    );
    assert.equal(page1.body.data[0].type, 'deployment_gate_evaluation');
    assert.equal(page1.body.data[0].attributes.status, 'fail');
    assert.equal(page1.body.data[0].attributes.gate_id, null);
    assert.equal(typeof page1.body.data[0].attributes.duration_seconds, 'number');
    const page2 = await api('GET', `/api/v2/deployment_gates/evaluations?filter[service]=rest-history&page[size]=2&page[cursor]=${page1.body.meta.page.next_cursor}`);
    assert.deepEqual(
      page2.body.data.map((e: any) => e.id),
      [ids[0]],
    );
    assert.equal(page2.body.meta.page.next_cursor, undefined);
    const failed = await api('GET', '/api/v2/deployment_gates/evaluations?filter[service]=rest-history&filter[status]=fail');
    assert.equal(failed.body.data.length, 2);

    const rules = await api('GET', `/api/v2/deployment_gates/evaluations/rules?filter[gate_evaluation_id]=${ids[1]}`);
    assert.equal(rules.status, 200, JSON.stringify(rules.body));
    const rule = rules.body.data[0];
    assert.equal(rule.type, 'deployment_gate_rule_evaluation');
    assert.deepEqual([rule.attributes.name, rule.attributes.status, rule.attributes.gate_evaluation_id], ['monitors', 'fail', ids[1]]);
    assert.equal(rule.attributes.configuration.query, 'rest:bad');
    assert.equal(rule.attributes.failures.monitors[0].state, 'ALERT');

    assert.equal((await api('GET', '/api/v2/deployment_gates/evaluations?page[size]=500')).status, 400);
    assert.equal((await api('GET', '/api/v2/deployment_gates/evaluations?filter[from]=2026-01-01&filter[to]=2026-06-01')).status, 400);
  });

  test('rule evaluations are paged as rules: every page full up to the last, none empty with a next_cursor', async () => {
    // Three evaluations, newest first: [canary, api], [api], [canary, api, web]. Paged by rule,
    // filtered by rule name: an evaluation whose rules the filter drops takes no room on a page.
    const ids: string[] = [];
    for (const names of [['canary', 'api', 'web'], ['api'], ['canary', 'api']]) {
      const r = await api('POST', '/api/v2/deployments/gates/evaluation', {
        data: {
          attributes: {
            service: 'rest-rule-pages',
            env: 'prod',
            configuration: { rules: names.map((name) => ({ type: 'monitor', name, dry_run: true, options: { query: 'rest:ok' } })) },
          },
        },
      });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      ids.push(r.body.data.attributes.evaluation_id);
    }
    const walk = async (query: string, size: number) => {
      const pages: string[][] = [];
      let cursor: string | undefined;
      do {
        const r = await api(
          'GET',
          `/api/v2/deployment_gates/evaluations/rules?filter[service]=rest-rule-pages&page[size]=${size}${query}${cursor ? `&page[cursor]=${cursor}` : ''}`,
        );
        assert.equal(r.status, 200, JSON.stringify(r.body));
        pages.push(r.body.data.map((rule: any) => `${ids.indexOf(rule.attributes.gate_evaluation_id)}:${rule.attributes.name}`));
        cursor = r.body.meta.page.next_cursor;
        assert.ok(pages.length <= 10, 'paging ends');
      } while (cursor);
      return pages;
    };
    assert.deepEqual(await walk('', 2), [
      ['2:canary', '2:api'],
      ['1:api', '0:canary'],
      ['0:api', '0:web'],
    ]);
    assert.deepEqual(await walk('&filter[name]=canary', 1), [['2:canary'], ['0:canary']]);
    assert.deepEqual(await walk('&filter[name]=web', 5), [['0:web']]);
    assert.deepEqual(await walk('&filter[type]=faulty_deployment_detection', 5), [[]]);
    const other = await api('GET', '/api/v2/deployment_gates/evaluations/rules?page[cursor]=0190a000-0000-7000-8000-000000000000');
    assert.equal(other.status, 400, 'a cursor that is no rule evaluation of the list');
    assert.equal(errorDetail(other), 'page[cursor] is invalid');
  });
});
