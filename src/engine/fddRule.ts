// The faulty_deployment_detection rule: the new version's error rate per resource, per
// primary-tag value and in aggregate against the other versions of the service, and error
// types the baseline never had, with the anytime-valid tests of src/domain/fdd.ts.
import { type BucketRow, bucketCounts, carriesPrimaryTag, errorTypes, type InstanceRow, instanceCounts, primaryTagsOf } from '../db/apm.ts';
import { APM_BUCKET_MS } from '../db/schema.ts';
import type { Deps } from '../domain/deps.ts';
import {
  addPlaceboBlock,
  concentration,
  type DispersionCell,
  type InstanceCount,
  logEAboveRate,
  logEStratified,
  MIN_NEW_TYPE_COUNT,
  NEW_TYPE_GRID,
  type PlaceboSums,
  placeboInflation,
  ratioGrid,
  requestsNeeded,
  type StratumCell,
  temporalInflation,
  upperRate,
  withinBucketCorrelation,
} from '../domain/fdd.ts';
import type { FddRuleOptions } from '../domain/ruleOptions.ts';
import { apmKey, type CheckResult, type RuleRunner } from './runner.ts';

/** The baseline's past: where a past baseline's rate and the known error types come from. */
const LOOKBACK_MS = 60 * 60_000;
const ERROR_TYPE_LOOKBACK_MS = 24 * 60 * 60_000;
/** Exporters batch spans for a few seconds; a bucket is read once this long past its end. */
export const SETTLE_MS = 5_000;
/** How often the rule looks without new spans (buckets completing). */
const CHECK_EVERY_MS = APM_BUCKET_MS;
/** Resources and tag values tested one by one; the rest share one test. */
const MAX_RESOURCES = 50;
const MAX_TAGS = 20;
/** New error types considered, each with an equal share of their part of alpha. */
const MAX_NEW_TYPES = 10;

/**
 * The tests and their shares of alpha. Resources (and tag values) are numbered in the order
 * Tollgate first saw them (the hour before the start first, busiest first) and the numbering
 * is kept in the rule's state: the j-th resource seen after the start gets 1/(j(j+1)) of the
 * newcomers' budget, so the family may grow while the shares still add up to at most alpha.
 */
type Family = {
  resources: string[];
  knownResources: number;
  /** Requests of each known resource in the hour before the start: half their budget follows it. */
  knownTraffic?: number[];
  tags: string[];
  knownTags: number;
  /** Whether primary-tag values get tests (and their budget), decided once at the start. */
  withTags: boolean;
  /** New error types in the order they were first seen: each keeps its share. */
  errorTypes: string[];
  /** Concurrent or past baseline, fixed once the canary has traffic: one e-process per test. */
  mode?: 'concurrent' | 'lookback';
};

interface Test {
  scope: 'resource' | 'primary_tag' | 'aggregate';
  name: string;
  /** Its share of the error-rate budget. */
  share: number;
  keep: (row: { resource: string; primaryTag: string }) => boolean;
}

/** One side's requests and errors (the canary's or the baseline's) in a test. */
interface RequestCounts {
  hits: number;
  errors: number;
}

const pct = (x: number) => `${(100 * x).toFixed(x < 0.001 ? 3 : 2)}%`;
const rate = (a: RequestCounts) => (a.hits > 0 ? a.errors / a.hits : 0);
/** An e-value for a reason, from its log: beyond e^50 the digits say nothing more. */
const formatEValue = (logE: number) => (logE > 50 ? `e^${logE.toFixed(0)}` : Number(Math.exp(logE).toPrecision(3)).toString());

function resourceAllowed(o: FddRuleOptions, resource: string): boolean {
  if (o.allowedResources) return o.allowedResources.includes(resource);
  if (o.excludedResources) return !o.excludedResources.includes(resource);
  return true;
}

function logSumExp(xs: number[]): number {
  const m = Math.max(...xs);
  if (!Number.isFinite(m)) return m;
  let sum = 0;
  for (const x of xs) sum += Math.exp(x - m);
  return m + Math.log(sum);
}

/** Names and requests, busiest first (ties by name), of the rows the rule may look at. */
function trafficOf(rows: readonly BucketRow[], key: (r: BucketRow) => string | string[], o: FddRuleOptions): Array<[string, number]> {
  const hits = new Map<string, number>();
  for (const r of rows) {
    if (!resourceAllowed(o, r.resource)) continue;
    // A row carries one value of each primary tag: it counts for each of them.
    for (const k of [key(r)].flat()) if (k) hits.set(k, (hits.get(k) ?? 0) + r.hits);
  }
  return [...hits].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
}

const byTraffic = (rows: readonly BucketRow[], key: (r: BucketRow) => string | string[], o: FddRuleOptions): string[] => trafficOf(rows, key, o).map(([k]) => k);

/**
 * The family at this check: at the first, the resources and tag values of the hour before
 * (busiest first); then extended with those seen since, each keeping the slot (and so the
 * share) it first got. Returns a copy; the rule's state keeps it.
 */
