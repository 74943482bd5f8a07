/**
 * The statistics of faulty-deployment detection: anytime-valid tests, so that checking as
 * often as we like over the whole window keeps the false-failure rate at or below alpha.
 *
 * Error-rate increase, canary next to a concurrent baseline. Within a time bucket t the
 * canary serves a share s_t of the requests. If both versions have the same per-request error
 * rate, each error of the bucket is the canary's with probability s_t (Poisson thinning; the
 * binomial is the usual approximation of the hypergeometric at error rates of a few percent).
 * If the canary's rate is r times the baseline's, that probability is
 *   p_t(r) = r s_t / (r s_t + 1 − s_t).
 * The likelihood ratio of "ratio r" against "ratio 1" over the errors seen so far,
 *   L(r) = Π_t (p_t(r)/s_t)^{e_c,t} ((1 − p_t(r))/(1 − s_t))^{e_b,t},
 * is a nonnegative martingale with mean 1 under the null, and so is any mixture of them over
 * a prior on r (the mixture SPRT of Robbins; Johari et al., "Always Valid Inference", 2017;
 * Lindon & Malek, "Anytime-Valid Inference for Multinomial Count Data", 2022, who test count
 * data this way). By Ville's inequality, P(sup_t E_t ≥ 1/a) ≤ a: the e-value E may be looked
 * at after every bucket and the test rejected the first time it crosses 1/a.
 *
 * Error-rate increase against a past baseline (no concurrent traffic). The canary's errors in
 * bucket t are Poisson with mean n_t q; under the null q ≤ q0, and
 *   L(r) = Π_t r^{e_t} exp(−n_t q0 (r − 1))
 * is a supermartingale for every r ≥ 1, so the same mixture and the same threshold hold. q0 is
 * an upper confidence bound of the baseline's rate, so its own noise cannot fail a canary.
 *
 * Errors that cluster (issue 10). Errors are not independent draws: a pod has a bad few
 * seconds and its errors arrive together. With one canary pod and nine baseline pods, each
 * pod's rate multiplied per bucket by a Gamma(k) draw, the canary's errors among the bucket's
 * E errors are not binomial but beta-binomial, with the same mean s_t and concentration
 * ν = k × pods (Gamma–Poisson counts conditioned on their sum): variance
 * E s (1 − s) (1 + (E − 1) ρ), ρ = 1/(ν + 1). Counting each clustered error as independent
 * evidence made L(r) grow under the null, the more so the more traffic (ρ (E − 1) grows
 * with E). So each bucket is scored as one beta-binomial observation (logShareRatio): the
 * product over buckets of BB(x; E, p_t(r), ν) / BB(x; E, s_t, ν) is again a test martingale
 * under the null when ν is the true concentration — whatever the cause of the clustering,
 * canary pods noisier than the baseline's included, as long as it acts within a bucket and
 * leaves the mean alone (a burst shared by both versions leaves the share alone and costs
 * nothing). ν is not known: ρ is estimated by moments from the window's own buckets
 * (withinBucketCorrelation; E[Pearson X] = 1 + (E − 1) ρ), around each resource's fitted
 * ratio so that a regression is not mistaken for noise, with a prior worth 40 error pairs at
 * ρ = 0.1 so that a few quiet buckets cannot declare the errors independent. ν must not be
 * taken below the truth either: a beta-binomial ratio with too small a ν grows under the null
 * (with ν → 0 each bucket with errors on both sides scores about p1/p0 · (1 − p1)/(1 − p0) > 1),
 * so noise the window's estimate misses is paid by deflating the evidence (below), never by a
 * smaller ν. No instance attribute is needed.
 *
 * Spells (errors correlated across buckets). A pod's bad minute keeps its errors high over
 * several consecutive buckets; the buckets are then not independent, and a product of bucket
 * likelihood ratios counts one spell as that many pieces of evidence (A/A false failures of
 * 7–29% at alpha 1% with 30-s to 5-min spells before this was allowed for). The allowance is
 * measured where a regression cannot hide: on the baseline alone, in the hour before and in
 * the window. Its errors per bucket minus their expected count (each resource's requests
 * times its rate) form a residual series r_t, and for a block of B buckets
 *   F_B = Var(Σ_B r) / (B Var(r))
 * (temporalInflation) is how much more a sum over B buckets varies than its buckets one by one:
 * 1 for independent buckets. With pods of equal traffic whose noise follows the same process,
 * independently, the canary's share residual u_t = x_t − s E_t has Cov(u_t, u_t') =
 * s Cov(y_t, y_t') and Var(u_t) = s Var(y_t) in the Gamma–Poisson model (y the baseline's
 * errors, s the canary's share of requests), whatever the number of pods on each side: F_B is
 * the same for the canary's evidence as for the baseline's counts. In the Gaussian limit a
 * log likelihood ratio whose statistic varies F times more than the model says, divided by F,
 * is the log likelihood ratio at a smaller alternative under the right variance: the test's
 * evidence is deflated by F (quasi-likelihood; for any F ≥ 1, E[L^{1/F}] ≤ E[L]^{1/F} ≤ 1, so
 * deflating never costs validity where L was valid), the largest of F_B over blocks of 1, 2 and
 * 5 min and the window, less the estimate's own noise √(2B/T) so that independent errors are
 * not deflated by chance. The series is cut into segments (the hour before in thirds, the
 * window once it has 2 min), each centred on its own mean, and the upper median of their
 * figures is kept: a shared incident or a ramp in the hour before moves the level of one
 * segment and is outvoted, while spells that come and go show in every segment. Tests over
 * part of the traffic get the part of F their share of the errors carries (a pod's spell is
 * shared by its endpoints). Without a concurrent baseline (logEAboveRate) the canary's counts
 * are quasi-Poisson with dispersion D F (D = Var/mean of the baseline's counts per bucket),
 * and the bound on the baseline's rate widens by √(D F).
 * What it costs: evidence divided by F, ~1 without spells (the noise allowance), 2–10 with
 * them. What it assumes and does not cover: pods of equal traffic with the same noise (a
 * canary pod with several times a baseline pod's traffic has more of its variance in spells);
 * spells shared by a pod's endpoints (one flaky dependency behind one endpoint is diluted);
 * spells of a minute or two: at five minutes, as long as a segment's blocks and a third of a
 * 15-min window, a spell is one observation and no valid test can tell it from a regression
 * without the pod's own series (placebo instances, below; docs/decisions.md has the
 * figures). ρ and F are plugged in from data rather than known, so the e-values are test
 * martingales only up to the estimates' error: the benchmark's A/A cells (`npm run
 * bench:decisions`, docs/decisions.md) are what check the false-failure rate.
 *
 * Placebo instances. When spans name their instance (service.instance.id, k8s.pod.name or
 * host.name), the spells factor need not be inferred from the baseline's total: under the null
 * the canary's pod is one more pod, so each baseline pod can play the canary against the
 * others, with the aggregate test's statistic at the current horizon h (addPlaceboBlock), in
 * the window and in non-overlapping blocks of h buckets of the hour before. The ratio of their
 * squared sums to the model's variance is what the canary's statistic may vary by at that
 * horizon, spells of any length included; it has (pods − 1) degrees of freedom per block, and
 * is taken up by κ(df), the factor that keeps a Student's t tail at the threshold where the
 * Gaussian's was (placeboInflation), once it is past what independent pods would show 1% of the
 * time (χ²_df(99%)/df). It may raise the spells factor, never lower it. Nine pods
 * over the window alone are too few (8 degrees of freedom, κ = 2.85: a deflation of three with
 * no spells at all), so the rule uses it only with the hour before per pod (at least 16).
 * What it does not cover: a canary pod noisier than every baseline pod (more traffic per pod:
 * more of its variance is spell), and an endpoint's own spells, which reach a resource test
 * only through the aggregate's figure scaled by the resource's share of the errors.
 *
 * Stratified aggregate. "Is the canary worse overall" compares each resource with itself: in
 * bucket t the canary's errors have null mean Σ_j E_j s_j and mean Σ_j E_j p_j(r) under "r
 * times worse everywhere" (logEStratified), so a canary that serves more of a noisy endpoint
 * is not a regression. Without clustering, the canary's count is a sum of binomials of
 * different p_j, which is more concentrated than the binomial of their mean (Hoeffding,
 * 1956), so scoring it with that binomial keeps E[L] ≤ 1. Primary-tag tests are stratified
 * the same way.
 *
 * Family-wise control. Every test (each resource, each primary-tag value, the aggregate, the
 * new-error-type tests) gets a share of alpha fixed when the rule starts, and rejects at
 * E ≥ 1/share (Bonferroni on e-values): the chance that any test ever fails a good canary
 * stays ≤ alpha, whatever the checking cadence. Where the budget goes (src/engine/fddRule.ts):
 * 10% to new error types, 15% to the stratified aggregate (the only test that sees a small
 * rise everywhere), the rest to resources (and tag values), half split equally and half by
 * each resource's traffic in the hour before. Each test pays log(1/share) nats before it may
 * fail where an oracle that knew the endpoint and the ratio pays log(1/alpha): with twelve
 * endpoints that is 2.0 (busiest) to 3.5 (quietest) nats more, plus up to log 6 for not
 * knowing the ratio (the mixture over six ratios): the price of looking everywhere at once.
 * The family may also fail on Σ share × E (fddRule.ts), never weaker than the Bonferroni rule.
 */

