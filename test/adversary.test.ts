// Attacks on issue 9's fixes, through the public interfaces: each test failed before its fix.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import { revokeApiKey } from '../src/domain/apiKeys.ts';
import { createEvents } from '../src/domain/events.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { createLogger } from '../src/log.ts';
import { ADMIN_KEY, CREATE_GATE, monitorRule, sleep, startServer, subscribeLive, type TestServer, UNREACHABLE_LIMITS, wsOnce } from './helpers.ts';

let s: TestServer;
before(async () => {
  s = await startServer();
});
after(() => s.stop());

const CREATE_MONITOR = 'mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }';
const monitor = async (name: string, tags: string[]) => {
  const r = await s.gql(CREATE_MONITOR, { i: { name, type: 'EXTERNAL', tags } });
  if (!r.data) throw new Error(JSON.stringify(r.errors));
  return r.data.createMonitor.id as string;
};

describe('a key limited to one env cannot act on a monitor another env relies on', () => {
  test('a monitor tagged env:staging and env:prod is readable by a staging key, but not muted, retagged, reported or deleted by it', async () => {
    const shared = await monitor('shared-staging-prod', ['env:staging', 'env:prod']);
    const staging = await s.createKey(['monitors:write'], ['staging']);
    const attempts = {
      mute: await s.gql('mutation($id: ID!) { updateMonitor(id: $id, input: { muted: true }) { id } }', { id: shared }, staging),
      retag: await s.gql('mutation($id: ID!) { updateMonitor(id: $id, input: { tags: ["env:staging"] }) { id } }', { id: shared }, staging),
      report: await s.gql('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId: shared, state: 'OK' } }, staging),
      remove: await s.gql('mutation($id: ID!) { deleteMonitor(id: $id) }', { id: shared }, staging),
    };
    for (const [what, r] of Object.entries(attempts)) {
      assert.equal(r.errors?.[0]?.extensions?.code, 'FORBIDDEN', `${what}: ${JSON.stringify(r)}`);
      assert.match(r.errors![0]!.message, /env prod/, what);
    }
    const after = await s.gql('query($id: ID!) { monitor(id: $id) { muted tags } }', { id: shared });
    assert.deepEqual(after.data.monitor, { muted: false, tags: ['env:staging', 'env:prod'] });
    // Reading it stays allowed: the monitor is in staging too.
    const read = await s.gql('query($id: ID!) { monitor(id: $id) { id } }', { id: shared }, staging);
    assert.equal(read.data.monitor.id, shared);
  });

  test('Alertmanager: an alertname another env uses neither refuses nor reveals it; the staging alert gets a monitor of its own', async () => {
    const admin = await s.createKey(['ingest']);
    const staging = await s.createKey(['ingest'], ['staging']);
    const alert = (env: string) => ({ version: '4', alerts: [{ status: 'firing', labels: { alertname: 'ProdOnlyDiskFull', env } }] });
    assert.equal((await s.request('POST', '/hooks/alertmanager', { body: alert('prod'), key: admin })).json.received, 1);
    const r = await s.request('POST', '/hooks/alertmanager', { body: alert('staging'), key: staging });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { received: 1, rejected: 0, problems: [] });
    const seen = await s.gql('{ monitors(query: "alertname:ProdOnlyDiskFull") { edges { node { tags groups { state } } } } }', {}, await s.createKey(['gates:read'], ['staging']));
    assert.equal(seen.data.monitors.edges.length, 1, JSON.stringify(seen));
    assert.ok(seen.data.monitors.edges[0].node.tags.includes('env:staging'));
  });
});