function extendFamily(family: Family | undefined, past: readonly BucketRow[], now: readonly BucketRow[], o: FddRuleOptions): Family {
  const f =
    family ??
    (() => {
      const known = trafficOf(past, (r) => r.resource, o).slice(0, MAX_RESOURCES);
      const resources = known.map(([name]) => name);
      const tags = byTraffic(past, (r) => primaryTagsOf(r.primaryTag), o).slice(0, MAX_TAGS);
      const withTags = tags.length > 0 || now.some((r) => r.primaryTag !== '');
      return { resources, knownResources: resources.length, knownTraffic: known.map(([, hits]) => hits), tags, knownTags: tags.length, withTags, errorTypes: [] };
    })();
  const add = (list: string[], seen: string[], max: number) => {
    for (const name of seen) if (list.length < max && !list.includes(name)) list.push(name);
  };
  const next = { ...f, resources: [...f.resources], tags: [...f.tags], errorTypes: [...(f.errorTypes ?? [])] };
  add(
    next.resources,
    byTraffic(now, (r) => r.resource, o),
    MAX_RESOURCES,
  );
  add(
    next.tags,
    byTraffic(now, (r) => primaryTagsOf(r.primaryTag), o),
    MAX_TAGS,
  );
  return next;
}

/**
 * Splits a budget into each test's share, the same at every check: with names known at the
 * start, they get 90% of it (a deploy rarely brings new endpoints) and newcomers the rest,
 * 1/(j(j+1)) each; without, newcomers all of it. Known names split theirs half equally, half by their traffic in the hour
 * before when it is known: a busy endpoint's regression hurts more users and its test needs
 * the budget to be fast, while the equal half keeps a quiet endpoint's test within about
 * log 2 nats of an equal split.
 */
function splitBudget(count: number, known: number, budget: number, traffic?: readonly number[]): number[] {
  const knownBudget = known > 0 ? budget * 0.9 : 0;
  const newBudget = budget - knownBudget;
  const total = traffic && traffic.length >= known ? traffic.slice(0, known).reduce((n, h) => n + h, 0) : 0;
  return Array.from({ length: count }, (_, i) => {
    if (i >= known) return newBudget / ((i - known + 1) * (i - known + 2));
    return total > 0 ? knownBudget * (0.5 / known + (0.5 * traffic![i]!) / total) : knownBudget / known;
  });
}

function testsOf(family: Family, primaryTag: string | null, budget: number): Test[] {
  const hasTags = !primaryTag && family.withTags;
  // Resources carry most of the budget (a regression usually sits in one endpoint); tag
  // values a fifth; the stratified aggregate, which alone sees a small rise everywhere, 15%.
  const resourceBudget = budget * (hasTags ? 0.65 : 0.85);
  const listed = new Set(family.resources);
  const overflow = family.resources.length >= MAX_RESOURCES;
  const resourceShares = splitBudget(family.resources.length + (overflow ? 1 : 0), family.knownResources, resourceBudget, family.knownTraffic);
  const tests: Test[] = family.resources.map((name, i) => ({ scope: 'resource', name, share: resourceShares[i]!, keep: (r) => r.resource === name }));
  if (overflow) tests.push({ scope: 'resource', name: '(other resources)', share: resourceShares.at(-1)!, keep: (r) => !listed.has(r.resource) });
  if (hasTags) {
    const tagShares = splitBudget(family.tags.length, family.knownTags, budget * 0.2);
    for (const [i, name] of family.tags.entries()) tests.push({ scope: 'primary_tag', name, share: tagShares[i]!, keep: (r) => carriesPrimaryTag(r.primaryTag, name) });
  }
  tests.push({ scope: 'aggregate', name: '(all resources)', share: budget * 0.15, keep: () => true });
  return tests;
}

