// Real Prometheus and Alertmanager processes (Debian's packages), pointed at Tollgate as a
// user would point them. Skipped when the binaries are absent, unless
// TOLLGATE_REQUIRE_INTEGRATION=1 (as in CI), where a missing binary is a failure.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_KEY, driver, freePort, jitMonitor, skipWithout, startServer, type TestServer, waitFor, which } from './helpers.ts';

const skip = skipWithout('prometheus', 'prometheus-alertmanager|alertmanager');
const prometheusBin = which('prometheus');
const alertmanagerBin = which('prometheus-alertmanager', 'alertmanager');

function run(bin: string, args: string[]): ChildProcess {
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
  child.once('exit', (code) => {
    if (code && code !== 0 && code !== 143) console.error(`${bin} exited ${code}:\n${log}`);
  });
  return child;
}

describe('real Prometheus and Alertmanager', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-integration-'));
  let exporterValue = 0.01;
  let exporter: Server;
  let prometheus: ChildProcess;
  let alertmanager: ChildProcess;
  let promUrl = '';
  let amUrl = '';
  let s: TestServer;
  let d: ReturnType<typeof driver>;

  before(async () => {
    // A small exporter the test controls.
    exporter = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(
        [
          '# TYPE demo_errors_ratio gauge',
          `demo_errors_ratio{service="checkout",env="prod"} ${exporterValue}`,
          // A service with no traffic: its error ratio, errors / requests, is 0/0.
          '# TYPE demo_idle_errors gauge',
          'demo_idle_errors{service="idle",env="prod"} 0',
          '# TYPE demo_idle_requests gauge',
          'demo_idle_requests{service="idle",env="prod"} 0',
          '',
        ].join('\n'),
      );
    });
    await new Promise<void>((r) => exporter.listen(0, '127.0.0.1', r));
    const exporterPort = (exporter.address() as AddressInfo).port;

    const promPort = await freePort();
    promUrl = `http://127.0.0.1:${promPort}`;
    writeFileSync(
      join(dir, 'rules.yml'),
      [
        'groups:',
        '  - name: demo',
        '    rules:',
        '      - alert: DemoErrorsHigh',
        '        expr: demo_errors_ratio > 0.05',
        '        labels: { severity: page, team: payments }',
        '        annotations: { summary: "error ratio above 5%" }',
      ].join('\n'),
    );
    writeFileSync(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        `rule_files: ["${join(dir, 'rules.yml')}"]`,
        'scrape_configs:',
        '  - job_name: demo',
        `    static_configs: [{ targets: ["127.0.0.1:${exporterPort}"] }]`,
      ].join('\n'),
    );
    prometheus = run(prometheusBin!, [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'prom-data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ]);
    await waitFor('Prometheus to be ready', async () => (await fetch(`${promUrl}/-/ready`)).ok);

    s = await startServer({ prometheusUrl: promUrl, monitorIntervalMs: 500 });
    d = driver(s);

    const amPort = await freePort();
    amUrl = `http://127.0.0.1:${amPort}`;
    writeFileSync(
      join(dir, 'alertmanager.yml'),
      [
        'route: { receiver: tollgate, group_by: [alertname, instance], group_wait: 0s, group_interval: 1s, repeat_interval: 1h }',
        'receivers:',
        '  - name: tollgate',
        '    webhook_configs:',
        `      - url: "${s.url}/hooks/alertmanager"`,
        '        send_resolved: true',
        `        http_config: { authorization: { type: Bearer, credentials: "${ADMIN_KEY}" } }`,
      ].join('\n'),
    );
    alertmanager = run(alertmanagerBin!, [
      `--config.file=${join(dir, 'alertmanager.yml')}`,
      `--storage.path=${join(dir, 'am-data')}`,
      `--web.listen-address=127.0.0.1:${amPort}`,
      '--cluster.listen-address=',
    ]);
    await waitFor('Alertmanager to be ready', async () => (await fetch(`${amUrl}/-/ready`)).ok);
  });

  after(async () => {
    for (const child of [prometheus, alertmanager]) child?.kill('SIGTERM');
    await s?.stop();
    exporter?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const monitorState = async (query: string) => {
    const r = await s.gql('query($q: String) { monitors(first: 5, query: $q) { edges { node { id state sourceErrors groups { group state } } } } }', { q: query });
    return r.data?.monitors.edges[0]?.node;
  };

  test('a PromQL monitor follows the series: OK, then ALERT', async () => {
    const r = await s.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', {
      i: { name: 'demo error ratio', type: 'PROMETHEUS', query: 'demo_errors_ratio', critical: 0.05, warning: 0.02, tags: ['source:promql-test', 'service:checkout'] },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const ok = await waitFor('the PromQL monitor to be OK', async () => ((await monitorState('source:promql-test'))?.state === 'OK' ? monitorState('source:promql-test') : null));
    const series = ok.groups.find((g: any) => g.group !== '*');
    assert.match(series.group, /env:prod,instance:127\.0\.0\.1:\d+,job:demo,service:checkout/);
    assert.equal(series.state, 'OK');
    exporterValue = 0.2;
    await waitFor('the PromQL monitor to be ALERT', async () => (await monitorState('source:promql-test'))?.state === 'ALERT');
  });

  test('a PromQL value of NaN (0/0 with no traffic) is NO_DATA, not OK, and fails a rule with failOnNoData', async () => {
    const create = async (name: string, query: string, tag: string) => {
      const r = await s.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', {
        i: { name, type: 'PROMETHEUS', query, critical: 0.05, tags: [tag] },
      });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    };
    await create('idle error ratio', 'demo_idle_errors / demo_idle_requests', 'source:promql-nan-vector');
    await create('idle scalar', 'scalar(demo_idle_errors) / 0', 'source:promql-nan-scalar');
    // Wait only for a series to be evaluated, whatever its state, so a wrong state fails here.
    const vector = await waitFor('the vector monitor to evaluate its series', async () => {
      const node = await monitorState('source:promql-nan-vector');
      return node?.groups.some((g: any) => g.group !== '*') ? node : null;
    });
    assert.deepEqual(
      vector.groups.filter((g: any) => g.group !== '*').map((g: any) => g.state),
      ['NO_DATA'],
    );
    assert.equal(vector.state, 'NO_DATA');
    const scalar = await waitFor('the scalar monitor to be evaluated', async () => {
      const node = await monitorState('source:promql-nan-scalar');
      return node?.groups.length ? node : null;
    });
    assert.deepEqual(scalar.groups, [{ group: '*', state: 'NO_DATA' }]);

    const ev = await d.evaluate({ service: 'idle', env: 'prod', configuration: { rules: [jitMonitor('idle ratio', { query: 'source:promql-nan-vector' })] } });
    const final = (await d.follow(ev.data.evaluateGate.id)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.match(final.rules[0].reason, /NO_DATA/);
  });

  test('an imported alerting rule goes firing → ALERT, and a gate watching it fails', async () => {
    exporterValue = 0.2;
    const m = await waitFor('the imported rule to fire', async () => {
      const node = await monitorState('alertname:DemoErrorsHigh source:prometheus-rule');
      return node?.state === 'ALERT' ? node : null;
    });
    assert.ok(m.groups.some((g: any) => g.state === 'ALERT'));
    const tags = (await s.gql('query($id: ID!) { monitor(id: $id) { tags importedFromRule } }', { id: m.id })).data.monitor;
    assert.ok(tags.tags.includes('team:payments'));
    assert.equal(tags.importedFromRule, 'demo/DemoErrorsHigh');
    const ev = await d.evaluate({
      service: 'checkout',
      env: 'prod',
      configuration: { rules: [jitMonitor('prometheus rule', { query: 'alertname:DemoErrorsHigh' }), jitMonitor('promql', { query: 'source:promql-test' })] },
    });
    const final = (await d.follow(ev.data.evaluateGate.id)).at(-1);
    assert.equal(final.status, 'FAIL');
    assert.deepEqual(
      final.rules.map((x: any) => x.status),
      ['FAIL', 'FAIL'],
    );
  });

  test('an alert posted to Alertmanager reaches Tollgate as ALERT, its resolution as OK', async () => {
    const alert = { labels: { alertname: 'CheckoutDown', service: 'checkout', env: 'prod', instance: 'pod-1' }, annotations: { summary: 'checkout is down' } };
    const post = (extra: Record<string, unknown>) =>
      fetch(`${amUrl}/api/v2/alerts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ ...alert, ...extra }]) });
    assert.equal((await post({ startsAt: new Date().toISOString() })).status, 200);
    const firing = await waitFor('Alertmanager to notify Tollgate', async () => {
      const node = await monitorState('alertname:CheckoutDown');
      return node?.state === 'ALERT' ? node : null;
    });
    assert.deepEqual(firing.groups, [{ group: 'env:prod,instance:pod-1,service:checkout', state: 'ALERT' }]);

    const ev = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('alertmanager', { query: 'alertname:CheckoutDown' })] } });
    assert.equal((await d.follow(ev.data.evaluateGate.id)).at(-1).status, 'FAIL');

    assert.equal((await post({ startsAt: new Date(Date.now() - 60_000).toISOString(), endsAt: new Date().toISOString() })).status, 200);
    await waitFor('the resolution to reach Tollgate', async () => (await monitorState('alertname:CheckoutDown'))?.state === 'OK');
  });

  test('Prometheus down: the monitor counts source errors and the rule resolves by the gate policy, saying so', async () => {
    prometheus.kill('SIGTERM');
    await new Promise((r) => prometheus.once('exit', r));
    await waitFor('the monitor to see the source fail', async () => (await monitorState('source:promql-test'))?.sourceErrors > 0);
    const ev = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { onSourceError: 'PASS', rules: [jitMonitor('promql', { query: 'source:promql-test' })] } });
    const final = (await d.follow(ev.data.evaluateGate.id, 30_000)).at(-1);
    assert.equal(final.rules[0].status, 'PASS');
    assert.match(final.rules[0].reason, /data source failed 4 times in a row .*Prometheus at .* unreachable.*onSourceError policy makes the rule pass/);
  });
});
