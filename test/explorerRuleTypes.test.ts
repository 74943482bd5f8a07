// The explorer with webhook and freeze rules, in a real browser against a real server and a
// real local webhook: their options on the gate page, their evidence on the evaluation page,
// and ad-hoc freezes set and lifted from the Freezes page.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { CHROMIUM, type Chromium, launchChromium, signedInPage } from './browser.ts';
import { ADMIN_KEY, driver, skipWithout, startServer, type TestServer } from './helpers.ts';

const noBrowser = skipWithout(CHROMIUM);

describe('the explorer with webhook and freeze rules', { skip: noBrowser }, () => {
  let chromium: Chromium;
  let s: TestServer;
  let hook: Server;
  let hookUrl: string;
  const secret = `hook-secret-${randomBytes(6).toString('hex')}`;

  before(async () => {
    hook = createServer((req, res) => {
      req.resume();
      req.on('end', () => (req.url === '/fail' ? res.writeHead(500).end('smoke test: 3 of 40 checks failed') : res.writeHead(200).end('ok')));
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}`;
    s = await startServer({ webhookAllowedHosts: [{ host: '127.0.0.1', wildcard: false, port: null }], secretKey: randomBytes(32) });
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    await s?.stop();
    hook?.closeAllConnections();
    await new Promise((resolve) => hook?.close(resolve));
  });

  const signedIn = (path: string): Promise<Page> => signedInPage(chromium, `${s.url}${path}`, ADMIN_KEY);

  test('a webhook rule made in the rule form: its options on the gate page, never its header value', async () => {
    const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: {
        service: 'ui-hook',
        env: 'prod',
        rules: [{ name: 'weekend', options: { freeze: { calendars: [{ name: 'weekend', cron: '0 18 * * FRI', duration: 223200, timeZone: 'Europe/Paris' }] } } }],
      },
    });
    const page = await signedIn(`/gates/${gate.data.createGate.id}`);
    await page.getByText(/weekend \(Europe\/Paris\); ad-hoc freezes; checked once/).waitFor();
    await page.getByRole('button', { name: 'Add a rule' }).click();
    await page.getByLabel('Rule name').fill('smoke test');
    await page.getByLabel('Rule type').selectOption('WEBHOOK');
    await page.getByLabel('URL').fill('http://10.1.2.3/outside');
    await page.getByLabel(/^Headers/).fill(`Authorization: Bearer ${secret}`);
    await page.getByRole('button', { name: 'Add rule', exact: true }).click();
    const error = page.getByTestId('field-error-input.options.webhook.url');
    await error.waitFor();
    assert.match((await error.textContent())!, /not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);
    await page.getByLabel('URL').fill(`${hookUrl}/ok`);
    await page.getByRole('button', { name: 'Add rule', exact: true }).click();
    await page.getByText(`POST ${hookUrl}/ok with Authorization; once`).waitFor();
    assert.ok(!(await page.content()).includes(secret), 'the header value is not on the page');
    await page.context().close();
  });

  test('a webhook failure shows its status and the answer; a freeze lifted from the Freezes page turns the evaluation PASS live', async () => {
    const d = driver(s);
    const failed = await d.evaluate({
      service: 'ui-hook',
      env: 'prod',
      configuration: { rules: [{ name: 'smoke', options: { webhook: { url: `${hookUrl}/fail`, retries: 0 } } }] },
    });
    await d.follow(failed.data.evaluateGate.id);
    const page = await signedIn(`/evaluations/${failed.data.evaluateGate.id}`);
    const call = page.getByTestId('webhook-call');
    await call.waitFor();
    assert.match((await call.textContent())!, /HTTP 500.*smoke test: 3 of 40 checks failed/s);

    const freeze = await s.gql('mutation($i: CreateFreezeInput!) { createFreeze(input: $i) { id } }', { i: { env: 'ui-prod', reason: 'release train 7' } });
    assert.equal(freeze.errors, undefined, JSON.stringify(freeze.errors));
    const waiting = await d.evaluate({ service: 'ui-hook', env: 'ui-prod', configuration: { rules: [{ name: 'freeze', options: { freeze: { duration: 600 } } }] } });
    await page.goto(`${s.url}/evaluations/${waiting.data.evaluateGate.id}`);
    await page
      .getByTestId('rule-reason')
      .filter({ hasText: /^Frozen: freeze "release train 7"/ })
      .waitFor();
    await page.getByText('Evidence', { exact: true }).click();
    const row = page.getByTestId('freeze-row');
    await row.waitFor();
    assert.match((await row.textContent())!, /Ad-hoc freeze: release train 7 set by bootstrap.*in force/s);

    const freezes = await chromium.page();
    await freezes.page.goto(`${s.url}/freezes`);
    await freezes.page.getByLabel('API key').fill(ADMIN_KEY);
    await freezes.page.getByRole('button', { name: 'Sign in' }).click();
    await freezes.page.getByRole('button', { name: 'Lift the freeze of ui-prod: release train 7' }).click();
    await freezes.page.getByText('No freeze in force').or(freezes.page.locator('[data-testid="freeze-row"][data-active="true"]')).first().waitFor();
    await page.getByTestId('verdict').locator('[data-testid="evaluation-status"][data-status="PASS"]').waitFor();
    assert.match((await page.getByTestId('rule-reason').textContent())!, /it waited for freeze "release train 7"/);
    await freezes.context.close();
    await page.context().close();
  });

  test('a freeze set from the Freezes page: errors at their field, then listed in force', async () => {
    const page = await signedIn('/freezes');
    await page.getByLabel('Env').fill('ui-staging');
    await page.getByRole('button', { name: 'Freeze deploys' }).click();
    const error = page.getByTestId('field-error-input.reason');
    await error.waitFor();
    await page.getByLabel('Reason').fill('db failover drill');
    await page.getByRole('button', { name: 'Freeze deploys' }).click();
    await page.locator('[data-testid="freeze-row"][data-active="true"]').filter({ hasText: 'db failover drill' }).waitFor();
    await page.context().close();
  });
});
