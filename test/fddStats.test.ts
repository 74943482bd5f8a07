import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BucketRow, InstanceRow } from '../src/db/apm.ts';
import {
  addPlaceboBlock,
  type InstanceCount,
  logEAboveRate,
  logEConcurrent,
  logShareRatio,
  type PairedBucket,
  type PlaceboSums,
  placeboInflation,
  ratioGrid,
  upperRate,
} from '../src/domain/fdd.ts';
import { FDD_DEFAULTS } from '../src/domain/ruleOptions.ts';
import { assessFdd } from '../src/engine/fddRule.ts';
import { type ServiceScenario, simulateService } from './bench/fddSim.ts';

/** A seeded generator, so these statistical tests give the same answer on every run. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const binomial = (n: number, p: number, u: () => number) => {
  let k = 0;
  for (let i = 0; i < n; i++) if (u() < p) k++;
  return k;
};

/** Runs of 180 buckets, looked at after every bucket; how often the e-value ever reaches 1/alpha. */
function everRejects(runs: number, alpha: number, canaryRate: number, baselineRate: number, seed: number) {
  const grid = ratioGrid(0.5);
  let rejected = 0;
  for (let run = 0; run < runs; run++) {
    const u = rng(seed + run);
    const buckets: PairedBucket[] = [];
    for (let t = 0; t < 180; t++) {
      const canaryHits = 20 + Math.floor(20 * u());
      const baselineHits = 80 + Math.floor(80 * u());
      buckets.push({ canaryHits, canaryErrors: binomial(canaryHits, canaryRate, u), baselineHits, baselineErrors: binomial(baselineHits, baselineRate, u) });
      if (logEConcurrent(buckets, grid) >= Math.log(1 / alpha)) {
        rejected++;
        break;
      }
    }
  }
  return rejected / runs;
}

describe('anytime-valid error-rate test', () => {
  test('type I error stays below alpha although it is checked after every bucket (A/A, 400 runs)', () => {
    const rate = everRejects(400, 0.05, 0.02, 0.02, 1);
    assert.ok(rate <= 0.05, `false rejections ${rate}`);
  });

  test('it has power: a tripled error rate is rejected in most runs', () => {
    const rate = everRejects(100, 0.05, 0.06, 0.02, 7);
    assert.ok(rate >= 0.9, `power ${rate}`);
  });

  test('the past-baseline test: below its bound never grows, above it grows', () => {
    const grid = ratioGrid(0.5);
    const q0 = upperRate(100, 10_000); // about 1.3%
    assert.ok(q0 > 0.01 && q0 < 0.02);
    assert.ok(logEAboveRate([{ hits: 10_000, events: 100 }], q0, grid) < 0);
    assert.ok(logEAboveRate([{ hits: 10_000, events: 300 }], q0, grid) > Math.log(1000));
  });
});

/** How often the rule (the engine's own assessFdd, every 10 s over 15 min) fails a simulated canary. */
function ruleFails(sc: ServiceScenario, runs: number, alpha: number, seed: number, withInstances = false): number {
  let failed = 0;
  for (let run = 0; run < runs; run++) {
    const { past, pastPods, window } = simulateService(sc, seed + 7919 * run);
    let state = {};
    const rows: BucketRow[] = [];
    const pods: InstanceRow[] = [];
    for (let i = 0; i < window.length; i++) {
      for (const r of window[i]!.rows) if (!sc.lookback || r.version === 'v2') rows.push(r);
      pods.push(...window[i]!.pods);
      const result = assessFdd({
        options: { ...FDD_DEFAULTS, alpha, newErrorTypes: false },
        version: 'v2',
        primaryTag: null,
        state,
        past,
        rows,
        instances: withInstances ? { past: pastPods, rows: pods } : undefined,
        knownErrorTypes: new Set(),
        canaryErrorTypes: [],
        final: false,
        windowMinutes: 15,
      });
      state = result.state;
      if (result.status === 'fail') {
        failed++;
        break;
      }
    }
  }
  return failed / runs;
}

