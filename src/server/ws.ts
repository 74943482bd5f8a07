import type { Server } from 'node:http';
import { type DocumentNode, GraphQLError } from 'graphql';
import { CloseCode } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import type { Gauge } from 'prom-client';
import { WebSocketServer } from 'ws';
import { type AuthResult, secretFromAuthorization } from '../domain/apiKeys.ts';
import type { Principal } from '../domain/principal.ts';
import type { Logger } from '../log.ts';
import { GRAPHQL_PATH, type TollgateYoga } from './yoga.ts';

export interface WsOptions {
  server: Server;
  yoga: TollgateYoga;
  authenticate: (secret: string | null) => AuthResult;
  log: Logger;
  maxPayload: number;
  /** null: any origin. Clients that send no Origin (non-browsers) are always let in. */
  allowedOrigins: readonly string[] | null;
  gauges: { connections: Gauge; subscriptions: Gauge };
}

type ConnectionExtra = {
  principal?: Principal;
};

type Enveloped = ReturnType<TollgateYoga['getEnveloped']>;

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

const asErrors = (message: string) => [new GraphQLError(message, { extensions: { code: 'BAD_REQUEST' } })];

/**
 * graphql-ws on the HTTP server's port and path, running every operation through yoga's
 * enveloped pipeline so parse/validate caches, query limits, introspection rules and the
 * context factory are the same on both transports.
 */
export function attachWebSocket({ server, yoga, authenticate, log, maxPayload, allowedOrigins, gauges }: WsOptions) {
  const wss = new WebSocketServer({
    server,
    path: GRAPHQL_PATH,
    maxPayload,
    perMessageDeflate: false,
    verifyClient: ({ origin }, done) => {
      if (!allowedOrigins || !origin || allowedOrigins.includes(origin)) return done(true);
      log.warn({ origin }, 'refused a WebSocket from an origin outside TOLLGATE_WS_ALLOWED_ORIGINS');
      done(false, 403, 'origin not allowed');
    },
  });

  const disposable = useServer<Record<string, unknown> | undefined, ConnectionExtra>(
    {
      // The enveloped execute/subscribe travel on rootValue from onSubscribe below. A throw
      // here would close the whole socket, so it becomes that operation's error instead.
      execute: (args) => guard(log, () => (args.rootValue as Enveloped).execute(args)),
      subscribe: (args) => guard(log, () => (args.rootValue as Enveloped).subscribe(args)),
      onConnect: (ctx) => {
        const raw = ctx.connectionParams?.authorization ?? ctx.connectionParams?.Authorization;
        const result = authenticate(secretFromAuthorization(typeof raw === 'string' ? raw : null));
        if (!result.ok) {
          // Close with our reason first; graphql-ws then has nothing left to close.
          ctx.extra.socket.close(CloseCode.Forbidden, `Forbidden: ${result.reason}`.slice(0, 120));
          return false;
        }
        ctx.extra.principal = result.principal;
        gauges.connections.inc();
        return true;
      },
      onDisconnect: (ctx) => {
        if (ctx.extra.principal) gauges.connections.dec();
      },
      // Never throws: a bad operation gets an error message and the socket stays open.
      onSubscribe: async (ctx, _id, payload) => {
        try {
          const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
            ...ctx,
            req: ctx.extra.request,
            socket: ctx.extra.socket,
            params: payload,
            principal: ctx.extra.principal,
          });
          if (typeof payload.query !== 'string' || payload.query.trim() === '') return asErrors('query must be a non-empty string');
          const document: DocumentNode = parse(payload.query);
          const errors = validate(schema, document);
          if (errors.length > 0) return errors;
          gauges.subscriptions.inc();
          return {
            schema,
            document,
            operationName: payload.operationName,
            variableValues: payload.variables,
            contextValue: await contextFactory(),
            rootValue: { execute, subscribe },
          };
        } catch (err) {
          // Query limits and parse failures surface as GraphQLErrors thrown from the pipeline.
          if (err instanceof GraphQLError) return [err];
          log.error({ err }, 'could not start a WebSocket operation');
          return [new GraphQLError('internal error while starting the operation', { extensions: { code: 'INTERNAL_SERVER_ERROR' } })];
        }
      },
      onComplete: () => {
        gauges.subscriptions.dec();
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
