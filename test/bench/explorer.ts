// `npm run bench -- explorer`: the explorer in Debian's Chromium over 100,000 stored evaluations.
//  1. time to the first rendered page of /evaluations, and of a filtered view (target ≤ 1 s each):
//     from navigation to the first row visible;
//  2. verdict → DOM (target p99 ≤ 250 ms): from the mutation that decides an evaluation (a
//     monitor reported ALERT) to its row's status changing on the live list;
// each beside the same GraphQL requests made by a bare client in the same run (HTTP for the
// page's queries, graphql-ws for the live list's subscription).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Client, createClient } from 'graphql-ws';
import type { Page, Request } from 'playwright-core';
import WebSocket from 'ws';
import { openDb } from '../../src/db/client.ts';
import { launchChromium } from '../browser.ts';
import { BENCH_KEY, fmt, percentile, sleep, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const EVALUATIONS = Number(process.env.EXPLORER_EVALUATIONS ?? 100_000);
const LOADS = Number(process.env.EXPLORER_LOADS ?? 7);
const VERDICTS = Number(process.env.EXPLORER_VERDICTS ?? 200);

const SERVICES = [
  'checkout',
  'payments',
  'search',
  'catalog',
  'cart',
  'auth',
  'profile',
  'orders',
  'shipping',
  'billing',
  'email',
  'reviews',
  'inventory',
  'pricing',
  'gateway',
  'media',
  'ads',
  'reports',
  'notify',
  'recs',
];
const ENVS = ['prod', 'prod', 'prod', 'staging', 'staging', 'dev'];

/**
 * 100,000 decided evaluations over the last 7 days in one transaction, straight into SQLite
 * before the server starts: 20 services, 3 envs (half prod), a version per service and day, 83%
 * PASS, 14% FAIL with a failing rule and its reason, 3% canceled, a tenth dry run.
 */
function fill(dbPath: string): number {
  const started = performance.now();
  const db = openDb(dbPath);
  const sqlite = (db as unknown as { $client: import('better-sqlite3').Database }).$client;
  const insertEvaluation = sqlite.prepare(
    `insert into evaluations (id, gate_id, service, env, identifier, version, primary_tag, dry_run, on_source_error, status, just_in_time, trigger_envs,
       triggered_by_id, triggered_by_name, started_at, decided_at, finished_at, revision) values (?, null, ?, ?, 'default', ?, null, ?, 'fail', ?, 1, null, 'bench', 'bench', ?, ?, ?, 3)`,
  );
  const insertRule = sqlite.prepare(
    `insert into rule_evaluations (id, evaluation_id, rule_id, position, name, type, dry_run, options, status, reason, evidence, started_at, window_starts_at, window_ends_at, finished_at, consecutive_errors)
       values (?, ?, null, ?, ?, ?, 0, ?, ?, ?, null, ?, ?, ?, ?, 0)`,
  );
  const now = Date.now();
  const span = 7 * 86_400_000;
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const uuid = (n: number, kind: number) => `00000000-0000-4000-8${kind}00-${n.toString(16).padStart(12, '0')}`;
  sqlite.transaction(() => {
    for (let i = 0; i < EVALUATIONS; i++) {
      const service = SERVICES[Math.floor(random() * SERVICES.length)]!;
      const env = ENVS[Math.floor(random() * ENVS.length)]!;
      const startedAt = now - span + Math.floor((i / EVALUATIONS) * span);
      const day = Math.floor((startedAt - now + span) / 86_400_000);
      const roll = random();
      const status = roll < 0.83 ? 'pass' : roll < 0.97 ? 'fail' : 'canceled';
      const finishedAt = startedAt + 30_000 + Math.floor(random() * 600_000);
      const id = uuid(i, 1);
      insertEvaluation.run(id, service, env, `v1.${day}.${Math.floor(random() * 4)}`, random() < 0.1 ? 1 : 0, status, startedAt, finishedAt, finishedAt);
      const fdd = random() < 0.3;
      insertRule.run(
        uuid(i, 2),
        id,
        0,
        fdd ? 'new version errors' : `${service} monitors`,
        fdd ? 'faulty_deployment_detection' : 'monitor',
        JSON.stringify(fdd ? { duration: 900 } : { query: `service:${service}`, duration: 600 }),
        status,
        status === 'fail'
          ? fdd
            ? `GET /api/${service}: error rate 4.1% against 0.3% before (e-value 212 ≥ 100)`
            : `monitor ${service} errors is ALERT in region:eu`
          : status === 'canceled'
            ? 'canceled'
            : 'no monitor alerted in the window',
        startedAt,
        startedAt,
        finishedAt,
        finishedAt,
      );
    }
  })();
  sqlite.close();
  return performance.now() - started;
}

interface Captured {
  query: string;
  variables?: Record<string, unknown>;
}

/** Opens `path` signed in; returns ms from navigation to the first evaluation row visible, and the page's GraphQL requests until then. */
async function firstRows(page: Page, url: string): Promise<{ ms: number; requests: Captured[] }> {
  const requests: Captured[] = [];
  const onRequest = (request: Request) => {
    if (request.method() === 'POST' && request.url().endsWith('/graphql')) requests.push(JSON.parse(request.postData() ?? '{}'));
  };
  page.on('request', onRequest);
  const started = Date.now();
  await page.goto(url);
  await page.getByTestId('evaluation-row').first().waitFor({ state: 'visible', timeout: 30_000 });
  const ms = Date.now() - started;
  page.off('request', onRequest);
  return { ms, requests };
}

async function bareHttp(url: string, requests: Captured[]): Promise<number> {
  const started = performance.now();
  await Promise.all(
    requests.map(async (body) => {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_KEY}` }, body: JSON.stringify(body) });
      const json = (await res.json()) as { errors?: unknown };
      if (json.errors) throw new Error(JSON.stringify(json.errors));
    }),
  );
  return performance.now() - started;
}

const summary = (values: number[]) => `median ${fmt(percentile(values, 50))}, max ${fmt(Math.max(...values))}`;

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-explorer-bench-'));
  const dbPath = join(dir, 'explorer.db');
  console.log(`filling ${EVALUATIONS.toLocaleString('en')} evaluations: ${fmt(fill(dbPath))}`);
  const server = await startTollgate({ ...UNREACHED_LIMITS, TOLLGATE_BENCH_DB: dbPath });
  const origin = server.url.replace(/\/graphql$/, '');
  const chromium = await launchChromium();
  try {
    const { context, page } = await chromium.page({ viewport: { width: 1400, height: 900 } });
    await context.addInitScript((key) => sessionStorage.setItem('tollgate.apiKey', key), BENCH_KEY);
    // The first page view builds the explorer's bundle on the server: not what a user waits for twice.
    await firstRows(page, `${origin}/evaluations`);

    const views: Array<[string, string]> = [
      ['/evaluations (last day, newest first)', '/evaluations'],
      ['/evaluations?service=checkout&status=FAIL&range=7d', '/evaluations?service=checkout&status=FAIL&range=7d'],
    ];
    const results: string[] = [];
    for (const [label, path] of views) {
      const browser: number[] = [];
      const bareList: number[] = [];
      const bareAll: number[] = [];
      let requests: Captured[] = [];
      for (let i = 0; i < LOADS; i++) {
        // A new context each time: empty cache, as a first visit (the shell, script and style are fetched too).
        const fresh = await chromium.page({ viewport: { width: 1400, height: 900 } });
        await fresh.context.addInitScript((key) => sessionStorage.setItem('tollgate.apiKey', key), BENCH_KEY);
        const load = await firstRows(fresh.page, `${origin}${path}`);
        await fresh.context.close();
        browser.push(load.ms);
        requests = load.requests;
        // The rows wait for the list query only; the facets and the signed-in check run beside it.
        const list = requests.filter((r) => /\bevaluations\s*\(/.test(r.query));
        bareList.push(await bareHttp(server.url, list));
        bareAll.push(await bareHttp(server.url, requests));
      }
      const line =
        `${label}: first row in Chromium (cold cache) ${summary(browser)}; by a bare HTTP client, the page's list query ${summary(bareList)}, ` +
        `all ${requests.length} of the page's queries at once ${summary(bareAll)}`;
      console.log(line);
      results.push(line);
    }

    // Verdict → DOM: the live list (newest first) and a bare graphql-ws client on the same subscription.
    await page.goto('about:blank');
    await firstRows(page, `${origin}/evaluations?range=1h`);
    await page.evaluate(() => {
      const w = window as unknown as { __changed: Record<string, number> };
      w.__changed = {};
      new MutationObserver(() => {
        for (const row of document.querySelectorAll<HTMLElement>('[data-testid="evaluation-row"][data-status="FAIL"]')) {
          const id = row.dataset.id!;
          w.__changed[id] ??= Date.now();
        }
      }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'] });
    });
    const bareSeen = new Map<string, number>();
    const bareClient: Client = createClient({
      url: server.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${BENCH_KEY}` },
      retryAttempts: 0,
    });
    bareClient.subscribe<{ evaluationEvents: { id: string; status: string } }>(
      { query: 'subscription { evaluationEvents { id status reportedStatus service env version startedAt finishedAt } }' },
      {
        next: (v) => v.data?.evaluationEvents.status === 'FAIL' && !bareSeen.has(v.data.evaluationEvents.id) && bareSeen.set(v.data.evaluationEvents.id, Date.now()),
        error: (e) => console.error(e),
        complete: () => {},
      },
    );
    await sleep(300);
    const toDom: number[] = [];
    const toBare: number[] = [];
    const decidedToDom: number[] = [];
    for (let i = 0; i < VERDICTS; i++) {
      const tag = `bench-verdict:${i}`;
      const monitor = (await server.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', { i: { name: `verdict ${i}`, type: 'EXTERNAL', tags: [tag] } }))
        .createMonitor.id;
      await server.gql('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId: monitor, state: 'OK' } });
      const evaluation = (
        await server.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id status } }', {
          i: {
            service: SERVICES[i % SERVICES.length],
            env: 'prod',
            version: `v-verdict-${i}`,
            configuration: { rules: [{ name: 'verdict', options: { monitor: { query: tag, duration: 600 } } }] },
          },
        })
      ).evaluateGate;
      // The new row is on the page before its verdict comes.
      await page.locator(`[data-testid="evaluation-row"][data-id="${evaluation.id}"]`).waitFor({ timeout: 10_000 });
      const sent = Date.now();
      await server.gql('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId: monitor, state: 'ALERT' } });
      await page.locator(`[data-testid="evaluation-row"][data-id="${evaluation.id}"][data-status="FAIL"]`).waitFor({ timeout: 10_000 });
      for (let k = 0; k < 100 && !bareSeen.has(evaluation.id); k++) await sleep(10);
      const changedAt = await page.evaluate((id) => (window as unknown as { __changed: Record<string, number> }).__changed[id], evaluation.id);
      if (changedAt === undefined) throw new Error(`the page never recorded ${evaluation.id} turning FAIL`);
      const decidedAt = Date.parse((await server.gql('query($id: ID!) { evaluation(id: $id) { decidedAt } }', { id: evaluation.id })).evaluation.decidedAt);
      toDom.push(changedAt - sent);
      decidedToDom.push(changedAt - decidedAt);
      if (bareSeen.has(evaluation.id)) toBare.push(bareSeen.get(evaluation.id)! - sent);
    }
    await bareClient.dispose();
    const p = (values: number[]) => `p50 ${fmt(percentile(values, 50))}, p99 ${fmt(percentile(values, 99))}, max ${fmt(Math.max(...values))}`;
    const verdictLines = [
      `verdict → DOM, ${toDom.length} evaluations (reportMonitorState ALERT sent → row shows FAIL): ${p(toDom)}`,
      `  server's decidedAt → row shows FAIL: ${p(decidedToDom)}`,
      `  same mutation → bare graphql-ws client's evaluationEvents FAIL event: ${p(toBare)}`,
    ];
    for (const line of verdictLines) console.log(line);
  } finally {
    await chromium.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
