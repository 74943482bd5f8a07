import type { Server } from 'node:http';
import { type DocumentNode, GraphQLError, getOperationAST, Kind, type OperationDefinitionNode } from 'graphql';
import { CloseCode } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { isAsyncIterable } from 'graphql-yoga';
import type { Counter, Gauge } from 'prom-client';
import { WebSocketServer } from 'ws';
import { secretFromAuthorization } from '../domain/apiKeys.ts';
import type { KeyWatch } from '../domain/keyWatch.ts';
import type { Principal } from '../domain/principal.ts';
import type { Logger } from '../log.ts';
import type { Authenticate } from './http.ts';
import type { OriginPolicy } from './origins.ts';
import { type RateLimits, rateLimitedError, WS_RATE_LIMITED } from './rateLimit.ts';
import { createSharedSubscriptions, type ShareTicket, startsWithState } from './sharedSubscriptions.ts';
import { GRAPHQL_PATH, type TollgateYoga } from './yoga.ts';

export interface WsOptions {
  server: Server;
  /** Closes a socket when its key is revoked or expires. */
  keyWatch: KeyWatch;
  yoga: TollgateYoga;
  authenticate: Authenticate;
  log: Logger;
  maxPayload: number;
  /** Browser origins allowed in; clients that send no Origin (non-browsers) are always let in. */
  origins: OriginPolicy;
  gauges: {
    connections: Gauge;
    subscriptions: Gauge;
    /** Groups of identical subscriptions running one execution each (src/server/sharedSubscriptions.ts). */
    sharedSubscriptions: Gauge;
    /** Results those groups executed: one per event per group, whatever its number of subscribers. */
    sharedExecutions: Counter;
  };
  /** Sockets, operations and their rate per key; failed authentications per address. */
  rateLimits: RateLimits;
}

type ConnectionExtra = {
  principal?: Principal;
  /** Stops watching the key for revocation and expiry. */
  unwatch?: () => void;
  /** Operations running on this socket, to cap them. */
  operations?: Set<string>;
  /** Gives the socket's place among its key's back. */
  releaseSocket?: () => void;
  /** Streams of this socket's subscriptions still running: each is ended when the socket closes. */
  streams?: Set<AsyncIterator<unknown>>;
};

/** More than this on one socket is a client bug or abuse, not a dashboard. */
export const MAX_OPERATIONS_PER_SOCKET = 200;

type Enveloped = ReturnType<TollgateYoga['getEnveloped']>;
/** What onSubscribe hands to execute/subscribe on rootValue: the pipeline, and the subscriber's place in a group. */
type OperationRoot = Pick<Enveloped, 'execute' | 'subscribe'> & { share?: ShareTicket; streams?: Set<AsyncIterator<unknown>> };

/** The subscription's one root field, when it is a plain field (not reached through a fragment). */
function rootFieldOf(operation: OperationDefinitionNode): string | undefined {
  const [first, ...rest] = operation.selectionSet.selections;
  return first && rest.length === 0 && first.kind === Kind.FIELD ? first.name.value : undefined;
}

/** Runs an operation; an unexpected throw becomes an error result for that operation only. */
async function guard<T>(log: Logger, run: () => T | Promise<T>): Promise<T | { errors: GraphQLError[] }> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof GraphQLError) return { errors: [err] };
    log.error({ err }, 'operation failed over WebSocket');
    return { errors: [new GraphQLError('internal error', { extensions: { code: 'INTERNAL_SERVER_ERROR' } })] };
  }
}

/**
 * The stream, held in `streams` until it ends, so the socket's close ends it even when
 * graphql-ws has lost it: a client that completes an operation while it starts and reuses its
 * id at once makes graphql-ws keep the old stream under the new id and then forget it, so it
 * ran (and a shared group with it) for as long as the process.
 */
function tracked(iterable: AsyncIterable<unknown>, streams: Set<AsyncIterator<unknown>>): AsyncIterableIterator<unknown> {
  const inner = iterable[Symbol.asyncIterator]();
  const stream: AsyncIterableIterator<unknown> = {
    async next() {
      try {
        const step = await inner.next();
        if (step.done) streams.delete(stream);
        return step;
      } catch (err) {
        streams.delete(stream);
        throw err;
      }
    },
    async return(value?: unknown) {
      streams.delete(stream);
      return (await inner.return?.(value)) ?? { done: true, value };
    },
    async throw(err?: unknown) {
      streams.delete(stream);
      if (inner.throw) return inner.throw(err);
      throw err;
    },
    [Symbol.asyncIterator]() {
      return stream;
    },
  };
  streams.add(stream);
  return stream;
}