interface Paired {
  canaryHits: number;
  canaryErrors: number;
  baselineHits: number;
  baselineErrors: number;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** A test's rows summed per bucket and resource, canary against baseline. */
function pairedCells(rows: readonly BucketRow[], version: string, keep: (r: BucketRow) => boolean): Map<number, Map<string, Paired>> {
  const cells = new Map<number, Map<string, Paired>>();
  for (const r of rows) {
    if (!keep(r)) continue;
    let byResource = cells.get(r.bucket);
    if (!byResource) cells.set(r.bucket, (byResource = new Map()));
    let p = byResource.get(r.resource);
    if (!p) byResource.set(r.resource, (p = { canaryHits: 0, canaryErrors: 0, baselineHits: 0, baselineErrors: 0 }));
    if (r.version === version) (p.canaryHits += r.hits), (p.canaryErrors += r.errors);
    else (p.baselineHits += r.hits), (p.baselineErrors += r.errors);
  }
  return cells;
}

/** A bucket's strata: resources served by both versions, with errors. */
function strata(byResource: Map<string, Paired>): StratumCell[] {
  const out: StratumCell[] = [];
  for (const p of byResource.values()) {
    if (p.canaryHits === 0 || p.baselineHits === 0 || p.canaryErrors + p.baselineErrors === 0) continue;
    out.push({ canaryErrors: p.canaryErrors, baselineErrors: p.baselineErrors, canaryShare: p.canaryHits / (p.canaryHits + p.baselineHits) });
  }
  return out;
}

/**
 * How clustered the canary's errors are within a bucket (ρ, see withinBucketCorrelation),
 * measured on resources one by one and on the whole service per bucket, around each resource's
 * own fitted canary/baseline ratio, so that a real regression is not read as noise.
 */
function clusteringOf(rows: readonly BucketRow[], version: string): { resources: number; aggregate: number } {
  const cells = pairedCells(rows, version, () => true);
  // Each resource's canary share of its errors over the window, against the share its requests
  // would give it; shrunk toward "no change" by one error, so a quiet endpoint's few errors
  // do not make up a ratio.
  const fit = new Map<string, { x: number; errors: number; nullShare: number; many: number }>();
  for (const byResource of cells.values()) {
    for (const [name, p] of byResource) {
      const errors = p.canaryErrors + p.baselineErrors;
      if (errors === 0 || p.canaryHits === 0 || p.baselineHits === 0) continue;
      const f = fit.get(name) ?? { x: 0, errors: 0, nullShare: 0, many: 0 };
      f.x += p.canaryErrors;
      f.errors += errors;
      f.nullShare += (errors * p.canaryHits) / (p.canaryHits + p.baselineHits);
      if (errors >= 2) f.many += errors;
      fit.set(name, f);
    }
  }
  const ratio = new Map<string, number>();
  let fitted = 0;
  for (const [name, f] of fit) {
    const s = f.nullShare / f.errors;
    const share = (f.x + s) / (f.errors + 1);
    ratio.set(name, (share * (1 - s)) / (s * (1 - share)));
    // The fit takes about one unit of Pearson's X from the resource, spread over its errors.
    fitted += f.many / (f.errors + 1);
  }
  const perResource: DispersionCell[] = [];
  const perBucket: DispersionCell[] = [];
  for (const byResource of cells.values()) {
    const bucket = { canaryErrors: 0, errors: 0, expected: 0, variance: 0 };
    for (const [name, p] of byResource) {
      const errors = p.canaryErrors + p.baselineErrors;
      const r = ratio.get(name);
      if (errors === 0 || r === undefined) continue;
      const s = p.canaryHits / (p.canaryHits + p.baselineHits);
      const share = (r * s) / (r * s + 1 - s);
      const cell = { canaryErrors: p.canaryErrors, errors, expected: errors * share, variance: errors * share * (1 - share) };
      perResource.push(cell);
      bucket.canaryErrors += cell.canaryErrors;
      bucket.errors += errors;
      bucket.expected += cell.expected;
      bucket.variance += cell.variance;
    }
    if (bucket.errors > 0) perBucket.push(bucket);
  }
  return { resources: withinBucketCorrelation(perResource, fitted), aggregate: withinBucketCorrelation(perBucket, fitted) };
}

/** Block lengths (buckets) whose inflation the evidence pays, with the window's. */
const SPELL_BLOCKS = [6, 12, 30];

interface BaselineNoise {
  /** Long-run over bucket-by-bucket variance of the baseline's errors (spells). */
  inflation: number;
  /** Variance over mean of the baseline's errors per bucket (1: Poisson). */
  dispersion: number;
  /** The baseline's errors over the series (hour before and window). */
  errors: number;
}

/** The hour before, by resource and bucket: what every check of a rule reads again. */
interface PastSeries {
  /** Requests of each resource in each bucket, in bucket order. */
  hits: Map<string, Float64Array>;
  /** Each resource's requests and errors over the hour. */
  totals: Map<string, { hits: number; errors: number }>;
  /** The baseline's errors in each bucket. */
  errors: Float64Array;
  /** Each test's errors over the hour, by test (scope and name). */
  testErrors: Map<string, number>;
}

/** The benchmark hands the same rows to every check of a run: they are summed once. */
const pastSeriesCache = new WeakMap<readonly BucketRow[], PastSeries>();

function pastSeriesOf(past: readonly BucketRow[]): PastSeries {
  const cached = pastSeriesCache.get(past);
  if (cached) return cached;
  const index = new Map<number, number>();
  for (const bucket of [...new Set(past.map((r) => r.bucket))].sort((x, y) => x - y)) index.set(bucket, index.size);
  const series: PastSeries = { hits: new Map(), totals: new Map(), errors: new Float64Array(index.size), testErrors: new Map() };
  for (const r of past) {
    const t = index.get(r.bucket)!;
    let hits = series.hits.get(r.resource);
    if (!hits) series.hits.set(r.resource, (hits = new Float64Array(index.size)));
    hits[t]! += r.hits;
    series.errors[t]! += r.errors;
    const total = series.totals.get(r.resource) ?? { hits: 0, errors: 0 };
    total.hits += r.hits;
    total.errors += r.errors;
    series.totals.set(r.resource, total);
  }
  pastSeriesCache.set(past, series);
  return series;
}

/**
 * Spells: how much more the baseline's errors vary over blocks of consecutive buckets than
 * bucket by bucket (temporalInflation), measured on the other versions alone, in the hour
 * before and in the window, so that a regression of the canary cannot pass for noise. Each
 * bucket's residual is its errors minus each resource's requests times that resource's rate
 * (a slow wave of traffic is not a spell). With pods of equal traffic whose spells act alike,
 * the canary's share residuals vary over a block in the same proportion (whatever the number
 * of pods on each side), so the factor measured on the whole baseline deflates the aggregate's
 * evidence, and a test over part of the traffic the part its errors carry (baselineNoiseOf).
 * The largest factor over blocks of 1, 2 and 5 min and the window is paid from the first check
 * on: a canary pod's spell starting with the window would otherwise be counted in full before
 * a short block could show it.
 */
function spellsOf(pastSeries: PastSeries, baseline: readonly BucketRow[], windowBuckets: number): BaselineNoise {
  const rates = new Map<string, { hits: number; errors: number }>();
  for (const [resource, total] of pastSeries.totals) rates.set(resource, { ...total });
  for (const r of baseline) {
    const x = rates.get(r.resource) ?? { hits: 0, errors: 0 };
    x.hits += r.hits;
    x.errors += r.errors;
    rates.set(r.resource, x);
  }
  const rateOf = (resource: string) => {
    const x = rates.get(resource)!;
    return x.errors / Math.max(x.hits, 1);
  };
  // Residuals and errors per bucket: the hour before, then the window's buckets in order.
  const residuals = Array.from(pastSeries.errors);
  const errorCounts = Array.from(pastSeries.errors);
  for (const [resource, hits] of pastSeries.hits) {
    const q = rateOf(resource);
    for (let t = 0; t < hits.length; t++) residuals[t]! -= hits[t]! * q;
  }
  const inWindow = new Map<number, { residual: number; errors: number }>();
  for (const r of baseline) {
    const b = inWindow.get(r.bucket) ?? { residual: 0, errors: 0 };
    b.residual += r.errors - r.hits * rateOf(r.resource);
    b.errors += r.errors;
    inWindow.set(r.bucket, b);
  }
  // Segments: the hour before in thirds, and the window once it has a few blocks. Each is
  // centred on its own mean (a level that moves between them is not a spell), and the upper
  // median of their figures is taken: an incident or a ramp in one segment reads as a long
  // spell there and is outvoted, while spells that come and go show in every segment.
  const segments: Array<{ residuals: number[]; errors: number[] }> = [];
  const third = Math.floor(residuals.length / 3);
  if (third >= MIN_SEGMENT_BUCKETS)
    for (let i = 0; i < 3; i++) segments.push({ residuals: residuals.slice(i * third, (i + 1) * third), errors: errorCounts.slice(i * third, (i + 1) * third) });
  else if (residuals.length >= MIN_SEGMENT_BUCKETS) segments.push({ residuals, errors: errorCounts });
  const windowed = [...inWindow].sort((x, y) => x[0] - y[0]).map(([, v]) => v);
  if (windowed.length >= MIN_SEGMENT_BUCKETS) segments.push({ residuals: windowed.map((v) => v.residual), errors: windowed.map((v) => v.errors) });
  let errors = 0;
  for (const x of rates.values()) errors += x.errors;
  const figures = segments.map((segment) => segmentNoise(segment.residuals, segment.errors, windowBuckets));
  const upperMedian = (xs: number[]) => (xs.length === 0 ? 1 : [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!);
  return { inflation: upperMedian(figures.map((f) => f.inflation)), dispersion: upperMedian(figures.map((f) => f.dispersion)), errors };
}

/** A segment shorter than this (2 min) says too little about blocks of a minute. */
const MIN_SEGMENT_BUCKETS = 12;

/** One segment's spells' inflation (the largest over the block lengths) and dispersion. */
function segmentNoise(residuals: readonly number[], errors: readonly number[], windowBuckets: number): { inflation: number; dispersion: number } {
  const n = residuals.length;
  const mean = residuals.reduce((sum, v) => sum + v, 0) / n;
  const centred = residuals.map((v) => v - mean);
  const variance = centred.reduce((sum, v) => sum + v * v, 0) / n;
  const meanErrors = errors.reduce((sum, v) => sum + v, 0) / n;
  const inflation = Math.max(
    ...SPELL_BLOCKS.filter((b) => b < windowBuckets)
      .concat(windowBuckets)
      .map((b) => temporalInflation(centred, b)),
  );
  return { inflation, dispersion: Math.max(1, variance / Math.max(meanErrors, 1e-9)) };
}

/**
 * What the baseline says of a test's noise: its dispersion and its spells' inflation. When a
 * pod's noise is shared by its endpoints, a resource's counts per bucket vary by
 * D = 1 + m_j c (m_j its errors per bucket per pod, c the multiplier's variance): the excess is
 * the aggregate's times the resource's share of the baseline's errors. Its block sums vary with
 * the square of its errors, so its spells' excess is the aggregate's times its share of the
 * errors times the ratio of the two dispersions, at most the whole.
 */
function baselineNoiseOf(test: Test, spells: BaselineNoise, past: readonly BucketRow[], baselineErrors: number): { dispersion: number; inflation: number } {
  const series = pastSeriesOf(past);
  const key = `${test.scope}\0${test.name}`;
  let pastErrors = series.testErrors.get(key);
  if (pastErrors === undefined) {
    pastErrors = 0;
    if (test.scope !== 'aggregate') for (const r of past) if (test.keep(r)) pastErrors += r.errors;
    series.testErrors.set(key, pastErrors);
  }
  const errorShare = test.scope === 'aggregate' ? 1 : Math.min(1, (pastErrors + baselineErrors) / Math.max(spells.errors, 1e-9));
  const excess = (spells.dispersion - 1) * errorShare;
  const aggregateExcess = spells.dispersion - 1;
  const ratio = test.scope === 'aggregate' ? 1 : Math.min(1, (errorShare * (1 + aggregateExcess)) / (1 + excess));
  return { dispersion: 1 + excess, inflation: 1 + (spells.inflation - 1) * ratio };
}

/** Below this many baseline instances in the window, placebo instances say too little. */
const MIN_PLACEBO_INSTANCES = 4;
/**
 * Below this many degrees of freedom, κ deflates more than spells would (κ(16) = 1.6): the
 * placebo starts only with it. Once it has, it stays at fewer (FddState.placebo): with few pods
 * the hour before holds fewer blocks as the horizon grows (four pods: 18 at 12 min, 15 past it),
 * and dropping it then cut the deflation at once, from what 5-min spells call for (×200) to the
 * spells factor's (×4): 15% A/A false failures at alpha 1%, nearly all at that check. A
 * service with no hour before at all (it just started) has nothing better than its window's
 * pods: then 8 (nine pods, κ(8) = 2.85), slower to fail but no longer blind to spells.
 */
const MIN_PLACEBO_DF = 16;
const MIN_PLACEBO_DF_WITHOUT_PAST = 8;

/** The hour before's instances grouped by bucket, in bucket order: every check reads them again. */
const pastInstancesCache = new WeakMap<readonly InstanceRow[], InstanceCount[][]>();

function byBucket(rows: readonly InstanceRow[]): InstanceCount[][] {
  const buckets = new Map<number, InstanceCount[]>();
  for (const r of rows) {
    let list = buckets.get(r.bucket);
    if (!list) buckets.set(r.bucket, (list = []));
    list.push(r);
  }
  return [...buckets].sort((x, y) => x[0] - y[0]).map(([, list]) => list);
}

/**
 * Placebo instances (issue 10): when spans carry an instance attribute, each baseline instance
 * plays the canary against the others (addPlaceboBlock), over the window so far and over
 * non-overlapping blocks of the same length in the hour before, so that what the canary's
 * statistic may vary by at this horizon is measured on instances that share its noise, spells
 * of any length included. Not covered (src/domain/fdd.ts, "Placebo instances"): a canary pod
 * noisier than the baseline's pods (more traffic per pod: 4.0% A/A false failures at alpha 1%
 * with 3× a baseline pod's traffic and 1-min spells, against 8.5% without instances), and one
 * endpoint's own spells, which reach its resource test only through the aggregate's figure
 * scaled down by the endpoint's share of the errors (6.5%, against 10.5%). Null below
 * MIN_PLACEBO_INSTANCES instances or, at the first checks, `minDegreesOfFreedom` (no
 * per-instance hour before): the rule then keeps the spells factor alone.
 */
function placeboOf(
  instances: NonNullable<FddInput['instances']>,
  version: string,
  mode: { concurrent: true; rho: number } | { concurrent: false; horizon: number },
  share: number,
  minDegreesOfFreedom: number,
  gated: boolean,
): { instances: number; degreesOfFreedom: number; factor: number } | null {
  let past = pastInstancesCache.get(instances.past);
  if (!past) pastInstancesCache.set(instances.past, (past = byBucket(instances.past)));
  // Against the hour before, the canary is one pod's counts against the pooled rate: the
  // hour before's pods alone, each against the others (its within-bucket noise included: ρ 0).
  const window = mode.concurrent ? byBucket(instances.rows.filter((r) => r.version !== version)) : [];
  const horizon = mode.concurrent ? window.length : mode.horizon;
  const rho = mode.concurrent ? mode.rho : 0;
  const names = new Set<string>();
  for (const bucket of mode.concurrent ? window : past) for (const i of bucket) names.add(i.instance);
  if (names.size < MIN_PLACEBO_INSTANCES || horizon === 0) return null;
  const sums: PlaceboSums = { squares: 0, variance: 0, degreesOfFreedom: 0 };
  if (mode.concurrent) addPlaceboBlock(sums, window, rho);
  // Blocks as long as the window so far, from the start backwards.
  for (let end = past.length; end - horizon >= 0; end -= horizon) addPlaceboBlock(sums, past.slice(end - horizon, end), rho);
  if (sums.degreesOfFreedom < minDegreesOfFreedom) return null;
  return { instances: names.size, degreesOfFreedom: sums.degreesOfFreedom, factor: placeboInflation(sums, share, gated) };
}

export type FddState = {
  family?: Family;
  /** Placebo instances were measured at an earlier check: kept since at any degrees of freedom. */
  placebo?: boolean;
};

export interface FddInput {
  options: FddRuleOptions;
  version: string;
  primaryTag: string | null;
  state: FddState;
  /** Other versions' buckets in the hour before the start (in scope). */
  past: BucketRow[];
  /** Every version's buckets from the start until now (in scope). */
  rows: BucketRow[];
  /** Error types the baseline showed over the last day. */
  knownErrorTypes: ReadonlySet<string>;
  /** The canary's error types since the start (in scope). */
  canaryErrorTypes: ReadonlyArray<{ errorType: string; resource: string; count: number; sampleMessage: string | null }>;
  /**
   * Each instance's counts per bucket, when spans name their instance: other versions' in the
   * hour before, every version's since the start. Absent or empty: the spells factor alone.
   */
  instances?: { past: readonly InstanceRow[]; rows: readonly InstanceRow[] };
  /** The window is over: decide pass or insufficient data now. */
  final: boolean;
  windowMinutes: number;
}

export type FddAssessment =
  | { status: 'in_progress'; reason: string; evidence: Record<string, unknown>; state: FddState }
  | { status: 'pass' | 'fail'; reason: string; evidence: Record<string, unknown>; state: FddState };

/**
 * The decision on the data so far, with no I/O: the runner feeds it from the APM store, the
 * decision-quality benchmark from simulated traffic.
 */
export function assessFdd(input: FddInput): FddAssessment {
  const { options: o, version, past, rows, final } = input;
  const state: FddState = { family: extendFamily(input.state.family, past, rows, o) };
  const family = state.family!;
  const canary = rows.filter((r) => r.version === version);
  const baseline = rows.filter((r) => r.version !== version);
  const canaryHits = canary.reduce((n, r) => n + r.hits, 0);
  if (!family.mode && canaryHits > 0) family.mode = baseline.some((r) => r.hits > 0) ? 'concurrent' : 'lookback';
  const concurrent = (family.mode ?? (baseline.some((r) => r.hits > 0) ? 'concurrent' : 'lookback')) === 'concurrent';
  const baselineKind = concurrent ? 'concurrent traffic of other versions' : 'the hour before the evaluation started';
  const rateAlpha = o.newErrorTypes ? o.alpha * 0.9 : o.alpha;
  const tests = testsOf(family, input.primaryTag, rateAlpha);
  const aggregateShare = tests.at(-1)!.share;
  const grid = ratioGrid(o.minRelativeIncrease);

  const evidence: Record<string, unknown> = {
    version,
    baseline: concurrent ? 'concurrent' : 'lookback',
    baselineVersions: [...new Set((concurrent ? baseline : past).map((r) => r.version))].sort(),
    tests: tests.length,
    alpha: o.alpha,
    canaryRequests: canaryHits,
  };

  // ---- error-rate increase ----
  const clustering = concurrent ? clusteringOf(rows, version) : null;
  const spells = spellsOf(pastSeriesOf(past), concurrent ? baseline : [], Math.max(1, Math.round((input.windowMinutes * 60_000) / APM_BUCKET_MS)));
  // With instances, the placebo figure may raise the spells factor (never lower it: it is an
  // estimate too, and the spells factor was validated without it).
  const withoutPast = past.length === 0 && input.instances?.past.length === 0;
  const minDegreesOfFreedom = input.state.placebo ? 1 : withoutPast ? MIN_PLACEBO_DF_WITHOUT_PAST : MIN_PLACEBO_DF;
  const horizon = new Set(canary.map((r) => r.bucket)).size;
  const placebo = input.instances
    ? placeboOf(
        input.instances,
        version,
        clustering ? { concurrent: true, rho: clustering.aggregate } : { concurrent: false, horizon },
        aggregateShare,
        minDegreesOfFreedom,
        !withoutPast,
      )
    : null;
  // Against the hour before, the canary's counts are deflated by dispersion × spells, and a
  // pod's placebo figure covers both.
  if (placebo) spells.inflation = Math.max(spells.inflation, clustering ? placebo.factor : placebo.factor / spells.dispersion);
  if (placebo || input.state.placebo) state.placebo = true;
  evidence.clustering = {
    resources: clustering ? round3(clustering.resources) : null,
    aggregate: clustering ? round3(clustering.aggregate) : null,
    spells: round3(spells.inflation),
    baselineDispersion: round3(spells.dispersion),
    placebo: placebo && { ...placebo, factor: round3(placebo.factor) },
  };
  const faulty: Array<Record<string, unknown>> = [];
  /** Every test's record and log(share × E): the family fails when these add up to 1. */
  const weighted: Array<{ kind: 'rate' | 'type'; record: Record<string, unknown>; logWeighted: number }> = [];
  let largest = Number.NEGATIVE_INFINITY;
  let closest = { logE: Number.NEGATIVE_INFINITY, threshold: Number.POSITIVE_INFINITY };
  for (const test of tests) {
    const threshold = Math.log(1 / test.share);
    const c: RequestCounts = { hits: 0, errors: 0 };
    const b: RequestCounts = { hits: 0, errors: 0 };
    let logE: number;
    if (clustering) {
      const cells = pairedCells(rows, version, test.keep);
      for (const byResource of cells.values()) {
        for (const p of byResource.values()) {
          c.hits += p.canaryHits;
          c.errors += p.canaryErrors;
          b.hits += p.baselineHits;
          b.errors += p.baselineErrors;
        }
      }
      const rho = test.scope === 'resource' ? clustering.resources : test.scope === 'aggregate' ? clustering.aggregate : Math.max(clustering.resources, clustering.aggregate);
      const noise = baselineNoiseOf(test, spells, past, b.errors);
      logE = logEStratified([...cells.values()].map(strata), grid, concentration(rho), noise.inflation);
    } else {
      for (const r of past) if (test.keep(r)) (b.hits += r.hits), (b.errors += r.errors);
      const mine = canary.filter(test.keep).map((r) => ({ hits: r.hits, events: r.errors }));
      for (const r of mine) (c.hits += r.hits), (c.errors += r.events);
      // Errors clustered in a pod, or in spells, vary more than Poisson counts, the baseline's as
      // the canary's: quasi-Poisson, both the bound on the baseline's rate and the evidence
      // against it scaled by the dispersion measured on the hour before.
      const noise = baselineNoiseOf(test, spells, past, 0);
      const d = noise.dispersion * noise.inflation;
      logE = b.hits > 0 ? logEAboveRate(mine, upperRate(b.errors / d, b.hits / d), grid, d) : 0;
    }
    largest = Math.max(largest, logE);
    if (logE - threshold > closest.logE - closest.threshold) closest = { logE, threshold };
    const record = {
      scope: test.scope,
      name: test.name,
      canary: { requests: c.hits, errors: c.errors, errorRate: rate(c) },
      baseline: { requests: b.hits, errors: b.errors, errorRate: rate(b) },
      eValue: Math.exp(Math.min(logE, 700)),
      threshold: Math.exp(threshold),
    };
    weighted.push({ kind: 'rate', record, logWeighted: logE - threshold });
    if (logE >= threshold) faulty.push(record);
  }

  // ---- new error types ----
  const newTypes: Array<Record<string, unknown>> = [];
  if (o.newErrorTypes) {
    const known = input.knownErrorTypes;
    const mine = new Map<string, { count: number; resources: Set<string>; sample: string | null }>();
    for (const e of input.canaryErrorTypes) {
      if (known.has(e.errorType)) continue;
      const t = mine.get(e.errorType) ?? { count: 0, resources: new Set<string>(), sample: null };
      t.count += e.count;
      t.resources.add(e.resource);
      t.sample ??= e.sampleMessage;
      mine.set(e.errorType, t);
    }
    // Every baseline request (the hour before and now) bounds how often it could have had the type unseen.
    const baselineRequests = [...past, ...baseline].reduce((n, r) => n + r.hits, 0);
    // Types keep the slot of their first appearance: the j-th gets 1/(j(j+1)) of a tenth of alpha.
    for (const [type] of [...mine].sort((a, b) => b[1].count - a[1].count || (a[0] < b[0] ? -1 : 1))) {
      if (!family.errorTypes.includes(type) && family.errorTypes.length < MAX_NEW_TYPES) family.errorTypes.push(type);
    }
    for (const [type, t] of mine) {
      const slot = family.errorTypes.indexOf(type);
      if (slot < 0) continue;
      const typeThreshold = Math.log(((slot + 1) * (slot + 2)) / (o.alpha * 0.1));
      if (t.count < MIN_NEW_TYPE_COUNT || baselineRequests === 0) continue;
      const logE = logEAboveRate([{ hits: canaryHits, events: t.count }], upperRate(0, baselineRequests), NEW_TYPE_GRID);
      const record = {
        errorType: type,
        count: t.count,
        resources: [...t.resources].sort(),
        sampleMessage: t.sample,
        eValue: Math.exp(Math.min(logE, 700)),
        threshold: Math.exp(typeThreshold),
      };
      weighted.push({ kind: 'type', record, logWeighted: logE - typeThreshold });
      if (logE >= typeThreshold) newTypes.push(record);
    }
  }

  // ---- the family together ----
  // Σ share × E over every test is itself an e-process of mean ≤ alpha (a weighted average of
  // test supermartingales of one filtration), so the rule may also fail when it reaches 1 with
  // no single test past its own threshold: several tests halfway there are evidence too. The
  // tests then named are the largest contributors, up to half of the sum.
  const logSum = weighted.length > 0 ? logSumExp(weighted.map((w) => w.logWeighted)) : Number.NEGATIVE_INFINITY;
  evidence.familyEValue = Number.isFinite(logSum) ? Math.exp(Math.min(logSum + Math.log(1 / o.alpha), 700)) : 0;
  if (faulty.length === 0 && newTypes.length === 0 && logSum >= 0) {
    let covered = 0;
    for (const w of [...weighted].sort((a, b) => b.logWeighted - a.logWeighted)) {
      w.record.jointly = true;
      (w.kind === 'rate' ? faulty : newTypes).push(w.record);
      covered += Math.exp(w.logWeighted - logSum);
      if (covered >= 0.5) break;
    }
  }

  Object.assign(evidence, { faultyResources: faulty, newErrorTypes: newTypes, largestEValue: Number.isFinite(largest) ? Math.exp(Math.min(largest, 700)) : 0 });

  if (faulty.length > 0 || newTypes.length > 0) {
    const parts = [
      ...faulty.slice(0, 2).map((f) => {
        const fc = f.canary as { errorRate: number; errors: number; requests: number };
        const fb = f.baseline as { errorRate: number };
        const against = f.jointly
          ? `of ${Number((f.threshold as number).toPrecision(3))} needed alone, past the family's threshold with the other tests`
          : `≥ ${Number((f.threshold as number).toPrecision(3))}`;
        return `error rate of ${f.name} rose from ${pct(fb.errorRate)} (baseline) to ${pct(fc.errorRate)} (${fc.errors} of ${fc.requests} requests), e-value ${formatEValue(Math.log(f.eValue as number))} ${against}`;
      }),
      ...newTypes
        .slice(0, 2)
        .map((t) => `new error type ${t.errorType} (${t.count} times${t.sampleMessage ? `, e.g. "${String(t.sampleMessage).slice(0, 80)}"` : ''}) never seen in the baseline`),
    ];
    const more = faulty.length + newTypes.length - parts.length;
    const text = `Version ${version}: ${parts.join('; ')}${more > 0 ? `; and ${more} more` : ''}. Baseline: ${baselineKind}.`;
    return { status: 'fail', reason: text, evidence, state };
  }

  if (!final) {
    const reason =
      canaryHits === 0
        ? `Waiting for traffic of version ${version}; nothing significant so far.`
        : `${canaryHits} requests of version ${version} so far, no significant increase (closest test: e-value ${formatEValue(closest.logE)} of ${Number(Math.exp(closest.threshold).toPrecision(3))} needed).`;
    return { status: 'in_progress', reason, evidence, state };
  }

  // ---- the window is over: enough traffic to have seen the increase we care about? ----
  const cAgg: RequestCounts = { hits: canaryHits, errors: canary.reduce((n, r) => n + r.errors, 0) };
  const bRows = concurrent ? baseline : past;
  const bAgg: RequestCounts = { hits: bRows.reduce((n, r) => n + r.hits, 0), errors: bRows.reduce((n, r) => n + r.errors, 0) };
  const canaryShare = concurrent && cAgg.hits + bAgg.hits > 0 ? cAgg.hits / (cAgg.hits + bAgg.hits) : 0;
  // The baseline's rate counts at least one error: with none in N requests its rate is not
  // known to be below about 1/N, and a rate of 0 would need infinitely many canary requests.
  const baseRate = Math.max(rate(bAgg), 1 / Math.max(bAgg.hits, 1));
  // Errors in spells carry less information per request: as many more requests as they vary
  // more (against the hour before, their dispersion too; the concurrent share test cancels what
  // both versions share).
  const needed = Math.ceil(requestsNeeded(baseRate, canaryShare, o.minRelativeIncrease, aggregateShare) * (concurrent ? 1 : spells.dispersion) * spells.inflation);
  let shortfall: string | null = null;
  if (canaryHits === 0) shortfall = `version ${version} received no traffic during the window`;
  else if (bAgg.hits === 0) shortfall = 'no other version served traffic to compare with, now or in the hour before';
  else if (canaryHits < needed) {
    const perMinute = canaryHits / Math.max(input.windowMinutes, 1 / 60);
    const missing = needed - canaryHits;
    shortfall = `the canary served ${canaryHits} requests; detecting a +${Math.round(o.minRelativeIncrease * 100)}% error-rate increase over a ${pct(baseRate)} baseline needs about ${needed}, so about ${missing} more (≈ ${Math.ceil(missing / Math.max(perMinute, 1e-9))} min at the current ${perMinute.toFixed(1)} requests/min)`;
  }
  if (shortfall) {
    Object.assign(evidence, { insufficientData: true, requestsNeeded: Number.isFinite(needed) ? needed : null });
    return {
      status: o.onInsufficientData,
      reason: `Not enough data: ${shortfall}; onInsufficientData makes the rule ${o.onInsufficientData}.`,
      evidence,
      state,
    };
  }
  return {
    status: 'pass',
    reason: `No significant error-rate increase or new error type for version ${version} over ${canaryHits} requests (${tests.length} tests, alpha ${o.alpha}; closest test: e-value ${formatEValue(closest.logE)} of ${Number(Math.exp(closest.threshold).toPrecision(3))} needed). Baseline: ${baselineKind}.`,
    evidence,
    state,
  };
}

/**
 * Instances per version a check reads: placebo pods gain little past a few dozen, and each costs
 * 360 rows of the hour before.
 */
const PLACEBO_INSTANCES = 50;

/**
 * A canary's per-instance hour before, read once per store and process: it does not change
 * once the rule has started (its last bucket settled before the first check), and re-reading
 * it at every check cost up to a second of a synchronous SQLite read with 200 pods. The most
 * recently used are kept (at most 18,000 rows each).
 */
const instancePastCache = new WeakMap<object, Map<string, InstanceRow[]>>();
const INSTANCE_PAST_CACHE_SIZE = 64;

async function instancePastOf(deps: Deps, w: { service: string; env: string; from: number; to: number }, version: string): Promise<InstanceRow[]> {
  let cache = instancePastCache.get(deps.db);
  if (!cache) instancePastCache.set(deps.db, (cache = new Map()));
  const key = `${w.service}\0${w.env}\0${version}\0${w.from}`;
  let rows = cache.get(key);
  if (rows) cache.delete(key);
  else rows = (await instanceCounts(deps.db, w, PLACEBO_INSTANCES)).filter((r) => r.version !== version);
  cache.set(key, rows);
  if (cache.size > INSTANCE_PAST_CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return rows;
}

export const fddRunner: RuleRunner = {
  type: 'faulty_deployment_detection',

  plan(options, start) {
    const o = options as FddRuleOptions;
    return {
      windowStartsAt: start,
      windowEndsAt: new Date(start.getTime() + o.duration * 1000),
      nextCheckAt: new Date(start.getTime() + Math.min(CHECK_EVERY_MS, o.duration * 1000)),
    };
  },

  async check(deps, { rule, evaluation, now }): Promise<CheckResult> {
    const o = rule.options as FddRuleOptions;
    const version = evaluation.version ?? '';
    const start = rule.windowStartsAt.getTime();
    const end = rule.windowEndsAt.getTime();
    const until = Math.min(now.getTime(), end);
    const narrowedTo = primaryTagsOf(evaluation.primaryTag);
    const scoped = (r: { resource: string; primaryTag: string }) => resourceAllowed(o, r.resource) && narrowedTo.every((tag) => carriesPrimaryTag(r.primaryTag, tag));
    const w = { service: evaluation.service, env: evaluation.env };
    // Whole buckets: the one the window starts in belongs to the window.
    const firstBucket = Math.floor(start / APM_BUCKET_MS) * APM_BUCKET_MS;
    const result = assessFdd({
      options: o,
      version,
      primaryTag: evaluation.primaryTag,
      state: (rule.state ?? {}) as FddState,
      past: (await bucketCounts(deps.db, { ...w, from: firstBucket - LOOKBACK_MS, to: firstBucket })).filter((r) => r.version !== version && scoped(r)),
      rows: (await bucketCounts(deps.db, { ...w, from: firstBucket, to: until + 1 })).filter(scoped),
      // Whole-service totals per instance, whatever the rule's scope: they can only raise the
      // spells factor, and an instance's noise is its own across its endpoints.
      instances: {
        past: await instancePastOf(deps, { ...w, from: firstBucket - LOOKBACK_MS, to: firstBucket }, version),
        rows: await instanceCounts(deps.db, { ...w, from: firstBucket, to: until + 1 }, PLACEBO_INSTANCES),
      },
      knownErrorTypes: o.newErrorTypes
        ? new Set(
            (await errorTypes(deps.db, { ...w, from: firstBucket - ERROR_TYPE_LOOKBACK_MS, to: until + 1 }))
              .filter((e) => e.version !== version && scoped(e))
              .map((e) => e.errorType),
          )
        : new Set(),
      canaryErrorTypes: o.newErrorTypes ? (await errorTypes(deps.db, { ...w, from: firstBucket, to: until + 1 })).filter((e) => e.version === version && scoped(e)) : [],
      final: now.getTime() >= end + SETTLE_MS,
      windowMinutes: (end - start) / 60_000,
    });
    if (result.status !== 'in_progress') return result;
    return { ...result, nextCheckAt: new Date(Math.min(end + SETTLE_MS, now.getTime() + CHECK_EVERY_MS)) };
  },

  watch(_options, evaluation) {
    return { keys: [apmKey(evaluation.service, evaluation.env)] };
  },
};
