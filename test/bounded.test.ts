// Work triggered by one event is bounded per tick and indexed, and large lists never become
// one SQL statement with a variable per item (issue 9, item 7).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { listEvaluations } from '../src/db/evaluations.ts';
import { allMonitors, groupsOf } from '../src/db/monitors.ts';
import { monitorGroups, monitors } from '../src/db/schema.ts';
import { evaluateGate, evaluateGateInputSchema } from '../src/domain/evaluations.ts';
import { newId } from '../src/domain/ids.ts';
import { parseMonitorQuery } from '../src/domain/monitorQuery.ts';
import { groupsByMonitor, monitorMatches, reportMonitorState, reportMonitorStateInputSchema, SEARCH_PAGE_SIZE, searchMonitors, sweepNoData } from '../src/domain/monitors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { turnsDuring } from './helpers/tools.ts';
import { driver, jitMonitor, sleep, startServer, type TestServer } from './helpers.ts';

// One key starts thousands of evaluations here: the per-key limits (item 8) are not under test.
const NO_LIMITS = { rateLimits: { requestsPerSecond: 0, ingestPerSecond: 0, triggersPerMinute: 0, inProgress: 0, sockets: 0, operations: 0, authFailuresPerMinute: 0 } };

async function until(what: string, done: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('one transition watched by thousands of evaluations', () => {
  const WATCHERS = 2000;
  let s: TestServer;
  let d: ReturnType<typeof driver>;

  before(async () => {
    s = await startServer(NO_LIMITS);
    d = driver(s);
  });
  after(() => s.stop());

  /** `count` evaluations whose one monitor rule watches the monitor, their first check done. */
  async function watchers(service: string, count: number, monitor: Record<string, unknown>): Promise<string[]> {
    const deps = s.app.deps;
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const input = evaluateGateInputSchema.parse({ service, env: 'prod', version: `v${i}`, configuration: { rules: [jitMonitor('watch', { ...monitor, duration: 3600 })] } });
      ids.push((await evaluateGate(deps, SYSTEM, input)).evaluation.id);
      if (i % 200 === 199) await sleep(0);
    }
    await until('first checks', () => countRules(service, "reason like 'Watching%'") === count);
    return ids;
  }

  function countRules(service: string, where: string): number {
    const row = s.app.deps.db.$client
      .prepare(`select count(*) as n from rule_evaluations r join evaluations e on e.id = r.evaluation_id where e.service = ? and ${where}`)
      .get(service) as { n: number };
    return row.n;
  }
  const failed = (service: string) => countRules(service, "r.status = 'fail' and e.status = 'fail'");

  test('reportMonitorState returns, and /healthz answers, before the woken checks have run; every verdict follows', async () => {
    const monitorId = await d.monitor('watched', ['team:watched', 'env:prod']);
    await d.report(monitorId, 'OK');
    await watchers('by-id', WATCHERS / 2, { monitorIds: [{ id: monitorId }] });
    await watchers('by-query', WATCHERS / 2, { query: 'team:watched' });

    const r = await s.gql('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId, state: 'ALERT' } });
    assert.equal(r.errors, undefined);
    const decidedAtReturn = failed('by-id') + failed('by-query');
    const health = await s.request('GET', '/healthz', { key: null });
    const decidedAtHealth = failed('by-id') + failed('by-query');
    assert.equal(health.status, 200);
    // Before, all 2,000 checks ran inside the mutation, so every verdict was in before it answered.
    assert.ok(decidedAtReturn < WATCHERS, `the mutation waited for ${decidedAtReturn} checks`);
    assert.ok(decidedAtHealth < WATCHERS, `/healthz waited for ${decidedAtHealth} checks`);

    await until('every verdict', () => failed('by-id') + failed('by-query') === WATCHERS);
    assert.equal(countRules('by-id', 'r.reason like \'%"watched" was ALERT%\''), WATCHERS / 2);
    assert.equal(countRules('by-query', 'r.reason like \'%"watched" was ALERT%\''), WATCHERS / 2);
    assert.deepEqual(s.app.engine.stats().queuedChecks, 0);
  });

  test('a rule woken twice before its turn is checked once, writes nothing when nothing changed, and still fails on an ALERT that came and went between checks', async () => {
    const count = 300;
    const monitorId = await d.monitor('flapping', ['team:flapping', 'env:prod']);
    await d.report(monitorId, 'OK');
    const ids = await watchers('flaps', count, { monitorIds: [{ id: monitorId }] });
    const revisions = async () => (await s.sql<{ n: number }>(`select sum(revision) as n from evaluations where service = 'flaps'`))[0]!;
    const before = (await revisions()).n;
    const report = async (state: string) => reportMonitorState(s.app.deps, SYSTEM, reportMonitorStateInputSchema.parse({ monitorId, state }));

    // Two transitions in one turn of the event loop: each wakes every rule, each rule is checked once.
    s.queries.length = 0;
    await report('warn');
    await report('ok');
    await until('the checks', () => s.app.engine.stats().queuedChecks === 0);
    // Each check starts with one read of its rule and evaluation.
    const checks = s.queries.filter((q) => /^select .* from "rule_evaluations" inner join "evaluations" on .* where "rule_evaluations"."id" = \?$/.test(q)).length;
    assert.equal(checks, count, 'one check per rule');
    assert.equal((await revisions()).n, before, 'WARN and back to OK changes no rule: nothing written, nothing published');

    // ALERT and back to OK before any check runs: the recorded transition still fails every rule.
    await report('alert');
    await report('ok');
    await until('every verdict', () => failed('flaps') === count);
    const one = await d.get(ids[0]!);
    assert.match(one.rules[0].reason, /"flapping" was ALERT/);
  });
});

describe('many monitors and long lists', () => {
  const MONITORS = 40_000;
  let s: TestServer;
  let d: ReturnType<typeof driver>;

  before(async () => {
    s = await startServer(NO_LIMITS);
    d = driver(s);
    // Seeded straight into the table: 40,000 createMonitor calls would only slow the test down.
    const now = new Date();
    const rows = Array.from({ length: MONITORS }, (_, i) => ({
      id: newId(),
      name: `bulk-${i}`,
      type: 'external' as const,
      tags: ['env:bulk', `n:${i}`],
      muted: false,
      createdAt: now,
      updatedAt: now,
      createdById: 'test',
      createdByName: 'test',
      updatedById: 'test',
      updatedByName: 'test',
    }));
    const db = s.app.deps.db;
    db.transaction((tx) => {
      for (let i = 0; i < rows.length; i += 500) {
        tx.insert(monitors)
          .values(rows.slice(i, i + 500))
          .run();
        tx.insert(monitorGroups)
          .values(rows.slice(i, i + 500).map((m) => ({ monitorId: m.id, group: '*', state: 'ok' as const, since: now, lastReportedAt: now })))
          .run();
      }
    });
  });
  after(() => s.stop());

  test('monitors(query:) over 40,000 monitors answers', async () => {
    const r = await s.gql('{ monitors(query: "env:bulk", first: 3) { edges { node { name state } } } }');
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    assert.equal(r.data.monitors.edges.length, 3);
    const status = await s.gql('{ monitors(query: "env:bulk status:ok", first: 1) { edges { node { name } } } }');
    assert.equal(status.errors, undefined, JSON.stringify(status.errors));
  });

  test('a search reads the monitors a page per turn of the event loop, and selects what reading them all at once did', async () => {
    const deps = s.app.deps;
    const some = (await allMonitors(deps.db)).filter((_, i) => i % 997 === 0);
    for (const m of some) await reportMonitorState(deps, SYSTEM, reportMonitorStateInputSchema.parse({ monitorId: m.id, group: 'host:a', state: 'alert' }));
    // What the search found when it read every monitor and every group in one go.
    const readAtOnce = async (query: string) => {
      const all = await allMonitors(deps.db);
      if (!query) return all.map((m) => m.id);
      const expr = parseMonitorQuery(query);
      const groups = groupsByMonitor(
        await groupsOf(
          deps.db,
          all.map((m) => m.id),
        ),
      );
      return all.filter((m) => monitorMatches(expr, m, groups.get(m.id) ?? [])).map((m) => m.id);
    };
    for (const query of ['', 'env:bulk', 'n:7*', 'status:alert', 'env:bulk -status:ok', 'group:"host:a" OR n:12', 'NOT (n:1* AND status:ok)', 'bulk-39999']) {
      const found = (await searchMonitors(deps, SYSTEM, query || undefined)).map((m) => m.id);
      assert.deepEqual(found, await readAtOnce(query), `search ${JSON.stringify(query)}`);
    }

    const { result: all, turns } = await turnsDuring(() => searchMonitors(deps, SYSTEM, 'env:bulk status:ok'));
    assert.equal(all.length, MONITORS - some.length);
    // Read at once, the 40,000 monitors and their groups held the loop for one or two turns.
    assert.ok(turns >= MONITORS / SEARCH_PAGE_SIZE, `the event loop turned ${turns} times while 40,000 monitors were searched`);
    const pageQuery = 'query($after: String) { monitors(query: "env:bulk status:alert", first: 2, after: $after) { edges { node { name } } pageInfo { endCursor } } }';
    const first = await s.gql(pageQuery);
    const second = await s.gql(pageQuery, { after: first.data.monitors.pageInfo.endCursor });
    const names = [...first.data.monitors.edges, ...second.data.monitors.edges].map((e: any) => e.node.name);
    assert.deepEqual(
      names,
      some.slice(0, 4).map((m) => m.name),
    );
  });

  test('a monitor rule matching 40,000 monitors fails for matching too many, not by onSourceError', async () => {
    const r = await d.evaluate({ service: 'bulk', env: 'bulk', configuration: { onSourceError: 'PASS', rules: [jitMonitor('all', { query: 'env:bulk status:ok' })] } });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const final = (await d.follow(r.data.evaluateGate.id, 30_000)).at(-1);
    assert.equal(final.status, 'FAIL');
    // The search test before this one set a few of them ALERT: the rest still match.
    const matched = Number(/^(\d+) monitors match/.exec(final.rules[0].reason)?.[1]);
    assert.ok(matched > 39_000, final.rules[0].reason);
    assert.ok(final.rules[0].evidence.matchedMonitors.length <= 50, 'the evidence lists no more monitors than a rule may watch');
  });

  test('a transition woken rules judge without reading all 40,000 monitors again', async () => {
    const id = await d.monitor('among-many', ['team:among', 'env:bulk']);
    await d.report(id, 'OK');
    const r = await d.evaluate({ service: 'among', env: 'bulk', configuration: { rules: [jitMonitor('q', { query: 'team:among', duration: 3600 })] } });
    await until('the first check', async () => /Watching/.test((await d.get(r.data.evaluateGate.id)).rules[0].reason));
    s.queries.length = 0;
    await d.report(id, 'ALERT');
    const final = (await d.follow(r.data.evaluateGate.id, 30_000)).at(-1);
    assert.equal(final.status, 'FAIL');
    const readAll = s.queries.filter((q) => /from "monitors"/.test(q) && !/ where /.test(q));
    assert.deepEqual(readAll, [], 'a state change re-read every monitor');
  });

  test('spans ingested re-evaluate the APM monitors without reading all 40,000 monitors', async () => {
    s.queries.length = 0;
    s.app.deps.events.publish('apm.ingested', { service: 'checkout', env: 'bulk', at: new Date() });
    await sleep(50);
    const readAll = s.queries.filter((q) => /from "monitors"/.test(q) && !/ where /.test(q));
    assert.deepEqual(readAll, [], 'a statement read every monitor');
    assert.ok(
      s.queries.some((q) => /from "monitors" where/.test(q)),
      'the APM monitors were looked up',
    );
  });

  test('a 40,000-value filter list is refused at the API, naming the field, and the store takes any length', async () => {
    const values = Array.from({ length: MONITORS }, (_, i) => `svc-${i}`);
    const listQuery = 'query($s: [String!]) { evaluations(filter: { service: $s }, first: 1) { edges { node { id } } } }';
    // 40,000 values is refused whole, by the request size limit or the list bound.
    const huge = await s.gql(listQuery, { s: values });
    assert.ok(['BAD_USER_INPUT', 'REQUEST_ENTITY_TOO_LARGE'].includes(huge.errors?.[0]?.extensions?.code), JSON.stringify(huge.errors));
    const gql = await s.gql(listQuery, { s: values.slice(0, 101) });
    assert.equal(gql.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(gql.errors![0]!.message, /filter\.service/);
    assert.match(gql.errors![0]!.message, /at most 100/);

    const stats = await s.gql('query($v: [String!]) { evaluationStats(filter: { version: $v }) { total } }', { v: values.slice(0, 101) });
    assert.equal(stats.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(stats.errors![0]!.message, /filter\.version/);

    const rest = await s.request('GET', `/api/v2/deployment_gates/evaluations?filter[service]=${values.slice(0, 101).join(',')}`);
    assert.equal(rest.status, 400);
    assert.match(rest.json.errors[0].detail, /filter\[service\]/);

    const groups = Array.from({ length: 101 }, (_, i) => `host:h${i}`);
    const rule = await d.evaluate({ service: 'bulk', env: 'bulk', configuration: { rules: [jitMonitor('ids', { monitorIds: [{ id: newId(), groups }] })] } });
    assert.equal(rule.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(rule.errors![0]!.message, /monitorIds\[0\]\.groups.*at most 100/);
    const key = await s.gql('mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', { i: { name: 'wide', scopes: ['GATES_READ'], envs: values.slice(0, 101) } });
    assert.equal(key.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(key.errors![0]!.message, /envs.*at most 100/);

    // Below the API, lists are one bound parameter whatever their length.
    assert.deepEqual(await listEvaluations(s.app.deps.db, { service: values }, { limit: 1, inverted: false }), []);
  });
});

describe('thousands of monitors falling silent at once', () => {
  const SILENT = 5000;
  let s: TestServer;

  before(async () => {
    s = await startServer(NO_LIMITS);
    const now = new Date();
    const lastHeard = new Date(now.getTime() - 120_000);
    const rows = Array.from({ length: SILENT }, (_, i) => ({
      id: newId(),
      name: `silent-${i}`,
      type: 'external' as const,
      tags: ['env:silent'],
      muted: false,
      noDataTimeframe: 60,
      createdAt: now,
      updatedAt: now,
      createdById: 'test',
      createdByName: 'test',
      updatedById: 'test',
      updatedByName: 'test',
    }));
    s.app.deps.db.transaction((tx) => {
      for (let i = 0; i < rows.length; i += 500) {
        tx.insert(monitors)
          .values(rows.slice(i, i + 500))
          .run();
        for (const group of ['host:a', 'host:b']) {
          tx.insert(monitorGroups)
            .values(rows.slice(i, i + 500).map((m) => ({ monitorId: m.id, group, state: 'ok' as const, since: lastHeard, lastReportedAt: lastHeard })))
            .run();
        }
      }
    });
  });
  after(() => s.stop());

  test('the NO_DATA sweep records them in batches, yielding between them, and publishes each transition after its commit', async () => {
    const db = s.app.deps.db.$client;
    let published = 0;
    let publishedInTransaction = 0;
    const off = s.app.deps.events.on('monitor.transition', (c) => {
      if (c.to !== 'no_data') return;
      published++;
      if (db.inTransaction) publishedInTransaction++;
    });
    const { result: recorded, turns } = await turnsDuring(() => sweepNoData(s.app.deps));
    off();
    // Before, every silent group was recorded in one synchronous loop: no turn in between.
    assert.ok(turns >= 2, `the event loop turned ${turns} times while ${2 * SILENT} groups were recorded`);
    assert.equal(recorded, 2 * SILENT);
    const noData = db.prepare(`select count(*) as n from monitor_groups g join monitors m on m.id = g.monitor_id where m.name like 'silent-%' and g.state = 'no_data'`).get() as {
      n: number;
    };
    assert.equal(noData.n, 2 * SILENT);
    const one = await s.gql('query($q: String) { monitors(query: $q, first: 1) { edges { node { state groups { group state since message } } } } }', { q: 'silent-4999' });
    assert.deepEqual(
      one.data.monitors.edges[0].node.groups.map((g: any) => [g.group, g.state, g.message]),
      [
        ['host:a', 'NO_DATA', 'no report for more than 60 s'],
        ['host:b', 'NO_DATA', 'no report for more than 60 s'],
      ],
    );
    assert.ok(Math.abs(Date.parse(one.data.monitors.edges[0].node.groups[0].since) - Date.now()) < 60_000, 'since is when the sweep ran');
    const transitions = db.prepare(`select count(*) as n from monitor_transitions where "to" = 'no_data'`).get() as { n: number };
    assert.equal(transitions.n, 2 * SILENT);
    assert.equal(published, 2 * SILENT);
    assert.equal(publishedInTransaction, 0, 'a transition was published before its batch committed');
    assert.equal(await sweepNoData(s.app.deps), 0, 'a second sweep finds nothing left');
  });
});

describe('a restart with thousands of evaluations in progress', () => {
  const RUNNING = 3000;

  test('/healthz answers while they are resumed, and every one still reaches its verdict', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-resume-'));
    const first = await startServer(NO_LIMITS, { dir });
    let monitorId: string;
    try {
      monitorId = await driver(first).monitor('resumed', ['team:resumed', 'env:prod']);
      await driver(first).report(monitorId, 'OK');
      const deps = first.app.deps;
      for (let i = 0; i < RUNNING; i++) {
        const input = evaluateGateInputSchema.parse({
          service: 'resumed',
          env: 'prod',
          version: `v${i}`,
          configuration: { rules: [jitMonitor('watch', { monitorIds: [{ id: monitorId }], duration: 3600 })] },
        });
        await evaluateGate(deps, SYSTEM, input);
        if (i % 200 === 199) await sleep(0);
      }
    } finally {
      await first.stop();
    }

    const s = await startServer(NO_LIMITS, { dir });
    try {
      const health = await s.request('GET', '/healthz', { key: null });
      const resumedAtHealth = s.app.engine.stats().activeRules;
      assert.equal(health.status, 200);
      // Before, every evaluation was loaded inside listen(), before any request could be answered.
      assert.ok(resumedAtHealth < RUNNING, `/healthz waited until ${resumedAtHealth} of ${RUNNING} rules were resumed`);

      // The monitor goes ALERT while they are being resumed: rules loaded before and after it both see it.
      await driver(s).report(monitorId, 'ALERT');
      const failed = async () => (await s.sql<{ n: number }>(`select count(*) as n from evaluations where service = 'resumed' and status = 'fail'`))[0]!.n;
      await until('every verdict', async () => (await failed()) === RUNNING);
      assert.equal(s.app.engine.stats().activeRules, 0);
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('an Alertmanager notification with 3,000 new alerts', () => {
  // Hundreds of 10 ms slices: enough to see requests served between them.
  const ALERTS = 3_000;
  let s: TestServer;

  before(async () => {
    s = await startServer(NO_LIMITS);
  });
  after(() => s.stop());

  test('is applied in slices: /healthz answers while it runs, and every alert is recorded', async () => {
    let started = false;
    const off = s.app.deps.events.on('monitor.transition', () => (started = true));
    const alerts = Array.from({ length: ALERTS }, (_, i) => ({
      status: 'firing',
      labels: { alertname: `storm-${i}`, env: 'prod', instance: `i-${i}` },
      annotations: { summary: `storm ${i}` },
    }));
    let answered = false;
    const notification = s.request('POST', '/hooks/alertmanager', { body: { version: '4', status: 'firing', alerts } }).finally(() => (answered = true));
    let healthDuring = 0;
    while (!answered) {
      const h = await s.request('GET', '/healthz', { key: null });
      assert.equal(h.status, 200);
      if (started && !answered) healthDuring++;
    }
    off();
    const res = await notification;
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { received: ALERTS, rejected: 0, problems: [] });
    assert.ok(healthDuring > 0, '/healthz was not answered while the notification was applied');

    const db = s.app.deps.db.$client;
    const monitorsMade = db.prepare(`select count(*) as n from monitors where name like 'storm-%'`).get() as { n: number };
    const alerting = db.prepare(`select count(*) as n from monitor_groups g join monitors m on m.id = g.monitor_id where m.name like 'storm-%' and g.state = 'alert'`).get() as {
      n: number;
    };
    assert.equal(monitorsMade.n, ALERTS);
    assert.equal(alerting.n, ALERTS);

    // The same notification again finds every monitor: no duplicates, states unchanged.
    const again = await s.request('POST', '/hooks/alertmanager', { body: { version: '4', status: 'firing', alerts } });
    assert.equal(again.status, 200);
    assert.equal((db.prepare(`select count(*) as n from monitors where name like 'storm-%'`).get() as { n: number }).n, ALERTS);
  });

  test('notifications wait their turn, a bounded number of them: beyond it 503 with Retry-After, and a resend is applied', async () => {
    // Each takes long enough (a second or so) that all 12 arrive while the first is applied.
    const PER_NOTIFICATION = 500;
    const notification = (n: number) => ({
      version: '4',
      alerts: Array.from({ length: PER_NOTIFICATION }, (_, i) => ({ status: 'firing', labels: { alertname: `queue-${n}-${i}`, env: 'prod' } })),
    });
    const answers = await Promise.all(Array.from({ length: 12 }, async (_, n) => s.request('POST', '/hooks/alertmanager', { body: notification(n) })));
    const busy = answers.flatMap((a, n) => (a.status === 503 ? [n] : []));
    assert.ok(busy.length > 0, `every one of 12 notifications of ${PER_NOTIFICATION} alerts was taken at once: ${answers.map((a) => a.status)}`);
    assert.ok(
      answers.every((a) => a.status === 200 || a.status === 503),
      JSON.stringify(answers.map((a) => a.status)),
    );
    assert.match(answers[busy[0]!]!.json.errors[0].detail, /waiting/);
    for (const n of busy) assert.equal((await s.request('POST', '/hooks/alertmanager', { body: notification(n) })).status, 200);
    const made = (await s.sql<{ n: number }>(`select count(*) as n from monitors where name like 'queue-%'`))[0]!;
    assert.equal(made.n, 12 * PER_NOTIFICATION);
  });
});