describe('errors clustered per pod (seeded simulation, test/bench/fddSim.ts)', () => {
  // 200 req/s, one canary pod of ten, each pod's error rate multiplied per 10-s bucket by a
  // Gamma(0.5) draw: the setting where the rule used to fail 21% of good canaries at alpha 1%.
  const clustered: ServiceScenario = { totalRate: 200, clusterShape: 0.5, mixShift: false, effect: {}, newTypeShare: 0, buckets: 90 };

  test('a test that counts clustered errors as independent fails good canaries far beyond alpha', () => {
    let rejected = 0;
    const runs = 100;
    for (let run = 0; run < runs; run++) {
      const { window } = simulateService(clustered, 11 + 7919 * run);
      const buckets: PairedBucket[] = window.map((b) => {
        const of = (v: string) => b.rows.filter((r) => r.version === v);
        const sum = (rs: BucketRow[], k: 'hits' | 'errors') => rs.reduce((n, r) => n + r[k], 0);
        return { canaryHits: sum(of('v2'), 'hits'), canaryErrors: sum(of('v2'), 'errors'), baselineHits: sum(of('v1'), 'hits'), baselineErrors: sum(of('v1'), 'errors') };
      });
      for (let t = 1; t <= buckets.length; t++) {
        if (logEConcurrent(buckets.slice(0, t), ratioGrid(0.5)) >= Math.log(1 / 0.05)) {
          rejected++;
          break;
        }
      }
    }
    assert.ok(rejected / runs > 0.15, `false rejections ${rejected / runs}`);
  });

  test('the rule stays within alpha on the same traffic, and with a shifted endpoint mix (A/A, 100 runs each, alpha 5%)', () => {
    const same = ruleFails(clustered, 100, 0.05, 11);
    assert.ok(same <= 0.05, `false failures ${same}`);
    const shifted = ruleFails({ ...clustered, mixShift: true }, 100, 0.05, 13);
    assert.ok(shifted <= 0.05, `false failures with a shifted mix ${shifted}`);
  });

  test('and still fails a canary whose busiest endpoint got 3× worse', () => {
    const power = ruleFails({ ...clustered, clusterShape: 2, effect: { 'GET /products': 3 } }, 20, 0.05, 17);
    assert.ok(power >= 0.8, `power ${power}`);
  });

  // A pod's bad spell that outlasts a bucket correlates its errors across consecutive buckets
  // (docs/decisions.md, "Spells"): the rule deflates its evidence by what the baseline's own
  // block sums show. Before it did, 11 of these 30 runs failed.
  test('A/A with 1-min spells per pod stays within alpha (100 req/s, Gamma(0.5), 30 runs at alpha 1%)', () => {
    const failures = Math.round(30 * ruleFails({ ...clustered, totalRate: 100, spellBuckets: 6 }, 30, 0.01, 19));
    // At alpha 1%, two or more failures in 30 runs has probability 3.6%.
    assert.ok(failures <= 1, `false failures ${failures} of 30`);
  });

  // Five-minute spells are three observations of a 15-min window: the baseline's total cannot
  // tell them from a regression, each pod's own series can (placebo instances).
  test('A/A with 5-min spells per pod: within alpha once the pods are named, beyond it without them (100 req/s, Gamma(0.5), 40 runs at alpha 1%)', () => {
    const spells = { ...clustered, totalRate: 100, spellBuckets: 30 };
    const named = Math.round(40 * ruleFails(spells, 40, 0.01, 47, true));
    assert.ok(named <= 1, `false failures with instances ${named} of 40`);
    const unnamed = Math.round(40 * ruleFails(spells, 40, 0.01, 47));
    assert.ok(unnamed >= 3, `false failures without instances ${unnamed} of 40`);
  });

  test('placebo instances rest on the hour before when there is one, and on the window alone only for a service with no hour before', () => {
    const last = (sc: ServiceScenario) => {
      const { past, pastPods, window } = simulateService(sc, 53);
      const rows = window.slice(0, 30).flatMap((b) => b.rows);
      const pods = window.slice(0, 30).flatMap((b) => b.pods);
      const input = { options: { ...FDD_DEFAULTS, alpha: 0.01 }, version: 'v2', primaryTag: null, state: {}, past, rows, knownErrorTypes: new Set<string>(), canaryErrorTypes: [] };
      return (placebo: 'with' | 'without past pods') =>
        (assessFdd({ ...input, instances: { past: placebo === 'with' ? pastPods : [], rows: pods }, final: false, windowMinutes: 15 }).evidence.clustering as any).placebo;
    };
    const withPast = last({ ...clustered, totalRate: 100 });
    // Nine pods: 8 degrees of freedom in the window, and 8 per 5-min block of the hour before.
    assert.deepEqual({ ...withPast('with'), factor: undefined }, { instances: 9, degreesOfFreedom: 8 * 13, factor: undefined });
    assert.equal(withPast('without past pods'), null, 'the service has an hour before, its pods not: the spells factor alone');
    const newService = last({ ...clustered, totalRate: 100, noPast: true });
    assert.equal(newService('without past pods').degreesOfFreedom, 8);
    // Against the hour before (no concurrent baseline), the hour before's pods alone.
    const lookback = simulateService({ ...clustered, totalRate: 100, lookback: true }, 53);
    const canaryOnly = (rows: ReadonlyArray<{ version: string }>) => rows.filter((r) => r.version === 'v2');
    const result = assessFdd({
      options: { ...FDD_DEFAULTS, alpha: 0.01 },
      version: 'v2',
      primaryTag: null,
      state: {},
      past: lookback.past,
      rows: canaryOnly(lookback.window.slice(0, 30).flatMap((b) => b.rows)) as BucketRow[],
      instances: { past: lookback.pastPods, rows: canaryOnly(lookback.window.slice(0, 30).flatMap((b) => b.pods)) as InstanceRow[] },
      knownErrorTypes: new Set(),
      canaryErrorTypes: [],
      final: false,
      windowMinutes: 15,
    });
    assert.equal(result.evidence.baseline, 'lookback');
    assert.equal((result.evidence.clustering as any).placebo.degreesOfFreedom, 8 * 12);
  });

  test('incidents shared by both versions neither fail a good canary nor blind the rule after them', () => {
    // Shared incidents inflate the baseline's own variance, which a too-small beta-binomial ν
    // or a spell estimate taken over the incident turned into false failures (every run) or
    // into a rule that could no longer fail anything.
    const aa = Math.round(30 * ruleFails({ ...clustered, clusterShape: 2, totalRate: 200, sharedBursts: true }, 30, 0.01, 31));
    assert.ok(aa <= 1, `false failures ${aa} of 30`);
    const afterIncident = { ...clustered, clusterShape: 2, totalRate: 100, pastIncident: { from: -120, to: -60, factor: 4 } };
    const power = ruleFails({ ...afterIncident, effect: { 'POST /cart/items': 5 } }, 20, 0.05, 37);
    assert.ok(power >= 0.8, `power after a 10-min incident that ended 10 min before the start ${power}`);
  });

  test('without a concurrent baseline, clustered errors are weighed against the hour before as quasi-Poisson (A/A, 100 runs at alpha 5%), and a 5× regression still fails', () => {
    const aa = ruleFails({ ...clustered, totalRate: 100, lookback: true }, 100, 0.05, 23);
    assert.ok(aa <= 0.05, `false failures ${aa}`);
    const power = ruleFails({ ...clustered, clusterShape: 2, totalRate: 100, lookback: true, effect: { 'POST /cart/items': 5 } }, 20, 0.05, 29);
    assert.ok(power >= 0.8, `power ${power}`);
  });

  test('the beta-binomial ratio is the binomial one without clustering, and flatter with it', () => {
    const binomial = 3 * Math.log(0.2 / 0.1) + 7 * Math.log(0.8 / 0.9);
    assert.ok(Math.abs(logShareRatio(3, 7, 0.2, 0.1, Number.POSITIVE_INFINITY) - binomial) < 1e-12);
    assert.ok(Math.abs(logShareRatio(3, 7, 0.2, 0.1, 1e6) - binomial) < 1e-4);
    assert.ok(logShareRatio(3, 7, 0.2, 0.1, 5) < binomial);
    assert.ok(logShareRatio(3, 7, 0.2, 0.1, 5) > 0);
  });

  test('with many errors in a bucket the ratio is computed through log Γ, to the same value', () => {
    const product = (x: number, y: number, p1: number, p0: number, nu: number) => {
      let sum = 0;
      for (let i = 0; i < x; i++) sum += Math.log((nu * p1 + i) / (nu * p0 + i));
      for (let j = 0; j < y; j++) sum += Math.log((nu * (1 - p1) + j) / (nu * (1 - p0) + j));
      return sum;
    };
    for (const [x, y, nu] of [
      [20, 45, 5],
      [3, 200, 0.5],
      [500, 4000, 30],
    ] as const) {
      assert.ok(Math.abs(logShareRatio(x, y, 0.2, 0.1, nu) - product(x, y, 0.2, 0.1, nu)) < 1e-8, `x ${x}, y ${y}, ν ${nu}`);
    }
  });
});