import chiSquareQuantile from '@stdlib/stats-base-dists-chisquare-quantile';
import normalCdf from '@stdlib/stats-base-dists-normal-cdf';
import tQuantile from '@stdlib/stats-base-dists-t-quantile';

/**
 * Rate ratios the mixture puts equal weight on, evenly spaced in log: from half the smallest
 * increase worth failing for to ×8 (or 2 + minRelativeIncrease when that is larger). Fewer,
 * well-placed points cost less power (log of their number) than a wide prior; a regression
 * beyond ×8 still crosses fast on the ×8 point. Six points up to ×8 are what the decision
 * benchmark (npm run bench:decisions) measured.
 */
export function ratioGrid(minRelativeIncrease: number, points = 6, highest = 8): number[] {
  const lo = Math.log(1 + minRelativeIncrease / 2);
  const hi = Math.log(Math.max(highest, 2 + minRelativeIncrease));
  return Array.from({ length: points }, (_, i) => Math.exp(lo + ((hi - lo) * i) / (points - 1)));
}

/** log(Σ_k w_k e^{x_k}) with equal weights, without overflow. */
function logMeanExp(xs: number[]): number {
  const m = Math.max(...xs);
  if (!Number.isFinite(m)) return m;
  let sum = 0;
  for (const x of xs) sum += Math.exp(x - m);
  return m + Math.log(sum / xs.length);
}

