// The realistic-service table of `npm run bench:decisions`: Tollgate's rule (assessFdd, the
// engine's own decision function) on the twelve-endpoint service of fddSim.ts, next to an
// oracle that knows which endpoint regressed, by how much, and how clustered the errors are.
import type { BucketRow, InstanceRow } from '../../src/db/apm.ts';
import { logShareRatio, upperRate } from '../../src/domain/fdd.ts';
import { FDD_DEFAULTS } from '../../src/domain/ruleOptions.ts';
import { assessFdd } from '../../src/engine/fddRule.ts';
import { BASELINE_PODS, CANARY_PODS, ENDPOINTS, NOISIEST, type ServiceScenario, SIM_BUCKET_S, type SimRun, simulateService } from './fddSim.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const AA_RUNS = Number(process.env.BENCH_AA_RUNS ?? RUNS * 5);
const ALPHA = 0.01;
const WINDOW_BUCKETS = 90; // 15 min
const NEW_TYPE_RESOURCE = 'GET /cart';

/** Seconds until the method failed the canary, or null. */
type Method = (run: SimRun, sc: ServiceScenario) => number | null;

/** The oracle's threshold when it must also watch the other 11 endpoints (Bonferroni): log(12/alpha). */
const EVERY_ENDPOINT = Math.log(ENDPOINTS.length / ALPHA);

/** BENCH_INSTANCES=0: spans without an instance attribute (the rule's spells factor alone). */
const WITH_INSTANCES = process.env.BENCH_INSTANCES !== '0';

const tollgate: Method = ({ past, pastPods, window }, sc) => {
  let state = {};
  const rows: BucketRow[] = [];
  const pods: InstanceRow[] = [];
  let newType = 0;
  for (let i = 0; i < window.length; i++) {
    for (const r of window[i]!.rows) if (!sc.lookback || r.version === 'v2') rows.push(r);
    for (const r of window[i]!.pods) if (!sc.lookback || r.version === 'v2') pods.push(r);
    newType += window[i]!.newType;
    const result = assessFdd({
      options: { ...FDD_DEFAULTS, alpha: ALPHA, duration: window.length * SIM_BUCKET_S },
      version: 'v2',
      primaryTag: null,
      state,
      past,
      rows,
      instances: WITH_INSTANCES ? { past: pastPods, rows: pods } : undefined,
      knownErrorTypes: new Set(['TimeoutError']),
      canaryErrorTypes: newType > 0 ? [{ errorType: 'NewBoom', resource: NEW_TYPE_RESOURCE, count: newType, sampleMessage: null }] : [],
      final: i === window.length - 1,
      windowMinutes: (window.length * SIM_BUCKET_S) / 60,
    });
    state = result.state;
    if (result.status === 'fail') return (i + 1) * SIM_BUCKET_S;
  }
  return null;
};

/**
 * The oracle: one likelihood-ratio martingale with the true alternative, on exactly the
 * endpoints that regressed, with the true clustering. In bucket t, given each regressed
 * endpoint's errors E_j and the canary's share of its requests s_j, the canary's errors among
 * them are beta-binomial with mean Σ E_j p_j(r) / Σ E_j (p_j(r) = r s_j / (r s_j + 1 − s_j)) and
 * concentration ν = shape × pods (1 canary pod against 9 of equal traffic: Gamma–Poisson
 * counts conditioned on their sum); ν = ∞ without clustering. It rejects at 1/alpha (Ville),
 * which is the fastest any test valid at alpha can be, on average, against this alternative.
 * For a new error type it is the Poisson likelihood ratio of the true rate against the highest
 * rate the baseline's requests could have hidden. With `threshold` log(12/alpha) it is the same
 * test made to pay for not knowing which of the twelve endpoints to watch.
 */
