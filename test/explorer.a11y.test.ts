// Accessibility of every explorer page (issue 11, item 9): axe-core, run inside Debian's Chromium
// on each page with real data, reports no serious or critical violation.
//
// axe is injected as an inline script (page.addScriptTag({ content })), which the explorer's CSP
// rightly refuses: this test's browser context alone sets bypassCSP. The CSP itself is tested by
// test/explorer.test.ts and test/graphiql.test.ts, which do not bypass it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { type Chromium, launchChromium } from './browser.ts';
import { sleep } from './helpers/live.ts';
import { ADMIN_KEY, CREATE_GATE, driver, jitMonitor, monitorRule, skipWithout, startServer, type TestServer } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

const skip = skipWithout('chromium');
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: unknown[]; html: string; failureSummary?: string }>;
}

/** axe's serious and critical violations on the page as it is now. */
async function violations(page: Page): Promise<Violation[]> {
  if (!(await page.evaluate(() => 'axe' in globalThis))) await page.addScriptTag({ content: AXE_SOURCE });
  const result = (await page.evaluate(() => (globalThis as any).axe.run(document, { resultTypes: ['violations'] }))) as { violations: Violation[] };
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

function describeViolations(list: Violation[]): string {
  return list
    .map(
      (v) =>
        `${v.impact} ${v.id}: ${v.help}\n${v.nodes
          .slice(0, 5)
          .map((n) => `    at ${JSON.stringify(n.target)}: ${n.failureSummary?.split('\n').slice(1, 3).join(' ').trim() ?? ''}`)
          .join('\n')}`,
    )
    .join('\n');
}

describe('accessibility of the explorer (axe-core)', { skip }, () => {
  let s: TestServer;
  let chromium: Chromium;
  const ids: Record<string, string> = {};

  before(async () => {
    s = await startServer();
    chromium = await launchChromium();
    const d = driver(s);
    // Something on every page: monitors in each state, gates (one dry run), evaluations that
    // passed, failed and are still in progress.
    const web = await d.monitor('checkout errors', ['service:checkout', 'team:web']);
    const latency = await d.monitor('checkout latency', ['service:checkout', 'team:web']);
    await d.report(web, 'OK');
    await d.report(latency, 'ALERT', 'region:eu');
    await d.report(latency, 'OK', 'region:us');
    ids.monitor = web;
    const gate = await s.gql(CREATE_GATE, { input: { service: 'checkout', env: 'prod', rules: [monitorRule('checkout monitors', { query: 'team:web', duration: 0 })] } });
    ids.gate = gate.data.createGate.id;
    await s.gql(CREATE_GATE, { input: { service: 'search', env: 'staging', dryRun: true, rules: [monitorRule('search monitors', { query: 'service:search' })] } });
    const failed = await d.evaluate({ service: 'checkout', env: 'prod', version: 'v1' });
    assert.equal(failed.errors, undefined, JSON.stringify(failed.errors));
    ids.evaluation = failed.data.evaluateGate.id;
    const overridden = await d.evaluate({ service: 'checkout', env: 'prod', version: 'v2' });
    ids.overridden = overridden.data.evaluateGate.id;
    const o = await s.gql('mutation($id: ID!) { overrideEvaluation(id: $id, verdict: PASS, reason: "known outage") { id } }', { id: ids.overridden });
    assert.equal(o.errors, undefined, JSON.stringify(o.errors));
    await d.evaluate({ service: 'payments', env: 'prod', version: 'v7', configuration: { rules: [jitMonitor('payments', { query: 'service:payments', duration: 600 })] } });
    // A backtest of the gate over two deploys seen in the last hours (the monitor in ALERT fails them).
    for (const [version, hoursAgo] of [
      ['v1', 3],
      ['v2', 1],
    ] as const) {
      await sendTraffic(s, { service: 'checkout', env: 'prod', version, resource: 'GET /cart', count: 60, from: Date.now() - hoursAgo * 3_600_000, spreadMs: 1_800_000 });
    }
    const backtest = await s.gql('mutation($i: BacktestGateInput!) { backtestGate(input: $i) { id } }', {
      i: { gateId: ids.gate, from: new Date(Date.now() - 4 * 3_600_000).toISOString(), to: new Date().toISOString() },
    });
    assert.equal(backtest.errors, undefined, JSON.stringify(backtest.errors));
    ids.backtest = backtest.data.backtestGate.id;
    while ((await s.gql('query($id: ID!) { backtest(id: $id) { status } }', { id: ids.backtest })).data.backtest.status === 'RUNNING') await sleep(50);
  });
  after(async () => {
    await chromium?.close();
    await s?.stop();
  });

  async function open(path: string, signedIn: boolean): Promise<Page> {
    const { context, page } = await chromium.page({ bypassCSP: true });
    if (signedIn) await context.addInitScript((key) => sessionStorage.setItem('tollgate.apiKey', key), ADMIN_KEY);
    await page.goto(`${s.url}${path}`);
    await page.locator('h1').first().waitFor();
    // Data arrives after the heading: let the page's requests settle before judging it.
    await page.waitForLoadState('networkidle');
    return page;
  }

  test('the sign-in page', async () => {
    const page = await open('/evaluations', false);
    await page.getByLabel('API key').waitFor();
    const found = await violations(page);
    assert.equal(found.length, 0, describeViolations(found));
    await page.context().close();
  });

  test('an overridden evaluation, with the override form open', async () => {
    const page = await open(`/evaluations/${ids.overridden}`, true);
    await page.getByTestId('override').waitFor();
    await page.getByRole('button', { name: 'Override…' }).click();
    await page
      .getByTestId('override-form')
      .getByRole('button', { name: /Override to/ })
      .click();
    await page.getByText('reason must say why').waitFor();
    const found = await violations(page);
    assert.equal(found.length, 0, describeViolations(found));
    await page.context().close();
  });

  // GraphiQL's own markup, with Tollgate's two corrections (src/ui/graphiql/): the dimmed number
  // of the query's empty last line, and the tab semantics moved from each tab's <li> to its button.
  test('GraphiQL, with one tab, with two, and after switching tabs', async () => {
    const page = await open('/graphql', true);
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    await page.locator('.monaco-editor .line-numbers.dimmed-line-number').first().waitFor();
    let found = await violations(page);
    assert.equal(found.length, 0, `/graphql:\n${describeViolations(found)}`);
    const tabs = page.getByRole('tablist').getByRole('tab');
    await page.getByRole('button', { name: 'New tab' }).click();
    await page.waitForFunction(() => document.querySelectorAll('[role="tab"][aria-selected="true"]#graphiql-session-tab-1').length === 1);
    assert.equal(await tabs.count(), 2);
    // With two tabs or more GraphiQL adds a "Close Tab" button beside each tab, inside its
    // tablist, where ARIA wants only tabs (axe: aria-required-children). That markup is
    // GraphiQL's own and no attribute can move the button out (hiding it would take closing a
    // tab away from keyboard users): an upstream exception, for that rule on that one list only.
    const closeButtonsInTablist = (v: Violation) =>
      v.id === 'aria-required-children' &&
      v.nodes.every((n) => /^<ul[^>]*class="graphiql-tabs/.test(n.html) && /children which are not allowed: button\[aria-label\]\s*$/.test(n.failureSummary ?? ''));
    found = (await violations(page)).filter((v) => !closeButtonsInTablist(v));
    assert.equal(found.length, 0, `/graphql with two tabs:\n${describeViolations(found)}`);
    assert.equal(await page.locator('li.graphiql-tab > button.graphiql-tab-close').count(), 2, 'the close buttons are still there');
    await tabs.first().click();
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('[role="tab"]')].map((t) => `${t.id}=${t.getAttribute('aria-selected')}`).join() ===
        'graphiql-session-tab-0=true,graphiql-session-tab-1=false',
    );
    assert.equal(await page.locator('li.graphiql-tab[aria-selected], li.graphiql-tab[role="tab"]').count(), 0, 'no <li> is a tab again after the switch');
    await page.context().close();
  });

  for (const [name, path] of [
    ['the explorer home', () => '/'],
    ['evaluations', () => '/evaluations'],
    ['an evaluation', () => `/evaluations/${ids.evaluation}`],
    ['gates', () => '/gates'],
    ['a gate', () => `/gates/${ids.gate}`],
    ['monitors', () => '/monitors'],
    ['a monitor', () => `/monitors/${ids.monitor}`],
    ['insights', () => '/insights'],
    ['freezes', () => '/freezes'],
    ['backtests', () => '/backtests'],
    ['a backtest', () => `/backtests/${ids.backtest}`],
    ['notifications', () => '/notifications'],
  ] as const) {
    test(name, async () => {
      const page = await open(path(), true);
      await page.getByRole('button', { name: 'Sign out' }).waitFor();
      const found = await violations(page);
      assert.equal(found.length, 0, `${path()}:\n${describeViolations(found)}`);
      await page.context().close();
    });
  }
});