/**
 * log of BB(x; x + y, mean p1, concentration ν) / BB(x; x + y, mean p0, concentration ν): the
 * likelihood ratio of x canary errors among the x + y errors of a bucket when the canary's share
 * of them is beta-binomial (errors clustered: ν = 1/ρ − 1 with ρ their within-bucket
 * correlation); ν = ∞ is the binomial. The Beta functions' normalisers cancel (same ν), so the
 * ratio is a product of x + y factors.
 */
export function logShareRatio(x: number, y: number, p1: number, p0: number, nu: number): number {
  if (!(nu < 1e7)) return x * Math.log(p1 / p0) + y * Math.log((1 - p1) / (1 - p0));
  const a1 = nu * p1;
  const a0 = nu * p0;
  const b1 = nu - a1;
  const b0 = nu - a0;
  // Many errors in a bucket: the same products through log Γ, so a check costs no more per bucket.
  if (x + y > 64) return logGamma(a1 + x) - logGamma(a1) - logGamma(a0 + x) + logGamma(a0) + logGamma(b1 + y) - logGamma(b1) - logGamma(b0 + y) + logGamma(b0);
  let sum = 0;
  for (let i = 0; i < x; i++) sum += Math.log((a1 + i) / (a0 + i));
  for (let j = 0; j < y; j++) sum += Math.log((b1 + j) / (b0 + j));
  return sum;
}

