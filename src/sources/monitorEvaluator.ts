// Monitors whose state Tollgate works out itself: PROMETHEUS (a PromQL expression, each
// series a group), Prometheus alerting rules imported as monitors, and APM monitors over the
// APM store. Every result is recorded like a pushed state, so transitions, NO_DATA and the
// rules watching them behave the same whatever the source.
import { DDSketch } from '@datadog/sketches-js';
import { statsRows } from '../db/apm.ts';
import { groupsOf, monitorsOfType } from '../db/monitors.ts';
import type { Deps } from '../domain/deps.ts';
import { normalizeGroup } from '../domain/monitorQuery.ts';
import { DomainError, SourceError } from '../domain/errors.ts';
import { createMonitor, MAX_GROUP_LENGTH, type MonitorDefinition, type MonitorRow, recordSourceHealth, recordState, stateForValue } from '../domain/monitors.ts';
import { SYSTEM } from '../domain/principal.ts';
import type { PrometheusClient } from './prometheus.ts';

const definitionOf = (m: MonitorRow) => (m.definition ?? {}) as MonitorDefinition;
const groupOfLabels = (labels: Record<string, string>, drop: string[]) =>
  normalizeGroup(
    Object.entries(labels)
      .filter(([k]) => !drop.includes(k))
      .map(([k, v]) => `${k}:${v}`.replace(/[\s,]+/g, '_'))
      .join(','),
  );

/** How long evaluating monitors may hold the event loop before requests get their turn. */
const SLICE_MS = 10;

/** Resolves at once within a slice, and on the next turn of the event loop once it is spent. */
function slicer(): () => Promise<void> | undefined {
  let since = performance.now();
  return () => {
    if (performance.now() - since < SLICE_MS) return undefined;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        since = performance.now();
        resolve();
      }),
    );
  };
}

