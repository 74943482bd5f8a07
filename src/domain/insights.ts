// What the explorer shows beside the list of evaluations: the values each facet offers, and the
// insights page (per day, most failing, failure reasons, time to verdict). Everything is read
// over a time range of at most 30 days and only over the caller's environments: a count of
// another env's evaluations is a leak like any other.
import { type EvaluationFilter, type Facet, type FacetValueRow, facetValues } from '../db/evaluations.ts';
import type { Deps } from './deps.ts';
import { badInput } from './errors.ts';
import { type Principal, requireScope } from './principal.ts';

const DAY_MS = 24 * 60 * 60_000;
export const MAX_RANGE_MS = 30 * DAY_MS;
export const DEFAULT_RANGE_MS = 7 * DAY_MS;
/** Values a facet lists at most. */
export const MAX_FACET_VALUES = 100;

const requireRead = (actor: Principal) => requireScope(actor, ['gates:read', 'evaluations:write'], 'read evaluations');

/**
 * The filter with a bounded time range: startedBefore defaults to now, startedAfter to 7 days
 * before it; more than 30 days is refused (the aggregates read every evaluation of the range).
 */
export function boundedRange(filter: EvaluationFilter, now: Date): EvaluationFilter & { startedAfter: Date; startedBefore: Date } {
  const startedBefore = filter.startedBefore ?? now;
  const startedAfter = filter.startedAfter ?? new Date(startedBefore.getTime() - DEFAULT_RANGE_MS);
  if (startedAfter.getTime() >= startedBefore.getTime()) throw badInput('filter.startedAfter', 'must be before filter.startedBefore');
  if (startedBefore.getTime() - startedAfter.getTime() > MAX_RANGE_MS) {
    throw badInput('filter.startedAfter', `the time range is at most 30 days, got ${((startedBefore.getTime() - startedAfter.getTime()) / DAY_MS).toFixed(1)}`);
  }
  return { ...filter, startedAfter, startedBefore };
}

export function boundedTop(top: number, field = 'top'): number {
  if (!Number.isInteger(top) || top < 1 || top > MAX_FACET_VALUES) throw badInput(field, `must be between 1 and ${MAX_FACET_VALUES}, got ${top}`);
  return top;
}

export const FACETS: readonly Facet[] = ['service', 'env', 'identifier', 'version', 'status', 'dryRun', 'gate', 'ruleType', 'ruleName'];

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
const asFilterValue = (facet: Facet, v: FacetValueRow): FacetValueRow =>
  facet === 'status' || facet === 'ruleType' ? { ...v, value: v.value.toUpperCase() } : v;

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
    values[facet] = facetValues(deps.db, facet, others, limit).map((v) => asFilterValue(facet, v));
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { startedAfter: ranged.startedAfter, startedBefore: ranged.startedBefore, values };
}
