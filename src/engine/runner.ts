import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import type { MonitorRow } from '../db/monitors.ts';
import type { RuleType } from '../db/schema.ts';
import type { Deps, RuleWindow } from '../domain/deps.ts';

/** Something that happened which may change a running rule's answer. */
export type EngineEvent =
  | { kind: 'monitor.transition'; monitor: MonitorRow; group: string; at: Date }
  | { kind: 'apm.ingested'; service: string; env: string; at: Date }
  | { kind: 'freeze.changed'; env: string; at: Date };

export type CheckResult =
  | {
      status: 'in_progress';
      reason: string;
      evidence?: Record<string, unknown>;
      state?: Record<string, unknown>;
      /** When to look again without an event (the window's end, when events do the rest). */
      nextCheckAt: Date;
    }
  | { status: 'pass' | 'fail'; reason: string; evidence: Record<string, unknown>; state?: Record<string, unknown> };

/**
 * One rule type. The engine owns scheduling, persistence, retries and the verdict; a runner
 * only answers "given everything recorded so far, where does this rule stand now?". Its
 * answer must depend on recorded data and the clock alone, so a restarted process that asks
 * again gets the same answer.
 */
export interface RuleRunner {
  type: RuleType;
  plan(options: Record<string, unknown>, start: Date): RuleWindow;
  check(deps: Deps, input: { rule: RuleEvaluationRow; evaluation: EvaluationRow; now: Date }): CheckResult | Promise<CheckResult>;
  /** Which events may change the rule's answer: the engine indexes this once per rule. */
  watch?(options: Record<string, unknown>, evaluation: Pick<EvaluationRow, 'service' | 'env'>): Watch;
}

/**
 * What a rule waits for. `keys` are looked up by exact match (see `eventKeys`), so an event
 * costs nothing for the rules it does not name. A predicate is for what no key can say (a
 * monitor search query): rules with the same `shareKey` share one predicate, tested once per
 * event whatever their number. A predicate is a cheap candidate test; the check decides.
 */
export type Watch = { keys: readonly string[] } | { shareKey: string; matches: (event: EngineEvent) => boolean };

export const monitorKey = (monitorId: string) => `monitor:${monitorId}`;
export const apmKey = (service: string, env: string) => `apm:${service}\u0000${env}`;
export const freezeKey = (env: string) => `freeze:${env}`;

/** The exact keys an event concerns. */
export function eventKeys(event: EngineEvent): string[] {
  switch (event.kind) {
    case 'monitor.transition':
      return [monitorKey(event.monitor.id)];
    case 'apm.ingested':
      return [apmKey(event.service, event.env)];
    case 'freeze.changed':
      return [freezeKey(event.env)];
  }
}
