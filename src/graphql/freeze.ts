import { createFreeze, createFreezeInputSchema, endFreeze, type FreezeRow, freezesPageSize, getFreeze, isFreezeActive, listFreezes, MAX_FREEZES_PAGE } from '../domain/freezes.ts';
import { builder } from './builder.ts';

const Freeze = builder.objectRef<FreezeRow>('Freeze').implement({
  description: 'An ad-hoc freeze: while active, freeze rules of its environment (and service) fail. Lifted with endFreeze.',
  authScopes: { 'gates:read': true },
  fields: (t) => ({
    id: t.exposeID('id'),
    env: t.exposeString('env'),
    service: t.exposeString('service', { nullable: true, description: 'null: every service of the environment.' }),
    reason: t.exposeString('reason'),
    startsAt: t.expose('startsAt', { type: 'DateTime' }),
    endsAt: t.expose('endsAt', { type: 'DateTime', nullable: true, description: 'Its planned end; null: until lifted.' }),
    active: t.boolean({ description: 'In force now: started, not past its planned end, not lifted.', resolve: (f, _args, { deps }) => isFreezeActive(f, deps.now()) }),
    endedAt: t.expose('endedAt', { type: 'DateTime', nullable: true, description: 'When it was lifted (endFreeze).' }),
    endedBy: t.exposeString('endedByName', { nullable: true, description: 'The API key that lifted it.' }),
    endReason: t.exposeString('endReason', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    createdBy: t.exposeString('createdByName', { description: 'The API key that set it.' }),
  }),
});

const FreezeFilter = builder.inputType('FreezeFilter', {
  fields: (t) => ({
    envs: t.stringList({ description: 'Any of these environments.' }),
    active: t.boolean({ description: 'true: in force now; false: planned, ended or lifted.' }),
  }),
});

const CreateFreezeInput = builder.inputType('CreateFreezeInput', {
  fields: (t) => ({
    env: t.string({ required: true }),
    service: t.string({ description: 'Only this service; omitted: every service of env.' }),
    reason: t.string({ required: true, description: 'Why deploys stop: shown in the evidence of every rule it fails.' }),
    startsAt: t.field({ type: 'DateTime', description: 'Default now.' }),
    endsAt: t.field({ type: 'DateTime', description: 'Its planned end; omitted: until endFreeze.' }),
  }),
});

builder.queryField('freeze', (t) =>
  t.field({
    type: Freeze,
    nullable: true,
    authScopes: { 'gates:read': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => getFreeze(deps, principal, String(id)),
  }),
);

builder.queryField('freezes', (t) =>
  t.field({
    type: [Freeze],
    description: 'Freezes of the environments the caller may see, newest first.',
    authScopes: { 'gates:read': true },
    args: {
      filter: t.arg({ type: FreezeFilter }),
      first: t.arg.int({ defaultValue: 50, description: `1–${MAX_FREEZES_PAGE}.` }),
      after: t.arg.id({ description: 'The id of the last freeze of the previous page.' }),
    },
    resolve: async (_root, { filter, first, after }, { deps, principal }) =>
      listFreezes(
        deps,
        principal,
        { envs: filter?.envs ?? undefined, active: filter?.active ?? undefined },
        { limit: freezesPageSize(first ?? 50), after: after ? String(after) : undefined },
      ),
  }),
);

builder.mutationField('createFreeze', (t) =>
  t.field({
    type: Freeze,
    description: 'Stops deploys: freeze rules of env (and service) fail while it is active. Audited.',
    authScopes: { 'gates:write': true },
    args: { input: t.arg({ type: CreateFreezeInput, required: true }).validate(createFreezeInputSchema) },
    resolve: async (_root, { input }, { deps, principal }) => createFreeze(deps, principal, input),
  }),
);

builder.mutationField('endFreeze', (t) =>
  t.field({
    type: Freeze,
    description: 'Lifts a freeze now (or cancels one not started): freeze rules waiting on it look again at once. Audited.',
    authScopes: { 'gates:write': true },
    args: {
      id: t.arg.id({ required: true }),
      reason: t.arg.string({ description: 'Why it ends, kept with it (at most 1000 characters).' }),
    },
    resolve: async (_root, { id, reason }, { deps, principal }) => endFreeze(deps, principal, String(id), reason ?? undefined),
  }),
);
