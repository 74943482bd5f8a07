// The engine and its runners without a server: an in-memory SQLite database, a clock the test
// moves, and timers the test fires. Nothing here sleeps.
import { testConfig } from '../../src/config.ts';
import { type Db, openDb } from '../../src/db/client.ts';
import { type EvaluationRow, getEvaluation, type RuleEvaluationRow, ruleEvaluationsOf } from '../../src/db/evaluations.ts';
import type { Deps } from '../../src/domain/deps.ts';
import { evaluateGate, evaluateGateInputSchema, recordRuleUpdate } from '../../src/domain/evaluations.ts';
import { createEvents } from '../../src/domain/events.ts';
import { type Principal, SYSTEM } from '../../src/domain/principal.ts';
import { createEngine, type EngineOptions, type Scheduler } from '../../src/engine/engine.ts';
import type { CheckResult } from '../../src/engine/runner.ts';
import { planWindow } from '../../src/engine/runners.ts';
import { createLogger } from '../../src/log.ts';
import { ingestRequests } from '../../src/sources/apmWriter.ts';
import type { RequestSpan } from '../../src/sources/otlp.ts';

/** A round start, on a bucket boundary and far from the machine's clock, so a read of the real time shows. */
export const T0 = Date.UTC(2031, 0, 1);

/** The time as the test sets it. */
export class TestClock {
  constructor(public ms = T0) {}
  readonly now = (): Date => new Date(this.ms);
  advance(ms: number): void {
    this.ms += ms;
  }
}

/**
 * The engine's timers, fired by the test: `fire()` runs the wake-up the engine armed last (as
 * if its delay had passed), `housekeep()` one round of lease renewal, takeover and NO_DATA sweep.
 */
export class ManualTimers implements Scheduler {
  private timer: { ms: number; run: () => void } | undefined;
  private readonly intervals = new Set<{ ms: number; run: () => void }>();

  after(ms: number, run: () => void): () => void {
    const t = { ms, run };
    this.timer = t;
    return () => {
      if (this.timer === t) this.timer = undefined;
    };
  }

  every(ms: number, run: () => void): () => void {
    const t = { ms, run };
    this.intervals.add(t);
    return () => this.intervals.delete(t);
  }

  /** The delay of the armed wake-up, as the engine computed it from its clock; undefined when none. */
  get armedMs(): number | undefined {
    return this.timer?.ms;
  }

  /** The housekeeping period; undefined before start or after stop. */
  get housekeepingMs(): number | undefined {
    return [...this.intervals][0]?.ms;
  }

  fire(): void {
    const t = this.timer;
    this.timer = undefined;
    t?.run();
  }

  housekeep(): void {
    for (const t of [...this.intervals]) t.run();
  }
}

export function memoryDb(): Db {
  return openDb(':memory:');
}

/** What domain functions and the engine need, on `db`, as node `nodeId` (one process). */
export function unitDeps(db: Db, clock: TestClock, nodeId = 'node-a'): Deps {
  return {
    db,
    events: createEvents(),
    log: createLogger('silent'),
    // The default limits: a unit test starts a few evaluations.
    config: testConfig({ logLevel: 'silent' }),
    now: clock.now,
    baseUrl: () => 'http://tollgate.test',
    nodeId,
    planWindow,
  };
}

/** One process's engine on `db`: its own event bus, node id and timers, the test's clock. */
export function engineOn(db: Db, clock: TestClock, nodeId = 'node-a', options: EngineOptions = {}) {
  const deps = unitDeps(db, clock, nodeId);
  const timers = new ManualTimers();
  const engine = createEngine(deps, { retryBaseMs: 1000, ...options, scheduler: timers });
  return {
    deps,
    timers,
    engine,
    /** Fires the armed wake-up and waits until every check it queued is recorded. */
    async fire(): Promise<void> {
      timers.fire();
      await engine.idle();
    },
    /** One housekeeping round, waited for. */
    async housekeep(): Promise<void> {
      timers.housekeep();
      await engine.idle();
    },
  };
}

/** Starts an evaluation with just-in-time rules (`options` as in the API), by an admin key unless told. */
export async function trigger(deps: Deps, rules: unknown[], extra: Record<string, unknown> = {}, actor: Principal = SYSTEM): Promise<EvaluationRow> {
  const input = evaluateGateInputSchema.parse({ service: 'checkout', env: 'prod', configuration: { rules }, ...extra });
  return (await evaluateGate(deps, actor, input)).evaluation;
}

/** The evaluation and its rules as recorded now. */
export async function recorded(db: Db, id: string): Promise<{ evaluation: EvaluationRow; rules: RuleEvaluationRow[] }> {
  return { evaluation: (await getEvaluation(db, id))!, rules: await ruleEvaluationsOf(db, [id]) };
}

/**
 * Requests of one resource and version, spread evenly over [from, from + spreadMs), stored as
 * OTLP ingestion stores them; the failed ones spread evenly among them (a steady error rate, not
 * a burst at the start).
 */
export async function ingest(
  deps: Deps,
  t: { version: string; resource: string; count: number; errors?: number; errorType?: string; from: number; spreadMs: number; service?: string; env?: string; instance?: string },
): Promise<void> {
  const spans: RequestSpan[] = [];
  for (let i = 0; i < t.count; i++) {
    const failed = Math.floor(((i + 1) * (t.errors ?? 0)) / t.count) > Math.floor((i * (t.errors ?? 0)) / t.count);
    spans.push({
      service: t.service ?? 'checkout',
      env: t.env ?? 'prod',
      version: t.version,
      resource: t.resource,
      primaryTag: '',
      instance: t.instance ?? '',
      startMs: Math.floor(t.from + (i * t.spreadMs) / t.count),
      durationMs: 3,
      error: failed,
      errorType: failed ? (t.errorType ?? 'error') : null,
      errorMessage: failed ? 'boom' : null,
    });
  }
  await ingestRequests(deps, spans);
}

/** Records a runner's answer as the engine does after a check that did not throw. */
export async function recordCheck(deps: Deps, ruleId: string, result: CheckResult): Promise<CheckResult> {
  await recordRuleUpdate(deps, ruleId, {
    status: result.status,
    reason: result.reason,
    evidence: result.evidence,
    state: result.state,
    nextCheckAt: result.status === 'in_progress' ? result.nextCheckAt : null,
    consecutiveErrors: 0,
    lastError: null,
  });
  return result;
}
