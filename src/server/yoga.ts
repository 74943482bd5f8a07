import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { EnvelopArmor } from '@escape.tech/graphql-armor';
import { usePrometheus } from '@graphql-yoga/plugin-prometheus';
import { createInMemoryCache, useResponseCache } from '@graphql-yoga/plugin-response-cache';
import { GraphQLError, NoSchemaIntrospectionCustomRule } from 'graphql';
import { createYoga, type Plugin, useReadinessCheck, type YogaLogger } from 'graphql-yoga';
import type { Registry } from 'prom-client';
import type { AuthResult } from '../domain/apiKeys.ts';
import { secretFromAuthorization } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { DomainError, RateLimitedError, storageFailure } from '../domain/errors.ts';
import type { KeyWatch } from '../domain/keyWatch.ts';
import type { Principal } from '../domain/principal.ts';
import type { Context } from '../graphql/context.ts';
import { schema } from '../graphql/index.ts';
import type { Logger } from '../log.ts';
import { useCompiledQueries } from './compiledQueries.ts';
import type { Authenticate } from './http.ts';
import { endStreamsWithTheirKey } from './keyStreams.ts';
import { useQueryCostLimit } from './queryCost.ts';
import { authenticateBeforeParsing, hideSuggestions } from './schemaExposure.ts';

/** What a transport hands to the context factory: HTTP has a request, WebSocket a principal. */
export interface ServerContext {
  request?: Request;
  principal?: Principal;
  /** node's request under HTTP, for the client's address. */
  req?: IncomingMessage;
}

export interface YogaOptions {
  deps: Deps;
  authenticate: Authenticate;
  registry: Registry;
  ready: () => Promise<{ ok: boolean; detail: string }>;
  /** Ends the streams of keys that are revoked or expire. */
  keyWatch: KeyWatch;
  /** How the request was authenticated when it arrived, if it was (the rate limiter's answer). */
  admittedAs?: (req: IncomingMessage, secret: string | null) => AuthResult | undefined;
}

export const GRAPHQL_PATH = '/graphql';

/**
 * Expected failures keep their code and the field at fault; anything else is masked so that
 * internals never leak, and logged for the operator.
 */
function maskError() {
  return (error: unknown, message: string): Error => {
    const located = error instanceof GraphQLError ? error : undefined;
    const original = located ? located.originalError : error;
    const storage = storageFailure(original);
    // yoga logs the original error it masks; /readyz names the cause for the operator.
    if (storage) {
      return new GraphQLError(storage.message, {
        nodes: located?.nodes,
        ...locatedIn(located),
        path: located?.path,
        extensions: { code: storage.code, http: { status: 503, headers: { 'Retry-After': String(storage.retryAfterSeconds) } } },
      });
    }
    if (original instanceof DomainError) {
      return new GraphQLError(original.message, {
        nodes: located?.nodes,
        ...locatedIn(located),
        path: located?.path,
        extensions: {
          code: original.code,
          ...(original.field && { field: original.field }),
          // Over HTTP a key over its limit is a 429 with Retry-After, as on every other path.
          ...(original instanceof RateLimitedError && {
            retryAfter: original.retryAfterSeconds,
            http: { status: 429, headers: { 'Retry-After': String(original.retryAfterSeconds) } },
          }),
        },
      });
    }
    // Errors we raise on purpose (auth, validation, limits) are GraphQLErrors already. Those
    // graphql-js and plugins raise without a code (a variable of the wrong type, a bad cursor)
    // are the client's mistakes all the same: they get one, as every expected error does.
    if (located && (!original || original instanceof GraphQLError)) return located.extensions.code ? located : withCode(located, 'BAD_USER_INPUT');
    // yoga logs what it masks, through yogaLogger: once, at error, with the stack.
    return new GraphQLError(message, {
      nodes: located?.nodes,
      ...locatedIn(located),
      path: located?.path,
      extensions: { code: 'INTERNAL_SERVER_ERROR' },
    });
  };
}

/**
 * yoga logs at error every error its masking replaced, clients' mistakes included (a bad id,
 * a forbidden env). Those are refusals the client was told about: one debug line without a
 * stack. Only what nobody expected is an error, with its stack.
 */
