// Decision quality of faulty-deployment detection, on simulated canary traffic with a
// simulated clock: Tollgate's rule (the same assessFdd the engine runs) next to two naive
// methods on the very same traffic. `npm run bench:decisions` (BENCH_RUNS scales the runs).
//
// Traffic: the canary's whole-service request rate is 1, 10 or 100 req/s, Poisson, over three
// resources (POST /pay 50%, GET /cart 30%, GET /search 20% of requests; baseline error rates
// 1%, 0.5%, 2%), varying ±50% over the window; the stable version serves 9× the canary's
// traffic at the same time (a 10% canary step). The regression multiplies the error rate of
// POST /pay. Checks every 10 s over 30 min.
//
// The second table (test/bench/fddService.ts, BENCH_ONLY=service, BENCH_CELLS=<part of a label>)
// is a twelve-endpoint service with errors clustered per pod and an oracle beside the rule.
import type { BucketRow } from '../../src/db/apm.ts';
import { FDD_DEFAULTS } from '../../src/domain/ruleOptions.ts';
import { assessFdd } from '../../src/engine/fddRule.ts';
import { serviceTable } from './fddService.ts';
import { binomial, poisson, rng } from './fddSim.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const AA_RUNS = Number(process.env.BENCH_AA_RUNS ?? RUNS * 5);
const BUCKET_S = 10;
const WINDOW_BUCKETS = 180; // 30 min
const PAST_BUCKETS = 360; // the hour before
const ALPHA = 0.01;
const RESOURCES = [
  { name: 'POST /pay', weight: 0.5, rate: 0.01 },
  { name: 'GET /cart', weight: 0.3, rate: 0.005 },
  { name: 'GET /search', weight: 0.2, rate: 0.02 },
];
const STABLE_MULTIPLE = 9;
const REGRESSED = 'POST /pay';

interface Scenario {
  canaryRate: number;
  effect: number;
  newTypeShare: number;
}

interface Bucket {
  rows: BucketRow[];
  newType: number;
}

/** One run's traffic: the hour before (stable only) and the window (both versions). */
function simulate(sc: Scenario, seed: number) {
  const u = rng(seed);
  const phase = u() * 2 * Math.PI;
  const bucket = (i: number, withCanary: boolean): Bucket => {
    const load = 1 + 0.5 * Math.sin(phase + (2 * Math.PI * i * BUCKET_S) / 1200);
    const rows: BucketRow[] = [];
    let newType = 0;
    for (const r of RESOURCES) {
      const stable = poisson(STABLE_MULTIPLE * sc.canaryRate * r.weight * BUCKET_S * load, u);
      rows.push({ bucket: i, version: 'v1', resource: r.name, primaryTag: '', hits: stable, errors: binomial(stable, r.rate, u) });
      if (!withCanary) continue;
      const canary = poisson(sc.canaryRate * r.weight * BUCKET_S * load, u);
      const rate = r.name === REGRESSED ? r.rate * sc.effect : r.rate;
      const fresh = binomial(canary, sc.newTypeShare, u);
      newType += fresh;
      rows.push({ bucket: i, version: 'v2', resource: r.name, primaryTag: '', hits: canary, errors: Math.min(canary, binomial(canary, rate, u) + fresh) });
    }
    return { rows, newType };
  };
  const past = Array.from({ length: PAST_BUCKETS }, (_, i) => bucket(i - PAST_BUCKETS, false).rows).flat();
  const window = Array.from({ length: WINDOW_BUCKETS }, (_, i) => bucket(i, true));
  return { past, window };
}

type Method = (past: BucketRow[], window: Bucket[]) => number | null;

/** Tollgate: the engine's own decision function, asked after every bucket. */
const tollgate: Method = (past, window) => {
  let state = {};
  const rows: BucketRow[] = [];
  let newType = 0;
  for (let i = 0; i < window.length; i++) {
    rows.push(...window[i]!.rows);
    newType += window[i]!.newType;
    const result = assessFdd({
      options: { ...FDD_DEFAULTS, alpha: ALPHA, duration: WINDOW_BUCKETS * BUCKET_S },
      version: 'v2',
      primaryTag: null,
      state,
      past,
      rows,
      knownErrorTypes: new Set(['TimeoutError']),
      canaryErrorTypes: newType > 0 ? [{ errorType: 'NewBoom', resource: REGRESSED, count: newType, sampleMessage: null }] : [],
      final: i === window.length - 1,
      windowMinutes: (WINDOW_BUCKETS * BUCKET_S) / 60,
    });
    state = result.state;
    if (result.status === 'fail') return (i + 1) * BUCKET_S;
  }
  return null;
};

