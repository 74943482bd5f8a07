// The revisions of evaluations as one process delivers them to its listeners when several
// instances share events through Redis (docs/scale-out.md): each revision once, in revision order
// per evaluation, none skipped, whatever Redis lost, repeated or reordered. Every
// evaluation.changed, this process's and the others', passes through here. The feed remembers the
// last revision it delivered of each evaluation: one already delivered is dropped, one more than
// one ahead comes after those between, read from the revision log; and when events may have been
// lost (`replay`), what was written meanwhile is read from the log and delivered, less what
// already was. So every stream over the bus (evaluationEvents, evaluationUpdated, the engine)
// sees each evaluation's revisions in order, with no gap, and pays for a lost event in latency only.

import type { Tx } from '../db/client.ts';
import { revisionKeysSince, revisionsBetween, revisionsFrom } from '../db/evaluationRevisions.ts';
import type { Logger } from '../log.ts';
import type { EvaluationSnapshot } from './events.ts';

/**
 * How much earlier than the moment events were lost a lost revision may be dated: a revision's
 * time is taken before its transaction (which may wait for a connection, a lock, retries) and
 * it is published after the commit; and instances' clocks differ a little. Reading more only
 * costs a scan of keys.
 */
const SLACK_MS = 60_000;
/** A replay reads at most this far back: an outage longer than that costs the older revisions. */
const MAX_REPLAY_MS = 15 * 60_000;
/** Revisions read per query, and delivered per turn of the event loop (thousands of subscribers filter each). */
const READ_BATCH = 100;
const PER_TURN = 50;

export interface RevisionFeedOptions {
  slackMs?: number;
  maxReplayMs?: number;
  /** Epoch milliseconds. */
  now?: () => number;
}

/**
 * The last revision delivered of each evaluation, kept between `keepMs` and twice that after
 * the evaluation's last one: two generations, the older dropped whole, so forgetting costs
 * nothing per entry. `keepMs` covers the longest replay, so a replayed revision is never
 * mistaken for a new one.
 */
class Delivered {
  private young = new Map<string, number>();
  private old = new Map<string, number>();
  private rotatedAt: number;

  constructor(
    private readonly keepMs: number,
    private readonly now: () => number,
  ) {
    this.rotatedAt = now();
  }

  get(id: string): number | undefined {
    this.rotate();
    return this.young.get(id) ?? this.old.get(id);
  }

  set(id: string, revision: number): void {
    this.rotate();
    this.young.set(id, revision);
  }

  private rotate(): void {
    const now = this.now();
    if (now - this.rotatedAt < this.keepMs) return;
    this.old = now - this.rotatedAt < 2 * this.keepMs ? this.young : new Map();
    this.young = new Map();
    this.rotatedAt = now;
  }
}

