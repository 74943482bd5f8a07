// The Alertmanager webhook receiver (payload version 4): each alert is a group of a monitor
// named after its alertname; firing is ALERT, resolved is OK.

import { z } from 'zod';
import { transaction } from '../db/client.ts';
import { externalMonitorsTagged, monitorsByAlertKey } from '../db/monitors.ts';
import type { Deps } from '../domain/deps.ts';
import { DomainError, parseInput } from '../domain/errors.ts';
import { normalizeGroup } from '../domain/monitorQuery.ts';
import {
  canChangeMonitor,
  canSeeMonitor,
  createMonitor,
  MAX_GROUP_LENGTH,
  MAX_MONITOR_NAME_LENGTH,
  MAX_STATE_MESSAGE_LENGTH,
  MAX_TAG_LENGTH,
  MAX_TAGS,
  type MonitorRow,
  recordState,
} from '../domain/monitors.ts';
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

const asTag = (k: string, v: string) => `${k}:${v}`.replace(/[\s,]+/g, '_');
const tagsOf = (l: Record<string, string>) => Object.entries(l).map(([k, v]) => asTag(k, v));
/** Monitors are found by their alertname tag, spelled as a tag (no spaces or commas). */
const alertnameKey = (alertname: string) => asTag('alertname', alertname).slice('alertname:'.length);

/**
 * The unique key of the monitor the receiver creates for an alert (`monitors.alertKey`): one per
 * alertname, and per env label for a key limited to environments (it gets a monitor of its own
 * env when another env's exists). Instances receiving the same new alertname at once both try
 * to insert it; the database keeps one, and the other's slice runs again and finds it.
 */
const alertKeyOf = (principal: Principal, alertname: string, env: string | undefined) =>
  JSON.stringify(principal.envs === null ? [alertnameKey(alertname)] : [alertnameKey(alertname), asTag('env', env ?? '')]);

/**
 * Why an alert's labels cannot become a monitor and a group within the monitor bounds, or
 * null. Such an alert is refused and reported, not cut to size: a truncated label would merge
 * distinct alerts into one monitor or group and show a value nobody sent.
 */
function labelProblem(alertname: string, rest: Record<string, string>, group: string): string | null {
  const name = JSON.stringify(alertname.length > 60 ? `${alertname.slice(0, 60)}…` : alertname);
  if (alertname.length > MAX_MONITOR_NAME_LENGTH)
    return `alert ${name} refused: label alertname is over ${MAX_MONITOR_NAME_LENGTH} characters (a monitor name is at most ${MAX_MONITOR_NAME_LENGTH})`;
  if (asTag('alertname', alertname).length > MAX_TAG_LENGTH)
    return `alert ${name} refused: label alertname is over ${MAX_TAG_LENGTH - 'alertname:'.length} characters (a tag is at most ${MAX_TAG_LENGTH})`;
  const keys = Object.keys(rest);
  if (keys.length > MAX_TAGS - 2) return `alert ${name} refused: it has ${keys.length + 1} labels, at most ${MAX_TAGS - 1} become tags`;
  const long = keys.find((k) => asTag(k, rest[k]!).length > MAX_TAG_LENGTH);
  if (long !== undefined)
    return `alert ${name} refused: label ${JSON.stringify(long.slice(0, 60))} with its value is over ${MAX_TAG_LENGTH} characters (a tag is at most ${MAX_TAG_LENGTH})`;
  if (group.length > MAX_GROUP_LENGTH) return `alert ${name} refused: its labels make a group name over ${MAX_GROUP_LENGTH} characters`;
  return null;
}

export interface ReceiveResult {
  received: number;
  rejected: number;
  problems: string[];
}

/** Time one slice of a notification may hold the event loop before requests get their turn. */
const SLICE_MS = 10;
/**
 * A server applies notifications one after the other (slices of two would race for one monitor);
 * across instances the unique alertKey decides. One queue per store handle, so that servers
 * sharing a process (tests) race as separate instances do.
 */
