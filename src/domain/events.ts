import { createPubSub } from 'graphql-yoga';
import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import type { GateRow, RuleRow } from '../db/gates.ts';
import type { MonitorRow } from '../db/monitors.ts';
import type { MonitorStateChange } from './monitors.ts';

export type GateEventKind = 'created' | 'updated' | 'deleted';

/** Pre-shaped so subscribers resolve it without a database round trip per event. */
export interface GateEvent {
  kind: GateEventKind;
  gate: GateRow;
  rules: RuleRow[];
  actorName: string;
  at: Date;
}

/** An evaluation with its rules as committed; `revision` orders snapshots of one evaluation. */
export interface EvaluationSnapshot {
  evaluation: EvaluationRow;
  rules: RuleEvaluationRow[];
}

type Topics = {
  'gate.events': [GateEvent];
  /** Any configuration change (gates, rules, API keys): caches of reads drop what they hold. */
  'config.changed': [];
  'monitor.changed': [MonitorRow];
  'monitor.transition': [MonitorStateChange];
  /** Every committed change of an evaluation or one of its rules. */
  'evaluation.changed': [EvaluationSnapshot];
};

/**
 * The in-process event bus. Published only after the transaction that made the change has
 * committed. The event target is injectable so several processes can later share a bus.
 */
export function createEvents(config?: Parameters<typeof createPubSub<Topics>>[0]) {
  return createPubSub<Topics>(config);
}

export type Events = ReturnType<typeof createEvents>;
