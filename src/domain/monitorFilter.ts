// Typed filters beside the monitor search string: state, type, muted. The search string can say
// `status:alert` too, but a list view's checkboxes need values, not a query to compose and escape.
import { type MonitorRow, type MonitorStateValue, worstStatesOf } from '../db/monitors.ts';
import type { Deps } from './deps.ts';
import { boundedFilterList } from './evaluations.ts';

export interface MonitorFilter {
  /** The monitor's state (its worst group); a monitor no group has reported has none and matches no state. */
  states?: MonitorStateValue[];
  types?: MonitorRow['type'][];
  muted?: boolean;
}

/** Monitors whose states are read per statement (one aggregate row each), with a turn of the event loop between. */
const STATE_PAGE = 1000;

export function checkMonitorFilter(filter: MonitorFilter | undefined): MonitorFilter {
  return {
    states: boundedFilterList(filter?.states, 'filter.states'),
    types: boundedFilterList(filter?.types, 'filter.types'),
    muted: filter?.muted,
  };
}

/** The monitors (already those the caller may see, in their order) that the filter keeps. */
export async function filterMonitors(deps: Deps, monitors: readonly MonitorRow[], filter: MonitorFilter): Promise<MonitorRow[]> {
  let kept = monitors.filter((m) => (!filter.types?.length || filter.types.includes(m.type)) && (filter.muted === undefined || m.muted === filter.muted));
  if (!filter.states?.length) return kept;
  const wanted = new Set(filter.states);
  const out: MonitorRow[] = [];
  for (let i = 0; i < kept.length; i += STATE_PAGE) {
    if (i > 0) await new Promise((resolve) => setImmediate(resolve));
    const page = kept.slice(i, i + STATE_PAGE);
    const states = await worstStatesOf(
      deps.db,
      page.map((m) => m.id),
    );
    for (const m of page) {
      const state = states.get(m.id);
      if (state && wanted.has(state)) out.push(m);
    }
  }
  kept = out;
  return kept;
}
