// Monitors whose state Tollgate works out itself, each type from its source (monitorSources.ts):
// every round, and at once for the monitors a batch of new spans concerns. The sources record
// states like pushed reports, so transitions, NO_DATA and the rules watching them behave the
// same whatever the source.
//
// Instances sharing a PostgreSQL elect one evaluator through the 'monitors' lease: only its
// holder evaluates (each monitor once a round, not once per instance, and never two instances
// recording one monitor's states out of order). Spans ingested elsewhere reach the holder as
// 'apm.ingested' through Redis. A SQLite file has one server, which always evaluates.
import { dialectOf } from '../db/dialect.ts';
import { holdLease, releaseLease } from '../db/leases.ts';
import { type MonitorRow, monitorsOfType } from '../db/monitors.ts';
import { MONITOR_TYPES } from '../db/schema.ts';
import type { Deps } from '../domain/deps.ts';
import type { SourceContext } from './monitorSource.ts';
import { monitorSources } from './monitorSources.ts';
import type { PrometheusClient } from './prometheus.ts';

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

/** The lease that makes one instance of several the monitor evaluator. */
export const MONITOR_LEASE = 'monitors';

/** How long the evaluator's lease runs: three rounds, and never under 30 s (a slow round, a pause). */
export const monitorLeaseMs = (intervalMs: number): number => Math.max(30_000, 3 * intervalMs);

export function createMonitorEvaluator(deps: Deps, options: { intervalMs: number; prometheus: PrometheusClient | null }) {
  const log = deps.log.child({ component: 'monitors' });
  const shared = dialectOf(deps.db) === 'pg';
  const leaseMs = monitorLeaseMs(options.intervalMs);
  /** Until when this instance holds the lease, by its own clock (renewed each round); SQLite: always. */
  let heldUntil = shared ? 0 : Number.POSITIVE_INFINITY;
  const holding = () => deps.now().getTime() < heldUntil;
  /** Takes or renews the lease (PostgreSQL); true while this instance is the evaluator. */
  async function hold(): Promise<boolean> {
    if (!shared) return true;
    const now = deps.now();
    const held = await holdLease(deps.db, MONITOR_LEASE, deps.nodeId, now, leaseMs);
    if (held !== heldUntil > now.getTime()) log.info({ nodeId: deps.nodeId }, held ? 'evaluating monitors (lease taken)' : 'monitors evaluated by another instance');
    heldUntil = held ? now.getTime() + leaseMs : 0;
    return held;
  }
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let stopped = false;
  const offs: Array<() => void> = [];

  const sources = monitorSources(options.prometheus);
  const ctx: SourceContext = { deps, log };
  /** Types whose states Tollgate reads (the others are pushed): only their monitors are loaded. */
  const evaluated = MONITOR_TYPES.filter((type) => sources[type].evaluate || sources[type].sync);
  const readingSpans = MONITOR_TYPES.filter((type) => sources[type].readsSpansOf);
  const spansKey = (s: { service: string; env: string }) => `${s.service}\u0000${s.env}`;

  // One evaluation of a monitor at a time: the round and an ingestion may both look at it, and
  // the one that read older data must not record its state after the other.
  const evaluating = new Map<string, Promise<void>>();
  function evaluateOne(m: MonitorRow): Promise<void> | undefined {
    const evaluate = sources[m.type].evaluate;
    if (!evaluate) return undefined;
    const previous = evaluating.get(m.id);
    const run = (previous ?? Promise.resolve())
      .then(() => evaluate(ctx, m))
      .finally(() => {
        if (evaluating.get(m.id) === run) evaluating.delete(m.id);
      });
    evaluating.set(m.id, run);
    return run;
  }

  async function evaluateAll(): Promise<void> {
    if (!(await hold())) return;
    const monitors = await monitorsOfType(deps.db, evaluated);
    const breathe = slicer();
    for (const m of monitors) {
      await breathe();
      if (stopped || !holding()) return;
      await evaluateOne(m);
    }
    for (const type of evaluated)
      await sources[type].sync?.(
        ctx,
        monitors.filter((m) => m.type === type),
      );
  }

  function runRound(): Promise<void> {
    round ??= evaluateAll()
      .catch((err) => log.error({ err }, 'monitor evaluation failed'))
      .finally(() => {
        round = undefined;
      });
    return round;
  }

  // New spans re-evaluate the monitors reading their service's spans at once (coalesced per
  // tick, and in slices when a service has many).
  const pending = new Set<string>();
  async function evaluateIngested(): Promise<void> {
    // Scheduled a turn after the batch: the server may have stopped (and closed the database) since.
    if (stopped) return;
    const keys = new Set(pending);
    pending.clear();
    // Another instance evaluates: the event reached it too (through Redis when spans came here).
    if (!holding()) return;
    const breathe = slicer();
    for (const m of await monitorsOfType(deps.db, readingSpans)) {
      const source = sources[m.type];
      const reads = source.readsSpansOf?.(m);
      if (!reads || !keys.has(spansKey(reads))) continue;
      await breathe();
      if (stopped || !holding()) return;
      try {
        await evaluateOne(m);
      } catch (err) {
        log.error({ err, monitorId: m.id }, 'APM monitor evaluation failed');
      }
    }
  }
  function onIngested({ service, env }: { service: string; env: string }): void {
    // A failure here (the database gone) is logged, never an unhandled rejection that ends the process.
    if (pending.size === 0) setImmediate(() => evaluateIngested().catch((err) => log.error({ err }, 'APM monitor evaluation after ingestion failed')));
    pending.add(spansKey({ service, env }));
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
      // An evaluation after ingestion may still be running: it records before the lease goes.
      await Promise.allSettled([...evaluating.values()]);
      // Handed back: another instance takes over at its next round, not when the lease runs out.
      if (shared && heldUntil > 0) {
        heldUntil = 0;
        await releaseLease(deps.db, MONITOR_LEASE, deps.nodeId).catch((err) => log.error({ err }, 'releasing the monitor lease failed'));
      }
    },
  };
}