export interface PairedBucket {
  /** Canary and baseline requests and errors in one time bucket. */
  canaryHits: number;
  canaryErrors: number;
  baselineHits: number;
  baselineErrors: number;
}

/** log E for "the canary's error rate is higher than the concurrent baseline's". */
export function logEConcurrent(buckets: readonly PairedBucket[], grid: readonly number[]): number {
  const llr = grid.map(() => 0);
  for (const b of buckets) {
    const errors = b.canaryErrors + b.baselineErrors;
    if (errors === 0 || b.canaryHits === 0 || b.baselineHits === 0) continue;
    const s = b.canaryHits / (b.canaryHits + b.baselineHits);
    grid.forEach((r, k) => {
      const p = (r * s) / (r * s + 1 - s);
      llr[k]! += b.canaryErrors * Math.log(p / s) + b.baselineErrors * Math.log((1 - p) / (1 - s));
    });
  }
  return logMeanExp(llr);
}

const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
  1.5056327351493116e-7,
];

/** log Γ(z) for z > 0 (Lanczos, g = 7: about 15 significant digits). */
function logGamma(z: number): number {
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z);
  const w = z - 1;
  let a = LANCZOS[0]!;
  const t = w + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (w + i);
  return 0.5 * Math.log(2 * Math.PI) + (w + 0.5) * Math.log(t) - t + Math.log(a);
}

/** One resource's errors in one bucket of a test, and the canary's share of its requests. */
export interface StratumCell {
  canaryErrors: number;
  baselineErrors: number;
  /** The canary's share of the resource's requests in the bucket, in (0, 1). */
  canaryShare: number;
}

/**
 * log E for "the canary's error rate is higher than the concurrent baseline's", stratified by
 * resource and robust to clustered errors. Each bucket is one observation: given each
 * resource's errors E_j and canary share s_j, the canary's errors x are (without clustering)
 * a sum of binomials with mean Σ E_j s_j under the null and Σ E_j p_j(r) under "r times
 * worse on every resource of the test". They are scored with the beta-binomial of that mean
 * and concentration ν (logShareRatio). A canary that serves a different mix of resources moves
 * s_j, not the comparison: each resource is compared with itself.
 */
export function logEStratified(buckets: ReadonlyArray<readonly StratumCell[]>, grid: readonly number[], nu: number, inflation = 1): number {
  const llr = grid.map(() => 0);
  for (const cells of buckets) {
    let x = 0;
    let errors = 0;
    let mean0 = 0;
    for (const c of cells) {
      const e = c.canaryErrors + c.baselineErrors;
      x += c.canaryErrors;
      errors += e;
      mean0 += e * c.canaryShare;
    }
    if (errors === 0) continue;
    grid.forEach((r, k) => {
      let mean1 = 0;
      for (const c of cells) mean1 += ((c.canaryErrors + c.baselineErrors) * r * c.canaryShare) / (r * c.canaryShare + 1 - c.canaryShare);
      llr[k]! += logShareRatio(x, errors - x, mean1 / errors, mean0 / errors, nu);
    });
  }
  return logMeanExp(llr.map((l) => l / inflation));
}

/** A bucket of a test as the dispersion estimate sees it: canary errors against their fitted mean. */
export interface DispersionCell {
  canaryErrors: number;
  errors: number;
  /** The canary's expected errors given the bucket's errors, under the fitted ratios. */
  expected: number;
  /** Their binomial (or Poisson-binomial) variance. */
  variance: number;
}

