import { type Config, ConfigError, loadConfig } from '../config.ts';
import { createLogger, withoutPassword } from '../log.ts';

export interface ServeFlags {
  port?: string;
  host?: string;
  db?: string;
  publicUrl?: string;
  prometheusUrl?: string;
  logLevel?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** Flag name → the configuration variable it sets (flags win over the environment). */
const FLAG_TO_ENV: Record<keyof ServeFlags, string> = {
  port: 'PORT',
  host: 'HOST',
  db: 'TOLLGATE_DB',
  publicUrl: 'TOLLGATE_PUBLIC_URL',
  prometheusUrl: 'TOLLGATE_PROMETHEUS_URL',
  logLevel: 'TOLLGATE_LOG_LEVEL',
  tlsCert: 'TOLLGATE_TLS_CERT',
  tlsKey: 'TOLLGATE_TLS_KEY',
};

/** A sentence for the ways a port cannot be had, which are the operator's to fix, not bugs. */
function listenProblem(err: NodeJS.ErrnoException, config: Pick<Config, 'host' | 'port'>): string | null {
  const where = `${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}`;
  if (err.code === 'EADDRINUSE') return `port ${config.port} is already in use (${where}); set PORT or --port`;
  if (err.code === 'EACCES') return `not allowed to listen on port ${config.port} (${where}): ports below 1024 need privileges; set PORT or --port`;
  if (err.code === 'EADDRNOTAVAIL') return `cannot listen on ${where}: no such address on this machine; set HOST or --host`;
  return null;
}

export async function serve(flags: ServeFlags): Promise<void> {
  let config: Config;
  try {
    const mapped: Record<string, string | undefined> = {};
    for (const [flag, env] of Object.entries(FLAG_TO_ENV)) mapped[env] = flags[flag as keyof ServeFlags];
    config = loadConfig(process.env, mapped);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`tollgate: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }

  const log = createLogger(config.logLevel);
  // The server's modules load once the configuration is known good: a bad setting is reported
  // before seconds of loading, as a supervisor restarting a misconfigured process would want.
  const [{ buildApp }, { StorageStartError }] = await Promise.all([import('../server/app.ts'), import('../db/client.ts')]);
  let app: Awaited<ReturnType<typeof buildApp>>;
  try {
    app = await buildApp(config, { log });
  } catch (err) {
    // A database it cannot write, or one another server holds: the operator's to fix.
    if (err instanceof StorageStartError) {
      console.error(`tollgate: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  let listening: Awaited<ReturnType<typeof app.listen>>;
  try {
    listening = await app.listen();
  } catch (err) {
    const problem = listenProblem(err as NodeJS.ErrnoException, config);
    if (!problem) throw err;
    console.error(`tollgate: ${problem}`);
    process.exit(2);
  }
  const { url, graphqlUrl } = listening;
  const database = config.postgresUrl ? `PostgreSQL ${withoutPassword(config.postgresUrl)}` : config.dbPath;
  log.info({ url: graphqlUrl, db: database, nodeId: config.nodeId, events: config.redisUrl ? 'redis' : 'in-process', mode: config.mode }, 'tollgate listening');

  const shutdown = (signal: string) => {
    log.info({ signal }, 'shutting down');
    const timer = setTimeout(() => {
      log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown took too long; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs);
    timer.unref();
    app.stop().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  // Certificates are renewed in place (certbot, cert-manager); SIGHUP picks them up without a restart.
  if (config.tls) {
    process.on('SIGHUP', () => {
      try {
        app.reloadTls();
      } catch (err) {
        log.error({ err: (err as Error).message }, 'TLS certificate not reloaded; still serving the previous one');
      }
    });
  }
  // Before the banner: whoever reads it (a supervisor, a test) may signal at once.
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));

  // Human-readable lines on stderr, so stdout stays pure JSON logs.
  const lines = [`Tollgate listening on ${url}`, `  Explorer: ${url}/ (in a browser; sign in with an API key)`, `  GraphQL (HTTP and WebSocket): ${graphqlUrl}`];
  if (config.graphiql ?? config.mode === 'development') lines.push(`  GraphiQL: ${graphqlUrl} (in a browser)`);
  lines.push(`  Database: ${database}`);
  if (config.redisUrl) lines.push(`  Events between instances: Redis ${withoutPassword(config.redisUrl)} (this instance: ${config.nodeId})`);
  if (config.tls) lines.push(`  TLS certificate: ${config.tls.certFile} (kill -HUP ${process.pid} reloads it)`);
  if (app.bootstrapSecret && !config.bootstrapKey) {
    lines.push('', `  Admin API key (shown once, stored only as a hash):`, `    ${app.bootstrapSecret}`, `  Use it as "Authorization: Bearer <key>".`);
  } else if (config.bootstrapKey) {
    lines.push(`  Admin API key: the value of TOLLGATE_BOOTSTRAP_KEY`);
  } else {
    lines.push(`  Admin API key: printed on the first start with this database.`, `  Lost it? Restart with TOLLGATE_BOOTSTRAP_KEY=<a secret of 24+ characters> to add one.`);
  }
  console.error(lines.join('\n'));
}
