import { claimUnfinished, deleteFinishedBefore, getEvaluation, getRuleEvaluation, releaseLeases, renewLeases, type RuleEvaluationRow, runningRulesOf } from '../db/evaluations.ts';
import { deleteTransitionsBefore } from '../db/monitors.ts';
import type { Deps } from '../domain/deps.ts';
import { type EvaluationSnapshot, LEASE_MS, loadSnapshot, recordRuleUpdate, type RuleUpdate } from '../domain/evaluations.ts';
import { type MonitorStateChange, sweepNoData } from '../domain/monitors.ts';
import type { EngineEvent } from './runner.ts';
import { SourceError } from './runner.ts';
import { pruneApmStore } from '../sources/apm.ts';
import { runnerFor } from './runners.ts';
import { TimerQueue } from './timerQueue.ts';

export interface EngineOptions {
  /** How long a claimed evaluation stays ours without renewal. */
  leaseMs?: number;
  /** Consecutive source errors before the gate's onSourceError policy decides. */
  sourceErrorLimit?: number;
  /** First retry delay after a source error; doubles each time. */
  retryBaseMs?: number;
}

interface ActiveRule {
  id: string;
  evaluationId: string;
  watch?: (event: EngineEvent) => boolean;
}

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

  const queue = new TimerQueue();
  const active = new Map<string, ActiveRule>();
  const inFlight = new Map<string, Promise<void>>();
  const checkAgain = new Set<string>();
  const unsubscribe: Array<() => void> = [];
  let timer: NodeJS.Timeout | undefined;
  let housekeeping: NodeJS.Timeout | undefined;
  let stopped = false;

  function rearm(): void {
    clearTimeout(timer);
    timer = undefined;
    const next = queue.peek();
    if (next === undefined || stopped) return;
    // setTimeout's limit is about 24.8 days; a later wake-up just re-arms.
    timer = setTimeout(fire, Math.min(Math.max(0, next - Date.now()), 2 ** 31 - 1));
  }

  function fire(): void {
    for (const id of queue.takeDue(Date.now())) void check(id);
    rearm();
  }

  function untrack(id: string): void {
    active.delete(id);
    queue.delete(id);
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
      if (!active.has(r.id)) active.set(r.id, { id: r.id, evaluationId: e.id, watch: compileWatch(r.type, r.options, e, r.id) });
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

  /** One check of one rule; a check asked for while one runs is run again right after. */
  function check(id: string): Promise<void> {
    const running = inFlight.get(id);
    if (running) {
      checkAgain.add(id);
      return running;
    }
    const run = runCheck(id)
      .catch((err) => {
        // The database itself failed (busy, disk full): nothing was recorded, so look again soon.
        log.error({ err, ruleEvaluationId: id }, 'rule check could not be recorded; retrying');
        if (!stopped && active.has(id)) {
          queue.set(id, Date.now() + retryBaseMs);
          rearm();
        }
      })
      .finally(() => {
      inFlight.delete(id);
      if (checkAgain.delete(id) && !stopped) void check(id);
    });
    inFlight.set(id, run);
    return run;
  }

  async function runCheck(id: string): Promise<void> {
    if (stopped) return;
    const rule = getRuleEvaluation(deps.db, id);
    const evaluation = rule && getEvaluation(deps.db, rule.evaluationId);
    if (!rule || !evaluation || rule.status !== 'in_progress' || evaluation.finishedAt) {
      untrack(id);
      return;
    }
    const runner = runnerFor(rule.type);
    let update: RuleUpdate;
    try {
      if (!runner) throw new Error(`no runner for ${rule.type} rules`);
      const result = await runner.check(deps, { rule, evaluation, now: deps.now() });
      update = {
        status: result.status,
        reason: result.reason,
        evidence: result.evidence ?? rule.evidence,
        state: result.state ?? rule.state,
        nextCheckAt: result.status === 'in_progress' ? result.nextCheckAt : null,
        consecutiveErrors: 0,
        lastError: null,
      };
    } catch (err) {
      // Never silent: every failure is counted, retried, and finally decided by the policy.
      const message = err instanceof SourceError ? err.message : `internal error: ${(err as Error).message}`;
      if (!(err instanceof SourceError)) log.error({ err, ruleEvaluationId: id }, 'rule check failed');
      const errors = rule.consecutiveErrors + 1;
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
              nextCheckAt: new Date(Date.now() + retryBaseMs * 2 ** (errors - 1)),
            };
    }
    const snapshot = recordRuleUpdate(deps, id, update);
    if (snapshot) track(snapshot);
    else untrack(id);
  }

  /** Wakes every running rule the event may concern. */
  function wake(event: EngineEvent): void {
    for (const rule of active.values()) {
      if (rule.watch?.(event)) void check(rule.id);
    }
  }
  const onTransition = (c: MonitorStateChange) => wake({ kind: 'monitor.transition', monitor: c.monitor, group: c.group, at: c.at });
  const onIngested = (i: { service: string; env: string; at: Date }) => wake({ kind: 'apm.ingested', ...i });

  /**
   * Renews our leases and takes over evaluations whose owner stopped renewing (or, at start,
   * our own). Also re-indexes any running rule of ours the index lost, so none can stall.
   */
  function claim(atStart: boolean): void {
    const now = new Date();
    renewLeases(deps.db, nodeId, new Date(now.getTime() + leaseMs));
    const resume = new Set(claimUnfinished(deps.db, nodeId, now, new Date(now.getTime() + leaseMs), atStart));
    for (const { evaluationId } of runningRulesOf(deps.db, nodeId).filter((r) => !active.has(r.id))) resume.add(evaluationId);
    for (const id of resume) {
      const snapshot = loadSnapshot(deps, id);
      if (!snapshot) continue;
      // Look at every resumed rule now: its answer depends only on what was recorded.
      for (const r of snapshot.rules) if (r.status === 'in_progress') r.nextCheckAt = now;
      track(snapshot);
    }
  }

  function safely(what: string, run: () => void): void {
    try {
      run();
    } catch (err) {
      log.error({ err }, `${what} failed; will try again`);
    }
  }

  function prune(): void {
    const horizon = new Date(Date.now() - deps.config.retentionDays * 86_400_000);
    const evaluations = deleteFinishedBefore(deps.db, horizon);
    const transitions = deleteTransitionsBefore(deps.db, horizon);
    const apmRows = pruneApmStore(deps, deps.config.apmRetentionDays);
    if (evaluations + transitions + apmRows > 0) log.info({ evaluations, transitions, apmRows, horizon }, 'pruned history past retention');
  }

  return {
    start(): void {
      // Synchronous callbacks: the engine never falls behind the bus.
      unsubscribe.push(
        deps.events.on('evaluation.changed', guarded(track)),
        deps.events.on('monitor.transition', guarded(onTransition)),
        deps.events.on('apm.ingested', guarded(onIngested)),
      );
      claim(true);
      safely('pruning history', prune);
      let ticks = 0;
      housekeeping = setInterval(() => {
        safely('renewing leases', () => claim(false));
        safely('marking silent monitors NO_DATA', () => sweepNoData(deps));
        // Retention once an hour is plenty.
        if (++ticks % Math.max(1, Math.round(3_600_000 / (leaseMs / 3))) === 0) safely('pruning history', prune);
      }, leaseMs / 3);
      housekeeping.unref();
    },

    /** Stops timers and listeners, waits for checks in flight, and hands the leases back. */
    async stop(): Promise<void> {
      stopped = true;
      clearTimeout(timer);
      clearInterval(housekeeping);
      for (const off of unsubscribe) off();
      await Promise.allSettled([...inFlight.values()]);
      releaseLeases(deps.db, nodeId);
    },

    /** For tests and metrics. */
    stats: () => ({ activeRules: active.size, scheduled: queue.size }),
  };
}

export type Engine = ReturnType<typeof createEngine>;
