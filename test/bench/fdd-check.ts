// What per-instance (per-pod) counts add to one FDD check: the runner's own check
// (fddRunner.check, its SQLite reads and the statistics) in this process, on the same traffic
// stored without instances, spread over 10 pods and over 50 pods (a tenth of them the canary's).
// Per setup: the time of a rule's first check (it reads the per-pod hour before, cached per
// process from then on: every evaluation here starts one bucket later, so each first check
// misses the cache as a new deploy's does), the time of its later checks (one per bucket
// through the window, the window's per-pod rows read each time), and the event-loop delay while
// they run back to back, yielding between checks as the engine's queue and a backtest do.
// The setups take turns, evaluation by evaluation, so that a change in the machine's load
// falls on all three; figures are printed as ratios against the setup without pods.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { openDb } from '../../src/db/client.ts';
import { getEvaluation, getRuleEvaluation } from '../../src/db/evaluations.ts';
import type { Deps } from '../../src/domain/deps.ts';
import { fddRunner, SETTLE_MS } from '../../src/engine/fddRule.ts';
import { ingestRequests } from '../../src/sources/apmWriter.ts';
import type { RequestSpan } from '../../src/sources/otlp.ts';
import { recorded, T0, TestClock, trigger, unitDeps } from '../helpers/engine.ts';
import { rng } from './fddSim.ts';
import { percentile } from './lib.ts';

/** Measured evaluations per setup (one more, first, warms up and is not counted). */
const EVALUATIONS = Number(process.env.BENCH_FDD_EVALUATIONS ?? 6);
const RESOURCES = Number(process.env.BENCH_FDD_RESOURCES ?? 10);
/** Requests per minute of the baseline version v1, over all resources; the canary v2 gets a tenth of it. */
const PER_MINUTE = Number(process.env.BENCH_FDD_PER_MINUTE ?? 1200);
const WINDOW_S = Number(process.env.BENCH_FDD_WINDOW_S ?? 900);
const SETUPS = [0, 10, 50];
const MIN = 60_000;
const BUCKET_MS = 10_000;

interface Setup {
  pods: number;
  deps: Deps;
  clock: TestClock;
  first: number[];
  later: number[];
  /** Event-loop delay while its measured checks ran, in µs. */
  lag: RecordableHistogram;
  placebo: unknown;
}

const dir = mkdtempSync(join(tmpdir(), 'tollgate-fdd-check-'));
const setups: Setup[] = [];

/**
 * The service's traffic, 1% errors: v1 on every pod in the hour before, then from T0 on v1 on
 * nine pods in ten and the canary v2 on the others. The spans are the same in every setup (as
 * many per resource, evenly spread, the same ones failing), each sent by a pod drawn at random
 * (seeded: the same on every run); without pods they carry no instance. Every evaluation's
 * window, each one bucket later, is covered. Stored by ingestRequests, as OTLP ingestion stores
 * a request's spans, one request per version and resource.
 */
async function store(pods: number): Promise<Setup> {
  const clock = new TestClock();
  const deps = unitDeps(openDb(join(dir, `pods-${pods}.sqlite`)), clock);
  const canaryPods = pods === 0 ? 0 : Math.max(1, Math.round(pods / 10));
  const names = (version: string, n: number) => (n === 0 ? [''] : Array.from({ length: n }, (_, i) => `checkout-${version}-${i}`));
  const send = async (version: string, instances: string[], from: number, minutes: number, perMinute: number) => {
    const count = Math.round((perMinute * minutes) / RESOURCES);
    const errors = count / 100;
    const pick = rng(instances.length * 1000 + RESOURCES);
    for (let r = 0; r < RESOURCES; r++) {
      const spans: RequestSpan[] = [];
      for (let i = 0; i < count; i++) {
        const failed = Math.floor(((i + 1) * errors) / count) > Math.floor((i * errors) / count);
        spans.push({
          service: 'checkout',
          env: 'prod',
          version,
          resource: `GET /r${r}`,
          primaryTag: '',
          instance: instances[Math.floor(pick() * instances.length)]!,
          startMs: Math.floor(from + (i * minutes * MIN) / count),
          durationMs: 3,
          error: failed,
          errorType: failed ? 'TimeoutError' : null,
          errorMessage: failed ? 'boom' : null,
        });
      }
      await ingestRequests(deps, spans);
    }
  };
  const windowMinutes = (WINDOW_S * 1000 + SETTLE_MS + (EVALUATIONS + 1) * BUCKET_MS) / MIN;
  await send('v1', names('v1', pods), T0 - 60 * MIN, 60, PER_MINUTE);
  await send('v1', pods === 0 ? [''] : names('v1', pods).slice(canaryPods), T0, windowMinutes, PER_MINUTE);
  await send('v2', names('v2', canaryPods), T0, windowMinutes, PER_MINUTE / 10);
  return { pods, deps, clock, first: [], later: [], lag: createHistogram(), placebo: null };
}

