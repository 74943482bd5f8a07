// Backtests: a gate's rules (or rules given inline) replayed over the deploys found in the stored
// telemetry, as if each had been evaluated when its version first appeared. This module validates,
// authorizes, records and reads them; the replay itself runs in the engine (src/engine/backtest.ts),
// which hears a new backtest on the event bus, as it hears a new evaluation.

import { z } from 'zod';
import {
  type BacktestListRow,
  type BacktestRow,
  cancelBacktestRow,
  countRunningBacktests,
  countRunningBacktestsBy,
  getBacktest as getBacktestRow,
  insertBacktest,
  listBacktests as listBacktestRows,
} from '../db/backtests.ts';
import { transaction } from '../db/client.ts';
import { getGate as getGateRow, rulesOfGates } from '../db/gates.ts';
import type { RuleType } from '../db/schema.ts';
import { actorFields } from '../log.ts';
import type { Deps } from './deps.ts';
import { badInput, conflict, notFound, parseInput, RateLimitedError } from './errors.ts';
import { configurationSchema, LEASE_MS } from './evaluations.ts';
import { tagValue } from './gates.ts';
import { assertUuid, newId } from './ids.ts';
import { assertEnvAllowed, canSeeEnv, type Principal, requireScope } from './principal.ts';
import { seesAllOf } from './ruleEvidence.ts';
import type { FreezeRuleOptions, MetricRuleOptions } from './ruleOptions.ts';
import { nullsAsUndefined } from './ruleOptions.ts';
import { storedRuleOptions } from './ruleStorage.ts';

export type { BacktestRow };

/** Deploys one backtest replays at most; later ones are left out and the summary says so. */
export const MAX_BACKTEST_DEPLOYS = 100;
/** The longest window [from, to] a backtest may cover. */
export const MAX_BACKTEST_WINDOW_DAYS = 7;
const DAY_MS = 86_400_000;
/** Backtests one API key may have running at once. */
export const MAX_RUNNING_BACKTESTS_PER_KEY = 2;
/** Backtests running at once over all keys: replays share the event loop with live evaluations. */
export const MAX_RUNNING_BACKTESTS = 8;
/** A failed deploy whose version stopped serving within this long, older versions serving instead, looks rolled back. */
export const ROLLBACK_WITHIN_MS = 60 * 60_000;
/** A deploy's reason as stored, at most. */
export const MAX_REASON_LENGTH = 500;
export const MAX_BACKTESTS_PAGE = 100;

// ---- what a backtest holds ----

export interface BacktestRule {
  name: string;
  type: RuleType;
  dryRun: boolean;
  options: Record<string, unknown>;
}

/** The gate's settings and rules as replayed (the configuration column). */
export interface BacktestConfiguration {
  dryRun: boolean;
  onSourceError: 'fail' | 'pass';
  rules: BacktestRule[];
}

export interface SkippedRule {
  name: string;
  type: RuleType;
  why: string;
}

/** One rule of one replayed deploy. `at`: when it reached its answer on the replayed clock. */
export interface RuleReplay {
  name: string;
  type: RuleType;
  dryRun: boolean;
  /** in_progress: still undecided when the replay reached the present (or its step limit). */
  status: 'pass' | 'fail' | 'in_progress';
  reason: string;
  at: string | null;
}

export interface DeployResult {
  version: string;
  /** When its first request was recorded: the replayed evaluation starts there. */
  firstSeenAt: string;
  /** What the gate would have reported (dry-run rules not counted, a dry-run gate passes). */
  verdict: 'pass' | 'fail' | 'undecided';
  /** The real verdict, dry run ignored. */
  realVerdict: 'pass' | 'fail' | 'undecided';
  decidingRule: string | null;
  decidedAt: string | null;
  timeToVerdictMs: number | null;
  reason: string;
  /** The version stopped serving within the hour and older versions served instead. */
  rollback: { at: string; versions: string[] } | null;
  rules: RuleReplay[];
}

