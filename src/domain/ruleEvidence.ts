// What a reader may see of a rule evaluation. A rule matches the monitors its trigger may see;
// a reader limited to fewer environments than the trigger sees only the part of the evidence
// about monitors of its own environments, and a reason that names nothing else.
import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import type { EvaluationSnapshot } from './events.ts';
import { describeFreezes, type FreezeEvidence } from './freezeEvidence.ts';
import { type MonitorStateValue, monitorVisibleUnder } from './monitors.ts';
import type { Principal } from './principal.ts';

/** A monitor a monitor rule judged. `envs`: the monitor's environments when the check ran. */
export interface MatchedMonitorEvidence {
  id: string;
  name: string;
  groups: number;
  envs?: string[];
}

export interface FailingGroupEvidence {
  monitorId: string;
  monitorName: string;
  group: string;
  state: MonitorStateValue;
  since: string;
  url: string;
  envs?: string[];
}

export interface MonitorRuleEvidence {
  matchedMonitors?: MatchedMonitorEvidence[];
  failingGroups?: FailingGroupEvidence[];
  /** Set by the engine when the rule's source failed. */
  sourceErrors?: number;
  lastError?: string;
}

const STATE_NAME: Record<MonitorStateValue, string> = { ok: 'OK', warn: 'WARN', alert: 'ALERT', no_data: 'NO_DATA' };

function describeFailingGroup(f: Pick<FailingGroupEvidence, 'monitorName' | 'group' | 'state' | 'since'>): string {
  return `"${f.monitorName}"${f.group === '*' ? '' : ` (${f.group})`} was ${STATE_NAME[f.state] ?? String(f.state).toUpperCase()} at ${f.since}`;
}

/** "Monitor "a" was ALERT at …; "b" (host:1) was NO_DATA at … and 2 more group(s)" */
export function describeFailingGroups(failing: readonly FailingGroupEvidence[]): string {
  const first = failing.slice(0, 3).map(describeFailingGroup).join('; ');
  const more = failing.length > 3 ? ` and ${failing.length - 3} more group(s)` : '';
  return `Monitor ${first}${more}`;
}

type Reader = Pick<Principal, 'envs'>;
type Trigger = Pick<EvaluationRow, 'triggerEnvs'>;

/** Whether everything the trigger could see is visible to the reader too (then the rule is shown as it is). */
export function seesAllOf(reader: Reader, evaluation: Trigger): boolean {
  if (reader.envs === null) return true;
  return evaluation.triggerEnvs?.every((e) => reader.envs!.includes(e)) ?? false;
}

/** Evidence recorded before entries carried their envs is shown to unlimited readers only. */
const visible = (reader: Reader, envs: readonly string[] | undefined) => (envs ? monitorVisibleUnder(reader.envs, envs) : reader.envs === null);

const VERDICT: Record<RuleEvaluationRow['status'], string> = {
  in_progress: 'The rule is still watching',
  pass: 'The rule passed',
  fail: 'The rule failed',
  canceled: 'The rule was canceled',
};
const WITHHELD = 'monitors outside your environments are not shown.';

/**
 * The rule evaluation as `reader` may see it. Monitors outside the reader's environments leave
 * the evidence, and when anything left, the reason is rewritten from what remains: it names no
 * withheld monitor and counts none; the status (the verdict) stays as it is.
 */
export function ruleEvaluationFor<R extends RuleEvaluationRow>(reader: Reader, evaluation: Trigger, rule: R): R {
  if (seesAllOf(reader, evaluation)) return rule;
  switch (rule.type) {
    case 'faulty_deployment_detection':
      // Reads the APM data of the evaluation's own service and env, which the reader can see.
      return rule;
    case 'metric':
      // An APM metric is the evaluation's own service and env. A PromQL query was written by a
      // key for every environment (gates.ts), and putting it in this gate published its values
      // to the gate's readers, who already see the query in the rule's options.
      return rule;
    case 'webhook':
      // Its calls and answers are about the evaluation itself, which the reader can see.
      return rule;
    case 'monitor':
      return monitorRuleFor(reader, rule);
    case 'freeze':
      return freezeRuleFor(reader, rule);
    default:
      // A rule type this view does not know: show the verdict only.
      return { ...rule, reason: `${VERDICT[rule.status]}.`, evidence: null, lastError: null };
  }
}

function monitorRuleFor<R extends RuleEvaluationRow>(reader: Reader, rule: R): R {
  const evidence = (rule.evidence ?? null) as MonitorRuleEvidence | null;
  const matched = Array.isArray(evidence?.matchedMonitors) ? evidence.matchedMonitors : null;
  const failing = Array.isArray(evidence?.failingGroups) ? evidence.failingGroups : [];
  const shownMatched = (matched ?? []).filter((m) => visible(reader, m.envs));
  const shownFailing = failing.filter((g) => visible(reader, g.envs));
  // Every monitor a reason can name is in matchedMonitors. Without that list, only a rule that
  // never recorded anything (starting, warming up, canceled early) is known to name none.
  const accountedFor = matched !== null || (evidence === null && rule.lastError === null);
  const withheld = !accountedFor || shownMatched.length < (matched?.length ?? 0) || shownFailing.length < failing.length;
  if (!withheld) return rule;
  const reason = shownFailing.length > 0 ? `${describeFailingGroups(shownFailing)}; ${WITHHELD}` : `${VERDICT[rule.status]}; ${WITHHELD}`;
  const shown: MonitorRuleEvidence = {
    matchedMonitors: shownMatched,
    failingGroups: shownFailing,
    // The count of failed tries says nothing of a monitor; the last error may name one.
    ...(typeof evidence?.sourceErrors === 'number' && { sourceErrors: evidence.sourceErrors }),
  };
  return { ...rule, reason, evidence: shown as Record<string, unknown>, lastError: null };
}

/**
 * Calendar windows and ad-hoc freezes are the evaluation's own environment's; incident freezes
 * name monitors, and those outside the reader's environments leave the evidence and the reason.
 */
function freezeRuleFor<R extends RuleEvaluationRow>(reader: Reader, rule: R): R {
  const evidence = (rule.evidence ?? null) as Partial<FreezeEvidence> | null;
  const active = Array.isArray(evidence?.active) ? evidence.active : [];
  const waitedFor = Array.isArray(evidence?.waitedFor) ? evidence.waitedFor : [];
  const shown = (f: { kind: string; envs?: string[] }) => f.kind !== 'incident' || visible(reader, f.envs);
  const shownActive = active.filter(shown);
  const shownWaited = waitedFor.filter(shown);
  // A source error's message may name an incident monitor; a rule that recorded nothing names none.
  const withheld = shownActive.length < active.length || shownWaited.length < waitedFor.length || rule.lastError !== null;
  if (!withheld) return rule;
  const reason = shownActive.length > 0 ? `${VERDICT[rule.status]}: ${describeFreezes(shownActive)}; ${WITHHELD}` : `${VERDICT[rule.status]}; ${WITHHELD}`;
  const view: FreezeEvidence = { active: shownActive, waitedFor: shownWaited };
  return { ...rule, reason, evidence: view, lastError: null };
}

/** An evaluation with each of its rules as `reader` may see them. */
export function snapshotFor(reader: Reader, snapshot: EvaluationSnapshot): EvaluationSnapshot {
  if (seesAllOf(reader, snapshot.evaluation)) return snapshot;
  return { evaluation: snapshot.evaluation, rules: snapshot.rules.map((r) => ruleEvaluationFor(reader, snapshot.evaluation, r)) };
}
