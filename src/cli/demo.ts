// `tollgate demo`: a bad canary failing live, then a clean one passing, on a Tollgate of its
// own (or --url). Synthetic OTLP traffic for a stable version and the canaries; a gate with
// a monitor rule and a faulty-deployment-detection rule; the evaluation followed live.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testConfig } from '../config.ts';
import { generateSecret } from '../domain/apiKeys.ts';
import { buildApp } from '../server/app.ts';
import { evaluate } from './evaluate.ts';

export interface DemoFlags {
  url?: string;
  apiKey?: string;
  /** Window of the detection rule, seconds. */
  window: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function demo(flags: DemoFlags): Promise<number> {
  const window = Number(flags.window);
  let url = flags.url;
  let key = flags.apiKey ?? process.env.TOLLGATE_API_KEY;
  let stop: (() => Promise<void>) | undefined;
  let dir: string | undefined;
  if (!url) {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-demo-'));
    key = generateSecret();
    const app = await buildApp(testConfig({ port: 0, host: '127.0.0.1', dbPath: join(dir, 'demo.db'), bootstrapKey: key, logLevel: 'warn' }));
    url = (await app.listen()).url;
    stop = async () => app.stop();
    console.log(`Started a throwaway Tollgate at ${url} (data in ${dir})`);
  }
  if (!key) {
    console.error('tollgate: --api-key (or TOLLGATE_API_KEY) is required with --url');
    return 1;
  }
  const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  const gql = async (query: string, variables?: Record<string, unknown>) => {
    const body = (await (await fetch(`${url}/graphql`, { method: 'POST', headers: auth, body: JSON.stringify({ query, variables }) })).json()) as { data?: any; errors?: unknown };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };

  // Requests of one second for a version, as an OpenTelemetry SDK would export them.
  const traffic = async (version: string, perSecond: number, payErrorRate: number) => {
    const now = Date.now();
    const spans = Array.from({ length: perSecond }, (_, i) => {
      const route = ['/cart', '/pay', '/search'][i % 3]!;
      const failed = route === '/pay' ? Math.random() < payErrorRate : Math.random() < 0.01;
      const start = BigInt(now - 1000 + Math.floor((i * 1000) / perSecond)) * 1_000_000n;
      return {
        name: `GET ${route}`,
        kind: 2,
        startTimeUnixNano: String(start),
        endTimeUnixNano: String(start + 20_000_000n),
        attributes: [
          { key: 'http.request.method', value: { stringValue: route === '/pay' ? 'POST' : 'GET' } },
          { key: 'http.route', value: { stringValue: route } },
          { key: 'http.response.status_code', value: { intValue: failed ? 502 : 200 } },
        ],
        events: failed
          ? [
              {
                name: 'exception',
                attributes: [
                  { key: 'exception.type', value: { stringValue: 'UpstreamError' } },
                  { key: 'exception.message', value: { stringValue: 'payment provider returned 502' } },
                ],
              },
            ]
          : [],
        status: { code: failed ? 2 : 0 },
      };
    });
    const resource = {
      attributes: [
        { key: 'service.name', value: { stringValue: 'demo-checkout' } },
        { key: 'deployment.environment.name', value: { stringValue: 'demo' } },
        { key: 'service.version', value: { stringValue: version } },
      ],
    };
    await fetch(`${url}/v1/traces`, { method: 'POST', headers: auth, body: JSON.stringify({ resourceSpans: [{ resource, scopeSpans: [{ spans }] }] }) });
  };

  /** Stable and canary traffic, one second at a time, until `done` resolves. */
  const serveTraffic = (canary: string, canaryPayErrors: number) => {
    let running = true;
    const loop = (async () => {
      while (running) {
        await Promise.all([traffic('v1', 300, 0.01), traffic(canary, 100, canaryPayErrors)]);
        await sleep(1000);
      }
    })();
    return async () => {
      running = false;
      await loop;
    };
  };

  try {
    console.log('\n1. A monitor for checkout (OK) and a gate with a monitor rule and a faulty-deployment-detection rule');
    const monitor = (await gql('mutation { createMonitor(input: { name: "demo checkout 5xx", type: EXTERNAL, tags: ["service:demo-checkout", "env:demo"] }) { id } }'))
      .createMonitor.id;
    await gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', { id: monitor });
    await gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: {
        service: 'demo-checkout',
        env: 'demo',
        rules: [
          { name: 'checkout monitors', options: { monitor: { query: 'service:demo-checkout env:demo', duration: window } } },
          { name: 'new version errors', options: { faultyDeploymentDetection: { duration: window, minRelativeIncrease: 1 } } },
        ],
      },
    }).catch(() => console.log('   (the demo gate exists already)'));

    console.log('\n2. Version v2 goes out with a broken payment endpoint (20% errors on POST /pay); the gate is asked');
    let stopTraffic = serveTraffic('v2', 0.2);
    await sleep(2000);
    const bad = await evaluate({ service: 'demo-checkout', env: 'demo', version: 'v2', url, apiKey: key, timeout: String(window + 60), watch: true });
    await stopTraffic();

    console.log('\n3. Version v3 fixes it; the same question');
    stopTraffic = serveTraffic('v3', 0.01);
    await sleep(2000);
    const good = await evaluate({ service: 'demo-checkout', env: 'demo', version: 'v3', url, apiKey: key, timeout: String(window + 60), watch: true });
    await stopTraffic();

    console.log(`\nv2: ${bad === 1 ? 'failed, as it should' : 'did not fail'}; v3: ${good === 0 ? 'passed' : 'did not pass'}.`);
    return bad === 1 && good === 0 ? 0 : 1;
  } finally {
    await stop?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}
