/**
 * The dry-run math of a gate, exactly:
 * - the real status fails as soon as any non-dry-run rule fails (the other rules' windows
 *   are not waited for); passes when every non-dry-run rule has passed; else in progress;
 * - a dry-run rule is evaluated and recorded with its real status, and never counted;
 * - a dry-run gate reports `pass` once decided, while its real status stays visible.
 */

export type Status = 'in_progress' | 'pass' | 'fail' | 'canceled';

export interface RuleOutcome {
  status: Status;
  dryRun: boolean;
}

export function realStatus(rules: readonly RuleOutcome[]): 'in_progress' | 'pass' | 'fail' {
  const counted = rules.filter((r) => !r.dryRun);
  if (counted.some((r) => r.status === 'fail')) return 'fail';
  if (counted.every((r) => r.status === 'pass')) return 'pass';
  return 'in_progress';
}

/** What the deploy acts on. */
export function reportedStatus(status: Status, gateDryRun: boolean): Status {
  if (status === 'in_progress' || status === 'canceled') return status;
  return gateDryRun ? 'pass' : status;
}

/** What a deploy is told: a person's override when there is one, else the dry-run math. */
export function reported(e: { status: Status; dryRun: boolean; overrideStatus: 'pass' | 'fail' | null }): Status {
  return e.overrideStatus ?? reportedStatus(e.status, e.dryRun);
}

/** Every rule has reached its own end (rules keep running after the verdict). */
export function allRulesFinished(rules: readonly RuleOutcome[]): boolean {
  return rules.every((r) => r.status !== 'in_progress');
}
