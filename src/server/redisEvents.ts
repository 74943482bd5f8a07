import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { deserialize, serialize } from '../db/taggedJson.ts';
import type { Logger } from '../log.ts';

/**
 * The event bus shared by several Tollgate processes through Redis pub/sub. The target it
 * returns is handed to createEvents (src/domain/events.ts): dispatching an event calls this
 * process's listeners at once, as a plain EventTarget does, then publishes it; events other
 * processes publish are dispatched here as they arrive. Local delivery never waits for Redis,
 * so a Redis outage cuts processes off from each other, never from their own events.
 *
 * One channel per prefix (`<prefix>:events`), not one per topic: every process listens to
 * every topic (engine, caches, subscriptions), so per-topic channels would save nothing, and
 * one channel keeps a process's events in the order it published them whatever their topic.
 */
export interface RedisEventTargetOptions {
  url: string;
  /** Processes with the same prefix share events; another prefix is another bus. */
  channelPrefix?: string;
  log: Logger;
  /** Names this process in logs and Redis CLIENT LIST; messages are told apart by a random origin. */
  nodeId: string;
  /** Publishes waiting for a connection or an answer before more are dropped (an outage or a stalled Redis holds them all). */
  maxPending?: number;
}

export interface RedisEventStats {
  /** Sent to Redis and acknowledged. */
  published: number;
  /** Refused: Redis unreachable or in error. */
  failed: number;
  /** Not even tried: maxPending publishes were already waiting, or the target was closed. */
  dropped: number;
  /** Sent, not yet answered. */
  pending: number;
  /** Received from other processes and dispatched here. */
  received: number;
  /** Confirmed subscriptions so far (one per connection of the subscriber). */
  subscriptions: number;
}

interface Message {
  origin: string;
  node: string;
  topic: string;
  detail: unknown;
  /** When it was published (the publisher's clock, epoch ms); absent from older versions. */
  at?: number;
}

/** A name Redis accepts for CLIENT SETNAME (no spaces), so a node id with any characters works. */
export const clientName = (nodeId: string, role: string) => `tollgate:${nodeId.replace(/[^\w.:-]/g, '_').slice(0, 100)}:${role}`;

/** Where the URL points, without its credentials, for logs. */
export function redisAddress(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '(unparsable URL)';
  }
}

/**
 * Not a topic of the bus: a process telling the others that events it published from `since`
 * (its clock) were lost.
 */
const RESUMED = 'tollgate.events.resumed';

/** How often a process whose publishes failed tries again to tell the others, when it has nothing else to publish. */
const ANNOUNCE_RETRY_MS = 1_000;

