import { claimUnfinished, type EvaluationRow, getRuleWithEvaluation, type RuleEvaluationRow, releaseLeases, renewLeases, runningRulesOf } from '../db/evaluations.ts';
import type { Deps } from '../domain/deps.ts';
import { SourceError, storageFailure } from '../domain/errors.ts';
import { type EvaluationSnapshot, LEASE_MS, loadSnapshot, type RuleUpdate, recordRuleUpdate } from '../domain/evaluations.ts';
import { pruneHistory } from '../domain/housekeeping.ts';
import { type MonitorStateChange, sweepNoData } from '../domain/monitors.ts';
import { DueChecks } from './dueChecks.ts';
import { type CheckResult, type EngineEvent, eventKeys, type Watch } from './runner.ts';
import { runnerFor } from './runners.ts';
import { TimerQueue } from './timerQueue.ts';

export interface EngineOptions {
  /** How long a claimed evaluation stays ours without renewal. */
  leaseMs?: number;
  /** Consecutive source errors before the gate's onSourceError policy decides. */
  sourceErrorLimit?: number;
  /** First retry delay after a source error; doubles each time. */
  retryBaseMs?: number;
  /**
   * Checks run in one turn of the event loop before yielding to requests, and its time budget:
   * the process's own elapsed time (performance.now), not the clock rules are judged by.
   */
  sliceChecks?: number;
  sliceMs?: number;
  /** Real timers by default; a unit test passes one it fires by hand (see `Scheduler`). */
  scheduler?: Scheduler;
}

/**
 * Where the engine's two timers come from: the wake-up for the earliest due check and the
 * housekeeping interval. The engine reads the time only from `deps.now()`; a timer only says
 * when to look again, so a test with a fixed clock fires them itself instead of sleeping.
 */
export interface Scheduler {
  /** Calls `run` once after `ms` milliseconds; the returned function cancels it. */
  after(ms: number, run: () => void): () => void;
  /** Calls `run` every `ms` milliseconds, without keeping the process alive, until cancelled. */
  every(ms: number, run: () => void): () => void;
}

export const realTimers: Scheduler = {
  after(ms, run) {
    const t = setTimeout(run, ms);
    return () => clearTimeout(t);
  },
  every(ms, run) {
    const t = setInterval(run, ms);
    t.unref();
    return () => clearInterval(t);
  },
};

interface ActiveRule {
  id: string;
  evaluationId: string;
  type: RuleEvaluationRow['type'];
  watch?: Watch;
}

/**
 * Checks running at once, per rule type (every check awaits the store; some a network source);
 * the rest of that type wait their turn, and a slow type never holds the others.
 */
const MAX_ASYNC_CHECKS_PER_TYPE = 64;

/**
 * Drives the evaluations this process holds a lease on. Everything a rule needs to continue
 * is in the database, so this keeps only an index of what runs and when to look next: one
 * timer for the earliest due check, and event handlers that re-check the rules an event may
 * concern at once. On start it claims every unfinished evaluation left by a dead process.
 */
