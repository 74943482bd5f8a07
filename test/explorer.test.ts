// The explorer (issue 11): served by Tollgate itself, then driven in a real browser (Debian's
// chromium through playwright-core) against a real server, as a user would.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { buildUi, UI_CSP } from '../src/server/ui.ts';
import { ADMIN_KEY, CREATE_GATE, driver, type HttpResult, jitMonitor, monitorRule, skipWithout, startServer, type TestServer } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

/** A GET with these headers, the body decompressed as the browser would. */
async function get(s: TestServer, path: string, headers: Record<string, string> = {}): Promise<HttpResult & { raw: Buffer }> {
  const res = await fetch(`${s.url}${path}`, { headers, redirect: 'manual' });
  // fetch decompresses by itself; the raw size is what the network carried.
  const text = await res.text();
  return { status: res.status, text, json: undefined, headers: Object.fromEntries(res.headers) as any, raw: Buffer.from(text) };
}

describe('serving the explorer', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('every page route answers the same HTML shell with the CSP, no-cache and an ETag', async () => {
    const pages = [
      '/',
      '/evaluations',
      '/evaluations/0b9c2f4e-5b6a-4c1e-9d2a-2f1e0c3b4a5d',
      '/gates',
      '/gates/abc',
      '/monitors',
      '/monitors/abc',
      '/insights',
      '/freezes',
      '/notifications',
    ];
    const bodies = new Set<string>();
    for (const path of pages) {
      const res = await get(s, path, { accept: 'text/html' });
      assert.equal(res.status, 200, path);
      assert.match(String(res.headers['content-type']), /^text\/html/, path);
      assert.equal(res.headers['content-security-policy'], UI_CSP, path);
      assert.equal(res.headers['cache-control'], 'no-cache', path);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['referrer-policy'], 'no-referrer');
      assert.ok(res.headers.etag, path);
      bodies.add(res.text);
    }
    assert.equal(bodies.size, 1, 'one shell for every page (routing is client-side)');
    const [html] = [...bodies];
    assert.doesNotMatch(html!, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    assert.doesNotMatch(html!, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or handler');
    assert.doesNotMatch(html!, /https?:\/\//, 'no asset from another origin (air-gapped networks)');
    assert.match(html!, /<script type="module" src="\/assets\/main-[A-Z0-9]+\.js">/);
    assert.match(html!, /<link rel="stylesheet" href="\/assets\/main-[A-Z0-9]+\.css">/);
  });

  test('assets: hashed names, immutable caching, ETag revalidation, brotli and gzip by Accept-Encoding', async () => {
    const html = (await get(s, '/evaluations')).text;
    const js = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!;
    const css = /href="(\/assets\/[^"]+\.css)"/.exec(html)![1]!;
    for (const path of [js, css]) {
      const raw = (encoding: string) =>
        new Promise<{ status: number; headers: Record<string, any>; body: Buffer }>((resolve, reject) => {
          // node:http, so the body arrives as sent (fetch would decompress it).
          import('node:http').then(({ get: httpGet }) =>
            httpGet(`${s.url}${path}`, { headers: { 'accept-encoding': encoding } }, (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c) => chunks.push(c));
              res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
            }).on('error', reject),
          );
        });
      const br = await raw('gzip, deflate, br');
      const gz = await raw('gzip');
      const plain = await raw('identity');
      assert.equal(br.status, 200);
      assert.equal(br.headers['content-encoding'], 'br');
      assert.equal(gz.headers['content-encoding'], 'gzip');
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.deepEqual(brotliDecompressSync(br.body), plain.body);
      assert.deepEqual(gunzipSync(gz.body), plain.body);
      assert.equal(br.headers['cache-control'], 'public, max-age=31536000, immutable');
      assert.equal(br.headers.vary, 'Accept-Encoding');
      const again = await fetch(`${s.url}${path}`, { headers: { 'if-none-match': br.headers.etag } });
      assert.equal(again.status, 304, 'a known ETag is answered 304');
    }
    const shell = await fetch(`${s.url}/evaluations`);
    const revalidated = await fetch(`${s.url}/gates`, { headers: { 'if-none-match': shell.headers.get('etag')! } });
    assert.equal(revalidated.status, 304, 'the shell revalidates by ETag');
    assert.equal((await fetch(`${s.url}/assets/main-NOSUCHHASH.js`)).status, 404);
  });

  test("GraphQL, REST and unknown paths are not the explorer's", async () => {
    const gql = await s.gql('{ __typename }');
    assert.equal(gql.data.__typename, 'Query');
    const json = await get(s, '/evaluations', { accept: 'application/json' });
    assert.notEqual(json.headers['content-type']?.toString().startsWith('text/html'), true, 'a JSON client is not sent the page');
    assert.equal((await get(s, '/nowhere', { accept: 'text/html' })).status, 404);
    const post = await fetch(`${s.url}/evaluations`, { method: 'POST', headers: { accept: 'text/html' } });
    assert.notEqual(post.headers.get('content-type')?.startsWith('text/html'), true, 'only GET and HEAD are pages');
  });

  test('first load (HTML shell, script and style) is at most 150 KB compressed', async () => {
    const build = await buildUi();
    const { gzip, brotli } = build.firstLoad('main');
    console.log(`explorer first load: ${(brotli / 1024).toFixed(1)} KB brotli, ${(gzip / 1024).toFixed(1)} KB gzip`);
    assert.ok(gzip <= 150 * 1024, `${gzip} bytes gzip`);
    assert.ok(brotli <= gzip);
  });
});

