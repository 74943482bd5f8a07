// What the explorer shows beside the list of evaluations: the values each facet offers, and the
// insights page (per day, most failing, failure reasons, time to verdict). Everything is read
// over a time range of at most 30 days and only over the caller's environments: a count of
// another env's evaluations is a leak like any other.
import {
  countsByDay,
  type EvaluationFilter,
  type EvaluationStatsRow,
  type Facet,
  type FacetValueRow,
  type FailedRuleLine,
  facetValues,
  failedRulesPage,
  getRuleEvaluations,
  mostFailing,
  type RuleEvaluationRow,
  verdictTimes,
} from '../db/evaluations.ts';
import type { RuleType } from '../db/schema.ts';
import type { Deps } from './deps.ts';
import { badInput } from './errors.ts';
import { type Principal, requireScope } from './principal.ts';
import { ruleEvaluationFor, seesAllOf } from './ruleEvidence.ts';

const DAY_MS = 24 * 60 * 60_000;
const MAX_RANGE_MS = 30 * DAY_MS;
const DEFAULT_RANGE_MS = 7 * DAY_MS;
/** Values a facet lists at most. */
const MAX_FACET_VALUES = 100;

const requireRead = (actor: Principal) => requireScope(actor, ['gates:read', 'evaluations:write'], 'read evaluations');

/**
 * The filter with a bounded time range: startedBefore defaults to now, startedAfter to 7 days
 * before it; more than 30 days is refused (the aggregates read every evaluation of the range).
 */
function boundedRange(filter: EvaluationFilter, now: Date): EvaluationFilter & { startedAfter: Date; startedBefore: Date } {
  const startedBefore = filter.startedBefore ?? now;
  const startedAfter = filter.startedAfter ?? new Date(startedBefore.getTime() - DEFAULT_RANGE_MS);
  if (startedAfter.getTime() >= startedBefore.getTime()) throw badInput('filter.startedAfter', 'must be before filter.startedBefore');
  if (startedBefore.getTime() - startedAfter.getTime() > MAX_RANGE_MS) {
    throw badInput('filter.startedAfter', `the time range is at most 30 days, got ${((startedBefore.getTime() - startedAfter.getTime()) / DAY_MS).toFixed(1)}`);
  }
  return { ...filter, startedAfter, startedBefore };
}

function boundedTop(top: number, field = 'top'): number {
  if (!Number.isInteger(top) || top < 1 || top > MAX_FACET_VALUES) throw badInput(field, `must be between 1 and ${MAX_FACET_VALUES}, got ${top}`);
  return top;
}

const FACETS: readonly Facet[] = ['service', 'env', 'identifier', 'version', 'status', 'dryRun', 'gate', 'ruleType', 'ruleName'];

/** The filter's own selection of a facet, left out when counting that facet's values. */
const OWN: Record<Facet, ReadonlyArray<keyof EvaluationFilter>> = {
  service: ['service'],
  env: ['env'],
  identifier: ['identifier'],
  version: ['version'],
  status: ['status'],
  dryRun: ['dryRun'],
  gate: ['gateId', 'gateIds'],
  ruleType: ['ruleType'],
  ruleName: ['ruleName'],
};

/** Values as the API's filter takes them back: enum names for status and rule type. */
const asFilterValue = (facet: Facet, v: FacetValueRow): FacetValueRow => (facet === 'status' || facet === 'ruleType' ? { ...v, value: v.value.toUpperCase() } : v);

export interface Facets {
  startedAfter: Date;
  startedBefore: Date;
  values: Record<Facet, FacetValueRow[]>;
}

/**
 * Each facet's values with their counts, most first, at most `top` each. A facet's counts
 * apply every other condition of the filter but not its own selection, so that choosing one
 * service still offers the others (with what they would add). One grouped query per facet,
 * with a turn of the event loop between them.
 */
