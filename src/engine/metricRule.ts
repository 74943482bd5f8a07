// The metric rule (docs/rules/metric.md): one value measured at fixed points of the window,
// from PromQL or from the APM store, held to an absolute bound or to the baseline (the other
// versions at the same time), with Argo's failureLimit / consecutiveSuccessLimit tolerance.
// Each point is measured at its own timestamp (PromQL's `time`, APM buckets before it), so a
// point measured late (after a restart, after Prometheus came back) reads what it would have
// read on time, and the recorded points are the rule's whole state.
import { DDSketch } from '@datadog/sketches-js';
import type { Config } from '../config.ts';
import { carriesPrimaryTag, primaryTagsOf, type SketchRow, statsRows } from '../db/apm.ts';
import type { EvaluationRow } from '../db/evaluations.ts';
import { APM_BUCKET_MS } from '../db/schema.ts';
import type { Deps } from '../domain/deps.ts';
import { SourceError } from '../domain/errors.ts';
import { type Bound, deriveBaseline, expandPlaceholders, holds, limitOf, measurementTimes, parseBound } from '../domain/metric.ts';
import { type MetricEvidence, type MetricPoint, recordValue } from '../domain/metricEvidence.ts';
import type { MetricRuleOptions } from '../domain/ruleOptions.ts';
import { type PrometheusClient, PromqlRejected, prometheusClient, type Series } from '../sources/prometheus.ts';
import { SETTLE_MS } from './fddRule.ts';
import type { CheckResult, RuleRunner } from './runner.ts';

/** Points one check measures at most (a resumed rule catches up over several checks). */
const MAX_POINTS_PER_CHECK = 30;

interface MetricState {
  points?: MetricPoint[];
  /** APM, relative bound: every other version seen in the baseline so far. */
  baselineVersions?: string[];
}

/** One side's value at one point, or why it has none. */
type Reading = { value: number; requests?: number; note?: undefined } | { value: null; note: string; requests?: number };

interface Source {
  /** What the evidence says about the source (queries as sent, APM scope). */
  describe(): Pick<MetricEvidence, 'source' | 'query' | 'baselineQuery' | 'apm'>;
  /** When the data of the point at `t` is complete enough to read. */
  readyAt(t: number): number;
  read(at: Date): Promise<{ canary: Reading; baseline?: Reading }> | { canary: Reading; baseline?: Reading };
}

/** The rule's own configuration is wrong (the query refused, several series): it fails now. */
class Misconfigured extends Error {}

// ---- PromQL ----

const clients = new WeakMap<Config, PrometheusClient>();
function prometheusOf(config: Config): PrometheusClient {
  if (!config.prometheusUrl) throw new SourceError('this Tollgate has no Prometheus to ask (TOLLGATE_PROMETHEUS_URL is not set)');
  let client = clients.get(config);
  if (!client) clients.set(config, (client = prometheusClient({ url: config.prometheusUrl, bearerToken: config.prometheusToken, timeoutMs: config.prometheusTimeoutMs })));
  return client;
}

