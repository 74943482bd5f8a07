// Delivers the notification outbox. Each turn claims a slice of due rows in one statement
// (status delivering, attempts + 1, this node's claim), sends them a few at a time through the
// same guarded POST as webhook rules (allow-list checked again, no redirects, no internal
// addresses by name), and settles each: delivered, pending again after a backoff, or failed
// after the last attempt. A row is claimed before it is sent, so two senders never send it;
// a sender that dies between sending and settling leaves a claim that runs out, and the row
// is sent again with the same X-Tollgate-Event-Id so the receiver can drop the repeat.
import type { Deps } from '../domain/deps.ts';
import {
  channelRefusal,
  channelSecret,
  claimDeliveries,
  type Delivery,
  type NotificationPayload,
  nextDeliveryDueAt,
  SecretUnavailableError,
  settleDelivery,
  signNotification,
  slackBody,
  webhookBody,
} from '../domain/notifications.ts';
import { listedAddresses } from '../domain/webhooks.ts';
import { callWebhook } from '../sources/webhook.ts';

export interface NotifierOptions {
  /** Deliveries under way at once. */
  concurrency?: number;
  /** Of those, at most this many to one channel (a silent receiver holds no more). */
  perChannel?: number;
  /** Per request: connecting, sending, the status line. */
  timeoutMs?: number;
  /** How long a claim holds: longer than any send. */
  claimMs?: number;
  /** The longest sleep between looks (claims of crashed senders run out without an event). */
  idleMs?: number;
}

export function createNotifier(deps: Deps, options: NotifierOptions = {}) {
  const concurrency = options.concurrency ?? 16;
  const perChannel = options.perChannel ?? 2;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const claimMs = options.claimMs ?? timeoutMs * 3;
  const idleMs = options.idleMs ?? 30_000;
  const log = deps.log.child({ component: 'notifier' });
  let timer: NodeJS.Timeout | undefined;
  let stopped = true;
  let off: (() => void) | undefined;
  /** Sends under way, and how many per channel. */
  const inFlight = new Set<Promise<void>>();
  const byChannel = new Map<string, number>();

  /** Sends one claimed row and settles it; never throws. */
  async function deliver({ row, channel }: Delivery): Promise<void> {
    const settle = async (outcome: Parameters<typeof settleDelivery>[2]) => {
      if (!(await settleDelivery(deps, row, outcome))) log.warn({ deliveryId: row.id }, 'delivery settled by another sender (claim ran out)');
    };
    if (!channel) return void settle({ ok: false, status: null, error: 'the channel was deleted', final: true });
    const refusal = channelRefusal(deps, channel);
    if (refusal) return void settle({ ok: false, status: null, error: refusal, final: true });
    const payload = row.payload as unknown as NotificationPayload;
    const body = channel.type === 'slack' ? slackBody(payload) : webhookBody(row, payload);
    const timestamp = String(Math.floor(deps.now().getTime() / 1000));
    const headers: Record<string, string> = { 'x-tollgate-event-id': row.id, 'x-tollgate-event': row.event, 'x-tollgate-attempt': String(row.attempts) };
    if (channel.type === 'webhook') {
      try {
        headers['x-tollgate-timestamp'] = timestamp;
        headers['x-tollgate-signature'] = signNotification(channelSecret(deps, channel), timestamp, body);
      } catch (err) {
        if (!(err instanceof SecretUnavailableError)) throw err;
        return void settle({ ok: false, status: null, error: `the signing secret cannot be opened: ${err.message}`, final: true });
      }
    }
    const answer = await callWebhook({ url: channel.url, headers, body, timeoutMs, listedAddresses: listedAddresses(deps.config.webhookAllowedHosts) });
    const ok = answer.answered && answer.status >= 200 && answer.status < 300;
    const error = answer.answered ? (ok ? null : `HTTP ${answer.status}${answer.body ? `: ${answer.body.slice(0, 200)}` : ''}`) : answer.error;
    await settle({ ok, status: answer.answered ? answer.status : null, error });
    if (ok) log.info({ deliveryId: row.id, event: row.event, channelId: channel.id, attempts: row.attempts }, 'notification delivered');
    else log.warn({ deliveryId: row.id, event: row.event, channelId: channel.id, attempts: row.attempts, error }, 'notification not delivered');
  }

  // One pump at a time: two overlapping claims would each count the sends under way before
  // the other's started, and together exceed a channel's share (on PostgreSQL, where a claim
  // waits for the server, they overlapped whenever two sends ended together).
  let pumping: Promise<void> | null = null;
  let pumpAgain = false;
  function pump(): void {
    if (pumping) {
      pumpAgain = true;
      return;
    }
    pumping = pumpOnce().finally(() => {
      pumping = null;
      if (pumpAgain) {
        pumpAgain = false;
        pump();
      }
    });
  }

  /**
   * Fills the free slots with due rows (one claim statement), each sent on its own: a slot
   * freed looks again at once. With nothing more to claim, sleeps until the next row falls due.
   */
  async function pumpOnce(): Promise<void> {
    if (stopped) return;
    // A read first: the claim (a write) only when something is due.
    let next: Date | null = null;
    try {
      next = await nextDeliveryDueAt(deps);
    } catch (err) {
      log.error({ err }, 'notifier could not read the next due delivery');
    }
    const free = concurrency - inFlight.size;
    if (free > 0 && next && next <= deps.now()) {
      try {
        for (const d of await claimDeliveries(deps, free, claimMs, perChannel, byChannel)) start(d);
        next = await nextDeliveryDueAt(deps);
      } catch (err) {
        log.error({ err }, 'notifier could not claim deliveries');
        // Not at once again (a read-only database would refuse every claim): in a second.
        next = new Date(deps.now().getTime() + 1000);
      }
    }
    arm(next);
  }

  function start(d: Delivery): void {
    const channelId = d.row.channelId;
    byChannel.set(channelId, (byChannel.get(channelId) ?? 0) + 1);
    const sending: Promise<void> = deliver(d)
      .catch((err) => log.error({ err, deliveryId: d.row.id }, 'notification delivery crashed'))
      .finally(() => {
        inFlight.delete(sending);
        const n = (byChannel.get(channelId) ?? 1) - 1;
        if (n > 0) byChannel.set(channelId, n);
        else byChannel.delete(channelId);
        setImmediate(pump);
      });
    inFlight.add(sending);
  }

  /** Wakes up when the next row falls due (a pending retry, or a claim running out), at the latest after idleMs. */
  function arm(next: Date | null): void {
    if (stopped) return;
    clearTimeout(timer);
    const wait = next ? Math.min(idleMs, Math.max(0, next.getTime() - deps.now().getTime())) : idleMs;
    // Rows due now but not claimable (their channel busy, or no free slot) wait for a slot to free.
    timer = setTimeout(pump, Math.max(wait, inFlight.size > 0 ? 1000 : 0));
    timer.unref();
  }

  return {
    start(): void {
      stopped = false;
      off = deps.events.on('notification.queued', () => setImmediate(pump));
      pump();
    },
    /** Stops claiming; sends under way finish (or time out) and are settled first. */
    async stop(): Promise<void> {
      stopped = true;
      off?.();
      clearTimeout(timer);
      // A claim under way starts its sends when it returns: wait for it, then for them.
      await pumping;
      await Promise.all(inFlight);
    },
  };
}