describe("a monitor rule tells its trigger nothing of other envs' monitors", () => {
  test('a query too costly to match over prod monitors does not tell a staging trigger how many there are', async () => {
    // Each monitor holds ~19,000 characters of tags; 60 wildcard terms read them 60 times.
    const tags = (i: number) => ['env:prod', ...Array.from({ length: 98 }, (_, k) => `t${k}:${String(i).padEnd(190, 'y')}`)];
    for (let i = 0; i < 25; i++) await s.gql(CREATE_MONITOR, { i: { name: `heavy-prod-${i}`, type: 'EXTERNAL', tags: tags(i) } });
    const total = (await s.gql('{ monitors { edges { node { id } } } }')).data.monitors.edges.length;
    const query = Array.from({ length: 60 }, (_, k) => `t${k}:*q*`).join(' OR ');
    const staging = await s.createKey(['evaluations:write'], ['staging']);
    const started = await s.gql(
      'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }',
      { i: { service: 'heavy', env: 'staging', configuration: { rules: [{ name: 'r', options: { monitor: { query } } }] } } },
      staging,
    );
    const id = started.data.evaluateGate.id;
    let rule: any;
    for (let i = 0; i < 200; i++) {
      rule = (await s.gql('query($id: ID!) { evaluation(id: $id) { rules { status reason consecutiveSourceErrors } } }', { id }, staging)).data.evaluation.rules[0];
      if (rule.status !== 'IN_PROGRESS' || rule.consecutiveSourceErrors > 0) break;
      await sleep(50);
    }
    assert.doesNotMatch(rule.reason, new RegExp(`\\b(${total}|25) monitors`), rule.reason); // Prod's monitors are not even examined for a staging trigger: no cost, so no source error.
    assert.equal(rule.consecutiveSourceErrors, 0, rule.reason);
    assert.equal(rule.status, 'FAIL');
    assert.match(rule.reason, /^No unmuted monitor matches/);
  });
});

describe('revocation', () => {
  test("once the server has ended a key's streams for a revocation made by another process, its plain requests are refused too", async () => {
    const r = await s.gql('mutation { createApiKey(input: { name: "revoked-elsewhere", scopes: [GATES_READ] }) { secret key { id } } }');
    const { secret, key } = r.data.createApiKey;
    const ended = new Promise<number>((resolve) => {
      const client = s.ws(secret, { on: { closed: (e: any) => resolve(e.code) } });
      void subscribeLive(s, client, 'subscription { gateEvents { kind } }');
    });
    await sleep(300);
    assert.equal((await s.gql('{ gates { edges { node { id } } } }', {}, secret)).status, 200);
    await revokeApiKey({ ...s.app.deps, events: createEvents() }, SYSTEM, key.id);
    assert.equal(await ended, 4403);
    const after = await s.gql('{ gates { edges { node { id } } } }', {}, secret);
    assert.equal(after.status, 401, JSON.stringify(after));
  });
});

describe('rate limits hold however the path is spelled', () => {
  test("GraphQL at //graphql, /./graphql or /x/graphql, REST at /./api/…, hooks at /./hooks/… share the key's request budget", async () => {
    const limited = await startServer({ rateLimits: { ...UNREACHABLE_LIMITS, requestsPerSecond: 1 } });
    try {
      const key = await limited.createKey(['admin']);
      const spellings: Array<[string, unknown]> = [
        ['//graphql', { query: '{ __typename }' }],
        ['/./graphql', { query: '{ __typename }' }],
        ['/x/graphql', { query: '{ __typename }' }],
        ['/./api/v2/deployment_gates', undefined],
        ['/./hooks/gate?service=a&env=b', undefined],
      ];
      for (const [path, body] of spellings) {
        // Sent together: even spread over three one-second windows, at most 3 of 12 fit a budget of 1.
        const answers = await Promise.all(Array.from({ length: 12 }, async () => rawRequest(limited.url, body ? 'POST' : 'GET', path, key, body)));
        const statuses = answers.map((a) => a.status);
        assert.ok(statuses.filter((st) => st === 429).length >= 6, `${path}: ${statuses.join(' ')}`);
      }
    } finally {
      await limited.stop();
    }
  });
});

/** A request whose path is sent exactly as written (fetch and URL would resolve `.` and `//`). */
function rawRequest(base: string, method: string, path: string, key: string, body?: unknown): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const req = httpRequest({ hostname, port, method, path, agent: false, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode! }));
    });
    req.on('error', reject);
    req.end(text);
  });
}

