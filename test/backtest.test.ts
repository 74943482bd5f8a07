// Backtesting a gate on a day of past deploys: real server, real OTLP ingestion of spans stamped
// in the past, the replay running in the server's background job, progress over graphql-ws.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { CHROMIUM, launchChromium } from './browser.ts';
import { sleep, subscribeQueue } from './helpers/live.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { REDIS_URL, redisChannelPrefix, skipWithoutRedis } from './helpers/redis.ts';
import { waitFor } from './helpers/tools.ts';
import { ADMIN_KEY, CREATE_GATE, fddRule, skipWithout, startServer, type TestServer } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

const MIN = 60_000;
const HOUR = 60 * MIN;

const BACKTEST_FIELDS = `id gateId service env from to status error revision progress { done total }
  skippedRules { name type why }
  summary { deploys failed passed undecided failedThenRolledBack truncated }
  deploys { version firstSeenAt verdict realVerdict decidingRule decidedAt timeToVerdictSeconds reason
    rollback { at versions } rules { name type status reason decidedAt } }`;
const START = `mutation($i: BacktestGateInput!) { backtestGate(input: $i) { ${BACKTEST_FIELDS} } }`;
const GET = `query($id: ID!) { backtest(id: $id) { ${BACKTEST_FIELDS} } }`;
const FOLLOW = `subscription($id: ID!) { backtestProgress(id: $id) { ${BACKTEST_FIELDS} } }`;
const CANCEL = `mutation($id: ID!) { cancelBacktest(id: $id) { ${BACKTEST_FIELDS} } }`;

/** Every state a subscriber is shown until the backtest ends. */
async function follow(s: TestServer, id: string, key?: string): Promise<any[]> {
  const q = subscribeQueue(s.ws(key), FOLLOW, { id });
  const seen: any[] = [];
  try {
    for (;;) {
      const v = await q.next(60_000);
      if (v.errors) throw new Error(JSON.stringify(v.errors));
      const b = (v.data as any).backtestProgress;
      seen.push(b);
      if (b.status !== 'RUNNING') return seen;
    }
  } finally {
    q.dispose();
  }
}

