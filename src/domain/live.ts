// Live streams: what a reader is told as things change, for any transport (GraphQL over
// WebSocket or SSE today). Two shapes, both on the event bus with its backpressure (a reader
// too far behind is cut off alone):
//   - follow one thing: its current state, then every later revision in order, until it finishes;
//   - every change matching a filter.
// A reader sees only what its key may see: the environment check runs at every event, and what
// is derived from other environments (rule evidence) is withheld as in queries. Streams end
// with their key: the transports watch it (server/keyStreams.ts, and per member in shared
// subscriptions), since they hold the connection a revoked key must lose.

import { type EvaluationFilter, filterMatches } from '../db/evaluationFilter.ts';
import { revisionsBetween } from '../db/evaluationRevisions.ts';
import { type GateFilter, gateMatches } from '../db/gateFilter.ts';
import type { Deps } from './deps.ts';
import { notFound } from './errors.ts';
import { getEvaluation, loadSnapshot } from './evaluations.ts';
import { type EvaluationSnapshot, type GateEvent, type MonitorStateChange, Several } from './events.ts';
import { canSeeMonitor, parseMonitorSearch, requireVisibleMonitor, transitionMatches } from './monitors.ts';
import { canSeeEnv, type Principal, requireScope } from './principal.ts';
import { snapshotFor } from './ruleEvidence.ts';

const readEvaluations = (reader: Principal) => requireScope(reader, ['gates:read', 'evaluations:write'], 'read evaluations');

/**
 * One evaluation as `reader` may see it: now, then each change of it or one of its rules in
 * revision order, until it finishes. NOT_FOUND, at once, for an evaluation the reader cannot
 * see. Revisions already shown (the first state may be newer than an event still in flight)
 * are not repeated, and none is skipped: an event more than one revision ahead of the last shown
 * (events between instances were lost, or the first state read was older than it) is preceded
 * by the revisions between, read from the revision log in one query.
 */
export async function followEvaluation(deps: Deps, reader: Principal, id: string): Promise<AsyncIterableIterator<EvaluationSnapshot>> {
  const found = await getEvaluation(deps, reader, id); // scope, id and environment
  if (!found) throw notFound(`evaluation ${id} does not exist`, 'id');
  const evaluationId = found.evaluation.id;
  let shown = 0;
  const show = (snap: EvaluationSnapshot) => {
    shown = snap.evaluation.revision;
    return snapshotFor(reader, snap);
  };
  /** The revisions after the last shown and before `snap`, then `snap`. */
  const withMissed = async (snap: EvaluationSnapshot) => {
    const missed = await revisionsBetween(deps.db, evaluationId, shown, snap.evaluation.revision);
    return new Several([...missed, snap].map(show));
  };
  return deps.events.subscribe(
    'evaluation.changed',
    (snap) => {
      if (snap.evaluation.id !== evaluationId || snap.evaluation.revision <= shown) return undefined;
      // Events wait behind the first state (and behind a read of missed ones), so `shown` is set.
      return snap.evaluation.revision === shown + 1 || shown === 0 ? show(snap) : withMissed(snap);
    },
    {
      // Read again when the stream starts: the one read above may be older by then. Gone (retention): the stream ends.
      current: async () => {
        const snap = await loadSnapshot(deps, evaluationId);
        return snap ? show(snap) : undefined;
      },
      last: (snap) => snap.evaluation.finishedAt !== null,
    },
  );
}

/**
 * Every change of every evaluation the filter selects among those the reader may see, as the
 * reader may see it. On several instances the bus delivers each revision once and in order per
 * evaluation, those lost by Redis included (src/domain/revisionFeed.ts), and they are filtered
 * here like any other.
 */
export function evaluationChanges(deps: Deps, reader: Principal, filter: EvaluationFilter): AsyncIterableIterator<EvaluationSnapshot> {
  readEvaluations(reader);
  const visible: EvaluationFilter = { ...filter, envs: reader.envs };
  return deps.events.subscribe('evaluation.changed', (snap) => (filterMatches(visible, snap) ? snapshotFor(reader, snap) : undefined));
}

/** Gates created, updated (with their rules) and deleted, that the filter selects among those the reader may see. */
export function gateChanges(deps: Deps, reader: Principal, filter: GateFilter): AsyncIterableIterator<GateEvent> {
  requireScope(reader, 'gates:read', 'read gates');
  return deps.events.subscribe('gate.events', (e) => (canSeeEnv(reader, e.gate.env) && gateMatches(e.gate, filter) ? e : undefined));
}

/**
 * Every transition of a monitor matching the search `query` (all without one), or of the one
 * monitor `monitorId` names (NOT_FOUND when the reader cannot see it); both: that monitor while
 * it matches. Visibility is asked again at every transition: a monitor retagged into another
 * env falls silent.
 */
export async function monitorTransitions(
  deps: Deps,
  reader: Principal,
  watch: { query?: string | null; monitorId?: string | null },
): Promise<AsyncIterableIterator<MonitorStateChange>> {
  requireScope(reader, ['gates:read', 'monitors:write'], 'watch monitors');
  const search = parseMonitorSearch(watch.query, 'query');
  const only = watch.monitorId == null ? null : (await requireVisibleMonitor(deps, reader, watch.monitorId, 'monitorId')).id;
  return deps.events.subscribe('monitor.transition', async (c) =>
    (only === null || c.monitor.id === only) && canSeeMonitor(reader, c.monitor) && (!search || (await transitionMatches(deps, search, c))) ? c : undefined,
  );
}