describe('bodies are bounded before they are parsed', () => {
  test('a GraphQL request body over the WebSocket message bound is refused with 413', async () => {
    const key = await s.createKey(['gates:read']);
    const values = Array.from({ length: 200_000 }, (_, i) => `s${i}`);
    const r = await s.gql('query($s: [String!]) { evaluations(filter: { service: $s }) { edges { node { id } } } }', { s: values }, key);
    assert.equal(r.status, 413, JSON.stringify(r).slice(0, 300));
  });

  test('an OTLP protobuf span or resource of millions of attributes is refused by its size, the rest of the request stored', async () => {
    const Request = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
    const attr = (key: string, value: string) => ({ key, value: { stringValue: value } });
    const many = Array.from({ length: 300_000 }, () => attr('a', 'v'));
    const now = BigInt(Date.now()) * 1_000_000n;
    const span = (name: string, attributes: unknown[] = []) => ({ name, kind: 2, startTimeUnixNano: String(now), endTimeUnixNano: String(now + 1_000_000n), attributes });
    const body = Buffer.from(
      Request.encode(
        Request.fromObject({
          resourceSpans: [
            {
              resource: { attributes: [attr('service.name', 'huge-span'), attr('deployment.environment', 'prod')] },
              scopeSpans: [{ spans: [span('GET /ok'), span('GET /huge', many)] }],
            },
            { resource: { attributes: [attr('service.name', 'huge-resource'), attr('deployment.environment', 'prod'), ...many] }, scopeSpans: [{ spans: [span('GET /x')] }] },
          ],
        }),
      ).finish(),
    );
    const key = await s.createKey(['ingest']);
    const res = await fetch(`${s.url}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json'.replace('json', 'x-protobuf'), 'content-encoding': 'gzip', authorization: `Bearer ${key}` },
      body: new Uint8Array(gzipSync(body)),
    });
    assert.equal(res.status, 200);
    const Response = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;
    const answer = Response.decode(Buffer.from(await res.arrayBuffer()));
    assert.equal(Number(answer.partialSuccess?.rejectedSpans), 2, JSON.stringify(answer));
    assert.match(answer.partialSuccess.errorMessage, /bytes/);
  });
});

/**
 * A request whose headers (and key) arrive first and whose body arrives later: `between` runs
 * once the server has the headers and part of the body.
 */
function slowBodyRequest(base: string, path: string, headers: Record<string, string>, body: string, between: () => Promise<void>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const bytes = Buffer.from(body);
    const req = httpRequest(
      `${base}${path}`,
      { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': String(bytes.length), ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      },
    );
    req.on('error', reject);
    req.write(bytes.subarray(0, 3));
    void sleep(200)
      .then(between)
      .then(() => req.end(bytes.subarray(3)), reject);
  });
}

describe("a key revoked while its request's body is still arriving acts no more", () => {
  const newKey = async (name: string) => {
    const r = await s.gql('mutation($n: String!) { createApiKey(input: { name: $n, scopes: [ADMIN] }) { secret key { id } } }', { n: name });
    return r.data.createApiKey as { secret: string; key: { id: string } };
  };
  const revoke = (id: string) => async () => {
    const r = await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id });
    assert.equal(r.data?.revokeApiKey?.id, id, JSON.stringify(r));
  };

  test('GraphQL: a revoked admin key does not mint a new key with a body sent after the revocation', async () => {
    const { secret, key } = await newKey('slow-graphql');
    const body = JSON.stringify({ query: 'mutation { createApiKey(input: { name: "minted-after-revocation", scopes: [ADMIN] }) { secret } }' });
    const r = await slowBodyRequest(s.url, '/graphql', { authorization: `Bearer ${secret}` }, body, revoke(key.id));
    assert.equal(r.status, 401, r.text);
    const keys = await s.gql('{ apiKeys { name } }');
    assert.ok(!JSON.stringify(keys).includes('minted-after-revocation'), JSON.stringify(keys));
  });

  test('GraphQL: nor reads a response cached for it before', async () => {
    const { secret, key } = await newKey('slow-cached');
    const body = JSON.stringify({ query: '{ gates { edges { node { id } } } }' });
    assert.equal((await s.gql('{ gates { edges { node { id } } } }', {}, secret)).status, 200);
    const r = await slowBodyRequest(s.url, '/graphql', { authorization: `Bearer ${secret}` }, body, revoke(key.id));
    assert.equal(r.status, 401, r.text);
  });

  test('REST: no gate is created by a key revoked before its body arrived', async () => {
    const { secret, key } = await newKey('slow-rest');
    const body = JSON.stringify({ data: { type: 'deployment_gate', attributes: { service: 'made-after-revocation', env: 'prod', identifier: 'default' } } });
    const r = await slowBodyRequest(s.url, '/api/v2/deployment_gates', { 'dd-api-key': secret }, body, revoke(key.id));
    assert.equal(r.status, 401, r.text);
    const gates = await s.gql('{ gates { edges { node { service } } } }');
    assert.ok(!JSON.stringify(gates).includes('made-after-revocation'), JSON.stringify(gates));
  });

  test('hooks and OTLP: nothing triggered or ingested by a key revoked before its body arrived', async () => {
    const gate = await s.gql(CREATE_GATE, { input: { service: 'slow-hook', env: 'prod', rules: [monitorRule('r')] } });
    assert.ok(gate.data, JSON.stringify(gate));
    for (const path of ['/hooks/gate', '/hooks/flagger', '/hooks/alertmanager', '/v1/traces']) {
      const { secret, key } = await newKey(`slow-${path}`);
      const body =
        path === '/hooks/alertmanager'
          ? { version: '4', alerts: [{ status: 'firing', labels: { alertname: 'AfterRevocation', env: 'prod' } }] }
          : path === '/v1/traces'
            ? { resourceSpans: [] }
            : { service: 'slow-hook', env: 'prod' };
      const r = await slowBodyRequest(s.url, path, { authorization: `Bearer ${secret}` }, JSON.stringify(body), revoke(key.id));
      assert.equal(r.status, 401, `${path}: ${r.status} ${r.text}`);
    }
    const evaluations = await s.gql('{ evaluations(filter: { service: ["slow-hook"] }) { edges { node { id } } } }');
    assert.deepEqual(evaluations.data.evaluations.edges, [], JSON.stringify(evaluations));
  });
});

/** A client frame (text, masked) as RFC 6455 has it; payloads under 64 KB. */
function clientFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const header = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([header, mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
}

describe("a WebSocket closed for its key's revocation runs nothing more", () => {
  test('a client that never answers the close frame cannot start operations while the socket is closing', async () => {
    const made = await s.gql('mutation { createApiKey(input: { name: "lingering-socket", scopes: [ADMIN] }) { secret key { id } } }');
    const { secret, key } = made.data.createApiKey;
    const { hostname, port } = new URL(s.url);
    // A raw socket: ws clients answer a close frame at once, a hostile one need not.
    const socket = connect(Number(port), hostname);
    let received = '';
    socket.on('data', (d) => (received += d.toString('latin1')));
    const until = async (what: RegExp) => {
      for (let i = 0; i < 200 && !what.test(received); i++) await sleep(25);
      assert.match(received, what);
    };
    try {
      socket.write(
        `GET /graphql HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n`,
      );
      await until(/101 Switching Protocols/);
      socket.write(clientFrame(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${secret}` } })));
      await until(/connection_ack/);
      const revoked = await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: key.id });
      assert.equal(revoked.data.revokeApiKey.id, key.id);
      await until(/was revoked/); // the server's close frame, left unanswered
      const mutation = 'mutation { createApiKey(input: { name: "minted-over-a-closing-socket", scopes: [ADMIN] }) { secret } }';
      socket.write(clientFrame(JSON.stringify({ id: 'late', type: 'subscribe', payload: { query: mutation } })));
      await sleep(500);
      const keys = await s.gql('{ apiKeys { name } }');
      assert.ok(!JSON.stringify(keys.data).includes('minted-over-a-closing-socket'), JSON.stringify(keys.data));
    } finally {
      socket.destroy();
    }
  });
});

