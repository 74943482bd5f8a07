// Replays backtests (src/domain/backtests.ts) in the background. A job finds the deploys (versions
// first seen in the window, one hour of the APM store per step), then replays each one: every
// rule that can be judged from stored data is planned as if the evaluation had started when the
// version first appeared, and its runner's check() is asked again and again on a replayed clock
// that follows the runner's own nextCheckAt, exactly as the engine's timer would have, until it
// answers. The work runs in slices of a few milliseconds per turn of the event loop, so requests
// are answered between them; progress is stored and published after each deploy.
import { type BacktestRow, failOrphanedBacktests, renewBacktestLeases, updateRunningBacktest, type VersionSpan, versionsIn } from '../db/backtests.ts';
import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import { APM_BUCKET_MS } from '../db/schema.ts';
import {
  type BacktestConfiguration,
  type BacktestSummary,
  type DeployResult,
  MAX_BACKTEST_DEPLOYS,
  MAX_REASON_LENGTH,
  ROLLBACK_WITHIN_MS,
  type RuleReplay,
  whyNotReplayable,
} from '../domain/backtests.ts';
import type { Deps } from '../domain/deps.ts';
import { LEASE_MS } from '../domain/evaluations.ts';
import type { FailingGroupEvidence } from '../domain/ruleEvidence.ts';
import { realStatus, reportedStatus } from '../domain/verdict.ts';
import { realTimers, type Scheduler } from './engine.ts';
import type { CheckResult } from './runner.ts';
import { runnerFor } from './runners.ts';

const HOUR_MS = 3_600_000;
/**
 * A version seen this long before its first request in the window was deployed earlier (a
 * version back after a longer absence is deployed anew). The store is read an hour per step.
 */
const DEPLOY_MEMORY_MS = 24 * HOUR_MS;
/** Checks one rule of one deploy gets at most (an FDD rule of 31 days checks every 10 s). */
const MAX_CHECKS_PER_RULE = 5000;
/** Checks one backtest runs at most, all deploys and rules together (minutes of work). */
const MAX_CHECKS_PER_BACKTEST = 200_000;
/** Versions one hour of the store may name; beyond it the hour's others are not looked at. */
const MAX_VERSIONS_PER_HOUR = 1000;
/** After a version stops, who serves in the next minutes tells a rollback from a roll forward. */
const SUCCESSOR_WINDOW_MS = 10 * 60_000;

/** One unit of work done; a Promise when a check answered asynchronously (the driver waits for it). */
type Step = Promise<unknown> | undefined;

/** Inside a job: the value of a read or write of the store (the job yields it and is resumed with its outcome). */
function* wait<T>(pending: Promise<T>): Generator<Step, T, unknown> {
  const back = (yield pending) as { ok?: T; err?: unknown };
  if ('err' in back) throw back.err;
  return back.ok as T;
}

interface Job {
  id: string;
  canceled: boolean;
  /** Waiting for an asynchronous check's answer. */
  waiting: boolean;
  it: Generator<Step, void, unknown>;
  resumeWith: unknown;
}

export interface BacktesterOptions {
  /** Time budget of one slice (performance.now), before yielding to the event loop. */
  sliceMs?: number;
  /** Real timers by default; a unit test fires the lease rounds by hand (`ManualTimers`). */
  scheduler?: Scheduler;
}

const iso = (ms: number) => new Date(ms).toISOString();
const clip = (s: string) => (s.length > MAX_REASON_LENGTH ? `${s.slice(0, MAX_REASON_LENGTH - 1)}…` : s);

