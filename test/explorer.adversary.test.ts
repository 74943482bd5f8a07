// The explorer (issue 11) as an adversary and a demanding new user would try it: hostile
// headers, hostile names, broken URLs and a WebSocket that never answers. Each test failed
// before the fix that came with it.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { chooseEncoding } from '../src/server/ui.ts';
import { ADMIN_KEY, driver, jitMonitor, skipWithout, startServer, type TestServer } from './helpers.ts';

/** A raw GET (node:http: no decompression, any header as given). */
function rawGet(s: TestServer, path: string, headers: Record<string, string>) {
  return new Promise<{ status: number; headers: Record<string, any>; body: Buffer }>((resolve, reject) => {
    request(`${s.url}${path}`, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    })
      .on('error', reject)
      .end();
  });
}

describe('serving the explorer to hostile clients', () => {
  let s: TestServer;
  let js: string;
  before(async () => {
    s = await startServer();
    js = /src="(\/assets\/[^"]+\.js)"/.exec(await (await fetch(`${s.url}/evaluations`)).text())![1]!;
  });
  after(() => s.stop());

  test('Accept-Encoding is read per coding: q=0 refuses, * accepts, case and spaces do not matter', () => {
    assert.equal(chooseEncoding('gzip, deflate, br'), 'br');
    assert.equal(chooseEncoding('br;q=0, gzip'), 'gzip');
    assert.equal(chooseEncoding('BR ; Q=0.000 , GZip;q=0.5'), 'gzip');
    assert.equal(chooseEncoding('gzip;q=0.0'), null);
    assert.equal(chooseEncoding('identity'), null);
    assert.equal(chooseEncoding(''), null);
    assert.equal(chooseEncoding('*'), 'br');
    assert.equal(chooseEncoding('*;q=0, gzip'), 'gzip');
    assert.equal(chooseEncoding('br;q=0.001'), 'br');
    assert.equal(chooseEncoding('x-br, gzipx'), null, 'a coding is a whole token');
  });

  test('a 16 KB Accept-Encoding crafted to backtrack is read as any other header', async () => {
    // Before: one regular expression per coding backtracked quadratically over runs of spaces,
    // ~130 ms of the event loop per request, before any authentication. chooseEncoding now
    // splits at commas and semicolons (linear); no wall-clock bound here, the machine is shared.
    const hostile = 'br' + ' '.repeat(15_000) + 'x';
    assert.equal(chooseEncoding(hostile), null, "'br   …x' is one unknown coding");
    assert.equal(chooseEncoding(`${' '.repeat(15_000)}br`), 'br');
    for (let i = 0; i < 3; i++) {
      const res = await rawGet(s, js, { 'accept-encoding': hostile });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-encoding'], undefined);
    }
  });

  test('each encoding has its own ETag, and any of them revalidates; If-None-Match: * is a match', async () => {
    const br = await rawGet(s, js, { 'accept-encoding': 'br' });
    const gz = await rawGet(s, js, { 'accept-encoding': 'gzip' });
    const plain = await rawGet(s, js, {});
    const tags = new Set([br.headers.etag, gz.headers.etag, plain.headers.etag]);
    // A cache keeping the br and gzip bodies under one strong tag could hand one for the other.
    assert.equal(tags.size, 3, `one ETag per encoding: ${[...tags].join(' ')}`);
    for (const tag of tags) {
      for (const encoding of ['br', 'gzip', 'identity']) {
        const again = await rawGet(s, js, { 'accept-encoding': encoding, 'if-none-match': tag });
        assert.equal(again.status, 304, `${tag} with ${encoding}`);
        assert.equal(again.body.length, 0);
      }
    }
    assert.equal((await rawGet(s, js, { 'if-none-match': '*' })).status, 304);
    assert.equal((await rawGet(s, js, { 'if-none-match': '"nope"' })).status, 200);
  });
});