describe('backtesting a gate over a day of deploys', () => {
  let s: TestServer;
  /** The day starts here (a minute boundary a day ago). */
  let day: number;
  let gateId: string;

  /** `perMinute` requests of a version from `from` for `minutes`, one in `errorsEvery` failing with TimeoutError. */
  const serve = (version: string, from: number, minutes: number, perMinute: number, errorsEvery = 20) =>
    sendTraffic(s, {
      service: 'shop',
      env: 'prod',
      version,
      resource: 'GET /cart',
      count: minutes * perMinute,
      errorsEvery,
      errorType: 'TimeoutError',
      message: 'upstream timed out',
      from,
      spreadMs: minutes * MIN,
    });

  before(async () => {
    s = await startServer({ webhookAllowedHosts: [{ host: 'hooks.example.com', wildcard: false, port: null }] });
    day = Math.floor((Date.now() - 24 * HOUR) / MIN) * MIN;
    // v1 serves the first six hours; v2 (good) takes over after a 15-minute canary beside it.
    await serve('v1', day, 6 * 60, 20);
    await serve('v2', day + 6 * HOUR, 15, 150);
    await serve('v1', day + 6 * HOUR, 15, 150);
    await serve('v2', day + 6 * HOUR + 15 * MIN, 6 * 60 - 15, 20);
    // v3 (bad: one request in three fails) is rolled back after its 15-minute canary: v2 serves on.
    await serve('v3', day + 12 * HOUR, 15, 150, 3);
    await serve('v2', day + 12 * HOUR, 15, 150);
    await serve('v2', day + 12 * HOUR + 15 * MIN, 6 * 60 - 15, 20);
    // v4 (good) takes over at 18:00 and serves until now.
    await serve('v4', day + 18 * HOUR, 15, 150);
    await serve('v2', day + 18 * HOUR, 15, 150);
    await serve('v4', day + 18 * HOUR + 15 * MIN, 6 * 60 - 20, 20);

    const r = await s.gql(CREATE_GATE, {
      input: {
        service: 'shop',
        env: 'prod',
        rules: [
          fddRule('errors', { duration: 900, minRelativeIncrease: 1, onInsufficientData: 'FAIL' }),
          { name: 'smoke test', options: { webhook: { url: 'https://hooks.example.com/smoke' } } },
        ],
      },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    gateId = r.data.createGate.id;
  });

  after(() => s.stop());

  it('flags the bad deploy, passes the good ones, and streams its progress', async (t) => {
    // The server runs in this process: its event loop's longest stall while the job runs (a figure, not asserted).
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    // Every change the server publishes (it runs in this process), listened to before the start.
    const published: Array<{ status: string; done: number; total: number; revision: number }> = [];
    const off = s.app.deps.events.on('backtest.changed', (b) => published.push({ status: b.status, done: b.done, total: b.total, revision: b.revision }));
    const r = await s.gql(START, { i: { gateId, from: new Date(day + HOUR).toISOString(), to: new Date().toISOString() } });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const started = r.data.backtestGate;
    assert.equal(started.status, 'RUNNING');
    assert.deepEqual(
      started.skippedRules.map((x: any) => [x.name, x.type]),
      [['smoke test', 'WEBHOOK']],
    );
    assert.match(started.skippedRules[0].why, /outside service/);

    const seen = await follow(s, started.id);
    delay.disable();
    t.diagnostic(`events seen: ${seen.length}; longest event-loop stall while replaying: ${(delay.max / 1e6).toFixed(1)} ms`);
    off();
    const last = seen.at(-1);
    assert.equal(last.status, 'DONE', JSON.stringify(last));
    // Published: the start, the deploys found, one change per deploy replayed, the end.
    assert.deepEqual(
      published.map((p) => [p.status, p.done, p.total]),
      [
        ['running', 0, 0],
        ['running', 0, 3],
        ['running', 1, 3],
        ['running', 2, 3],
        ['running', 3, 3],
        ['done', 3, 3],
      ],
    );
    // The subscriber is shown the state when it subscribed, then every later change in order,
    // each with the deploys replayed so far, until the end.
    const revisions = published.map((p) => p.revision);
    assert.deepEqual(
      seen.map((b) => b.revision),
      revisions.slice(revisions.indexOf(seen[0].revision)),
    );
    for (const b of seen) assert.equal(b.deploys.length, b.progress.done);
    assert.deepEqual(last.progress, { done: 3, total: 3 });

    const byVersion = Object.fromEntries(last.deploys.map((d: any) => [d.version, d]));
    assert.deepEqual(
      last.deploys.map((d: any) => [d.version, d.verdict]),
      [
        ['v2', 'PASS'],
        ['v3', 'FAIL'],
        ['v4', 'PASS'],
      ],
    );
    const bad = byVersion.v3;
    assert.equal(bad.decidingRule, 'errors');
    assert.match(bad.reason, /error rate of GET \/cart rose/);
    assert.equal(bad.firstSeenAt, new Date(day + 12 * HOUR).toISOString());
    // Decided inside the rule's 15-minute window, before it ended.
    assert.ok(bad.timeToVerdictSeconds > 0 && bad.timeToVerdictSeconds < 900, String(bad.timeToVerdictSeconds));
    assert.deepEqual(bad.rollback?.versions, ['v2']);
    // The good deploys passed on enough traffic (onInsufficientData is FAIL), after the whole window.
    for (const v of ['v2', 'v4']) {
      assert.equal(byVersion[v].decidingRule, 'errors');
      assert.match(byVersion[v].reason, /No significant error-rate increase/);
      assert.ok(byVersion[v].timeToVerdictSeconds >= 900);
      assert.equal(byVersion[v].rollback, null);
    }
    assert.deepEqual(last.summary, { deploys: 3, failed: 1, passed: 2, undecided: 0, failedThenRolledBack: 1, truncated: false });

    // Stored: read back later, as the explorer does.
    const again = await s.gql(GET, { id: started.id });
    assert.deepEqual(again.data.backtest.summary, last.summary);
    // A list reads no results unless its query asks for the deploys; then it shows the same.
    const listed = await s.gql(`query { backtests(first: 20) { ${BACKTEST_FIELDS} } }`);
    assert.equal(listed.errors, undefined, JSON.stringify(listed.errors));
    assert.deepEqual(
      listed.data.backtests.find((b: any) => b.id === started.id),
      again.data.backtest,
    );
  });

  it('stops when canceled, keeping what it replayed', async () => {
    // A two-hour window per deploy: far more checks than the cancel takes to arrive.
    const r = await s.gql(START, {
      i: { service: 'shop', env: 'prod', configuration: { rules: [fddRule('slow', { duration: 7200 })] }, from: new Date(day + HOUR).toISOString(), to: new Date().toISOString() },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const id = r.data.backtestGate.id;
    const c = await s.gql(CANCEL, { id });
    assert.equal(c.errors, undefined, JSON.stringify(c.errors));
    assert.equal(c.data.cancelBacktest.status, 'CANCELED');
    assert.match(c.data.cancelBacktest.error, /canceled by/);
    const done = c.data.cancelBacktest.progress.done;
    assert.ok(done < 3);
    // Its job stopped: nothing changes afterwards, and a second cancel is a conflict.
    await sleep(300);
    const later = (await s.gql(GET, { id })).data.backtest;
    assert.equal(later.status, 'CANCELED');
    assert.equal(later.progress.done, done);
    assert.equal(later.revision, c.data.cancelBacktest.revision);
    const twice = await s.gql(CANCEL, { id });
    assert.equal(twice.errors?.[0]?.extensions?.code, 'CONFLICT');
    // Following a canceled backtest shows it as it ended, then completes.
    const seen = await follow(s, id);
    assert.deepEqual(
      seen.map((b) => b.status),
      ['CANCELED'],
    );
  });

  it("answers another environment's key as if the backtest did not exist", async () => {
    const r = await s.gql(START, { i: { gateId, from: new Date(day + HOUR).toISOString(), to: new Date(day + 7 * HOUR).toISOString() } });
    const id = r.data.backtestGate.id;
    await follow(s, id);
    const staging = await s.createKey(['gates:read', 'evaluations:write'], ['staging']);
    const missing = '0190a000-0000-7000-8000-000000000000';

    const read = await s.gql(GET, { id }, staging);
    assert.equal(read.errors, undefined);
    assert.equal(read.data.backtest, null);
    assert.equal((await s.gql(GET, { id: missing }, staging)).data.backtest, null);
    const list = await s.gql('{ backtests { id } }', {}, staging);
    assert.deepEqual(list.data.backtests, []);

    const cancel = await s.gql(CANCEL, { id }, staging);
    const cancelMissing = await s.gql(CANCEL, { id: missing }, staging);
    assert.equal(cancel.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    // The same answer as for an id that never existed, but for the id itself.
    assert.equal(cancel.errors![0]!.message.replace(id, 'ID'), cancelMissing.errors![0]!.message.replace(missing, 'ID'));

    const start = await s.gql(START, { i: { gateId, from: new Date(day + HOUR).toISOString(), to: new Date().toISOString() } }, staging);
    assert.equal(start.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    assert.equal(start.errors?.[0]?.extensions?.field, 'input.gateId');

    const q = subscribeQueue(s.ws(staging), FOLLOW, { id });
    const event = await q.next();
    q.dispose();
    assert.equal(event.errors?.[0]?.extensions?.code, 'NOT_FOUND', JSON.stringify(event));
  });

  it('refuses bad input naming the field', async () => {
    const from = new Date(day + HOUR).toISOString();
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ gateId, from, to: from }, 'input.to', /after from/],
      [{ gateId, from: new Date(day - 8 * 24 * HOUR).toISOString(), to: from }, 'input.to', /at most 7 days/],
      [{ from, to: new Date().toISOString() }, 'input.gateId', /either gateId/],
      [{ configuration: { rules: [fddRule('x')] }, env: 'prod', from, to: new Date().toISOString() }, 'input.service', /service is required/],
      [
        {
          configuration: { rules: [{ name: 'hook', options: { webhook: { url: 'https://hooks.example.com/x' } } }] },
          service: 'shop',
          env: 'prod',
          from,
          to: new Date().toISOString(),
        },
        'input.configuration.rules',
        /judged from stored data/,
      ],
    ];
    for (const [i, field, message] of cases) {
      const r = await s.gql(START, { i });
      assert.equal(r.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(r.errors));
      assert.equal(r.errors?.[0]?.extensions?.field, field, JSON.stringify(r.errors));
      assert.match(r.errors![0]!.message, message);
    }
  });

  it('is started from the gate page and shown in the explorer, the bad deploy flagged', { skip: skipWithout(CHROMIUM) }, async () => {
    const chromium = await launchChromium();
    try {
      const { page } = await chromium.page();
      await page.goto(`${s.url}/gates/${gateId}`);
      await page.getByLabel('API key').fill(ADMIN_KEY);
      await page.getByRole('button', { name: 'Sign in' }).click();
      // datetime-local takes the browser's local time, as the page shows it.
      const local = (ms: number) => {
        const d = new Date(ms);
        const pad = (n: number) => String(n).padStart(2, '0');
        return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
      };
      await page.getByLabel('From').fill(local(day + HOUR));
      await page.getByRole('button', { name: 'Backtest on past deploys' }).click();
      await page.waitForURL(/\/backtests\/[^/]+$/);
      const summary = page.getByTestId('backtest-summary');
      await summary.waitFor({ timeout: 60_000 });
      assert.match((await summary.textContent())!, /1 of 3 deploys would have failed; 1 of them were followed by a rollback-looking event/);
      const rows = page.getByTestId('backtest-deploy');
      assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => [tr.getAttribute('data-version'), tr.getAttribute('data-verdict')])), [
        ['v2', 'PASS'],
        ['v3', 'FAIL'],
        ['v4', 'PASS'],
      ]);
      assert.match((await page.locator('[data-version="v3"]').textContent())!, /errors.*yes, to v2/);
      assert.match((await page.getByTestId('backtest-skipped').textContent())!, /smoke test/);
    } finally {
      await chromium.close();
    }
  });
});