export async function evaluationFacets(deps: Deps, actor: Principal, filter: EvaluationFilter, top: number): Promise<Facets> {
  requireRead(actor);
  const ranged = { ...boundedRange(filter, deps.now()), envs: actor.envs };
  const limit = boundedTop(top);
  const values = {} as Record<Facet, FacetValueRow[]>;
  for (const facet of FACETS) {
    const others: EvaluationFilter = { ...ranged };
    for (const key of OWN[facet]) delete others[key];
    values[facet] = (await facetValues(deps.db, facet, others, limit)).map((v) => asFilterValue(facet, v));
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { startedAfter: ranged.startedAfter, startedBefore: ranged.startedBefore, values };
}

// ---- insights ----

export interface DayCounts {
  day: string;
  pass: number;
  fail: number;
  canceled: number;
  inProgress: number;
  total: number;
}

export interface FailureReasonGroup {
  /** The reason with numbers, ids and times replaced by placeholders. */
  pattern: string;
  /** One reason of the group as the reader may see it (the newest). */
  sample: string;
  /** The sample without its times (readableReason), for people. */
  label: string;
  ruleType: RuleType;
  count: number;
}

export interface VerdictTime {
  decided: number;
  p50Ms: number | null;
  p90Ms: number | null;
  p95Ms: number | null;
  maxMs: number | null;
}

export interface Insights {
  startedAfter: Date;
  startedBefore: Date;
  days: DayCounts[];
  failingGates: EvaluationStatsRow['failingGates'];
  failingRules: EvaluationStatsRow['failingRules'];
  failureReasons: FailureReasonGroup[];
  /** Failed rules whose reasons were grouped, newest first, and whether that was all of them. */
  failedRulesRead: number;
  failedRulesComplete: boolean;
  timeToVerdict: VerdictTime;
}

/** Failed rules read to group their reasons, at most: the newest ones when there are more. */
export const MAX_REASON_ROWS = 20_000;
const REASON_PAGE = 1000;
/** Characters of a reason considered: the part that tells one failure from another. */
const REASON_CHARS = 300;

/**
 * A reason with what differs between occurrences of the same failure replaced by placeholders:
 * times, ids, numbers. `"m" was ALERT at 2026-01-01T10:00:00.000Z` and the same at another time
 * are one group; "error rate of GET /cart rose from 1.00% to 9.80%" and of POST /pay are two.
 */
export function normalizeReason(reason: string): string {
  return reason
    .slice(0, REASON_CHARS)
    .replace(/\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?/g, '<time>')
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '<id>')
    .replace(/\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b/gi, '<id>')
    .replace(/\d+(?:[.,]\d+)*(?:e[+-]?\d+)?/gi, '<n>')
    .replace(/\s+/g, ' ')
    .trim();
}

const TIME = String.raw`\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?`;
const TIME_SPAN = new RegExp(String.raw`\s+from\s+${TIME}\s+to\s+${TIME}`, 'g');
const TIME_PHRASE = new RegExp(String.raw`\s+(?:at|since|until|on|after|before)\s+${TIME}`, 'g');
const BARE_TIME = new RegExp(TIME, 'g');

/**
 * A group's reason as people read it: the newest reason with the times its failures differ in
 * left out, with the words that introduce them ("was ALERT at 2026-…Z" reads "was ALERT").
 * Names, ids and numbers stay: they are one example's, and the UI says so.
 */
export function readableReason(reason: string): string {
  return reason.replace(TIME_SPAN, '').replace(TIME_PHRASE, '').replace(BARE_TIME, '(a time)');
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Every UTC day of the range, with zeros where nothing started. */
function fillDays(rows: ReadonlyArray<{ day: string; status: string; count: number }>, from: Date, to: Date): DayCounts[] {
  const days = new Map<string, DayCounts>();
  const first = Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate());
  for (let t = first; t < to.getTime(); t += DAY_MS) {
    const day = new Date(t).toISOString().slice(0, 10);
    days.set(day, { day, pass: 0, fail: 0, canceled: 0, inProgress: 0, total: 0 });
  }
  for (const r of rows) {
    const d = days.get(r.day);
    if (!d) continue;
    if (r.status === 'pass') d.pass += r.count;
    else if (r.status === 'fail') d.fail += r.count;
    else if (r.status === 'canceled') d.canceled += r.count;
    else d.inProgress += r.count;
    d.total += r.count;
  }
  return [...days.values()];
}

