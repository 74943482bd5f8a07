import { Repeater } from '@repeaterjs/repeater';
import type { BacktestRow } from '../db/backtests.ts';
import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import type { FreezeRow } from '../db/freezes.ts';
import type { GateRow, RuleRow } from '../db/gates.ts';
import type { MonitorRow, MonitorStateValue } from '../db/monitors.ts';

export type GateEventKind = 'created' | 'updated' | 'deleted';

/** Pre-shaped so subscribers resolve it without a database round trip per event. */
export interface GateEvent {
  kind: GateEventKind;
  gate: GateRow;
  rules: RuleRow[];
  actorName: string;
  at: Date;
}

/** A group of a monitor changed state (a transition, recorded before it is published). */
export interface MonitorStateChange {
  monitor: MonitorRow;
  group: string;
  from: MonitorStateValue | null;
  to: MonitorStateValue;
  at: Date;
  message: string | null;
}

/** An evaluation with its rules as committed; `revision` orders snapshots of one evaluation. */
export interface EvaluationSnapshot {
  evaluation: EvaluationRow;
  rules: RuleEvaluationRow[];
}

export interface Topics {
  'gate.events': GateEvent;
  /** Any configuration change (gates, rules, API keys): caches of reads drop what they hold. */
  'config.changed': null;
  'apiKey.revoked': { id: string };
  'monitor.changed': MonitorRow;
  'monitor.transition': MonitorStateChange;
  /** A batch of requests for a service/env reached the APM store. */
  'apm.ingested': { service: string; env: string; at: Date };
  /** Every committed change of an evaluation or one of its rules. */
  'evaluation.changed': EvaluationSnapshot;
  /** An ad-hoc freeze was set or lifted: freeze rules of its environment look again. */
  'freeze.changed': FreezeRow;
  /** A backtest started, progressed, ended or was canceled (the row as committed). */
  'backtest.changed': BacktestRow;
  /** Rows were added to the notification outbox: the notifier looks at once. */
  'notification.queued': null;
}

type Topic = keyof Topics;

/**
 * What a subscription's `keep` answers to send several values for one event, in order: a
 * follower that missed revisions sends them (read from the store) before the one it heard.
 */
export class Several<R> {
  constructor(readonly values: readonly R[]) {}
}

/** A subscription's answer to one event: a value, Several, or undefined for none. */
type Kept<R> = R | Several<R> | undefined;

/** Events a subscriber may fall behind by before it is cut off rather than slow everyone. */
export const MAX_PENDING_EVENTS = 1000;

export class SlowSubscriberError extends Error {
  constructor() {
    super(`subscription ended: more than ${MAX_PENDING_EVENTS} events were waiting for this client`);
  }
}

/**
 * The event bus. Published only after the transaction that made the change has committed.
 * In-process consumers (the engine, caches) get a synchronous callback; GraphQL subscribers
 * get an async iterator each, filtered at the source and cut off, alone, when they fall too
 * far behind. The EventTarget is injectable so several processes can later share a bus.
 */
export function createEvents(target: EventTarget = new EventTarget()) {
  return {
    publish<T extends Topic>(topic: T, payload: Topics[T]): void {
      target.dispatchEvent(new CustomEvent(topic, { detail: payload }));
    },

    /** Calls `handle` for each event until the returned function is called. */
    on<T extends Topic>(topic: T, handle: (payload: Topics[T]) => void): () => void {
      const listener = (e: Event) => handle((e as CustomEvent<Topics[T]>).detail);
      target.addEventListener(topic, listener);
      return () => target.removeEventListener(topic, listener);
    },

    /**
     * Events of a topic that pass `keep` (mapped to what it returns), as an iterator that stops
     * listening when returned. With `from`, the stream starts with the state `from.current()`
     * reads after listening began (events arriving meanwhile wait behind it, so none falls
     * between; when there is none the stream ends at once), and ends after the value
     * `from.last` accepts. `keep` and `current` may be async (they may read the store): events
     * still come out in the order they were published. `keep` may answer Several values for one
     * event (sent in order, each counted against the backpressure bound).
     */
    subscribe<T extends Topic, R = Topics[T]>(
      topic: T,
      keep: (payload: Topics[T]) => Kept<R> | Promise<Kept<R>> = (p) => p as unknown as R,
      from?: { current: () => R | undefined | Promise<R | undefined>; last: (value: R) => boolean },
    ): Repeater<R> {
      return new Repeater<R>(async (push, stop) => {
        let pending = 0;
        let ended = false;
        const sendOne = (value: R) => {
          if (ended) return;
          if (++pending > MAX_PENDING_EVENTS) {
            ended = true;
            return stop(new SlowSubscriberError());
          }
          void push(value).then(
            () => pending--,
            () => {},
          );
          if (from?.last(value)) {
            ended = true; // what follows the last, even in the same batch, is not sent
            stop();
          }
        };
        const send = (kept: R | Several<R>) => {
          if (!(kept instanceof Several)) return sendOne(kept);
          for (const value of kept.values) sendOne(value);
        };
        const fail = (err: unknown) => stop(err); // this subscriber's stream fails, alone; the publisher and the others go on
        const process = (payload: Topics[T]): Promise<void> | undefined => {
          let value: Kept<R> | Promise<Kept<R>>;
          try {
            value = keep(payload);
          } catch (err) {
            fail(err);
            return undefined;
          }
          if (value instanceof Promise) return value.then((v) => (v === undefined ? undefined : send(v)), fail);
          if (value !== undefined) send(value);
          return undefined;
        };
        // Async work (a `keep` or `current` that reads) runs one at a time, in arrival order.
        let busy: Promise<void> | undefined;
        let waiting = 0;
        const after = (work: Promise<void> | undefined) => {
          if (!work) return;
          const mine = (busy = work.then(() => {
            if (busy === mine) busy = undefined;
          }));
        };
        const off = this.on(topic, (payload) => {
          if (ended) return;
          if (!busy) return after(process(payload));
          if (++waiting > MAX_PENDING_EVENTS) return stop(new SlowSubscriberError());
          after(
            busy.then(() => {
              waiting--;
              return ended ? undefined : process(payload);
            }),
          );
        });
        try {
          if (from) {
            after(
              (async () => {
                const current = await from.current();
                if (current === undefined) stop();
                else send(current);
              })().catch(fail),
            );
          }
          await stop;
        } finally {
          ended = true;
          off();
        }
      });
    },
  };
}

export type Events = ReturnType<typeof createEvents>;