export function createRedisEventTarget({ url, channelPrefix = 'tollgate', log, nodeId, maxPending = 10_000 }: RedisEventTargetOptions) {
  const channel = `${channelPrefix}:events`;
  const origin = randomUUID();
  const logFields = { redis: redisAddress(url), channel };
  const stats: Omit<RedisEventStats, 'pending'> = { published: 0, failed: 0, dropped: 0, received: 0, subscriptions: 0 };
  let pending = 0;
  let closed = false;
  let subscribed = false;
  /** Publishes refused since the last one that went through; logged once per outage. */
  let unshared = 0;
  /** When the first of them was refused (ms): the others catch up on what was written since. */
  let unsharedSince: number | undefined;
  let announceTimer: NodeJS.Timeout | undefined;
  const createdAt = Date.now();
  /**
   * Up to when the subscription is known to have delivered: when it was confirmed, or when the
   * last message that came through it (ours included) was published. Redis delivers a channel
   * in the order it received the publishes, so whatever was lost was published after that, even
   * when Redis held it back for a while before dropping the connection. Once the connection
   * drops, `lostSince` keeps it until the subscription is back and the listeners are told.
   */
  let heardAt = createdAt;
  let lostSince: number | undefined;

  // A publish waits for a connection being made (so events of the first moments after start
  // are shared) but fails at the first attempt that does not connect, rather than piling up
  // through an outage; `pending` counts those waiting too, so maxPending bounds the memory.
  // A publish in flight when the connection drops fails rather than being sent again late.
  const publisher = new Redis(url, {
    connectionName: clientName(nodeId, 'pub'),
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  });
  // Subscribes itself at each 'ready' (see below), so ioredis's own resubscription is off and
  // nothing waits in its offline queue.
  const subscriber = new Redis(url, {
    connectionName: clientName(nodeId, 'sub'),
    enableOfflineQueue: false,
    autoResubscribe: false,
  });

  /** Says once when a connection goes down, once when it is back, never per retry or per event. */
  const watch = (conn: Redis, role: 'publish' | 'subscribe') => {
    let state: 'starting' | 'up' | 'down' = 'starting';
    let lastError: string | undefined;
    conn.on('error', (err: Error) => {
      lastError = err.message;
      if (state === 'starting' && !closed) {
        state = 'down';
        log.warn({ ...logFields, role, err: lastError }, 'redis unreachable: events reach this process only until it answers');
      }
    });
    conn.on('ready', () => {
      if (state === 'down') log.info({ ...logFields, role }, 'redis is back: events are shared with other processes again');
      else log.info({ ...logFields, role }, 'redis connected');
      state = 'up';
      lastError = undefined;
    });
    conn.on('close', () => {
      if (role === 'subscribe' && subscribed) {
        subscribed = false;
        lostSince ??= heardAt;
      }
      if (state !== 'up' || closed) return;
      state = 'down';
      log.warn({ ...logFields, role, err: lastError }, 'redis connection lost: events reach this process only until it is back');
    });
  };
  watch(publisher, 'publish');
  watch(subscriber, 'subscribe');

  /** Called when events of other processes may have been missed since a moment (a subscription or a publisher came back). */
  const resumedListeners = new Set<(since: Date) => void>();
  const resumed = (since: Date) => {
    for (const listener of resumedListeners) listener(since);
  };

  subscriber.on('ready', () => {
    subscriber.subscribe(channel).then(
      () => {
        subscribed = true;
        heardAt = Date.now();
        // Subscribed (again): what other processes published before never came. The first
        // time, that is what they published while this process was starting.
        const since = ++stats.subscriptions === 1 ? createdAt : (lostSince ?? createdAt);
        lostSince = undefined;
        resumed(new Date(since));
      },
      () => {}, // the connection dropped again: the next 'ready' subscribes
    );
  });

  /**
   * Tells the others that events published since the first refused one did not reach them (they
   * read them from the database). Sent by the next publish that goes through, else when the
   * connection is back or after a pause, so a process with nothing more to say says it too.
   */
  const announce = () => {
    if (unshared === 0 || closed || publisher.status !== 'ready') return;
    log.info({ ...logFields, unshared }, 'events reach other processes again; those published meanwhile did not');
    const since = unsharedSince!;
    unshared = 0;
    unsharedSince = undefined;
    publish(RESUMED, { since: new Date(since) });
  };
  publisher.on('ready', announce);
  /** A publish was refused or dropped: counted from the moment of the first one. */
  const unsharedFrom = (since: number) => {
    unshared++;
    unsharedSince = Math.min(unsharedSince ?? since, since);
    if (announceTimer || closed) return;
    announceTimer = setTimeout(() => {
      announceTimer = undefined;
      announce();
    }, ANNOUNCE_RETRY_MS);
    announceTimer.unref();
  };
  const failed = (err: Error, since: number) => {
    stats.failed++;
    if (unshared === 0 && !closed) log.warn({ ...logFields, err: err.message }, 'events are not reaching other processes (redis publish failed)');
    unsharedFrom(since);
  };
  const succeeded = () => {
    stats.published++;
    announce();
  };

  const publish = (topic: string, detail: unknown) => {
    // A lost announcement is announced again, from the same moment.
    const since = topic === RESUMED ? (detail as { since: Date }).since.getTime() : Date.now();
    if (closed || pending >= maxPending) {
      stats.dropped++;
      if (!closed && unshared === 0) log.warn({ ...logFields, maxPending }, 'events are not reaching other processes (redis is not answering publishes)');
      if (!closed) unsharedFrom(since);
      return;
    }
    let text: string;
    try {
      text = serialize({ origin, node: nodeId, topic, detail, at: Date.now() } satisfies Message);
    } catch (err) {
      // A payload JSON cannot hold (a cycle): a bug of the publisher, reported without failing it.
      stats.failed++;
      log.error({ ...logFields, topic, err: (err as Error).message }, 'event not shared with other processes: its payload cannot be serialized');
      return;
    }
    pending++;
    publisher.publish(channel, text).then(
      () => {
        pending--;
        succeeded();
      },
      (err: Error) => {
        pending--;
        failed(err, since);
      },
    );
  };

  /** Topics whose events, this process's and others', go to a handler instead of the listeners (see route()). */
  const routes = new Map<string, (detail: unknown) => void>();

  class SharedEventTarget extends EventTarget {
    override dispatchEvent(event: Event): boolean {
      const detail = (event as CustomEvent).detail;
      const route = routes.get(event.type);
      const result = route ? (route(detail), true) : super.dispatchEvent(event);
      publish(event.type, detail);
      return result;
    }

    /** An event another process published: this process's listeners only. */
    dispatchLocally(event: Event): void {
      super.dispatchEvent(event);
    }
  }
  const target = new SharedEventTarget();

  let badMessageLogged = false;
  subscriber.on('message', (from: string, text: string) => {
    if (from !== channel) return;
    let message: Message;
    try {
      message = deserialize(text) as Message;
      if (typeof message?.topic !== 'string' || typeof message.origin !== 'string') throw new Error('not a Tollgate event');
    } catch (err) {
      // Something else publishes on our channel: say so once rather than per message.
      if (!badMessageLogged) log.warn({ ...logFields, err: (err as Error).message }, 'ignored a message on the events channel that is not a Tollgate event');
      badMessageLogged = true;
      return;
    }
    heardAt = typeof message.at === 'number' ? message.at : Date.now();
    if (message.origin === origin) return; // our own, already dispatched when published
    stats.received++;
    if (message.topic === RESUMED) return resumed(new Date((message.detail as { since?: Date } | null)?.since ?? createdAt));
    const route = routes.get(message.topic);
    if (route) route(message.detail);
    else target.dispatchLocally(new CustomEvent(message.topic, { detail: message.detail }));
  });

  const shut = async (conn: Redis) => {
    if (conn.status === 'end') return;
    const ended = new Promise<void>((resolve) => conn.once('end', resolve));
    // 'reconnecting' holds no socket, only a timer that disconnect() clears; it never emits 'end' then.
    const hasSocket = conn.status !== 'reconnecting' && conn.status !== 'wait' && conn.status !== 'close';
    if (conn.status === 'ready') await conn.quit().catch(() => conn.disconnect());
    else conn.disconnect();
    if (hasSocket) await ended;
  };

  return {
    target: target as EventTarget,

    /** For /readyz to report: whether events reach other processes and theirs reach this one. */
    ready(): { ok: boolean; detail: string } {
      const pub = publisher.status === 'ready';
      const sub = subscriber.status === 'ready' && subscribed;
      if (pub && sub) return { ok: true, detail: `redis ${logFields.redis}: publishing and subscribed to ${channel}` };
      const down = [pub ? null : `publisher ${publisher.status}`, sub ? null : `subscriber ${subscriber.status === 'ready' ? 'subscribing' : subscriber.status}`];
      return { ok: false, detail: `redis ${logFields.redis}: ${down.filter(Boolean).join(', ')}; events reach this process only` };
    },

    /**
     * Calls `listener` whenever events of other processes may have been lost (subscribed at
     * start, Redis came back, another process could not publish), with the moment from which
     * they may have been: whoever shows state from them reads it again from the database. That
     * moment is this process's clock, or the other's when it could not publish: allow for
     * clocks apart and for writes published a while after their time. Returns the unsubscriber.
     */
    onResumed(listener: (since: Date) => void): () => void {
      resumedListeners.add(listener);
      return () => resumedListeners.delete(listener);
    },

    /**
     * Events of `topic`, published here or received from other processes, are handed to
     * `handle` instead of this process's listeners (they are still published as usual);
     * `handle` delivers them, or not, with dispatchLocally. One handler per topic.
     */
    route(topic: string, handle: (detail: unknown) => void): void {
      routes.set(topic, handle);
    },

    /** An event for this process's listeners only (a state read again after a resumption). */
    dispatchLocally(topic: string, detail: unknown): void {
      target.dispatchLocally(new CustomEvent(topic, { detail }));
    },

    stats(): RedisEventStats {
      return { ...stats, pending };
    },

    /** Quits both connections; events dispatched afterwards reach this process's listeners only. */
    async close(): Promise<void> {
      closed = true;
      clearTimeout(announceTimer);
      await Promise.all([shut(publisher), shut(subscriber)]);
    },
  };
}