/**
 * The failed rules' reasons as the reader may see them, grouped by pattern, most frequent
 * first. Reasons are read a page at a time (light columns); a rule whose evaluation reached
 * further than the reader's environments is read whole and shown through the per-reader view
 * (ruleEvidence.ts) before its reason counts, as Evaluation.rules would show it.
 */
async function failureReasons(deps: Deps, actor: Principal, filter: EvaluationFilter, top: number) {
  const groups = new Map<string, FailureReasonGroup>();
  let read = 0;
  let after: FailedRuleLine | null = null;
  let complete = true;
  for (;;) {
    const page = await failedRulesPage(deps.db, filter, after, Math.min(REASON_PAGE, MAX_REASON_ROWS - read));
    const viewed = new Map<string, RuleEvaluationRow>();
    const needView = page.filter((l) => !seesAllOf(actor, l));
    if (needView.length > 0) {
      for (const rule of await getRuleEvaluations(
        deps.db,
        needView.map((l) => l.id),
      )) {
        const line = needView.find((l) => l.id === rule.id)!;
        viewed.set(rule.id, ruleEvaluationFor(actor, line, rule));
      }
    }
    for (const line of page) {
      const reason = (viewed.get(line.id)?.reason ?? line.reason ?? '').trim() || '(no reason given)';
      const pattern = normalizeReason(reason);
      const key = `${line.type}\u0000${pattern}`;
      const g = groups.get(key);
      if (g) g.count++;
      else groups.set(key, { pattern, sample: reason, label: readableReason(reason), ruleType: line.type, count: 1 });
    }
    read += page.length;
    if (page.length === 0 || read >= MAX_REASON_ROWS) {
      complete = page.length === 0 || (await failedRulesPage(deps.db, filter, page.at(-1)!, 1)).length === 0;
      break;
    }
    after = page.at(-1)!;
    await nextTurn();
  }
  const sorted = [...groups.values()].sort((a, b) => b.count - a.count || (a.pattern < b.pattern ? -1 : 1));
  return { reasons: sorted.slice(0, top), read, complete };
}

/**
 * The insights page over a range of at most 30 days (default 7): evaluations per day and real
 * status, the gates and rules that failed most (with their ids), the most common failure
 * reasons, and the time from start to verdict. Only the caller's environments count.
 */
export async function evaluationInsights(deps: Deps, actor: Principal, filter: EvaluationFilter, top: number): Promise<Insights> {
  requireRead(actor);
  const ranged = { ...boundedRange(filter, deps.now()), envs: actor.envs };
  const limit = boundedTop(top);
  const days = fillDays(await countsByDay(deps.db, ranged), ranged.startedAfter, ranged.startedBefore);
  await nextTurn();
  const { failingGates, failingRules } = await mostFailing(deps.db, ranged, limit);
  await nextTurn();
  const times = await verdictTimes(deps.db, ranged, [0.5, 0.9, 0.95]);
  await nextTurn();
  const reasons = await failureReasons(deps, actor, ranged, limit);
  return {
    startedAfter: ranged.startedAfter,
    startedBefore: ranged.startedBefore,
    days,
    failingGates,
    failingRules,
    failureReasons: reasons.reasons,
    failedRulesRead: reasons.read,
    failedRulesComplete: reasons.complete,
    timeToVerdict: {
      decided: times.count,
      p50Ms: times.byPercent.get(0.5) ?? null,
      p90Ms: times.byPercent.get(0.9) ?? null,
      p95Ms: times.byPercent.get(0.95) ?? null,
      maxMs: times.max,
    },
  };
}
