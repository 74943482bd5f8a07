import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.ts';
import { allowedEntryFor } from '../src/domain/webhooks.ts';
import { callWebhook } from '../src/sources/webhook.ts';
import { driver, startServer, type TestServer } from './helpers.ts';

/** What the local webhook server received. */
interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  body: any;
}

let hook: Server;
let hookUrl: string;
const received: Received[] = [];
/** Per path: how to answer the n-th request to it (1-based). */
const answers = new Map<string, (res: ServerResponse, n: number) => void>();
const counts = new Map<string, number>();

let s: TestServer;
let d: ReturnType<typeof driver>;
const secretKey = randomBytes(32);
const LOOPBACK = [{ host: '127.0.0.1', wildcard: false, port: null }];

before(async () => {
  hook = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({ path, headers: req.headers, body: text ? JSON.parse(text) : null });
      const n = (counts.get(path) ?? 0) + 1;
      counts.set(path, n);
      const answer = answers.get(path);
      if (answer) answer(res, n);
      else res.writeHead(404).end('no such hook');
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}`;
  s = await startServer({ webhookAllowedHosts: LOOPBACK, secretKey });
  d = driver(s);
});
after(async () => {
  await s.stop();
  hook.closeAllConnections();
  await new Promise((resolve) => hook.close(resolve));
});

let n = 0;
/** A path no other test uses, answered by `answer`. */
function path(answer: (res: ServerResponse, n: number) => void): string {
  const p = `/hook-${++n}`;
  answers.set(p, answer);
  return p;
}
const to = (p: string) => received.filter((r) => r.path === p);

const WEBHOOK_FIELDS = `id status reportedStatus rules { name type status reason
  options { ... on WebhookRuleOptions { url headers { name } timeout retries mode interval duration } }
  webhookEvidence { url passedCalls refused calls { call passed status error body bodyTruncated location attempts earlierAttempts } }
  evidenceJson }`;

/** A just-in-time evaluation with one webhook rule, followed to its end. */
async function run(options: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const r = await s.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }`, {
    i: { service: 'checkout', env: 'prod', version: 'v42', configuration: { rules: [{ name: 'smoke test', options: { webhook: options } }] }, ...extra },
  });
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  const id = r.data.evaluateGate.id;
  await d.follow(id, 30_000);
  const final = await s.gql(`query($id: ID!) { evaluation(id: $id) { ${WEBHOOK_FIELDS} } }`, { id });
  return { id, evaluation: final.data.evaluation, rule: final.data.evaluation.rules[0] };
}