// ---- in a real browser ----

const CHROMIUM = process.env.TOLLGATE_CHROMIUM ?? '/usr/bin/chromium';
const noBrowser = skipWithout(CHROMIUM === '/usr/bin/chromium' ? 'chromium' : CHROMIUM);

describe('the explorer in Chromium', { skip: noBrowser }, () => {
  let browser: Browser;
  let dir: string;
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  let port: number;

  before(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    // A directory of our own, so the server can be stopped and started again on the same file.
    dir = mkdtempSync(join(tmpdir(), 'tollgate-explorer-'));
    s = await startServer({}, { dir });
    port = Number(new URL(s.url).port);
    d = driver(s);
  });
  after(async () => {
    await browser?.close();
    await s?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A fresh tab (its own sessionStorage), signed in with this key at this path. */
  async function signedIn(path: string, key = ADMIN_KEY): Promise<Page> {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('pageerror', (err) => console.error('page error:', err));
    await page.goto(`${s.url}${path}`);
    await page.getByLabel('API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    return page;
  }

  const evaluate = async (input: Record<string, unknown>) => {
    const r = await d.evaluate(input);
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data.evaluateGate as { id: string; evaluationUrl: string; status: string };
  };

  test('a bad key is told so, and never signed in; a good one is, and signs out', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${s.url}/evaluations`);
    await page.getByLabel('API key').fill('tgk_not-a-real-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signin-error').filter({ hasText: 'invalid API key' }).waitFor();
    assert.equal(await page.evaluate('sessionStorage.getItem("tollgate.apiKey")'), null, 'a refused key is not kept');

    await page.getByLabel('API key').fill(ADMIN_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Evaluations' }).waitFor();
    assert.equal(await page.evaluate('sessionStorage.getItem("tollgate.apiKey")'), ADMIN_KEY, 'kept for the tab');
    assert.deepEqual(await context.cookies(), [], 'no cookies');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').waitFor();
    assert.equal(await page.evaluate('sessionStorage.getItem("tollgate.apiKey")'), null);
    await context.close();
  });

  test('a revoked key is signed out with the reason', async () => {
    const created = await s.gql('mutation { createApiKey(input: { name: "soon-revoked", scopes: [GATES_READ] }) { key { id } secret } }');
    const page = await signedIn('/evaluations', created.data.createApiKey.secret);
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: created.data.createApiKey.key.id });
    await page.getByTestId('signin-error').filter({ hasText: 'revoked' }).waitFor();
    await page.context().close();
  });

  test('an evaluationUrl of an in-progress evaluation turns FAIL without reload, with the failing rule and its reason', async () => {
    const monitor = await d.monitor('checkout errors', ['service:checkout', 'team:web']);
    await d.report(monitor, 'OK');
    const e = await evaluate({
      service: 'checkout',
      env: 'prod',
      version: 'v2',
      configuration: { rules: [jitMonitor('checkout monitors', { query: 'team:web', duration: 600 })] },
    });
    assert.equal(e.status, 'IN_PROGRESS');
    const page = await signedIn(new URL(e.evaluationUrl).pathname);
    await page.getByTestId('verdict').getByTestId('evaluation-status').and(page.locator('[data-status="IN_PROGRESS"]')).waitFor();
    await page.getByTestId('rule-row').filter({ hasText: 'checkout monitors' }).waitFor();
    await page.evaluate('window.__sameDocument = true');

    await d.report(monitor, 'ALERT');
    await page.getByTestId('verdict').locator('[data-testid="evaluation-status"][data-status="FAIL"]').waitFor();
    const rule = page.getByTestId('rule-row').filter({ hasText: 'checkout monitors' });
    await rule.locator('[data-testid="rule-status"][data-status="FAIL"]').waitFor();
    const reason = await rule.getByTestId('rule-reason').textContent();
    assert.match(reason!, /checkout errors/, 'the reason names the monitor that failed');
    assert.equal(await page.evaluate('window.__sameDocument'), true, 'no reload');
    assert.match((await page.getByTestId('verdict').textContent())!, /FAIL/, 'the verdict is said in words, not only colour');
    await page.context().close();
  });

  test('Cancel and Rerun: a key allowed to cancels an evaluation in progress (another viewer sees CANCELED live), then reruns it onto the new page', async () => {
    const monitor = await d.monitor('cart errors', ['service:cart']);
    await d.report(monitor, 'OK');
    const e = await evaluate({ service: 'cart', env: 'prod', version: 'v9', configuration: { rules: [jitMonitor('cart monitors', { query: 'service:cart', duration: 600 })] } });
    assert.equal(e.status, 'IN_PROGRESS');
    const path = new URL(e.evaluationUrl).pathname;
    const status = (page: Page, value: string) => page.getByTestId('verdict').locator(`[data-testid="evaluation-status"][data-status="${value}"]`);

    // A read-only key is offered neither; it watches the same page.
    const viewer = await signedIn(path, await s.createKey(['gates:read']));
    await status(viewer, 'IN_PROGRESS').waitFor();
    assert.equal(await viewer.getByRole('button', { name: /^(Cancel|Rerun)$/ }).count(), 0, 'no Cancel or Rerun for a key that may only read');
    await viewer.evaluate('window.__sameDocument = true');

    const writer = await signedIn(path, await s.createKey(['evaluations:write']));
    await status(writer, 'IN_PROGRESS').waitFor();
    await writer.getByRole('button', { name: 'Cancel', exact: true }).click();
    await status(writer, 'CANCELED').waitFor();
    await writer.getByRole('button', { name: 'Cancel', exact: true }).waitFor({ state: 'detached' });
    await status(viewer, 'CANCELED').waitFor();
    assert.equal(await viewer.evaluate('window.__sameDocument'), true, 'the viewer saw it without a reload');

    await writer.getByRole('button', { name: 'Rerun', exact: true }).click();
    await writer.waitForURL((url) => /^\/evaluations\/[^/]+$/.test(url.pathname) && url.pathname !== path);
    const rerunId = new URL(writer.url()).pathname.split('/').pop()!;
    await status(writer, 'IN_PROGRESS').waitFor();
    await writer.getByRole('link', { name: e.id }).waitFor(); // "Rerun of <the canceled one>"
    await writer.getByTestId('rule-row').filter({ hasText: 'cart monitors' }).waitFor();
    const rerun = await s.gql('query($id: ID!) { evaluation(id: $id) { rerunOf service version status } }', { id: rerunId });
    assert.deepEqual(rerun.data.evaluation, { rerunOf: e.id, service: 'cart', version: 'v9', status: 'IN_PROGRESS' });
    await writer.goBack();
    await status(writer, 'CANCELED').waitFor(); // Back returns to the canceled one
    await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id: rerunId });
    await viewer.context().close();
    await writer.context().close();
  });

  test("a failed canary's page: the faulty resource, the new error type with its count and sample, or a sentence saying none was new", async () => {
    /** `count` spans of `resource` in the 900 ms after `from`, the first `errors` failed with an exception of `errorType`. */
    const spans = (service: string, version: string, resource: string, count: number, errors: number, errorType: string, from: number) =>
      sendTraffic(s, { service, version, resource, count, errors, errorType, message: `${errorType}: provider said 502`, from, spreadMs: 900 });

    const canary = async (service: string, canaryType: string) => {
      const ev = await evaluate({
        service,
        env: 'prod',
        version: 'v2',
        configuration: { rules: [{ name: 'new version errors', options: { faultyDeploymentDetection: { duration: 600 } } }] },
      });
      const from = Date.parse((await d.get(ev.id)).startedAt);
      await new Promise((r) => setTimeout(r, from + 1000 - Date.now()));
      // The baseline fails now and then with UpstreamError; the canary fails POST /pay 30% of the time.
      for (const resource of ['GET /cart', 'POST /pay']) await spans(service, 'v1', resource, 2000, 20, 'UpstreamError', from);
      await spans(service, 'v2', 'GET /cart', 400, 4, 'UpstreamError', from);
      await spans(service, 'v2', 'POST /pay', 400, 120, canaryType, from);
      return ev.id;
    };
    const [withNewType, withKnownType] = await Promise.all([canary('fdd-ui-new', 'CardDeclinedPanic'), canary('fdd-ui-known', 'UpstreamError')]);

    const page = await signedIn(`/evaluations/${withNewType}`);
    await page.locator('[data-testid="verdict"] [data-testid="evaluation-status"][data-status="FAIL"]').waitFor({ timeout: 30_000 });
    const evidence = page.getByTestId('fdd-evidence');
    await evidence
      .getByRole('table', { name: 'Faulty resources' })
      .getByRole('row', { name: /POST \/pay/ })
      .waitFor();
    const newTypes = evidence.getByRole('table', { name: 'New error types' });
    const row = newTypes.getByRole('row', { name: /CardDeclinedPanic/ });
    await row.waitFor();
    assert.match(await row.innerText(), /CardDeclinedPanic\s+120\s+POST \/pay\s+CardDeclinedPanic: provider said 502/);

    await page.goto(`${s.url}/evaluations/${withKnownType}`);
    await page.locator('[data-testid="verdict"] [data-testid="evaluation-status"][data-status="FAIL"]').waitFor({ timeout: 30_000 });
    await page.getByTestId('fdd-evidence').getByRole('table', { name: 'Faulty resources' }).waitFor();
    // The canary's UpstreamError is the baseline's own: not new, and the page says so rather than nothing.
    assert.equal(await page.getByRole('table', { name: 'New error types' }).count(), 0);
    await page
      .getByTestId('fdd-new-error-types')
      .getByText(/No new error type/)
      .waitFor();
    await page.context().close();
  });

  test('the live list: a new evaluation appears, and Pause holds the list', async () => {
    const page = await signedIn('/evaluations');
    await page.getByTestId('live-indicator').and(page.locator('[data-state="live"]')).waitFor();
    const e = await evaluate({ service: 'live-tail', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:nothing-here', duration: 0 })] } });
    await page.locator(`[data-testid="evaluation-row"][data-id="${e.id}"]`).waitFor();

    await page.getByRole('button', { name: 'Pause' }).click();
    await page.getByTestId('live-indicator').and(page.locator('[data-state="paused"]')).waitFor();
    const held = await evaluate({ service: 'live-tail', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:nothing-here', duration: 0 })] } });
    await page.getByText(/new evaluations? while paused/).waitFor();
    assert.equal(await page.locator(`[data-id="${held.id}"]`).count(), 0, 'paused: not added');
    await page.getByRole('button', { name: 'Resume' }).first().click();
    await page.locator(`[data-testid="evaluation-row"][data-id="${held.id}"]`).waitFor();
    await page.context().close();
  });

  test('a facet filter changes the URL and the rows; Back restores them', async () => {
    const a = await evaluate({ service: 'facet-a', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    const b = await evaluate({ service: 'facet-b', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    const page = await signedIn('/evaluations');
    await page.locator(`[data-id="${a.id}"]`).waitFor();
    await page.locator(`[data-id="${b.id}"]`).waitFor();

    await page.getByTestId('facet-service').getByLabel('facet-a', { exact: true }).check();
    await page.waitForURL(/[?&]service=facet-a/);
    await page.locator(`[data-id="${b.id}"]`).waitFor({ state: 'detached' });
    await page.locator(`[data-id="${a.id}"]`).waitFor();
    const services = await page.getByTestId('cell-service').allTextContents();
    assert.deepEqual([...new Set(services)], ['facet-a']);

    await page.goBack();
    await page.waitForURL((url) => !url.search.includes('service='));
    await page.locator(`[data-id="${b.id}"]`).waitFor();
    await page.locator(`[data-id="${a.id}"]`).waitFor();

    // Rule facets are answered by the server (an evaluation with a rule of that name).
    const c = await evaluate({ service: 'facet-a', env: 'prod', configuration: { rules: [jitMonitor('special-rule', { query: 'service:none', duration: 0 })] } });
    await page.locator(`[data-id="${c.id}"]`).waitFor();
    await page.getByTestId('facet-ruleName').getByLabel('special-rule', { exact: true }).check();
    await page.waitForURL(/[?&]ruleName=special-rule/);
    await page.locator(`[data-id="${a.id}"]`).waitFor({ state: 'detached' });
    await page.locator(`[data-id="${c.id}"]`).waitFor();
    assert.equal(await page.getByTestId('evaluation-row').count(), 1);

    // The filtered URL, shared, opens filtered.
    const shared = await signedIn('/evaluations?service=facet-b');
    await shared.locator(`[data-id="${b.id}"]`).waitFor();
    assert.equal(await shared.locator(`[data-id="${a.id}"]`).count(), 0);
    assert.equal(await shared.getByTestId('facet-service').getByLabel('facet-b', { exact: true }).isChecked(), true);
    await shared.context().close();
    await page.context().close();
  });

  test('a dry-run gate that fails shows its real status with a "would have failed" badge', async () => {
    const monitor = await d.monitor('dry monitor', ['dry:yes']);
    await d.report(monitor, 'ALERT');
    const gate = await s.gql(CREATE_GATE, { input: { service: 'dry-svc', env: 'prod', dryRun: true, rules: [monitorRule('alerting', { query: 'dry:yes', duration: 0 })] } });
    assert.equal(gate.errors, undefined);
    const e = await evaluate({ service: 'dry-svc', env: 'prod' });
    const done = await d.follow(e.id);
    assert.equal(done.at(-1).status, 'FAIL');
    assert.equal(done.at(-1).reportedStatus, 'PASS');

    const page = await signedIn('/evaluations?service=dry-svc');
    const row = page.locator(`[data-testid="evaluation-row"][data-id="${e.id}"]`);
    await row.locator('[data-testid="evaluation-status"][data-status="FAIL"]').waitFor();
    assert.match((await row.getByTestId('dry-run-badge').textContent())!, /would have failed/);
    await row.getByRole('link').click();
    await page.getByTestId('verdict').getByTestId('dry-run-badge').filter({ hasText: 'would have failed' }).waitFor();
    await page.goto(`${s.url}/gates`);
    await page.locator(`[data-testid="gate-row"][data-id="${gate.data.createGate.id}"]`).getByTestId('gate-dry-run').waitFor();
    await page.context().close();
  });

  test('a key limited to staging never sees prod', async () => {
    const staging = await evaluate({ service: 'scoped', env: 'staging', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    const prod = await evaluate({ service: 'scoped', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    const key = await s.createKey(['gates:read', 'evaluations:write'], ['staging']);
    const page = await signedIn('/evaluations?service=scoped', key);
    await page.locator(`[data-id="${staging.id}"]`).waitFor();
    // Live too: a new prod evaluation never reaches this tab.
    const later = await evaluate({ service: 'scoped', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    const laterStaging = await evaluate({ service: 'scoped', env: 'staging', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    await page.locator(`[data-id="${laterStaging.id}"]`).waitFor();
    const envs = await page.getByTestId('cell-env').allTextContents();
    assert.deepEqual([...new Set(envs)], ['staging']);
    assert.equal(await page.locator(`[data-id="${prod.id}"], [data-id="${later.id}"]`).count(), 0);
    assert.equal(await page.getByTestId('facet-env').getByLabel('prod', { exact: true }).count(), 0, 'not even as a facet value');
    await page.goto(`${s.url}/evaluations/${prod.id}`);
    await page.getByRole('heading', { name: 'Evaluation not found' }).waitFor();
    await page.context().close();
  });

  test("creating a gate with a bad duration shows the API's error at that field", async () => {
    const page = await signedIn('/gates');
    await page.getByRole('button', { name: 'New gate' }).click();
    await page.getByLabel('Service').first().fill('form-svc');
    await page.getByLabel('Env').first().fill('prod');
    await page.getByLabel('Rule name').fill('too long');
    await page.getByLabel('Monitor query').fill('service:form-svc');
    await page.getByLabel('Window (seconds)').fill('99999');
    await page.getByRole('button', { name: 'Create gate' }).click();
    const error = page.getByTestId('field-error-input.rules[0].options.monitor.duration');
    await error.waitFor();
    assert.match((await error.textContent())!, /between 0 and 7200/);
    assert.equal(await page.getByLabel('Window (seconds)').getAttribute('aria-invalid'), 'true');
    const described = await page.getByLabel('Window (seconds)').getAttribute('aria-describedby');
    assert.ok(described?.includes((await error.getAttribute('id'))!), 'the error is tied to its field');
    // Fixed, it is created and opens.
    await page.getByLabel('Window (seconds)').fill('60');
    await page.getByRole('button', { name: 'Create gate' }).click();
    await page.getByRole('heading', { name: /form-svc/ }).waitFor();
    await page.context().close();
  });

  test('a monitor page follows its state live; the list too', async () => {
    const monitor = await d.monitor('payments latency', ['service:payments']);
    await d.report(monitor, 'OK', 'region:eu');
    const page = await signedIn(`/monitors/${monitor}`);
    await page.locator('[data-testid="group-row"][data-group="region:eu"]').waitFor();
    await d.report(monitor, 'ALERT', 'region:eu');
    await page.getByRole('heading').locator('[data-testid="monitor-state"][data-status="ALERT"]').waitFor();
    await page.getByTestId('transition').filter({ hasText: 'ALERT' }).first().waitFor();

    await page.getByRole('link', { name: 'Monitors' }).click();
    const row = page.locator(`[data-testid="monitor-row"][data-id="${monitor}"]`);
    await row.locator('[data-status="ALERT"]').waitFor();
    await d.report(monitor, 'OK', 'region:eu');
    await row.locator('[data-testid="monitor-state"][data-status="OK"]').waitFor();
    await page.context().close();
  });

  test('the monitor pages catch up with a change made between their query and their subscription', async () => {
    const monitor = await d.monitor('gap monitor', ['service:gap']);
    await d.report(monitor, 'OK');
    const context = await browser.newContext();
    const page = await context.newPage();
    // The socket's subscribe for monitor changes is held until the test lets it through: what
    // happens meanwhile reaches no subscriber, as when the server is slow to start the operation.
    let gate: { seen: () => void; release: Promise<void> } | null = null;
    await page.routeWebSocket(/\/graphql/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage(async (message) => {
        if (typeof message === 'string' && message.includes('"subscribe"') && message.includes('monitorStateChanged') && gate) {
          const g = gate;
          gate = null;
          g.seen();
          await g.release;
        }
        server.send(message);
      });
    });
    const hold = () => {
      let seen!: () => void;
      let release!: () => void;
      const wasSeen = new Promise<void>((r) => (seen = r));
      gate = { seen, release: new Promise<void>((r) => (release = r)) };
      return { wasSeen, release };
    };

    let held = hold();
    await page.goto(`${s.url}/monitors/${monitor}`);
    await page.getByLabel('API key').fill(ADMIN_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await held.wasSeen;
    await page.getByRole('heading').locator('[data-testid="monitor-state"][data-status="OK"]').waitFor();
    await d.report(monitor, 'ALERT');
    held.release();
    await page.getByRole('heading').locator('[data-testid="monitor-state"][data-status="ALERT"]').waitFor({ timeout: 8000 });
    await page.getByTestId('transition').filter({ hasText: 'ALERT' }).first().waitFor();

    held = hold();
    await page.getByRole('link', { name: 'Monitors' }).click();
    await held.wasSeen;
    const row = page.locator(`[data-testid="monitor-row"][data-id="${monitor}"]`);
    await row.locator('[data-testid="monitor-state"][data-status="ALERT"]').waitFor();
    await d.report(monitor, 'OK');
    held.release();
    await row.locator('[data-testid="monitor-state"][data-status="OK"]').waitFor({ timeout: 8000 });
    // And live after that: the next change comes from the subscription.
    await d.report(monitor, 'WARN');
    await row.locator('[data-testid="monitor-state"][data-status="WARN"]').waitFor();
    await context.close();
  });

  test('a section heading keeps its distance from the table or button above it (monitor and gate pages)', async () => {
    const monitor = await d.monitor('spacing monitor', ['service:spacing']);
    await d.report(monitor, 'OK');
    const gate = await s.gql(CREATE_GATE, { input: { service: 'spacing', env: 'prod', rules: [monitorRule('spacing rule', { query: 'service:spacing', duration: 0 })] } });
    assert.equal(gate.errors, undefined);
    const gap = async (page: Page, above: string, heading: string) => {
      const a = await page.locator(above).boundingBox();
      const h = await page.getByRole('heading', { name: heading, exact: true }).boundingBox();
      return h!.y - (a!.y + a!.height);
    };
    const page = await signedIn(`/monitors/${monitor}`);
    await page.getByTestId('transition').first().waitFor();
    assert.ok((await gap(page, '.table-wrap:has([data-testid="groups-table"])', 'Transitions')) >= 16, 'Transitions heading apart from the Groups table');
    await page.goto(`${s.url}/gates/${gate.data.createGate.id}`);
    await page.getByRole('button', { name: 'Add a rule' }).waitFor();
    assert.ok((await gap(page, 'button:has-text("Add a rule")', 'Last evaluations')) >= 16, '"Add a rule" apart from the Last evaluations heading');
    await page.context().close();
  });

  test('insights: totals, the per-day chart and the most failing gates', async () => {
    const monitor = await d.monitor('insights monitor', ['insights:yes']);
    await d.report(monitor, 'ALERT');
    const gate = await s.gql(CREATE_GATE, { input: { service: 'insights-svc', env: 'prod', rules: [monitorRule('alerting', { query: 'insights:yes', duration: 0 })] } });
    assert.equal(gate.errors, undefined);
    await d.follow((await evaluate({ service: 'insights-svc', env: 'prod' })).id);
    const page = await signedIn('/insights');
    await page.getByTestId('insights-totals').waitFor();
    await page.getByTestId('chart-by-day').locator('svg[role="img"]').waitFor();
    await page
      .getByTestId('failing-gates')
      .getByRole('link', { name: /insights-svc/ })
      .waitFor();
    await page
      .getByTestId('failure-reasons')
      .getByText(/insights monitor/)
      .waitFor();
    await page.context().close();
  });

  test('insights: most failing bars are scaled by failure rate, and failure reasons read without their times', async () => {
    const alerting = await d.monitor('rate monitor a', ['rate:a']);
    await d.report(alerting, 'ALERT');
    const flapping = await d.monitor('rate monitor b', ['rate:b']);
    await d.report(flapping, 'OK');
    for (const [service, query] of [
      ['rate-always', 'rate:a'],
      ['rate-third', 'rate:b'],
    ]) {
      const gate = await s.gql(CREATE_GATE, { input: { service, env: 'prod', rules: [monitorRule('rate rule', { query, duration: 0 })] } });
      assert.equal(gate.errors, undefined);
    }
    // Three failures each, so both stay among the top ten whatever the other tests left: 3 of 3, and 3 of 9.
    const run = async (service: string, times: number) => {
      for (let i = 0; i < times; i++) await d.follow((await evaluate({ service, env: 'prod' })).id);
    };
    await Promise.all([run('rate-always', 3), run('rate-third', 6)]);
    await d.report(flapping, 'ALERT');
    await run('rate-third', 3);

    const page = await signedIn('/insights');
    const bar = (name: string) => page.getByTestId('failing-gates').locator('li', { hasText: name });
    await bar('rate-third').waitFor();
    // 3 of 3 fills its track; 3 of 9 a third of it, and says so in words too.
    assert.equal(Number(await bar('rate-always').locator('rect').getAttribute('width')), 100);
    assert.ok(Math.abs(Number(await bar('rate-third').locator('rect').getAttribute('width')) - 100 / 3) < 0.1);
    await bar('rate-third').getByText('3 of 9 (33%)').waitFor();
    const reason = page.getByTestId('failure-reasons').locator('li', { hasText: 'rate monitor a' });
    await reason.waitFor();
    assert.doesNotMatch(await reason.innerText(), /\d{4}-\d{2}-\d{2}T/, 'no ISO time in a grouped reason');
    assert.match(await reason.innerText(), /Monitor "rate monitor a" was ALERT\./);
    await page.context().close();
  });

  test('every page: no console error (a CSP violation is one), no request off the server, keyboard first stop is the skip link', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    const foreign: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (r) => !r.url().startsWith(s.url) && !r.url().startsWith(s.url.replace('http', 'ws')) && !r.url().startsWith('data:') && foreign.push(r.url()));
    await page.goto(`${s.url}/`);
    await page.getByLabel('API key').fill(ADMIN_KEY);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Evaluations' }).waitFor();
    for (const path of ['/evaluations', '/insights', '/gates', '/monitors']) {
      await page
        .getByRole('navigation', { name: 'Sections' })
        .getByRole('link', { name: path.slice(1), exact: false })
        .first()
        .click();
      await page.waitForURL(`${s.url}${path}`);
      await page.locator('h1#page-title').waitFor();
    }
    assert.equal(await page.evaluate('document.activeElement.id'), 'page-title', "after a navigation focus is on the new page's heading");
    await page.reload();
    await page.locator('h1#page-title').waitFor();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Skip to content');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Tab');
    assert.equal(
      await page.evaluate('document.activeElement.closest("header.top") === null && document.activeElement.closest("main") !== null'),
      true,
      'the skip link leads past the header into the page',
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(foreign, []);
    await context.close();
  });

  test('stopping and restarting the server mid-view: a banner, then the page shows what changed meanwhile', async () => {
    const page = await signedIn('/evaluations');
    await page.getByTestId('live-indicator').waitFor();
    await s.stop();
    await page.getByTestId('connection-banner').and(page.locator('[data-state="offline"]')).waitFor();

    // Meanwhile, another server on the same file records an evaluation no open page could hear of.
    const other = await startServer({}, { dir });
    const meanwhile = await driver(other).evaluate({ service: 'meanwhile', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    assert.equal(meanwhile.errors, undefined);
    await other.stop();

    s = await startServer({ port }, { dir });
    d = driver(s);
    await page.locator(`[data-testid="evaluation-row"][data-id="${meanwhile.data.evaluateGate.id}"]`).waitFor({ timeout: 20_000 });
    await page.getByTestId('connection-banner').and(page.locator('[data-state="offline"]')).waitFor({ state: 'detached' });
    // And live again: a new evaluation appears without reload.
    const after = await evaluate({ service: 'after-restart', env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
    await page.locator(`[data-testid="evaluation-row"][data-id="${after.id}"]`).waitFor();
    await page.context().close();
  });
});