/** A fixed-horizon two-proportion z-test per resource and overall, repeated at every check. */
const peekingZ: Method = (_past, window) => {
  const z = 3.09; // one-sided, alpha 0.01 split over 4 tests (Bonferroni), no correction for peeking
  const acc = new Map<string, { ch: number; ce: number; bh: number; be: number }>();
  for (let i = 0; i < window.length; i++) {
    for (const r of window[i]!.rows) {
      for (const key of [r.resource, '*']) {
        const a = acc.get(key) ?? { ch: 0, ce: 0, bh: 0, be: 0 };
        if (r.version === 'v2') (a.ch += r.hits), (a.ce += r.errors);
        else (a.bh += r.hits), (a.be += r.errors);
        acc.set(key, a);
      }
    }
    for (const a of acc.values()) {
      if (a.ch === 0 || a.bh === 0) continue;
      const p1 = a.ce / a.ch;
      const p0 = a.be / a.bh;
      const p = (a.ce + a.be) / (a.ch + a.bh);
      const se = Math.sqrt(p * (1 - p) * (1 / a.ch + 1 / a.bh));
      if (se > 0 && (p1 - p0) / se > z) return (i + 1) * BUCKET_S;
    }
  }
  return null;
};

/**
 * Flagger-style: every minute, the canary's success rate over that minute must be ≥ 98.5%
 * (a threshold set with a margin over the service's normal ~1% errors); five failed checks
 * roll back.
 */
const flaggerThreshold: Method = (_past, window) => {
  let failed = 0;
  for (let i = 5; i < window.length; i += 6) {
    let hits = 0;
    let errors = 0;
    for (let j = i - 5; j <= i; j++) for (const r of window[j]!.rows) if (r.version === 'v2') (hits += r.hits), (errors += r.errors);
    if (hits > 0 && errors / hits > 0.015) failed++;
    if (failed >= 5) return (i + 1) * BUCKET_S;
  }
  return null;
};

const METHODS: Array<[string, Method]> = [
  ['tollgate (mixture SPRT)', tollgate],
  ['z-test at every check', peekingZ],
  ['flagger-style threshold', flaggerThreshold],
];

interface Cell {
  label: string;
  scenario: Scenario;
  runs: number;
}

const cells: Cell[] = [
  ...[1, 10, 100].map((rate) => ({ label: `A/A, ${rate} req/s`, scenario: { canaryRate: rate, effect: 1, newTypeShare: 0 }, runs: rate === 10 ? AA_RUNS : RUNS })),
  ...[1.5, 2, 5].flatMap((effect) =>
    [1, 10, 100].map((rate) => ({ label: `${effect}× on ${REGRESSED}, ${rate} req/s`, scenario: { canaryRate: rate, effect, newTypeShare: 0 }, runs: RUNS })),
  ),
  { label: 'new error type at 0.5%, 10 req/s', scenario: { canaryRate: 10, effect: 1, newTypeShare: 0.005 }, runs: RUNS },
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.floor((s.length - 1) / 2)]!;
};
const fmtTime = (s: number) => (Number.isNaN(s) ? '—' : s === Number.POSITIVE_INFINITY ? '>30 min' : `${(s / 60).toFixed(1)} min`);

const ONLY = process.env.BENCH_ONLY; // 'threeResources' or 'service': one table only

function threeResourceTable(): string {
  const started = performance.now();
  const header = `| scenario | runs | ${METHODS.map(([m]) => `${m}: failed / within 15 min / median time`).join(' | ')} |`;
  const lines = [header, `|---|---|${METHODS.map(() => '---').join('|')}|`];
  for (const cell of cells) {
    const results = METHODS.map(() => [] as Array<number | null>);
    for (let run = 0; run < cell.runs; run++) {
      const { past, window } = simulate(
        cell.scenario,
        1_000_003 * run + Math.round(cell.scenario.canaryRate * 1000 + cell.scenario.effect * 100 + cell.scenario.newTypeShare * 1e5),
      );
      for (const [m, [, method]] of METHODS.entries()) results[m]!.push(method(past, window));
    }
    const cols = results.map((r) => {
      const failed = r.filter((x) => x !== null).length / r.length;
      const early = r.filter((x) => x !== null && x <= 900).length / r.length;
      const times = r.map((x) => (x === null ? Number.POSITIVE_INFINITY : x));
      return `${(100 * failed).toFixed(1)}% / ${(100 * early).toFixed(1)}% / ${fmtTime(median(times))}`;
    });
    lines.push(`| ${cell.label} | ${cell.runs} | ${cols.join(' | ')} |`);
    console.error(`  ${cell.label} done (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  }
  return [
    `Faulty deployment detection on simulated canaries: alpha ${ALPHA}, checks every ${BUCKET_S} s over 30 min.`,
    'A/A rows: "failed" is the false-failure rate (Tollgate promises ≤ alpha). Other rows: power, power within 15 min, median time to fail (over all runs).',
    '',
    ...lines,
  ].join('\n');
}

const out: string[] = [];
if (ONLY !== 'service') out.push(threeResourceTable());
if (ONLY !== 'threeResources') out.push(serviceTable());
console.log(out.join('\n\n'));