/** Counted on the real verdicts (a dry-run gate's failures count: that is what a backtest of it is for). */
export interface BacktestSummary {
  deploys: number;
  failed: number;
  passed: number;
  undecided: number;
  /** Failed deploys followed by a rollback-looking event. */
  failedThenRolledBack: number;
  /** More deploys were found than a backtest replays (MAX_BACKTEST_DEPLOYS): the first ones were. */
  truncated: boolean;
}

/**
 * Why a rule cannot be judged from stored data (null: it can). Rules that ask something outside
 * at check time would get today's answer, not the one they would have had then.
 */
export function whyNotReplayable(type: RuleType, options: Record<string, unknown>): string | null {
  switch (type) {
    case 'faulty_deployment_detection':
    case 'monitor':
      return null;
    case 'metric':
      return (options as MetricRuleOptions).apm
        ? null
        : 'its PromQL query is answered by Prometheus at check time; Tollgate stores no series to replay it on (metric rules on the APM store are replayed)';
    case 'webhook':
      return "it asks an outside service at check time; a replay would get that service's answer of today, not of the deploy's time (and call it once per deploy)";
    case 'freeze':
      return (options as FreezeRuleOptions).incidentQuery ? "its incidentQuery reads the monitors' current states, not their past ones" : null;
  }
}

// ---- input ----

const instant = (what: string) => z.coerce.date({ message: `${what} must be an RFC 3339 date such as 2026-11-28T00:00:00Z` });

export const backtestGateInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      gateId: z.string().optional(),
      service: tagValue('service').optional(),
      env: tagValue('env').optional(),
      configuration: configurationSchema.optional(),
      from: instant('from'),
      to: instant('to'),
    })
    .strict()
    .superRefine((i, ctx) => {
      if ((i.gateId === undefined) === (i.configuration === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['gateId'], message: 'give either gateId (a stored gate) or configuration (rules to try), not both or neither' });
      }
      if (i.configuration && !i.service) ctx.addIssue({ code: 'custom', path: ['service'], message: 'service is required with a configuration' });
      if (i.configuration && !i.env) ctx.addIssue({ code: 'custom', path: ['env'], message: 'env is required with a configuration' });
      if (i.gateId && (i.service || i.env)) ctx.addIssue({ code: 'custom', path: ['service'], message: 'service and env come from the gate: leave them out with gateId' });
      if (i.to <= i.from) ctx.addIssue({ code: 'custom', path: ['to'], message: 'must be after from' });
      else if (i.to.getTime() - i.from.getTime() > MAX_BACKTEST_WINDOW_DAYS * DAY_MS) {
        ctx.addIssue({ code: 'custom', path: ['to'], message: `the window from..to is at most ${MAX_BACKTEST_WINDOW_DAYS} days` });
      }
    }),
);
export type BacktestGateInput = z.output<typeof backtestGateInputSchema>;

// ---- reads: a backtest of an environment the caller cannot see does not exist for it ----

const requireRead = (actor: Principal) => requireScope(actor, ['gates:read', 'evaluations:write'], 'read backtests');

const WITHHELD = 'monitors outside your environments are not shown.';

/**
 * The backtest as `reader` may see it: rules that name monitors (monitor rules, freeze rules'
 * incidents) keep their verdict but lose their reason when the starting key could see
 * environments the reader cannot.
 */
/** A backtest as a reader sees it; a listed one comes without its results (they load when asked). */
export type BacktestView = BacktestListRow & { results?: BacktestRow['results'] };

function backtestFor<R extends BacktestView>(reader: Pick<Principal, 'envs'>, row: R): R {
  if (seesAllOf(reader, row) || !row.results) return row;
  const hide = (r: RuleReplay): RuleReplay => (r.type === 'monitor' || r.type === 'freeze' ? { ...r, reason: `The rule answered ${r.status}; ${WITHHELD}` } : r);
  const results = (row.results as unknown as DeployResult[]).map((d) => {
    const rules = d.rules.map(hide);
    // The deploy's reason is the deciding rule's, or (undecided) the first counted rule still open's.
    const source = d.decidingRule !== null ? d.rules.find((r) => r.name === d.decidingRule) : d.rules.find((r) => !r.dryRun && r.status === 'in_progress');
    const hidden = source && (source.type === 'monitor' || source.type === 'freeze');
    const why = d.decidingRule !== null ? 'Decided by' : 'Still waiting on';
    return { ...d, rules, reason: hidden ? `${why} the rule "${source.name}"; ${WITHHELD}` : d.reason };
  });
  return { ...row, results: results as unknown as BacktestRow['results'] };
}

