// Overrides (issue 16): a key with evaluations:override replaces the verdict the deploy is told,
// with a reason; the real status and evidence stay, the change is audited and pushed, REST,
// the hooks and `tollgate evaluate` answer the override. Without the scope, or in another
// environment, nothing changes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { CHROMIUM, type Chromium, launchChromium, signedInPage } from './browser.ts';
import { driver, jitMonitor, runTollgate, skipWithout, startServer, subscribeLive, type TestServer, waitFor } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

const OVERRIDE = `mutation($id: ID!, $verdict: OverrideVerdict!, $reason: String!) {
  overrideEvaluation(id: $id, verdict: $verdict, reason: $reason) {
    id status reportedStatus decidedAt finishedAt revision
    override { verdict reason at by { id name } replaced }
    rules { name status reason finishedAt }
  }
}`;
const READ = `query($id: ID!) { evaluation(id: $id) { id status reportedStatus finishedAt revision override { verdict reason by { name } replaced } rules { name status reason } } }`;

describe('overriding an evaluation', () => {
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  /** Keys by what they may do. */
  const keys: Record<string, { secret: string; id: string }> = {};
  let okMonitor: string;
  let badMonitor: string;

  async function key(name: string, scopes: string[], envs?: string[]) {
    const r = await s.gql('mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret key { id } } }', { i: { name, scopes, envs } });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    keys[name] = { secret: r.data.createApiKey.secret, id: r.data.createApiKey.key.id };
  }

  /** An evaluation in prod (or `env`) of one monitor rule on `tag`, watching for `duration` seconds. */
  async function evaluation(service: string, tag: string, { env = 'prod', duration = 0 } = {}) {
    const r = await d.evaluate({ service, env, configuration: { rules: [jitMonitor('checkout monitors', { query: tag, duration })] } });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data.evaluateGate.id as string;
  }

  const failed = async (service: string) => {
    const id = await evaluation(service, 'ovr:bad');
    await waitFor('the evaluation to fail', async () => (await s.gql(READ, { id })).data.evaluation.status === 'FAIL');
    return id;
  };

  const override = (key: string | undefined, id: string, verdict: string, reason: string) => s.gql(OVERRIDE, { id, verdict, reason }, key);

  before(async () => {
    s = await startServer();
    d = driver(s);
    okMonitor = await d.monitor('checkout healthy', ['ovr:ok']);
    await d.report(okMonitor, 'OK');
    badMonitor = await d.monitor('checkout errors', ['ovr:bad']);
    await d.report(badMonitor, 'ALERT');
    await key('release-manager', ['EVALUATIONS_OVERRIDE', 'GATES_READ']);
    await key('ci', ['EVALUATIONS_WRITE', 'GATES_READ']);
    await key('staging-manager', ['EVALUATIONS_OVERRIDE', 'GATES_READ'], ['staging']);
  });
  after(() => s?.stop());

  test('a failed evaluation overridden to PASS: reported PASS, real FAIL and evidence kept, pushed to a subscriber, audited', async () => {
    const client = s.ws();
    try {
      const events = await subscribeLive(
        s,
        client,
        'subscription { evaluationEvents(filter: { service: ["ovr-pushed"] }) { id status reportedStatus revision override { verdict reason by { name } replaced } } }',
      );
      const id = await failed('ovr-pushed');
      const before = (await s.gql(READ, { id })).data.evaluation;
      assert.equal(before.reportedStatus, 'FAIL');

      const r = await override(keys['release-manager']!.secret, id, 'PASS', 'checkout errors are the known payment-provider outage, not this release');
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      const e = r.data.overrideEvaluation;
      assert.equal(e.reportedStatus, 'PASS');
      assert.equal(e.status, 'FAIL', 'the real status stays');
      assert.equal(e.revision, before.revision + 1);
      assert.deepEqual(
        { ...e.override, at: undefined },
        {
          verdict: 'PASS',
          reason: 'checkout errors are the known payment-provider outage, not this release',
          at: undefined,
          by: { id: keys['release-manager']!.id, name: 'release-manager' },
          replaced: 'FAIL',
        },
      );
      assert.ok(!Number.isNaN(Date.parse(e.override.at)));
      assert.equal(e.rules[0].status, 'FAIL', "the rule's verdict stays");
      assert.match(e.rules[0].reason, /checkout errors/);

      // The subscriber saw the failure, then the override, in order.
      let last: any;
      for (;;) {
        const next = await events.next();
        assert.equal(next.errors, undefined, JSON.stringify(next.errors));
        last = next.data.evaluationEvents;
        if (last.override) break;
        assert.equal(last.reportedStatus === 'PASS', false, 'no PASS before the override');
      }
      assert.deepEqual(last, {
        id,
        status: 'FAIL',
        reportedStatus: 'PASS',
        revision: e.revision,
        override: { verdict: 'PASS', reason: e.override.reason, by: { name: 'release-manager' }, replaced: 'FAIL' },
      });
      // A subscriber starting now gets the overridden evaluation as it stands.
      const follower = s.ws();
      try {
        const now = await new Promise<any>((resolve, reject) =>
          follower.subscribe<any>(
            { query: 'subscription($id: ID!) { evaluationUpdated(id: $id) { reportedStatus override { verdict } } }', variables: { id } },
            { next: (v) => resolve(v), error: reject, complete: () => {} },
          ),
        );
        assert.deepEqual(now.data.evaluationUpdated, { reportedStatus: 'PASS', override: { verdict: 'PASS' } });
      } finally {
        await follower.dispose();
      }

      // REST: gate_status is the override (what datadog-ci reads), the override is described.
      const rest = await s.request('GET', `/api/v2/deployments/gates/evaluation/${id}`, { key: keys.ci!.secret });
      assert.equal(rest.status, 200);
      const a = rest.json.data.attributes;
      assert.equal(a.gate_status, 'pass');
      assert.equal(a.rules[0].status, 'fail');
      assert.deepEqual(
        { ...a.override, at: undefined },
        { verdict: 'pass', reason: e.override.reason, at: undefined, by: { id: keys['release-manager']!.id, name: 'release-manager' }, replaced: 'fail' },
      );
      assert.equal(a.override.at, new Date(e.override.at).toISOString());

      // The audit log: who, what, before and after.
      {
        const rows = await s.sql<any>("select * from audit_log where target_type = 'evaluation' and target_id = ?", id);
        assert.equal(rows.length, 1);
        assert.equal(rows[0].action, 'evaluation.overridden');
        assert.equal(rows[0].actor_name, 'release-manager');
        assert.equal(rows[0].actor_id, keys['release-manager']!.id);
        const [was, is] = [JSON.parse(rows[0].before), JSON.parse(rows[0].after)];
        assert.deepEqual([was.status, was.reportedStatus, was.override], ['fail', 'fail', null]);
        assert.deepEqual([is.status, is.reportedStatus, is.override.verdict, is.override.replaced, is.override.reason], ['fail', 'pass', 'pass', 'fail', e.override.reason]);
      }
    } finally {
      await client.dispose();
    }
  });

  test('overriding again replaces the override; the audit log keeps both, each with what it replaced', async () => {
    const id = await failed('ovr-twice');
    const manager = keys['release-manager']!.secret;
    assert.equal((await override(manager, id, 'PASS', 'known outage')).errors, undefined);
    const again = await override(manager, id, 'FAIL', 'the outage is over and the errors remain: it is this release');
    assert.equal(again.errors, undefined, JSON.stringify(again.errors));
    assert.equal(again.data.overrideEvaluation.reportedStatus, 'FAIL');
    assert.equal(again.data.overrideEvaluation.override.replaced, 'PASS');
    {
      const rows = await s.sql<any>("select before, after from audit_log where target_type = 'evaluation' and target_id = ? order by id", id);
      assert.deepEqual(
        rows.map((r) => [JSON.parse(r.before).override?.reason ?? null, JSON.parse(r.after).override.reason, JSON.parse(r.after).override.replaced]),
        [
          [null, 'known outage', 'fail'],
          ['known outage', 'the outage is over and the errors remain: it is this release', 'pass'],
        ],
      );
    }
  });

  test('the evaluation shows every override, oldest first; one evaluation takes at most 20', async () => {
    const id = await failed('ovr-history');
    const manager = keys['release-manager']!.secret;
    assert.equal((await override(manager, id, 'PASS', 'known outage')).errors, undefined);
    assert.equal((await override(manager, id, 'FAIL', 'not the outage after all')).errors, undefined);
    const history = 'query($id: ID!) { evaluation(id: $id) { override { reason } overrides { verdict reason replaced by { name } } } }';
    const e = (await s.gql(history, { id })).data.evaluation;
    assert.deepEqual(e.overrides, [
      { verdict: 'PASS', reason: 'known outage', replaced: 'FAIL', by: { name: 'release-manager' } },
      { verdict: 'FAIL', reason: 'not the outage after all', replaced: 'PASS', by: { name: 'release-manager' } },
    ]);
    assert.equal(e.override.reason, e.overrides.at(-1).reason, 'the last is the one in force');
    // Not overridden: an empty history, read without a query of the audit log.
    const plain = await failed('ovr-history-plain');
    assert.deepEqual((await s.gql(history, { id: plain })).data.evaluation.overrides, []);

    for (let i = 3; i <= 20; i++) assert.equal((await override(manager, id, i % 2 ? 'PASS' : 'FAIL', `flip ${i}`)).errors, undefined);
    const refused = await override(manager, id, 'PASS', 'one more');
    assert.equal(refused.errors?.[0]?.extensions?.code, 'CONFLICT', JSON.stringify(refused.errors));
    assert.match(refused.errors[0].message, /overridden 20 times/);
    const after = (await s.gql(history, { id })).data.evaluation;
    assert.equal(after.overrides.length, 20);
    assert.equal(after.override.reason, 'flip 20', 'the refused one changed nothing');
  });

  test('a running evaluation ends with the override: running rules canceled, decided and finished now', async () => {
    const id = await evaluation('ovr-running', 'ovr:ok', { duration: 3600 });
    const client = s.ws();
    try {
      const follow = await subscribeLive(s, client, 'subscription($id: ID!) { evaluationUpdated(id: $id) { reportedStatus finishedAt override { verdict } } }', { id });
      assert.equal((await follow.next()).data.evaluationUpdated.reportedStatus, 'IN_PROGRESS');
      const r = await override(keys['release-manager']!.secret, id, 'PASS', 'hotfix: waiting an hour is worse than the risk');
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      const e = r.data.overrideEvaluation;
      assert.equal(e.status, 'CANCELED', 'the gate never reached a verdict of its own');
      assert.equal(e.reportedStatus, 'PASS');
      assert.ok(e.decidedAt && e.finishedAt, JSON.stringify(e));
      assert.equal(e.override.replaced, 'IN_PROGRESS');
      assert.deepEqual(
        e.rules.map((x: any) => [x.status, x.reason, x.finishedAt === e.finishedAt]),
        [['CANCELED', "Ended by release-manager's override (pass).", true]],
      );
      // The follower's last event is the override, and its stream ends there (a check recorded
      // before it may come first: each recorded check is a revision).
      let last = (await follow.next()).data.evaluationUpdated;
      while (last.reportedStatus === 'IN_PROGRESS') last = (await follow.next()).data.evaluationUpdated;
      assert.deepEqual(last, { reportedStatus: 'PASS', finishedAt: e.finishedAt, override: { verdict: 'PASS' } });
      // The engine let it go: a later check changes nothing (the monitor going ALERT would fail a running rule).
      await d.report(okMonitor, 'ALERT');
      await d.report(okMonitor, 'OK');
      const now = (await s.gql(READ, { id })).data.evaluation;
      assert.deepEqual([now.status, now.reportedStatus, now.revision], ['CANCELED', 'PASS', e.revision]);
    } finally {
      await client.dispose();
    }
  });

  test('refused without the evaluations:override scope (evaluations:write does not imply it); nothing changes', async () => {
    const id = await failed('ovr-no-scope');
    const r = await override(keys.ci!.secret, id, 'PASS', 'let me through');
    assert.equal(r.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(r));
    assert.match(r.errors![0]!.message, /evaluations:override/);
    const e = (await s.gql(READ, { id })).data.evaluation;
    assert.deepEqual([e.reportedStatus, e.override], ['FAIL', null]);
    // Nor can such a key create a key that has it.
    const grant = await s.gql('mutation { createApiKey(input: { name: "sneaky", scopes: [EVALUATIONS_OVERRIDE] }) { secret } }', undefined, keys.ci!.secret);
    assert.equal(grant.errors?.[0]?.extensions?.code, 'FORBIDDEN', JSON.stringify(grant));
  });

  test("another environment's evaluation answers as one that does not exist, and stays as it was", async () => {
    const id = await failed('ovr-other-env');
    const r = await override(keys['staging-manager']!.secret, id, 'PASS', 'not mine to judge');
    assert.equal(r.errors?.[0]?.extensions?.code, 'NOT_FOUND', JSON.stringify(r));
    const missing = '01900000-0000-7000-8000-000000000000';
    const none = await override(keys['staging-manager']!.secret, missing, 'PASS', 'not mine to judge');
    assert.equal(r.errors![0]!.message.replace(id, 'ID'), none.errors![0]!.message.replace(missing, 'ID'), 'word for word the answer for a missing id');
    assert.ok(!JSON.stringify(r).includes('prod'), JSON.stringify(r));
    assert.equal((await s.gql(READ, { id })).data.evaluation.override, null);
    // Its own environment's evaluations it may override.
    const own = await evaluation('ovr-other-env', 'ovr:bad', { env: 'staging' });
    await waitFor('the staging evaluation to fail', async () => (await s.gql(READ, { id: own })).data.evaluation.status === 'FAIL');
    const ok = await override(keys['staging-manager']!.secret, own, 'PASS', 'staging only');
    assert.equal(ok.errors, undefined, JSON.stringify(ok.errors));
  });

  test('bad input is refused, naming the field: empty or blank reason, a reason too long, an unknown verdict, a malformed id', async () => {
    const id = await failed('ovr-bad-input');
    const manager = keys['release-manager']!.secret;
    for (const [reason, message] of [
      ['', /reason must say why/],
      ['   ', /reason must say why/],
      ['x'.repeat(1001), /reason is at most 1000 characters/],
    ] as const) {
      const r = await override(manager, id, 'PASS', reason);
      assert.equal(r.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(r));
      assert.equal(r.errors![0]!.extensions!.field, 'input.reason');
      assert.match(r.errors![0]!.message, message);
    }
    const verdict = await override(manager, id, 'MAYBE', 'why not');
    assert.ok(verdict.errors?.length, JSON.stringify(verdict));
    assert.match(verdict.errors![0]!.message, /\$verdict.*"MAYBE".*OverrideVerdict|OverrideVerdict.*MAYBE/s);
    const missingReason = await s.gql('mutation($id: ID!) { overrideEvaluation(id: $id, verdict: PASS) { id } }', { id }, manager);
    assert.match(missingReason.errors?.[0]?.message ?? '', /argument "reason" of type "String!" is required/);
    const badId = await override(manager, 'not-an-id', 'PASS', 'why not');
    assert.equal(badId.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(badId));
    assert.equal(badId.errors![0]!.extensions!.field, 'id');
    assert.equal((await s.gql(READ, { id })).data.evaluation.override, null, 'nothing changed');
  });

  test('the Flagger hook answers the override: the same call that got 412 for the failed canary gets 200 once overridden', async () => {
    const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
      i: { service: 'ovr-hook', env: 'prod', rules: [{ name: 'checkout monitors', options: { monitor: { query: 'ovr:bad', duration: 0 } } }] },
    });
    assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
    const flagger = async () =>
      s.request('POST', '/hooks/flagger', {
        key: keys.ci!.secret,
        body: { name: 'ovr-hook', namespace: 'test', phase: 'Progressing', checksum: 'rev-1', metadata: { service: 'ovr-hook', env: 'prod', version: 'v2' } },
      });
    const first = await waitFor('Flagger to be told the canary failed', async () => {
      const r = await flagger();
      return r.status !== 409 && r;
    });
    assert.equal(first.status, 412, first.text);
    assert.equal(first.json.override, null);
    const id = first.json.evaluation_id;
    const r = await override(keys['release-manager']!.secret, id, 'PASS', 'canary errors are the load test, not the release');
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const again = await flagger();
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.evaluation_id, id, 'the same evaluation, read again');
    assert.deepEqual([again.json.status, again.json.override.verdict, again.json.override.by.name, again.json.rules[0].status], ['pass', 'pass', 'release-manager', 'fail']);
  });

  test('an overridden evaluation is not "passed without evidence": the verdict is the override, not the lack of data', async () => {
    // A pipeline may hold a deploy that passed for lack of data; once a person has overridden
    // the verdict, that flag must not contradict or outlast it (REST, GraphQL, tollgate evaluate).
    const ingest = await s.createKey(['ingest']);
    await sendTraffic(s, { service: 'ovr-nodata', version: 'v1', resource: 'GET /cart', count: 100, from: Date.now() - 60_000, spreadMs: 30_000 }, ingest);
    const flags = `query($id: ID!) { evaluation(id: $id) { status reportedStatus passedWithoutEvidence } }`;
    const ids: string[] = [];
    for (const _ of [1, 2]) {
      const r = await d.evaluate({
        service: 'ovr-nodata',
        env: 'prod',
        version: 'v9',
        configuration: { rules: [{ name: 'fdd', options: { faultyDeploymentDetection: { duration: 1, onInsufficientData: 'PASS' } } }] },
      });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      ids.push(r.data.evaluateGate.id);
    }
    for (const id of ids) {
      await waitFor('the rule to pass for lack of data', async () => (await s.gql(flags, { id })).data.evaluation.status === 'PASS');
      assert.deepEqual((await s.gql(flags, { id })).data.evaluation, { status: 'PASS', reportedStatus: 'PASS', passedWithoutEvidence: true });
    }
    const manager = keys['release-manager']!.secret;
    assert.equal((await override(manager, ids[0]!, 'PASS', 'v9 serves no traffic yet by design; I vouch for it')).errors, undefined);
    assert.equal((await override(manager, ids[1]!, 'FAIL', 'no traffic means nobody tried it: not this way')).errors, undefined);
    for (const [id, verdict] of [
      [ids[0]!, 'PASS'],
      [ids[1]!, 'FAIL'],
    ]) {
      assert.deepEqual((await s.gql(flags, { id })).data.evaluation, { status: 'PASS', reportedStatus: verdict, passedWithoutEvidence: false });
      const rest = await s.request('GET', `/api/v2/deployments/gates/evaluation/${id}`, { key: keys.ci!.secret });
      assert.deepEqual([rest.json.data.attributes.gate_status, rest.json.data.attributes.passed_without_evidence], [verdict!.toLowerCase(), false]);
    }
  });

  test('the evaluations filter selects overridden evaluations (overridden: true) or the others', async () => {
    const q =
      'query($o: Boolean) { evaluations(first: 100, filter: { service: ["ovr-pushed", "ovr-no-scope"], overridden: $o }) { edges { node { service override { verdict } } } } }';
    const yes = (await s.gql(q, { o: true })).data.evaluations.edges.map((x: any) => x.node.service);
    const no = (await s.gql(q, { o: false })).data.evaluations.edges.map((x: any) => x.node.service);
    assert.deepEqual([yes, no], [['ovr-pushed'], ['ovr-no-scope']]);
  });

  describe('in the explorer', { skip: skipWithout(CHROMIUM === '/usr/bin/chromium' ? 'chromium' : CHROMIUM) }, () => {
    let chromium: Chromium;
    before(async () => {
      chromium = await launchChromium();
    });
    after(async () => chromium?.close());

    const signedIn = (path: string, key: string) => signedInPage(chromium, `${s.url}${path}`, key);

    test('a key with the scope overrides from the evaluation page; the override is shown there and marked in the list', async () => {
      await failed('ovr-ui-plain');
      const id = await failed('ovr-ui');
      const page = await signedIn(`/evaluations/${id}`, keys['release-manager']!.secret);
      await page.getByTestId('verdict').getByTestId('evaluation-status').and(page.locator('[data-status="FAIL"]')).waitFor();
      await page.getByRole('button', { name: 'Override…' }).click();
      const form = page.getByTestId('override-form');
      // The gate failed: the form offers PASS first, and wants a reason.
      assert.equal(await form.getByLabel('Pass: let the deploy through').isChecked(), true);
      await form.getByRole('button', { name: 'Override to PASS' }).click();
      await form.getByText('reason must say why').waitFor();
      // Markup in a reason is text: shown as typed, never run.
      const reason = 'payment provider outage, INC-42 <img src=x onerror="window.pwned=1">';
      await form.getByLabel('Reason').fill(reason);
      await form.getByRole('button', { name: 'Override to PASS' }).click();

      const note = page.getByTestId('override');
      await note.waitFor();
      assert.equal(await note.getByTestId('override-by').textContent(), 'release-manager');
      assert.equal(await note.getByTestId('override-reason').textContent(), reason);
      assert.equal(await note.locator('img').count(), 0);
      assert.equal(await page.evaluate('window.pwned'), undefined);
      assert.equal(await note.getByTestId('override-replaced').textContent(), 'FAIL');
      assert.equal(await page.getByTestId('override-form').count(), 0, 'the form closes');
      const verdict = page.getByTestId('verdict');
      assert.equal(await verdict.getByTestId('evaluation-status').getAttribute('data-status'), 'FAIL', 'the real status is still shown');
      assert.equal(await verdict.getByTestId('override-badge').getAttribute('data-verdict'), 'PASS');
      assert.equal((await s.gql(READ, { id })).data.evaluation.reportedStatus, 'PASS');

      await page.goto(`${s.url}/evaluations`);
      const row = page.locator('tr').filter({ hasText: 'ovr-ui' });
      await row.getByTestId('override-badge').waitFor();
      assert.equal(await row.getByTestId('override-badge').getAttribute('data-verdict'), 'PASS');
      // The Overridden facet: only overridden evaluations, then only the others.
      const rows = page.locator('tbody tr');
      await page.getByTestId('facet-overridden').getByLabel('Overridden', { exact: true }).check();
      await page.waitForURL(/overridden=true/);
      await page.locator('tbody tr', { hasText: 'ovr-ui-plain' }).waitFor({ state: 'detached' });
      const overridden = await rows.count();
      assert.ok(overridden > 0);
      assert.equal(await rows.getByTestId('override-badge').count(), overridden, 'every row is overridden');
      await page.getByTestId('facet-overridden').getByLabel('Not overridden').check();
      await page.locator('tbody tr', { hasText: 'ovr-ui-plain' }).first().waitFor();
      assert.equal(await rows.getByTestId('override-badge').count(), 0, 'no row is overridden');
      await page.context().close();
    });

    test("a page open on a finished evaluation shows someone else's override as it happens", async () => {
      const id = await failed('ovr-ui-watching');
      const page = await signedIn(`/evaluations/${id}`, keys.ci!.secret);
      await page.getByTestId('verdict').getByTestId('evaluation-status').and(page.locator('[data-status="FAIL"]')).waitFor();
      assert.equal(await page.getByTestId('override').count(), 0);
      // Another person, elsewhere: the page is not reloaded.
      assert.equal((await override(keys['release-manager']!.secret, id, 'PASS', 'known outage (INC-77)')).errors, undefined);
      const note = page.getByTestId('override');
      await note.waitFor();
      assert.equal(await note.getByTestId('override-reason').textContent(), 'known outage (INC-77)');
      assert.equal(await page.getByTestId('verdict').getByTestId('override-badge').getAttribute('data-verdict'), 'PASS');
      assert.equal(await page.getByTestId('override-history').count(), 0, 'no earlier override yet');
      // Overridden again: the note shows the one in force, the earlier one in its history.
      assert.equal((await override(keys['release-manager']!.secret, id, 'FAIL', 'INC-77 is over; this release is at fault')).errors, undefined);
      await note.getByTestId('override-reason').getByText('INC-77 is over; this release is at fault').waitFor();
      const history = page.getByTestId('override-history');
      await history.getByText('1 earlier override').click();
      await history.getByText('known outage (INC-77)').waitFor();
      await page.context().close();
    });

    test('a key without the scope gets no Override action', async () => {
      const id = await failed('ovr-ui-no-scope');
      const page = await signedIn(`/evaluations/${id}`, keys.ci!.secret);
      await page.getByRole('button', { name: 'Rerun' }).waitFor();
      assert.equal(await page.getByRole('button', { name: 'Override…' }).count(), 0);
      await page.context().close();
    });
  });

  test('tollgate override: overrides from a terminal, and says why it could not', async () => {
    const id = await failed('ovr-cli-override');
    const run = async (key: string, args: string[]) => runTollgate(['override', id, ...args], { TOLLGATE_URL: s.url, TOLLGATE_API_KEY: key });
    const refused = await run(keys.ci!.secret, ['--verdict', 'pass', '--reason', 'let me through']);
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /lacks the evaluations:override scope/);
    const blank = await run(keys['release-manager']!.secret, ['--verdict', 'pass', '--reason', ' ']);
    assert.equal(blank.code, 1);
    assert.match(blank.stderr, /input\.reason: reason must say why/);
    const badVerdict = await run(keys['release-manager']!.secret, ['--verdict', 'maybe', '--reason', 'why not']);
    assert.equal(badVerdict.code, 1);
    assert.match(badVerdict.stderr, /--verdict must be pass or fail, not maybe/);
    assert.equal((await s.gql(READ, { id })).data.evaluation.override, null, 'nothing changed so far');
    const ok = await run(keys['release-manager']!.secret, ['--verdict', 'pass', '--reason', 'known outage (INC-42)']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /Overridden to PASS by release-manager \(the gate said FAIL\): callers are now told PASS\./);
    assert.match(ok.stdout, new RegExp(`Details: .*/evaluations/${id}`));
    const e = (await s.gql(READ, { id })).data.evaluation;
    assert.deepEqual([e.reportedStatus, e.override.reason], ['PASS', 'known outage (INC-42)']);
  });

  describe('tollgate evaluate', () => {
    /**
     * Between the CLI and Tollgate: forwards every request, and while `held`, keeps the CLI's
     * polls waiting, so the evaluation can fail and be overridden between two of them.
     */
    let proxy: Server;
    let held = false;
    const waiting: Array<() => void> = [];
    let polls = 0;
    before(async () => {
      proxy = createServer(async (req, res) => {
        const chunks: Buffer[] = [];
        for await (const c of req) chunks.push(c as Buffer);
        if (req.method === 'GET') {
          polls++;
          if (held) await new Promise<void>((r) => waiting.push(r));
        }
        const upstream = await fetch(new URL(req.url!, s.url), {
          method: req.method,
          headers: Object.fromEntries(Object.entries(req.headers).filter(([k]) => k === 'authorization' || k === 'content-type' || k === 'dd-api-key')) as Record<string, string>,
          body: chunks.length ? Buffer.concat(chunks) : undefined,
        });
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' });
        res.end(Buffer.from(await upstream.arrayBuffer()));
      });
      await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    });
    after(async () => {
      for (const w of waiting.splice(0)) w();
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    });

    function cli(args: string[], key: string, url: string) {
      return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'evaluate', ...args], {
          env: { ...process.env, TOLLGATE_API_KEY: key, TOLLGATE_URL: url, TOLLGATE_POLL_INTERVAL_MS: '100' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (x) => (stdout += x));
        child.stderr.on('data', (x) => (stderr += x));
        child.once('exit', (code) => resolve({ code, stdout, stderr }));
      });
    }

    test('a gate that failed and was overridden before the next poll passes, and the CLI says who overrode it and why', async () => {
      const flip = await d.monitor('checkout flaky', ['ovr:flip']);
      await d.report(flip, 'OK');
      const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
        i: { service: 'ovr-cli', env: 'prod', rules: [{ name: 'checkout monitors', options: { monitor: { query: 'ovr:flip', duration: 3600 } } }] },
      });
      assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
      const { port } = proxy.address() as AddressInfo;
      const run = cli(['--service', 'ovr-cli', '--env', 'prod', '--no-watch', '--timeout', '120'], keys.ci!.secret, `http://127.0.0.1:${port}`);
      // The CLI is polling an evaluation in progress; hold its next poll.
      const id = await waitFor('the CLI to poll', async () => {
        const r = await s.gql('{ evaluations(first: 1, filter: { service: ["ovr-cli"] }) { edges { node { id } } } }');
        return polls > 0 && r.data.evaluations.edges[0]?.node.id;
      });
      held = true;
      await d.report(flip, 'ALERT');
      await waitFor('the evaluation to fail', async () => (await s.gql(READ, { id })).data.evaluation.status === 'FAIL');
      const r = await override(keys['release-manager']!.secret, id, 'PASS', 'flaky checkout monitor, tracked in INC-42');
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      held = false;
      for (const w of waiting.splice(0)) w();
      const out = await run;
      assert.equal(out.code, 0, out.stdout + out.stderr);
      assert.match(out.stdout, /Gate PASSED/);
      assert.match(out.stdout, /Overridden to PASS by release-manager at \S+ \(the gate said FAIL\): flaky checkout monitor, tracked in INC-42/);
      assert.match(out.stdout, /FAIL\s+checkout monitors — .*checkout flaky/, 'the real rule verdict is still shown');
    });

    test('watching over WebSocket, a running evaluation overridden to FAIL fails the deploy, with the override', async () => {
      const gate = await s.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
        i: { service: 'ovr-cli-watch', env: 'prod', rules: [{ name: 'checkout monitors', options: { monitor: { query: 'ovr:ok', duration: 3600 } } }] },
      });
      assert.equal(gate.errors, undefined, JSON.stringify(gate.errors));
      const run = cli(['--service', 'ovr-cli-watch', '--env', 'prod', '--timeout', '120'], keys.ci!.secret, s.url);
      const id = await waitFor('the evaluation to start', async () => {
        const r = await s.gql('{ evaluations(first: 1, filter: { service: ["ovr-cli-watch"] }) { edges { node { id } } } }');
        return r.data.evaluations.edges[0]?.node.id;
      });
      const r = await override(keys['release-manager']!.secret, id, 'FAIL', 'release blocked: the payments freeze starts now');
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      const out = await run;
      assert.equal(out.code, 1, out.stdout + out.stderr);
      assert.match(out.stdout, /Gate FAILED/);
      assert.match(out.stdout, /Overridden to FAIL by release-manager at \S+ \(the gate said IN_PROGRESS\): release blocked: the payments freeze starts now/);
    });
  });
});