const queues = new WeakMap<object, { previous: Promise<unknown>; waiting: number }>();
/** Notifications waiting their turn, each holding its payload; beyond this one is refused. */
const MAX_WAITING = 8;

/** Too many notifications are waiting: answered 503 with Retry-After, which Alertmanager retries. */
export class ReceiverBusyError extends Error {
  readonly retryAfterSeconds = 1;
  constructor() {
    super(`${MAX_WAITING} Alertmanager notifications are already waiting to be applied; send this one again shortly`);
  }
}

/**
 * Matches each alert to the monitor tagged with its alertname, creating it on first sight.
 * A notification of thousands of alerts is applied in slices of about SLICE_MS, each in one
 * transaction, yielding to other requests between them. A notification is therefore not
 * atomic as a whole (a transaction cannot stay open across turns of the event loop without
 * taking in other requests' writes), and need not be: each alert is a state report of its own,
 * and applying an alert twice changes nothing, so a notification cut short by a failure is
 * completed when Alertmanager sends it again (it retries until it gets a 2xx).
 */
export async function receiveAlertmanager(deps: Deps, principal: Principal, raw: unknown): Promise<ReceiveResult> {
  const payload = parseInput(alertmanagerPayloadSchema, raw);
  let queue = queues.get(deps.db);
  if (!queue) queues.set(deps.db, (queue = { previous: Promise.resolve(), waiting: 0 }));
  if (queue.waiting >= MAX_WAITING) throw new ReceiverBusyError();
  queue.waiting++;
  const turn = queue.previous.then(async () => receiveInSlices(deps, principal, payload)).finally(() => queue.waiting--);
  queue.previous = turn.catch(() => {});
  return turn;
}

async function receiveInSlices(deps: Deps, principal: Principal, payload: AlertmanagerPayload): Promise<ReceiveResult> {
  // Pushed monitors only: imported Prometheus rules keep their own state.
  const byAlertname = new Map<string, MonitorRow>();
  const named = new Set(payload.alerts.map((a) => asTag('alertname', a.labels.alertname ?? '')));
  for (const m of await externalMonitorsTagged(deps.db, [...named])) {
    // Only monitors this key may report on: another env's monitor of the same alertname is as
    // if it did not exist (refusing the alert would tell the key it exists), and the alert
    // gets a monitor of its own env.
    if (!canChangeMonitor(principal, m)) continue;
    const tag = m.tags.find((t) => t.startsWith('alertname:'));
    if (tag && !byAlertname.has(alertnameKey(tag.slice(10)))) byAlertname.set(alertnameKey(tag.slice(10)), m);
  }
  // The receiver's own monitors by key, also those whose tags were edited since (their key holds).
  const keys = new Set(payload.alerts.map((a) => alertKeyOf(principal, a.labels.alertname ?? '', a.labels.env)));
  const byKey = new Map((await monitorsByAlertKey(deps.db, [...keys])).map((m) => [m.alertKey!, m]));
  const received = { count: 0 };
  const problems = new Set<string>();
  const cursor = { next: 0 };
  while (cursor.next < payload.alerts.length) {
    if (cursor.next > 0) await new Promise((resolve) => setImmediate(resolve));
    const deadline = performance.now() + SLICE_MS;
    // What the slice changes in memory is set back when its transaction runs again (PostgreSQL, a concurrent writer).
    const before = { next: cursor.next, count: received.count, names: new Map(byAlertname), problems: new Set(problems) };
    let attempt = 0;
    await inOneTransaction(deps, async (deps) => {
      // Run again, the slice lost a race for a key (another instance created the monitor
      // meanwhile): it reads the keys it misses from the database, which now shows the winner's.
      const keyed = ++attempt === 1 ? async (key: string) => byKey.get(key) : async (key: string) => (await monitorsByAlertKey(deps.db, [key]))[0];
      cursor.next = before.next;
      received.count = before.count;
      byAlertname.clear();
      for (const [name, m] of before.names) byAlertname.set(name, m);
      problems.clear();
      for (const p of before.problems) problems.add(p);
      return receiveSlice(deps, principal, payload.alerts, cursor, deadline, byAlertname, keyed, problems, received);
    });
  }
  return { received: received.count, rejected: payload.alerts.length - received.count, problems: [...problems] };
}