export async function getBacktest(deps: Deps, actor: Principal, id: string): Promise<BacktestRow | null> {
  requireRead(actor);
  const row = await getBacktestRow(deps.db, assertUuid(id, 'id'));
  return row && canSeeEnv(actor, row.env) ? backtestFor(actor, row) : null;
}

export function backtestsPageSize(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_BACKTESTS_PAGE) throw badInput('first', `must be between 1 and ${MAX_BACKTESTS_PAGE}, got ${first}`);
  return first;
}

/** A backtest's per-deploy results as the reader may see them ([] for one it cannot see). */
export async function backtestResults(deps: Deps, actor: Principal, backtest: BacktestView): Promise<DeployResult[]> {
  return ((backtest.results ? backtest : await getBacktest(deps, actor, backtest.id))?.results ?? []) as unknown as DeployResult[];
}

/** Newest first, of the environments the caller may see (and of one gate when asked). */
export async function listBacktests(deps: Deps, actor: Principal, filter: { gateId?: string }, page: { after?: string; limit: number }): Promise<BacktestView[]> {
  requireRead(actor);
  if (page.after) assertUuid(page.after, 'after');
  if (filter.gateId) assertUuid(filter.gateId, 'gateId');
  const limit = Math.max(1, Math.min(page.limit, MAX_BACKTESTS_PAGE + 1));
  return (await listBacktestRows(deps.db, { envs: actor.envs, gateId: filter.gateId }, { after: page.after, limit })).map((r) => backtestFor(actor, r));
}

/**
 * The backtest now, then each change (progress, results, the end) until it ends. NOT_FOUND, at
 * once, for one the reader cannot see.
 */
export async function followBacktest(deps: Deps, actor: Principal, id: string): Promise<AsyncIterableIterator<BacktestRow>> {
  const found = await getBacktest(deps, actor, id);
  if (!found) throw notFound(`backtest ${id} does not exist`, 'id');
  let shown = 0;
  const show = (row: BacktestRow) => {
    shown = row.revision;
    return backtestFor(actor, row);
  };
  return deps.events.subscribe('backtest.changed', (row) => (row.id === found.id && row.revision > shown ? show(row) : undefined), {
    current: async () => {
      const row = await getBacktestRow(deps.db, found.id);
      return row ? show(row) : undefined;
    },
    last: (row) => row.status !== 'running',
  });
}

// ---- writes ----

/** The rules to replay: the stored gate's (as the caller may see it) or those given. */
async function configurationOf(
  deps: Deps,
  actor: Principal,
  input: BacktestGateInput,
): Promise<{ gateId: string | null; service: string; env: string; configuration: BacktestConfiguration }> {
  if (input.gateId) {
    const gate = await getGateRow(deps.db, assertUuid(input.gateId, 'input.gateId'));
    if (!gate || !canSeeEnv(actor, gate.env)) throw notFound(`gate ${input.gateId} does not exist`, 'input.gateId');
    const rules = await rulesOfGates(deps.db, [gate.id]);
    if (rules.length === 0) throw badInput('input.gateId', 'the gate has no rules to replay');
    return {
      gateId: gate.id,
      service: gate.service,
      env: gate.env,
      configuration: {
        dryRun: gate.dryRun,
        onSourceError: gate.onSourceError,
        rules: rules.map((r) => ({ name: r.name, type: r.type, dryRun: r.dryRun, options: r.options })),
      },
    };
  }
  const c = input.configuration!;
  assertEnvAllowed(actor, input.env!);
  return {
    gateId: null,
    service: input.service!,
    env: input.env!,
    configuration: {
      dryRun: c.dryRun,
      onSourceError: c.onSourceError,
      rules: c.rules.map((r, i) => ({
        name: r.name,
        type: r.options.type,
        dryRun: r.dryRun,
        options: storedRuleOptions(deps, r.options, `input.configuration.rules[${i}].options`),
      })),
    },
  };
}

