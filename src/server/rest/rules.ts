// Rules of a gate: /deployment_gates/{gate_id}/rules[/{id}], and the rule shape every REST
// endpoint reads and writes ({type, name, dry_run, options} with snake_case options).
import type { z } from 'zod';
import type { RuleRow } from '../../db/gates.ts';
import type { RuleType } from '../../db/schema.ts';
import type { Deps } from '../../domain/deps.ts';
import { DomainError, parseInput } from '../../domain/errors.ts';
import { createRule, deleteRule, getGate, getRule, ruleInputSchema, rulesOf, updateRule, updateRuleInputSchema } from '../../domain/gates.ts';
import type { Principal } from '../../domain/principal.ts';
import { ruleOptionsInputSchema } from '../../domain/ruleOptions.ts';
import { publicRuleOptions } from '../../domain/ruleStorage.ts';
import { HttpError, isJsonObject } from '../http.ts';
import { decode, decodeFields, encode, fieldSchema } from './codec.ts';
import { attributesOf, type Route, route, uuidParam } from './request.ts';
import { user } from './users.ts';

/**
 * The rule types REST takes, by Datadog's `type` string, each with the key of its options in
 * the domain's rule options input (the GraphQL `@oneOf`). Adding a rule type to REST is one
 * line here; its options and their names come from that key's schema.
 */
const RULE_TYPES = {
  monitor: 'monitor',
  faulty_deployment_detection: 'faultyDeploymentDetection',
  metric: 'metric',
  webhook: 'webhook',
  freeze: 'freeze',
} as const satisfies Record<RuleType, string>;

const OPTIONS_SCHEMAS = new Map<string, z.ZodType>(
  Object.entries(RULE_TYPES).map(([type, key]) => {
    const schema = fieldSchema(ruleOptionsInputSchema, key);
    if (!schema) throw new Error(`REST rule type ${type}: the rule options input has no "${key}"`);
    return [type, schema];
  }),
);

/** The domain's keys of the rule options input: a path `options.monitor` is `options` on the wire. */
export const OPTIONS_KEYS: readonly string[] = Object.values(RULE_TYPES);

const isRuleType = (type: unknown): type is keyof typeof RULE_TYPES => typeof type === 'string' && Object.hasOwn(RULE_TYPES, type);

const listed = (items: string[]) => (items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`);

/**
 * A wire rule as the domain's rule input (`where` is its path in the body); a just-in-time
 * rule's type error keeps Datadog's wording.
 */
export function ruleFromWire(rule: unknown, where: string, jitIndex?: number): Record<string, unknown> {
  const r = isJsonObject(rule) ? rule : {};
  if (!isRuleType(r.type)) {
    const prefix = jitIndex === undefined ? `${where}.type` : `invalid configuration: invalid rule at index ${jitIndex}`;
    throw new DomainError('BAD_USER_INPUT', `${prefix}: invalid rule type: ${String(r.type)} (must be ${listed(Object.keys(RULE_TYPES))})`, `${where}.type`);
  }
  const options = r.options ?? {};
  if (!isJsonObject(options)) throw new DomainError('BAD_USER_INPUT', `${where}.options: must be an object`, `${where}.options`);
  return {
    ...decodeFields(ruleInputSchema, r, ['name', 'dryRun'], where),
    options: { [RULE_TYPES[r.type]]: decode(OPTIONS_SCHEMAS.get(r.type)!, options, `${where}.options`) },
  };
}

/** A rule's options (as stored, or as evaluated) in the wire's names; unset options and secrets left out. */
export const optionsToWire = (rule: Pick<RuleRow, 'type' | 'options'>): unknown => encode(OPTIONS_SCHEMAS.get(rule.type), publicRuleOptions(rule));

function ruleAttributes(r: RuleRow) {
  return {
    gate_id: r.gateId,
    name: r.name,
    type: r.type,
    dry_run: r.dryRun,
    options: optionsToWire(r),
    created_at: r.createdAt.toISOString(),
    created_by: user(r.createdById, r.createdByName),
    updated_at: r.updatedAt.toISOString(),
    updated_by: user(r.updatedById, r.updatedByName),
  };
}

const ruleToWire = (r: RuleRow) => ({ id: r.id, type: 'deployment_rule', attributes: ruleAttributes(r) });

async function ruleOfGate(deps: Deps, principal: Principal, params: Record<string, string>): Promise<RuleRow> {
  const gateId = uuidParam(params.gate_id!, 'gate_id');
  const rule = await getRule(deps, principal, uuidParam(params.id!));
  if (!rule || rule.gateId !== gateId) throw new HttpError(404, 'Rule does not exist');
  return rule;
}

export const ruleRoutes: Route[] = [
  route('POST', '/deployment_gates/{gate_id}/rules', async ({ deps, principal, params, body }) => {
    const input = parseInput(ruleInputSchema, ruleFromWire(attributesOf(body), 'data.attributes'));
    return { status: 200, body: { data: ruleToWire(await createRule(deps, principal, uuidParam(params.gate_id!, 'gate_id'), input)) } };
  }),

  route('GET', '/deployment_gates/{gate_id}/rules', async ({ deps, principal, params }) => {
    const gateId = uuidParam(params.gate_id!, 'gate_id');
    if (!(await getGate(deps, principal, gateId))) throw new HttpError(404, 'Gate does not exist');
    // Datadog's shape: one object for the gate, its rules as attributes (each with its id here).
    return {
      status: 200,
      body: { data: { id: gateId, type: 'list_deployment_rules', attributes: { rules: (await rulesOf(deps, [gateId])).map((r) => ({ id: r.id, ...ruleAttributes(r) })) } } },
    };
  }),

  route('GET', '/deployment_gates/{gate_id}/rules/{id}', async ({ deps, principal, params }) => ({
    status: 200,
    body: { data: ruleToWire(await ruleOfGate(deps, principal, params)) },
  })),

  route('PUT', '/deployment_gates/{gate_id}/rules/{id}', async ({ deps, principal, params, body }) => {
    const rule = await ruleOfGate(deps, principal, params);
    const a = attributesOf(body);
    // The type cannot change: options are read as the stored rule's type unless the body names one.
    const options = a.options === undefined ? undefined : (ruleFromWire({ type: a.type ?? rule.type, options: a.options }, 'data.attributes').options as unknown);
    const input = parseInput(updateRuleInputSchema, { ...decodeFields(updateRuleInputSchema, a, ['name', 'dryRun'], 'data.attributes'), options });
    return { status: 200, body: { data: ruleToWire(await updateRule(deps, principal, rule.id, input)) } };
  }),

  route('DELETE', '/deployment_gates/{gate_id}/rules/{id}', async ({ deps, principal, params }) => {
    await deleteRule(deps, principal, (await ruleOfGate(deps, principal, params)).id);
    return { status: 204 };
  }),
];