export function createRevisionFeed(db: Tx, log: Logger, deliver: (snapshot: EvaluationSnapshot) => void, options: RevisionFeedOptions = {}) {
  const now = options.now ?? Date.now;
  const slackMs = options.slackMs ?? SLACK_MS;
  const maxReplayMs = options.maxReplayMs ?? MAX_REPLAY_MS;
  const keepMs = maxReplayMs + slackMs;
  const startedAt = now();
  const delivered = new Delivered(keepMs, now);
  let stopped = false;
  /** Work in progress (a read from the log); what is offered meanwhile waits behind it, in order. */
  let tail: Promise<void> | undefined;

  const take = (snapshot: EvaluationSnapshot) => {
    delivered.set(snapshot.evaluation.id, snapshot.evaluation.revision);
    if (!stopped) deliver(snapshot);
  };

  /**
   * The last revision delivered; for an evaluation never delivered that began after this feed
   * did (recently enough to be remembered), 0: all of its revisions are due, so one whose first
   * revisions were lost, or are still on their way behind a later one, starts at its first.
   * One that began before is taken from the first revision heard: what came before is not news.
   */
  const lastOf = (e: EvaluationSnapshot['evaluation']): number | undefined => {
    const last = delivered.get(e.id);
    if (last !== undefined) return last;
    return e.startedAt.getTime() >= Math.max(startedAt, now() - keepMs + slackMs) ? 0 : undefined;
  };

  /** Delivers the snapshot, after the revisions it skips; a promise when those must be read first. */
  const admit = (snapshot: EvaluationSnapshot): Promise<void> | undefined => {
    const { id, revision } = snapshot.evaluation;
    const last = lastOf(snapshot.evaluation);
    if (last !== undefined && revision <= last) return undefined; // delivered already
    if (last === undefined || revision === last + 1) {
      take(snapshot);
      return undefined;
    }
    return revisionsBetween(db, id, last, revision).then(
      (missed) => {
        for (const m of missed) take(m);
        take(snapshot);
      },
      (err: unknown) => {
        if (!stopped) log.error({ err, evaluationId: id, after: last, before: revision }, 'could not read the revisions an event skipped; delivered it without them');
        take(snapshot);
      },
    );
  };

  const chain = (work: Promise<void>) => {
    const mine: Promise<void> = (tail = work
      .catch((err: unknown) => log.error({ err }, 'delivering an evaluation revision failed'))
      .then(() => {
        if (tail === mine) tail = undefined;
      }));
  };

  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

  /** Reads from the log and delivers, in order, what was written from `from` on and not delivered yet. */
  async function catchUp(from: Date): Promise<void> {
    const keys = await revisionKeysSince(db, from);
    // The first revision due of each evaluation, evaluations in the order they were written.
    const due = new Map<string, number>();
    for (const { evaluationId, revision } of keys) {
      if (due.has(evaluationId)) continue;
      const last = delivered.get(evaluationId);
      if (last === undefined || revision > last) due.set(evaluationId, last === undefined ? revision : last + 1);
    }
    let sent = 0;
    const starts = [...due].map(([evaluationId, first]) => ({ evaluationId, from: first }));
    for (let i = 0; i < starts.length && !stopped; i += READ_BATCH) {
      const batch = starts.slice(i, i + READ_BATCH);
      const order = new Map(batch.map((s, n) => [s.evaluationId, n]));
      const snapshots = (await revisionsFrom(db, batch)).sort((a, b) => order.get(a.evaluation.id)! - order.get(b.evaluation.id)!);
      for (const snapshot of snapshots) {
        await admit(snapshot);
        if (++sent % PER_TURN === 0) await nextTurn();
      }
    }
    if (sent > 0) log.info({ from, revisions: sent }, 'delivered revisions written while events between instances were lost');
  }

  return {
    /** An evaluation.changed, from this process or another: delivered now, later (after a read), or not at all (a repeat). */
    offer(snapshot: EvaluationSnapshot): void {
      if (!tail) {
        const work = admit(snapshot);
        if (work) chain(work);
        return;
      }
      chain(tail.then(() => admit(snapshot)));
    },

    /**
     * Events may have been lost from `since` on (the moment Redis was last heard, or another
     * process's first failed publish): the revisions written from then on, less a slack, are
     * read and those not delivered yet are delivered, before anything offered afterwards.
     */
    replay(since: Date): void {
      const from = new Date(Math.max(since.getTime() - slackMs, startedAt, now() - maxReplayMs));
      chain(
        (tail ?? Promise.resolve()).then(() =>
          catchUp(from).catch((err: unknown) => {
            if (!stopped) log.error({ err, from }, 'could not read the revisions written while events between instances were lost');
          }),
        ),
      );
    },

    /** Resolves once nothing offered is waiting (tests). */
    async idle(): Promise<void> {
      while (tail) await tail;
    },

    /** Delivers nothing more; resolves once the work in progress has ended. */
    async stop(): Promise<void> {
      stopped = true;
      await tail;
    },
  };
}
