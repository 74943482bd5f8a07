// APM monitors: a metric of the APM store (error rate, error count, hits, p95, p99 latency)
// over the monitor's window, per group, judged against its thresholds. Evaluated every round,
// and at once when spans of its service and env reach the store.
import { DDSketch } from '@datadog/sketches-js';
import { statsRows } from '../db/apm.ts';
import { groupsOf } from '../db/monitors.ts';
import { normalizeGroup } from '../domain/monitorQuery.ts';
import { type MonitorRow, recordState, stateForValue } from '../domain/monitors.ts';
import { definitionOf, type MonitorSource, type SourceContext } from './monitorSource.ts';

export const apmSource: MonitorSource = {
  /** An APM monitor: its metric over its window from the APM store, per group. */
  async evaluate({ deps }: SourceContext, m: MonitorRow): Promise<void> {
    const def = definitionOf(m).apm;
    if (!def) return;
    const now = deps.now().getTime();
    const rows = (await statsRows(deps.db, { service: def.service, env: def.env, from: now - def.window * 1000, to: now + 1 })).filter(
      (r) => (def.version === undefined || r.version === def.version) && (def.resource === undefined || r.resource === def.resource),
    );
    const groups = new Map<string, { hits: number; errors: number; sketch: DDSketch | null; rows: typeof rows }>();
    for (const r of rows) {
      const parts = def.groupBy.map((g) => (g === 'resource' ? `resource:${r.resource}` : g === 'version' ? `version:${r.version}` : r.primaryTag)).filter(Boolean);
      const group = normalizeGroup(parts.join(','));
      const acc = groups.get(group) ?? { hits: 0, errors: 0, sketch: null, rows: [] };
      acc.hits += r.hits;
      acc.errors += r.errors;
      acc.rows.push(r);
      groups.set(group, acc);
    }
    // A group that served nothing over the whole window has no data.
    for (const g of await groupsOf(deps.db, [m.id])) {
      if (!groups.has(g.group) && g.state !== 'no_data') await recordState(deps, m.id, g.group, 'no_data', `no requests over ${def.window} s`);
    }
    for (const [group, acc] of groups) {
      if (acc.hits === 0) continue;
      let value: number;
      if (def.metric === 'error_rate') value = acc.errors / acc.hits;
      else if (def.metric === 'error_count') value = acc.errors;
      else if (def.metric === 'hits') value = acc.hits;
      else {
        const sketch = DDSketch.fromProto(acc.rows[0]!.durations);
        for (const r of acc.rows.slice(1)) sketch.merge(DDSketch.fromProto(r.durations));
        value = sketch.getValueAtQuantile(def.metric === 'p95' ? 0.95 : 0.99);
      }
      await recordState(deps, m.id, group, stateForValue(m, value), `${def.metric} ${Number(value.toPrecision(6))} over ${def.window} s`);
    }
  },

  readsSpansOf(m: MonitorRow) {
    const def = definitionOf(m).apm;
    return def && { service: def.service, env: def.env };
  },
};
