// Several instances as one (issue 14): three `tollgate serve` processes on one PostgreSQL
// database and one Redis channel, next to one instance on PostgreSQL + Redis (the baseline) and
// one on SQLite (for reference), in the same run on the same machine.
//   A. trigger → verdict pushed to a subscriber on another instance, 100 triggers/s round-robin
//      over the instances (target p99 ≤ 100 ms)
//   B. OTLP spans per second accepted, every instance loaded at once
//   C. kill -9 of one of the three with 300 evaluations in progress: time until another instance
//      has taken each of its evaluations over (target ≤ lease 30 s + 5 s), and all 300 PASS
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { createPgDatabase, skipWithoutPg } from '../helpers/pg.ts';
import { REDIS_URL } from '../helpers/redis.ts';
import { BENCH_KEY, type BenchServer, benchClient, fmt, listen, percentile, sleep, UNREACHED_LIMITS } from './lib.ts';
import { eachRequestDistinct, otlpBodies } from './otlpPayload.ts';

const RATE = Number(process.env.BENCH_RATE ?? 100);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const OTLP_SECONDS = Number(process.env.BENCH_DURATION ?? 10);
const OTLP_CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 4);
const SPANS_PER_BATCH = 500;
const IN_PROGRESS = Number(process.env.BENCH_IN_PROGRESS ?? 300);
/** Long enough that the killed instance's evaluations are still running when their lease lapses. */
const WINDOW_S = 45;
const LEASE_S = 30;
/** How long after the last trigger verdicts are still waited for; a later one counts as missing. */
const DRAIN_MS = 10_000;

const here = dirname(fileURLToPath(import.meta.url));
const main = join(here, '../../src/cli/main.ts');
const dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-'));
const children = new Set<ChildProcess>();
// A failed run must not leave servers behind.
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Instance extends BenchServer {
  nodeId: string;
  base: string;
}

/** `tollgate serve` as a user runs it, in its own process: resolves once it prints where it listens. */
async function serve(nodeId: string, env: Record<string, string>): Promise<Instance> {
  const child = spawn(process.execPath, ['--import', 'tsx', main, 'serve'], {
    env: {
      ...process.env,
      ...UNREACHED_LIMITS,
      PORT: '0',
      HOST: '127.0.0.1',
      TOLLGATE_MODE: 'production',
      TOLLGATE_LOG_LEVEL: 'warn',
      TOLLGATE_BOOTSTRAP_KEY: BENCH_KEY,
      TOLLGATE_NODE_ID: nodeId,
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  const base = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d;
      const url = /Tollgate listening on (http:\/\/\S+)/.exec(stderr)?.[1];
      if (url) resolve(url);
    });
    child.once('exit', (code) => reject(new Error(`${nodeId} exited (${code}) before listening:\n${stderr}`)));
  });
  return { ...benchClient(child, `${base}/graphql`), nodeId, base };
}

interface Setup {
  label: string;
  instances: Instance[];
  stop(): Promise<void>;
}

async function sqliteSetup(): Promise<Setup> {
  const one = await serve('bench-sqlite', { TOLLGATE_DB: join(dir, 'bench.db') });
  return { label: 'SQLite, 1 instance (reference)', instances: [one], stop: () => one.stop() };
}

/** `count` instances sharing a fresh database and a Redis channel of their own. */
async function pgSetup(label: string, count: number): Promise<Setup & { url: string; restart(n: number): Promise<void> }> {
  const db = await createPgDatabase();
  const env = { DATABASE_URL: db.url, TOLLGATE_REDIS_URL: REDIS_URL, TOLLGATE_REDIS_CHANNEL: `tollgate-bench:${randomUUID()}` };
  // The first one migrates and adds the bench key; the others start together after it.
  const first = await serve('bench-a', env);
  const others = await Promise.all(['bench-b', 'bench-c'].slice(0, count - 1).map((id) => serve(id, env)));
  const instances = [first, ...others];
  return {
    label,
    instances,
    url: db.url,
    /** Starts instance `n` again (after its kill), under the same node id. */
    async restart(n) {
      instances[n] = await serve(instances[n]!.nodeId, env);
    },
    async stop() {
      await Promise.all(instances.map((i) => i.stop()));
      await db.drop();
    },
  };
}

const createMonitor = async (on: Instance, tag: string) => {
  const d = await on.gql('mutation($t: String!) { createMonitor(input: { name: $t, type: EXTERNAL, tags: [$t] }) { id } }', { t: tag });
  await on.gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', { id: d.createMonitor.id });
};
const evaluate = (on: Instance, service: string, version: string, query: string, duration: number) =>
  on.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
    i: { service, env: 'bench', version, configuration: { rules: [{ name: 'monitors', options: { monitor: { query, duration } } }] } },
  });