/**
 * Records a running backtest and publishes it: the engine's backtester replays it in the
 * background. Returns at once. Refused (RATE_LIMITED) past MAX_RUNNING_BACKTESTS_PER_KEY.
 */
export async function startBacktest(deps: Deps, actor: Principal, raw: unknown): Promise<BacktestRow> {
  requireScope(actor, 'evaluations:write', 'start backtests');
  const input = parseInput(backtestGateInputSchema, raw, 'input');
  const now = deps.now();
  const earliest = now.getTime() - deps.config.apmRetentionDays * DAY_MS;
  if (input.to.getTime() <= earliest) throw badInput('input.to', `is before the APM store's retention (${deps.config.apmRetentionDays} days): nothing is kept that far back`);
  if (input.from > now) throw badInput('input.from', 'is in the future: no deploy has been seen there yet');
  const { gateId, service, env, configuration } = await configurationOf(deps, actor, input);
  const skipped: SkippedRule[] = [];
  for (const r of configuration.rules) {
    const why = whyNotReplayable(r.type, r.options);
    if (why) skipped.push({ name: r.name, type: r.type, why });
  }
  if (configuration.rules.every((r) => r.dryRun || skipped.some((s) => s.name === r.name))) {
    const field = gateId ? 'input.gateId' : 'input.configuration.rules';
    throw badInput(
      field,
      `no rule that counts toward the verdict can be judged from stored data (${skipped.map((s) => `${s.name}: ${s.type}`).join(', ') || 'only dry-run rules'})`,
    );
  }
  const row = await transaction(deps.db, async (tx) => {
    if ((await countRunningBacktestsBy(tx, actor.id)) >= MAX_RUNNING_BACKTESTS_PER_KEY) {
      throw new RateLimitedError(`API key "${actor.name}" already has ${MAX_RUNNING_BACKTESTS_PER_KEY} backtests running, its limit: wait for one to end, or cancel one`, 30);
    }
    // Says nothing of whose they are: other keys' backtests may be in environments this key cannot see.
    if ((await countRunningBacktests(tx)) >= MAX_RUNNING_BACKTESTS) {
      throw new RateLimitedError(`Tollgate is running as many backtests as it allows at once (${MAX_RUNNING_BACKTESTS}): try again when one has ended`, 60);
    }
    return insertBacktest(tx, {
      id: newId(),
      gateId,
      service,
      env,
      configuration: configuration as unknown as Record<string, unknown>,
      from: input.from,
      to: new Date(Math.min(input.to.getTime(), now.getTime())),
      status: 'running',
      results: [],
      skippedRules: skipped,
      // Run by this process (its backtester hears the event below), which renews the lease as it runs.
      nodeId: deps.nodeId,
      leaseExpiresAt: new Date(now.getTime() + LEASE_MS),
      triggerEnvs: actor.envs === null ? null : [...actor.envs],
      createdById: actor.id,
      createdByName: actor.name,
      createdAt: now,
    });
  });
  deps.log.info({ backtestId: row.id, gateId, service, env, from: row.from, to: row.to, skipped: skipped.length, ...actorFields(actor) }, 'backtest started');
  deps.events.publish('backtest.changed', row);
  return backtestFor(actor, row);
}

/** Stops a running backtest; what it replayed so far stays. CONFLICT when it already ended. */
export async function cancelBacktest(deps: Deps, actor: Principal, id: string): Promise<BacktestRow> {
  requireScope(actor, 'evaluations:write', 'cancel backtests');
  const now = deps.now();
  const row = await transaction(deps.db, async (tx) => {
    const before = await getBacktestRow(tx, assertUuid(id, 'id'));
    if (!before || !canSeeEnv(actor, before.env)) throw notFound(`backtest ${id} does not exist`, 'id');
    if (before.status !== 'running') throw conflict(`backtest ${id} already ended (${before.status})`, 'id');
    return (await cancelBacktestRow(tx, before.id, now, actor.name))!;
  });
  deps.log.info({ backtestId: row.id, ...actorFields(actor) }, 'backtest canceled');
  deps.events.publish('backtest.changed', row);
  return backtestFor(actor, row);
}