describe('a secret pasted where an id belongs stays out of the logs', () => {
  test('revokeApiKey(id: <the secret>), evaluation(id: <the secret>) over HTTP and WebSocket: the debug lines quote at most its first 10 characters', async () => {
    const raw: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        raw.push(String(chunk));
        done();
      },
    });
    const logged = await startServer({ logLevel: 'trace' }, { log: createLogger('trace', sink) });
    try {
      const made = await logged.gql('mutation { createApiKey(input: { name: "pasted", scopes: [ADMIN] }) { secret } }');
      const secret: string = made.data.createApiKey.secret;
      // An operator revoking a leaked key by the only thing they have of it.
      const revoke = await logged.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: secret });
      assert.equal(revoke.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(revoke));
      await logged.gql(`{ evaluation(id: "${secret}") { id } }`);
      await wsOnce(logged.ws(), 'query($id: ID!) { evaluation(id: $id) { id } }', { id: secret });
      await logged.request('GET', `/api/v2/deployment_gates/${secret}`);
      const text = raw.join('');
      assert.ok(text.includes('operation refused'), 'the refusals were logged');
      assert.ok(
        !text.includes(secret.slice(0, 11)),
        text.split('\n').find((l) => l.includes(secret.slice(0, 11))),
      );
    } finally {
      await logged.stop();
    }
  });
});

