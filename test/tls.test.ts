// Tollgate serving HTTPS and WSS itself (TOLLGATE_TLS_CERT / TOLLGATE_TLS_KEY), with
// certificates made by the openssl command.
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ConfigError, loadConfig, readTls, TlsFileError } from '../src/config.ts';
import { ADMIN_KEY, jitMonitor, selfSignedCert, skipWithout, startServer, subscribeQueue, type TestServer } from './helpers.ts';

const skip = skipWithout('openssl');

describe('TLS', { skip }, () => {
  let dir: string;
  let s: TestServer;
  let ca: Buffer;
  let files: { certFile: string; keyFile: string };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-tls-'));
    files = selfSignedCert(dir, 'server', ['tollgate.test', 'localhost']);
    ca = readFileSync(files.certFile);
    s = await startServer({ tls: readTls(files.certFile, files.keyFile) });
  });
  after(async () => {
    await s?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request that verifies the server's certificate against `trust`. */
  function call(method: string, path: string, body?: unknown, trust = ca): Promise<{ status: number; json: any; peer: PeerCertificate }> {
    return new Promise((resolve, reject) => {
      const req = request(`${s.url}${path}`, {
        method,
        ca: trust,
        agent: false,
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      });
      req.on('response', (res) => {
        const peer = (res.socket as TLSSocket).getPeerCertificate();
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, json: text.startsWith('{') ? JSON.parse(text) : text, peer }));
      });
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  const fingerprint = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

  test('serves HTTPS on its one port: health, GraphQL and the REST API, with https links', async () => {
    assert.match(s.url, /^https:\/\//);
    assert.equal((await call('GET', '/healthz')).status, 200);
    const gql = await call('POST', '/graphql', { query: '{ apiKeys { name } }' });
    assert.deepEqual(gql.json.data.apiKeys, [{ name: 'bootstrap' }]);
    const triggered = await call('POST', '/api/v2/deployments/gates/evaluation', {
      data: { type: 'deployment_gates_evaluation_request', attributes: { service: 'tls-svc', env: 'prod', configuration: { rules: [{ name: 'm', type: 'monitor', options: { query: 'service:tls-svc', duration: 0 } }] } } },
    });
    assert.equal(triggered.status, 202, JSON.stringify(triggered.json));
    const id = triggered.json.data.attributes.evaluation_id;
    const result = await call('GET', `/api/v2/deployments/gates/evaluation/${id}`);
    assert.match(result.json.data.attributes.evaluation_url, /^https:\/\/127\.0\.0\.1:\d+\//);
  });

  test('a client that does not trust the certificate is refused', async () => {
    const other = selfSignedCert(dir, 'stranger', ['tollgate.test']);
    await assert.rejects(call('GET', '/healthz', undefined, readFileSync(other.certFile)), /self[- ]signed|unable to verify|certificate/i);
  });

  test('subscriptions run over WSS', async () => {
    const monitor = await call('POST', '/graphql', { query: 'mutation { createMonitor(input: { name: "tls", type: EXTERNAL, tags: ["service:tls-ws"] }) { id } }' });
    const monitorId = monitor.json.data.createMonitor.id;
    await call('POST', '/graphql', { query: 'mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', variables: { id: monitorId } });
    const started = await call('POST', '/graphql', {
      query: 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id status } }',
      variables: { i: { service: 'tls-ws', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'service:tls-ws', duration: 2 })] } } },
    });
    const id = started.json.data.evaluateGate.id;
    assert.match(s.wsUrl, /^wss:\/\//);
    const trusting = class extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols, { ca });
      }
    };
    const client = s.ws(ADMIN_KEY, { webSocketImpl: trusting });
    const updates = subscribeQueue(client, 'subscription($id: ID!) { evaluationUpdated(id: $id) { status } }', { id });
    const statuses = [];
    for (let i = 0; i < 10 && (i === 0 || statuses.at(-1) === 'IN_PROGRESS'); i++) {
      const next = await updates.next(10_000);
      assert.equal(next.errors, undefined, JSON.stringify(next.errors));
      statuses.push((next.data as any).evaluationUpdated.status);
    }
    assert.equal(statuses[0], 'IN_PROGRESS');
    assert.equal(statuses.at(-1), 'PASS');
    updates.dispose();
  });

  test('reloadTls serves a renewed certificate to new connections, and keeps the old one when the new files are broken', async () => {
    const before = (await call('GET', '/healthz')).peer;
    assert.equal(before.fingerprint256, fingerprint(files.certFile));

    const renewed = selfSignedCert(dir, 'renewed', ['tollgate.test', 'localhost']);
    copyFileSync(renewed.certFile, files.certFile);
    copyFileSync(renewed.keyFile, files.keyFile);
    s.app.reloadTls();
    const after = await call('GET', '/healthz', undefined, readFileSync(renewed.certFile));
    assert.equal(after.peer.fingerprint256, fingerprint(renewed.certFile));
    assert.notEqual(after.peer.fingerprint256, before.fingerprint256);

    writeFileSync(files.certFile, 'not a certificate');
    assert.throws(() => s.app.reloadTls(), (err: unknown) => err instanceof TlsFileError && err.variable === 'TOLLGATE_TLS_CERT');
    const still = await call('GET', '/healthz', undefined, readFileSync(renewed.certFile));
    assert.equal(still.peer.fingerprint256, fingerprint(renewed.certFile));
  });

  test('bad certificate settings stop the start, naming the variable', () => {
    const refused = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err.message;
      }
      assert.fail(`accepted ${JSON.stringify(env)}`);
    };
    const good = selfSignedCert(dir, 'good', ['tollgate.test']);
    const other = selfSignedCert(dir, 'other', ['tollgate.test']);
    assert.match(refused({ TOLLGATE_TLS_CERT: good.certFile }), /TOLLGATE_TLS_KEY: must be set too/);
    assert.match(refused({ TOLLGATE_TLS_KEY: good.keyFile }), /TOLLGATE_TLS_CERT: must be set too/);
    assert.match(refused({ TOLLGATE_TLS_CERT: join(dir, 'missing.crt'), TOLLGATE_TLS_KEY: good.keyFile }), /TOLLGATE_TLS_CERT \(".*missing\.crt"\): cannot read .*missing\.crt: ENOENT/);
    assert.match(refused({ TOLLGATE_TLS_CERT: good.keyFile, TOLLGATE_TLS_KEY: good.keyFile }), /TOLLGATE_TLS_CERT .*is not a PEM certificate/);
    assert.match(refused({ TOLLGATE_TLS_CERT: good.certFile, TOLLGATE_TLS_KEY: other.keyFile }), /TOLLGATE_TLS_KEY .*other\.key is not the key of the certificate in .*good\.crt/);
    assert.match(refused({ TOLLGATE_TLS_CERT: good.certFile, TOLLGATE_TLS_KEY: good.certFile }), /TOLLGATE_TLS_KEY .*is not a PEM private key/);
    const config = loadConfig({ TOLLGATE_TLS_CERT: good.certFile, TOLLGATE_TLS_KEY: good.keyFile });
    assert.equal(createHash('sha256').update(config.tls!.cert).digest('hex'), createHash('sha256').update(readFileSync(good.certFile)).digest('hex'));
  });
});