/**
 * Prior of the within-bucket correlation: worth PRIOR_WEIGHT pairs of errors at PRIOR_RHO, so
 * that a few buckets cannot talk the test into trusting clustered errors as independent.
 */
const PRIOR_RHO = 0.1;
const PRIOR_WEIGHT = 40;
const MAX_RHO = 0.9;

/**
 * The within-bucket correlation ρ of the canary's errors, by moments: with beta-binomial
 * counts, E[(x − mean)² / variance] = 1 + (E − 1) ρ, so ρ̂ = Σ (X − 1) / Σ (E − 1) over buckets
 * with E ≥ 2 (a single error carries no information on ρ). Fitting a ratio per resource
 * removes about one unit of X per resource: `fitted` adds it back, erring high.
 */
export function withinBucketCorrelation(cells: readonly DispersionCell[], fitted: number): number {
  let excess = fitted + PRIOR_RHO * PRIOR_WEIGHT;
  let pairs = PRIOR_WEIGHT;
  for (const c of cells) {
    if (c.errors < 2 || !(c.variance > 0)) continue;
    excess += (c.canaryErrors - c.expected) ** 2 / c.variance - 1;
    pairs += c.errors - 1;
  }
  return Math.min(MAX_RHO, Math.max(0, excess / pairs));
}

/** The beta-binomial concentration ν = 1/ρ − 1 of a within-bucket correlation ρ (∞ at 0). */
export const concentration = (rho: number): number => (rho > 0 ? 1 / rho - 1 : Number.POSITIVE_INFINITY);

/**
 * How much more a sum over `blockBuckets` consecutive buckets varies than its buckets do one by
 * one: Var(Σ_B r) / (B Var(r)), from a series of residuals (errors minus their expected count)
 * of the baseline, with overlapping blocks. A pod's bad spell that outlasts a bucket makes
 * neighbouring buckets' errors move together, and this ratio counts it: 1 when buckets are
 * independent, about 6 for one-minute Gamma(0.5) spells on every pod over 5-min blocks.
 * Errors minus a mean fitted on the same series lose about (B² − B)/T of a bucket's variance
 * per block, added back. The null estimate's own noise (about √(2B/T)) is subtracted, so that
 * independent errors are not deflated by chance; the result is at least 1.
 */
export function temporalInflation(residuals: readonly number[], blockBuckets: number): number {
  const n = residuals.length;
  const block = Math.min(Math.floor(blockBuckets), Math.floor(n / 2));
  if (block < 2) return 1;
  let lag0 = 0;
  for (const r of residuals) lag0 += r * r;
  lag0 /= n;
  if (!(lag0 > 0)) return 1;
  let sum = 0;
  let squares = 0;
  for (let i = 0; i < block; i++) (sum += residuals[i]!), (squares += residuals[i]! ** 2);
  let cross = sum * sum - squares;
  for (let i = block; i < n; i++) {
    sum += residuals[i]! - residuals[i - block]!;
    squares += residuals[i]! ** 2 - residuals[i - block]! ** 2;
    cross += sum * sum - squares;
  }
  const blocks = n - block + 1;
  const crossPerBlock = cross / blocks + (lag0 * (block * block - block)) / n;
  return Math.max(1, 1 + crossPerBlock / (block * lag0) - Math.sqrt((2 * block) / n));
}

/** log E for "the canary's rate of some event is above q0" (Poisson counts per bucket). */
export function logEAboveRate(buckets: ReadonlyArray<{ hits: number; events: number }>, q0: number, grid: readonly number[], dispersion = 1): number {
  let hits = 0;
  let events = 0;
  for (const b of buckets) {
    hits += b.hits;
    events += b.events;
  }
  // The statistic only depends on the totals: Σ e log r − q0 (r − 1) Σ n.
  // Counts that vary `dispersion` times more than Poisson: the quasi-likelihood, divided by it.
  return logMeanExp(grid.map((r) => (events * Math.log(r) - hits * q0 * (r - 1)) / dispersion));
}

