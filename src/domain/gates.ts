import { z } from 'zod';
import { insertAudit } from '../db/audit.ts';
import { type KeysetPage, transaction } from '../db/client.ts';
import {
  countGates as countGateRows,
  deleteGateRow,
  deleteRuleRow,
  type GateFilter,
  type GateRow,
  getGateByKey as getGateByKeyRow,
  getGate as getGateRow,
  getGates as getGateRows,
  getRule as getRuleRow,
  insertGate,
  insertRules,
  listGateIds,
  type NewRuleRow,
  type RuleRow,
  rulesOfGates,
  updateGateRow,
  updateRuleRow,
} from '../db/gates.ts';
import { actorFields } from '../log.ts';
import type { Deps } from './deps.ts';
import { badInput, conflict, DomainError, notFound, uniqueViolation } from './errors.ts';
import type { GateEventKind } from './events.ts';
import { assertUuid, newId } from './ids.ts';
import { assertEnvAllowed, canSeeEnv, type Principal, requireScope } from './principal.ts';
import { nullsAsUndefined, ruleOptionsInputSchema, type TypedRuleOptions } from './ruleOptions.ts';
import { storedRuleOptions } from './ruleStorage.ts';
import { audit, stamp } from './stamp.ts';

// ---- input schemas: the one definition of a valid gate and rule. Every entry point parses
// with them (GraphQL through Pothos' validation plugin, REST and gates-as-code with
// parseInput), and the domain functions below take only parsed input. ----

export const tagValue = (what: string) =>
  z
    .string({ message: `${what} is required` })
    .trim()
    .min(1, `${what} must not be empty`)
    .max(200, `${what} is at most 200 characters`)
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/, `${what} may hold letters, digits and _ . : / - only`);

const ruleNameSchema = z.string({ message: 'name is required' }).trim().min(1, 'name must not be empty').max(200, 'name is at most 200 characters');

export const sourceErrorPolicySchema = z.enum(['fail', 'pass'], { message: 'onSourceError must be fail or pass' });

export const ruleInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      name: ruleNameSchema,
      dryRun: z.boolean().default(false),
      options: ruleOptionsInputSchema,
    })
    .strict(),
);
export type RuleInput = z.output<typeof ruleInputSchema>;

