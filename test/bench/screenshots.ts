// `npm run screenshots`: a throwaway Tollgate with demo data, signed in from Debian's Chromium,
// and a PNG of every page of the explorer (and GraphiQL) in docs/explorer/, as docs/explorer.md shows them.
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { launchChromium } from '../browser.ts';
import { ADMIN_KEY, CREATE_GATE, driver, fddRule, jitMonitor, monitorRule, sleep, startServer, type TestServer } from '../helpers.ts';

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'explorer');

/**
 * One second of requests for a version of demo-checkout, as an OpenTelemetry SDK exports them.
 * Failures raise UpstreamError, and on POST /pay `payError` when given (the broken canary's own).
 */
async function traffic(s: TestServer, version: string, perSecond: number, payErrorRate: number, payError?: { type: string; message: string }): Promise<void> {
  const now = Date.now();
  const spans = Array.from({ length: perSecond }, (_, i) => {
    const route = ['/cart', '/pay', '/search'][i % 3]!;
    const failed = route === '/pay' ? Math.random() < payErrorRate : Math.random() < 0.005;
    const start = BigInt(now - 1000 + Math.floor((i * 1000) / perSecond)) * 1_000_000n;
    return {
      name: `${route === '/pay' ? 'POST' : 'GET'} ${route}`,
      kind: 2,
      startTimeUnixNano: String(start),
      endTimeUnixNano: String(start + 20_000_000n),
      attributes: [
        { key: 'http.request.method', value: { stringValue: route === '/pay' ? 'POST' : 'GET' } },
        { key: 'http.route', value: { stringValue: route } },
        { key: 'http.response.status_code', value: { intValue: failed ? 502 : 200 } },
      ],
      events: failed ? [exception(route === '/pay' && payError ? payError : { type: 'UpstreamError', message: 'payment provider returned 502' })] : [],
      status: { code: failed ? 2 : 0 },
    };
  });
  const resource = {
    attributes: [
      { key: 'service.name', value: { stringValue: 'checkout' } },
      { key: 'deployment.environment.name', value: { stringValue: 'prod' } },
      { key: 'service.version', value: { stringValue: version } },
    ],
  };
  await s.request('POST', '/v1/traces', { body: { resourceSpans: [{ resource, scopeSpans: [{ spans }] }] } });
}

const exception = (e: { type: string; message: string }) => ({
  name: 'exception',
  attributes: [
    { key: 'exception.type', value: { stringValue: e.type } },
    { key: 'exception.message', value: { stringValue: e.message } },
  ],
});

