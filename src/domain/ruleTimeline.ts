// What happened to a monitor rule's monitors while it watched: the transitions inside its window,
// for the evaluation page's timeline. Only monitors the rule matched, as the reader may see the
// rule (its evidence already went through the per-reader view) and as the reader may see them now.
import type { RuleEvaluationRow } from '../db/evaluations.ts';
import { getMonitors, type TransitionRow, transitionsBetween } from '../db/monitors.ts';
import type { Deps } from './deps.ts';
import { badInput } from './errors.ts';
import { canSeeMonitor } from './monitors.ts';
import type { Principal } from './principal.ts';
import type { MonitorRuleEvidence } from './ruleEvidence.ts';

export const MAX_RULE_TRANSITIONS = 500;

export interface RuleTransition extends TransitionRow {
  monitorName: string;
}

/**
 * The transitions of the monitors `rule` matched, from the rule's start (warmup included) to its
 * window's end (or its finish, when earlier), oldest first, at most `first`. `rule` must be the rule as the reader
 * sees it (Evaluation.rules), so that withheld monitors are not even looked up.
 */
export async function ruleTransitions(deps: Deps, reader: Principal, rule: RuleEvaluationRow, first: number): Promise<RuleTransition[]> {
  if (!Number.isInteger(first) || first < 1 || first > MAX_RULE_TRANSITIONS) throw badInput('first', `must be between 1 and ${MAX_RULE_TRANSITIONS}, got ${first}`);
  if (rule.type !== 'monitor') return [];
  const matched = (rule.evidence as MonitorRuleEvidence | null)?.matchedMonitors;
  if (!Array.isArray(matched) || matched.length === 0) return [];
  const monitors = (
    await getMonitors(
      deps.db,
      matched.map((m) => m.id).filter((id): id is string => typeof id === 'string'),
    )
  ).filter((m) => canSeeMonitor(reader, m));
  const names = new Map(monitors.map((m) => [m.id, m.name]));
  const end = rule.finishedAt && rule.finishedAt < rule.windowEndsAt ? rule.finishedAt : rule.windowEndsAt;
  return (await transitionsBetween(deps.db, [...names.keys()], rule.startedAt, end, first)).map((t) => ({ ...t, monitorName: names.get(t.monitorId)! }));
}