const seriesName = (labels: Record<string, string>) =>
  `{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;

async function instant(client: PrometheusClient, expr: string, at: Date, what: string): Promise<Reading> {
  let series: Series[];
  try {
    series = await client.query(expr, at);
  } catch (err) {
    if (err instanceof PromqlRejected) throw new Misconfigured(`Prometheus refused the ${what}: ${err.message}`);
    throw err;
  }
  if (series.length === 0) return { value: null, note: `the ${what} returned no series` };
  if (series.length > 1) {
    const names = series
      .slice(0, 2)
      .map((s) => seriesName(s.labels))
      .join(', ');
    throw new Misconfigured(
      `the ${what} returned ${series.length} series (${names}${series.length > 2 ? ', …' : ''}); a metric rule judges one value: aggregate it, e.g. sum(…) or max(…)`,
    );
  }
  const value = series[0]!.value;
  // NaN is what 0/0 gives without traffic: no data, never a pass.
  if (Number.isNaN(value)) return { value: null, note: `the ${what} returned NaN` };
  return { value };
}

function prometheusSource(deps: Deps, o: MetricRuleOptions, e: EvaluationRow, relative: boolean): Source {
  const values = { version: e.version, service: e.service, env: e.env };
  const query = expandPlaceholders(o.query!, values);
  const baselineQuery = relative ? expandPlaceholders(o.baselineQuery ?? deriveBaseline(o.query!), values) : undefined;
  return {
    describe: () => ({ source: 'prometheus', query, ...(baselineQuery !== undefined && { baselineQuery }) }),
    readyAt: (t) => t,
    async read(at) {
      const client = prometheusOf(deps.config);
      const [canary, baseline] = await Promise.all([
        instant(client, query, at, 'query'),
        baselineQuery === undefined ? undefined : instant(client, baselineQuery, at, 'baseline query'),
      ]);
      return { canary, baseline };
    },
  };
}

// ---- the APM store ----

function apmValue(metric: NonNullable<MetricRuleOptions['apm']>['metric'], rows: readonly SketchRow[], minRequests: number): Reading {
  let hits = 0;
  let errors = 0;
  for (const r of rows) (hits += r.hits), (errors += r.errors);
  // Traffic is the metric itself: none is a value.
  if (metric === 'hits') return { value: hits, requests: hits };
  if (hits < minRequests) return { value: null, note: hits === 0 ? 'no requests' : `${hits} request(s), fewer than minRequests ${minRequests}`, requests: hits };
  if (metric === 'error_rate') return { value: errors / hits, requests: hits };
  if (metric === 'error_count') return { value: errors, requests: hits };
  const served = rows.filter((r) => r.hits > 0);
  const sketch = DDSketch.fromProto(served[0]!.durations);
  for (const r of served.slice(1)) sketch.merge(DDSketch.fromProto(r.durations));
  return { value: sketch.getValueAtQuantile(metric === 'p95' ? 0.95 : 0.99), requests: hits };
}

function apmSource(deps: Deps, o: MetricRuleOptions, e: EvaluationRow, relative: boolean, state: MetricState): Source {
  const apm = o.apm!;
  const windowMs = (apm.window ?? o.interval) * 1000;
  const version = e.version;
  const baselineVersions = new Set(state.baselineVersions ?? []);
  const narrowedTo = primaryTagsOf(e.primaryTag);
  const inScope = (r: SketchRow) => (apm.resource === undefined || r.resource === apm.resource) && narrowedTo.every((tag) => carriesPrimaryTag(r.primaryTag, tag));
  return {
    describe: () => ({
      source: 'apm',
      apm: { metric: apm.metric, resource: apm.resource ?? null, window: windowMs / 1000, version, baselineVersions: [...baselineVersions].sort() },
    }),
    // A point reads the buckets that start in [t − window, t); the last one ends at or after t.
    readyAt: (t) => Math.ceil(t / APM_BUCKET_MS) * APM_BUCKET_MS + SETTLE_MS,
    async read(at) {
      const t = at.getTime();
      const rows = (await statsRows(deps.db, { service: e.service, env: e.env, from: t - windowMs, to: t })).filter(inScope);
      // Without a version an absolute bound judges the whole service (a pre-deploy check).
      const canary = apmValue(apm.metric, version === null ? rows : rows.filter((r) => r.version === version), apm.minRequests);
      if (!relative) return { canary };
      const others = rows.filter((r) => r.version !== version);
      for (const r of others) if (r.hits > 0) baselineVersions.add(r.version);
      return { canary, baseline: apmValue(apm.metric, others, apm.minRequests) };
    },
  };
}

// ---- judging ----

const fmt = (x: number | null | undefined) => (x === null || x === undefined ? '—' : Number.isFinite(x) ? String(Number(x.toPrecision(4))) : x > 0 ? '+Inf' : '-Inf');
const iso = (t: number | Date) => new Date(t).toISOString();

function judgePoint(t: number, r: { canary: Reading; baseline?: Reading }, bound: Bound, margin: number | undefined): MetricPoint {
  const base = { at: iso(t), value: r.canary.value === null ? null : recordValue(r.canary.value), ...(r.canary.requests !== undefined && { requests: r.canary.requests }) };
  const withBaseline = r.baseline
    ? { baseline: r.baseline.value === null ? null : recordValue(r.baseline.value), ...(r.baseline.requests !== undefined && { baselineRequests: r.baseline.requests }) }
    : {};
  if (r.canary.value === null) return { ...base, ...withBaseline, limit: null, result: 'no_data', note: r.canary.note };
  if (r.baseline && r.baseline.value === null) return { ...base, ...withBaseline, limit: null, result: 'no_data', note: `the baseline: ${r.baseline.note}` };
  if (r.baseline && !Number.isFinite(r.baseline.value)) return { ...base, ...withBaseline, limit: null, result: 'no_data', note: `the baseline was ${fmt(r.baseline.value)}` };
  const limit = limitOf(bound, r.baseline?.value ?? null, margin);
  return { ...base, ...withBaseline, limit, result: holds(bound.op, r.canary.value, limit) ? 'pass' : 'fail' };
}

const shownValue = (v: MetricPoint['value']) => (typeof v === 'number' ? fmt(v) : (v ?? '—'));

function describePoint(p: MetricPoint): string {
  if (p.result === 'no_data') return `${p.at} no data (${p.note ?? 'nothing returned'})`;
  const baseline = p.baseline !== undefined ? `, baseline ${shownValue(p.baseline)}` : '';
  return `${p.at} ${shownValue(p.value)} against the limit ${fmt(p.limit)}${baseline}`;
}

const list = (points: readonly MetricPoint[]) => `${points.slice(0, 3).map(describePoint).join('; ')}${points.length > 3 ? ` and ${points.length - 3} more` : ''}`;

interface Verdict {
  status: 'pass' | 'fail';
  reason: string;
}

/** Where the points measured so far leave the rule: decided, or null to measure on. */
function decide(points: readonly MetricPoint[], planned: number, o: MetricRuleOptions, boundText: string): Verdict | null {
  const broke = points.filter((p) => p.result === 'fail' || (p.result === 'no_data' && o.failOnNoData));
  const skipped = o.failOnNoData ? 0 : points.filter((p) => p.result === 'no_data').length;
  if (o.failureLimit >= 0 && broke.length > o.failureLimit) {
    const limit = o.failureLimit > 0 ? `, more than failureLimit ${o.failureLimit} allows` : '';
    return { status: 'fail', reason: `${broke.length} of ${points.length} point(s) broke ${boundText}${limit}: ${list(broke)}.` };
  }
  const needed = o.consecutiveSuccessLimit;
  let run = 0;
  let longest = 0;
  for (const p of points) {
    if (p.result === 'pass') longest = Math.max(longest, ++run);
    else if (p.result === 'fail' || o.failOnNoData) run = 0;
  }
  if (needed > 0 && run >= needed) {
    return { status: 'pass', reason: `${needed} consecutive point(s) were within ${boundText} (consecutiveSuccessLimit ${needed}), the last at ${points.at(-1)!.at}.` };
  }
  if (points.length < planned) return null;
  if (points.every((p) => p.result === 'no_data')) {
    return { status: 'fail', reason: `None of the ${points.length} point(s) had data (${points[0]!.note ?? 'nothing returned'}): a rule that saw nothing fails.` };
  }
  if (needed > 0) {
    return {
      status: 'fail',
      reason: `The window ended without ${needed} consecutive point(s) within ${boundText} (the longest run was ${longest}): an inconclusive analysis fails.`,
    };
  }
  const within = points.filter((p) => p.result === 'pass').length;
  const head = broke.length === 0 && skipped === 0 ? `All ${points.length} point(s)` : `${within} of ${points.length} point(s)`;
  const tolerated = broke.length > 0 ? `; ${broke.length} outside, within failureLimit ${o.failureLimit}` : '';
  const gaps = skipped > 0 ? `; ${skipped} without data, skipped (failOnNoData is false)` : '';
  return { status: 'pass', reason: `${head} from ${points[0]!.at} to ${points.at(-1)!.at} were within ${boundText}${tolerated}${gaps}.` };
}

function boundTextOf(o: MetricRuleOptions, bound: Bound): string {
  if (!bound.relative) return `value ${o.bound}`;
  return `${o.bound} of the baseline${o.margin ? ` (margin ${o.margin})` : ''}`;
}

export const metricRunner: RuleRunner = {
  type: 'metric',

  plan(options, start) {
    const o = options as MetricRuleOptions;
    const windowStartsAt = new Date(start.getTime() + o.warmup * 1000);
    return { windowStartsAt, windowEndsAt: new Date(windowStartsAt.getTime() + o.duration * 1000), nextCheckAt: windowStartsAt };
  },

  async check(deps, { rule, evaluation, now }): Promise<CheckResult> {
    const o = rule.options as MetricRuleOptions;
    if (now < rule.windowStartsAt) {
      return { status: 'in_progress', reason: `Warming up until ${iso(rule.windowStartsAt)}.`, nextCheckAt: rule.windowStartsAt };
    }
    const bound = parseBound(o.bound) as Bound;
    const boundText = boundTextOf(o, bound);
    const state = (rule.state ?? {}) as MetricState;
    const points = [...(state.points ?? [])];
    const source = o.query !== undefined ? prometheusSource(deps, o, evaluation, bound.relative) : apmSource(deps, o, evaluation, bound.relative, state);
    const times = measurementTimes(rule.windowStartsAt.getTime(), rule.windowEndsAt.getTime(), o.interval);
    const evidence = (): MetricEvidence => {
      const described = source.describe();
      return {
        ...described,
        bound: o.bound,
        ...(o.margin !== undefined && { margin: o.margin }),
        failureLimit: o.failureLimit,
        consecutiveSuccessLimit: o.consecutiveSuccessLimit,
        failOnNoData: o.failOnNoData,
        planned: times.length,
        points: [...points],
        failures: points.filter((p) => p.result === 'fail').length,
        noData: points.filter((p) => p.result === 'no_data').length,
      };
    };
    const newState = (): Record<string, unknown> => {
      const seen = source.describe().apm?.baselineVersions ?? [];
      return { points: [...points], ...(seen.length > 0 && { baselineVersions: seen }) };
    };
    const done = (v: Verdict): CheckResult => ({ ...v, evidence: evidence() as unknown as Record<string, unknown>, state: newState() });

    try {
      for (let measured = 0; points.length < times.length && measured < MAX_POINTS_PER_CHECK; measured++) {
        const t = times[points.length]!;
        if (source.readyAt(t) > now.getTime()) break;
        points.push(judgePoint(t, await source.read(new Date(t)), bound, o.margin));
        const verdict = decide(points, times.length, o, boundText);
        if (verdict) return done(verdict);
      }
    } catch (err) {
      if (err instanceof Misconfigured) return done({ status: 'fail', reason: `${err.message}.` });
      // The points read before the source failed are shown; they are read again next time.
      if (err instanceof SourceError) throw new SourceError(err.message, evidence() as unknown as Record<string, unknown>);
      throw err;
    }
    const next = points.length < times.length ? Math.max(now.getTime(), source.readyAt(times[points.length]!)) : now.getTime();
    const outside = points.filter((p) => p.result !== 'pass').length;
    return {
      status: 'in_progress',
      reason: `${points.length} of ${times.length} point(s) measured, ${outside} outside ${boundText} or without data; next at ${iso(next)}.`,
      evidence: evidence() as unknown as Record<string, unknown>,
      state: newState(),
      nextCheckAt: new Date(next),
    };
  },
};