export function createMonitorEvaluator(deps: Deps, options: { intervalMs: number; prometheus: PrometheusClient | null }) {
  const log = deps.log.child({ component: 'monitors' });
  const { prometheus } = options;
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let stopped = false;
  const offs: Array<() => void> = [];

  function health(m: MonitorRow, error: string | null): void {
    if (error !== null || m.sourceErrors > 0) recordSourceHealth(deps, m.id, error);
  }

  async function evaluatePrometheus(m: MonitorRow): Promise<void> {
    if (!prometheus) return health(m, 'TOLLGATE_PROMETHEUS_URL is not set');
    let series;
    try {
      series = await prometheus.query(m.query);
    } catch (err) {
      if (!(err instanceof SourceError)) throw err;
      return health(m, err.message);
    }
    health(m, null);
    if (series.length === 0) {
      // No series at all: the monitor as a whole, and every group it had, has no data.
      recordState(deps, m.id, '*', 'no_data', 'the query returned no series');
      for (const g of groupsOf(deps.db, [m.id])) if (g.group !== '*' && g.state !== 'no_data') recordState(deps, m.id, g.group, 'no_data', 'the query returned no series');
      return;
    }
    const seen = new Set<string>();
    for (const s of series) {
      const group = groupOfLabels(s.labels, ['__name__']);
      if (group.length > MAX_GROUP_LENGTH) {
        log.warn({ monitorId: m.id, length: group.length }, `a series whose labels make a group over ${MAX_GROUP_LENGTH} characters was skipped`);
        continue;
      }
      seen.add(group);
      recordState(deps, m.id, group, stateForValue(m, s.value), Number.isNaN(s.value) ? 'the query returned NaN (no data, e.g. 0/0 with no traffic)' : `value ${s.value}`);
    }
    // The monitor as a whole has data again; a series that vanished has none.
    for (const g of groupsOf(deps.db, [m.id])) {
      if (seen.has(g.group)) continue;
      if (g.group === '*' && g.state !== 'ok') recordState(deps, m.id, '*', 'ok', 'the query returns series again');
      else if (g.group !== '*' && g.state !== 'no_data') recordState(deps, m.id, g.group, 'no_data', 'the query no longer returns this series');
    }
  }

  /** Alerting rules as monitors, kept in sync: firing → ALERT, pending → WARN, else OK. */
  async function syncAlertingRules(monitors: MonitorRow[]): Promise<void> {
    if (!prometheus) return;
    const imported = monitors.filter((m) => definitionOf(m).importedRule);
    let rules;
    try {
      rules = await prometheus.alertingRules();
    } catch (err) {
      if (!(err instanceof SourceError)) throw err;
      for (const m of imported) health(m, err.message);
      return;
    }
    // A rule is its group, name and labels: two rules may share a name with other labels.
    const keyOf = (group: string, name: string, labels: Record<string, string>) => `${group}\u0000${name}\u0000${JSON.stringify(Object.entries(labels).sort())}`;
    const byRule = new Map(
      imported.map((m) => {
        const r = definitionOf(m).importedRule!;
        return [keyOf(r.group, r.name, r.labels ?? {}), m];
      }),
    );
    const present = new Set<string>();
    for (const rule of rules) {
      const key = keyOf(rule.group, rule.name, rule.labels);
      present.add(key);
      let m = byRule.get(key);
      if (!m) {
        const tags = ['source:prometheus-rule', `alertname:${rule.name}`, ...Object.entries(rule.labels).map(([k, v]) => `${k}:${v}`.replace(/[\s,]+/g, '_'))];
        try {
          m = createMonitor(deps, SYSTEM, { name: rule.name, type: 'prometheus', tags, query: rule.query, muted: false, comparator: 'above' }, { group: rule.group, name: rule.name, labels: rule.labels });
        } catch (err) {
          // A rule outside the monitor bounds (a huge name or label) is skipped, not stored huge.
          if (!(err instanceof DomainError)) throw err;
          log.warn({ rule: rule.name.slice(0, 200), problem: err.message }, 'a Prometheus alerting rule was not imported');
          continue;
        }
        byRule.set(key, m);
      }
      health(m, null);
      const seen = new Set<string>();
      for (const alert of rule.alerts) {
        if (alert.state === 'inactive') continue;
        const group = groupOfLabels(alert.labels, ['alertname', ...Object.keys(rule.labels)]);
        if (group.length > MAX_GROUP_LENGTH) continue;
        seen.add(group);
        recordState(deps, m.id, group, alert.state === 'firing' ? 'alert' : 'warn', alert.value !== undefined ? `value ${alert.value}` : null);
      }
      const known = groupsOf(deps.db, [m.id]);
      for (const g of known) if (!seen.has(g.group) && g.state !== 'ok') recordState(deps, m.id, g.group, 'ok', 'the alert is no longer active');
      if (known.length === 0 && seen.size === 0) recordState(deps, m.id, '*', 'ok', 'inactive');
    }
    // A rule removed from Prometheus can no longer fire: its monitor's groups go back to OK.
    for (const [key, m] of byRule) {
      if (present.has(key)) continue;
      for (const g of groupsOf(deps.db, [m.id])) if (g.state !== 'ok') recordState(deps, m.id, g.group, 'ok', 'the alerting rule is no longer in Prometheus');
    }
  }

  /** An APM monitor: its metric over its window from the APM store, per group. */
  function evaluateApm(m: MonitorRow): void {
    const def = definitionOf(m).apm;
    if (!def) return;
    const now = deps.now().getTime();
    const rows = statsRows(deps.db, { service: def.service, env: def.env, from: now - def.window * 1000, to: now + 1 }).filter(
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
    for (const g of groupsOf(deps.db, [m.id])) {
      if (!groups.has(g.group) && g.state !== 'no_data') recordState(deps, m.id, g.group, 'no_data', `no requests over ${def.window} s`);
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
      recordState(deps, m.id, group, stateForValue(m, value), `${def.metric} ${Number(value.toPrecision(6))} over ${def.window} s`);
    }
  }

  async function evaluateAll(): Promise<void> {
    const monitors = monitorsOfType(deps.db, ['prometheus', 'apm']);
    const breathe = slicer();
    for (const m of monitors) {
      await breathe();
      if (stopped) return;
      if (m.type === 'prometheus' && !definitionOf(m).importedRule) await evaluatePrometheus(m);
      else if (m.type === 'apm') evaluateApm(m);
    }
    await syncAlertingRules(monitors);
  }

  function runRound(): Promise<void> {
    round ??= evaluateAll()
      .catch((err) => log.error({ err }, 'monitor evaluation failed'))
      .finally(() => {
        round = undefined;
      });
    return round;
  }

  // New spans re-evaluate the APM monitors of their service at once (coalesced per tick, and
  // in slices when a service has many).
  const pending = new Set<string>();
  async function evaluateIngested(): Promise<void> {
    // Scheduled a turn after the batch: the server may have stopped (and closed the database) since.
    if (stopped) return;
    const keys = new Set(pending);
    pending.clear();
    const breathe = slicer();
    for (const m of monitorsOfType(deps.db, ['apm'])) {
      const def = definitionOf(m).apm;
      if (!def || !keys.has(`${def.service}\u0000${def.env}`)) continue;
      await breathe();
      if (stopped) return;
      try {
        evaluateApm(m);
      } catch (err) {
        log.error({ err, monitorId: m.id }, 'APM monitor evaluation failed');
      }
    }
  }
  function onIngested({ service, env }: { service: string; env: string }): void {
    // A failure here (the database gone) is logged, never an unhandled rejection that ends the process.
    if (pending.size === 0) setImmediate(() => evaluateIngested().catch((err) => log.error({ err }, 'APM monitor evaluation after ingestion failed')));
    pending.add(`${service}\u0000${env}`);
  }

  return {
    start(): void {
      offs.push(deps.events.on('apm.ingested', onIngested));
      timer = setInterval(() => void runRound(), options.intervalMs);
      timer.unref();
      void runRound();
    },
    /** One round now (tests, and the first round at start). */
    evaluateNow: runRound,
    async stop(): Promise<void> {
      stopped = true;
      clearInterval(timer);
      for (const off of offs) off();
      await round;
    },
  };
}

export type MonitorEvaluator = ReturnType<typeof createMonitorEvaluator>;