export const createGateInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      service: tagValue('service'),
      env: tagValue('env'),
      identifier: tagValue('identifier').default('default'),
      dryRun: z.boolean().default(false),
      onSourceError: sourceErrorPolicySchema.default('fail'),
      rules: z.array(ruleInputSchema).max(50, 'a gate holds at most 50 rules').default([]),
    })
    .strict()
    .superRefine((g, ctx) => {
      const seen = new Set<string>();
      g.rules.forEach((r, i) => {
        if (seen.has(r.name)) {
          ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name "${r.name}" in this gate` });
        }
        seen.add(r.name);
      });
    }),
);

export const updateGateInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      dryRun: z.boolean().optional(),
      onSourceError: sourceErrorPolicySchema.optional(),
      // Accepted so a client may send the whole gate back; they must not change.
      service: z.string().optional(),
      env: z.string().optional(),
      identifier: z.string().optional(),
    })
    .strict(),
);
export type UpdateGateInput = z.output<typeof updateGateInputSchema>;

export const updateRuleInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      name: ruleNameSchema.optional(),
      dryRun: z.boolean().optional(),
      options: ruleOptionsInputSchema.optional(),
    })
    .strict(),
);

export type UpdateRuleInput = z.output<typeof updateRuleInputSchema>;
export type CreateGateInput = z.output<typeof createGateInputSchema>;

// ---- views ----

export interface GateWithRules {
  gate: GateRow;
  rules: RuleRow[];
}

// ---- reads ----

/** Null for a gate of an environment the actor cannot see, exactly as for one that does not exist. */
export async function getGate(deps: Deps, actor: Principal, id: string): Promise<GateRow | null> {
  requireScope(actor, 'gates:read', 'read gates');
  const gate = await getGateRow(deps.db, assertUuid(id, 'id'));
  return gate && canSeeEnv(actor, gate.env) ? gate : null;
}

export async function getGateByKey(deps: Deps, actor: Principal, service: string, env: string, identifier = 'default'): Promise<GateRow | null> {
  requireScope(actor, 'gates:read', 'read gates');
  assertEnvAllowed(actor, env);
  return (await getGateByKeyRow(deps.db, service, env, identifier)) ?? null;
}

export async function listGates(deps: Deps, actor: Principal, filter: GateFilter, page: KeysetPage): Promise<GateRow[]> {
  requireScope(actor, 'gates:read', 'read gates');
  if (page.after) assertUuid(page.after, 'after');
  if (page.before) assertUuid(page.before, 'before');
  // The page's ids from the database (its filters and order), the rows as kept between reads.
  return keptGates(deps, await listGateIds(deps.db, { ...filter, envs: actor.envs }, page));
}

/** Values a gate filter list may hold, as EvaluationFilter's (not imported: evaluations.ts imports this module). */
const MAX_GATE_FILTER_VALUES = 100;
function boundedFilterList(values: string[] | undefined, field: string): string[] | undefined {
  if (values && values.length > MAX_GATE_FILTER_VALUES) throw badInput(field, `lists at most ${MAX_GATE_FILTER_VALUES} values, got ${values.length}`);
  return values;
}

/** The API's gate filter, its lists bounded, as the repository takes it. */
export function checkGateFilter(f: {
  services?: string[];
  envs?: string[];
  identifiers?: string[];
  service?: string;
  env?: string;
  identifier?: string;
  dryRun?: boolean;
}): GateFilter {
  return {
    serviceIn: boundedFilterList(f.services, 'filter.services'),
    envIn: boundedFilterList(f.envs, 'filter.envs'),
    identifierIn: boundedFilterList(f.identifiers, 'filter.identifiers'),
    service: f.service,
    env: f.env,
    identifier: f.identifier,
    dryRun: f.dryRun,
  };
}

/** How many gates the filter selects among those the caller may see. */
export async function countGates(deps: Deps, actor: Principal, filter: GateFilter): Promise<number> {
  requireScope(actor, 'gates:read', 'read gates');
  return countGateRows(deps.db, { ...filter, envs: actor.envs });
}

/** Batched for loaders: one statement for any number of gates. Only gates the caller may see. */
export async function gatesByIds(deps: Deps, actor: Principal, ids: readonly string[]): Promise<GateRow[]> {
  requireScope(actor, 'gates:read', 'read gates');
  return (await getGateRows(deps.db, ids)).filter((g) => canSeeEnv(actor, g.env));
}

/**
 * Gate rows and the rules of each gate, kept between reads (every uncached page of gates read,
 * mapped and parsed them again: two fifths of its CPU, with the garbage). They change only
 * through this module's writes, each of which publishes config.changed after its commit, which
 * drops them all (as it drops the response cache). Frozen: no reader changes what the next gets.
 */
interface Kept {
  gates: Map<string, GateRow>;
  rules: Map<string, readonly RuleRow[]>;
  ruleWeight: number;
  /**
   * Bumped by every config.changed. A read during which it moved may hold rows older than the
   * change (read before the write committed, its event arriving while the rows were on their
   * way, as it may from another instance through Redis): such a read is answered, not kept, or
   * it would be served until the next change.
   */
  generation: number;
}
const keptOf = new WeakMap<Deps, Kept>();
/** Gates kept at most; past it, the map starts over. */
const MAX_GATES_KEPT = 10_000;
/**
 * Rules kept at most, by weight: 1 per rule and 1 per entry of its lists (FDD resources of up
 * to 500 characters, up to 1,000 of them, monitor ids), so memory stays bounded (tens of MB)
 * however large the options; past it, the rules start over.
 */
const MAX_RULE_WEIGHT_KEPT = 100_000;

function kept(deps: Deps): Kept {
  let k = keptOf.get(deps);
  if (!k) {
    const fresh: Kept = { gates: new Map(), rules: new Map(), ruleWeight: 0, generation: 0 };
    deps.events.on('config.changed', () => {
      fresh.generation++;
      fresh.gates.clear();
      fresh.rules.clear();
      fresh.ruleWeight = 0;
    });
    keptOf.set(deps, (k = fresh));
  }
  return k;
}

function ruleWeight(rule: RuleRow): number {
  let weight = 1;
  for (const value of Object.values(rule.options ?? {})) if (Array.isArray(value)) weight += value.length;
  return weight;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Gates by id, read once and kept until a configuration change, as their rules (below). The
 * answer is what was kept when asked plus what was read: a change during the read empties the
 * maps, and must not take the kept rows out of this answer.
 */
async function keptGates(deps: Deps, ids: readonly string[]): Promise<GateRow[]> {
  const k = kept(deps);
  const found = new Map<string, GateRow>();
  const missing: string[] = [];
  for (const id of ids) {
    const gate = k.gates.get(id);
    if (gate) found.set(id, gate);
    else missing.push(id);
  }
  if (missing.length > 0) {
    const generation = k.generation;
    const read = await getGateRows(deps.db, missing);
    const keep = k.generation === generation;
    if (keep && k.gates.size + read.length > MAX_GATES_KEPT) k.gates.clear();
    for (const gate of read) {
      found.set(gate.id, deepFreeze(gate));
      if (keep) k.gates.set(gate.id, gate);
    }
  }
  return ids.flatMap((id) => found.get(id) ?? []);
}

/** Batched for loaders: at most one statement for any number of gates, none when all are kept. */
export async function rulesOf(deps: Deps, gateIds: readonly string[]): Promise<RuleRow[]> {
  const k = kept(deps);
  const found = new Map<string, readonly RuleRow[]>();
  const missing = new Set<string>();
  for (const id of gateIds) {
    const rules = k.rules.get(id);
    if (rules) found.set(id, rules);
    else missing.add(id);
  }
  if (missing.size > 0) {
    const generation = k.generation;
    const read = new Map<string, RuleRow[]>([...missing].map((id) => [id, []]));
    let weight = 0;
    for (const rule of await rulesOfGates(deps.db, [...missing])) {
      read.get(rule.gateId)?.push(deepFreeze(rule));
      weight += ruleWeight(rule);
    }
    // A read heavier than everything that may be kept is answered, not kept; so is one a
    // configuration change overtook (see Kept.generation).
    const keep = k.generation === generation && weight <= MAX_RULE_WEIGHT_KEPT;
    if (keep && k.ruleWeight + weight > MAX_RULE_WEIGHT_KEPT) {
      k.rules.clear();
      k.ruleWeight = 0;
    }
    for (const [id, rules] of read) {
      Object.freeze(rules);
      found.set(id, rules);
      if (keep) k.rules.set(id, rules);
    }
    if (keep) k.ruleWeight += weight;
  }
  return gateIds.flatMap((id) => found.get(id) ?? []);
}

export async function getRule(deps: Deps, actor: Principal, id: string): Promise<RuleRow | null> {
  requireScope(actor, 'gates:read', 'read rules');
  const rule = await getRuleRow(deps.db, assertUuid(id, 'id'));
  if (!rule) return null;
  const gate = await getGateRow(deps.db, rule.gateId);
  return gate && canSeeEnv(actor, gate.env) ? rule : null;
}

// ---- writes: one transaction each, audit inside it, event after commit ----

/**
 * A PromQL query reads every environment's series, so only a key for every environment may
 * write one into a rule, as into a PROMETHEUS monitor (a key of one environment may send back
 * the queries a rule already has, to change its other options). A PromQL rule also needs the
 * Prometheus this Tollgate asks. `field(i)` is rule i's path in the request.
 */
export function assertMetricRulesAllowed(
  deps: Deps,
  actor: Principal,
  rules: ReadonlyArray<{ options: TypedRuleOptions }>,
  field: (i: number) => string,
  before?: Record<string, unknown>,
): void {
  rules.forEach((r, i) => {
    if (r.options.type !== 'metric' || r.options.options.query === undefined) return;
    const o = r.options.options;
    const at = `${field(i)}.options.metric.query`;
    if (!deps.config.prometheusUrl) throw badInput(at, 'this Tollgate has no Prometheus to ask (TOLLGATE_PROMETHEUS_URL is not set)');
    if (actor.envs === null || (before && before.query === o.query && before.baselineQuery === o.baselineQuery)) return;
    throw new DomainError(
      'FORBIDDEN',
      `API key "${actor.name}" is limited to env ${actor.envs.join(', ')}; a PromQL query is not, so only a key for every environment may write one`,
      at,
    );
  });
}

/** `field` names the rule's options in errors (what only the server's configuration can refuse). */
function ruleRow(deps: Deps, gateId: string, input: RuleInput, actor: Principal, now: Date, field: string): NewRuleRow {
  return {
    id: newId(),
    gateId,
    name: input.name,
    type: input.options.type,
    dryRun: input.dryRun,
    options: storedRuleOptions(deps, input.options, field),
    ...stamp(actor, now),
  };
}

/** One info line per committed change, for the operator. */
function logChange(deps: Deps, what: string, actor: Principal, gate: GateRow, extra: Record<string, unknown> = {}): void {
  deps.log.info({ gateId: gate.id, service: gate.service, env: gate.env, identifier: gate.identifier, ...extra, ...actorFields(actor) }, what);
}

function publishGate(deps: Deps, kind: GateEventKind, actor: Principal, value: GateWithRules, at: Date): void {
  deps.events.publish('config.changed', null);
  deps.events.publish('gate.events', { kind, gate: value.gate, rules: value.rules, actorName: actor.name, at });
}

export async function createGate(deps: Deps, actor: Principal, input: CreateGateInput): Promise<GateWithRules> {
  requireScope(actor, 'gates:write', 'create gates');
  assertEnvAllowed(actor, input.env);
  assertMetricRulesAllowed(deps, actor, input.rules, (i) => `input.rules[${i}]`);
  const now = deps.now();
  const id = newId();
  let result: GateWithRules;
  try {
    result = await transaction(deps.db, async (tx) => {
      if (await getGateByKeyRow(tx, input.service, input.env, input.identifier)) throw duplicateGate(input);
      const gate = await insertGate(tx, {
        id,
        service: input.service,
        env: input.env,
        identifier: input.identifier,
        dryRun: input.dryRun,
        onSourceError: input.onSourceError,
        ...stamp(actor, now),
      });
      const rules = await insertRules(
        tx,
        input.rules.map((r, i) => ruleRow(deps, id, r, actor, now, `input.rules[${i}].options`)),
      );
      await insertAudit(tx, [audit(actor, now, 'gate.created', { type: 'gate', id }, null, { gate, rules })]);
      return { gate, rules };
    });
  } catch (err) {
    // Another process may have created the same gate between our check and our insert.
    if (uniqueViolation(err, { name: 'gates_key_unique', columns: 'gates.service' })) throw duplicateGate(input);
    throw err;
  }
  publishGate(deps, 'created', actor, result, now);
  logChange(deps, 'gate created', actor, result.gate, { rules: result.rules.length });
  return result;
}

function duplicateGate(g: { service: string; env: string; identifier: string }): DomainError {
  return conflict(`a gate already exists for service ${g.service}, env ${g.env} and identifier ${g.identifier}`, 'input.identifier');
}

export async function updateGate(deps: Deps, actor: Principal, id: string, input: UpdateGateInput): Promise<GateRow> {
  requireScope(actor, 'gates:write', 'update gates');
  const now = deps.now();
  const result = await transaction(deps.db, async (tx) => {
    const before = await loadGateIn(tx, actor, id);
    for (const key of ['service', 'env', 'identifier'] as const) {
      if (input[key] !== undefined && input[key] !== before[key]) {
        throw badInput(`input.${key}`, `${key} cannot change after creation (it is ${before[key]}); create a new gate instead`);
      }
    }
    const gate = await updateGateRow(tx, before.id, {
      ...(input.dryRun !== undefined && { dryRun: input.dryRun }),
      ...(input.onSourceError !== undefined && { onSourceError: input.onSourceError }),
      updatedAt: now,
      updatedById: actor.id,
      updatedByName: actor.name,
    });
    await insertAudit(tx, [audit(actor, now, 'gate.updated', { type: 'gate', id: gate.id }, before, gate)]);
    return { gate, rules: await rulesOfGates(tx, [gate.id]) };
  });
  publishGate(deps, 'updated', actor, result, now);
  logChange(deps, 'gate updated', actor, result.gate, { dryRun: result.gate.dryRun, onSourceError: result.gate.onSourceError });
  return result.gate;
}

export async function deleteGate(deps: Deps, actor: Principal, id: string): Promise<string> {
  requireScope(actor, 'gates:write', 'delete gates');
  const now = deps.now();
  const result = await transaction(deps.db, async (tx) => {
    const gate = await loadGateIn(tx, actor, id);
    const rules = await rulesOfGates(tx, [gate.id]);
    await deleteGateRow(tx, gate.id); // rules go with it (ON DELETE CASCADE)
    await insertAudit(tx, [audit(actor, now, 'gate.deleted', { type: 'gate', id: gate.id }, { gate, rules }, null)]);
    return { gate, rules };
  });
  publishGate(deps, 'deleted', actor, result, now);
  logChange(deps, 'gate deleted', actor, result.gate, { rules: result.rules.length });
  return result.gate.id;
}

export async function createRule(deps: Deps, actor: Principal, gateId: string, input: RuleInput): Promise<RuleRow> {
  requireScope(actor, 'gates:write', 'create rules');
  const now = deps.now();
  const result = await transaction(deps.db, async (tx) => {
    const gate = await loadGateIn(tx, actor, gateId, 'gateId');
    assertMetricRulesAllowed(deps, actor, [input], () => 'input');
    const existing = await rulesOfGates(tx, [gate.id]);
    if (existing.some((r) => r.name === input.name)) {
      throw conflict(`gate ${gate.id} already has a rule named "${input.name}"`, 'input.name');
    }
    if (existing.length >= 50) throw badInput('gateId', 'a gate holds at most 50 rules');
    const [rule] = await insertRules(tx, [ruleRow(deps, gate.id, input, actor, now, 'input.options')]);
    const gateRow = await touchGate(tx, gate, actor, now);
    await insertAudit(tx, [audit(actor, now, 'rule.created', { type: 'rule', id: rule!.id }, null, rule)]);
    return { rule: rule!, gate: { gate: gateRow, rules: [...existing, rule!] } };
  });
  publishGate(deps, 'updated', actor, result.gate, now);
  logChange(deps, 'rule created', actor, result.gate.gate, { ruleId: result.rule.id, rule: result.rule.name });
  return result.rule;
}

export async function updateRule(deps: Deps, actor: Principal, id: string, input: UpdateRuleInput): Promise<RuleRow> {
  requireScope(actor, 'gates:write', 'update rules');
  const now = deps.now();
  const result = await transaction(deps.db, async (tx) => {
    const { rule: before, gate } = await loadRuleIn(tx, actor, id);
    if (input.options && input.options.type !== before.type) {
      throw badInput('input.options', `a rule's type cannot change (this rule is ${before.type}); delete it and create a ${input.options.type} rule`);
    }
    if (input.options) assertMetricRulesAllowed(deps, actor, [{ options: input.options }], () => 'input', before.options);
    const siblings = await rulesOfGates(tx, [gate.id]);
    if (input.name !== undefined && siblings.some((r) => r.id !== before.id && r.name === input.name)) {
      throw conflict(`gate ${gate.id} already has a rule named "${input.name}"`, 'input.name');
    }
    const rule = await updateRuleRow(tx, before.id, {
      ...(input.name !== undefined && { name: input.name }),
      ...(input.dryRun !== undefined && { dryRun: input.dryRun }),
      ...(input.options !== undefined && { options: storedRuleOptions(deps, input.options, 'input.options', before) }),
      updatedAt: now,
      updatedById: actor.id,
      updatedByName: actor.name,
    });
    const gateRow = await touchGate(tx, gate, actor, now);
    await insertAudit(tx, [audit(actor, now, 'rule.updated', { type: 'rule', id: rule.id }, before, rule)]);
    return { rule, gate: { gate: gateRow, rules: siblings.map((r) => (r.id === rule.id ? rule : r)) } };
  });
  publishGate(deps, 'updated', actor, result.gate, now);
  logChange(deps, 'rule updated', actor, result.gate.gate, { ruleId: result.rule.id, rule: result.rule.name });
  return result.rule;
}

export async function deleteRule(deps: Deps, actor: Principal, id: string): Promise<string> {
  requireScope(actor, 'gates:write', 'delete rules');
  const now = deps.now();
  const result = await transaction(deps.db, async (tx) => {
    const { rule, gate } = await loadRuleIn(tx, actor, id);
    await deleteRuleRow(tx, rule.id);
    const gateRow = await touchGate(tx, gate, actor, now);
    await insertAudit(tx, [audit(actor, now, 'rule.deleted', { type: 'rule', id: rule.id }, rule, null)]);
    return { rule, gate: { gate: gateRow, rules: await rulesOfGates(tx, [gate.id]) } };
  });
  publishGate(deps, 'updated', actor, result.gate, now);
  logChange(deps, 'rule deleted', actor, result.gate.gate, { ruleId: result.rule.id, rule: result.rule.name });
  return result.rule.id;
}

// A rule change is a change of its gate: updated_at/by move and gateEvents say "updated".
async function touchGate(tx: Parameters<typeof updateGateRow>[0], gate: GateRow, actor: Principal, now: Date): Promise<GateRow> {
  return updateGateRow(tx, gate.id, { updatedAt: now, updatedById: actor.id, updatedByName: actor.name });
}

/** A gate of an environment the actor cannot see is not found, in the same words as a missing one. */
async function loadGateIn(tx: Parameters<typeof getGateRow>[0], actor: Principal, id: string, field = 'id'): Promise<GateRow> {
  const gate = await getGateRow(tx, assertUuid(id, field));
  if (!gate || !canSeeEnv(actor, gate.env)) throw notFound(`gate ${id} does not exist`, field);
  return gate;
}

/** The same for a rule: its gate's environment decides, and the answer names the rule, never the gate. */
async function loadRuleIn(tx: Parameters<typeof getGateRow>[0], actor: Principal, id: string): Promise<{ rule: RuleRow; gate: GateRow }> {
  const rule = await getRuleRow(tx, assertUuid(id, 'id'));
  const gate = rule && (await getGateRow(tx, rule.gateId));
  if (!rule || !gate || !canSeeEnv(actor, gate.env)) throw notFound(`rule ${id} does not exist`, 'id');
  return { rule, gate };
}
