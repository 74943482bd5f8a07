import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { type Config, readTls } from '../config.ts';
import type { OpenDbOptions } from '../db/client.ts';
import { monitorsChangedElsewhere } from '../db/monitors.ts';
import { openStore } from '../db/store.ts';
import { createAuthenticator, ensureBootstrapKey } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { storageFailure } from '../domain/errors.ts';
import { createEvents, type EvaluationSnapshot } from '../domain/events.ts';
import { createKeyWatch } from '../domain/keyWatch.ts';
import { createRevisionFeed } from '../domain/revisionFeed.ts';
import { createBacktester } from '../engine/backtest.ts';
import { createEngine } from '../engine/engine.ts';
import { createNotifier } from '../engine/notifier.ts';
import { planWindow } from '../engine/runners.ts';
import { createLogger, type Logger, secretPrefix } from '../log.ts';
import { createMonitorEvaluator } from '../sources/monitorEvaluator.ts';
import { prometheusClient } from '../sources/prometheus.ts';
import { createGraphiql } from './graphiql.ts';
import { alertmanagerHandler, flaggerHandler, gateHookHandler } from './hooks.ts';
import { type Authenticate, requestUrl, sendJson } from './http.ts';
import { createOriginPolicy } from './origins.ts';
import { otlpTracesHandler } from './otlp.ts';
import { createRateLimits } from './rateLimit.ts';
import { createRedisEventTarget } from './redisEvents.ts';
import { restHandler } from './rest/router.ts';
import { createUi } from './ui.ts';
import { attachWebSocket } from './ws.ts';
import { createTollgateYoga, GRAPHQL_PATH } from './yoga.ts';

export interface AppOptions {
  log?: Logger;
  onQuery?: OpenDbOptions['onQuery'];
  now?: () => Date;
}

/** Connections the kernel may hold before they are accepted: a dashboard fleet reconnecting at once. */
const LISTEN_BACKLOG = 4096;

/**
 * Everything a Tollgate process runs, wired but not yet listening: `listen()` opens the port,
 * `stop()` closes sockets, the WebSocket server, yoga and the database, in that order.
 */