describe('a backtest running when the server stops', () => {
  it('is failed, not resumed, and says so after the restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-backtest-'));
    try {
      const first = await startServer({}, { dir });
      const start = Math.floor((Date.now() - 4 * HOUR) / MIN) * MIN;
      for (const [version, at] of [
        ['v1', start],
        ['v2', start + HOUR],
        ['v3', start + 2 * HOUR],
      ] as const) {
        await sendTraffic(first, { service: 'cart', env: 'prod', version, resource: 'GET /cart', count: 1200, errorsEvery: 20, from: at, spreadMs: HOUR });
      }
      const r = await first.gql(START, {
        i: {
          service: 'cart',
          env: 'prod',
          configuration: { rules: [fddRule('slow', { duration: 7200 })] },
          from: new Date(start + MIN).toISOString(),
          to: new Date().toISOString(),
        },
      });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      const id = r.data.backtestGate.id;
      await first.stop();

      const second = await startServer({}, { dir });
      try {
        const b = (await second.gql(GET, { id })).data.backtest;
        assert.equal(b.status, 'FAILED');
        assert.match(b.error, /interrupted: the server stopped while it ran; start it again/);
        // Nothing picks it up again: it stays as it ended.
        await sleep(200);
        assert.equal((await second.gql(GET, { id })).data.backtest.revision, b.revision);
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('two instances on one PostgreSQL', async () => {
  const noPg = await skipWithoutPg();

  it("one starting (or running) leaves the other's backtest running; its owner renews its lease and finishes it", { skip: noPg, timeout: 120_000 }, async (t) => {
    if (await skipWithoutRedis(t)) return;
    const database = await createPgDatabase();
    // In this order: the servers and the blocking session end before the database is dropped.
    const ends: Array<() => Promise<unknown>> = [];
    t.after(async () => {
      for (const end of ends.reverse()) await end().catch(() => {});
      await database.drop();
    });
    const shared = { postgresUrl: database.url, redisUrl: REDIS_URL, redisChannel: redisChannelPrefix() };
    const a = await startServer({ ...shared, nodeId: 'backtest-a' });
    ends.push(() => a.stop());
    const start = Math.floor((Date.now() - 4 * HOUR) / MIN) * MIN;
    for (const [version, at] of [
      ['v1', start],
      ['v2', start + HOUR],
    ] as const) {
      await sendTraffic(a, { service: 'cart', env: 'prod', version, resource: 'GET /cart', count: 600, errorsEvery: 20, from: at, spreadMs: HOUR });
    }
    // The job's first step reads the APM store: holding that table keeps it running (blocked)
    // for as long as the test needs, whatever the machine's speed.
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    ends.push(() => blocker.end());
    await blocker.query('begin');
    await blocker.query('lock table apm_stats in access exclusive mode');
    const r = await a.gql(START, {
      i: { service: 'cart', env: 'prod', configuration: { rules: [fddRule('slow', { duration: 600 })] }, from: new Date(start + MIN).toISOString(), to: new Date().toISOString() },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    const id: string = r.data.backtestGate.id;
    const row = async () =>
      (await a.sql<{ status: string; node_id: string; lease_expires_at: number }>('select status, node_id, lease_expires_at from backtests where id = ?', id))[0]!;
    const leased = await row();
    assert.deepEqual([leased.status, leased.node_id], ['running', 'backtest-a']);

    const b = await startServer({ ...shared, nodeId: 'backtest-b' });
    ends.push(() => b.stop());
    assert.equal((await row()).status, 'running', "B's start failed A's backtest");
    // A renews it while it runs (every 4 s), so B's rounds, which fail lapsed ones, leave it too.
    console.log('STEP', "await waitFor('A to renew the ");
    await waitFor('A to renew the lease', async () => (await row()).lease_expires_at > leased.lease_expires_at, 20_000);
    assert.equal((await row()).status, 'running');

    console.log('STEP', "await blocker.query('commit');");
    await blocker.query('commit');
    const done = await waitFor(
      'the backtest to end',
      async () => {
        const bt = (await b.gql(GET, { id })).data.backtest;
        return bt.status !== 'RUNNING' && bt;
      },
      60_000,
    );
    assert.equal(done.status, 'DONE', done.error);
    assert.equal(done.progress.total, 1);
  });
});
