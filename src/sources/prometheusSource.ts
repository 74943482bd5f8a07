// PROMETHEUS monitors: a PromQL expression, each series a group, judged against the
// monitor's thresholds; and Prometheus' alerting rules, imported as monitors and kept in sync
// (firing is ALERT, pending WARN, else OK). Both read the Prometheus HTTP API (prometheus.ts).
import { groupsOf } from '../db/monitors.ts';
import { DomainError, SourceError } from '../domain/errors.ts';
import { normalizeGroup } from '../domain/monitorQuery.ts';
import { createMonitor, MAX_GROUP_LENGTH, type MonitorRow, recordState, stateForValue } from '../domain/monitors.ts';
import { SYSTEM } from '../domain/principal.ts';
import { definitionOf, type MonitorSource, recordHealth, type SourceContext } from './monitorSource.ts';
import type { AlertingRule, PrometheusClient, Series } from './prometheus.ts';

const groupOfLabels = (labels: Record<string, string>, drop: string[]) =>
  normalizeGroup(
    Object.entries(labels)
      .filter(([k]) => !drop.includes(k))
      .map(([k, v]) => `${k}:${v}`.replace(/[\s,]+/g, '_'))
      .join(','),
  );

/** `prometheus` is null when TOLLGATE_PROMETHEUS_URL is unset: each PromQL monitor then has that as its source error. */
export function prometheusSource(prometheus: PrometheusClient | null): MonitorSource {
  return {
    /** A PromQL monitor: the query now, each series a group. Imported rules are kept by `sync`. */
    async evaluate({ deps, log }: SourceContext, m: MonitorRow): Promise<void> {
      if (definitionOf(m).importedRule) return;
      if (!prometheus) return recordHealth(deps, m, 'TOLLGATE_PROMETHEUS_URL is not set');
      let series: Series[];
      try {
        series = await prometheus.query(m.query);
      } catch (err) {
        if (!(err instanceof SourceError)) throw err;
        return recordHealth(deps, m, err.message);
      }
      await recordHealth(deps, m, null);
      if (series.length === 0) {
        // No series at all: the monitor as a whole, and every group it had, has no data.
        await recordState(deps, m.id, '*', 'no_data', 'the query returned no series');
        for (const g of await groupsOf(deps.db, [m.id]))
          if (g.group !== '*' && g.state !== 'no_data') await recordState(deps, m.id, g.group, 'no_data', 'the query returned no series');
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
        await recordState(deps, m.id, group, stateForValue(m, s.value), Number.isNaN(s.value) ? 'the query returned NaN (no data, e.g. 0/0 with no traffic)' : `value ${s.value}`);
      }
      // The monitor as a whole has data again; a series that vanished has none.
      for (const g of await groupsOf(deps.db, [m.id])) {
        if (seen.has(g.group)) continue;
        if (g.group === '*' && g.state !== 'ok') await recordState(deps, m.id, '*', 'ok', 'the query returns series again');
        else if (g.group !== '*' && g.state !== 'no_data') await recordState(deps, m.id, g.group, 'no_data', 'the query no longer returns this series');
      }
    },

    /** Alerting rules as monitors, kept in sync: firing → ALERT, pending → WARN, else OK. */
    async sync({ deps, log }: SourceContext, monitors: readonly MonitorRow[]): Promise<void> {
      if (!prometheus) return;
      const imported = monitors.filter((m) => definitionOf(m).importedRule);
      let rules: AlertingRule[];
      try {
        rules = await prometheus.alertingRules();
      } catch (err) {
        if (!(err instanceof SourceError)) throw err;
        for (const m of imported) await recordHealth(deps, m, err.message);
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
            m = await createMonitor(
              deps,
              SYSTEM,
              { name: rule.name, type: 'prometheus', tags, query: rule.query, muted: false, comparator: 'above' },
              { imported: { group: rule.group, name: rule.name, labels: rule.labels } },
            );
          } catch (err) {
            // A rule outside the monitor bounds (a huge name or label) is skipped, not stored huge.
            if (!(err instanceof DomainError)) throw err;
            log.warn({ rule: rule.name.slice(0, 200), problem: err.message }, 'a Prometheus alerting rule was not imported');
            continue;
          }
          byRule.set(key, m);
        }
        await recordHealth(deps, m, null);
        const seen = new Set<string>();
        for (const alert of rule.alerts) {
          if (alert.state === 'inactive') continue;
          const group = groupOfLabels(alert.labels, ['alertname', ...Object.keys(rule.labels)]);
          if (group.length > MAX_GROUP_LENGTH) continue;
          seen.add(group);
          await recordState(deps, m.id, group, alert.state === 'firing' ? 'alert' : 'warn', alert.value !== undefined ? `value ${alert.value}` : null);
        }
        const known = await groupsOf(deps.db, [m.id]);
        for (const g of known) if (!seen.has(g.group) && g.state !== 'ok') await recordState(deps, m.id, g.group, 'ok', 'the alert is no longer active');
        if (known.length === 0 && seen.size === 0) await recordState(deps, m.id, '*', 'ok', 'inactive');
      }
      // A rule removed from Prometheus can no longer fire: its monitor's groups go back to OK.
      for (const [key, m] of byRule) {
        if (present.has(key)) continue;
        for (const g of await groupsOf(deps.db, [m.id])) if (g.state !== 'ok') await recordState(deps, m.id, g.group, 'ok', 'the alerting rule is no longer in Prometheus');
      }
    },
  };
}