/** A close frame's reason holds at most 123 bytes; longer ones make ws throw. */
function closeReason(text: string): string {
  const bytes = Buffer.from(text);
  if (bytes.length <= 123) return text;
  // Cut at a character boundary: drop a partial UTF-8 sequence at the end.
  return new TextDecoder().decode(bytes.subarray(0, 123)).replace(/\uFFFD$/, '');
}

const asErrors = (message: string) => [new GraphQLError(message, { extensions: { code: 'BAD_REQUEST' } })];

/**
 * graphql-ws on the HTTP server's port and path, running every operation through yoga's
 * enveloped pipeline so parse/validate caches, query limits, introspection rules and the
 * context factory are the same on both transports.
 */
export function attachWebSocket({ server, keyWatch, yoga, authenticate, log, maxPayload, origins, gauges, rateLimits }: WsOptions) {
  const wss = new WebSocketServer({
    server,
    path: GRAPHQL_PATH,
    maxPayload,
    perMessageDeflate: false,
  });

  // A refused origin is accepted and closed with a code and reason a browser can show; a bare
  // HTTP 403 on the upgrade reaches the page as 1006 with no reason. Registered before
  // graphql-ws's own listener, so such a socket never gets to connection_init.
  const refusedOrigin = new WeakSet<object>();
  wss.on('connection', (socket, request) => {
    const origin = request.headers.origin;
    if (!origin || origins.allows(origin, request.headers.host)) return;
    log.warn({ origin: origin.slice(0, 200) }, 'refused a WebSocket from an origin outside TOLLGATE_ALLOWED_ORIGINS');
    refusedOrigin.add(socket);
    socket.close(CloseCode.Forbidden, 'Forbidden: origin not allowed');
  });

  const shared = createSharedSubscriptions({
    log,
    keyWatch,
    metrics: { groups: gauges.sharedSubscriptions, executions: gauges.sharedExecutions },
  });

  const disposable = useServer<Record<string, unknown> | undefined, ConnectionExtra>(
    {
      // The enveloped execute/subscribe travel on rootValue from onSubscribe below. A throw
      // here would close the whole socket, so it becomes that operation's error instead.
      execute: async (args) => guard(log, () => (args.rootValue as OperationRoot).execute(args)),
      // A subscription joins the group of its identical ones, or runs alone when it cannot.
      subscribe: async (args) =>
        guard(log, async () => {
          const root = args.rootValue as OperationRoot;
          const result = (root.share && (await shared.join(root.share))) || (await root.subscribe(args));
          return isAsyncIterable(result) && root.streams ? tracked(result, root.streams) : result;
        }),
      onConnect: async (ctx) => {
        if (refusedOrigin.has(ctx.extra.socket)) return false;
        const raw = ctx.connectionParams?.authorization ?? ctx.connectionParams?.Authorization;
        const secret = secretFromAuthorization(typeof raw === 'string' ? raw : null);
        const address = rateLimits.addressOf(ctx.extra.request);
        const blocked = await rateLimits.refusedAddress(secret, address);
        if (blocked) {
          ctx.extra.socket.close(WS_RATE_LIMITED, closeReason(`${blocked.message} (in ${blocked.retryAfterSeconds} s)`));
          return false;
        }
        const result = await authenticate(secret, ctx.extra.request.socket.remoteAddress);
        rateLimits.recordAuthentication(secret, address, result);
        if (!result.ok) {
          // Close with our reason first; graphql-ws then has nothing left to close.
          ctx.extra.socket.close(CloseCode.Forbidden, closeReason(`Forbidden: ${result.reason}`));
          return false;
        }
        const operations = new Set<string>();
        const release = rateLimits.openSocket(result.principal.id, operations);
        if (typeof release === 'string') {
          ctx.extra.socket.close(WS_RATE_LIMITED, closeReason(release));
          return false;
        }
        ctx.extra.releaseSocket = release;
        ctx.extra.principal = result.principal;
        ctx.extra.operations = operations;
        ctx.extra.streams = new Set();
        // Revocation or expiry ends the connection, and with it every operation on it.
        const socket = ctx.extra.socket;
        ctx.extra.unwatch = keyWatch.watch(result.principal, (end) => socket.close(CloseCode.Forbidden, closeReason(`Forbidden: ${end.message}`)));
        gauges.connections.inc();
        return true;
      },
      onClose: (ctx) => {
        ctx.extra.releaseSocket?.();
        for (const stream of ctx.extra.streams ?? []) void stream.return?.().catch(() => {});
        const principal = ctx.extra.principal;
        if (!principal) return;
        gauges.connections.dec();
        ctx.extra.unwatch?.();
      },
      // Never throws: a bad operation gets an error message and the socket stays open.
      onSubscribe: async (ctx, id, payload) => {
        try {
          // A socket closed for its key (revoked, expired), its origin or a limit waits for the
          // client's close frame; a client that never sends it must not act meanwhile.
          if (ctx.extra.socket.readyState !== ctx.extra.socket.OPEN) return asErrors('the connection is closing');
          if ((ctx.extra.operations?.size ?? 0) >= MAX_OPERATIONS_PER_SOCKET) {
            return asErrors(`at most ${MAX_OPERATIONS_PER_SOCKET} operations may run on one connection`);
          }
          // An id whose previous operation has not finished on our side (a client that completed
          // it while it was starting and reused the id at once): graphql-ws would take the old
          // operation's stream for the new one's and lose it. The protocol's answer to an id in
          // use, as graphql-ws gives it when it sees one: the socket closes, ending every stream.
          if (ctx.extra.operations?.has(id)) {
            ctx.extra.socket.close(CloseCode.SubscriberAlreadyExists, closeReason(`Subscriber for ${id} already exists`));
            return asErrors('the connection is closing');
          }
          const overCap = rateLimits.operationCapRefusal(ctx.extra.principal!.id);
          if (overCap) return [rateLimitedError({ message: overCap })];
          // Taken before any await, so a burst of subscribes cannot all slip under the caps.
          ctx.extra.operations?.add(id);
          const overRate = await rateLimits.takeOperation(ctx.extra.principal!.id);
          if (overRate) {
            ctx.extra.operations?.delete(id);
            return [rateLimitedError(overRate)];
          }
          const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
            ...ctx,
            req: ctx.extra.request,
            socket: ctx.extra.socket,
            params: payload,
            principal: ctx.extra.principal,
          });
          if (typeof payload.query !== 'string' || payload.query.trim() === '') {
            ctx.extra.operations?.delete(id);
            return asErrors('query must be a non-empty string');
          }
          const document: DocumentNode = parse(payload.query);
          const errors = validate(schema, document);
          if (errors.length > 0) {
            ctx.extra.operations?.delete(id);
            return errors;
          }
          // graphql-ws would answer this itself, but without completing the operation, so its
          // place on the socket and among its key's operations would never be given back.
          const operation = getOperationAST(document, payload.operationName);
          if (!operation) {
            ctx.extra.operations?.delete(id);
            return asErrors(
              payload.operationName ? `the document has no operation named "${payload.operationName}"` : 'the document has several operations: name one in operationName',
            );
          }
          const principal = ctx.extra.principal!;
          const rootField = operation.operation === 'subscription' ? rootFieldOf(operation) : undefined;
          // Shared: one execution per event for every subscriber of this operation whose key sees the same.
          const share: ShareTicket | undefined = rootField
            ? {
                key: shared.keyOf(payload.query, payload.operationName, payload.variables, principal),
                startsWithState: startsWithState(schema, rootField),
                principal,
                socket: ctx.extra.socket,
                id,
                // The group's stream, through the same pipeline, as a principal with the group's visibility only.
                start: async (groupPrincipal) => {
                  const group = yoga.getEnveloped({ principal: groupPrincipal, params: payload });
                  return group.subscribe({
                    schema: group.schema,
                    document,
                    operationName: payload.operationName,
                    variableValues: payload.variables,
                    contextValue: await group.contextFactory(),
                    rootValue: {},
                  });
                },
              }
            : undefined;
          const root: OperationRoot = { execute, subscribe, share, streams: ctx.extra.streams };
          const args = {
            schema,
            document,
            operationName: payload.operationName,
            variableValues: payload.variables,
            contextValue: await contextFactory(),
            rootValue: root,
          };
          gauges.subscriptions.inc();
          return args;
        } catch (err) {
          ctx.extra.operations?.delete(id);
          // Query limits and parse failures surface as GraphQLErrors thrown from the pipeline.
          if (err instanceof GraphQLError) return [err];
          log.error({ err }, 'could not start a WebSocket operation');
          return [new GraphQLError('internal error while starting the operation', { extensions: { code: 'INTERNAL_SERVER_ERROR' } })];
        }
      },
      onComplete: (ctx, id) => {
        // Only operations that started hold a slot (refused ones gave theirs back).
        if (ctx.extra.operations?.delete(id)) gauges.subscriptions.dec();
      },
    },
    wss,
  );

  return {
    wss,
    async close() {
      await disposable.dispose();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
