// The evaluations filter as the URL holds it, and as the API takes it (EvaluationFilter).

export const RANGES = [
  ['1h', 'Last hour', 3600],
  ['1d', 'Last day', 86400],
  ['7d', 'Last week', 7 * 86400],
  ['30d', 'Last 30 days', 30 * 86400],
  ['custom', 'Custom…', 0],
] as const;

const MAX_RANGE_SECONDS = 30 * 86400;

/** Facets kept in the URL as repeated parameters; the key is the API's EvaluationFilter field. */
export const LIST_FACETS = [
  ['service', 'Service', 'service'],
  ['env', 'Env', 'env'],
  ['identifier', 'Identifier', 'identifier'],
  ['version', 'Version', 'version'],
  ['status', 'Status', 'status'],
  ['ruleType', 'Rule type', 'ruleType'],
  ['ruleName', 'Rule name', 'ruleName'],
  ['gate', 'Gate', 'gateIds'],
] as const;

export interface TimeRange {
  startedAfter: string;
  startedBefore?: string;
  /** Why a custom range cannot be used, said at its field. */
  error?: { field: 'from' | 'to'; message: string };
}

/** `datetime-local` values are local wall-clock times without a zone. */
const parseLocal = (v: string | null) => (v ? new Date(v) : null);

export function timeRange(params: URLSearchParams, now = Date.now()): TimeRange {
  const range = params.get('range') ?? '1d';
  const preset = RANGES.find(([k]) => k === range && k !== 'custom');
  if (preset || range !== 'custom') return { startedAfter: new Date(now - (preset?.[2] ?? 86400) * 1000).toISOString() };
  const from = parseLocal(params.get('from'));
  const to = parseLocal(params.get('to'));
  const fallback = { startedAfter: new Date(now - 86400 * 1000).toISOString() };
  if (!from || Number.isNaN(from.getTime())) return { ...fallback, error: { field: 'from', message: 'Give the start of the range.' } };
  if (to && Number.isNaN(to.getTime())) return { ...fallback, error: { field: 'to', message: 'The end is not a valid date.' } };
  const end = to ?? new Date(now);
  if (end <= from) return { ...fallback, error: { field: 'to', message: 'The end must come after the start.' } };
  if (end.getTime() - from.getTime() > MAX_RANGE_SECONDS * 1000) return { ...fallback, error: { field: 'to', message: 'A range spans at most 30 days.' } };
  return { startedAfter: from.toISOString(), ...(to && { startedBefore: to.toISOString() }) };
}

/** The API filter for what the URL asks (time range included). */
export function evaluationFilter(params: URLSearchParams, range: TimeRange): Record<string, unknown> {
  const filter: Record<string, unknown> = { startedAfter: range.startedAfter };
  if (range.startedBefore) filter.startedBefore = range.startedBefore;
  for (const [param, , field] of LIST_FACETS) {
    const values = params.getAll(param).filter(Boolean);
    if (values.length) filter[field] = values;
  }
  for (const field of ['dryRun', 'overridden']) {
    const value = params.get(field);
    if (value === 'true' || value === 'false') filter[field] = value === 'true';
  }
  return filter;
}

/** The same URL with one facet value toggled (other parameters kept). */
export function toggled(params: URLSearchParams, param: string, value: string): URLSearchParams {
  const next = new URLSearchParams(params);
  const values = next.getAll(param);
  next.delete(param);
  for (const v of values.includes(value) ? values.filter((x) => x !== value) : [...values, value]) next.append(param, v);
  return next;
}

export function withParam(params: URLSearchParams, param: string, value: string | null): URLSearchParams {
  const next = new URLSearchParams(params);
  if (value === null || value === '') next.delete(param);
  else next.set(param, value);
  return next;
}
