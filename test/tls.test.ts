// Tollgate serving HTTPS and WSS itself (TOLLGATE_TLS_CERT / TOLLGATE_TLS_KEY), with
// certificates made by the openssl command.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, loadConfig, readTls, TlsFileError } from '../src/config.ts';
import { ADMIN_KEY, driver, jitMonitor, selfSignedCert, skipWithout, startServer, type TestServer } from './helpers.ts';

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

  const call = (method: string, path: string, body?: unknown, trust = ca) => s.request(method, path, { body, trust });

  const fingerprint = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

  test('serves HTTPS on its one port: health, GraphQL and the REST API, with https links', async () => {
    assert.match(s.url, /^https:\/\//);
    assert.equal((await call('GET', '/healthz')).status, 200);
    const gql = await call('POST', '/graphql', { query: '{ apiKeys { name } }' });
    assert.deepEqual(gql.json.data.apiKeys, [{ name: 'bootstrap' }]);
    const triggered = await call('POST', '/api/v2/deployments/gates/evaluation', {
      data: {
        type: 'deployment_gates_evaluation_request',
        attributes: { service: 'tls-svc', env: 'prod', configuration: { rules: [{ name: 'm', type: 'monitor', options: { query: 'service:tls-svc', duration: 0 } }] } },
      },
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
    assert.match(s.wsUrl, /^wss:\/\//);
    const d = driver(s);
    await d.report(await d.monitor('tls', ['service:tls-ws']), 'OK');
    const started = await d.evaluate({ service: 'tls-ws', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'service:tls-ws', duration: 2 })] } });
    const seen = await d.follow(started.data.evaluateGate.id);
    assert.equal(seen[0].status, 'IN_PROGRESS');
    assert.equal(seen.at(-1).status, 'PASS');
  });

  test('tollgate evaluate follows an evaluation over HTTPS and WSS, trusting the certificate through NODE_EXTRA_CA_CERTS', async () => {
    const d = driver(s);
    await d.report(await d.monitor('tls cli', ['service:tls-cli']), 'OK');
    const caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, ca);
    const rules = join(dir, 'rules.json');
    writeFileSync(rules, JSON.stringify({ rules: [{ name: 'cli monitors', type: 'monitor', options: { query: 'service:tls-cli', duration: 2 } }] }));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'evaluate', '--url', s.url, '--api-key', ADMIN_KEY, '--service', 'tls-cli', '--env', 'prod', '--config', rules],
      {
        env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 0, out);
    assert.doesNotMatch(out, /WebSocket unavailable/);
    assert.match(out, /\[1\/1\] cli monitors: PASS/);
    assert.match(out, /Gate PASSED/);
  });

  test('reloadTls serves a renewed certificate to new connections, and keeps the old one when the new files are broken', async () => {
    const before = (await call('GET', '/healthz')).peer!;
    assert.equal(before?.fingerprint256, fingerprint(files.certFile));

    const renewed = selfSignedCert(dir, 'renewed', ['tollgate.test', 'localhost']);
    copyFileSync(renewed.certFile, files.certFile);
    copyFileSync(renewed.keyFile, files.keyFile);
    s.app.reloadTls();
    const renewedCall = await call('GET', '/healthz', undefined, readFileSync(renewed.certFile));
    assert.equal(renewedCall.peer?.fingerprint256, fingerprint(renewed.certFile));
    assert.notEqual(renewedCall.peer?.fingerprint256, before.fingerprint256);

    writeFileSync(files.certFile, 'not a certificate');
    assert.throws(
      () => s.app.reloadTls(),
      (err: unknown) => err instanceof TlsFileError && err.variable === 'TOLLGATE_TLS_CERT',
    );
    const still = await call('GET', '/healthz', undefined, readFileSync(renewed.certFile));
    assert.equal(still.peer?.fingerprint256, fingerprint(renewed.certFile));
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
    assert.match(
      refused({ TOLLGATE_TLS_CERT: join(dir, 'missing.crt'), TOLLGATE_TLS_KEY: good.keyFile }),
      /TOLLGATE_TLS_CERT \(".*missing\.crt"\): cannot read .*missing\.crt: ENOENT/,
    );
    assert.match(refused({ TOLLGATE_TLS_CERT: good.keyFile, TOLLGATE_TLS_KEY: good.keyFile }), /TOLLGATE_TLS_CERT .*is not a PEM certificate/);
    assert.match(refused({ TOLLGATE_TLS_CERT: good.certFile, TOLLGATE_TLS_KEY: other.keyFile }), /TOLLGATE_TLS_KEY .*other\.key is not the key of the certificate in .*good\.crt/);
    assert.match(refused({ TOLLGATE_TLS_CERT: good.certFile, TOLLGATE_TLS_KEY: good.certFile }), /TOLLGATE_TLS_KEY .*is not a PEM private key/);
    const config = loadConfig({ TOLLGATE_TLS_CERT: good.certFile, TOLLGATE_TLS_KEY: good.keyFile });
    assert.deepEqual(config.tls?.cert, readFileSync(good.certFile));
  });
});
