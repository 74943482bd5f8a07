// One domain error, one answer: REST, the Flagger and Argo hooks, the Alertmanager receiver and
// OTLP ingestion give the same status (and Retry-After) for the same failure, each in its own
// body (Datadog's errors[] for REST and the hooks, an OTLP Status for /v1/traces).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ErrorCode } from '../src/domain/errors.ts';
import { STATUS_OF_CODE } from '../src/server/failures.ts';
import { CREATE_GATE, type HttpResult, monitorRule, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let writer: string;
before(async () => {
  s = await startServer();
  writer = await s.createKey(['evaluations:write', 'gates:read', 'ingest']);
});
after(() => s.stop());

const jitRule = { type: 'monitor', name: 'watch', dry_run: true, options: { query: 'service:nothing' } };

/** The same gate call on each surface that can make it: service, env, version and extras. */
function gateCallEverywhere(params: Record<string, string>, key = writer, restExtra: Record<string, unknown> = {}) {
  const query = new URLSearchParams(params).toString();
  return {
    rest: s.request('POST', '/api/v2/deployments/gates/evaluation', {
      key,
      body: { data: { type: 'deployment_gates_evaluation_request', attributes: { ...params, ...restExtra } } },
    }),
    flagger: s.request('POST', `/hooks/flagger?${query}`, { key }),
    argo: s.request('GET', `/hooks/gate?${query}`, { key }),
  };
}

async function answers(calls: Record<string, Promise<HttpResult>>) {
  const out: Record<string, HttpResult> = {};
  for (const [surface, call] of Object.entries(calls)) out[surface] = await call;
  return out;
}

/** Every surface answered `code`'s status with an errors[] body (title included) naming `detail`. */
function assertSameFailure(results: Record<string, HttpResult>, code: ErrorCode, detail: RegExp) {
  const status = STATUS_OF_CODE[code];
  assert.deepEqual(
    Object.fromEntries(Object.entries(results).map(([surface, r]) => [surface, r.status])),
    Object.fromEntries(Object.keys(results).map((surface) => [surface, status])),
    JSON.stringify(Object.fromEntries(Object.entries(results).map(([surface, r]) => [surface, r.text]))),
  );
  const titles = new Set<string>();
  for (const [surface, r] of Object.entries(results)) {
    const error = r.json?.errors?.[0];
    assert.equal(error?.status, String(status), `${surface}: ${r.text}`);
    assert.match(error.detail, detail, surface);
    titles.add(error.title);
  }
  assert.equal(titles.size, 1, `one title for ${status}: ${[...titles].join(', ')}`);
}

describe('a domain error gets the same status on every HTTP surface', () => {
  test('BAD_USER_INPUT: 400, the field named', async () => {
    const results = await answers(gateCallEverywhere({ service: 'no spaces allowed', env: 'prod', version: 'v1' }));
    results.alertmanager = await s.request('POST', '/hooks/alertmanager', { key: writer, body: { version: '4', alerts: 'not a list' } });
    assertSameFailure(results, 'BAD_USER_INPUT', /service|alerts/);
  });

  test('NOT_FOUND: 404, word for word', async () => {
    const results = await answers(gateCallEverywhere({ service: 'no-such-gate', env: 'prod', version: 'v1' }));
    assertSameFailure(results, 'NOT_FOUND', /^no gate found for service no-such-gate, env prod, and identifier default$/);
  });

  test('FORBIDDEN: 403 for a key acting outside its environments', async () => {
    const staging = await s.createKey(['evaluations:write'], ['staging']);
    const results = await answers(gateCallEverywhere({ service: 'svc', env: 'prod', version: 'v1' }, staging));
    assertSameFailure(results, 'FORBIDDEN', /limited to env staging and cannot act on env prod/);
  });

  test('CONFLICT: 400 (409 is Flagger\'s "still evaluating"), for an idempotency key used by another service', async () => {
    // The hooks' idempotency key for podinfo/prod/v9, taken first by another service over REST.
    const taken = await s.request('POST', '/api/v2/deployments/gates/evaluation', {
      key: writer,
      body: { data: { attributes: { service: 'someone-else', env: 'prod', idempotency_key: 'hook:podinfo:prod:default:v9:', configuration: { rules: [jitRule] } } } },
    });
    assert.equal(taken.status, 202, taken.text);
    const results = await answers(
      gateCallEverywhere({ service: 'podinfo', env: 'prod', version: 'v9' }, writer, { idempotency_key: 'hook:podinfo:prod:default:v9:', configuration: { rules: [jitRule] } }),
    );
    assertSameFailure(results, 'CONFLICT', /already used for a different service or identifier/);
  });

  test('UNAVAILABLE: 503 with Retry-After everywhere, OTLP included, while storage refuses writes', async () => {
    // A stored gate, so the hooks get as far as the write too.
    const gate = await s.gql(CREATE_GATE, { input: { service: 'during-outage', env: 'prod', rules: [monitorRule('watch', { query: 'service:nothing' })] } });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const db = s.app.deps.db.$client;
    db.pragma('query_only = ON');
    try {
      const results = await answers({
        ...gateCallEverywhere({ service: 'during-outage', env: 'prod', version: 'v1' }),
        alertmanager: s.request('POST', '/hooks/alertmanager', {
          key: writer,
          body: { version: '4', alerts: [{ status: 'firing', labels: { alertname: 'Outage', env: 'prod' } }] },
        }),
      });
      assertSameFailure(results, 'UNAVAILABLE', /storage is unavailable/);
      const now = `${BigInt(Date.now()) * 1_000_000n}`;
      const otlp = await s.request('POST', '/v1/traces', {
        key: writer,
        body: {
          resourceSpans: [
            {
              resource: {
                attributes: [
                  { key: 'service.name', value: { stringValue: 'svc' } },
                  { key: 'deployment.environment', value: { stringValue: 'prod' } },
                ],
              },
              scopeSpans: [{ spans: [{ name: 'GET /x', kind: 2, startTimeUnixNano: now, endTimeUnixNano: now }] }],
            },
          ],
        },
      });
      assert.equal(otlp.status, STATUS_OF_CODE.UNAVAILABLE, otlp.text);
      assert.match(otlp.json.message, /storage is unavailable/);
      assert.equal(otlp.json.code, STATUS_OF_CODE.UNAVAILABLE);
      for (const [surface, r] of Object.entries({ ...results, otlp })) assert.equal(r.headers['retry-after'], '5', `${surface} says when to retry`);
    } finally {
      db.pragma('query_only = OFF');
    }
  });
});
