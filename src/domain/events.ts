import { createPubSub } from 'graphql-yoga';
import type { GateRow, RuleRow } from '../db/gates.ts';

export type GateEventKind = 'created' | 'updated' | 'deleted';

/** Pre-shaped so subscribers resolve it without a database round trip per event. */
export interface GateEvent {
  kind: GateEventKind;
  gate: GateRow;
  rules: RuleRow[];
  actorName: string;
  at: Date;
}

/**
 * The in-process event bus. Published only after the transaction that made the change has
 * committed. The event target is injectable so several processes can later share a bus.
 */
type Topics = {
  'gate.events': [GateEvent];
  /** Any configuration change (gates, rules, API keys): caches of reads drop what they hold. */
  'config.changed': [];
};

export function createEvents(config?: Parameters<typeof createPubSub<Topics>>[0]) {
  return createPubSub<Topics>(config);
}

export type Events = ReturnType<typeof createEvents>;
