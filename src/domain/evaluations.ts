import { z } from 'zod';
import { auditEntriesOf, countAuditEntries, insertAudit } from '../db/audit.ts';
import { type KeysetPage, serializeOn, transaction } from '../db/client.ts';
import { appendRevision } from '../db/evaluationRevisions.ts';
import {
  countEvaluations as countEvaluationRows,
  type EvaluationFilter,
  type EvaluationRow,
  evaluationStats as evaluationStatsRows,
  findByIdempotencyKey,
  getEvaluation as getEvaluationRow,
  getRuleEvaluation,
  getRuleWithEvaluation,
  insertEvaluation,
  latestEvaluationsOfGates,
  listEvaluations as listEvaluationRows,
  listRuleEvaluations as listRuleEvaluationRows,
  type NewRuleEvaluationRow,
  type RuleEvaluationFilter,
  type RuleEvaluationRow,
  ruleEvaluationsOf,
  updateEvaluationRow,
  updateRuleEvaluationRow,
} from '../db/evaluations.ts';
import { getGateByKey, rulesOfGates } from '../db/gates.ts';
import type { RuleType } from '../db/schema.ts';
import type { Deps } from './deps.ts';
import { badInput, conflict, notFound, parseInput, uniqueViolation } from './errors.ts';
import type { EvaluationSnapshot } from './events.ts';
import { assertMetricRulesAllowed, ruleInputSchema, sourceErrorPolicySchema, tagValue } from './gates.ts';
import { assertUuid, newId } from './ids.ts';
import { queueNotifications } from './notifications.ts';
import { assertEnvAllowed, canSeeEnv, type Principal, requireScope } from './principal.ts';
import { ruleEvaluationFor, snapshotFor } from './ruleEvidence.ts';
import { type MetricRuleOptions, nullsAsUndefined, whyMetricNeedsVersion } from './ruleOptions.ts';
import { storedRuleOptions } from './ruleStorage.ts';
import { audit } from './stamp.ts';
import { assertCanStartEvaluation } from './triggerLimits.ts';
import { allRulesFinished, realStatus, reported } from './verdict.ts';

export type { EvaluationSnapshot };

/** How long an evaluation stays with its process without the lease being renewed. */
export const LEASE_MS = 30_000;

// ---- input ----

