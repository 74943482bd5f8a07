import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { logEAboveRate, logEConcurrent, type PairedBucket, ratioGrid, upperRate } from '../src/domain/fdd.ts';

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
