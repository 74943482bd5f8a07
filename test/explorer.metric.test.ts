// The explorer shows metric rules (issue 15): a failed evaluation's points with the ones that
// broke the bound, and the rule on its gate's page, editable in the rule form. Debian's
// chromium through playwright-core, against a real server fed real OTLP traffic.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { CHROMIUM, type Chromium, launchChromium, signedInPage } from './browser.ts';
import { ADMIN_KEY, CREATE_GATE, driver, skipWithout, startServer, type TestServer } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

describe('metric rules in the explorer', { skip: skipWithout(CHROMIUM === '/usr/bin/chromium' ? 'chromium' : CHROMIUM) }, () => {
  let chromium: Chromium;
  let s: TestServer;

  before(async () => {
    chromium = await launchChromium();
    s = await startServer();
  });
  after(async () => {
    await chromium?.close();
    await s?.stop();
  });

  const signedIn = (path: string): Promise<Page> => signedInPage(chromium, `${s.url}${path}`, ADMIN_KEY);

  test('a failed evaluation lists every point, the failing one with its value, baseline and limit; the gate page shows and edits the rule', async () => {
    // Stamped just before now; each point reads the 600 s before the evaluation's start, so
    // however long the machine takes to start it, all of this traffic is behind the point.
    const from = Date.now() - 50_000;
    await sendTraffic(s, { service: 'ui-metric', version: 'v1', resource: 'GET /cart', count: 1000, errors: 10, from, spreadMs: 40_000 });
    await sendTraffic(s, { service: 'ui-metric', version: 'v2', resource: 'GET /cart', count: 500, errors: 25, from, spreadMs: 40_000 });
    const rule = { name: 'cart errors vs baseline', options: { metric: { apm: { metric: 'ERROR_RATE', resource: 'GET /cart', window: 600 }, bound: '<= +50%' } } };
    const created = await s.gql(CREATE_GATE, { input: { service: 'ui-metric', env: 'prod', rules: [rule] } });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const gateId = created.data.createGate.id;
    const e = await driver(s).evaluate({ service: 'ui-metric', env: 'prod', version: 'v2' });
    assert.equal(e.errors, undefined, JSON.stringify(e.errors));

    const page = await signedIn(`/evaluations/${e.data.evaluateGate.id}`);
    await page.locator('[data-testid="verdict"] [data-testid="evaluation-status"][data-status="FAIL"]').waitFor({ timeout: 30_000 });
    const card = page.getByTestId('rule-row').filter({ hasText: 'cart errors vs baseline' });
    assert.match((await card.getByTestId('rule-reason').textContent())!, /broke <= \+50% of the baseline/);
    const evidence = card.getByTestId('metric-evidence');
    assert.match(
      (await evidence.textContent())!,
      /APM error_rate of GET \/cart over 600 s for version v2, against v1; bound <= \+50% of the baseline; 1 of 1 point\(s\) measured, 1 outside/,
    );
    const failing = evidence.locator('[data-testid="metric-point"][data-result="FAIL"]');
    assert.equal(await failing.count(), 1);
    assert.match(await failing.innerText(), /0\.05\s+0\.01\s+<= 0\.015\s+✗\s*FAIL\s+500 \/ 1,000/);

    await page.goto(`${s.url}/gates/${gateId}`);
    const onGate = page.getByTestId('gate-rule').filter({ hasText: 'cart errors vs baseline' });
    await onGate.getByText('Metric', { exact: true }).waitFor();
    assert.match((await onGate.getByTestId('gate-rule-options').textContent())!, /APM error_rate of GET \/cart; bound <= \+50%; measured once; failureLimit 0/);

    // The form reads the rule back, places the API's error at its field, and saves a fix.
    await onGate.getByRole('button', { name: 'Edit rule cart errors vs baseline' }).click();
    const bound = page.getByLabel('Bound', { exact: true });
    assert.equal(await bound.inputValue(), '<= +50%');
    assert.equal(await page.getByLabel('Resource (optional)').inputValue(), 'GET /cart');
    await bound.fill('<= 50%');
    await page.getByRole('button', { name: 'Save rule' }).click();
    await page
      .locator('.field-invalid')
      .filter({ hasText: 'Bound' })
      .getByText(/says its direction/)
      .waitFor();
    await bound.fill('<= +500%');
    await page.getByRole('button', { name: 'Save rule' }).click();
    await page.getByTestId('gate-rule-options').filter({ hasText: 'bound <= +500%' }).waitFor();
    const stored = await s.gql('query($id: ID!) { gate(id: $id) { rules { options { ... on MetricRuleOptions { bound apm { metric resource window } } } } } }', { id: gateId });
    assert.deepEqual(stored.data.gate.rules[0].options, { bound: '<= +500%', apm: { metric: 'ERROR_RATE', resource: 'GET /cart', window: 600 } });
    await page.context().close();
  });
});