function yogaLogger(log: Logger): YogaLogger {
  return {
    // yoga calls debug on every request: nothing is built unless the level is on.
    debug: (...args: unknown[]) => log.isLevelEnabled('debug') && log.debug(args.map(String).join(' ')),
    info: (...args: unknown[]) => log.info(args.map(String).join(' ')),
    warn: (...args: unknown[]) => log.warn(args.map(String).join(' ')),
    error: (...args: unknown[]) => {
      for (const arg of args) {
        let cause = arg;
        while (cause instanceof GraphQLError && cause.originalError) cause = cause.originalError;
        if (cause instanceof DomainError) {
          log.debug({ code: cause.code, field: cause.field, detail: cause.message.slice(0, 500) }, 'operation refused');
        } else if (cause instanceof GraphQLError) {
          log.debug({ code: cause.extensions.code, detail: cause.message.slice(0, 500) }, 'operation refused');
        } else {
          log.error({ err: cause }, 'unexpected error while executing an operation');
        }
      }
    },
  };
}

/** Where an error is in the document, also for errors located by position rather than by node (compiled queries). */
function locatedIn(error: GraphQLError | undefined) {
  return { source: error?.source, positions: error?.positions };
}

function withCode(error: GraphQLError, code: string): GraphQLError {
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: { ...error.extensions, code },
  });
}

/** yoga answers a Content-Type it cannot read with a bare 415: say what to send instead. */
const explainUnsupportedMediaType: Plugin = {
  onResponse: ({ request, response, setResponse, fetchAPI }) => {
    if (response.status !== 415 || response.body !== null) return;
    const sent = (request.headers.get('content-type') ?? 'none').slice(0, 100);
    const message = `Content-Type ${sent} is not supported: send application/json, or GET with query parameters`;
    setResponse(
      new fetchAPI.Response(JSON.stringify({ errors: [{ message, extensions: { code: 'BAD_REQUEST' } }] }), { status: 415, headers: { 'content-type': 'application/json' } }),
    );
  },
};

/**
 * yoga's GET and form parsers JSON.parse `variables` and `extensions` unguarded: a value that is
 * not JSON was answered "Unexpected error." and logged at error with a stack. It is the client's
 * mistake: 400 saying so.
 */
const explainParamsNotJson: Plugin = {
  onRequestParse: ({ requestParser, setRequestParser }) => {
    if (!requestParser) return;
    setRequestParser(async (request) => {
      try {
        return await requestParser(request);
      } catch (err) {
        if (!(err instanceof SyntaxError)) throw err;
        throw new GraphQLError(`variables and extensions must be JSON objects: ${err.message}`, { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });
      }
    });
  },
};

/** yoga's own plugin only looks at HTTP requests; adding the rule at validation covers WebSocket too. */
const disableIntrospection: Plugin = {
  onValidate: ({ addValidationRule }) => addValidationRule(NoSchemaIntrospectionCustomRule),
};

/**
 * Reads are cached per API key and unreachable the moment anything they could contain changes
 * (every configuration write publishes an event). The key is checked on every request,
 * cached or not, so a revoked key is refused at once.
 */
function responseCache(deps: Deps, authenticateRequest: (request: Request, req?: IncomingMessage) => Promise<AuthResult>) {
  const cache = createInMemoryCache();
  // Every configuration change starts a new generation of cache keys. Invalidating by type
  // is not enough: a cached empty list holds no entity of the type it would now contain.
  let generation = 0;
  deps.events.on('config.changed', () => generation++);
  return useResponseCache({
    cache,
    ttl: deps.config.responseCacheTtlMs,
    // Live data is never cached: it changes with every check and every report. The fields that
    // list or find it too, since an empty list or a null holds no entity of its type.
    ttlPerSchemaCoordinate: {
      Evaluation: 0,
      RuleEvaluation: 0,
      EvaluationStats: 0,
      EvaluationFacets: 0,
      EvaluationInsights: 0,
      Monitor: 0,
      MonitorGroup: 0,
      MonitorStateChange: 0,
      'Query.evaluations': 0,
      'Query.evaluation': 0,
      'Query.monitors': 0,
      'Query.monitor': 0,
      'Gate.lastEvaluations': 0,
      // Whether a freeze is active changes with the clock, not only with writes.
      Freeze: 0,
      'Query.freezes': 0,
      'Query.freeze': 0,
      // Deliveries change with every attempt the notifier makes.
      NotificationDelivery: 0,
      'Query.notificationDeliveries': 0,
      'Query.notificationDelivery': 0,
    },
    // HTTP only: WebSocket operations are live by nature and carry no Request to key on.
    enabled: (request?: Request) => request != null && deps.config.responseCacheTtlMs > 0,
    session: async (request: Request, context?: ServerContext) => {
      const auth = await authenticateRequest(request, context?.req);
      // Unauthenticated requests get no cache entry; the context factory refuses them.
      return auth.ok ? auth.principal.id : 'unauthenticated';
    },
    // Synchronous hashing: the default goes through WebCrypto, a tenth of a cached read.
    // Variables in another key order only miss the cache, they never hit a wrong entry.
    buildResponseCacheKey: ({ documentString, operationName, variableValues, sessionId }) =>
      createHash('sha256')
        .update(`${generation}|${documentString}|${operationName ?? ''}|${JSON.stringify(variableValues ?? {})}|${sessionId ?? ''}`)
        .digest('hex'),
  });
}