/** Sends `count` requests at `rate` per second. */
async function paced(count: number, rate: number, send: (i: number) => Promise<unknown>) {
  const started = performance.now();
  const inflight: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const wait = started + (i * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    inflight.push(send(i));
  }
  await Promise.all(inflight);
}

/** The event-loop delay p99 since the previous read (prom-client resets it on every scrape), ms. */
async function lagP99(instance: Instance): Promise<number> {
  const text = await (await fetch(`${instance.base}/metrics`)).text();
  return 1000 * Number(/^tollgate_nodejs_eventloop_lag_p99_seconds (\S+)/m.exec(text)?.[1]);
}

interface LatencyResult {
  /** Per trigger; Infinity: not received within DRAIN_MS of the last trigger. */
  latencies: number[];
  received: number;
  /** Triggers answered with an error. */
  refused: number;
  perSecond: number;
  lagMs: number;
}

/**
 * Triggers round-robin over the instances; each trigger is timed until its verdict reaches the
 * evaluationEvents subscriber of the next instance (the same one when there is only one).
 */
async function triggerToVerdict(setup: Setup, tag: string): Promise<LatencyResult> {
  const { instances } = setup;
  await createMonitor(instances[0]!, `bench:${tag}`);
  const arrived = instances.map(() => new Map<string, number>());
  const stops = await Promise.all(
    instances.map((instance, n) =>
      listen<{ evaluationEvents: { version: string } }>(
        instance.ws(),
        `subscription { evaluationEvents(filter: { service: ["${tag}"], status: [PASS, FAIL] }) { version } }`,
        (d) => arrived[n]!.has(d.evaluationEvents.version) || arrived[n]!.set(d.evaluationEvents.version, performance.now()),
      ),
    ),
  );
  // A second of warm-up (JIT, pools, prepared plans), not counted.
  await paced(RATE, RATE, (i) => evaluate(instances[i % instances.length]!, tag, `w${i}`, `bench:${tag}`, 0).catch(() => undefined));
  await Promise.all(instances.map(lagP99));
  const sent: number[] = [];
  const count = RATE * SECONDS;
  const refused = new Set<number>();
  await paced(count, RATE, (i) => {
    sent[i] = performance.now();
    // A trigger answered with an error is counted (and its verdict is missing), not fatal.
    return evaluate(instances[i % instances.length]!, tag, `r${i}`, `bench:${tag}`, 0).catch(() => refused.add(i));
  });
  // Until the verdict of every trigger answered has reached the subscriber it is timed on (each
  // subscriber hears every verdict, so counting what one has received says nothing).
  const drained = performance.now() + DRAIN_MS;
  const waiting = () => sent.some((_, i) => !refused.has(i) && !arrived[(i + 1) % instances.length]!.has(`r${i}`));
  while (performance.now() < drained && waiting()) await sleep(100);
  const lagMs = Math.max(...(await Promise.all(instances.map(lagP99))));
  for (const stop of stops) stop();
  const latencies: number[] = [];
  let last = 0;
  for (let i = 0; i < count; i++) {
    const at = arrived[(i + 1) % instances.length]!.get(`r${i}`);
    latencies.push(at === undefined ? Number.POSITIVE_INFINITY : at - sent[i]!);
    if (at === undefined) continue;
    last = Math.max(last, at);
  }
  const received = latencies.filter(Number.isFinite).length;
  return { latencies, received, refused: refused.size, perSecond: (received * 1000) / (last - sent[0]!), lagMs };
}

const { bodies, contentType } = otlpBodies(SPANS_PER_BATCH);

/** Spans per second accepted with every instance loaded at once (OTLP_CONNECTIONS each), protobuf. */
async function otlpRate(setup: Setup): Promise<{ spans: number; failed: number; how: string }> {
  const run = (duration: number) =>
    Promise.all(
      setup.instances.map((i) =>
        autocannon({
          url: `${i.base}/v1/traces`,
          method: 'POST',
          body: bodies.protobuf,
          // Distinct bytes each time: a repeated request would be taken for a retry and not stored.
          requests: [eachRequestDistinct(bodies.protobuf, 'protobuf')],
          duration,
          connections: OTLP_CONNECTIONS,
          headers: { 'content-type': contentType.protobuf, authorization: `Bearer ${BENCH_KEY}` },
        }),
      ),
    );
  await run(2);
  const results = await run(OTLP_SECONDS);
  // Requests answered 2xx only; errors and timeouts are reported, not hidden.
  return {
    spans: results.reduce((sum, r) => sum + (r['2xx'] / OTLP_SECONDS) * SPANS_PER_BATCH, 0),
    // autocannon counts a timeout in `errors` too.
    failed: results.reduce((sum, r) => sum + r.non2xx + r.errors, 0),
    // Which: an answer's status (the servers' logs say why), a timeout, or a connection error.
    how: Object.entries(
      results.reduce<Record<string, number>>((by, r) => {
        for (const [code, { count = 0 }] of Object.entries(r.statusCodeStats ?? {})) if (!code.startsWith('2')) by[code] = (by[code] ?? 0) + count;
        if (r.timeouts) by.timeouts = (by.timeouts ?? 0) + r.timeouts;
        if (r.errors - r.timeouts > 0) by['connection errors'] = (by['connection errors'] ?? 0) + r.errors - r.timeouts;
        return by;
      }, {}),
    )
      .map(([what, n]) => `${what}: ${n}`)
      .join(', '),
  };
}