export function createBacktester(deps: Deps, options: BacktesterOptions = {}) {
  const sliceMs = options.sliceMs ?? 8;
  const log = deps.log.child({ component: 'backtest' });
  /** Running jobs of this process. */
  const jobs = new Map<string, Job>();
  let off: (() => void) | undefined;
  let cancelLeaseRounds: (() => void) | undefined;
  let stopped = false;

  function publish(row: BacktestRow | undefined): void {
    if (row) deps.events.publish('backtest.changed', row);
  }

  /**
   * One driver for every job of the process: each turn of the event loop runs one slice of one
   * job (round robin), so however many backtests run, a turn holds the loop for one slice.
   */
  let tickScheduled = false;
  let turn = 0;

  function schedule(): void {
    if (tickScheduled || stopped) return;
    if (![...jobs.values()].some((j) => !j.waiting)) return;
    tickScheduled = true;
    setImmediate(tick);
  }

  function tick(): void {
    tickScheduled = false;
    if (stopped) return;
    const ready = [...jobs.values()].filter((j) => !j.waiting);
    if (ready.length === 0) return;
    const job = ready[turn++ % ready.length]!;
    runSlice(job);
    schedule();
  }

  function end(job: Job): void {
    jobs.delete(job.id);
  }

  function runSlice(job: Job): void {
    if (job.canceled) return end(job);
    const until = performance.now() + sliceMs;
    try {
      for (;;) {
        const next = job.it.next(job.resumeWith);
        job.resumeWith = undefined;
        if (next.done) return end(job);
        if (next.value instanceof Promise) {
          // An asynchronous check: the job waits, others go on; its outcome comes back through next().
          job.waiting = true;
          next.value.then(
            (v) => ((job.resumeWith = { ok: v }), (job.waiting = false), schedule()),
            (err) => ((job.resumeWith = { err }), (job.waiting = false), schedule()),
          );
          return;
        }
        if (job.canceled) return end(job);
        if (performance.now() >= until) return;
      }
    } catch (err) {
      end(job);
      log.error({ err, backtestId: job.id }, 'backtest failed');
      updateRunningBacktest(deps.db, job.id, { status: 'failed', error: clip(`replay failed: ${(err as Error).message}`), finishedAt: deps.now() }).then(
        publish,
        (failed: unknown) => log.error({ err: failed, backtestId: job.id }, 'could not record the failure of a backtest'),
      );
    }
  }

  function begin(row: BacktestRow): void {
    jobs.set(row.id, { id: row.id, canceled: false, waiting: false, it: work(row), resumeWith: undefined });
    schedule();
  }

  /** The job, one step per yield. */
  function* work(row: BacktestRow): Generator<Step, void, unknown> {
    const budget = { checks: 0 };
    const config = row.configuration as unknown as BacktestConfiguration;
    const w = { service: row.service, env: row.env };
    // ---- the deploys: versions appearing inside [from, to), new or back after a day without requests ----
    // An hour of the store per step, oldest first. `seen`: each version's earliest appearance
    // (what "older" means to a rollback); `appearances`: every start of a version serving after
    // more than DEPLOY_MEMORY_MS without, so a deploy does not depend on where the window starts.
    const seen = new Map<string, VersionSpan>();
    const latest = new Map<string, VersionSpan>();
    const appearances: VersionSpan[] = [];
    const end = row.to.getTime();
    for (let hour = row.from.getTime() - DEPLOY_MEMORY_MS; hour < end; hour += HOUR_MS) {
      for (const v of yield* wait(versionsIn(deps.db, { ...w, from: hour, to: Math.min(hour + HOUR_MS, end) }, MAX_VERSIONS_PER_HOUR))) {
        const last = latest.get(v.version);
        if (last && v.firstSeen - last.lastSeen <= DEPLOY_MEMORY_MS) {
          last.lastSeen = v.lastSeen;
          continue;
        }
        const appearance = { ...v };
        latest.set(v.version, appearance);
        appearances.push(appearance);
        if (!seen.has(v.version)) seen.set(v.version, appearance);
      }
      yield;
    }
    const deploys: VersionSpan[] = [];
    let truncated = false;
    for (const v of appearances.sort((a, b) => a.firstSeen - b.firstSeen || (a.version < b.version ? -1 : 1))) {
      if (v.firstSeen < row.from.getTime()) continue;
      if (deploys.length >= MAX_BACKTEST_DEPLOYS) {
        truncated = true;
        break;
      }
      deploys.push(v);
    }
    let current = yield* wait(updateRunningBacktest(deps.db, row.id, { total: deploys.length }));
    if (!current) return;
    publish(current);
    yield;

    // ---- each deploy, replayed ----
    const results: DeployResult[] = [];
    for (const d of deploys) {
      results.push(yield* replayDeploy(row, config, d, budget, seen));
      current = yield* wait(updateRunningBacktest(deps.db, row.id, { done: results.length, results: results as unknown as BacktestRow['results'] }));
      if (!current) return; // canceled meanwhile: what was replayed stays as it was
      publish(current);
      yield;
    }
    // Counted on the real verdicts: a dry-run gate is backtested to learn what it would have failed.
    const failed = results.filter((r) => r.realVerdict === 'fail');
    const summary: BacktestSummary = {
      deploys: results.length,
      failed: failed.length,
      passed: results.filter((r) => r.realVerdict === 'pass').length,
      undecided: results.filter((r) => r.realVerdict === 'undecided').length,
      failedThenRolledBack: failed.filter((r) => r.rollback).length,
      truncated,
    };
    current = yield* wait(updateRunningBacktest(deps.db, row.id, { status: 'done', summary: summary as unknown as Record<string, unknown>, finishedAt: deps.now() }));
    publish(current);
    if (current) log.info({ backtestId: row.id, ...summary }, 'backtest done');
  }

  /** One deploy: its rules replayed one after the other, then the gate's verdict from theirs. */
  function* replayDeploy(
    row: BacktestRow,
    config: BacktestConfiguration,
    d: VersionSpan,
    budget: { checks: number },
    seen: ReadonlyMap<string, VersionSpan>,
  ): Generator<Step, DeployResult, unknown> {
    const start = new Date(d.firstSeen);
    const evaluation = {
      id: `backtest-${row.id}`,
      gateId: row.gateId,
      service: row.service,
      env: row.env,
      identifier: 'backtest',
      version: d.version,
      primaryTag: null,
      dryRun: config.dryRun,
      onSourceError: config.onSourceError,
      status: 'in_progress',
      justInTime: row.gateId === null,
      idempotencyKey: null,
      rerunOf: null,
      triggerEnvs: row.triggerEnvs,
      triggeredById: row.createdById,
      triggeredByName: row.createdByName,
      startedAt: start,
      decidedAt: null,
      finishedAt: null,
      leaseOwner: null,
      leaseExpiresAt: null,
      revision: 1,
    } satisfies Partial<EvaluationRow> as EvaluationRow;
    const rules: RuleReplay[] = [];
    for (const [position, r] of config.rules.entries()) {
      if (whyNotReplayable(r.type, r.options)) continue;
      rules.push(yield* replayRule(evaluation, position, r, budget));
    }
    const counted = rules.map((r) => ({ status: r.status, dryRun: r.dryRun }));
    const real = realStatus(counted);
    const reported = reportedStatus(real, config.dryRun);
    // The deciding rule: the first counted rule to fail; else, all passing, the last to pass.
    const byTime = (a: RuleReplay, b: RuleReplay) => Date.parse(a.at ?? '') - Date.parse(b.at ?? '');
    const decider =
      real === 'fail'
        ? rules.filter((r) => !r.dryRun && r.status === 'fail').sort(byTime)[0]
        : real === 'pass'
          ? rules
              .filter((r) => !r.dryRun)
              .sort(byTime)
              .at(-1)
          : undefined;
    const decidedAt = decider?.at ? Date.parse(decider.at) : null;
    const verdict = (s: string) => (s === 'pass' || s === 'fail' ? s : 'undecided');
    yield;
    const rollback = yield* wait(rollbackAfter(row, d, seen));
    return {
      version: d.version,
      firstSeenAt: iso(d.firstSeen),
      verdict: verdict(reported),
      realVerdict: verdict(real),
      decidingRule: decider?.name ?? null,
      decidedAt: decidedAt === null ? null : iso(decidedAt),
      timeToVerdictMs: decidedAt === null ? null : decidedAt - d.firstSeen,
      reason: decider ? `${decider.name}: ${decider.reason}` : undecidedReason(rules),
      rollback,
      rules,
    };
  }

  function undecidedReason(rules: readonly RuleReplay[]): string {
    const open = rules.find((r) => !r.dryRun && r.status === 'in_progress');
    return open ? `${open.name}: ${open.reason}` : 'No rule reached an answer before the replay reached the present.';
  }

  /**
   * One rule on the replayed clock: planned at the deploy's start, checked at its first check
   * time, then at each nextCheckAt it asks for, as the engine's timer would, until it answers or
   * the replay reaches the present.
   */
  function* replayRule(evaluation: EvaluationRow, position: number, r: BacktestConfiguration['rules'][number], budget: { checks: number }): Generator<Step, RuleReplay, unknown> {
    const runner = runnerFor(r.type)!;
    const start = evaluation.startedAt;
    const window = runner.plan(r.options, start);
    const rule = {
      id: `${evaluation.id}-${position}`,
      evaluationId: evaluation.id,
      ruleId: null,
      position,
      name: r.name,
      type: r.type,
      dryRun: r.dryRun,
      options: r.options,
      status: 'in_progress',
      reason: 'Starting.',
      evidence: null,
      startedAt: start,
      ...window,
      finishedAt: null,
      consecutiveErrors: 0,
      lastError: null,
      state: null,
    } satisfies Partial<RuleEvaluationRow> as RuleEvaluationRow;
    const present = deps.now().getTime();
    const base = { name: r.name, type: r.type, dryRun: r.dryRun };
    let now = window.nextCheckAt;
    let last = 'Not checked: its first check lies after the present.';
    for (let n = 0; n < MAX_CHECKS_PER_RULE && now.getTime() <= present; n++) {
      const at = now;
      if (++budget.checks > MAX_CHECKS_PER_BACKTEST) {
        throw new Error(`more than ${MAX_CHECKS_PER_BACKTEST} rule checks: replay a shorter window (from, to) or fewer rules`);
      }
      let result: CheckResult;
      try {
        const answer = runner.check({ ...deps, now: () => at }, { rule, evaluation, now: at });
        if (answer instanceof Promise) {
          const back = (yield answer) as { ok?: CheckResult; err?: unknown };
          if (back.err) throw back.err;
          result = back.ok!;
        } else {
          result = answer;
        }
      } catch (err) {
        // The data is recorded, so an error would come back at every retry: the gate's policy decides now.
        const status = evaluation.onSourceError;
        return { ...base, status, reason: clip(`Could not be judged (${(err as Error).message}); onSourceError makes it ${status}.`), at: at.toISOString() };
      }
      if (result.status !== 'in_progress') {
        return { ...base, status: result.status, reason: clip(result.reason), at: answeredAt(r.type, rule, result, at).toISOString() };
      }
      rule.state = result.state ?? rule.state;
      rule.evidence = result.evidence ?? rule.evidence;
      last = result.reason;
      now = new Date(Math.max(result.nextCheckAt.getTime(), at.getTime() + 1));
      yield;
    }
    return { ...base, status: 'in_progress', reason: clip(`Undecided when the replay stopped: ${last}`), at: null };
  }

  /**
   * When the answer became known. A monitor rule counts every transition of its window whatever
   * the check's clock (a live check runs after the event), so on a replayed clock it fails at its
   * first check, seeing transitions still ahead: its answer is dated when the first failing group
   * turned bad instead, as a live rule woken by that transition would have answered.
   */
  function answeredAt(type: string, rule: RuleEvaluationRow, result: CheckResult, at: Date): Date {
    if (type !== 'monitor' || result.status !== 'fail') return at;
    const failing = ((result.evidence as { failingGroups?: FailingGroupEvidence[] }).failingGroups ?? []).map((g) => Date.parse(g.since)).filter(Number.isFinite);
    if (failing.length === 0) return at;
    // The first bad state inside the window (a group already bad at its start counts from the start).
    return new Date(Math.min(rule.windowEndsAt.getTime(), Math.max(rule.windowStartsAt.getTime(), Math.min(...failing))));
  }

  /**
   * A rollback-looking event: the version served its last request within the hour after it
   * appeared, and the versions serving right after were older ones (a newer version taking over
   * is a roll forward, not a rollback). Unknown (null) while the hour is not over.
   */
  async function rollbackAfter(row: BacktestRow, d: VersionSpan, seen: ReadonlyMap<string, VersionSpan>): Promise<DeployResult['rollback']> {
    const w = { service: row.service, env: row.env };
    const hourEnd = d.firstSeen + ROLLBACK_WITHIN_MS;
    if (hourEnd > deps.now().getTime()) return null;
    const mine = (await versionsIn(deps.db, { ...w, from: d.firstSeen, to: hourEnd + SUCCESSOR_WINDOW_MS }, MAX_VERSIONS_PER_HOUR)).find((v) => v.version === d.version);
    if (!mine || mine.lastSeen >= hourEnd) return null;
    const after = mine.lastSeen + APM_BUCKET_MS;
    // Older: first seen before this deploy (discovery read from a day before the window; a
    // version first seen after the window's end is newer). Any newer one serving makes it a roll
    // forward, even while an older one keeps serving beside the canaries.
    const successors = (await versionsIn(deps.db, { ...w, from: after, to: after + SUCCESSOR_WINDOW_MS }, 20)).filter((v) => v.version !== d.version);
    const isOlder = (v: VersionSpan) => (seen.get(v.version)?.firstSeen ?? Number.POSITIVE_INFINITY) < d.firstSeen;
    if (successors.length === 0 || !successors.every(isOlder)) return null;
    return { at: iso(after), versions: successors.map((v) => v.version) };
  }

  /**
   * Keeps this process's jobs leased, as the engine keeps its evaluations, and fails the
   * backtests whose process is gone (its lease lapsed): instances share the store, so one
   * starting or running must not fail what a live other one runs.
   */
  async function leaseRound(atStart: boolean): Promise<void> {
    const now = deps.now();
    await renewBacktestLeases(deps.db, deps.nodeId, [...jobs.keys()], new Date(now.getTime() + LEASE_MS));
    for (const row of await failOrphanedBacktests(deps.db, now, atStart ? deps.nodeId : null)) publish(row);
  }

  return {
    /** Fails the jobs an earlier process left running (they are not resumed), then listens and keeps its own leased. */
    async start(): Promise<void> {
      stopped = false;
      await leaseRound(true);
      let round: Promise<void> | undefined;
      // As the engine's: renewed well before it lapses, a gone process's backtests failed within lease + 4 s.
      cancelLeaseRounds = (options.scheduler ?? realTimers).every(Math.min(LEASE_MS / 3, 4_000), () => {
        // One round at a time: a slow store must not pile them up.
        round ??= leaseRound(false)
          .catch((err: unknown) => log.error({ err }, 'renewing backtest leases failed; will try again'))
          .finally(() => (round = undefined));
      });
      off = deps.events.on('backtest.changed', (row) => {
        if (row.status !== 'running') {
          // Canceled (or ended): its generator is dropped; a slice of it still running stops at its next step.
          const job = jobs.get(row.id);
          if (job) job.canceled = true;
          jobs.delete(row.id);
          return;
        }
        if (row.nodeId === deps.nodeId && !jobs.has(row.id) && row.revision === 1 && !stopped) begin(row);
      });
    },

    /** Stops every job; their rows are failed now, or when the store does not answer, once their lease lapses. */
    async stop(): Promise<void> {
      stopped = true;
      off?.();
      cancelLeaseRounds?.();
      for (const id of jobs.keys()) {
        try {
          publish(await updateRunningBacktest(deps.db, id, { status: 'failed', error: 'interrupted: the server stopped while it ran; start it again', finishedAt: deps.now() }));
        } catch (err) {
          log.warn({ err, backtestId: id }, 'backtest left running on stop; the next start fails it');
        }
      }
      jobs.clear();
    },
  };
}
