// GraphiQL served from Tollgate's own assets, in Debian's Chromium (issue 11, item 1): it loads
// with every request off localhost refused, signs in with an API key, runs a query with that key
// and a subscription over graphql-ws with the key in connectionParams.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { type Chromium, collectErrors, launchChromium, offline } from './browser.ts';
import { CREATE_GATE, driver, jitMonitor, skipWithout, sleep, startServer, type TestServer } from './helpers.ts';

const skip = skipWithout('chromium');

/** Replaces the operation in GraphiQL's editor and runs it with the toolbar's button. */
async function run(page: Page, operation: string): Promise<void> {
  const editor = page.locator('.graphiql-query-editor .monaco-editor').first();
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  // Inserted as one input, as a paste is: Monaco's auto-closing brackets stay out of it.
  await page.keyboard.insertText(operation);
  // GraphiQL takes in an edit 100 ms later (and then stores it): running before would run the old text.
  await page.waitForFunction((text) => localStorage.getItem('graphiql:query') === text, operation);
  await page.getByRole('button', { name: /Execute query/ }).click();
}

/** The result pane's text (Monaco draws spaces as no-break spaces). */
async function result(page: Page): Promise<string> {
  return (await page.locator('.result-window .view-lines').innerText()).replace(/\u00a0/g, ' ');
}

async function waitForResult(page: Page, pattern: RegExp, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = await result(page).catch(() => '');
    if (pattern.test(text)) return text;
    await sleep(100);
  }
  assert.fail(`GraphiQL's result never matched ${pattern}: ${text}`);
}

async function wsOperations(s: TestServer): Promise<number> {
  const { text } = await s.request('GET', '/metrics');
  return Number(/^tollgate_ws_operations (\S+)$/m.exec(text)?.[1] ?? 0);
}

