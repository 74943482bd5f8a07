// A simulated service for the decision-quality benchmark of faulty-deployment detection
// (test/bench/decisions.ts): twelve endpoints, a canary pod beside nine baseline pods, errors
// that cluster per pod and per 10-s bucket, and a canary whose endpoint mix may differ from
// the baseline's. Every draw comes from a seeded generator, so a cell gives the same figures
// on every run.
import type { BucketRow, InstanceRow } from '../../src/db/apm.ts';

export function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gaussian(u: () => number): number {
  return Math.sqrt(-2 * Math.log(u() || 1e-12)) * Math.cos(2 * Math.PI * u());
}

export function poisson(mean: number, u: () => number): number {
  if (mean <= 0) return 0;
  if (mean > 50) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(u)));
  const l = Math.exp(-mean);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= u();
  } while (p > l);
  return k - 1;
}

export function binomial(n: number, p: number, u: () => number): number {
  if (n === 0 || p <= 0) return 0;
  if (p >= 1) return n;
  if (n * p < 30) return Math.min(n, poisson(n * p, u));
  return Math.min(n, Math.max(0, Math.round(n * p + Math.sqrt(n * p * (1 - p)) * gaussian(u))));
}

/** Gamma(shape, scale 1/shape): mean 1, variance 1/shape (Marsaglia–Tsang; boosted below 1). */
export function gammaMultiplier(shape: number, u: () => number): number {
  const draw = (k: number): number => {
    if (k < 1) return draw(k + 1) * (u() || 1e-12) ** (1 / k);
    const d = k - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = gaussian(u);
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const w = u() || 1e-12;
      if (w < 1 - 0.0331 * x * x * x * x || Math.log(w) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  };
  return draw(shape) / shape;
}

/**
 * Twelve endpoints, Zipf-like: the busiest carries 32% of the requests, the quietest 0.7%;
 * error rates from 0.05% to 8% (the whole service about 1.2%), uncorrelated with traffic as in
 * real services (a login endpoint that rejects a lot, a health check that never fails).
 */
export const ENDPOINTS = [
  { name: 'GET /products', share: 0.32, rate: 0.005 },
  { name: 'GET /cart', share: 0.18, rate: 0.01 },
  { name: 'POST /cart/items', share: 0.11, rate: 0.01 },
  { name: 'GET /search', share: 0.09, rate: 0.002 },
  { name: 'POST /login', share: 0.08, rate: 0.02 },
  { name: 'GET /healthz', share: 0.06, rate: 0.0005 },
  { name: 'POST /checkout', share: 0.05, rate: 0.08 },
  { name: 'GET /orders', share: 0.04, rate: 0.003 },
  { name: 'GET /recommendations', share: 0.03, rate: 0.015 },
  { name: 'POST /payments', share: 0.02, rate: 0.03 },
  { name: 'GET /profile', share: 0.013, rate: 0.001 },
  { name: 'POST /refunds', share: 0.007, rate: 0.05 },
] as const;

/** The endpoint with the highest error rate; a shifted canary serves twice its share. */
export const NOISIEST = 'POST /checkout';

/** Pods: the canary is one, the baseline nine; each pod serves the same request rate. */
export const CANARY_PODS = 1;
export const BASELINE_PODS = 9;
export const SIM_BUCKET_S = 10;

export interface ServiceScenario {
  /** Requests per second of the whole service (both versions). */
  totalRate: number;
  /** Gamma shape of the per-pod, per-bucket error-rate multiplier; null: independent errors. */
  clusterShape: number | null;
  /** The canary serves twice the baseline's share of NOISIEST (others scaled down). */
  mixShift: boolean;
  /** Error-rate multiplier of the canary per endpoint (missing: 1). */
  effect: Record<string, number>;
  /** Share of the canary's requests failing with an error type the baseline never had. */
  newTypeShare: number;
  /** Buckets in the window (90: 15 min). */
  buckets: number;
  /** Incidents both versions share: in 5% of buckets every pod's error rate is 10× (a dependency down). */
  sharedBursts?: boolean;
  /** The canary pod's traffic ramps from 5% to 50% of the service over the window (else 10%). */
  ramp?: boolean;
  /**
   * Mean length, in buckets, of a pod's spell: a pod keeps its Gamma multiplier until it draws
   * a new one, with probability 1/spellBuckets at each bucket, each pod on its own (spells of
   * geometric length: a bad minute on a pod, not aligned with the buckets or the other pods).
   * Missing or 1: a new multiplier every bucket.
   */
  spellBuckets?: number;
  /**
   * No concurrent baseline: the rule sees only the canary in the window and compares it with
   * the hour before (a deploy without a canary; the rule's lookback mode).
   */
  lookback?: boolean;
  /** A service with no hour before (it just started): the simulated hour is dropped, its draws kept so that the window's are the same. */
  noPast?: boolean;
  /** An incident of both versions in the hour before: every pod's error rate times `factor` over buckets [from, to) (negative: before the start). */
  pastIncident?: { from: number; to: number; factor: number };
}

export interface SimBucket {
  rows: BucketRow[];
  /** Each pod's requests and errors over all endpoints (the canary's as version v2). */
  pods: InstanceRow[];
  /** Occurrences of the new error type in this bucket. */
  newType: number;
}

export interface SimRun {
  past: BucketRow[];
  /** The baseline pods' totals per bucket in the hour before. */
  pastPods: InstanceRow[];
  window: SimBucket[];
}

/** The canary's endpoint mix: the baseline's, or with NOISIEST's share doubled. */
export function canaryShares(mixShift: boolean): number[] {
  const base = ENDPOINTS.map((e) => e.share);
  if (!mixShift) return base;
  const i = ENDPOINTS.findIndex((e) => e.name === NOISIEST);
  const doubled = base[i]! * 2;
  const rest = 1 - base[i]!;
  return base.map((s, j) => (j === i ? doubled : (s * (1 - doubled)) / rest));
}

const PAST_BUCKETS = 360;

/**
 * One run: the hour before (baseline only, its aggregate per endpoint) and the window. The load
 * follows a slow wave (±30% over 20 min) with a random phase and 10% bucket-to-bucket jitter;
 * requests are Poisson around it. Each pod's errors in a bucket are binomial at the endpoint's
 * rate times the pod's Gamma multiplier for that bucket, shared by all its endpoints: a bad few
 * seconds of one pod raise its errors everywhere at once. With spellBuckets the multiplier
 * lasts several buckets (a bad minute), so errors cluster across consecutive buckets too.
 */
export function simulateService(sc: ServiceScenario, seed: number): SimRun {
  const u = rng(seed);
  const phase = u() * 2 * Math.PI;
  const perPod = sc.totalRate / (CANARY_PODS + BASELINE_PODS);
  const cShares = canaryShares(sc.mixShift);
  const mult = (): number => (sc.clusterShape === null ? 1 : gammaMultiplier(sc.clusterShape, u));
  const spell = sc.spellBuckets ?? 1;
  // A pod's multiplier lasts until it redraws (every bucket without spells).
  const redraw = (m: number | undefined): number => (m === undefined || spell <= 1 || u() < 1 / spell ? mult() : m);
  /** Each pod's current Gamma multiplier: the canary's first, then the baseline's. */
  const podMult: number[] = [];
  // The hour before: the nine baseline pods alone, with the same clustering, spells and shared
  // incidents as in the window (their spells run on into it), at the window's per-pod rate.
  const past: BucketRow[] = [];
  const pastPods: InstanceRow[] = [];
  for (let t = -PAST_BUCKETS; t < 0; t++) {
    const pods = Array.from({ length: BASELINE_PODS }, (_, p) => ({ version: 'v1', instance: `b${p}`, bucket: t, hits: 0, errors: 0 }));
    const load = (1 + 0.3 * Math.sin(phase + (2 * Math.PI * t * SIM_BUCKET_S) / 1200)) * (1 + 0.1 * gaussian(u));
    const incident = sc.pastIncident && t >= sc.pastIncident.from && t < sc.pastIncident.to ? sc.pastIncident.factor : 1;
    const shared = (sc.sharedBursts && u() < 0.05 ? 10 : 1) * incident;
    for (let p = 0; p < BASELINE_PODS; p++) podMult[CANARY_PODS + p] = redraw(podMult[CANARY_PODS + p]);
    ENDPOINTS.forEach((e) => {
      let hits = 0;
      let errors = 0;
      for (let p = 0; p < BASELINE_PODS; p++) {
        const h = poisson(perPod * e.share * SIM_BUCKET_S * Math.max(load, 0.1), u);
        const x = binomial(h, Math.min(1, e.rate * shared * podMult[CANARY_PODS + p]!), u);
        hits += h;
        errors += x;
        pods[p]!.hits += h;
        pods[p]!.errors += x;
      }
      past.push({ bucket: t, version: 'v1', resource: e.name, primaryTag: '', hits, errors });
    });
    pastPods.push(...pods);
  }
  const window: SimBucket[] = [];
  for (let t = 0; t < sc.buckets; t++) {
    const load = (1 + 0.3 * Math.sin(phase + (2 * Math.PI * t * SIM_BUCKET_S) / 1200)) * (1 + 0.1 * gaussian(u));
    const rows: BucketRow[] = [];
    let newType = 0;
    const shared = sc.sharedBursts && u() < 0.05 ? 10 : 1;
    // With a ramp, the canary pod serves share c of the service and each baseline pod (1 − c)/9.
    const canaryShare = sc.ramp ? 0.05 + (0.45 * t) / Math.max(1, sc.buckets - 1) : CANARY_PODS / (CANARY_PODS + BASELINE_PODS);
    const canaryPod = (sc.totalRate * canaryShare) / CANARY_PODS;
    const baselinePod = (sc.totalRate * (1 - canaryShare)) / BASELINE_PODS;
    for (let p = 0; p < CANARY_PODS; p++) podMult[p] = redraw(podMult[p]);
    for (let p = 0; p < BASELINE_PODS; p++) podMult[CANARY_PODS + p] = redraw(podMult[CANARY_PODS + p]);
    const canaryMult = podMult.slice(0, CANARY_PODS).map((m) => shared * m);
    const baselineMult = podMult.slice(CANARY_PODS).map((m) => shared * m);
    const bPods = baselineMult.map((_, p) => ({ version: 'v1', instance: `b${p}`, bucket: t, hits: 0, errors: 0 }));
    const cPods = canaryMult.map((_, p) => ({ version: 'v2', instance: `c${p}`, bucket: t, hits: 0, errors: 0 }));
    ENDPOINTS.forEach((e, j) => {
      let bHits = 0;
      let bErrors = 0;
      baselineMult.forEach((g, p) => {
        const hits = poisson(baselinePod * e.share * SIM_BUCKET_S * Math.max(load, 0.1), u);
        const x = binomial(hits, Math.min(1, e.rate * g), u);
        bHits += hits;
        bErrors += x;
        bPods[p]!.hits += hits;
        bPods[p]!.errors += x;
      });
      let cHits = 0;
      let cErrors = 0;
      canaryMult.forEach((g, p) => {
        const hits = poisson(canaryPod * cShares[j]! * SIM_BUCKET_S * Math.max(load, 0.1), u);
        const fresh = binomial(hits, sc.newTypeShare, u);
        const x = Math.min(hits, binomial(hits, Math.min(1, e.rate * (sc.effect[e.name] ?? 1) * g), u) + fresh);
        newType += fresh;
        cHits += hits;
        cErrors += x;
        cPods[p]!.hits += hits;
        cPods[p]!.errors += x;
      });
      rows.push({ bucket: t, version: 'v1', resource: e.name, primaryTag: '', hits: bHits, errors: bErrors });
      rows.push({ bucket: t, version: 'v2', resource: e.name, primaryTag: '', hits: cHits, errors: cErrors });
    });
    window.push({ rows, pods: [...bPods, ...cPods], newType });
  }
  return sc.noPast ? { past: [], pastPods: [], window } : { past, pastPods, window };
}