export function createEngine(deps: Deps, options: EngineOptions = {}) {
  const leaseMs = options.leaseMs ?? LEASE_MS;
  const errorLimit = options.sourceErrorLimit ?? 4;
  const retryBaseMs = options.retryBaseMs ?? 1000;
  const nodeId = deps.nodeId;
  const log = deps.log.child({ component: 'engine' });

  const sliceChecks = options.sliceChecks ?? 200;
  const sliceMs = options.sliceMs ?? 8;

  const scheduler = options.scheduler ?? realTimers;
  const queue = new TimerQueue();
  const active = new Map<string, ActiveRule>();
  /** Rules by the exact event keys they watch, and rules sharing one predicate. */
  const byKey = new Map<string, Set<string>>();
  const shared = new Map<string, { matches: (event: EngineEvent) => boolean; rules: Set<string> }>();
  const due = new DueChecks();
  let drainScheduled = false;
  const inFlight = new Map<string, Promise<void>>();
  /** Asynchronous checks running, per rule type (the lanes of `due`). */
  const busy = new Map<string, number>();
  const laneOpen = (lane: string) => (busy.get(lane) ?? 0) < MAX_ASYNC_CHECKS_PER_TYPE;
  const checkAgain = new Set<string>();
  const unsubscribe: Array<() => void> = [];
  let cancelTimer: (() => void) | undefined;
  let cancelHousekeeping: (() => void) | undefined;
  let stopped = false;

  function rearm(): void {
    cancelTimer?.();
    cancelTimer = undefined;
    const next = queue.peek();
    if (next === undefined || stopped) return;
    // setTimeout's limit is about 24.8 days; a later wake-up just re-arms.
    cancelTimer = scheduler.after(Math.min(Math.max(0, next - deps.now().getTime()), 2 ** 31 - 1), fire);
  }

  /** Queues every check due by the clock; a timer firing early (or late) only looks again. */
  function fire(): void {
    for (const id of queue.takeDue(deps.now().getTime())) enqueue(id);
    rearm();
  }

  function index(rule: ActiveRule): void {
    const w = rule.watch;
    if (!w) return;
    if ('keys' in w) {
      for (const key of w.keys) {
        let rules = byKey.get(key);
        if (!rules) byKey.set(key, (rules = new Set()));
        rules.add(rule.id);
      }
    } else {
      let entry = shared.get(w.shareKey);
      if (!entry) shared.set(w.shareKey, (entry = { matches: w.matches, rules: new Set() }));
      entry.rules.add(rule.id);
    }
  }

  function unindex(rule: ActiveRule): void {
    const w = rule.watch;
    if (!w) return;
    if ('keys' in w) {
      for (const key of w.keys) {
        const rules = byKey.get(key);
        if (rules?.delete(rule.id) && rules.size === 0) byKey.delete(key);
      }
    } else {
      const entry = shared.get(w.shareKey);
      if (entry?.rules.delete(rule.id) && entry.rules.size === 0) shared.delete(w.shareKey);
    }
  }

  function untrack(id: string): void {
    const rule = active.get(id);
    if (rule) unindex(rule);
    active.delete(id);
    queue.delete(id);
    due.delete(id);
  }

  /** Mirrors a committed snapshot into the index: new rules, next checks, finished rules. */
  function track(snapshot: EvaluationSnapshot): void {
    const { evaluation: e, rules } = snapshot;
    if (e.leaseOwner !== nodeId) return;
    for (const r of rules) {
      if (e.finishedAt || r.status !== 'in_progress') {
        untrack(r.id);
        continue;
      }
      if (!active.has(r.id)) {
        const rule: ActiveRule = { id: r.id, evaluationId: e.id, type: r.type, watch: compileWatch(r.type, r.options, e, r.id) };
        active.set(r.id, rule);
        index(rule);
      }
      // Every running rule has a next check; its window's end at the latest.
      queue.set(r.id, (r.nextCheckAt ?? r.windowEndsAt).getTime());
    }
    rearm();
  }

  /** An event handler that logs instead of throwing into the publisher. */
  function guarded<T>(handle: (value: T) => void): (value: T) => void {
    return (value) => {
      try {
        handle(value);
      } catch (err) {
        log.error({ err }, 'engine event handler failed');
      }
    };
  }

  function compileWatch(type: RuleEvaluationRow['type'], options: Record<string, unknown>, evaluation: EvaluationSnapshot['evaluation'], id: string) {
    try {
      return runnerFor(type)?.watch?.(options, evaluation);
    } catch (err) {
      // Without a watch the rule still runs on its timer; it only loses the instant wake-up.
      log.error({ err, ruleEvaluationId: id }, 'could not index a rule for events');
      return undefined;
    }
  }

  /** Asks for a check of a rule; checks run later, a bounded slice per turn of the event loop. */
  function enqueue(id: string): void {
    if (stopped) return;
    due.add(id, active.get(id)?.type ?? 'unindexed');
    scheduleDrain();
  }

  function scheduleDrain(): void {
    if (drainScheduled || stopped || !due.runnable(laneOpen)) return;
    drainScheduled = true;
    setImmediate(drain);
  }

  /**
   * Runs due checks until the slice's count or time budget is spent, then yields so requests
   * (and /healthz) are answered between slices. One event may wake thousands of rules; it
   * must never hold the process for more than a slice.
   */
  function drain(): void {
    drainScheduled = false;
    if (stopped) return;
    const until = performance.now() + sliceMs;
    let n = 0;
    for (let id = due.take(laneOpen); id !== undefined; id = due.take(laneOpen)) {
      check(id);
      if (++n >= sliceChecks || performance.now() >= until) break;
    }
    scheduleDrain();
  }

  function couldNotRecord(id: string, err: unknown): void {
    // The database itself failed (busy, disk full): nothing was recorded, so look again soon.
    log.error({ err, ruleEvaluationId: id }, 'rule check could not be recorded; retrying');
    if (!stopped && active.has(id)) {
      queue.set(id, deps.now().getTime() + retryBaseMs);
      rearm();
    }
  }

  /**
   * Starts one check of one rule, tracked in its type's lane until it is recorded (the store
   * is asynchronous, so every check is); a check asked for while it runs is run again right after.
   */
  function check(id: string): void {
    if (inFlight.has(id)) {
      checkAgain.add(id);
      return;
    }
    const lane = active.get(id)?.type ?? 'unindexed';
    busy.set(lane, (busy.get(lane) ?? 0) + 1);
    const run = runCheck(id)
      .catch((err) => couldNotRecord(id, err))
      .finally(() => {
        inFlight.delete(id);
        busy.set(lane, busy.get(lane)! - 1);
        if (checkAgain.delete(id)) enqueue(id);
        // A slice may have stopped at the lane's limit: go on with the rest.
        scheduleDrain();
      });
    inFlight.set(id, run);
  }

  async function runCheck(id: string): Promise<void> {
    if (stopped) return;
    const { rule, evaluation } = (await getRuleWithEvaluation(deps.db, id)) ?? {};
    // Another engine took the evaluation over (our lease lapsed): its checks are that engine's now.
    if (!rule || !evaluation || rule.status !== 'in_progress' || evaluation.finishedAt || evaluation.leaseOwner !== nodeId) {
      untrack(id);
      return;
    }
    let result: CheckResult;
    try {
      const runner = runnerFor(rule.type);
      if (!runner) throw new Error(`no runner for ${rule.type} rules`);
      result = await runner.check(deps, { rule, evaluation, now: deps.now() });
    } catch (err) {
      await record(rule, evaluation, { error: err });
      return;
    }
    await record(rule, evaluation, { result });
  }

  async function record(rule: RuleEvaluationRow, evaluation: EvaluationRow, outcome: { result: CheckResult } | { error: unknown }): Promise<void> {
    if (stopped) return;
    const id = rule.id;
    let update: RuleUpdate;
    if ('result' in outcome) {
      const result = outcome.result;
      update = {
        status: result.status,
        reason: result.reason,
        evidence: result.evidence ?? rule.evidence,
        state: result.state ?? rule.state,
        nextCheckAt: result.status === 'in_progress' ? result.nextCheckAt : null,
        consecutiveErrors: 0,
        lastError: null,
      };
    } else {
      const err = outcome.error;
      // Our own database failing is not the rule's data source failing: it must never count
      // toward onSourceError (a disk problem would otherwise pass or fail gates). Look again later.
      if (storageFailure(err)) return couldNotRecord(id, err);
      // Never silent: every failure is counted, retried, and finally decided by the policy.
      const message = err instanceof SourceError ? err.message : `internal error: ${(err as Error).message}`;
      const errors = rule.consecutiveErrors + 1;
      // A data source down is the operator's to know (no stack: it is not our bug); the rest is.
      if (err instanceof SourceError)
        log.warn({ ruleEvaluationId: id, evaluationId: rule.evaluationId, errors, limit: errorLimit, problem: err.message }, 'rule check could not read its data source');
      else log.error({ err, ruleEvaluationId: id }, 'rule check failed');
      // What the failed check had found (the monitors it judged), else what the last one did.
      const found = err instanceof SourceError && err.evidence ? err.evidence : rule.evidence;
      update =
        errors >= errorLimit
          ? {
              status: evaluation.onSourceError,
              reason: `The data source failed ${errors} times in a row (last: ${message}); the gate's onSourceError policy makes the rule ${evaluation.onSourceError}.`,
              evidence: { ...(found ?? {}), sourceErrors: errors, lastError: message },
              consecutiveErrors: errors,
              lastError: message,
              nextCheckAt: null,
            }
          : {
              status: 'in_progress',
              reason: `The data source failed (${errors} of ${errorLimit} tries): ${message}. Retrying.`,
              evidence: found,
              consecutiveErrors: errors,
              lastError: message,
              nextCheckAt: new Date(deps.now().getTime() + retryBaseMs * 2 ** (errors - 1)),
            };
    }
    if (unchanged(rule, update)) {
      // Nothing to record or publish (the common answer to a transition that decides nothing):
      // only the next look is scheduled, as a write would have done.
      queue.set(id, update.nextCheckAt!.getTime());
      rearm();
      return;
    }
    // Checked again as it is written: an asynchronous check may have outlived our lease.
    const snapshot = await recordRuleUpdate(deps, id, update, nodeId);
    if (snapshot) track(snapshot);
    else untrack(id);
  }

  /**
   * Queues a check of every running rule the event may concern: rules watching its keys are
   * found by lookup, and each shared predicate is tested once. Nothing runs here, so the
   * write that published the event (a reportMonitorState) returns at once.
   */
  function wake(event: EngineEvent): void {
    for (const key of eventKeys(event)) for (const id of byKey.get(key) ?? []) enqueue(id);
    for (const [shareKey, entry] of shared) {
      let hit = false;
      try {
        hit = entry.matches(event);
      } catch (err) {
        log.error({ err, watch: shareKey }, 'a rule watch failed on an event');
      }
      if (hit) for (const id of entry.rules) enqueue(id);
    }
  }
  const onTransition = (c: MonitorStateChange) => wake({ kind: 'monitor.transition', monitor: c.monitor, group: c.group, at: c.at });
  const onIngested = (i: { service: string; env: string; at: Date }) => wake({ kind: 'apm.ingested', ...i });
  const onFreeze = (f: { env: string; updatedAt: Date }) => wake({ kind: 'freeze.changed', env: f.env, at: f.updatedAt });

  /** Evaluations taken over and not yet loaded: a starting server resumes them in slices. */
  let resuming = 0;
  /** One claim at a time: resuming many evaluations spans several turns of the event loop. */
  let claiming: Promise<void> | undefined;

  /**
   * Renews our leases and takes over evaluations whose owner stopped renewing (or, at start,
   * our own). Also re-indexes any running rule of ours the index lost, so none can stall.
   * The leases are taken in one statement; the evaluations taken are then loaded and indexed
   * a slice at a time with a turn of the event loop between slices: loading 10,000 resumed
   * evaluations at once held a starting server for seconds, /healthz included.
   */
  async function claim(atStart: boolean): Promise<void> {
    const now = deps.now();
    await renewLeases(deps.db, nodeId, new Date(now.getTime() + leaseMs));
    const resume = new Set(await claimUnfinished(deps.db, nodeId, now, new Date(now.getTime() + leaseMs), atStart));
    for (const { evaluationId } of (await runningRulesOf(deps.db, nodeId)).filter((r) => !active.has(r.id))) resume.add(evaluationId);
    resuming = resume.size;
    let until = performance.now() + sliceMs;
    for (const id of resume) {
      if (performance.now() >= until) {
        await new Promise((resolve) => setImmediate(resolve));
        until = performance.now() + sliceMs;
      }
      if (stopped) return;
      const snapshot = await loadSnapshot(deps, id);
      resuming--;
      if (!snapshot) continue;
      // Look at every resumed rule now: its answer depends only on what was recorded.
      for (const r of snapshot.rules) if (r.status === 'in_progress') r.nextCheckAt = now;
      track(snapshot);
    }
  }

  function claimInTurn(atStart: boolean): void {
    // A resumption still running keeps what it took: only the leases need renewing meanwhile.
    if (claiming) return safely('renewing leases', async () => renewLeases(deps.db, nodeId, new Date(deps.now().getTime() + leaseMs)));
    claiming = claim(atStart)
      .catch((err: unknown) => log.error({ err }, 'renewing leases or resuming evaluations failed; will try again'))
      .finally(() => {
        claiming = undefined;
        resuming = 0;
      });
  }

  function safely(what: string, run: () => unknown): void {
    Promise.resolve()
      .then(run)
      .catch((err: unknown) => log.error({ err }, `${what} failed; will try again`));
  }

  /** One sweep at a time: a sweep of many silent groups runs in batches across several turns. */
  let sweeping: Promise<void> | undefined;
  function sweepSilentMonitors(): void {
    sweeping ??= sweepNoData(deps, () => stopped)
      .then(
        () => undefined,
        (err: unknown) => log.error({ err }, 'marking silent monitors NO_DATA failed; will try again'),
      )
      .finally(() => (sweeping = undefined));
  }

  async function prune(): Promise<void> {
    const { horizon, ...counts } = await pruneHistory(deps);
    if (Object.values(counts).some((n) => n > 0)) log.info({ ...counts, horizon }, 'pruned history past retention');
  }

  return {
    start(): void {
      // Synchronous callbacks: the engine never falls behind the bus.
      unsubscribe.push(
        deps.events.on('evaluation.changed', guarded(track)),
        deps.events.on('monitor.transition', guarded(onTransition)),
        deps.events.on('apm.ingested', guarded(onIngested)),
        deps.events.on('freeze.changed', guarded(onFreeze)),
      );
      claimInTurn(true);
      safely('pruning history', prune);
      let ticks = 0;
      // Leases are renewed well before they lapse, and another instance's lapsed ones are taken
      // over within a few seconds of lapsing (a killed instance's evaluations wait at most lease + 4 s).
      const tickMs = Math.min(leaseMs / 3, 4_000);
      cancelHousekeeping = scheduler.every(tickMs, () => {
        claimInTurn(false);
        sweepSilentMonitors();
        // Retention once an hour is plenty.
        if (++ticks % Math.max(1, Math.round(3_600_000 / tickMs)) === 0) safely('pruning history', prune);
      });
    },

    /**
     * Stops timers and listeners, waits for checks in flight, and hands the leases back. Checks
     * still queued are dropped: every running rule is looked at again when its evaluation is
     * resumed, so none is lost.
     */
    async stop(): Promise<void> {
      stopped = true;
      due.clear();
      cancelTimer?.();
      cancelHousekeeping?.();
      for (const off of unsubscribe) off();
      await Promise.allSettled([...inFlight.values(), sweeping, claiming]);
      await releaseLeases(deps.db, nodeId);
    },

    /**
     * For tests: resolves once nothing is queued, checking, resuming or sweeping, so a test
     * that moved its clock and fired a timer can read what the engine recorded.
     */
    async idle(): Promise<void> {
      while (due.size > 0 || drainScheduled || inFlight.size > 0 || claiming || sweeping) {
        await Promise.allSettled([...inFlight.values(), claiming, sweeping]);
        await new Promise((resolve) => setImmediate(resolve));
        if (stopped) return;
      }
    },

    /** For tests and metrics. */
    stats: () => ({ activeRules: active.size, scheduled: queue.size, queuedChecks: due.size, checksInFlight: inFlight.size, resumingEvaluations: resuming }),
  };
}

/** True when recording the update would write what the row already holds, and it still runs. */
function unchanged(rule: RuleEvaluationRow, u: RuleUpdate): boolean {
  return (
    u.status === 'in_progress' &&
    rule.status === 'in_progress' &&
    u.reason === rule.reason &&
    (u.nextCheckAt?.getTime() ?? null) === (rule.nextCheckAt?.getTime() ?? null) &&
    (u.consecutiveErrors ?? 0) === rule.consecutiveErrors &&
    (u.lastError ?? null) === rule.lastError &&
    JSON.stringify(u.evidence ?? null) === JSON.stringify(rule.evidence ?? null) &&
    JSON.stringify(u.state ?? null) === JSON.stringify(rule.state ?? null)
  );
}
