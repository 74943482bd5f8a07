import type { IncomingMessage } from 'node:http';
import { type ExecutionResult, GraphQLError } from 'graphql';
import { isAsyncIterable, type Plugin } from 'graphql-yoga';
import type { AuthResult } from '../domain/apiKeys.ts';

/**
 * Every GraphQL request over HTTP (SSE included) is authenticated before its body is read or
 * its document parsed: a caller without a valid key learns nothing about the schema, not even
 * whether its document was well formed. WebSocket connections authenticate at connection_init,
 * before any operation is read. Once the body is in, the key is checked again (`fresh`): one
 * revoked or expired while the body was still arriving neither acts nor reads a cached response.
 */
export function authenticateBeforeParsing(authenticateRequest: (request: Request, req?: IncomingMessage, fresh?: boolean) => Promise<AuthResult>): Plugin {
  return {
    onRequestParse: async ({ request, serverContext, endResponse, fetchAPI }) => {
      // Under node's HTTP server, yoga's server context carries node's request.
      const req = (serverContext as { req?: IncomingMessage } | undefined)?.req;
      const result = await authenticateRequest(request, req);
      // The context factory and the response cache read the fresh answer and refuse a failed one.
      if (result.ok) return { onRequestParseDone: () => void authenticateRequest(request, req, true).catch(() => {}) };
      const body = JSON.stringify({ errors: [{ message: result.reason, extensions: { code: 'UNAUTHENTICATED' } }] });
      endResponse(
        new fetchAPI.Response(body, {
          status: 401,
          headers: { 'content-type': 'application/json; charset=utf-8', 'WWW-Authenticate': 'Bearer' },
        }),
      );
    },
  };
}

/** graphql-js appends ` Did you mean "a", "b" or "c"?` (or `the enum value "A"`) to a message. */
const SUGGESTION = /\s*Did you mean [^?]*\?/g;

function withoutSuggestion<E extends Error>(error: E): E | GraphQLError {
  if (!(error instanceof GraphQLError)) return error;
  const message = error.message.replace(SUGGESTION, '');
  if (message === error.message) return error;
  return new GraphQLError(message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: error.extensions,
  });
}

function resultWithoutSuggestions<R>(result: R, setResult: (r: R) => void): void {
  if (isAsyncIterable(result)) return; // a stream's events come from resolvers, not from reading the document
  const errors = (result as ExecutionResult).errors;
  if (errors?.length) setResult({ ...result, errors: errors.map(withoutSuggestion) });
}

/**
 * No "Did you mean …" in production: suggestions map the schema for whoever probes it. graphql-js
 * makes them for fields, arguments, types and input fields at validation, and for enum values and
 * input fields while reading variables, so both places are covered, on every transport.
 */
export const hideSuggestions: Plugin = {
  onValidate:
    () =>
    ({ result, setResult }) => {
      if (result.length > 0) setResult(result.map(withoutSuggestion));
    },
  onExecute: () => ({ onExecuteDone: ({ result, setResult }) => resultWithoutSuggestions(result, setResult) }),
  onSubscribe: () => ({ onSubscribeResult: ({ result, setResult }) => resultWithoutSuggestions(result, setResult) }),
};