const oracle = ({ past, window }: SimRun, sc: ServiceScenario, threshold = Math.log(1 / ALPHA)): number | null => {
  const nu = sc.clusterShape === null ? Number.POSITIVE_INFINITY : sc.clusterShape * (CANARY_PODS + BASELINE_PODS);
  const regressed = Object.entries(sc.effect).filter(([, r]) => r !== 1);
  let logL = 0;
  let baselineRequests = past.reduce((n, r) => n + r.hits, 0);
  let canaryRequests = 0;
  let newType = 0;
  for (let i = 0; i < window.length; i++) {
    const b = window[i]!;
    if (sc.newTypeShare > 0) {
      for (const r of b.rows) r.version === 'v2' ? (canaryRequests += r.hits) : (baselineRequests += r.hits);
      newType += b.newType;
      const q0 = upperRate(0, baselineRequests);
      const q1 = sc.newTypeShare;
      if (newType * Math.log(q1 / q0) - canaryRequests * (q1 - q0) >= threshold) return (i + 1) * SIM_BUCKET_S;
      continue;
    }
    let x = 0;
    let total = 0;
    let mean1 = 0;
    let mean0 = 0;
    for (const [name, ratio] of regressed) {
      const c = b.rows.find((r) => r.resource === name && r.version === 'v2')!;
      const s = b.rows.find((r) => r.resource === name && r.version === 'v1')!;
      const errors = c.errors + s.errors;
      if (errors === 0 || c.hits === 0 || s.hits === 0) continue;
      const share = c.hits / (c.hits + s.hits);
      x += c.errors;
      total += errors;
      mean0 += errors * share;
      mean1 += (errors * ratio * share) / (ratio * share + 1 - share);
    }
    if (total === 0) continue;
    logL += logShareRatio(x, total - x, mean1 / total, mean0 / total, nu);
    if (logL >= threshold) return (i + 1) * SIM_BUCKET_S;
  }
  return null;
};

interface Cell {
  label: string;
  scenario: ServiceScenario;
  runs: number;
  aa: boolean;
}

const base = { clusterShape: 2, mixShift: false, effect: {}, newTypeShare: 0, buckets: WINDOW_BUCKETS } satisfies Partial<ServiceScenario>;
const shapeLabel = (k: number | null) => (k === null ? 'independent errors' : `clustered (shape ${k})`);
const ALL = Object.fromEntries(ENDPOINTS.map((e) => [e.name, 3]));