describe('one server per database file, however the file is named', () => {
  test("a lock file deleted under a running server (a stale-lock reflex) stops that server's writes before a second one can share the file", async () => {
    const first = await startServer();
    try {
      const lockFiles = readdirSync(first.dir).filter((f) => f.includes('.lock'));
      assert.ok(lockFiles.length > 0, readdirSync(first.dir).join(' '));
      for (const f of lockFiles) unlinkSync(join(first.dir, f));
      // Within its watch's second the first server knows it no longer holds the file alone.
      let ready = await first.request('GET', '/readyz');
      for (let i = 0; i < 100 && ready.status === 200; i++) {
        await sleep(50);
        ready = await first.request('GET', '/readyz');
      }
      assert.equal(ready.status, 503, ready.text);
      assert.match(ready.text, /lock/);
      const write = await first.gql(CREATE_GATE, { input: { service: 'after-lock-deleted', env: 'prod', rules: [monitorRule('r')] } });
      assert.equal(write.errors?.[0]?.extensions?.code, 'UNAVAILABLE', JSON.stringify(write));
    } finally {
      await first.stop(); // threw SQLITE_READONLY before (the engine's leases), leaving the file open
    }
  });

  test("a second server on a symlink to the first one's database file refuses to start", async () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'tollgate-link-'));
    try {
      const link = join(elsewhere, 'link.db');
      symlinkSync(s.dbPath, link);
      // SQLite follows the symlink: the same file, the same -wal, two servers driving them.
      let refusal: unknown;
      await startServer({ dbPath: link }, { dir: elsewhere }).then(
        (second) => second.stop(),
        (err) => (refusal = err),
      );
      assert.match(String(refusal), /another Tollgate server .* is using the database/);
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});

describe("GraphQL parameters that are not JSON are the client's mistake", () => {
  test('variables or extensions that are not JSON, in a GET query string or a form body: 400 naming the parameter, not "Unexpected error."', async () => {
    const auth = { authorization: `Bearer ${ADMIN_KEY}` };
    const attempts: Array<[string, Promise<Response>]> = [];
    for (const param of ['variables', 'extensions']) {
      attempts.push([`GET ${param}`, fetch(`${s.url}/graphql?query=%7B__typename%7D&${param}=%7B`, { headers: auth })]);
      attempts.push([
        `POST form ${param}`,
        fetch(`${s.url}/graphql`, {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
          body: `query=%7B__typename%7D&${param}=%7Bnot-json`,
        }),
      ]);
    }
    for (const [what, pending] of attempts) {
      const res = await pending;
      const body = await res.json();
      assert.equal(res.status, 400, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.errors[0].extensions.code, 'BAD_REQUEST', what);
      assert.match(body.errors[0].message, /(variables|extensions).*JSON/, what);
    }
  });
});

describe('tollgate keys on a path that is no database', () => {
  test('a directory or a file that is not SQLite is one line naming it and exit 2, not a stack trace', async () => {
    const { spawnSync } = await import('node:child_process');
    const { writeFileSync } = await import('node:fs');
    const bin = join(import.meta.dirname, '..', 'bin/tollgate.js');
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-notdb-'));
    try {
      const text = join(dir, 'notes.txt');
      writeFileSync(text, 'these are not the tables you are looking for\n'.repeat(200));
      for (const [args, path] of [
        [['keys', 'create', '--db', dir, '--name', 'x', '--scope', 'gates:read'], dir],
        [['keys', 'list', '--db', text], text],
      ] as const) {
        const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: dir });
        assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stderr.includes(path), r.stderr);
        assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tollgate apply on a hostile gates file', () => {
  test('a YAML alias bomb is refused in a sentence naming the file, not a stack trace', async () => {
    const { readGatesFile } = await import('../src/cli/apply.ts');
    const { writeFileSync } = await import('node:fs');
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-bomb-'));
    try {
      let text = 'a: &a [x, x, x, x, x, x, x, x, x]\n';
      for (let i = 1; i < 9; i++)
        text += `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(', ')}]\n`;
      text += 'gates: *i\n';
      const file = join(dir, 'gates.yaml');
      writeFileSync(file, text);
      assert.throws(
        () => readGatesFile(file),
        (err: Error) => err.constructor.name === 'ApplyError' && err.message.startsWith(`${file}:`) && /alias/i.test(err.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
