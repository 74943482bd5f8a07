// The evidence a metric rule records (src/engine/metricRule.ts), and its typed view for readers.
// Stored JSON may come from an older version of the rule, so the reader takes every field as
// optional: a missing or mistyped one reads as null (or an empty list), never as an error.

/** A value as recorded: JSON has no infinities, so they are written as "+Inf" / "-Inf". */
export type RecordedValue = number | '+Inf' | '-Inf';

export interface MetricPoint {
  /** When the point measures (ISO 8601). */
  at: string;
  /** The canary's value (absolute bound: the value); null without data. */
  value: RecordedValue | null;
  /** Relative bounds: the baseline's value at the same time; null without data. */
  baseline?: RecordedValue | null;
  /** The limit the value was held to; null when the point had no data. */
  limit: number | null;
  result: 'pass' | 'fail' | 'no_data';
  /** Why a point has no data, or what else a reader needs about it. */
  note?: string;
  /** APM: the requests behind the value and the baseline. */
  requests?: number;
  baselineRequests?: number;
}

export interface MetricEvidence {
  source: 'prometheus' | 'apm';
  /** The PromQL sent, placeholders filled. */
  query?: string;
  baselineQuery?: string;
  /** APM: what was measured. */
  apm?: { metric: string; resource: string | null; window: number; version: string | null; baselineVersions: string[] };
  bound: string;
  margin?: number;
  failureLimit: number;
  consecutiveSuccessLimit: number;
  failOnNoData: boolean;
  /** Points in the window; `points` holds those measured so far. */
  planned: number;
  points: MetricPoint[];
  failures: number;
  noData: number;
  /** Set by the engine when the source failed. */
  sourceErrors?: number;
  lastError?: string;
}

export const recordValue = (x: number): RecordedValue => (Number.isFinite(x) ? x : x > 0 ? '+Inf' : '-Inf');

export interface MetricPointView {
  at: string;
  value: number | null;
  baseline: number | null;
  limit: number | null;
  /** The value as shown: "0.0213", "+Inf", "no data". */
  text: string;
  result: 'pass' | 'fail' | 'no_data';
  note: string | null;
  requests: number | null;
  baselineRequests: number | null;
}

export interface MetricEvidenceView {
  source: 'prometheus' | 'apm' | null;
  query: string | null;
  baselineQuery: string | null;
  apmMetric: string | null;
  resource: string | null;
  window: number | null;
  version: string | null;
  baselineVersions: string[];
  bound: string | null;
  margin: number | null;
  failureLimit: number | null;
  consecutiveSuccessLimit: number | null;
  planned: number | null;
  failures: number | null;
  noData: number | null;
  points: MetricPointView[];
  sourceErrors: number | null;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | null => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const RESULTS = new Set(['pass', 'fail', 'no_data']);

const shown = (v: unknown): string => (typeof v === 'number' ? String(Number(v.toPrecision(6))) : v === '+Inf' || v === '-Inf' ? v : 'no data');

/** The typed view of a metric rule's evidence; null when there is none yet. */
export function readMetricEvidence(evidence: unknown): MetricEvidenceView | null {
  const e = obj(evidence);
  if (!e) return null;
  const apm = obj(e.apm);
  const source = str(e.source);
  return {
    source: source === 'prometheus' || source === 'apm' ? source : null,
    query: str(e.query),
    baselineQuery: str(e.baselineQuery),
    apmMetric: str(apm?.metric),
    resource: str(apm?.resource),
    window: num(apm?.window),
    version: str(apm?.version),
    baselineVersions: list(apm?.baselineVersions).filter((v): v is string => typeof v === 'string'),
    bound: str(e.bound),
    margin: num(e.margin),
    failureLimit: num(e.failureLimit),
    consecutiveSuccessLimit: num(e.consecutiveSuccessLimit),
    planned: num(e.planned),
    failures: num(e.failures),
    noData: num(e.noData),
    points: list(e.points).flatMap((v) => {
      const p = obj(v);
      const at = str(p?.at);
      const result = str(p?.result);
      if (!p || at === null || result === null || !RESULTS.has(result)) return [];
      return [
        {
          at,
          value: num(p.value),
          baseline: num(p.baseline),
          limit: num(p.limit),
          text: shown(p.value),
          result: result as MetricPointView['result'],
          note: str(p.note),
          requests: num(p.requests),
          baselineRequests: num(p.baselineRequests),
        },
      ];
    }),
    sourceErrors: num(e.sourceErrors),
  };
}
