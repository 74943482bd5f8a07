import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createSecureContext } from 'node:tls';
import { z } from 'zod';

/**
 * Every setting Tollgate reads, from flags and environment variables. A bad value stops the
 * start with a message naming the variable, so a typo never runs with a silent default.
 */
const port = z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must be between 0 and 65535').max(65535, 'must be between 0 and 65535');

const url = z.url({ message: 'must be an absolute http(s) URL', protocol: /^https?$/ });

/** A Redis server: scheme and host at least (`redis:x` parses as a URL with no host). */
const redisUrl = z
  .string()
  .refine((v) => URL.canParse(v) && /^rediss?:$/i.test(new URL(v).protocol) && new URL(v).hostname !== '', 'must be a redis:// or rediss:// (TLS) URL, such as redis://redis:6379');

const positiveInt = z.coerce.number({ message: 'must be a number' }).int('must be a whole number').positive('must be positive');

/** A rate limit: 0 means none. */
const limit = z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must be 0 (no limit) or more');

const bool = z.enum(['1', '0', 'true', 'false', 'yes', 'no'], { message: 'must be true or false' }).transform((v) => v === '1' || v === 'true' || v === 'yes');

const list = z.string().transform((v) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

/** Browser origins (`https://host[:port]`, as browsers send them), or `*` for any. */
const origins = list.transform((entries, ctx) => {
  const out = new Set<string>();
  for (const entry of entries) {
    if (entry === '*') {
      out.add('*');
      continue;
    }
    let url: URL | undefined;
    try {
      url = new URL(entry);
    } catch {}
    if (!url || !/^https?:$/.test(url.protocol) || url.pathname !== '/' || url.search || url.hash || url.username) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not an origin such as https://ui.example.com or http://localhost:3000 (scheme, host, port; no path)` });
      return z.NEVER;
    }
    out.add(url.origin);
  }
  return [...out];
});

const sameOrigins = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((o) => b.includes(o));

/**
 * A host webhook rules may call: `api.example.com` (that name, any port), `*.example.com` (any
 * name under it, not the name itself), either with `:port` to allow that port only; IP
 * literals as `10.0.0.7` or `[fd00::7]:8080`. Names are compared as URLs normalize them
 * (lower case, punycode, IPv4 in dotted form), so `HOOKS.Example.com.` and `hooks.example.com`
 * are one entry.
 */
export interface AllowedHost {
  host: string;
  wildcard: boolean;
  /** null: any port. */
  port: number | null;
}