describe('the API as the explorer reads it', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ responseCacheTtlMs: 10_000 });
  });
  after(() => s.stop());

  test('an empty list of evaluations is not served from the response cache once one exists', async () => {
    // The cache skips results holding an Evaluation, but an empty list holds none: it was cached
    // 10 s, so the explorer's catch-up read, its refetch after a network drop and a gate's
    // lastEvaluations all missed an evaluation that had just started.
    const gate = await s.gql(
      'mutation { createGate(input: { service: "cache-empty", env: "prod", rules: [{ name: "quiet", options: { monitor: { query: "service:none", duration: 0 } } }] }) { id } }',
    );
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const list = 'query($f: EvaluationFilter) { evaluations(filter: $f, first: 5) { totalCount edges { node { id } } } }';
    const last = 'query($id: ID!) { gate(id: $id) { lastEvaluations { id } } }';
    const read = async () => {
      const a = await s.gql(list, { f: { service: ['cache-empty'] } });
      const b = await s.gql(last, { id: gate.data.createGate.id });
      return [a.data.evaluations.totalCount, a.data.evaluations.edges.length, b.data.gate.lastEvaluations.length];
    };
    assert.deepEqual(await read(), [0, 0, 0]);
    const r = await s.gql('mutation { evaluateGate(input: { service: "cache-empty", env: "prod" }) { id } }');
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.deepEqual(await read(), [1, 1, 1]);
  });
});

// ---- in a real browser ----

const CHROMIUM = process.env.TOLLGATE_CHROMIUM ?? '/usr/bin/chromium';
const noBrowser = skipWithout(CHROMIUM === '/usr/bin/chromium' ? 'chromium' : CHROMIUM);

