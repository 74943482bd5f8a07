// The real `datadog-ci deployment gate` (the npm package, unchanged) against Tollgate, pointed
// at it the way a Datadog user switches: DD_SITE names Tollgate's domain, so the CLI calls
// https://api.<DD_SITE>. On one machine a CONNECT proxy (HTTPS_PROXY, which the CLI honours)
// routes that host to Tollgate's TLS port, and NODE_EXTRA_CA_CERTS trusts its certificate.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readTls } from '../src/config.ts';
import { CREATE_GATE, driver, selfSignedCert, skipWithout, startServer, type TestServer, waitFor } from './helpers.ts';

const SITE = 'tollgate.test';
/** The package's own bin, as `npx datadog-ci` runs it. */
const datadogCi = fileURLToPath(new URL('../node_modules/.bin/datadog-ci', import.meta.url));

describe('the real datadog-ci CLI against Tollgate', { skip: skipWithout('openssl') }, () => {
  let dir: string;
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  let proxy: Server;
  let certFile: string;
  /** Every host:port the CLI asked the proxy for. */
  const tunnels: string[] = [];
  /** While held, what the CLI sends waits at the proxy (in order), so nothing it asks reaches Tollgate. */
  let held = false;
  const waiting: Array<() => void> = [];
  const release = () => {
    held = false;
    for (const send of waiting.splice(0)) send();
  };
  let apiKey: string;
  let okMonitor: string;
  let alertMonitor: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-ddci-'));
    const cert = selfSignedCert(dir, 'api', [`api.${SITE}`]);
    certFile = cert.certFile;
    s = await startServer({ tls: readTls(cert.certFile, cert.keyFile), publicUrl: `https://api.${SITE}` });
    d = driver(s);
    const tollgatePort = Number(new URL(s.url).port);
    // Forwards every tunnel to Tollgate, whatever host it names: this machine has no DNS for it.
    proxy = createServer((_req, res) => res.writeHead(405).end()).on('connect', (req, client, head) => {
      tunnels.push(req.url ?? '');
      const upstream = connect(tollgatePort, '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client);
        client.on('data', (chunk) => (held ? waiting.push(() => upstream.write(chunk)) : upstream.write(chunk)));
        client.on('end', () => (held ? waiting.push(() => upstream.end()) : upstream.end()));
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    apiKey = await s.createKey(['evaluations:write']);
    okMonitor = await d.monitor('checkout healthy', ['team:ddci', 'state:ok']);
    await d.report(okMonitor, 'OK');
    alertMonitor = await d.monitor('checkout errors', ['team:ddci', 'state:alert']);
    await d.report(alertMonitor, 'ALERT');
  });
  after(async () => {
    release();
    proxy?.closeAllConnections();
    await new Promise((r) => proxy?.close(r));
    await s?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** `datadog-ci deployment gate <args>` as a pipeline runs it; its exit code and output. */
  function gate(args: string[]): Promise<{ code: number; out: string }> {
    const { port } = proxy.address() as AddressInfo;
    return new Promise((resolve) => {
      execFile(
        datadogCi,
        ['deployment', 'gate', ...args],
        {
          timeout: 60_000,
          env: {
            PATH: process.env.PATH,
            HOME: dir,
            DD_SITE: SITE,
            DD_API_KEY: apiKey,
            DD_APP_KEY: 'an-application-key-tollgate-ignores',
            DD_BETA_COMMANDS_ENABLED: '1',
            HTTPS_PROXY: `http://127.0.0.1:${port}`,
            NODE_EXTRA_CA_CERTS: certFile,
            FORCE_COLOR: '0',
          },
        },
        // A timeout or a signal is no exit code: -1, so it can never pass for a verdict.
        (err, stdout, stderr) => resolve({ code: !err ? 0 : typeof err.code === 'number' ? err.code : -1, out: stdout + stderr }),
      );
    });
  }

  async function storedGate(service: string, query: string, { dryRun = false, identifier = undefined as string | undefined, duration = 0 } = {}) {
    const r = await s.gql(CREATE_GATE, { input: { service, env: 'prod', dryRun, identifier, rules: [{ name: 'checkout monitors', options: { monitor: { query, duration } } }] } });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  }

  test('a passing gate exits 0, having called https://api.<DD_SITE> through the proxy', async () => {
    await storedGate('ddci-pass', 'team:ddci state:ok');
    const { code, out } = await gate(['--service', 'ddci-pass', '--env', 'prod', '--timeout', '50']);
    assert.equal(code, 0, out);
    assert.match(out, /Gate evaluation passed/);
    assert.match(out, /Evaluation mode: Active/);
    assert.match(out, /Evaluation URL: https:\/\/api\.tollgate\.test\/evaluations\//);
    assert.match(out, /Rule: checkout monitors[\s\S]*Status: PASS/);
    assert.ok(tunnels.length > 0 && tunnels.every((t) => t === `api.${SITE}:443`), JSON.stringify(tunnels));
  });

  test('a failing gate exits 1 and prints the failing rule with its reason', async () => {
    await storedGate('ddci-fail', 'team:ddci state:alert');
    const { code, out } = await gate(['--service', 'ddci-fail', '--env', 'prod', '--timeout', '50']);
    assert.equal(code, 1, out);
    assert.match(out, /Gate evaluation failed/);
    assert.match(out, /Rule: checkout monitors[\s\S]*Status: FAIL[\s\S]*Reason: .*checkout errors/);
  });

  test('a dry-run gate with a failing rule exits 0 and says it ran in dry run', async () => {
    await storedGate('ddci-dry', 'team:ddci state:alert', { dryRun: true });
    const { code, out } = await gate(['--service', 'ddci-dry', '--env', 'prod', '--timeout', '50']);
    assert.equal(code, 0, out);
    assert.match(out, /Gate evaluation passed/);
    assert.match(out, /Evaluation mode: Dry run/);
  });

  test("--config runs just-in-time rules with datadog-ci's file format (camelCase dryRun, snake_case options)", async () => {
    const config = join(dir, 'gate-config.json');
    writeFileSync(
      config,
      JSON.stringify({
        dryRun: false,
        rules: [
          { name: 'healthy', type: 'monitor', options: { query: 'team:ddci state:ok', duration: 0 } },
          { name: 'alerting, watched only', type: 'monitor', dryRun: true, options: { query: 'team:ddci state:alert', duration: 0 } },
        ],
      }),
    );
    const passed = await gate(['--service', 'ddci-jit', '--env', 'prod', '--version', '1.2.3', '--config', config, '--timeout', '50']);
    assert.equal(passed.code, 0, passed.out);
    assert.match(passed.out, /Rule: alerting, watched only\s+Evaluation mode: Dry run\s+Status: FAIL/);

    writeFileSync(config, JSON.stringify({ rules: [{ name: 'alerting', type: 'monitor', options: { query: 'team:ddci state:alert', duration: 0 } }] }));
    const failed = await gate(['--service', 'ddci-jit', '--env', 'prod', '--config', config, '--timeout', '50']);
    assert.equal(failed.code, 1, failed.out);
  });

  test('--identifier, --version and --apm-primary-tag reach the evaluation', async () => {
    await storedGate('ddci-args', 'team:ddci state:ok', { identifier: 'canary-20pct' });
    const { code, out } = await gate([
      '--service',
      'ddci-args',
      '--env',
      'prod',
      '--identifier',
      'canary-20pct',
      '--version',
      '2.0.1',
      '--apm-primary-tag',
      'region:us-east-1',
      '--timeout',
      '50',
    ]);
    assert.equal(code, 0, out);
    const r = await s.gql('{ evaluations(filter: { service: "ddci-args" }, first: 1) { edges { node { identifier version primaryTag status } } } }');
    assert.deepEqual(r.data.evaluations.edges[0].node, { identifier: 'canary-20pct', version: '2.0.1', primaryTag: 'region:us-east-1', status: 'PASS' });
  });

  test('a gate that failed and was overridden to PASS before the next poll exits 0: gate_status is the override, the rule still FAIL', async () => {
    const flaky = await d.monitor('checkout flaky', ['team:ddci', 'state:flip']);
    await d.report(flaky, 'OK');
    await storedGate('ddci-override', 'team:ddci state:flip', { duration: 600 });
    const run = gate(['--service', 'ddci-override', '--env', 'prod', '--timeout', '50']);
    const evaluation = async () =>
      (await s.gql('{ evaluations(filter: { service: "ddci-override" }, first: 1) { edges { node { id status } } } }')).data.evaluations.edges[0]?.node;
    const { id } = await waitFor('datadog-ci to start an evaluation', evaluation);
    // Its polls wait at the proxy while the gate fails and a person overrides it.
    held = true;
    await d.report(flaky, 'ALERT');
    await waitFor('the evaluation to fail', async () => (await evaluation())?.status === 'FAIL');
    const manager = await s.gql('mutation { createApiKey(input: { name: "release-manager", scopes: [EVALUATIONS_OVERRIDE] }) { secret } }');
    const overridden = await s.gql(
      'mutation($id: ID!) { overrideEvaluation(id: $id, verdict: PASS, reason: "known flaky monitor") { reportedStatus } }',
      { id },
      manager.data.createApiKey.secret,
    );
    assert.equal(overridden.errors, undefined, JSON.stringify(overridden.errors));
    release();
    const { code, out } = await run;
    assert.equal(code, 0, out);
    assert.match(out, /Gate evaluation passed/);
    assert.match(out, /Rule: checkout monitors[\s\S]*Status: FAIL/);
  });

  test('a verdict later than --timeout passes by default and fails with --fail-on-error', async () => {
    await storedGate('ddci-slow', 'team:ddci state:ok', { duration: 600 });
    const tolerated = await gate(['--service', 'ddci-slow', '--env', 'prod', '--timeout', '1']);
    assert.equal(tolerated.code, 0, tolerated.out);
    assert.match(tolerated.out, /Timeout reached/);
    const strict = await gate(['--service', 'ddci-slow', '--env', 'prod', '--timeout', '1', '--fail-on-error']);
    assert.equal(strict.code, 1, strict.out);
    assert.match(strict.out, /Timeout reached/);
  });

  test("a request Tollgate refuses (a faulty-deployment rule without --version) exits 1 with the server's reason", async () => {
    const config = join(dir, 'fdd-config.json');
    writeFileSync(config, JSON.stringify({ rules: [{ name: 'fdd', type: 'faulty_deployment_detection', options: { duration: 900 } }] }));
    const { code, out } = await gate(['--service', 'ddci-fdd', '--env', 'prod', '--config', config, '--timeout', '50']);
    assert.equal(code, 1, out);
    assert.match(out, /400/);
    assert.match(out, /version/);
  });
});
