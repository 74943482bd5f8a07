import { createContextCache } from '@pothos/core';
import { resolveCursorConnection } from '@pothos/plugin-relay';
import DataLoader from 'dataloader';
import type { GateRow, RuleRow } from '../db/gates.ts';
import type { GateEvent } from '../domain/events.ts';
import {
  checkGateFilter,
  countGates,
  createGate,
  createGateInputSchema,
  deleteGate,
  gatesByIds,
  getGate,
  getGateByKey,
  listGates,
  rulesOf,
  updateGate,
  updateGateInputSchema,
} from '../domain/gates.ts';
import { gateChanges } from '../domain/live.ts';
import { builder, CHANGES_ONLY } from './builder.ts';
import { totalCountFields, withTotalCount } from './connections.ts';
import type { Context } from './context.ts';
import { BATCH_ONLY, childrenLoader } from './loaders.ts';
import { Rule, RuleInput } from './rule.ts';

/** A gate, possibly with its rules already in hand (events carry them). */
type GateView = GateRow & { knownRules?: RuleRow[] };

/** All rules of the gates on one page in a single statement, whatever the page size. */
const rulesLoader = childrenLoader(
  async (ctx, ids) => rulesOf(ctx.deps, ids),
  (rule: RuleRow) => rule.gateId,
);

/** Gates by id, batched: a page of rules asking for their gates costs one statement. */
export const gateLoader = createContextCache(
  (ctx: Context) =>
    new DataLoader<string, GateView>(async (ids) => {
      const byId = new Map((await gatesByIds(ctx.deps, ctx.principal, ids)).map((g) => [g.id, g]));
      return ids.map((id) => byId.get(id) ?? new Error(`gate ${id} does not exist`));
    }, BATCH_ONLY),
);

export const SourceErrorPolicy = builder.enumType('SourceErrorPolicy', {
  description: 'What a rule resolves to when its data source keeps failing.',
  values: { FAIL: { value: 'fail' }, PASS: { value: 'pass' } } as const,
});

export const Gate = builder.objectRef<GateView>('Gate');

