import type { MonitorType } from '../db/schema.ts';
import type { Deps } from '../domain/deps.ts';
import { type MonitorDefinition, type MonitorRow, recordSourceHealth } from '../domain/monitors.ts';
import type { Logger } from '../log.ts';

/** What a source works with: the world, and the evaluator's logger. */
export interface SourceContext {
  deps: Deps;
  log: Logger;
}

/**
 * Where the states of one type of monitor come from. The evaluator (monitorEvaluator.ts) owns
 * the rounds, the turns of the event loop between monitors and the failures; a source only
 * reads its data and records each group's state with recordState, as a pushed report is
 * recorded, so transitions, NO_DATA and the rules watching them behave the same whatever the
 * source. One source per monitor type, listed in monitorSources.ts.
 */
export interface MonitorSource {
  /**
   * Reads one monitor's data now and records the state of each of its groups. Absent when
   * the states are pushed to Tollgate instead of read by it (external monitors).
   */
  evaluate?(ctx: SourceContext, m: MonitorRow): Promise<void> | void;
  /**
   * Once a round, after `evaluate` of each monitor: what the source answers for all its
   * monitors at once (Prometheus' alerting rules, which it also imports as monitors).
   */
  sync?(ctx: SourceContext, monitors: readonly MonitorRow[]): Promise<void>;
  /**
   * The service and env whose spans the monitor reads: a batch of them reaching the APM store
   * evaluates it at once instead of at the next round.
   */
  readsSpansOf?(m: MonitorRow): { service: string; env: string } | undefined;
}

export type MonitorSources = Record<MonitorType, MonitorSource>;

export const definitionOf = (m: MonitorRow) => (m.definition ?? {}) as MonitorDefinition;

/** A source answered (null) or failed (its message): rules read this as the monitor's health. */
export async function recordHealth(deps: Deps, m: MonitorRow, error: string | null): Promise<void> {
  // Written only when it changes something: a healthy source answering again writes nothing.
  if (error !== null || m.sourceErrors > 0) await recordSourceHealth(deps, m.id, error);
}