/** A one-sided upper confidence bound of a Poisson rate per request (about 99.9%). */
export function upperRate(events: number, hits: number): number {
  if (hits <= 0) return Number.POSITIVE_INFINITY;
  // Wilson–Hilferty style bound on the Poisson mean, plus the "rule of three" floor at zero.
  const z = 3.09;
  const upperMean = events === 0 ? 6.91 : events + z * Math.sqrt(events) + (z * z + 2) / 3;
  return upperMean / hits;
}

/**
 * Grid of ratios for new error types, ×3.4 to ×8000: a type the baseline never showed is
 * tested against upperRate(0, baseline requests), a bound of a rate never seen, which a real
 * new failure can exceed a thousandfold. Cubing a ×1.5–×20 grid keeps its points evenly spaced
 * in log while spanning three orders of magnitude with ten of them.
 */
export const NEW_TYPE_GRID = ratioGrid(1, 10, 20).map((r) => r * r * r);

/** A new error type is more than noise only past this many occurrences, whatever the e-value says. */
export const MIN_NEW_TYPE_COUNT = 3;

/**
 * Requests of the canary still needed to detect an increase of `minRelativeIncrease` at
 * about 80% power: the mixture's log e-value grows by roughly n·D per request under the
 * alternative (D the Kullback–Leibler divergence per request), and must reach log(1/a) plus
 * a margin for its own spread.
 */
export function requestsNeeded(baselineRate: number, canaryShare: number, minRelativeIncrease: number, share: number): number {
  if (!(baselineRate > 0)) return Number.POSITIVE_INFINITY;
  const r = 1 + minRelativeIncrease;
  const q1 = Math.min(baselineRate * r, 0.999);
  // Per canary request: KL(Poisson(q1) || Poisson(q0)) when the baseline is fixed; with a
  // concurrent baseline the information per canary request shrinks with the canary's share.
  const perRequest = q1 * Math.log(q1 / baselineRate) - (q1 - baselineRate);
  const concurrentFactor = 1 - canaryShare;
  // The margin: a log-likelihood ratio's variance is about twice its mean for small effects,
  // so near the threshold T its spread is about √(2T); a mean of T + 2√T lies about one spread
  // past T, with room for the mixture's cost (at most log of the grid's size): about 80% power.
  const threshold = Math.log(1 / share);
  const target = threshold + 2 * Math.sqrt(threshold);
  return Math.ceil(target / (perRequest * Math.max(concurrentFactor, 0.05)));
}

/**
 * Whether a rule's verdict rests on onInsufficientData: its window ended without the traffic
 * needed to detect the increase asked for, so its PASS (or FAIL) says nothing about the version.
 * The rule records it in its evidence (`insufficientData: true`).
 */
export function decidedWithoutData(rule: { status: string; evidence?: unknown }): boolean {
  const evidence = rule.evidence as { insufficientData?: unknown } | null | undefined;
  return rule.status !== 'in_progress' && evidence?.insufficientData === true;
}

/**
 * Whether an evaluation passed while at least one rule it counts (not a dry run) passed only
 * for lack of data: "passed, but nothing was checked there", which a pipeline may treat
 * differently from a pass with evidence. Never once overridden: the verdict is then a
 * person's, and the flag must neither contradict it (FAIL) nor hold back what they let through.
 */
export function passedWithoutEvidence(
  evaluation: { status: string; overrideStatus?: string | null },
  rules: ReadonlyArray<{ status: string; dryRun: boolean; evidence?: unknown }>,
): boolean {
  if (evaluation.overrideStatus) return false;
  return evaluation.status === 'pass' && rules.some((r) => !r.dryRun && r.status === 'pass' && decidedWithoutData(r));
}