export const SERVICE_CELLS: Cell[] = [
  ...[20, 50, 100, 200].flatMap((totalRate) =>
    [null, 0.5, 2].flatMap((clusterShape) =>
      [false, true].map((mixShift) => ({
        label: `A/A, ${totalRate} req/s, ${shapeLabel(clusterShape)}${mixShift ? `, canary mix shifted (2× ${NOISIEST})` : ''}`,
        scenario: { ...base, totalRate, clusterShape, mixShift },
        runs: AA_RUNS,
        aa: true,
      })),
    ),
  ),
  {
    label: 'A/A, 100 req/s, clustered (shape 2), incidents shared by both versions (5% of buckets at 10×)',
    scenario: { ...base, totalRate: 100, sharedBursts: true },
    runs: AA_RUNS,
    aa: true,
  },
  { label: 'A/A, 100 req/s, clustered (shape 2), canary ramping from 5% to 50% of traffic', scenario: { ...base, totalRate: 100, ramp: true }, runs: AA_RUNS, aa: true },
  ...[20, 50, 100, 200].map((totalRate) => ({
    label: `2× on POST /cart/items (11%, 1% errors), ${totalRate} req/s`,
    scenario: { ...base, totalRate, effect: { 'POST /cart/items': 2 } },
    runs: RUNS,
    aa: false,
  })),
  {
    label: '2× on POST /cart/items (11%), 100 req/s, shape 0.5',
    scenario: { ...base, totalRate: 100, clusterShape: 0.5, effect: { 'POST /cart/items': 2 } },
    runs: RUNS,
    aa: false,
  },
  {
    label: '2× on POST /cart/items (11%), 100 req/s, independent',
    scenario: { ...base, totalRate: 100, clusterShape: null, effect: { 'POST /cart/items': 2 } },
    runs: RUNS,
    aa: false,
  },
  { label: '2× on GET /products (32%, 0.5% errors), 100 req/s', scenario: { ...base, totalRate: 100, effect: { 'GET /products': 2 } }, runs: RUNS, aa: false },
  { label: '5× on POST /cart/items (11%), 100 req/s', scenario: { ...base, totalRate: 100, effect: { 'POST /cart/items': 5 } }, runs: RUNS, aa: false },
  { label: '3× on GET /products (32%), 100 req/s', scenario: { ...base, totalRate: 100, effect: { 'GET /products': 3 } }, runs: RUNS, aa: false },
  { label: '2× on POST /checkout (5%, 8% errors), 100 req/s', scenario: { ...base, totalRate: 100, effect: { 'POST /checkout': 2 } }, runs: RUNS, aa: false },
  { label: '5× on POST /cart/items (11%), 20 req/s', scenario: { ...base, totalRate: 20, effect: { 'POST /cart/items': 5 } }, runs: RUNS, aa: false },
  { label: '3× on every endpoint, 5 req/s', scenario: { ...base, totalRate: 5, effect: ALL }, runs: RUNS, aa: false },
  { label: '3× on every endpoint, 20 req/s', scenario: { ...base, totalRate: 20, effect: ALL }, runs: RUNS, aa: false },
  { label: 'new error type at 0.5% of canary requests, 10 canary req/s', scenario: { ...base, totalRate: 100, newTypeShare: 0.005 }, runs: RUNS, aa: false },
  // A pod's bad spell lasting longer than a bucket: errors correlated across consecutive buckets
  // (last, so that the cells above keep their seeds).
  ...[
    [3, '30-s'],
    [6, '1-min'],
    [30, '5-min'],
  ].flatMap(([spellBuckets, length]) =>
    [
      [100, 0.5],
      [200, 2],
    ].map(([totalRate, clusterShape]) => ({
      label: `A/A, ${totalRate} req/s, clustered (shape ${clusterShape}), ${length} spells per pod`,
      scenario: { ...base, totalRate: totalRate as number, clusterShape: clusterShape as number, spellBuckets: spellBuckets as number },
      runs: AA_RUNS,
      aa: true,
    })),
  ),
  // No concurrent baseline: the canary against the hour before (quasi-Poisson on its dispersion).
  ...(
    [
      [100, null, 1],
      [100, 0.5, 1],
      [200, 2, 1],
      [100, 0.5, 6],
    ] as const
  ).map(([totalRate, clusterShape, spellBuckets]) => ({
    label: `A/A, ${totalRate} req/s, ${shapeLabel(clusterShape)}${spellBuckets > 1 ? ', 1-min spells per pod' : ''}, no concurrent baseline (the hour before)`,
    scenario: { ...base, totalRate, clusterShape, spellBuckets, lookback: true },
    runs: AA_RUNS,
    aa: true,
  })),
  {
    label: '5× on POST /cart/items (11%), 100 req/s, no concurrent baseline (oracle: with it)',
    scenario: { ...base, totalRate: 100, effect: { 'POST /cart/items': 5 }, lookback: true },
    runs: RUNS,
    aa: false,
  },
  // What allowing for spells costs where they are (last, so that the cells above keep their seeds).
  ...([6, 30] as const).map((spellBuckets) => ({
    label: `5× on POST /cart/items (11%), 100 req/s, clustered (shape 0.5), ${spellBuckets === 6 ? '1-min' : '5-min'} spells per pod (oracle: without them)`,
    scenario: { ...base, totalRate: 100, clusterShape: 0.5, spellBuckets, effect: { 'POST /cart/items': 5 } },
    runs: RUNS,
    aa: false,
  })),
  // A service that just started: no hour before, so the spells factor and placebo pods have the window alone.
  {
    label: 'A/A, 100 req/s, clustered (shape 0.5), 5-min spells per pod, no hour before (a new service)',
    scenario: { ...base, totalRate: 100, clusterShape: 0.5, spellBuckets: 30, noPast: true },
    runs: AA_RUNS,
    aa: true,
  },
  {
    label: '5× on POST /cart/items (11%), 100 req/s, no hour before (a new service)',
    scenario: { ...base, totalRate: 100, effect: { 'POST /cart/items': 5 }, noPast: true },
    runs: RUNS,
    aa: false,
  },
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.floor((s.length - 1) / 2)]!;
};
const fmtTime = (s: number) => (Number.isNaN(s) ? '—' : s === Number.POSITIVE_INFINITY ? '>15 min' : `${(s / 60).toFixed(1)} min`);
/** Upper end of the Wilson 95% interval of a proportion. */
export const wilsonUpper = (k: number, n: number) => {
  const z = 1.96;
  const p = k / n;
  return (p + (z * z) / (2 * n) + z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / (1 + (z * z) / n);
};

export function serviceTable(filter = process.env.BENCH_CELLS): string {
  const started = performance.now();
  const lines = [
    '| scenario | runs | tollgate: failed (95% upper) / within 15 min / median time | oracle: failed / within 15 min / median time | tollgate ÷ oracle: power within 15 min, median time | oracle watching all 12 endpoints (log(12/alpha)): within 15 min / median time |',
    '|---|---|---|---|---|---|',
  ];
  SERVICE_CELLS.forEach((cell, index) => {
    if (filter && !filter.split('|').some((part) => cell.label.includes(part))) return;
    const t: Array<number | null> = [];
    const o: Array<number | null> = [];
    const o12: Array<number | null> = [];
    const oneEndpoint = Object.keys(cell.scenario.effect).length === 1;
    for (let run = 0; run < cell.runs; run++) {
      const sim = simulateService(cell.scenario, 7_000_003 * run + 7919 * (index + 1));
      t.push(tollgate(sim, cell.scenario));
      if (!cell.aa) o.push(oracle(sim, cell.scenario));
      if (oneEndpoint) o12.push(oracle(sim, cell.scenario, EVERY_ENDPOINT));
    }
    const stats = (r: Array<number | null>) => {
      const failed = r.filter((x) => x !== null).length;
      const early = r.filter((x) => x !== null && x <= 900).length / r.length;
      const time = median(r.map((x) => (x === null ? Number.POSITIVE_INFINITY : x)));
      return { failed, early, time };
    };
    const ts = stats(t);
    const tcol = `${((100 * ts.failed) / cell.runs).toFixed(1)}%${cell.aa ? ` (${(100 * wilsonUpper(ts.failed, cell.runs)).toFixed(1)}%)` : ''} / ${(100 * ts.early).toFixed(1)}% / ${fmtTime(ts.time)}`;
    let ocol = '—';
    let ratio = '—';
    let o12col = '—';
    if (oneEndpoint) {
      const os = stats(o12);
      o12col = `${(100 * os.early).toFixed(1)}% / ${fmtTime(os.time)}`;
    }
    if (!cell.aa) {
      const os = stats(o);
      ocol = `${((100 * os.failed) / cell.runs).toFixed(1)}% / ${(100 * os.early).toFixed(1)}% / ${fmtTime(os.time)}`;
      const timeRatio = Number.isFinite(ts.time) && Number.isFinite(os.time) ? (ts.time / os.time).toFixed(2) : Number.isFinite(os.time) ? '>' + (900 / os.time).toFixed(2) : '—';
      ratio = `${os.early > 0 ? (ts.early / os.early).toFixed(2) : '—'}, ${timeRatio}`;
    }
    lines.push(`| ${cell.label} | ${cell.runs} | ${tcol} | ${ocol} | ${ratio} | ${o12col} |`);
    console.error(`  ${cell.label} done (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  });
  return [
    `Twelve-endpoint service (test/bench/fddSim.ts): canary 1 pod of 10, alpha ${ALPHA}, checks every ${SIM_BUCKET_S} s over 15 min; power cells clustered with shape 2 unless told.`,
    'A/A rows: false-failure rate with the upper end of its 95% interval. Other rows: power, power within 15 min, median time to fail (over all runs).',
    '',
    ...lines,
  ].join('\n');
}