export async function buildApp(config: Config, options: AppOptions = {}) {
  const log = options.log ?? createLogger(config.logLevel);
  const now = options.now ?? (() => new Date());
  // Refuses (StorageStartError) a SQLite file it cannot write or that another server holds.
  const storage = await openStore(config, { onQuery: options.onQuery, synchronous: config.dbSynchronous, log });
  const db = storage.db;
  // Several instances on one PostgreSQL share their events through Redis (docs/scale-out.md).
  const sharedEvents = config.redisUrl ? createRedisEventTarget({ url: config.redisUrl, channelPrefix: config.redisChannel, log, nodeId: config.nodeId }) : null;
  // Every revision of every evaluation reaches this process's listeners once, in order per
  // evaluation, whatever Redis lost or repeated: the feed fills gaps from the revision log.
  // When events may have been lost (Redis came back, another instance could not publish),
  // caches drop what they hold and the feed delivers what was written meanwhile, so a lost
  // event costs latency, not a revision.
  const feed = sharedEvents ? createRevisionFeed(db, log, (snapshot) => sharedEvents.dispatchLocally('evaluation.changed', snapshot)) : null;
  if (sharedEvents && feed) {
    sharedEvents.route('evaluation.changed', (snapshot) => feed.offer(snapshot as EvaluationSnapshot));
    sharedEvents.onResumed((since) => {
      sharedEvents.dispatchLocally('config.changed', null);
      feed.replay(since);
    });
  }
  const scheme = config.tls ? 'https' : 'http';
  let listenUrl = `${scheme}://localhost:${config.port}`;
  const deps: Deps = {
    db,
    events: createEvents(sharedEvents?.target),
    log,
    config,
    now,
    nodeId: config.nodeId,
    baseUrl: () => config.publicUrl ?? listenUrl,
    planWindow,
  };
  // Monitors written by another instance on the same database reach this one only as events;
  // without this its monitor rules would keep selecting from what it read before. config.changed
  // also comes when Redis is back after an outage (events may have been lost meanwhile).
  deps.events.on('monitor.changed', () => monitorsChangedElsewhere('rows'));
  deps.events.on('monitor.transition', () => monitorsChangedElsewhere('groups'));
  deps.events.on('config.changed', () => monitorsChangedElsewhere('rows'));
  const engine = createEngine(deps, { sourceErrorLimit: config.sourceErrorLimit });
  const backtester = createBacktester(deps);
  const notifier = createNotifier(deps);
  const prometheus = config.prometheusUrl ? prometheusClient({ url: config.prometheusUrl, bearerToken: config.prometheusToken, timeoutMs: config.prometheusTimeoutMs }) : null;
  const monitorEvaluator = createMonitorEvaluator(deps, { intervalMs: config.monitorIntervalMs, prometheus });
  // Instances sharing a PostgreSQL ask it on every request: a key revoked on one is refused on
  // all at once, not after another instance's cached answer lapses.
  const checkKey = createAuthenticator(db, now, deps.events, { cacheMs: storage.dialect === 'pg' ? 0 : undefined });
  // Every transport authenticates through here, so each failure leaves one line: the key's
  // first characters and the caller's address, never the key.
  const authenticate: Authenticate = async (secret, client) => {
    const result = await checkKey(secret);
    if (!result.ok) log.warn({ keyPrefix: secretPrefix(secret), client, reason: result.reason }, 'authentication failed');
    return result;
  };
  const bootstrap = await ensureBootstrapKey(db, now(), config.bootstrapKey);
  // Checks keys silently: the handler that answers a failure also logs it.
  const rateLimits = createRateLimits(config, checkKey, log);

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tollgate_' });
  const gauges = {
    connections: new Gauge({ name: 'tollgate_ws_connections', help: 'Open authenticated WebSocket connections', registers: [registry] }),
    subscriptions: new Gauge({ name: 'tollgate_ws_operations', help: 'Operations running over WebSocket', registers: [registry] }),
    sharedSubscriptions: new Gauge({
      name: 'tollgate_ws_shared_subscriptions',
      help: 'Groups of identical WebSocket subscriptions (same operation, same visibility) running one execution each',
      registers: [registry],
    }),
    sharedExecutions: new Counter({
      name: 'tollgate_ws_shared_executions_total',
      help: 'Results executed by shared subscriptions: one per event per group, whatever its number of subscribers',
      registers: [registry],
    }),
  };

  // Revocation and expiry end every open stream of a key, on every transport.
  const keyWatch = createKeyWatch(db, deps.events, now);
  const yoga = createTollgateYoga({ deps, authenticate, registry, ready: () => storage.ready(), keyWatch, admittedAs: rateLimits.admittedAs });

  // Plain HTTP endpoints beside GraphQL; everything else is yoga's.
  const routes: Record<string, (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>> = {
    '/v1/traces': otlpTracesHandler(deps, authenticate),
    '/hooks/alertmanager': alertmanagerHandler(deps, authenticate),
    '/hooks/flagger': flaggerHandler(deps, authenticate),
    '/hooks/gate': gateHookHandler(deps, authenticate),
  };

  const rest = restHandler(deps, authenticate);
  // GraphiQL for browsers at /graphql, from Tollgate's own assets (built on the first visit).
  const graphiql = createGraphiql(config, log);
  // The explorer's pages and assets (src/ui), built in memory on the first page asked for.
  const ui = createUi(log);

  const sockets = new Set<Socket>();
  const origins = createOriginPolicy(config.allowedOrigins, config.publicUrl);
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    res.on('finish', () => {
      const entry = { method: req.method, path: req.url?.split('?')[0], status: res.statusCode, ms: Math.round(performance.now() - started) };
      if (res.statusCode >= 500) log.warn(entry, 'request failed');
      else log.debug(entry, 'request');
    });
    // GraphQL is the hot path: only other paths pay for parsing the URL.
    const path = req.url ?? '/';
    // CORS for every path from one allow-list; preflights are answered here, unauthenticated.
    if (origins.cors(req, res)) return;
    // Keys over their budget, and addresses that failed too often, are answered 429 here.
    void rateLimits.admitHttp(req, res, path).then((admitted) => {
      if (!admitted) return;
      if (graphiql.handles(req, path)) return void graphiql.serve(req, res, path);
      if (path.startsWith('/graphql')) return void yoga(req, res);
      const url = requestUrl(path);
      if (!url) return sendJson(res, 400, { errors: [{ status: '400', detail: 'the request target is not a valid path' }] });
      const route = routes[url.pathname] ?? (url.pathname.startsWith('/api/') ? rest : undefined);
      if (route) void route(req, res, url);
      else if (ui.handles(req, url)) void ui.serve(req, res, url);
      else void yoga(req, res);
    });
  };
  // With a certificate Tollgate serves HTTPS and WSS itself, as datadog-ci (which only speaks
  // https://api.<DD_SITE>) needs when no TLS-terminating proxy stands in front.
  const server = config.tls ? createHttpsServer({ cert: config.tls.cert, key: config.tls.key }, handle) : createHttpServer(handle);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const ws = attachWebSocket({
    server,
    keyWatch,
    yoga,
    authenticate,
    log,
    maxPayload: config.wsMaxPayload,
    origins,
    gauges,
    rateLimits,
  });

  let stopping: Promise<void> | undefined;

  return {
    deps,
    engine,
    monitorEvaluator,
    notifier,
    server,
    /** Set when this start created an admin key: its secret, to print once. */
    bootstrapSecret: bootstrap.created ? bootstrap.secret : undefined,

    async listen(): Promise<{ url: string; graphqlUrl: string; port: number }> {
      // A failed listen (a busy port) is the caller's to report: the WebSocket server, which
      // re-emits the HTTP server's errors (and graphql-ws prints them), is kept out of it.
      const others = server.listeners('error') as Array<(err: Error) => void>;
      server.removeAllListeners('error');
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          // A burst of connections waits in the accept queue instead of being reset (node's
          // default backlog is 511); the kernel caps it at net.core.somaxconn.
          server.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      } finally {
        for (const listener of others) server.on('error', listener);
      }
      const { port } = server.address() as AddressInfo;
      const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
      const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
      listenUrl = url;
      engine.start();
      await backtester.start();
      monitorEvaluator.start();
      notifier.start();
      return { url, graphqlUrl: `${url}${GRAPHQL_PATH}`, port };
    },

    /**
     * Re-reads the certificate and key files (after a renewal) for new connections; open ones
     * keep theirs. Throws, keeping the old pair, when the new files are unusable.
     */
    reloadTls(): void {
      if (!config.tls || !('setSecureContext' in server)) throw new Error('TLS is not enabled (TOLLGATE_TLS_CERT / TOLLGATE_TLS_KEY)');
      const next = readTls(config.tls.certFile, config.tls.keyFile);
      server.setSecureContext({ cert: next.cert, key: next.key });
      log.info({ cert: next.certFile }, 'TLS certificate reloaded');
    },

    /** Idempotent; resolves when every socket is closed and the database is closed. */
    async stop(): Promise<void> {
      stopping ??= (async () => {
        server.close();
        await ws.close(); // tells WebSocket clients 1001 "going away" and ends their operations
        keyWatch.close();
        await monitorEvaluator.stop();
        await backtester.stop();
        // Sends under way finish and are settled; nothing new is claimed.
        await notifier.stop();
        // Lets running checks commit, hands leases back. Storage that broke down (a -wal or lock
        // file deleted) refuses that last write: the leases expire on their own, and the database
        // must still be closed and its lock released.
        await engine.stop().catch((err) => {
          if (!storageFailure(err)) throw err;
          log.warn({ code: storageFailure(err)!.storageCode }, 'leases not handed back on stop (storage unavailable): they expire on their own');
        });
        server.closeIdleConnections();
        for (const socket of sockets) socket.destroy();
        await yoga.dispose();
        registry.clear();
        await sharedEvents?.close();
        await feed?.stop();
        await rateLimits.close();
        await storage.close(); // and hands a SQLite file to the next server
      })();
      return stopping;
    },
  };
}