/**
 * Records into `h` how late a 1-ms timer fires, again and again until stopped: the event-loop
 * delay (as monitorEventLoopDelay, which cannot be paused while other setups run: re-enabled,
 * it counts the pause as delay).
 */
function probeLag(h: RecordableHistogram): () => void {
  let last = performance.now();
  let timer: NodeJS.Timeout;
  const tick = () => {
    const now = performance.now();
    h.record(Math.max(1, Math.round((now - last - 1) * 1000)));
    last = now;
    timer = setTimeout(tick, 1);
  };
  timer = setTimeout(tick, 1);
  return () => clearTimeout(timer);
}

/** One FDD rule from the start of its window until its final check; `measured` false for the warm-up. */
async function evaluation(s: Setup, start: number, measured: boolean): Promise<void> {
  s.clock.ms = start;
  const e = await trigger(s.deps, [{ name: 'fdd', options: { faultyDeploymentDetection: { duration: WINDOW_S } } }], { version: 'v2' });
  const row = (await recorded(s.deps.db, e.id)).rules[0]!;
  const rule = (await getRuleEvaluation(s.deps.db, row.id))!;
  const evaluationRow = (await getEvaluation(s.deps.db, e.id))!;
  let state = rule.state;
  const stopProbe = measured ? probeLag(s.lag) : () => {};
  try {
    for (let k = 1, at = fddRunner.plan(rule.options, new Date(start)).nextCheckAt.getTime(); ; k++) {
      s.clock.ms = at;
      await nextTurn();
      const started = performance.now();
      const result = await fddRunner.check(s.deps, { rule: { ...rule, state }, evaluation: evaluationRow, now: s.clock.now() });
      const ms = performance.now() - started;
      if (measured) (k === 1 ? s.first : s.later).push(ms);
      state = result.state ?? state;
      if (result.status !== 'in_progress') {
        if (result.status !== 'pass') throw new Error(`${s.pods} pods: the rule ended ${result.status}: ${result.reason}`);
        s.placebo = (result.evidence as { clustering?: { placebo?: unknown } }).clustering?.placebo ?? null;
        return;
      }
      at = result.nextCheckAt.getTime();
    }
  } finally {
    stopProbe();
  }
}

try {
  const ingestStarted = performance.now();
  for (const pods of SETUPS) setups.push(await store(pods));
  console.log(
    `checkout: ${RESOURCES} resources, v1 ${PER_MINUTE} requests/min, canary v2 ${PER_MINUTE / 10}/min, 1% errors, the hour before and a ${WINDOW_S / 60}-min window; ` +
      `stored without pods, over 10 and over 50 pods (a tenth the canary's) in ${((performance.now() - ingestStarted) / 1000).toFixed(0)} s (file SQLite)`,
  );
  const count = (s: Setup, table: string) => (s.deps.db.$client.prepare(`select count(*) as n from ${table}`).get() as { n: number }).n;
  console.log(`  rows (apm_stats, apm_instance_stats): ${setups.map((s) => `${s.pods} pods ${count(s, 'apm_stats')}, ${count(s, 'apm_instance_stats')}`).join('; ')}`);
  for (let r = 0; r <= EVALUATIONS; r++) for (const s of setups) await evaluation(s, T0 + r * BUCKET_MS, r > 0);

  const median = (v: number[]) => percentile(v, 50);
  const figures = setups.map((s) => ({
    s,
    first: median(s.first),
    later: median(s.later),
    laterP99: percentile(s.later, 99),
    lagMax: s.lag.max / 1e3,
    lagP99: s.lag.percentile(99) / 1e3,
  }));
  const base = figures[0]!;
  const ms = (v: number) => `${v.toFixed(1).padStart(6)} ms`;
  const x = (v: number, b: number) => `×${(v / b).toFixed(2)}`.padStart(6);
  console.log(`${EVALUATIONS} evaluations per setup, ${base.s.later.length / EVALUATIONS + 1} checks each; check times are medians`);
  for (const f of figures) {
    const name = f.s.pods === 0 ? 'no pods' : `${f.s.pods} pods`;
    const ratios =
      f === base ? '' : `  | ${x(f.first, base.first)} ${x(f.later, base.later)} ${x(f.laterP99, base.laterP99)} ${x(f.lagMax, base.lagMax)} ${x(f.lagP99, base.lagP99)}`;
    console.log(`  ${name.padEnd(8)} first check ${ms(f.first)}, later ${ms(f.later)} (p99 ${ms(f.laterP99)}); lag max ${ms(f.lagMax)}, p99 ${ms(f.lagP99)}${ratios}`);
  }
  console.log('  (ratios against no pods: first check, later, later p99, lag max, lag p99)');
  for (const f of figures.slice(1)) console.log(`  ${f.s.pods} pods, last check's placebo: ${JSON.stringify(f.s.placebo)}`);
} finally {
  for (const s of setups) s.deps.db.$client.close();
  rmSync(dir, { recursive: true, force: true });
}