describe('placebo instances: each baseline pod plays the canary against the others', () => {
  /** Nine pods of equal traffic over `blocks` blocks of 30 buckets; each pod's error rate times a multiplier that lasts `spell` buckets. */
  function placeboSums(blocks: number, spell: number, seed: number): PlaceboSums {
    const u = rng(seed);
    const sums: PlaceboSums = { squares: 0, variance: 0, degreesOfFreedom: 0 };
    const multiplier = Array.from({ length: 9 }, () => 1);
    for (let b = 0; b < blocks; b++) {
      const block: InstanceCount[][] = [];
      for (let t = 0; t < 30; t++) {
        if (spell > 1) for (let k = 0; k < 9; k++) if (t % spell === 0) multiplier[k] = u() < 0.2 ? 5 : 0.2;
        block.push(Array.from({ length: 9 }, (_, k) => ({ instance: `pod-${k}`, hits: 100, errors: binomial(100, 0.02 * multiplier[k]!, u) })));
      }
      addPlaceboBlock(sums, block, 0);
    }
    return sums;
  }

  test('with independent errors, the placebo ratio is about 1 and each block adds pods − 1 degrees of freedom', () => {
    const sums = placeboSums(40, 1, 41);
    assert.equal(sums.degreesOfFreedom, 40 * 8);
    const ratio = sums.squares / sums.variance;
    assert.ok(ratio > 0.8 && ratio < 1.25, `ratio ${ratio}`);
  });

  test('spells that last several buckets show as a ratio well above 1', () => {
    const sums = placeboSums(40, 6, 43);
    assert.ok(sums.squares / sums.variance > 2.5, `ratio ${sums.squares / sums.variance}`);
  });

  test('κ keeps the tail at the threshold (2.85 at 8 degrees of freedom, 1.20 at 40) once the ratio is past chance, never below 1', () => {
    const share = 0.01 * 0.9 * 0.15;
    assert.ok(Math.abs(placeboInflation({ squares: 3, variance: 1, degreesOfFreedom: 8 }, share) - 3 * 2.85) < 0.03);
    assert.ok(Math.abs(placeboInflation({ squares: 3, variance: 1, degreesOfFreedom: 40 }, share) - 3 * 1.2) < 0.03);
    // χ²_40(99%)/40 = 1.59: a ratio of 1.5 is what forty independent pods show 2% of the time.
    assert.equal(placeboInflation({ squares: 1.5, variance: 1, degreesOfFreedom: 40 }, share), 1);
    assert.ok(placeboInflation({ squares: 1.7, variance: 1, degreesOfFreedom: 40 }, share) > 1.7);
    assert.equal(placeboInflation({ squares: 0.1, variance: 1, degreesOfFreedom: 400 }, share), 1);
    assert.equal(placeboInflation({ squares: 0, variance: 0, degreesOfFreedom: 0 }, share), 1);
  });

  test('κ stays finite at the smallest alphas a rule accepts (alpha > 0): no infinite deflation', () => {
    // alpha 1e-14: the aggregate's share is 1.35e-15, z ≈ 8.3, where 1 − Φ(z) rounds to 0.
    // Far out, Student's tail is much heavier than the Gaussian's: κ grows (24 at 1e-40), but stays finite.
    for (const [alpha, most] of [
      [1e-14, 5],
      [1e-20, 10],
      [1e-40, 50],
    ] as const) {
      const share = alpha * 0.9 * 0.15;
      const f = placeboInflation({ squares: 2, variance: 1, degreesOfFreedom: 40 }, share) / 2;
      assert.ok(Number.isFinite(f) && f >= 1 && f < most, `alpha ${alpha}: κ ${f}`);
    }
    assert.ok(placeboInflation({ squares: 2, variance: 1, degreesOfFreedom: 40 }, 1e-12) > placeboInflation({ squares: 2, variance: 1, degreesOfFreedom: 40 }, 1e-6));
  });

  test('with four pods the placebo stays on past the horizon where the hour before gives fewer than 16 degrees of freedom', () => {
    // Four baseline pods and a canary pod, 1% errors, each pod's rate ×5 or ×0.2 in 5-min spells.
    // At 73 buckets the hour before holds four blocks: 3 × 5 = 15 degrees of freedom.
    const u = rng(73);
    const pods = ['b0', 'b1', 'b2', 'b3', 'c0'];
    const multiplier = pods.map(() => 1);
    const past: BucketRow[] = [];
    const pastPods: InstanceRow[] = [];
    const rows: BucketRow[] = [];
    const podRows: InstanceRow[] = [];
    for (let t = -360; t < 80; t++) {
      if ((t + 360) % 30 === 0) for (let k = 0; k < pods.length; k++) multiplier[k] = u() < 0.2 ? 5 : 0.2;
      const counts = pods.map((instance, k) => ({ version: instance === 'c0' ? 'v2' : 'v1', instance, bucket: t, hits: 200, errors: binomial(200, 0.01 * multiplier[k]!, u) }));
      const baseline = counts.filter((c) => c.version === 'v1');
      const v1 = { bucket: t, version: 'v1', resource: 'GET /a', primaryTag: '', hits: 800, errors: baseline.reduce((n, c) => n + c.errors, 0) };
      if (t < 0) {
        past.push(v1);
        pastPods.push(...baseline);
      } else {
        rows.push(v1, { bucket: t, version: 'v2', resource: 'GET /a', primaryTag: '', hits: 200, errors: counts[4]!.errors });
        podRows.push(...counts);
      }
    }
    const check = (buckets: number, state: object) =>
      assessFdd({
        options: { ...FDD_DEFAULTS, alpha: 0.01, newErrorTypes: false },
        version: 'v2',
        primaryTag: null,
        state,
        past,
        rows: rows.filter((r) => r.bucket < buckets),
        instances: { past: pastPods, rows: podRows.filter((r) => r.bucket < buckets) },
        knownErrorTypes: new Set(),
        canaryErrorTypes: [],
        final: false,
        windowMinutes: 15,
      });
    const placeboAt = (r: ReturnType<typeof assessFdd>) => (r.evidence.clustering as { placebo: { degreesOfFreedom: number; factor: number } | null }).placebo;
    let state = {};
    for (let h = 1; h <= 80; h++) {
      const r = check(h, state);
      state = r.state;
      const placebo = placeboAt(r);
      assert.ok(placebo, `the placebo is measured at ${h} buckets`);
      assert.ok((r.evidence.clustering as { spells: number }).spells >= placebo.factor);
      if (h === 73) assert.equal(placebo.degreesOfFreedom, 15);
    }
    // A rule whose first check comes that late never had the hour before's 16: no placebo.
    assert.equal(placeboAt(check(73, {})), null);
  });
});