describe('the explorer in Chromium, attacked', { skip: noBrowser }, () => {
  let browser: Browser;
  let s: TestServer;
  let d: ReturnType<typeof driver>;

  before(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    s = await startServer();
    d = driver(s);
  });
  after(async () => {
    await browser?.close();
    await s?.stop();
  });

  /** A fresh tab signed in with the admin key at `/evaluations`; `prepare` runs before the first page. */
  async function signedIn(prepare?: (page: Page) => Promise<void>): Promise<{ page: Page; errors: string[] }> {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    await prepare?.(page);
    await page.goto(`${s.url}/evaluations`);
    await page.getByLabel('API key').fill(ADMIN_KEY);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    return { page, errors };
  }

  test('a malformed %-escape in a page URL shows a page, not a blank crash', async () => {
    const { page, errors } = await signedIn();
    for (const path of ['/evaluations/%ZZ', '/gates/%E0%A4%A', '/monitors/%']) {
      await page.goto(`${s.url}${path}`);
      // Before: decodeURIComponent threw while rendering and the tab stayed on "Loading…".
      await page.getByRole('heading', { name: /not found/i }).waitFor();
      await page.getByRole('button', { name: 'Sign out' }).waitFor();
    }
    assert.deepEqual(errors, []);
    await page.context().close();
  });

  test('a service, env or rule named like an Object method is listed under its own name', async () => {
    // Names are letters and digits: "constructor" and "toString" are valid ones.
    for (const name of ['constructor', 'toString']) {
      const r = await d.evaluate({ service: name, env: name, configuration: { rules: [jitMonitor(name, { query: 'service:none', duration: 0 })] } });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    }
    const { page } = await signedIn();
    for (const facet of ['service', 'env', 'ruleName']) {
      for (const name of ['constructor', 'toString']) {
        // Before: the label was VALUE_LABELS[name], i.e. Object.prototype's function: an empty label.
        await page.getByTestId(`facet-${facet}`).getByLabel(name, { exact: true }).waitFor();
      }
    }
    await page.context().close();
  });

  test("on a slow network, the live list's catch-up read of the previous filter stays out of the new one", async () => {
    for (const service of ['race-a', 'race-b']) {
      const r = await d.evaluate({ service, env: 'prod', configuration: { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] } });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    }
    // The list's second read is its catch-up, 1.5 s after subscribing: held until the filter changed.
    let reads = 0;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let caughtUp!: Promise<unknown>;
    const { page } = await signedIn(async (p) => {
      await p.route('**/graphql', async (route) => {
        if ((route.request().postData() ?? '').includes('query Evaluations(') && ++reads === 2) {
          caughtUp = p.waitForEvent('requestfinished', (r) => r === route.request());
          await held;
        }
        await route.continue();
      });
    });
    await page.getByTestId('evaluation-row').first().waitFor();
    while (reads < 2) await page.waitForTimeout(100);
    await page.getByTestId('facet-service').getByLabel('race-a', { exact: true }).check();
    await page.waitForURL(/service=race-a/);
    await page
      .getByTestId('evaluations-summary')
      .filter({ hasText: /^1 evaluation$/ })
      .waitFor();
    release();
    await caughtUp;
    await page.waitForTimeout(500); // the stale answer's render, before the fix
    // Before: every evaluation of the unfiltered list was merged into the filtered one.
    assert.deepEqual(await page.getByTestId('cell-service').allTextContents(), ['race-a']);
    await page.context().close();
  });

  test('a 200-character version or rule name wraps instead of widening the page', async () => {
    // 200 is the API's limit; a digest or a generated name has no space to break at.
    const long = 'v'.repeat(200);
    const rule = 'N'.repeat(200);
    const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: { service: 'wide', env: 'prod', rules: [{ name: rule, options: { monitor: { query: 'service:none', duration: 0 } } }] },
    });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const r = await d.evaluate({ service: 'wide', env: 'prod', version: long });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const { page } = await signedIn();
    await page.setViewportSize({ width: 1280, height: 900 });
    const shown = {
      '/evaluations?service=wide': long,
      '/gates': rule,
      [`/evaluations/${r.data.evaluateGate.id}`]: long,
      [`/gates/${gate.data.createGate.id}`]: rule,
      '/insights': rule,
    };
    for (const [path, text] of Object.entries(shown)) {
      await page.goto(`${s.url}${path}`);
      await page.getByText(text).first().waitFor();
      // Before: the page scrolled sideways to 2,000-5,000 px.
      const [scrollWidth, innerWidth] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      assert.ok(scrollWidth <= innerWidth, `${path}: ${scrollWidth} px wide in a ${innerWidth} px window`);
    }
    // Short words beside it are not cut to make room (they were: "payme nts", "stagi ng").
    const beside = await d.evaluate({ service: 'payments', env: 'staging', version: long, configuration: { rules: [jitMonitor(rule, { query: 'service:none', duration: 0 })] } });
    assert.equal(beside.errors, undefined, JSON.stringify(beside.errors));
    await page.goto(`${s.url}/evaluations?service=payments`);
    await page.getByText(long).first().waitFor();
    const lines = (testId: string) =>
      page
        .getByTestId(testId)
        .first()
        .evaluate((cell) => {
          const range = document.createRange();
          range.selectNodeContents(cell);
          return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
        });
    assert.equal(await lines('cell-service'), 1, 'payments on one line');
    await page.context().close();
  });

  test('two facet values that differ only in punctuation each toggle themselves', async () => {
    // Rule names are free text: "error rate" and "error_rate" are two rules.
    const r = await d.evaluate({
      service: 'punct',
      env: 'prod',
      configuration: { rules: [jitMonitor('error rate', { query: 'service:none', duration: 0 }), jitMonitor('error_rate', { query: 'service:none', duration: 0 })] },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const { page } = await signedIn();
    await page.goto(`${s.url}/evaluations?service=punct`);
    const facet = page.getByTestId('facet-ruleName');
    await facet.getByText('error_rate', { exact: true }).waitFor();
    // Before: both checkboxes had the id facet-ruleName-error_rate, so this label ticked "error rate".
    await facet.getByText('error_rate', { exact: true }).click();
    await page.waitForURL(/ruleName=/);
    assert.deepEqual(new URL(page.url()).searchParams.getAll('ruleName'), ['error_rate']);
    const ids = await page.evaluate(() => [...document.querySelectorAll('[id]')].map((e) => e.id));
    assert.equal(new Set(ids).size, ids.length, 'no id twice on the page');
    await page.context().close();
  });

  test("GraphiQL opened from the explorer's navigation is signed in with the same key", async () => {
    const { page } = await signedIn();
    const [graphiql] = await Promise.all([page.waitForEvent('popup'), page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'GraphiQL' }).click()]);
    await graphiql.waitForLoadState();
    // Before: target=_blank with rel=noopener opens a tab without a copy of sessionStorage: a second sign-in.
    assert.equal(await graphiql.evaluate(() => sessionStorage.getItem('tollgate.apiKey')), ADMIN_KEY);
    await page.context().close();
  });

  test('a list whose URL the API refuses says why, and not "Loading…" forever', async () => {
    const { page } = await signedIn();
    for (const path of ['/gates?after=garbage', '/monitors?after=garbage']) {
      await page.goto(`${s.url}${path}`);
      await page.getByRole('alert').first().waitFor();
      // Before: the error sat beside a "Loading…" that never ended.
      assert.equal(await page.getByText('Loading…').count(), 0, path);
    }
    await page.context().close();
  });

  test('deleting a rule takes a second click, as deleting its gate does', async () => {
    const created = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id rules { id name } } }', {
      i: { service: 'two-step', env: 'prod', rules: ['keep-me', 'drop-me'].map((name) => ({ name, options: { monitor: { query: 'service:none', duration: 0 } } })) },
    });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const gateId = created.data.createGate.id;
    const ruleNames = async () => (await s.gql('query($id: ID!) { gate(id: $id) { rules { name } } }', { id: gateId })).data.gate.rules.map((r: { name: string }) => r.name).sort();
    const { page } = await signedIn();
    await page.goto(`${s.url}/gates/${gateId}`);
    await page.getByRole('button', { name: 'Delete rule drop-me', exact: true }).click();
    // Before: that one click deleted the rule, with no way back.
    await page.getByRole('button', { name: 'Keep rule drop-me' }).waitFor();
    assert.deepEqual(await ruleNames(), ['drop-me', 'keep-me']);
    await page.getByRole('button', { name: 'Keep rule drop-me' }).click();
    await page.getByRole('button', { name: 'Delete rule drop-me', exact: true }).click();
    await page.getByRole('button', { name: 'Delete rule drop-me for good' }).click();
    await page.locator('[data-testid="gate-rule"][data-rule-name="drop-me"]').waitFor({ state: 'detached' });
    assert.deepEqual(await ruleNames(), ['keep-me']);
    await page.context().close();
  });

  test('a live list left open keeps the newest 500 rows, and says so, instead of growing without end', async () => {
    // A wall screen on a busy CI: every evaluation added a row (and re-rendered all of them) for as
    // long as the tab stayed open. 510 arrive here while the page watches.
    const { page } = await signedIn();
    await page.goto(`${s.url}/evaluations?service=flood`);
    await page.getByTestId('live-indicator').and(page.locator('[data-state="live"]')).waitFor();
    await page.waitForTimeout(2000); // past the list's catch-up read: these arrive as live events
    const jit = { rules: [jitMonitor('quiet', { query: 'service:none', duration: 0 })] };
    let last = '';
    for (let i = 0; i < 510; i++) {
      const r = await d.evaluate({ service: 'flood', env: 'prod', version: String(i), configuration: jit });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      last = r.data.evaluateGate.id;
    }
    await page.locator(`[data-testid="evaluation-row"][data-id="${last}"]`).waitFor();
    await page.getByText('Only the newest 500 evaluations are kept').waitFor();
    assert.equal(await page.getByTestId('evaluation-row').count(), 500);
    // The rows dropped are the oldest; the list reads again from the top on request.
    await page.getByRole('button', { name: 'Read the list again' }).click();
    await page.getByText('Only the newest 500 evaluations are kept').waitFor({ state: 'detached' });
    await page.getByTestId('evaluations-summary').filter({ hasText: 'newest 50 shown' }).waitFor();
    assert.equal(await page.getByTestId('evaluation-row').count(), 50);
    await page.getByRole('button', { name: 'Load older evaluations' }).waitFor();
    await page.context().close();
  });

  test('a WebSocket that opens but is never acknowledged: the page says live updates are down', async () => {
    // A proxy that accepts the upgrade and then holds every frame, as some corporate ones do.
    const { page } = await signedIn((p) => p.routeWebSocket(/\/graphql$/, () => {}));
    // Before: no timeout on the acknowledgement, so "updating live" stayed on forever with no event.
    await page.getByTestId('connection-banner').and(page.locator('[data-state="offline"]')).waitFor({ timeout: 30_000 });
    await page.context().close();
  });
});