async function seed(s: TestServer): Promise<Record<string, string>> {
  const d = driver(s);
  const must = async (query: string, variables?: Record<string, unknown>) => {
    const r = await s.gql(query, variables);
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data;
  };
  const errors = await d.monitor('checkout 5xx rate', ['service:checkout', 'env:prod', 'team:web']);
  const latency = await d.monitor('checkout p99 latency', ['service:checkout', 'env:prod', 'team:web']);
  const search = await d.monitor('search availability', ['service:search', 'env:staging', 'team:discovery']);
  const payments = await d.monitor('payments queue depth', ['service:payments', 'env:prod', 'team:payments']);
  for (const [id, state, group] of [
    [errors, 'OK', undefined],
    [latency, 'OK', 'region:eu'],
    [latency, 'WARN', 'region:us'],
    [search, 'OK', undefined],
    [payments, 'OK', undefined],
  ] as const)
    await d.report(id, state, group);

  const checkout = (
    await must(CREATE_GATE, {
      input: {
        service: 'checkout',
        env: 'prod',
        rules: [monitorRule('checkout monitors', { query: 'service:checkout env:prod', duration: 8 }), fddRule('new version errors', { duration: 12, minRelativeIncrease: 1 })],
      },
    })
  ).createGate.id;
  await must(CREATE_GATE, { input: { service: 'search', env: 'staging', dryRun: true, rules: [monitorRule('search monitors', { query: 'service:search', duration: 5 })] } });
  await must(CREATE_GATE, { input: { service: 'payments', env: 'prod', rules: [monitorRule('payments monitors', { query: 'team:payments', duration: 5 })] } });

  // History: passes and failures across services, each decided in seconds.
  const history: string[] = [];
  for (const [service, env, version] of [
    ['payments', 'prod', 'v41'],
    ['search', 'staging', 'v12'],
    ['payments', 'prod', 'v42'],
    ['search', 'staging', 'v12.1'],
  ] as const) {
    history.push((await d.evaluate({ service, env, version })).data.evaluateGate.id);
  }
  await Promise.all(history.map((id) => d.follow(id, 30_000))); // their monitors stay OK: they pass
  const failing = await d.evaluate({ service: 'search', env: 'staging', version: 'v13' });
  await sleep(500);
  await d.report(search, 'ALERT'); // fails the dry-run search gate: "would have failed"
  const payFail = await d.evaluate({ service: 'payments', env: 'prod', version: 'v43' });
  await sleep(500);
  await d.report(payments, 'ALERT');
  await sleep(6000);
  await d.report(search, 'OK');
  await d.report(payments, 'OK');

  // A canary with a broken payment endpoint: the faulty deployment detection fails it with evidence.
  let running = true;
  // Not awaited here: the traffic runs while the canary is evaluated, and stops once it is decided.
  const loop = (async () => {
    while (running) {
      // v8's payment client times out where v7's got a 502: an error type the baseline never raised.
      await Promise.all([traffic(s, 'v7', 300, 0.01), traffic(s, 'v8', 100, 0.25, { type: 'PaymentTimeoutError', message: 'payment provider did not answer within 3000 ms' })]);
      await sleep(1000);
    }
  })();
  await sleep(2500);
  const fdd = (await d.evaluate({ service: 'checkout', env: 'prod', version: 'v8' })).data.evaluateGate.id;
  await d.follow(fdd, 60_000);
  running = false;
  await loop;

  // One still running when the pictures are taken.
  const live = (
    await d.evaluate({ service: 'payments', env: 'prod', version: 'v44', configuration: { rules: [jitMonitor('payments monitors', { query: 'team:payments', duration: 3600 })] } })
  ).data.evaluateGate.id;
  return { checkout, fdd, monitorFail: payFail.data.evaluateGate.id, dryRun: failing.data.evaluateGate.id, live, monitor: latency };
}

async function shoot(page: Page, name: string, full = true): Promise<void> {
  await page.waitForLoadState('networkidle');
  await sleep(400); // transitions and charts settle
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: full });
  console.log(`docs/explorer/${name}.png`);
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const s = await startServer();
  const chromium = await launchChromium();
  try {
    console.log(`Started a throwaway Tollgate at ${s.url}; adding demo data (about 30 s)`);
    const ids = await seed(s);
    const { page } = await chromium.page({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
    await page.goto(`${s.url}/evaluations`);
    await page.getByLabel('API key').waitFor();
    await shoot(page, 'sign-in', false);
    await page.getByLabel('API key').fill(ADMIN_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    await page.getByTestId('evaluation-row').first().waitFor();
    await shoot(page, 'evaluations', false);
    await page.goto(`${s.url}/evaluations?status=FAIL&range=1d`);
    await page.getByTestId('evaluation-row').first().waitFor();
    await shoot(page, 'evaluations-filtered', false);
    const pages: Array<[string, string]> = [
      ['evaluation-fdd', `/evaluations/${ids.fdd}`],
      ['evaluation-monitor', `/evaluations/${ids.monitorFail}`],
      ['evaluation-dry-run', `/evaluations/${ids.dryRun}`],
      ['evaluation-in-progress', `/evaluations/${ids.live}`],
      ['gates', '/gates'],
      ['gate', `/gates/${ids.checkout}`],
      ['monitors', '/monitors'],
      ['monitor', `/monitors/${ids.monitor}`],
      ['insights', '/insights'],
    ];
    for (const [name, path] of pages) {
      await page.goto(`${s.url}${path}`);
      await page.locator('h1').first().waitFor();
      await shoot(page, name);
    }
    await page.goto(`${s.url}/graphql`);
    await page.locator('.graphiql-query-editor .monaco-editor').first().waitFor();
    await page.getByRole('button', { name: /Execute query/ }).click();
    await page
      .getByRole('menuitem')
      .first()
      .click()
      .catch(() => {}); // two operations: run the first
    await page.locator('.result-window .view-lines').filter({ hasText: 'evaluations' }).waitFor();
    await shoot(page, 'graphiql', false);
  } finally {
    await chromium.close();
    await s.stop();
  }
}

await main();