Gate.implement({
  authScopes: { 'gates:read': true },
  fields: (t) => ({
    id: t.exposeID('id'),
    service: t.exposeString('service'),
    env: t.exposeString('env'),
    identifier: t.exposeString('identifier'),
    dryRun: t.exposeBoolean('dryRun', { description: 'Report pass to callers whatever the real verdict.' }),
    onSourceError: t.field({ type: SourceErrorPolicy, resolve: (g) => g.onSourceError }),
    rules: t.field({
      type: [Rule],
      resolve: (g, _args, ctx) => g.knownRules ?? rulesLoader(ctx).load(g.id),
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    createdBy: t.exposeString('createdByName'),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    updatedBy: t.exposeString('updatedByName'),
  }),
});

builder.objectField(Rule, 'gate', (t) => t.field({ type: Gate, resolve: (r, _args, ctx) => gateLoader(ctx).load(r.gateId) }));

// Lists, as in EvaluationFilter: the single-valued fields stay for the clients that send them
// (turning `env: String` into a list would refuse documents declaring `$env: String` for it).
const GateFilter = builder.inputType('GateFilter', {
  description: 'Every condition given must hold; a list matches any of its values.',
  fields: (t) => ({
    services: t.stringList(),
    envs: t.stringList(),
    identifiers: t.stringList(),
    dryRun: t.boolean(),
    service: t.string({ deprecationReason: 'Use services, a list.' }),
    env: t.string({ deprecationReason: 'Use envs, a list.' }),
    identifier: t.string({ deprecationReason: 'Use identifiers, a list.' }),
  }),
});

type GateFilterArg =
  | {
      services?: string[] | null;
      envs?: string[] | null;
      identifiers?: string[] | null;
      dryRun?: boolean | null;
      service?: string | null;
      env?: string | null;
      identifier?: string | null;
    }
  | null
  | undefined;

function toGateFilter(f: GateFilterArg) {
  return checkGateFilter({
    services: f?.services ?? undefined,
    envs: f?.envs ?? undefined,
    identifiers: f?.identifiers ?? undefined,
    service: f?.service ?? undefined,
    env: f?.env ?? undefined,
    identifier: f?.identifier ?? undefined,
    dryRun: f?.dryRun ?? undefined,
  });
}

const CreateGateInput = builder.inputType('CreateGateInput', {
  fields: (t) => ({
    service: t.string({ required: true }),
    env: t.string({ required: true }),
    identifier: t.string({ description: 'Several gates per service and env, e.g. `pre-deploy`. Default `default`.' }),
    dryRun: t.boolean({ description: 'Default false.' }),
    onSourceError: t.field({ type: SourceErrorPolicy, description: 'Default FAIL.' }),
    rules: t.field({ type: [RuleInput], description: 'Created with the gate, in one transaction.' }),
  }),
});

const UpdateGateInput = builder.inputType('UpdateGateInput', {
  description: 'Only the given fields change. service, env and identifier cannot change; they are accepted only when equal.',
  fields: (t) => ({
    dryRun: t.boolean(),
    onSourceError: t.field({ type: SourceErrorPolicy }),
    service: t.string(),
    env: t.string(),
    identifier: t.string(),
  }),
});

const GateEventKind = builder.enumType('GateEventKind', {
  values: { CREATED: { value: 'created' }, UPDATED: { value: 'updated' }, DELETED: { value: 'deleted' } } as const,
});

const GateEventRef = builder.objectRef<GateEvent>('GateEvent').implement({
  fields: (t) => ({
    kind: t.field({ type: GateEventKind, resolve: (e) => e.kind }),
    gate: t.field({
      type: Gate,
      description: 'The gate after the change; as it was, for a deletion.',
      resolve: (e) => ({ ...e.gate, knownRules: e.rules }),
    }),
    actor: t.exposeString('actorName'),
    at: t.expose('at', { type: 'DateTime' }),
  }),
});

// ---- root fields ----

builder.queryField('gate', (t) =>
  t.field({
    type: Gate,
    nullable: true,
    authScopes: { 'gates:read': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => getGate(deps, principal, String(id)),
  }),
);

builder.queryField('gateByKey', (t) =>
  t.field({
    type: Gate,
    nullable: true,
    authScopes: { 'gates:read': true },
    args: {
      service: t.arg.string({ required: true }),
      env: t.arg.string({ required: true }),
      identifier: t.arg.string({ defaultValue: 'default' }),
    },
    resolve: async (_root, args, { deps, principal }) => getGateByKey(deps, principal, args.service, args.env, args.identifier ?? 'default'),
  }),
);

builder.queryField('gates', (t) =>
  t.connection(
    {
      type: Gate,
      authScopes: { 'gates:read': true },
      description: 'Gates in creation order.',
      args: { filter: t.arg({ type: GateFilter }) },
      resolve: async (_root, args, { deps, principal }) => {
        const filter = toGateFilter(args.filter);
        return withTotalCount(
          resolveCursorConnection<Promise<GateView[]>>(
            { args, toCursor: (g) => g.id },
            async ({ after, before, limit, inverted }): Promise<GateView[]> => listGates(deps, principal, filter, { after, before, limit, inverted }),
          ),
          async () => countGates(deps, principal, filter),
        );
      },
    },
    { name: 'GateConnection', ...totalCountFields },
    { name: 'GateEdge' },
  ),
);

builder.mutationField('createGate', (t) =>
  t.field({
    type: Gate,
    authScopes: { 'gates:write': true },
    args: { input: t.arg({ type: CreateGateInput, required: true }).validate(createGateInputSchema) },
    resolve: async (_root, { input }, { deps, principal }) => {
      const { gate, rules } = await createGate(deps, principal, input);
      return { ...gate, knownRules: rules };
    },
  }),
);

builder.mutationField('updateGate', (t) =>
  t.field({
    type: Gate,
    authScopes: { 'gates:write': true },
    args: {
      id: t.arg.id({ required: true }),
      input: t.arg({ type: UpdateGateInput, required: true }).validate(updateGateInputSchema),
    },
    resolve: async (_root, { id, input }, { deps, principal }) => updateGate(deps, principal, String(id), input),
  }),
);

builder.mutationField('deleteGate', (t) =>
  t.id({
    authScopes: { 'gates:write': true },
    description: 'Deletes the gate with its rules and returns its id.',
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => deleteGate(deps, principal, String(id)),
  }),
);

builder.subscriptionField('gateEvents', (t) =>
  t.field({
    extensions: CHANGES_ONLY,
    type: GateEventRef,
    authScopes: { 'gates:read': true },
    description: 'Gates created, updated (including their rules) and deleted, for live configuration views.',
    args: { filter: t.arg({ type: GateFilter }) },
    subscribe: (_root, args, { deps, principal }) => gateChanges(deps, principal, toGateFilter(args.filter)),
    resolve: (e) => e,
  }),
);
