// The Alertmanager webhook receiver (payload version 4): each alert is a group of a monitor
// named after its alertname; firing is ALERT, resolved is OK.
import { z } from 'zod';
import { allMonitors } from '../db/monitors.ts';
import type { Deps } from '../domain/deps.ts';
import { parseInput } from '../domain/errors.ts';
import { normalizeGroup } from '../domain/monitorQuery.ts';
import { canSeeMonitor, createMonitor, type MonitorRow, recordState } from '../domain/monitors.ts';
import { canSeeEnv, type Principal, SYSTEM } from '../domain/principal.ts';

const labels = z.record(z.string(), z.string());

export const alertmanagerPayloadSchema = z.object({
  version: z.literal('4', { message: 'version must be "4" (Alertmanager webhook payload version 4)' }),
  status: z.enum(['firing', 'resolved']).optional(),
  alerts: z
    .array(
      z.object({
        status: z.enum(['firing', 'resolved'], { message: 'status must be firing or resolved' }),
        labels: labels.refine((l) => typeof l.alertname === 'string' && l.alertname !== '', 'labels.alertname is required'),
        annotations: labels.optional(),
        startsAt: z.string().optional(),
        endsAt: z.string().optional(),
        fingerprint: z.string().optional(),
      }),
      { message: 'alerts must be an array' },
    )
    .max(10_000, 'at most 10000 alerts per notification'),
});
export type AlertmanagerPayload = z.output<typeof alertmanagerPayloadSchema>;

const tagsOf = (l: Record<string, string>) => Object.entries(l).map(([k, v]) => `${k}:${v}`.replace(/[\s,]+/g, '_'));

export interface ReceiveResult {
  received: number;
  rejected: number;
  problems: string[];
}

/** Matches each alert to the monitor tagged with its alertname, creating it on first sight. */
export function receiveAlertmanager(deps: Deps, principal: Principal, raw: unknown): ReceiveResult {
  const payload = parseInput(alertmanagerPayloadSchema, raw);
  // Pushed monitors only: imported Prometheus rules keep their own state.
  const byAlertname = new Map<string, MonitorRow>();
  for (const m of allMonitors(deps.db)) {
    if (m.type !== 'external') continue;
    const tag = m.tags.find((t) => t.startsWith('alertname:'));
    if (tag && !byAlertname.has(tag.slice(10))) byAlertname.set(tag.slice(10), m);
  }
  let received = 0;
  const problems = new Set<string>();
  for (const alert of payload.alerts) {
    const { alertname, ...rest } = alert.labels as Record<string, string> & { alertname: string };
    const tags = ['source:alertmanager', `alertname:${alertname}`, ...tagsOf(rest)];
    // A key limited to environments reports only alerts labelled with one of them.
    if (principal.envs !== null && !(rest.env && canSeeEnv(principal, rest.env))) {
      problems.add(`API key "${principal.name}" is limited to env ${principal.envs.join(', ')}: alerts need an env label among them`);
      continue;
    }
    let monitor = byAlertname.get(alertname);
    if (monitor && !canSeeMonitor(principal, monitor)) {
      problems.add(`API key "${principal.name}" may not report ${alertname} (another environment)`);
      continue;
    }
    if (!monitor) {
      if (!canSeeMonitor(principal, { tags })) {
        problems.add(`API key "${principal.name}" may not create a monitor for ${alertname}: its env label is outside the key's environments`);
        continue;
      }
      monitor = createMonitor(deps, SYSTEM, { name: alertname, type: 'external', tags, query: '', muted: false, comparator: 'above' });
      byAlertname.set(alertname, monitor);
    }
    const message = alert.annotations?.summary ?? alert.annotations?.description ?? null;
    recordState(deps, monitor.id, normalizeGroup(tagsOf(rest).join(',')), alert.status === 'firing' ? 'alert' : 'ok', message);
    received++;
  }
  return { received, rejected: payload.alerts.length - received, problems: [...problems] };
}