describe('webhook rule', () => {
  test('a 2xx answer passes; the webhook is told the evaluation, gate, service, env, version and rule, with its headers', async () => {
    const p = path((res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('all good'));
    const { id, evaluation, rule } = await run({ url: `${hookUrl}${p}`, headers: [{ name: 'Authorization', value: 'Bearer hook-token-1' }] });
    assert.equal(evaluation.status, 'PASS');
    assert.match(rule.reason, /answered HTTP 200/);
    const [call] = to(p);
    assert.equal(call!.headers.authorization, 'Bearer hook-token-1');
    assert.equal(call!.headers['content-type'], 'application/json');
    assert.equal(call!.body.evaluation.id, id);
    assert.equal(call!.body.evaluation.url, `${s.url}/evaluations/${id}`);
    assert.deepEqual(call!.body.gate, { id: null, identifier: 'default', justInTime: true });
    assert.deepEqual([call!.body.service, call!.body.env, call!.body.version], ['checkout', 'prod', 'v42']);
    assert.deepEqual(call!.body.rule, { name: 'smoke test', type: 'webhook', dryRun: false, mode: 'once' });
    assert.deepEqual(
      rule.webhookEvidence.calls.map((c: any) => [c.status, c.passed, c.body]),
      [[200, true, 'all good']],
    );
  });

  test('anything else fails, with the status and the first KB of the answer as evidence; a 4xx is not retried', async () => {
    const p = path((res) => res.writeHead(422, { 'content-type': 'text/plain' }).end(`load test failed: ${'x'.repeat(3000)}`));
    const { evaluation, rule } = await run({ url: `${hookUrl}${p}` });
    assert.equal(evaluation.status, 'FAIL');
    assert.match(rule.reason, /^The webhook answered HTTP 422 to call 1\.$/);
    const [call] = rule.webhookEvidence.calls;
    assert.equal(call.status, 422);
    assert.equal(call.body.length, 1024);
    assert.ok(call.body.startsWith('load test failed: xxx'));
    assert.equal(call.bodyTruncated, true);
    assert.equal(to(p).length, 1, 'a definite refusal is not asked again');
  });

  test('a redirect is an answer, never followed', async () => {
    const target = path((res) => res.writeHead(200).end('should not be reached'));
    const p = path((res) => res.writeHead(302, { location: `${hookUrl}${target}` }).end());
    const { evaluation, rule } = await run({ url: `${hookUrl}${p}` });
    assert.equal(evaluation.status, 'FAIL');
    assert.match(rule.reason, /HTTP 302 .*redirects are not followed/);
    assert.equal(rule.webhookEvidence.calls[0].location, `${hookUrl}${target}`);
    assert.equal(to(target).length, 0);
  });

  test('5xx and no answer are retried with backoff, with one idempotency key per call; the tries are evidence', async () => {
    const p = path((res, i) => (i < 3 ? res.writeHead(503).end('warming up') : res.writeHead(204).end()));
    const { evaluation, rule } = await run({ url: `${hookUrl}${p}`, retries: 2 });
    assert.equal(evaluation.status, 'PASS');
    assert.match(rule.reason, /answered HTTP 204 .*\(attempt 3 of 3\)/);
    assert.deepEqual(
      [rule.webhookEvidence.calls[0].attempts, rule.webhookEvidence.calls[0].earlierAttempts, rule.webhookEvidence.calls[0].status],
      [3, ['HTTP 503', 'HTTP 503'], 204],
    );
    const calls = to(p);
    assert.equal(calls.length, 3);
    assert.equal(new Set(calls.map((c) => c.headers['idempotency-key'])).size, 1);
    assert.deepEqual(
      calls.map((c) => c.body.attempt),
      [1, 2, 3],
    );
  });

  test('a webhook that never answers times out; once its retries are spent onSourceError decides', async () => {
    const p = path(() => {}); // never answers
    const failing = await run({ url: `${hookUrl}${p}`, timeout: 1, retries: 1 });
    assert.equal(failing.evaluation.status, 'FAIL');
    assert.match(failing.rule.reason, /did not answer call 1 in 2 attempt\(s\) \(last: no answer within 1000 ms\); the gate's onSourceError policy makes the rule fail/);
    const [call] = failing.rule.webhookEvidence.calls;
    assert.deepEqual([call.attempts, call.earlierAttempts, call.error, call.status], [2, ['no answer within 1000 ms'], 'no answer within 1000 ms', null]);
    const passing = await run(
      { url: `${hookUrl}${p}`, timeout: 1, retries: 0 },
      { configuration: { onSourceError: 'PASS', rules: [{ name: 'smoke test', options: { webhook: { url: `${hookUrl}${p}`, timeout: 1, retries: 0 } } }] } },
    );
    assert.equal(passing.evaluation.status, 'PASS');
    assert.match(passing.rule.reason, /onSourceError policy makes the rule pass/);
  });

  test('poll calls every interval to the window end and passes only if every answer passed', async () => {
    const ok = path((res) => res.writeHead(200).end('ok'));
    const passing = await run({ url: `${hookUrl}${ok}`, mode: 'POLL', interval: 5, duration: 5 });
    assert.equal(passing.evaluation.status, 'PASS');
    assert.match(passing.rule.reason, /All 2 calls answered 2xx/);
    assert.deepEqual(
      to(ok).map((c) => c.body.call),
      [1, 2],
    );
    assert.deepEqual(passing.rule.options, { url: `${hookUrl}${ok}`, headers: [], timeout: 10, retries: 2, mode: 'POLL', interval: 5, duration: 5 });

    const second = path((res, i) => (i === 1 ? res.writeHead(200).end('ok') : res.writeHead(409).end('canary metrics degraded')));
    const failing = await run({ url: `${hookUrl}${second}`, mode: 'POLL', interval: 5, duration: 60 });
    assert.equal(failing.evaluation.status, 'FAIL');
    assert.match(failing.rule.reason, /answered HTTP 409 to call 2/);
    assert.deepEqual(
      failing.rule.webhookEvidence.calls.map((c: any) => [c.call, c.passed, c.body]),
      [
        [1, true, 'ok'],
        [2, false, 'canary metrics degraded'],
      ],
    );
    assert.equal(to(second).length, 2, 'no call after the first failure');
  });

  test('a host outside the allow-list is refused at rule creation, naming the field, on every interface', async () => {
    const outside = 'http://10.20.30.40:8080/hook';
    const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: { service: 'allow', env: 'prod', rules: [{ name: 'hook', options: { webhook: { url: outside } } }] },
    });
    assert.equal(gate.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.equal(gate.errors?.[0]?.extensions?.field, 'input.rules[0].options.webhook.url');
    assert.match(gate.errors![0]!.message, /host 10\.20\.30\.40:8080 is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);

    const created = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', { i: { service: 'allow', env: 'prod' } });
    const gateId = created.data.createGate.id;
    const rule = await s.gql('mutation($g: ID!, $i: RuleInput!) { createRule(gateId: $g, input: $i) { id } }', {
      g: gateId,
      i: { name: 'hook', options: { webhook: { url: outside } } },
    });
    assert.equal(rule.errors?.[0]?.extensions?.field, 'input.options.webhook.url');

    const jit = await d.evaluate({ service: 'allow', env: 'prod', configuration: { rules: [{ name: 'hook', options: { webhook: { url: outside } } }] } });
    assert.equal(jit.errors?.[0]?.extensions?.field, 'input.configuration.rules[0].options.webhook.url');

    const rest = await s.request('POST', `/api/v2/deployment_gates/${gateId}/rules`, {
      body: { data: { type: 'deployment_rule', attributes: { name: 'hook', type: 'webhook', options: { url: outside } } } },
    });
    assert.equal(rest.status, 400);
    assert.match(rest.json.errors[0].detail, /^options\.url: host 10\.20\.30\.40:8080 is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);
    assert.equal(to('/hook').length, 0);
  });

  test('header values are stored sealed and never echoed: not by GraphQL, REST, evaluations or the database file', async () => {
    const secret = `s3cr3t-${randomBytes(8).toString('hex')}`;
    const p = path((res) => res.writeHead(200).end('ok'));
    const created = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id rules { id options { ... on WebhookRuleOptions { url headers { name } } } } } }', {
      i: { service: 'secrets', env: 'prod', rules: [{ name: 'hook', options: { webhook: { url: `${hookUrl}${p}`, headers: [{ name: 'X-Api-Key', value: secret }] } } }] },
    });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const gateId = created.data.createGate.id;
    const ruleId = created.data.createGate.rules[0].id;
    assert.deepEqual(created.data.createGate.rules[0].options.headers, [{ name: 'X-Api-Key' }]);

    const ev = await d.evaluate({ service: 'secrets', env: 'prod' });
    await d.follow(ev.data.evaluateGate.id);
    assert.equal(to(p)[0]!.headers['x-api-key'], secret, 'sent to the webhook');

    // An edit without the value keeps it (same origin); the webhook still receives it.
    const kept = await s.gql('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', {
      id: ruleId,
      i: { options: { webhook: { url: `${hookUrl}${p}?v=2`, headers: [{ name: 'X-Api-Key' }], retries: 1 } } },
    });
    assert.equal(kept.errors, undefined, JSON.stringify(kept.errors));
    const again = await d.evaluate({ service: 'secrets', env: 'prod' });
    await d.follow(again.data.evaluateGate.id);
    assert.equal(to(`${p}?v=2`)[0]!.headers['x-api-key'], secret);
    // ...but is never carried to another origin.
    const moved = await s.gql('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', {
      id: ruleId,
      i: { options: { webhook: { url: 'http://127.0.0.1:1/elsewhere', headers: [{ name: 'X-Api-Key' }] } } },
    });
    assert.equal(moved.errors?.[0]?.extensions?.field, 'input.options.webhook.headers[0].value');
    assert.match(moved.errors![0]!.message, /another origin/);

    const reads = [
      (await s.gql(`query($id: ID!) { gate(id: $id) { rules { options { ... on WebhookRuleOptions { url headers { name } } } } } }`, { id: gateId })).data,
      (await s.gql(`query($id: ID!) { evaluation(id: $id) { ${WEBHOOK_FIELDS} } }`, { id: again.data.evaluateGate.id })).data,
      (await s.request('GET', `/api/v2/deployment_gates/${gateId}/rules`)).json,
      (await s.request('GET', `/api/v2/deployment_gates/evaluations/rules?filter[gate_id]=${gateId}`)).json,
    ].map((r) => JSON.stringify(r));
    for (const text of reads) {
      assert.ok(!text.includes(secret), `a read echoed the secret: ${text.slice(0, 300)}`);
      assert.ok(!text.includes('tgs1.'), 'nor its sealed form');
    }
    assert.match(reads[2]!, /"headers":\[\{"name":"X-Api-Key"\}\]/);
    const [stored] = await s.sql<{ options: string }>('select cast(options as text) as options from rules where id = ?', ruleId);
    assert.ok(!stored!.options.includes(secret));
    assert.match(stored!.options, /"secret": ?"tgs1\./);
    const snapshots = await s.sql('select id from rule_evaluations where cast(options as text) like ?', `%${secret}%`);
    assert.equal(snapshots.length, 0);
  });

  test('bad options are refused naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ url: `${hookUrl}/x`, retries: 9 }, 'retries', /retries must be between 0 and 5/],
      [{ url: `${hookUrl}/x`, mode: 'POLL' }, 'duration', /a poll webhook needs a duration/],
      [{ url: `${hookUrl}/x`, interval: 30 }, 'interval', /interval applies to mode poll only/],
      [{ url: 'ftp://127.0.0.1/x' }, 'url', /url must be http or https/],
      [{ url: 'http://user:pw@127.0.0.1/x' }, 'url', /must not hold a user name or password/],
      [{ url: `${hookUrl}/x`, headers: [{ name: 'Host', value: 'a' }] }, 'headers[0].name', /set by Tollgate itself/],
      [
        {
          url: `${hookUrl}/x`,
          headers: [
            { name: 'X-A', value: 'a' },
            { name: 'x-a', value: 'b' },
          ],
        },
        'headers[1].name',
        /given twice/,
      ],
      [{ url: `${hookUrl}/x`, headers: [{ name: 'X-A' }] }, 'headers[0].value', /is required for the new header X-A/],
    ];
    for (const [options, field, message] of cases) {
      const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [{ name: 'hook', options: { webhook: options } }] } });
      assert.equal(r.errors?.[0]?.extensions?.field, `input.configuration.rules[0].options.webhook.${field}`, JSON.stringify(r.errors));
      assert.match(r.errors![0]!.message, message);
    }
  });

  test('a name that resolves to loopback is not connected to unless that address is listed', async () => {
    const p = path((res) => res.writeHead(200).end('ok'));
    const port = (hook.address() as AddressInfo).port;
    const refused = await callWebhook({ url: `http://localhost:${port}${p}`, headers: {}, body: '{}', timeoutMs: 5000, listedAddresses: [] });
    assert.equal(refused.answered, false);
    assert.match((refused as { error: string }).error, /localhost resolves to (127\.0\.0\.1|::1) \(loopback\), which a webhook may not reach by name/);
    assert.equal(to(p).length, 0);
    const listed = await callWebhook({ url: `http://127.0.0.1:${port}${p}`, headers: {}, body: '{}', timeoutMs: 5000, listedAddresses: ['127.0.0.1'] });
    assert.equal(listed.answered && listed.status, 200);
  });
});