/** An entry of TOLLGATE_WEBHOOK_ALLOWED_HOSTS, or a sentence saying why it is not one. */
function parseAllowedHost(entry: string): AllowedHost | string {
  const shape = 'is not a host such as hooks.example.com, *.example.com, 10.0.0.7:8080 or [fd00::7]:8080';
  const m = /^(\*\.)?(\[[0-9A-Fa-f:.]+\]|[^:[\]/?#@\s*]+)(?::(\d{1,5}))?$/.exec(entry) ?? /^()([0-9A-Fa-f]*:[0-9A-Fa-f:.]+)()$/.exec(entry);
  if (!m) return entry === '*' ? 'would allow every host: list the hosts webhooks may call (a wildcard covers the names under one domain, *.example.com)' : shape;
  const wildcard = m[1] === '*.';
  const literal = m[2]!.includes(':') && !m[2]!.startsWith('[') ? `[${m[2]}]` : m[2]!;
  let host: string;
  try {
    host = new URL(`http://${literal}/`).hostname.replace(/\.$/, '');
  } catch {
    return shape;
  }
  if (!host) return shape;
  if (wildcard && (host.startsWith('[') || !host.includes('.'))) return `is "*.${host}": a wildcard needs a domain of two labels at least (*.example.com)`;
  const port = m[3] === undefined || m[3] === '' ? null : Number(m[3]);
  if (port !== null && (port < 1 || port > 65535)) return `has port ${port}: ports are 1 to 65535`;
  return { host, wildcard, port };
}

const allowedHosts = list.transform((entries, ctx) => {
  const out: AllowedHost[] = [];
  for (const entry of entries) {
    const parsed = parseAllowedHost(entry);
    if (typeof parsed === 'string') {
      ctx.addIssue({ code: 'custom', message: `"${entry}" ${parsed}` });
      return z.NEVER;
    }
    out.push(parsed);
  }
  return out;
});

/** 32 bytes (AES-256), as 64 hex digits or base64; the value itself is never echoed. */
const secretKey = z.string().transform((v, ctx) => {
  const text = v.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : /^[A-Za-z0-9+/_-]{43}=?$/.test(text) ? Buffer.from(text, 'base64') : null;
  if (key?.length !== 32) {
    ctx.addIssue({ code: 'custom', message: 'must be 32 random bytes as 64 hex digits or base64 (e.g. the output of `openssl rand -base64 32`)' });
    return z.NEVER;
  }
  return key as Buffer;
});

export const configSchema = z
  .object({
    PORT: port.default(4000),
    HOST: z.string().min(1, 'must not be empty').default('0.0.0.0'),
    TOLLGATE_DB: z.string().min(1, 'must not be empty').default('./data/tollgate.db'),
    // normal: an acknowledged write survives a crash of the process; full: also a power loss (an fsync per write).
    TOLLGATE_DB_SYNCHRONOUS: z.enum(['normal', 'full'], { message: 'must be normal or full' }).default('normal'),
    DATABASE_URL: z.string().optional(),
    TOLLGATE_MODE: z.enum(['production', 'development'], { message: 'must be production or development' }).optional(),
    NODE_ENV: z.string().optional(),
    TOLLGATE_PUBLIC_URL: url.optional(),
    TOLLGATE_PROMETHEUS_URL: url.optional(),
    /** Events between Tollgate processes sharing one database (src/server/redisEvents.ts); unset: one process. */
    TOLLGATE_REDIS_URL: redisUrl.optional(),
    /** Instances sharing a channel are one Tollgate: several Tollgates may share a Redis. */
    TOLLGATE_REDIS_CHANNEL: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1 to 64 letters, digits or _ . : -')
      .default('tollgate'),
    TOLLGATE_BOOTSTRAP_KEY: z.string().min(24, 'must be at least 24 characters: it grants admin rights').optional(),
    TOLLGATE_LOG_LEVEL: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
        message: 'must be one of fatal, error, warn, info, debug, trace, silent',
      })
      .default('info'),
    TOLLGATE_ALLOWED_ORIGINS: origins.optional(),
    /** Deprecated alias of TOLLGATE_ALLOWED_ORIGINS (it used to cover WebSockets only). */
    TOLLGATE_WS_ALLOWED_ORIGINS: origins.optional(),
    TOLLGATE_WS_MAX_PAYLOAD: positiveInt.default(256 * 1024),
    TOLLGATE_METRICS_PUBLIC: bool.default(true),
    /** GraphiQL at /graphql in a browser: on in development, off in production unless set. */
    TOLLGATE_GRAPHIQL: bool.optional(),
    // Queries run as compiled JavaScript once seen twice (src/server/compiledQueries.ts); false: always the standard executor.
    TOLLGATE_COMPILED_QUERIES: bool.default(true),
    TOLLGATE_RETENTION_DAYS: positiveInt.default(90),
    TOLLGATE_SHUTDOWN_TIMEOUT_MS: positiveInt.default(5000),
    TOLLGATE_PROMETHEUS_TOKEN: z.string().min(1, 'must not be empty').optional(),
    TOLLGATE_PROMETHEUS_TIMEOUT_MS: positiveInt.default(5000),
    TOLLGATE_MONITOR_INTERVAL_MS: positiveInt.default(15_000),
    TOLLGATE_OTLP_MAX_BYTES: positiveInt.default(8 * 1024 * 1024),
    /** Spans one OTLP request may carry; more is answered 413 (collectors split batches). */
    TOLLGATE_OTLP_MAX_SPANS: positiveInt.default(50_000),
    TOLLGATE_APM_RETENTION_DAYS: positiveInt.default(7),
    TOLLGATE_PRIMARY_TAGS: z
      .string()
      .default('region=cloud.region')
      .transform((v, ctx) => {
        const tags = [];
        for (const part of v
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean)) {
          const m = /^([A-Za-z0-9_.-]+)=([A-Za-z0-9_.-]+)$/.exec(part) ?? /^()([A-Za-z0-9_.-]+)$/.exec(part);
          if (!m) {
            ctx.addIssue({ code: 'custom', message: `"${part}" is not tag=attribute (e.g. region=cloud.region)` });
            return z.NEVER;
          }
          tags.push({ tag: m[1] || m[2]!.split('.').pop()!, attribute: m[2]! });
        }
        return tags;
      }),
    TOLLGATE_NODE_ID: z.string().trim().min(1, 'must not be empty').max(200).optional(),
    TOLLGATE_SOURCE_ERROR_LIMIT: positiveInt.default(4),
    TOLLGATE_RESPONSE_CACHE_TTL_MS: z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must be 0 (off) or more').default(10_000),
    TOLLGATE_TLS_CERT: z.string().min(1, 'must not be empty').optional(),
    TOLLGATE_TLS_KEY: z.string().min(1, 'must not be empty').optional(),
    // Rate limits (0 turns one off); defaults far above what a pipeline or a dashboard does.
    TOLLGATE_RATE_LIMIT_REQUESTS_PER_SECOND: limit.default(100),
    TOLLGATE_RATE_LIMIT_INGEST_PER_SECOND: limit.default(500),
    TOLLGATE_RATE_LIMIT_TRIGGERS_PER_MINUTE: limit.default(120),
    TOLLGATE_RATE_LIMIT_IN_PROGRESS: limit.default(500),
    TOLLGATE_RATE_LIMIT_SOCKETS: limit.default(200),
    TOLLGATE_RATE_LIMIT_OPERATIONS: limit.default(2000),
    TOLLGATE_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE: limit.default(30),
    /** Hosts webhook rules may call; unset or empty, webhook rules are refused. */
    TOLLGATE_WEBHOOK_ALLOWED_HOSTS: allowedHosts.optional(),
    /** Encrypts secrets stored in rules (webhook header values). */
    TOLLGATE_SECRET_KEY: secretKey.optional(),
    /** Notifications: the first retry's delay (doubling each time) and the attempts before a delivery fails. */
    TOLLGATE_NOTIFICATION_RETRY_BASE_MS: positiveInt.default(5000),
    TOLLGATE_NOTIFICATION_MAX_ATTEMPTS: positiveInt.default(8),
    TOLLGATE_TRUSTED_PROXY_HOPS: z.coerce
      .number({ message: 'must be a number' })
      .int('must be a whole number')
      .min(0, 'must be 0 (clients connect directly) or more')
      .max(10, 'must be at most 10')
      .default(0),
  })
  .transform((raw, ctx) => {
    let dbPath = raw.TOLLGATE_DB;
    let postgresUrl: string | undefined;
    if (raw.DATABASE_URL && /^postgres(ql)?:\/\//.test(raw.DATABASE_URL)) postgresUrl = raw.DATABASE_URL;
    else if (raw.DATABASE_URL) {
      const m = /^(?:sqlite|file):(?:\/\/)?(.+)$/.exec(raw.DATABASE_URL);
      if (!m) {
        // The value may hold a password: never echoed.
        ctx.addIssue({ code: 'custom', path: ['DATABASE_URL'], message: 'must be postgres://…, sqlite:<path> or file:<path>' });
        return z.NEVER;
      }
      dbPath = m[1]!;
    }
    let tls: TlsFiles | undefined;
    if (raw.TOLLGATE_TLS_CERT || raw.TOLLGATE_TLS_KEY) {
      const missing = raw.TOLLGATE_TLS_CERT ? 'TOLLGATE_TLS_KEY' : 'TOLLGATE_TLS_CERT';
      if (!raw.TOLLGATE_TLS_CERT || !raw.TOLLGATE_TLS_KEY) {
        ctx.addIssue({ code: 'custom', path: [missing], message: 'must be set too: TLS needs both a certificate and its key' });
        return z.NEVER;
      }
      try {
        tls = readTls(raw.TOLLGATE_TLS_CERT, raw.TOLLGATE_TLS_KEY);
      } catch (err) {
        if (!(err instanceof TlsFileError)) throw err;
        ctx.addIssue({ code: 'custom', path: [err.variable], message: err.message });
        return z.NEVER;
      }
    }
    const allowedOrigins = raw.TOLLGATE_ALLOWED_ORIGINS ?? raw.TOLLGATE_WS_ALLOWED_ORIGINS ?? null;
    if (raw.TOLLGATE_ALLOWED_ORIGINS && raw.TOLLGATE_WS_ALLOWED_ORIGINS && !sameOrigins(raw.TOLLGATE_ALLOWED_ORIGINS, raw.TOLLGATE_WS_ALLOWED_ORIGINS)) {
      ctx.addIssue({
        code: 'custom',
        path: ['TOLLGATE_WS_ALLOWED_ORIGINS'],
        message: 'is a deprecated alias of TOLLGATE_ALLOWED_ORIGINS (one list for HTTP and WebSocket) and differs from it: set only TOLLGATE_ALLOWED_ORIGINS',
      });
      return z.NEVER;
    }
    const mode = raw.TOLLGATE_MODE ?? (raw.NODE_ENV === 'production' ? 'production' : 'development');
    return {
      port: raw.PORT,
      host: raw.HOST,
      dbPath,
      /** PostgreSQL instead of the SQLite file: several instances share it (docs/scale-out.md). */
      postgresUrl,
      dbSynchronous: raw.TOLLGATE_DB_SYNCHRONOUS,
      mode,
      publicUrl: raw.TOLLGATE_PUBLIC_URL?.replace(/\/+$/, ''),
      prometheusUrl: raw.TOLLGATE_PROMETHEUS_URL,
      redisUrl: raw.TOLLGATE_REDIS_URL,
      redisChannel: raw.TOLLGATE_REDIS_CHANNEL,
      bootstrapKey: raw.TOLLGATE_BOOTSTRAP_KEY,
      logLevel: raw.TOLLGATE_LOG_LEVEL,
      /** Browser origins allowed over HTTP (CORS) and WebSocket; null: the server's own origin only. */
      allowedOrigins,
      wsMaxPayload: raw.TOLLGATE_WS_MAX_PAYLOAD,
      metricsPublic: raw.TOLLGATE_METRICS_PUBLIC,
      /** undefined: follow the mode (src/server/graphiql.ts). */
      graphiql: raw.TOLLGATE_GRAPHIQL,
      compiledQueries: raw.TOLLGATE_COMPILED_QUERIES,
      retentionDays: raw.TOLLGATE_RETENTION_DAYS,
      shutdownTimeoutMs: raw.TOLLGATE_SHUTDOWN_TIMEOUT_MS,
      responseCacheTtlMs: raw.TOLLGATE_RESPONSE_CACHE_TTL_MS,
      // On a shared PostgreSQL every process needs its own lease name; a SQLite server keeps its
      // host's, so a restart resumes its own evaluations at once.
      nodeId: raw.TOLLGATE_NODE_ID ?? (postgresUrl ? `${hostname()}-${process.pid}` : hostname()),
      otlpMaxBytes: raw.TOLLGATE_OTLP_MAX_BYTES,
      otlpMaxSpans: raw.TOLLGATE_OTLP_MAX_SPANS,
      prometheusToken: raw.TOLLGATE_PROMETHEUS_TOKEN,
      prometheusTimeoutMs: raw.TOLLGATE_PROMETHEUS_TIMEOUT_MS,
      monitorIntervalMs: raw.TOLLGATE_MONITOR_INTERVAL_MS,
      apmRetentionDays: raw.TOLLGATE_APM_RETENTION_DAYS,
      primaryTags: raw.TOLLGATE_PRIMARY_TAGS,
      sourceErrorLimit: raw.TOLLGATE_SOURCE_ERROR_LIMIT,
      tls,
      rateLimits: {
        requestsPerSecond: raw.TOLLGATE_RATE_LIMIT_REQUESTS_PER_SECOND,
        ingestPerSecond: raw.TOLLGATE_RATE_LIMIT_INGEST_PER_SECOND,
        triggersPerMinute: raw.TOLLGATE_RATE_LIMIT_TRIGGERS_PER_MINUTE,
        inProgress: raw.TOLLGATE_RATE_LIMIT_IN_PROGRESS,
        sockets: raw.TOLLGATE_RATE_LIMIT_SOCKETS,
        operations: raw.TOLLGATE_RATE_LIMIT_OPERATIONS,
        authFailuresPerMinute: raw.TOLLGATE_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE,
      } satisfies RateLimitConfig,
      trustedProxyHops: raw.TOLLGATE_TRUSTED_PROXY_HOPS,
      webhookAllowedHosts: raw.TOLLGATE_WEBHOOK_ALLOWED_HOSTS ?? [],
      /** AES-256-GCM key for secrets kept in rules; null: rules holding secrets are refused. */
      secretKey: raw.TOLLGATE_SECRET_KEY ?? null,
      notifications: { retryBaseMs: raw.TOLLGATE_NOTIFICATION_RETRY_BASE_MS, maxAttempts: raw.TOLLGATE_NOTIFICATION_MAX_ATTEMPTS },
    };
  });

export type Config = z.output<typeof configSchema>;

/** Per API key (and, for failed authentications, per client address); 0 turns a limit off. */
export interface RateLimitConfig {
  /** HTTP requests and WebSocket operations, OTLP and Alertmanager excepted. */
  requestsPerSecond: number;
  /** OTLP traces and Alertmanager notifications. */
  ingestPerSecond: number;
  /** Evaluations created (evaluateGate, rerunEvaluation, REST, hooks) in any 60 s. */
  triggersPerMinute: number;
  /** Evaluations running at once: in progress, or decided with dry-run rules still watching. */
  inProgress: number;
  /** Open WebSocket connections and GraphQL streams over SSE. */
  sockets: number;
  /** Operations running over all of a key's WebSocket connections. */
  operations: number;
  /** Failed authentications from one address (an IPv6 /64) in a minute before it is refused unheard. */
  authFailuresPerMinute: number;
}

/** A PEM certificate (chain) and its private key, with the files they came from (to reload). */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

/** A certificate or key file Tollgate cannot serve with; `variable` names the setting. */
export class TlsFileError extends Error {
  constructor(
    readonly variable: 'TOLLGATE_TLS_CERT' | 'TOLLGATE_TLS_KEY',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Reads and checks a certificate and key the way the server will use them, so a wrong path, a
 * file that is not PEM or a key that belongs to another certificate is refused at start (and
 * on reload) rather than on the first handshake. Throws a {@link TlsFileError}.
 */
export function readTls(certFile: string, keyFile: string): TlsFiles {
  const read = (variable: TlsFileError['variable'], file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new TlsFileError(variable, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const cert = read('TOLLGATE_TLS_CERT', certFile);
  const key = read('TOLLGATE_TLS_KEY', keyFile);
  try {
    createSecureContext({ cert });
  } catch (err) {
    throw new TlsFileError('TOLLGATE_TLS_CERT', `${certFile} is not a PEM certificate (${(err as Error).message})`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    const mismatch = /mismatch/i.test((err as Error).message);
    throw new TlsFileError(
      'TOLLGATE_TLS_KEY',
      mismatch ? `${keyFile} is not the key of the certificate in ${certFile}` : `${keyFile} is not a PEM private key (${(err as Error).message})`,
    );
  }
  return { certFile, keyFile, cert, key };
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Flags win over environment variables; both are validated by the same schema. */
export function loadConfig(env: Record<string, string | undefined>, flags: Record<string, string | undefined> = {}): Config {
  const merged: Record<string, string | undefined> = {};
  for (const key of Object.keys(configSchema.in.shape)) {
    const value = flags[key] ?? env[key];
    // An empty variable is treated as unset, as shells and compose files often leave them.
    if (value !== undefined && value !== '') merged[key] = value;
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => {
        const name = String(i.path[0] ?? 'config');
        const given = merged[name];
        // A Redis URL may carry a password (redis://:password@host).
        const secret = name === 'TOLLGATE_BOOTSTRAP_KEY' || name === 'TOLLGATE_SECRET_KEY' || name === 'TOLLGATE_REDIS_URL' || name === 'DATABASE_URL';
        return `${name}${given !== undefined && !secret ? ` (${JSON.stringify(given)})` : ''}: ${i.message}`;
      }),
    );
  }
  return result.data;
}

/** Configuration for tests and embedding: defaults plus overrides, no environment. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), ...overrides };
}