interface KillResult {
  onVictim: number;
  leaseLeftS: number;
  takenOverS: number;
  finishedS: number;
  statuses: Record<string, number>;
  /** Why the rules that did not pass ended, and who held them. */
  failures: unknown[];
}

/** kill -9 of the last instance with IN_PROGRESS evaluations running across all three. */
async function killOne(setup: Setup & { url: string }): Promise<KillResult> {
  const { instances } = setup;
  const victim = instances.at(-1)!;
  const sql = new pg.Client({ connectionString: setup.url });
  await sql.connect();
  try {
    await createMonitor(instances[0]!, 'bench:kill');
    const created = performance.now();
    for (let i = 0; i < IN_PROGRESS; i += 30) {
      await Promise.all(
        Array.from({ length: Math.min(30, IN_PROGRESS - i) }, (_, j) => evaluate(instances[(i + j) % instances.length]!, 'bench-kill', `k${i + j}`, 'bench:kill', WINDOW_S)),
      );
    }
    const victims = (await sql.query("select id, lease_expires_at from evaluations where service = 'bench-kill' and lease_owner = $1 and finished_at is null", [victim.nodeId]))
      .rows as Array<{
      id: string;
      lease_expires_at: string;
    }>;
    const killedAt = Date.now();
    const t0 = performance.now();
    victim.child.kill('SIGKILL');
    const leaseLeftS = (Math.max(...victims.map((v) => Number(v.lease_expires_at))) - killedAt) / 1000;
    let takenOverS = Number.NaN;
    let finishedS = Number.NaN;
    const deadline = created + (WINDOW_S + LEASE_S + 30) * 1000;
    while (performance.now() < deadline) {
      const { rows } = await sql.query(
        "select count(*) filter (where id = any($2) and lease_owner = $1)::int as held, count(*) filter (where finished_at is null)::int as running from evaluations where service = 'bench-kill'",
        [victim.nodeId, victims.map((v) => v.id)],
      );
      if (Number.isNaN(takenOverS) && rows[0].held === 0) takenOverS = (performance.now() - t0) / 1000;
      if (rows[0].running === 0) {
        finishedS = (performance.now() - created) / 1000;
        break;
      }
      await sleep(200);
    }
    const statuses = Object.fromEntries(
      (await sql.query("select status, count(*)::int as n from evaluations where service = 'bench-kill' group by status")).rows.map((r) => [r.status, r.n]),
    );
    const failures = (
      await sql.query(
        "select r.reason, e.lease_owner, count(*)::int as n from rule_evaluations r join evaluations e on e.id = r.evaluation_id where e.service = 'bench-kill' and r.status <> 'pass' group by 1, 2",
      )
    ).rows;
    return { onVictim: victims.length, leaseLeftS, takenOverS, finishedS, statuses, failures };
  } finally {
    await sql.end();
  }
}

function latencyRow(label: string, r: LatencyResult, baseline: LatencyResult) {
  const p = (q: number) => (Number.isFinite(percentile(r.latencies, q)) ? fmt(percentile(r.latencies, q)) : `> ${DRAIN_MS / 1000} s`).padStart(9);
  const ratio = percentile(r.latencies, 99) / percentile(baseline.latencies, 99);
  const shown = Number.isFinite(ratio) ? `x${ratio.toFixed(2)}` : '-';
  return `  ${label.padEnd(40)} ${`${r.received}/${r.latencies.length}`.padStart(9)} ${p(50)} ${p(95)} ${p(99)} ${r.perSecond.toFixed(0).padStart(6)}/s ${fmt(r.lagMs).padStart(9)}  ${shown}${r.refused > 0 ? `  (${r.refused} triggers answered an error)` : ''}`;
}

