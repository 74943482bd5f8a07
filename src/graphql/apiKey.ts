import { type ApiKeyRow, createApiKey, createApiKeyInputSchema, listApiKeys, revokeApiKey } from '../domain/apiKeys.ts';
import { hasScope, type Principal, SCOPES } from '../domain/principal.ts';
import { builder } from './builder.ts';

const ScopeEnum = builder.enumType('Scope', {
  values: {
    GATES_READ: { value: 'gates:read', description: 'Read gates and rules.' },
    GATES_WRITE: { value: 'gates:write', description: 'Create, change and delete gates and rules (includes gates:read).' },
    EVALUATIONS_WRITE: { value: 'evaluations:write', description: 'Trigger, cancel and rerun evaluations.' },
    EVALUATIONS_OVERRIDE: {
      value: 'evaluations:override',
      description: "Override an evaluation's verdict (overrideEvaluation), with a reason; not implied by evaluations:write.",
    },
    MONITORS_WRITE: { value: 'monitors:write', description: 'Manage monitors and report their state.' },
    INGEST: { value: 'ingest', description: 'Send telemetry (OTLP, Alertmanager).' },
    ADMIN: { value: 'admin', description: 'Everything, including API keys.' },
  } as const,
});

const ApiKey = builder.objectRef<ApiKeyRow>('ApiKey').implement({
  authScopes: { admin: true },
  description: 'An API key. Its secret is shown once, at creation, and stored only as a hash.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    prefix: t.exposeString('prefix', { description: 'The first characters of the secret, to tell keys apart.' }),
    scopes: t.field({ type: [ScopeEnum], resolve: (k) => k.scopes as (typeof ScopeEnum.$inferType)[] }),
    envs: t.exposeStringList('envs', { nullable: true, description: 'The environments it may act on; null for all.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', nullable: true }),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true }),
  }),
});

const CreatedApiKey = builder.objectRef<{ key: ApiKeyRow; secret: string }>('CreatedApiKey').implement({
  authScopes: { admin: true },
  fields: (t) => ({
    key: t.field({ type: ApiKey, resolve: (c) => c.key }),
    secret: t.exposeString('secret', { description: 'Shown this once; Tollgate keeps only its hash.' }),
  }),
});

const CreateApiKeyInput = builder.inputType('CreateApiKeyInput', {
  fields: (t) => ({
    name: t.string({ required: true }),
    scopes: t.field({ type: [ScopeEnum], required: true }),
    envs: t.stringList({ description: 'Limit the key to these environments; omit for all.' }),
    expiresAt: t.field({ type: 'DateTime' }),
  }),
});

builder.queryField('apiKeys', (t) =>
  t.field({
    type: [ApiKey],
    authScopes: { admin: true },
    resolve: async (_root, _args, { deps, principal }) => listApiKeys(deps, principal),
  }),
);

builder.mutationField('createApiKey', (t) =>
  t.field({
    type: CreatedApiKey,
    authScopes: { admin: true },
    args: { input: t.arg({ type: CreateApiKeyInput, required: true }).validate(createApiKeyInputSchema) },
    resolve: async (_root, { input }, { deps, principal }) => createApiKey(deps, principal, input),
  }),
);

builder.mutationField('revokeApiKey', (t) =>
  t.field({
    type: ApiKey,
    authScopes: { admin: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => revokeApiKey(deps, principal, String(id)),
  }),
);

const Viewer = builder.objectRef<Principal>('Viewer').implement({
  description: 'The API key making the request, as the server authenticated it (no secret, no hash).',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    scopes: t.field({ type: [ScopeEnum], description: 'The scopes the key was given.', resolve: (p) => [...p.scopes] as (typeof ScopeEnum.$inferType)[] }),
    effectiveScopes: t.field({
      type: [ScopeEnum],
      description: 'Every scope the key acts with: ADMIN grants all, a write scope grants its read.',
      resolve: (p) => SCOPES.filter((scope) => hasScope(p, scope)) as (typeof ScopeEnum.$inferType)[],
    }),
    envs: t.stringList({ nullable: true, description: 'The environments it may see and act on; null for all.', resolve: (p) => (p.envs === null ? null : [...p.envs]) }),
    expiresAt: t.field({ type: 'DateTime', nullable: true, resolve: (p) => p.expiresAt ?? null }),
  }),
});

builder.queryField('viewer', (t) =>
  t.field({
    type: Viewer,
    description: 'Who is asking: any valid key may read itself (the cheapest sign-in check; a bad key gets UNAUTHENTICATED).',
    resolve: (_root, _args, { principal }) => principal,
  }),
);
