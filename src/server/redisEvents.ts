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

/** Not a topic of the bus: a process telling the others that events it published were lost. */
const RESUMED = 'tollgate.events.resumed';

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
      if (role === 'subscribe') subscribed = false;
      if (state !== 'up' || closed) return;
      state = 'down';
      log.warn({ ...logFields, role, err: lastError }, 'redis connection lost: events reach this process only until it is back');
    });
  };
  watch(publisher, 'publish');
  watch(subscriber, 'subscribe');

  /** Called when events of other processes may have been missed (a subscription or a publisher came back). */
  const resumedListeners = new Set<() => void>();
  const resumed = () => {
    for (const listener of resumedListeners) listener();
  };

  subscriber.on('ready', () => {
    subscriber.subscribe(channel).then(
      () => {
        subscribed = true;
        // Subscribed again: what other processes published meanwhile never came.
        if (++stats.subscriptions > 1) resumed();
      },
      () => {}, // the connection dropped again: the next 'ready' subscribes
    );
  });

  const failed = (err: Error) => {
    stats.failed++;
    if (unshared++ === 0 && !closed) log.warn({ ...logFields, err: err.message }, 'events are not reaching other processes (redis publish failed)');
  };
  const succeeded = () => {
    stats.published++;
    if (unshared > 0) {
      log.info({ ...logFields, unshared }, 'events reach other processes again; those published meanwhile did not');
      // The others missed ours: they catch up from the database.
      publish(RESUMED, null);
    }
    unshared = 0;
  };

  const publish = (topic: string, detail: unknown) => {
    if (closed || pending >= maxPending) {
      stats.dropped++;
      if (!closed && unshared++ === 0) log.warn({ ...logFields, maxPending }, 'events are not reaching other processes (redis is not answering publishes)');
      return;
    }
    let text: string;
    try {
      text = serialize({ origin, node: nodeId, topic, detail } satisfies Message);
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
        failed(err);
      },
    );
  };

  class SharedEventTarget extends EventTarget {
    override dispatchEvent(event: Event): boolean {
      const result = super.dispatchEvent(event);
      publish(event.type, (event as CustomEvent).detail);
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
    if (message.origin === origin) return; // our own, already dispatched when published
    stats.received++;
    if (message.topic === RESUMED) return resumed();
    target.dispatchLocally(new CustomEvent(message.topic, { detail: message.detail }));
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
     * Calls `listener` whenever events of other processes may have been lost (Redis came back):
     * whoever shows state from them reads it again from the database. Returns the unsubscriber.
     */
    onResumed(listener: () => void): () => void {
      resumedListeners.add(listener);
      return () => resumedListeners.delete(listener);
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
      await Promise.all([shut(publisher), shut(subscriber)]);
    },
  };
}