/**
 * Runs `apply` in one transaction (the transactions of the writes inside become savepoints),
 * holding the events they publish until it commits and dropping them if it rolls back: events
 * are published after commit, as everywhere.
 */
async function inOneTransaction<T>(deps: Deps, apply: (deps: Deps) => T): Promise<T> {
  const held: Array<() => void> = [];
  const events: Deps['events'] = { ...deps.events, publish: (topic, payload) => void held.push(() => deps.events.publish(topic, payload)) };
  const result = await transaction(deps.db, async (tx) => {
    held.length = 0; // run again: only the last run's events are published
    return apply({ ...deps, db: tx as Deps['db'], events });
  });
  for (const publish of held) publish();
  return result;
}

/** Applies alerts from `cursor.next` on, at least one, until the deadline or the last alert. */
async function receiveSlice(
  deps: Deps,
  principal: Principal,
  alerts: AlertmanagerPayload['alerts'],
  cursor: { next: number },
  deadline: number,
  byAlertname: Map<string, MonitorRow>,
  keyed: (alertKey: string) => Promise<MonitorRow | undefined>,
  problems: Set<string>,
  received: { count: number },
): Promise<void> {
  for (const first = cursor.next; cursor.next < alerts.length && (cursor.next === first || performance.now() < deadline); cursor.next++) {
    const alert = alerts[cursor.next]!;
    const { alertname, ...rest } = alert.labels as Record<string, string> & { alertname: string };
    const group = normalizeGroup(tagsOf(rest).join(','));
    const refused = labelProblem(alertname, rest, group);
    if (refused) {
      problems.add(refused);
      continue;
    }
    const tags = ['source:alertmanager', asTag('alertname', alertname), ...tagsOf(rest)];
    // A key limited to environments reports only alerts labelled with one of them.
    if (principal.envs !== null && !(rest.env && canSeeEnv(principal, rest.env))) {
      problems.add(`API key "${principal.name}" is limited to env ${principal.envs.join(', ')}: alerts need an env label among them`);
      continue;
    }
    let monitor = byAlertname.get(alertnameKey(alertname));
    if (!monitor) {
      if (!canSeeMonitor(principal, { tags })) {
        problems.add(`API key "${principal.name}" may not create a monitor for ${alertname}: its env label is outside the key's environments`);
        continue;
      }
      const alertKey = alertKeyOf(principal, alertname, rest.env);
      const created = await keyed(alertKey);
      if (created && !canChangeMonitor(principal, created)) {
        problems.add(`alert ${JSON.stringify(alertname.slice(0, 60))} refused: its monitor ${created.id} is tagged with environments this key may not change`);
        continue;
      }
      try {
        monitor = created ?? (await createMonitor(deps, SYSTEM, { name: alertname, type: 'external', tags, query: '', muted: false, comparator: 'above' }, { alertKey }));
      } catch (err) {
        // The monitor schema has the last word; labelProblem only words its reasons better.
        if (!(err instanceof DomainError)) throw err;
        problems.add(`alert ${JSON.stringify(alertname.slice(0, 60))} refused: ${err.message}`);
        continue;
      }
      byAlertname.set(alertnameKey(alertname), monitor);
    }
    // Annotations are free text, not identity: a long summary is cut rather than refused.
    const message = (alert.annotations?.summary ?? alert.annotations?.description ?? null)?.slice(0, MAX_STATE_MESSAGE_LENGTH) ?? null;
    await recordState(deps, monitor.id, group, alert.status === 'firing' ? 'alert' : 'ok', message);
    received.count++;
  }
}