export const configurationSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      dryRun: z.boolean().default(false),
      onSourceError: sourceErrorPolicySchema.default('fail'),
      rules: z
        .array(ruleInputSchema, { message: 'configuration.rules is required' })
        .min(1, 'a just-in-time configuration needs at least one rule')
        .max(50, 'a configuration holds at most 50 rules'),
    })
    .strict()
    .superRefine((c, ctx) => {
      const seen = new Set<string>();
      c.rules.forEach((r, i) => {
        if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name "${r.name}"` });
        seen.add(r.name);
      });
    }),
);

export const evaluateGateInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      service: tagValue('service'),
      env: tagValue('env'),
      identifier: tagValue('identifier').default('default'),
      version: z.string().trim().min(1, 'version must not be empty').max(200, 'version is at most 200 characters').optional(),
      primaryTag: z
        .string()
        .trim()
        .regex(/^[^:\s]+:\S+$/, 'primaryTag must be key:value, e.g. region:us-east-1')
        .optional(),
      idempotencyKey: z.string().trim().min(1, 'idempotencyKey must not be empty').max(200).optional(),
      configuration: configurationSchema.optional(),
    })
    .strict(),
);
export type EvaluateGateInput = z.output<typeof evaluateGateInputSchema>;

// ---- reads ----

/** Values one filter list may hold: a longer list is a mistake or an attack, not a question. */
const MAX_FILTER_VALUES = 100;

/** The list as given, refused when longer than MAX_FILTER_VALUES; `field` as the caller spells it. */
export function boundedFilterList<T>(values: T[] | undefined, field: string): T[] | undefined {
  if (values && values.length > MAX_FILTER_VALUES) throw badInput(field, `lists at most ${MAX_FILTER_VALUES} values, got ${values.length}`);
  return values;
}

/** The API's evaluation filter (GraphQL sends null for what is not asked). */
export type EvaluationFilterInput = {
  [K in Exclude<keyof EvaluationFilter, 'gateId' | 'gateIds' | 'envs' | 'evaluationIds'>]?: EvaluationFilter[K] | null;
} & { gateId?: string | number | null; gateIds?: Array<string | number> | null };

/** The API's filter checked (lists bounded, ids well formed), as queries and live streams take it. */
export function checkEvaluationFilter(f: EvaluationFilterInput | null | undefined): EvaluationFilter {
  return {
    service: boundedFilterList(f?.service ?? undefined, 'filter.service'),
    env: boundedFilterList(f?.env ?? undefined, 'filter.env'),
    identifier: boundedFilterList(f?.identifier ?? undefined, 'filter.identifier'),
    version: boundedFilterList(f?.version ?? undefined, 'filter.version'),
    status: boundedFilterList(f?.status ?? undefined, 'filter.status'),
    overridden: f?.overridden ?? undefined,
    dryRun: f?.dryRun ?? undefined,
    gateId: f?.gateId != null ? assertUuid(String(f.gateId), 'filter.gateId') : undefined,
    gateIds: boundedFilterList(f?.gateIds ?? undefined, 'filter.gateIds')?.map((id, i) => assertUuid(String(id), `filter.gateIds[${i}]`)),
    ruleType: boundedFilterList(f?.ruleType ?? undefined, 'filter.ruleType'),
    ruleName: boundedFilterList(f?.ruleName ?? undefined, 'filter.ruleName'),
    startedAfter: f?.startedAfter ?? undefined,
    startedBefore: f?.startedBefore ?? undefined,
  };
}

const requireRead = (actor: Principal) => requireScope(actor, ['gates:read', 'evaluations:write'], 'read evaluations');

export async function loadSnapshot(deps: Deps, id: string): Promise<EvaluationSnapshot | null> {
  const evaluation = await getEvaluationRow(deps.db, id);
  return evaluation ? { evaluation, rules: await ruleEvaluationsOf(deps.db, [id]) } : null;
}

/**
 * The evaluation as `actor` may see it; null when it does not exist or is in an environment
 * the actor cannot see (the two are the same answer, so ids of other envs reveal nothing).
 */
export async function getEvaluation(deps: Deps, actor: Principal, id: string): Promise<EvaluationSnapshot | null> {
  requireRead(actor);
  const snap = await loadSnapshot(deps, assertUuid(id, 'id'));
  return snap && canSeeEnv(actor, snap.evaluation.env) ? snapshotFor(actor, snap) : null;
}

/** What an id the actor may not see answers, word for word the answer for an id that does not exist. */
const noEvaluation = (id: string) => notFound(`evaluation ${id} does not exist`, 'id');

export async function listEvaluations(deps: Deps, actor: Principal, filter: EvaluationFilter, page: KeysetPage): Promise<EvaluationRow[]> {
  requireRead(actor);
  if (page.after) assertUuid(page.after, 'after');
  if (page.before) assertUuid(page.before, 'before');
  return listEvaluationRows(deps.db, { ...filter, envs: actor.envs }, page);
}

/** How many evaluations the filter selects among those the actor may see. */
export async function countEvaluations(deps: Deps, actor: Principal, filter: EvaluationFilter): Promise<number> {
  requireRead(actor);
  return countEvaluationRows(deps.db, { ...filter, envs: actor.envs });
}

/** Evaluations a gate's list may show at most. */
export const MAX_GATE_EVALUATIONS = 20;

export function gateEvaluationsLimit(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_GATE_EVALUATIONS) throw badInput('first', `must be between 1 and ${MAX_GATE_EVALUATIONS}, got ${first}`);
  return first;
}

/** The newest evaluations of each gate (gates the actor already sees), at most `limit` each. */
export async function latestEvaluationsOf(
  deps: Deps,
  actor: Principal,
  gates: ReadonlyArray<{ id: string; service: string; env: string; identifier: string }>,
  limit: number,
): Promise<EvaluationRow[]> {
  requireRead(actor);
  gateEvaluationsLimit(limit);
  return latestEvaluationsOfGates(
    deps.db,
    gates.filter((g) => canSeeEnv(actor, g.env)),
    limit,
  );
}

export async function rulesOfEvaluations(deps: Deps, ids: readonly string[]): Promise<RuleEvaluationRow[]> {
  return ruleEvaluationsOf(deps.db, ids);
}

/**
 * Rule evaluations, each as `actor` may see it, of the evaluations `filter` selects: newest
 * evaluation first, a page counting rules. `page.after` is the previous page's last rule
 * evaluation; one the actor cannot see continues nothing.
 */
export async function listRuleEvaluations(deps: Deps, actor: Principal, filter: EvaluationFilter, rules: RuleEvaluationFilter, page: { after?: string; limit: number }) {
  requireRead(actor);
  let after: { evaluationId: string; position: number } | undefined;
  if (page.after) {
    const last = await getRuleEvaluation(deps.db, assertUuid(page.after, 'after'));
    const evaluation = last && (await getEvaluationRow(deps.db, last.evaluationId));
    if (!last || !evaluation || !canSeeEnv(actor, evaluation.env)) throw badInput('after', 'is not a rule evaluation a list can continue from');
    after = { evaluationId: last.evaluationId, position: last.position };
  }
  return (await listRuleEvaluationRows(deps.db, { ...filter, envs: actor.envs }, rules, { after, limit: page.limit })).map(({ evaluation, rule }) => ({
    evaluation,
    rule: ruleEvaluationFor(actor, evaluation, rule),
  }));
}

export async function evaluationStats(deps: Deps, actor: Principal, filter: EvaluationFilter, limit = 10) {
  requireRead(actor);
  return evaluationStatsRows(deps.db, { ...filter, envs: actor.envs }, limit);
}

export function evaluationUrl(deps: Deps, id: string): string {
  return `${deps.baseUrl()}/evaluations/${id}`;
}

// What the deploy acts on (src/domain/verdict.ts): REST's gate_status, the hooks, `tollgate
// evaluate`, notifications and GraphQL's reportedStatus all read it; `status` stays the real verdict.
export { reported };

// ---- trigger ----

interface RuleSnapshot {
  ruleId: string | null;
  name: string;
  type: RuleType;
  dryRun: boolean;
  options: Record<string, unknown>;
}

/** What an evaluation runs: its rules, and the settings of the gate they come from. */
interface Configuration {
  gateId: string | null;
  dryRun: boolean;
  onSourceError: 'fail' | 'pass';
  justInTime: boolean;
  rules: RuleSnapshot[];
}

/** Just-in-time rules win over a stored gate; without them the stored gate must exist and have rules. */
async function configurationToEvaluate(deps: Deps, input: EvaluateGateInput): Promise<Configuration> {
  if (input.configuration) {
    return {
      gateId: null,
      dryRun: input.configuration.dryRun,
      onSourceError: input.configuration.onSourceError,
      justInTime: true,
      rules: input.configuration.rules.map((r, i) => ({
        ruleId: null,
        name: r.name,
        type: r.options.type,
        dryRun: r.dryRun,
        options: storedRuleOptions(deps, r.options, `input.configuration.rules[${i}].options`),
      })),
    };
  }
  const key = `service ${input.service}, env ${input.env}, and identifier ${input.identifier}`;
  const gate = await getGateByKey(deps.db, input.service, input.env, input.identifier);
  if (!gate) throw notFound(`no gate found for ${key}`, 'input');
  const rules = await rulesOfGates(deps.db, [gate.id]);
  if (rules.length === 0) throw notFound(`the gate for ${key} has no rules to evaluate`, 'input');
  return {
    gateId: gate.id,
    dryRun: gate.dryRun,
    onSourceError: gate.onSourceError,
    justInTime: false,
    rules: rules.map((r) => ({ ruleId: r.id, name: r.name, type: r.type, dryRun: r.dryRun, options: r.options })),
  };
}

/**
 * Validates, resolves the rules, snapshots them and creates the evaluation with its rule
 * evaluations in one transaction, then publishes it (the engine schedules what it hears).
 * Returns at once; the verdict comes later.
 */
export async function evaluateGate(deps: Deps, actor: Principal, input: EvaluateGateInput): Promise<EvaluationSnapshot> {
  requireScope(actor, 'evaluations:write', 'trigger evaluations');
  assertEnvAllowed(actor, input.env);
  if (input.configuration) assertMetricRulesAllowed(deps, actor, input.configuration.rules, (i) => `input.configuration.rules[${i}]`);
  if (input.idempotencyKey) {
    const existing = await findByIdempotencyKey(deps.db, input.env, input.idempotencyKey);
    if (existing) return sameRequest(deps, actor, existing, input);
  }
  const configuration = await configurationToEvaluate(deps, input);
  return startEvaluation(deps, actor, {
    service: input.service,
    env: input.env,
    identifier: input.identifier,
    version: input.version ?? null,
    primaryTag: input.primaryTag ?? null,
    idempotencyKey: input.idempotencyKey ?? null,
    rerunOf: null,
    ...configuration,
  });
}

/**
 * An idempotency key answers only the same request, and only in its own environment (keys are
 * unique per env, and looked up in the request's env, which the actor may act on). The answer
 * is the evaluation as the actor may see it: another key of the env may have started it.
 */
async function sameRequest(
  deps: Deps,
  actor: Principal,
  existing: EvaluationRow,
  request: Pick<EvaluateGateInput, 'service' | 'env' | 'identifier'> & { version?: string | null; primaryTag?: string | null },
): Promise<EvaluationSnapshot> {
  if ((['service', 'env', 'identifier'] as const).some((key) => existing[key] !== request[key])) {
    throw conflict('idempotencyKey was already used for a different service or identifier', 'input.idempotencyKey');
  }
  // Another version or primary tag under the same key is another deploy: answering it with the
  // first one's verdict would let v2 through on v1's evidence.
  if (existing.version !== (request.version ?? null) || existing.primaryTag !== (request.primaryTag ?? null)) {
    throw conflict('idempotencyKey was already used for a different version or primaryTag', 'input.idempotencyKey');
  }
  return snapshotFor(actor, (await loadSnapshot(deps, existing.id))!);
}

interface StartRequest extends Configuration {
  service: string;
  env: string;
  identifier: string;
  version: string | null;
  primaryTag: string | null;
  idempotencyKey: string | null;
  rerunOf: string | null;
}

/**
 * Creates the evaluation and a rule evaluation per rule (its window planned), leased to this
 * process, in one transaction, then publishes it: the engine starts checking what it hears.
 */
async function startEvaluation(deps: Deps, actor: Principal, req: StartRequest): Promise<EvaluationSnapshot> {
  const field = req.justInTime ? 'input.configuration.rules' : 'input';
  if (!req.version && req.rules.some((r) => r.type === 'faulty_deployment_detection')) {
    throw badInput('input.version', 'version is required to evaluate a faulty_deployment_detection rule');
  }
  if (!req.version) {
    for (const r of req.rules) {
      const why = r.type === 'metric' ? whyMetricNeedsVersion(r.options as MetricRuleOptions) : null;
      if (why) throw badInput('input.version', `version is required to evaluate the metric rule "${r.name}": ${why}`);
    }
  }
  const now = deps.now();
  const windows = req.rules.map((r, i) => {
    const window = deps.planWindow(r.type, r.options, now);
    if (!window) throw badInput(`${field}[${i}]`, `${r.type} rules cannot be evaluated by this version of Tollgate yet`);
    return window;
  });
  const id = newId();
  const rules: NewRuleEvaluationRow[] = req.rules.map((r, position) => {
    const window = windows[position]!;
    return {
      id: newId(),
      evaluationId: id,
      ruleId: r.ruleId,
      position,
      name: r.name,
      type: r.type,
      dryRun: r.dryRun,
      options: r.options,
      status: 'in_progress',
      reason: 'Starting.',
      startedAt: now,
      ...window,
    };
  });
  const initialStatus = realStatus(rules.map((r) => ({ status: 'in_progress', dryRun: r.dryRun ?? false })));
  let snapshot: EvaluationSnapshot;
  try {
    snapshot = await transaction(
      deps.db,
      async (tx) => {
        const stored = await insertEvaluation(
          tx,
          {
            id,
            gateId: req.gateId,
            service: req.service,
            env: req.env,
            identifier: req.identifier,
            version: req.version,
            primaryTag: req.primaryTag,
            dryRun: req.dryRun,
            onSourceError: req.onSourceError,
            // Only dry-run rules: nothing can fail the gate, so it is decided (pass) from the start.
            status: initialStatus,
            decidedAt: initialStatus === 'pass' ? now : null,
            justInTime: req.justInTime,
            idempotencyKey: req.idempotencyKey,
            rerunOf: req.rerunOf,
            // Rules match only what the trigger may see, whoever reads the evaluation later.
            triggerEnvs: actor.envs === null ? null : [...actor.envs],
            triggeredById: actor.id,
            triggeredByName: actor.name,
            startedAt: now,
            // The process that creates an evaluation drives it; the engine renews the lease.
            leaseOwner: deps.nodeId,
            leaseExpiresAt: new Date(now.getTime() + LEASE_MS),
          },
          rules,
        );
        await appendRevision(tx, stored, now);
        // The key's limits are counted with this evaluation in, one trigger of the key at a
        // time from here to the commit (concurrent triggers cannot all pass the limit), and
        // only the counting waits for the others: the inserts above did not.
        await serializeOn(tx, `triggers:${actor.id}`);
        await assertCanStartEvaluation(tx, deps.config.rateLimits, actor, now);
        return stored;
      },
      { readCommitted: true },
    );
  } catch (err) {
    // The same idempotency key from a concurrent request: the winner answers, with the same
    // checks as when it had been found first.
    if (req.idempotencyKey && uniqueViolation(err, { name: 'evaluations_env_idempotency_unique', columns: 'evaluations.idempotency_key' })) {
      const existing = await findByIdempotencyKey(deps.db, req.env, req.idempotencyKey);
      if (existing) return sameRequest(deps, actor, existing, req);
    }
    throw err;
  }
  deps.events.publish('evaluation.changed', snapshot);
  logStarted(deps, snapshot);
  logOutcome(deps, { decidedAt: null, finishedAt: null }, snapshot, null);
  return snapshot;
}

// ---- the operator's view: one info line when an evaluation starts, is decided, finishes ----

function logStarted(deps: Deps, { evaluation: e, rules }: EvaluationSnapshot): void {
  deps.log.info(
    {
      evaluationId: e.id,
      service: e.service,
      env: e.env,
      identifier: e.identifier,
      version: e.version,
      gateId: e.gateId,
      justInTime: e.justInTime,
      rules: rules.length,
      rerunOf: e.rerunOf ?? undefined,
      triggeredById: e.triggeredById,
      triggeredByName: e.triggeredByName,
    },
    'evaluation started',
  );
}

/** Logs what this change settled: the verdict (and the rule that settled it), the end. */
function logOutcome(
  deps: Deps,
  before: Pick<EvaluationRow, 'decidedAt' | 'finishedAt'>,
  { evaluation: e }: EvaluationSnapshot,
  decidingRule: Pick<RuleEvaluationRow, 'id' | 'name'> | null,
  canceledBy?: Principal,
): void {
  const common = { evaluationId: e.id, service: e.service, env: e.env, status: e.status, reportedStatus: reported(e) };
  const by = canceledBy && { canceledById: canceledBy.id, canceledByName: canceledBy.name };
  if (!before.decidedAt && e.decidedAt) {
    const decider = decidingRule ? { decidingRule: decidingRule.name, decidingRuleId: decidingRule.id } : { decidingRule: null };
    deps.log.info({ ...common, ms: e.decidedAt.getTime() - e.startedAt.getTime(), ...decider, ...by }, 'evaluation decided');
  }
  if (!before.finishedAt && e.finishedAt) {
    deps.log.info({ ...common, ms: e.finishedAt.getTime() - e.startedAt.getTime(), ...by }, 'evaluation finished');
  }
}

/** A new evaluation with the same inputs and the same rule snapshot as an earlier one. */
export async function rerunEvaluation(deps: Deps, actor: Principal, id: string): Promise<EvaluationSnapshot> {
  requireScope(actor, 'evaluations:write', 'rerun evaluations');
  const old = await loadSnapshot(deps, assertUuid(id, 'id'));
  if (!old || !canSeeEnv(actor, old.evaluation.env)) throw noEvaluation(id);
  const e = old.evaluation;
  return startEvaluation(deps, actor, {
    service: e.service,
    env: e.env,
    identifier: e.identifier,
    version: e.version,
    primaryTag: e.primaryTag,
    idempotencyKey: null,
    rerunOf: e.id,
    gateId: e.gateId,
    dryRun: e.dryRun,
    onSourceError: e.onSourceError,
    justInTime: e.justInTime,
    rules: old.rules.map((r) => ({ ruleId: r.ruleId, name: r.name, type: r.type, dryRun: r.dryRun, options: r.options })),
  });
}

/**
 * Stops the rules still running. An undecided evaluation becomes `canceled`; a decided one
 * keeps its verdict and only stops the rules that were still watching.
 */
export async function cancelEvaluation(deps: Deps, actor: Principal, id: string): Promise<EvaluationSnapshot> {
  requireScope(actor, 'evaluations:write', 'cancel evaluations');
  const now = deps.now();
  let before: EvaluationRow | undefined;
  let queued = 0;
  const snapshot = await transaction(deps.db, async (tx) => {
    const e = await getEvaluationRow(tx, assertUuid(id, 'id'));
    if (!e || !canSeeEnv(actor, e.env)) throw noEvaluation(id);
    if (e.finishedAt) throw conflict(`evaluation ${id} has already finished (${e.status})`, 'id');
    before = e;
    const rules = await ruleEvaluationsOf(tx, [e.id]);
    for (const r of rules.filter((r) => r.status === 'in_progress')) {
      await updateRuleEvaluationRow(tx, r.id, { status: 'canceled', reason: `Canceled by ${actor.name}.`, finishedAt: now, nextCheckAt: null });
    }
    const evaluation = await updateEvaluationRow(tx, e.id, {
      status: e.status === 'in_progress' ? 'canceled' : e.status,
      decidedAt: e.decidedAt ?? now,
      finishedAt: now,
    });
    const after = { evaluation, rules: await ruleEvaluationsOf(tx, [e.id]) };
    await appendRevision(tx, after, now);
    queued = await queueNotifications(tx, deps, e, after);
    return after;
  });
  deps.events.publish('evaluation.changed', snapshot);
  if (queued) deps.events.publish('notification.queued', null);
  logOutcome(deps, before!, snapshot, null, actor);
  return snapshotFor(actor, snapshot);
}

// ---- overrides ----

/** The longest reason an override may give: a sentence or a paragraph, not a document. */
const MAX_OVERRIDE_REASON = 1000;

const overrideInputSchema = z.object({
  verdict: z.enum(['pass', 'fail'], { message: 'verdict must be PASS or FAIL' }),
  reason: z
    .string({ message: 'reason is required' })
    .trim()
    .min(1, 'reason must say why the verdict is overridden')
    .max(MAX_OVERRIDE_REASON, `reason is at most ${MAX_OVERRIDE_REASON} characters`),
});
export type OverrideInput = z.input<typeof overrideInputSchema>;

/**
 * A person's verdict in place of the gate's: from now on the deploy is told `verdict`
 * (reported(), everywhere), while the real status and every rule's evidence stay. An
 * evaluation still running ends here: its running rules are canceled as cancelEvaluation
 * does, an undecided real status becomes `canceled`. Overriding again replaces the override
 * (the audit log keeps each one, with what it replaced). One transaction, then published.
 */
export async function overrideEvaluation(deps: Deps, actor: Principal, id: string, input: OverrideInput): Promise<EvaluationSnapshot> {
  requireScope(actor, 'evaluations:override', 'override evaluations');
  assertUuid(id, 'id');
  const { verdict, reason } = parseInput(overrideInputSchema, input, 'input');
  const now = deps.now();
  let before: EvaluationRow | undefined;
  let queued = 0;
  const snapshot = await transaction(deps.db, async (tx) => {
    const e = await getEvaluationRow(tx, id);
    if (!e || !canSeeEnv(actor, e.env)) throw noEvaluation(id);
    // Each override stays in the evaluation's history (and in every read of it): a bounded list.
    if ((await countAuditEntries(tx, 'evaluation', e.id, OVERRIDDEN)) >= MAX_OVERRIDES_PER_EVALUATION) {
      throw conflict(`evaluation ${id} has been overridden ${MAX_OVERRIDES_PER_EVALUATION} times, the most one evaluation keeps: rerun it instead`, 'id');
    }
    before = e;
    const ending = !e.finishedAt;
    if (ending) {
      for (const r of (await ruleEvaluationsOf(tx, [e.id])).filter((r) => r.status === 'in_progress')) {
        await updateRuleEvaluationRow(tx, r.id, {
          status: 'canceled',
          reason: `Ended by ${actor.name}'s override (${verdict}).`,
          finishedAt: now,
          nextCheckAt: null,
        });
      }
    }
    const evaluation = await updateEvaluationRow(tx, e.id, {
      ...(ending && { status: e.status === 'in_progress' ? 'canceled' : e.status, decidedAt: e.decidedAt ?? now, finishedAt: now }),
      overrideStatus: verdict,
      overrideReason: reason,
      overriddenAt: now,
      overriddenById: actor.id,
      overriddenByName: actor.name,
      overrideReplaced: reported(e),
    });
    await insertAudit(tx, [audit(actor, now, OVERRIDDEN, { type: 'evaluation', id: e.id }, overrideOf(e), overrideOf(evaluation))]);
    const after = { evaluation, rules: await ruleEvaluationsOf(tx, [e.id]) };
    await appendRevision(tx, after, now);
    queued = await queueNotifications(tx, deps, e, after);
    return after;
  });
  deps.events.publish('evaluation.changed', snapshot);
  if (queued) deps.events.publish('notification.queued', null);
  const e = snapshot.evaluation;
  deps.log.info(
    {
      evaluationId: e.id,
      service: e.service,
      env: e.env,
      status: e.status,
      reportedStatus: verdict,
      replaced: e.overrideReplaced,
      overriddenById: actor.id,
      overriddenByName: actor.name,
    },
    'evaluation overridden',
  );
  logOutcome(deps, before!, snapshot, null);
  return snapshotFor(actor, snapshot);
}

export interface OverrideView {
  verdict: 'pass' | 'fail';
  reason: string;
  at: Date;
  by: { id: string; name: string };
  /** The reported status it replaced. */
  replaced: EvaluationRow['status'];
}

/** The evaluation's override as every transport shows it; null when not overridden. */
export function overrideOfEvaluation(e: EvaluationRow): OverrideView | null {
  if (!e.overrideStatus) return null;
  return {
    verdict: e.overrideStatus,
    reason: e.overrideReason ?? '',
    at: e.overriddenAt ?? e.startedAt,
    by: { id: e.overriddenById ?? '', name: e.overriddenByName ?? '' },
    replaced: e.overrideReplaced ?? e.status,
  };
}

/** Overrides one evaluation may receive; each is kept and shown in its history. */
export const MAX_OVERRIDES_PER_EVALUATION = 20;
const OVERRIDDEN = 'evaluation.overridden';

/**
 * Every override of these evaluations, oldest first (the last is the one in force), from the
 * audit log: overriding again replaces the evaluation's override but not its history. The
 * caller has already read the evaluations, so may see them.
 */
export async function overridesOfEvaluations(deps: Deps, ids: readonly string[]): Promise<Array<{ evaluationId: string; override: OverrideView }>> {
  return (await auditEntriesOf(deps.db, 'evaluation', ids, OVERRIDDEN)).flatMap((entry) => {
    const o = (entry.after as ReturnType<typeof overrideOf> | null)?.override;
    if (!o) return [];
    const override: OverrideView = {
      verdict: o.verdict,
      reason: o.reason ?? '',
      at: new Date(o.at ?? entry.at),
      by: { id: o.byId ?? entry.actorId, name: o.byName ?? entry.actorName },
      replaced: o.replaced ?? 'in_progress',
    };
    return [{ evaluationId: entry.targetId, override }];
  });
}

/** What the audit log keeps of an evaluation around an override. */
function overrideOf(e: EvaluationRow) {
  return {
    status: e.status,
    reportedStatus: reported(e),
    finishedAt: e.finishedAt,
    override: e.overrideStatus
      ? { verdict: e.overrideStatus, reason: e.overrideReason, at: e.overriddenAt, byId: e.overriddenById, byName: e.overriddenByName, replaced: e.overrideReplaced }
      : null,
  };
}

// ---- the engine's writes ----

export type RuleUpdate = Pick<NewRuleEvaluationRow, 'status' | 'reason' | 'evidence' | 'state' | 'nextCheckAt' | 'consecutiveErrors' | 'lastError'>;

/**
 * Records where a rule stands and recomputes its evaluation (the dry-run math), in one
 * transaction, then publishes the result. Returns null when the rule was no longer running
 * (canceled, or finished by a concurrent check), or, given `owner`, when that node no longer
 * holds the evaluation's lease (another node took it over while the check ran).
 */
export async function recordRuleUpdate(deps: Deps, ruleEvaluationId: string, update: RuleUpdate, owner?: string): Promise<EvaluationSnapshot | null> {
  const now = deps.now();
  let before: { evaluation: EvaluationRow; rule: RuleEvaluationRow } | undefined;
  let queued = 0;
  const snapshot = await transaction(deps.db, async (tx) => {
    const { rule, evaluation: e } = (await getRuleWithEvaluation(tx, ruleEvaluationId)) ?? {};
    if (rule?.status !== 'in_progress') return null;
    if (!e || e.finishedAt || (owner !== undefined && e.leaseOwner !== owner)) return null;
    before = { evaluation: e, rule };
    const done = update.status !== 'in_progress';
    await updateRuleEvaluationRow(tx, rule.id, { ...update, finishedAt: done ? now : null, nextCheckAt: done ? null : update.nextCheckAt });
    const rules = await ruleEvaluationsOf(tx, [e.id]);
    const status = realStatus(rules);
    const evaluation = await updateEvaluationRow(tx, e.id, {
      status,
      decidedAt: e.decidedAt ?? (status !== 'in_progress' ? now : null),
      finishedAt: allRulesFinished(rules) ? now : null,
    });
    const after = { evaluation, rules };
    await appendRevision(tx, after, now);
    queued = await queueNotifications(tx, deps, e, after, { before: rule, consecutiveErrors: update.consecutiveErrors, lastError: update.lastError, evidence: update.evidence });
    return after;
  });
  if (snapshot) deps.events.publish('evaluation.changed', snapshot);
  if (queued) deps.events.publish('notification.queued', null);
  if (snapshot && before) logOutcome(deps, before.evaluation, snapshot, before.rule);
  return snapshot;
}
