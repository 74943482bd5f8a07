import SchemaBuilder from '@pothos/core';
import RelayPlugin from '@pothos/plugin-relay';
import ScopeAuthPlugin, { type AuthFailure } from '@pothos/plugin-scope-auth';
import ValidationPlugin from '@pothos/plugin-validation';
import { GraphQLError } from 'graphql';
import { fieldPath } from '../domain/errors.ts';
import { hasScope, SCOPES, type Scope } from '../domain/principal.ts';
import type { Context } from './context.ts';

type ScopeFlags = { [K in Scope]: boolean };

function missingScopes(failure: AuthFailure): string[] {
  if ('scope' in failure) return [failure.scope];
  if ('failures' in failure) return failure.failures.flatMap(missingScopes);
  return [];
}

export const builder = new SchemaBuilder<{
  Context: Context;
  AuthScopes: ScopeFlags;
  DefaultFieldNullability: false;
  DefaultEdgesNullability: false;
  DefaultNodeNullability: false;
  Scalars: {
    DateTime: { Input: Date; Output: Date };
    JSON: { Input: unknown; Output: unknown };
  };
}>({
  plugins: [ScopeAuthPlugin, RelayPlugin, ValidationPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    authorizeOnSubscribe: true,
    // A type's scopes (Gate, Rule, ApiKey…) run with each of its fields (cached per object for
    // the operation), not once in isTypeOf (runScopesOnType): graphql-jit, which runs repeated
    // queries (src/server/compiledQueries.ts), calls isTypeOf without the context, so a type's
    // check there would throw for every object. Compiled, the per-field checks cost less than
    // once per object does on the standard executor.
    authScopes: ({ principal }) => Object.fromEntries(SCOPES.map((s) => [s, hasScope(principal, s)])) as ScopeFlags,
    unauthorizedError: (_parent, context, info, result) => {
      const scopes = [...new Set(missingScopes(result.failure))];
      const what = scopes.length > 0 ? `the ${scopes.join(' or ')} scope` : 'permission';
      return new GraphQLError(`API key "${context.principal.name}" lacks ${what} required for ${info.parentType.name}.${info.fieldName}`, {
        extensions: { code: 'FORBIDDEN', requiredScopes: scopes },
      });
    },
  },
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    edgesFieldOptions: { nullable: false },
    nodeFieldOptions: { nullable: false },
  },
  validation: {
    validationError: (failure) => {
      const first = failure.issues[0];
      const field = fieldPath(first?.path);
      return new GraphQLError(`${field}: ${first?.message ?? 'invalid value'}`, {
        extensions: {
          code: 'BAD_USER_INPUT',
          field,
          issues: failure.issues.map((i) => ({ field: fieldPath(i.path), message: i.message })),
        },
      });
    },
  },
});

/**
 * What a Subscription field's stream starts with, in its `extensions`: every Subscription field
 * declares one of these (test/fanout.test.ts fails for one that does not). A WebSocket
 * subscriber joining a running group of identical subscriptions (src/server/sharedSubscriptions.ts)
 * is sent the group's newest result first only for a stream that starts with the current state.
 */
export const STARTS_WITH_STATE = { startsWithState: true } as const;
/** See STARTS_WITH_STATE: a stream of changes only, from the moment it starts. */
export const CHANGES_ONLY = { startsWithState: false } as const;