const noPg = await skipWithoutPg();
if (noPg) {
  console.log(`cluster: skipped, ${noPg}`);
  process.exit(0);
}

const lines: string[] = [];
/** `BENCH_CLUSTER=single` (or any of sqlite, single, cluster) runs only those setups. */
const setups = new Set((process.env.BENCH_CLUSTER ?? 'sqlite,single,cluster').split(','));
const spans = (label: string, r: { spans: number; failed: number; how: string }, baseline?: { spans: number }) =>
  `  ${label.padEnd(40)} ${r.spans.toFixed(0).padStart(7)} spans/s${baseline ? `  x${(r.spans / baseline.spans).toFixed(2)}` : ''}${r.failed > 0 ? `  (${r.failed} requests failed or timed out; ${r.how})` : ''}`;
const latencyLines: string[] = [];
const spanLines: string[] = [];
let singleLatency: LatencyResult | undefined;
let singleSpans: Awaited<ReturnType<typeof otlpRate>> | undefined;
// Latency first on every fresh setup; on the cluster the kill before it, on a fresh cluster, so it
// does not inherit a backlog (the killed instance is started again for the latency run).
if (setups.has('single')) {
  const single = await pgSetup('PostgreSQL + Redis, 1 instance (baseline)', 1);
  try {
    singleLatency = await triggerToVerdict(single, 'bench-trigger');
    singleSpans = await otlpRate(single);
  } finally {
    await single.stop();
  }
  latencyLines.push(latencyRow(single.label, singleLatency, singleLatency));
  spanLines.push(spans(single.label, singleSpans));
}
if (setups.has('sqlite')) {
  const sqlite = await sqliteSetup();
  try {
    const latency = await triggerToVerdict(sqlite, 'bench-trigger');
    const rate = await otlpRate(sqlite);
    latencyLines.unshift(latencyRow(sqlite.label, latency, singleLatency ?? latency));
    spanLines.unshift(spans(sqlite.label, rate, singleSpans));
  } finally {
    await sqlite.stop();
  }
}
let killLines: string[] = [];
if (setups.has('cluster')) {
  const cluster = await pgSetup('PostgreSQL + Redis, 3 instances', 3);
  try {
    const kill = await killOne(cluster);
    await cluster.restart(cluster.instances.length - 1);
    const clusterLatency = await triggerToVerdict(cluster, 'bench-trigger');
    const clusterSpans = await otlpRate(cluster);
    const p99 = percentile(clusterLatency.latencies, 99);
    latencyLines.push(
      latencyRow(cluster.label, clusterLatency, singleLatency ?? clusterLatency),
      `  cluster p99 ${p99 <= 100 ? 'within target' : `ABOVE target by ${Number.isFinite(p99) ? fmt(p99 - 100) : 'more than the drain time'}`}; rate: verdicts received per second; loop p99: worst instance's event-loop delay`,
    );
    spanLines.push(spans(cluster.label, clusterSpans, singleSpans));
    killLines = [
      `C. kill -9 of one of 3 instances, ${IN_PROGRESS} evaluations in progress (${WINDOW_S} s monitor windows, monitor OK)`,
      `  on the killed instance: ${kill.onVictim}; its leases had ${kill.leaseLeftS.toFixed(1)} s left at the kill`,
      `  all taken over by the others after ${kill.takenOverS.toFixed(1)} s (target ≤ ${LEASE_S + 5} s) ${kill.takenOverS <= LEASE_S + 5 ? 'OK' : 'ABOVE TARGET'}`,
      `  all finished ${kill.finishedS.toFixed(1)} s after the first trigger: ${JSON.stringify(kill.statuses)} ${kill.statuses.pass === IN_PROGRESS ? 'OK' : `NOT ALL PASS: ${JSON.stringify(kill.failures)}`}`,
    ];
  } finally {
    await cluster.stop();
  }
}
lines.push(
  `A. trigger → verdict pushed over graphql-ws to a subscriber on the next instance, ${RATE} triggers/s for ${SECONDS} s, round-robin (target p99 ≤ 100 ms)`,
  `  ${'setup'.padEnd(40)} ${'verdicts'.padStart(9)} ${'p50'.padStart(9)} ${'p95'.padStart(9)} ${'p99'.padStart(9)} ${'rate'.padStart(8)} ${'loop p99'.padStart(9)}  p99 vs baseline`,
  ...latencyLines,
  `B. OTLP/HTTP protobuf, batches of ${SPANS_PER_BATCH} spans, ${OTLP_CONNECTIONS} connections per instance, ${OTLP_SECONDS} s`,
  ...spanLines,
  ...killLines,
);
console.log(lines.join('\n'));