describe('GraphiQL', { skip }, () => {
  let s: TestServer;
  let chromium: Chromium;
  let stagingKey: string;

  before(async () => {
    s = await startServer();
    chromium = await launchChromium();
    // A key that sees staging only: what GraphiQL shows proves which key it sent.
    await s.gql(CREATE_GATE, { input: { service: 'checkout', env: 'staging' } });
    await s.gql(CREATE_GATE, { input: { service: 'checkout', env: 'prod' } });
    stagingKey = await s.createKey(['gates:read'], ['staging']);
  });
  after(async () => {
    await chromium?.close();
    await s?.stop();
  });

  test('loads air-gapped, signs in, and runs a query with the key', async () => {
    const { context, page } = await chromium.page();
    const attempted = await offline(context);
    const errors = collectErrors(page);
    const response = await page.goto(`${s.url}/graphql`);
    assert.equal(response?.status(), 200);
    assert.match(response!.headers()['content-security-policy'] ?? '', /script-src 'self';/);

    await page.getByLabel('API key').fill('tgk_not-a-key-of-this-server-000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page
      .getByRole('alert')
      .filter({ hasText: /refused/ })
      .waitFor();

    await page.getByLabel('API key').fill(stagingKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('.graphiql-query-editor .monaco-editor').first().waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.apiKey')), stagingKey, 'kept for the tab, where the explorer reads it');
    await page.getByTestId('signed-in-key').filter({ hasText: 'Signed in as key-gates:read' }).waitFor();

    await run(page, '{ gates(first: 10) { edges { node { service env } } } }');
    const text = await waitForResult(page, /"edges"/);
    assert.match(text, /"env": "staging"/);
    assert.doesNotMatch(text, /"prod"/, 'the staging key never sees prod');

    assert.deepEqual(attempted, [], 'no request left localhost');
    assert.deepEqual(
      errors.filter((e) => /Content.Security.Policy|Refused to/i.test(e)),
      [],
      'nothing was refused by the CSP',
    );
    await context.close();
  });

  test("takes the explorer's key and runs a subscription over WebSocket", async () => {
    const { context, page } = await chromium.page();
    const attempted = await offline(context);
    const errors = collectErrors(page);
    // The explorer's sign-in leaves the key in the tab's sessionStorage.
    await context.addInitScript((key) => sessionStorage.setItem('tollgate.apiKey', key), stagingKey);
    await page.goto(`${s.url}/graphql`);
    await page.locator('.graphiql-query-editor .monaco-editor').first().waitFor();
    assert.equal(await page.getByLabel('API key').count(), 0, 'no sign-in asked for');

    const before = await wsOperations(s);
    await run(page, 'subscription { evaluationEvents { service env version status } }');
    for (let i = 0; i < 200 && (await wsOperations(s)) <= before; i++) await sleep(25);
    assert.ok((await wsOperations(s)) > before, 'the subscription runs on the server (connection_init carried the key)');

    const d = driver(s);
    // Another env first: the staging key's stream must not carry it.
    await d.evaluate({ service: 'checkout', env: 'prod', version: 'v-prod', configuration: { rules: [jitMonitor('m', { query: 'service:checkout' })] } });
    const created = await d.evaluate({ service: 'checkout', env: 'staging', version: 'v-live-1', configuration: { rules: [jitMonitor('m', { query: 'service:checkout' })] } });
    assert.equal(created.errors, undefined);
    const text = await waitForResult(page, /v-live-1/);
    assert.match(text, /"evaluationEvents"/);
    assert.doesNotMatch(text, /v-prod/);

    assert.deepEqual(attempted, []);
    assert.deepEqual(
      errors.filter((e) => /Content.Security.Policy|Refused to/i.test(e)),
      [],
    );
    await context.close();
  });

  test('a kept key that was revoked since is told so at the sign-in', async () => {
    const created = await s.gql('mutation { createApiKey(input: { name: "soon-revoked", scopes: [GATES_READ] }) { key { id } secret } }');
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: created.data.createApiKey.key.id });
    const { context, page } = await chromium.page();
    await context.addInitScript((key) => sessionStorage.setItem('tollgate.apiKey', key), created.data.createApiKey.secret);
    await page.goto(`${s.url}/graphql`);
    await page
      .getByRole('alert')
      .filter({ hasText: /refused.*revoked/ })
      .waitFor();
    await page.getByLabel('API key').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.apiKey')), null, 'the dead key is dropped');
    await context.close();
  });

  test("assets are hashed, immutable and compressed; the page's nonce changes with every response", async () => {
    const first = await fetch(`${s.url}/graphql`, { headers: { accept: 'text/html' } });
    const second = await fetch(`${s.url}/graphql`, { headers: { accept: 'text/html' } });
    const nonce = (r: Response) => /'nonce-([^']+)'/.exec(r.headers.get('content-security-policy') ?? '')?.[1];
    assert.ok(nonce(first));
    assert.notEqual(nonce(first), nonce(second));
    assert.equal(first.headers.get('cache-control'), 'no-store');
    const html = await first.text();
    const script = /<script type="module" src="([^"]+)"/.exec(html)![1]!;
    assert.match(script, /^\/assets\/graphiql\/graphiql-[A-Z0-9]+\.js$/);
    const asset = await fetch(`${s.url}${script}`, { headers: { 'accept-encoding': 'br' } });
    assert.equal(asset.status, 200);
    assert.equal(asset.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(asset.headers.get('content-encoding'), 'br');
    const again = await fetch(`${s.url}${script}`, { headers: { 'if-none-match': asset.headers.get('etag')! } });
    assert.equal(again.status, 304);
    // A GraphQL client's GET is still GraphQL's.
    const get = await fetch(`${s.url}/graphql?query=${encodeURIComponent('{ __typename }')}`, { headers: { authorization: `Bearer ${stagingKey}`, accept: 'application/json' } });
    assert.deepEqual(await get.json(), { data: { __typename: 'Query' } });
  });
});

describe('GraphiQL in production', { skip }, () => {
  test('is off unless TOLLGATE_GRAPHIQL is set, then runs without introspection', async () => {
    const off = await startServer({ mode: 'production' });
    try {
      const page = await fetch(off.graphqlUrl, { headers: { accept: 'text/html' } });
      assert.doesNotMatch(await page.text(), /graphiql/i);
      assert.equal((await fetch(`${off.url}/assets/graphiql/graphiql.js`)).status, 404);
    } finally {
      await off.stop();
    }
    const on = await startServer({ mode: 'production', graphiql: true });
    const chromium = await launchChromium();
    try {
      const { context, page } = await chromium.page();
      await context.addInitScript((key) => sessionStorage.setItem('tollgate.apiKey', key), (await import('./helpers.ts')).ADMIN_KEY);
      await page.goto(`${on.url}/graphql`);
      await page.getByText('Introspection is off in production').waitFor();
      await run(page, '{ __typename }');
      await waitForResult(page, /"__typename": "Query"/);
    } finally {
      await chromium.close();
      await on.stop();
    }
  });
});