/** One instance's (pod's) requests and errors over all its endpoints in one bucket. */
export interface InstanceCount {
  instance: string;
  hits: number;
  errors: number;
}

/** What placebo instances add up to over some blocks: Σ U², Σ Var(U) and the degrees of freedom. */
export interface PlaceboSums {
  squares: number;
  variance: number;
  degreesOfFreedom: number;
}

/**
 * Adds one block of consecutive buckets (each a list of baseline instances) to `sums`: each
 * instance plays the canary against the others, with the aggregate test's statistic. In bucket
 * t, with E_t the instances' errors and s_kt instance k's share of their requests, the
 * beta-binomial score at "no change" weighs x_kt − s_kt E_t by w_t = 1/(1 + (E_t − 1) ρ), of
 * model variance w_t E_t s_kt (1 − s_kt); summed over the block, U_k and V_k. Under the model,
 * Σ_k U_k² / Σ_k V_k is about 1; spells, or an instance noisier than the model allows, make it
 * larger in the same proportion as the canary's own statistic over the same length (the canary
 * being, under the null, one more instance). The instances' U sum to zero: K instances give K − 1
 * degrees of freedom.
 */
export function addPlaceboBlock(sums: PlaceboSums, block: ReadonlyArray<readonly InstanceCount[]>, rho: number): void {
  const u = new Map<string, number>();
  const v = new Map<string, number>();
  for (const bucket of block) {
    let hits = 0;
    let errors = 0;
    for (const i of bucket) (hits += i.hits), (errors += i.errors);
    if (hits === 0 || errors === 0) continue;
    const w = 1 / (1 + (errors - 1) * rho);
    for (const i of bucket) {
      const s = i.hits / hits;
      u.set(i.instance, (u.get(i.instance) ?? 0) + w * (i.errors - s * errors));
      v.set(i.instance, (v.get(i.instance) ?? 0) + w * errors * s * (1 - s));
    }
  }
  let counted = 0;
  for (const [instance, variance] of v) {
    if (!(variance > 0)) continue;
    sums.squares += u.get(instance)! ** 2;
    sums.variance += variance;
    counted++;
  }
  if (counted >= 2) sums.degreesOfFreedom += counted - 1;
}

/**
 * The placebo estimate of how much more the canary's evidence varies than the model says:
 * R = Σ U² / Σ V, made an upper estimate by κ(df) = (t_df(p) / z)², with z = √(2 log(1/share))
 * the normal deviate at which a test of that share of alpha rejects and p its tail. Deflating by
 * an estimate R̂ ~ R χ²_df / df turns the Gaussian statistic into Student's t with df degrees of
 * freedom; κ keeps its tail at the threshold where the Gaussian's was (2.85 at 8 degrees of
 * freedom, 1.20 at 40). At least 1.
 */
export function placeboInflation(sums: PlaceboSums, share: number, gated = true): number {
  if (!(sums.variance > 0) || sums.degreesOfFreedom < 1) return 1;
  // Only past what independent pods would show 1% of the time: κR̂ is about 1.2 with no spells at
  // all (κ(40) times R̂'s own noise), which slowed detection where the baseline total's F was
  // already right (a 5× regression 3.5 → 3.7 min, 3× everywhere 92% → 84% within 15 min).
  // Ungated where there is no such F to fall back on (a service with no hour before).
  if (gated && sums.squares / sums.variance <= chiSquareQuantile(0.99, sums.degreesOfFreedom) / sums.degreesOfFreedom) return 1;
  const z = Math.sqrt(2 * Math.log(1 / share));
  // The lower tails, not 1 − the upper: 1 − Φ(z) is 0 in doubles past z ≈ 8.3 (a share below
  // about 1e-15, alpha below about 1e-14), which made κ infinite and the rule unable to fail.
  const tail = normalCdf(-z, 0, 1);
  const kappa = (tQuantile(tail, sums.degreesOfFreedom) / z) ** 2;
  return Math.max(1, kappa * (sums.squares / sums.variance));
}
