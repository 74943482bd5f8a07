import { revokedAmong } from '../db/apiKeys.ts';
import type { Db } from '../db/client.ts';
import type { Events } from './events.ts';
import type { Principal } from './principal.ts';

/** Why a key's open streams end: the client is told this message. */
export interface KeyEnd {
  reason: 'revoked' | 'expired';
  message: string;
}

/** setTimeout's longest delay (about 24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How often keys holding open streams are looked up, for revocations made by another process
 * (`tollgate keys revoke`, or another instance while Redis is down): the longest such a key's
 * streams outlive it, since streams are ended here and not by the authentication cache. Each
 * poll is one query on the primary key per 500 watched keys (0.1 ms for 10 keys, 5 ms for 1,000
 * on SQLite), and there is none while no stream is open.
 */
const REVOCATION_POLL_MS = 500;

export type KeyWatch = ReturnType<typeof createKeyWatch>;

/**
 * The one place that knows when an authenticated key stops being valid while something it
 * opened still runs: revoked (in this process at once, through the `apiKey.revoked` event; by
 * another process within REVOCATION_POLL_MS) or past its expiresAt. Transports watch a principal
 * for as long as a socket or stream of it is open and end it when told; a watch holds one entry
 * per key, one timer per expiring key, and one poll while anything is watched.
 */
export function createKeyWatch(db: Db, events: Events, now: () => Date = () => new Date(), pollMs = REVOCATION_POLL_MS) {
  interface Watched {
    principal: Principal;
    listeners: Set<(end: KeyEnd) => void>;
    timer?: NodeJS.Timeout;
  }
  const watched = new Map<string, Watched>();
  let poll: NodeJS.Timeout | undefined;

  const revoked = (p: Principal): KeyEnd => ({ reason: 'revoked', message: `API key "${p.name}" was revoked` });
  const expired = (p: Principal): KeyEnd => ({ reason: 'expired', message: `API key "${p.name}" has expired` });

  function end(id: string, why: KeyEnd): void {
    const entry = watched.get(id);
    if (!entry) return;
    watched.delete(id);
    clearTimeout(entry.timer);
    if (watched.size === 0) stopPolling();
    for (const listener of entry.listeners) listener(why);
  }

  // Far-future expiries are reached in steps no longer than setTimeout can wait.
  function armExpiry(entry: Watched): void {
    const at = entry.principal.expiresAt;
    if (!at) return;
    const left = at.getTime() - now().getTime();
    entry.timer = setTimeout(
      () => {
        if (at.getTime() <= now().getTime()) end(entry.principal.id, expired(entry.principal));
        else armExpiry(entry);
      },
      Math.min(Math.max(left, 0), MAX_TIMER_MS),
    );
    entry.timer.unref();
  }

  function stopPolling(): void {
    clearInterval(poll);
    poll = undefined;
  }

  async function checkRevocations(): Promise<void> {
    let ids: string[];
    try {
      ids = await revokedAmong(db, [...watched.keys()]);
    } catch {
      return; // the database is unavailable: try again at the next tick
    }
    // What this process remembers of those keys (cached authentications) goes with their streams.
    if (ids.length > 0) events.publish('config.changed', null);
    for (const id of ids) {
      const entry = watched.get(id);
      if (entry) end(id, revoked(entry.principal));
    }
  }

  const offRevoked = events.on('apiKey.revoked', ({ id }) => {
    const entry = watched.get(id);
    if (entry) end(id, revoked(entry.principal));
  });

  return {
    /** Why this principal may no longer act right now (expired), or null. Revocation is the authenticator's to see. */
    ended(principal: Principal): KeyEnd | null {
      const at = principal.expiresAt;
      return at && at.getTime() <= now().getTime() ? expired(principal) : null;
    },

    /**
     * Calls `onEnd` once when the principal's key is revoked or expires (soon after this call
     * when it already has; never within it). Returns the function that stops watching: call it when the
     * socket or stream ends for any reason, so nothing is left behind.
     */
    watch(principal: Principal, onEnd: (end: KeyEnd) => void): () => void {
      let entry = watched.get(principal.id);
      if (!entry) {
        entry = { principal, listeners: new Set() };
        watched.set(principal.id, entry);
        armExpiry(entry);
        if (!poll) {
          poll = setInterval(checkRevocations, pollMs);
          poll.unref();
        }
      }
      // A fresh function per watch, so the same callback watched twice is two watches.
      const listener = (why: KeyEnd) => onEnd(why);
      entry.listeners.add(listener);
      const held = entry;
      return () => {
        if (!held.listeners.delete(listener) || held.listeners.size > 0 || watched.get(principal.id) !== held) return;
        watched.delete(principal.id);
        clearTimeout(held.timer);
        if (watched.size === 0) stopPolling();
      };
    },

    /** Keys watched now (for tests and metrics). */
    size: () => watched.size,

    close(): void {
      offRevoked();
      for (const entry of watched.values()) clearTimeout(entry.timer);
      watched.clear();
      stopPolling();
    },
  };
}