export function createTollgateYoga({ deps, authenticate, registry, ready, keyWatch, admittedAs }: YogaOptions) {
  const production = deps.config.mode === 'production';
  // Once before the body is read (the answer the request was admitted with, if any) and again
  // after it (`fresh`: a key revoked while the body arrived is refused): the response cache and
  // the context factory both read the latest answer.
  const authByRequest = new WeakMap<Request, Promise<AuthResult>>();
  const authenticateRequest = (request: Request, req?: IncomingMessage, fresh = false): Promise<AuthResult> => {
    const known = fresh ? undefined : authByRequest.get(request);
    if (known) return known;
    const secret = secretFromAuthorization(request.headers.get('authorization'));
    const admitted = !fresh && req ? admittedAs?.(req, secret) : undefined;
    const result = admitted ? Promise.resolve(admitted) : authenticate(secret, req?.socket.remoteAddress);
    authByRequest.set(request, result);
    return result;
  };
  const armor = new EnvelopArmor({
    maxDepth: { n: 12 },
    maxAliases: { n: 20 },
    maxTokens: { n: 2000 },
    maxDirectives: { n: 20 },
    // Cost is ours (src/server/queryCost.ts): armor's ignores `first: $n`, default page sizes and
    // plain lists, and compounds 1.5× per level, so it refused documented pages.
    costLimit: { enabled: false },
    // hideSuggestions strips every kind of suggestion (armor's covers fields only).
    blockFieldSuggestion: { enabled: false },
  });
  return createYoga<ServerContext, Context>({
    schema,
    graphqlEndpoint: GRAPHQL_PATH,
    healthCheckEndpoint: '/healthz',
    landingPage: false,
    // Tollgate serves GraphiQL itself, from its own assets (src/server/graphiql.ts): yoga's loads from a CDN.
    graphiql: false,
    // CORS is buildApp's, for every path from one allow-list (yoga's own reflects any origin with credentials).
    cors: false,
    // A GraphQL request over HTTP is bounded as one over WebSocket is (yoga's default, 25 MB,
    // let a list variable of a million values hold the event loop for over a second).
    maxRequestBodySize: deps.config.wsMaxPayload,
    logging: yogaLogger(deps.log),
    maskedErrors: { maskError: maskError() },
    context: async ({ request, principal, req }): Promise<Context> => {
      if (principal) return { deps, principal };
      const result: AuthResult = request ? await authenticateRequest(request, req) : { ok: false, reason: 'no credentials' };
      if (!result.ok) {
        throw new GraphQLError(result.reason, {
          extensions: { code: 'UNAUTHENTICATED', http: { status: 401, headers: { 'WWW-Authenticate': 'Bearer' } } },
        });
      }
      return { deps, principal: result.principal };
    },
    plugins: [
      authenticateBeforeParsing(authenticateRequest),
      ...(production ? [hideSuggestions] : []),
      // Before the response cache: a refusal ends execution, and the cache expects its execute to run.
      useQueryCostLimit(),
      ...(deps.config.compiledQueries ? [useCompiledQueries(schema)] : []),
      responseCache(deps, authenticateRequest),
      endStreamsWithTheirKey(keyWatch),
      explainUnsupportedMediaType,
      explainParamsNotJson,
      ...armor.protect().plugins,
      ...(production ? [disableIntrospection] : []),
      useReadinessCheck({
        endpoint: '/readyz',
        check: async () => {
          const r = await ready();
          return r.ok ? true : new Response(JSON.stringify({ ready: false, detail: r.detail }), { status: 503 });
        },
      }),
      usePrometheus({
        endpoint: deps.config.metricsPublic ? '/metrics' : false,
        registry,
        // Per-phase histograms cost a fifth of a trivial request; these answer the operator's questions.
        metrics: {
          graphql_envelop_request: true,
          graphql_envelop_request_duration: true,
          graphql_envelop_error_result: true,
          graphql_yoga_http_duration: true,
          graphql_envelop_request_time_summary: false,
          graphql_envelop_phase_parse: false,
          graphql_envelop_phase_validate: false,
          graphql_envelop_phase_context: false,
          graphql_envelop_phase_execute: false,
          graphql_envelop_phase_subscribe: false,
          graphql_envelop_deprecated_field: false,
          graphql_envelop_schema_change: false,
        },
      }),
    ],
  });
}

export type TollgateYoga = ReturnType<typeof createTollgateYoga>;