describe('webhook rule, configuration', () => {
  test('TOLLGATE_WEBHOOK_ALLOWED_HOSTS: exact names, wildcards below a domain, ports, addresses; bad entries refused naming the variable', () => {
    const allowed = loadConfig({ TOLLGATE_WEBHOOK_ALLOWED_HOSTS: 'Hooks.Example.com., *.ci.example.com, 10.0.0.7:8080, [fd00::7]' }).webhookAllowedHosts;
    const admits = (url: string) => allowedEntryFor(allowed, new URL(url)) !== null;
    assert.ok(admits('https://hooks.example.com/x'));
    assert.ok(admits('https://hooks.example.com:9443/x'), 'no port in the entry: any port');
    assert.ok(admits('https://a.b.ci.example.com/x'));
    assert.ok(!admits('https://ci.example.com/x'), 'a wildcard is below the domain, not the domain');
    assert.ok(!admits('https://evilci.example.com/x'));
    assert.ok(admits('http://10.0.0.7:8080/x'));
    assert.ok(!admits('http://10.0.0.7/x'), 'port 80 is not 8080');
    assert.ok(admits('http://[fd00::7]:1234/x'));
    assert.ok(!admits('http://hooks.example.com.evil.net/x'));
    assert.deepEqual(loadConfig({}).webhookAllowedHosts, [], 'unset: none');
    for (const bad of ['*', '*.com', 'https://hooks.example.com/path', 'a:99999']) {
      assert.throws(
        () => loadConfig({ TOLLGATE_WEBHOOK_ALLOWED_HOSTS: bad }),
        (err: unknown) => err instanceof ConfigError && /TOLLGATE_WEBHOOK_ALLOWED_HOSTS/.test(err.message),
        bad,
      );
    }
  });

  test('TOLLGATE_SECRET_KEY: 32 bytes as hex or base64; anything else refused at start without echoing it', () => {
    assert.equal(loadConfig({ TOLLGATE_SECRET_KEY: 'ab'.repeat(32) }).secretKey?.length, 32);
    assert.equal(loadConfig({ TOLLGATE_SECRET_KEY: randomBytes(32).toString('base64') }).secretKey?.length, 32);
    assert.equal(loadConfig({}).secretKey, null);
    const short = 'too-short-a-key-to-seal-anything';
    assert.throws(
      () => loadConfig({ TOLLGATE_SECRET_KEY: short }),
      (err: unknown) => err instanceof ConfigError && /TOLLGATE_SECRET_KEY: must be 32 random bytes/.test(err.message) && !err.message.includes(short),
    );
  });

  test('a changed TOLLGATE_SECRET_KEY: stored header values do not open, and the rule fails without calling, naming the keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-webhook-'));
    const first = await startServer({ webhookAllowedHosts: LOOPBACK, secretKey }, { dir });
    const p = path((res) => res.writeHead(200).end('ok'));
    let second: TestServer | undefined;
    try {
      const g = await first.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
        i: { service: 'rekeyed', env: 'prod', rules: [{ name: 'hook', options: { webhook: { url: `${hookUrl}${p}`, headers: [{ name: 'X-Token', value: 't' }] } } }] },
      });
      assert.equal(g.errors, undefined, JSON.stringify(g.errors));
      await first.stop();
      second = await startServer({ webhookAllowedHosts: LOOPBACK, secretKey: randomBytes(32) }, { dir });
      const ev = await driver(second).evaluate({ service: 'rekeyed', env: 'prod' });
      const [final] = (await driver(second).follow(ev.data.evaluateGate.id)).slice(-1);
      assert.equal(final.status, 'FAIL');
      assert.match(
        final.rules[0].reason,
        /^Not called: the value of header X-Token cannot be opened: it was sealed with key [0-9a-f]{8} and TOLLGATE_SECRET_KEY is key [0-9a-f]{8}\.$/,
      );
      assert.equal(to(p).length, 0);
    } finally {
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without TOLLGATE_SECRET_KEY headers are refused with the reason, and hooks without headers work', async () => {
    const bare = await startServer({ webhookAllowedHosts: LOOPBACK, secretKey: null });
    try {
      const r = await driver(bare).evaluate({
        service: 'checkout',
        env: 'prod',
        configuration: { rules: [{ name: 'hook', options: { webhook: { url: `${hookUrl}/x`, headers: [{ name: 'Authorization', value: 'Bearer t' }] } } }] },
      });
      assert.equal(r.errors?.[0]?.extensions?.field, 'input.configuration.rules[0].options.webhook.headers[0].value');
      assert.match(r.errors![0]!.message, /TOLLGATE_SECRET_KEY is not set/);
      const plain = await driver(bare).evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [{ name: 'hook', options: { webhook: { url: `${hookUrl}/x` } } }] } });
      assert.equal(plain.errors, undefined);
    } finally {
      await bare.stop();
    }
  });

  test('a stored rule whose host left the allow-list fails without calling', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-webhook-'));
    const first = await startServer({ webhookAllowedHosts: LOOPBACK, secretKey }, { dir });
    const p = path((res) => res.writeHead(200).end('ok'));
    let second: TestServer | undefined;
    try {
      const g = await first.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
        i: { service: 'moved', env: 'prod', rules: [{ name: 'hook', options: { webhook: { url: `${hookUrl}${p}` } } }] },
      });
      assert.equal(g.errors, undefined, JSON.stringify(g.errors));
      await first.stop();
      second = await startServer({ webhookAllowedHosts: [{ host: 'hooks.example.com', wildcard: false, port: null }], secretKey }, { dir });
      const ev = await driver(second).evaluate({ service: 'moved', env: 'prod' });
      const [final] = (await driver(second).follow(ev.data.evaluateGate.id)).slice(-1);
      assert.equal(final.status, 'FAIL');
      assert.match(final.rules[0].reason, /^Not called: host 127\.0\.0\.1:\d+ is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);
      assert.equal(to(p).length, 0);
    } finally {
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
