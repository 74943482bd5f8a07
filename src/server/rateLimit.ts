// Per-key request budgets and per-address slowing of failed authentications, for every
// transport. Evaluation triggers and evaluations in progress are limited in the domain
// (src/domain/triggerLimits.ts), so every entry point that starts an evaluation is covered.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIPv6 } from 'node:net';
import { GraphQLError } from 'graphql';
import { Redis } from 'ioredis';
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Config } from '../config.ts';
import { type AuthResult, secretFromAuthorization } from '../domain/apiKeys.ts';
import type { Logger } from '../log.ts';
import { clientName, redisAddress } from './redisEvents.ts';

/** Why a request is refused, and in how many seconds it is worth trying again. */
export interface Refusal {
  message: string;
  retryAfterSeconds: number;
}

/** The WebSocket close code for a refusal (4000–4999 are the application's; 429 as in HTTP). */
export const WS_RATE_LIMITED = 4429;

/** The error an operation gets over GraphQL (HTTP or WebSocket) when it is refused. */
export function rateLimitedError(refusal: Pick<Refusal, 'message'> & { retryAfterSeconds?: number }): GraphQLError {
  return new GraphQLError(refusal.message, {
    extensions: { code: 'RATE_LIMITED', ...(refusal.retryAfterSeconds !== undefined && { retryAfter: refusal.retryAfterSeconds }) },
  });
}

/**
 * The address limits count per: the socket's peer, or the address the nearest of `trustedHops`
 * proxies saw (X-Forwarded-For is appended to by each proxy, so the entries on the right are
 * the ones proxies wrote; those on the left are whatever the client claimed). IPv6 clients are
 * counted per /64, the block one subscriber usually holds.
 */
export function clientAddress(req: Pick<IncomingMessage, 'headers' | 'socket'>, trustedHops: number): string {
  let address = req.socket.remoteAddress ?? 'unknown';
  if (trustedHops > 0) {
    const header = req.headers['x-forwarded-for'];
    const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const chain = [...forwarded, address];
    address = chain[Math.max(0, chain.length - 1 - trustedHops)]!;
  }
  return addressKey(address);
}

function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head, tail] = address.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/** Where a request is going, which decides its budget and the shape of a refusal. */
type Surface = 'graphql' | 'rest' | 'hooks' | 'otlp' | 'alertmanager';

/**
 * Classified as the request is served, not as it is spelled: handlers route on the URL with its
 * dot segments resolved (`/./api/…` is REST), and yoga answers GraphQL on any path ending in
 * /graphql (`//graphql`, `/x/graphql`); reading the raw path let those spellings go unlimited.
 */
function surfaceOf(rawPath: string): Surface | null {
  if (rawPath.startsWith('/graphql')) return 'graphql';
  let path: string;
  try {
    path = new URL(`http://tollgate${rawPath.startsWith('/') ? '' : '/'}${rawPath}`).pathname;
  } catch {
    return null; // not a URL any handler serves
  }
  if (path.startsWith('/api/')) return 'rest';
  if (path.startsWith('/v1/traces')) return 'otlp';
  if (path.startsWith('/hooks/alertmanager')) return 'alertmanager';
  if (path.startsWith('/hooks/')) return 'hooks';
  if (path.endsWith('/graphql') || path.endsWith('/graphql/')) return 'graphql';
  return null;
}

/** The secret each surface reads, in the same order as its handler reads it. */
function secretOf(surface: Surface, req: IncomingMessage, path: string): string | null {
  const authorization = req.headers.authorization;
  const ddApiKey = req.headers['dd-api-key'] as string | undefined;
  if (surface === 'graphql') return secretFromAuthorization(authorization);
  if (surface === 'rest') return secretFromAuthorization(ddApiKey ?? authorization);
  const fromHeaders = secretFromAuthorization(authorization ?? ddApiKey);
  if (fromHeaders) return fromHeaders;
  // Parsed exactly as the handler will parse it, so both see the same key.
  return new URL(path, 'http://tollgate').searchParams.get('key');
}

/** Writes a 429 in the shape of the interface the client is talking to. */
function sendRefusal(res: ServerResponse, surface: Surface, refusal: Refusal): void {
  const body =
    surface === 'graphql'
      ? { errors: [{ message: refusal.message, extensions: { code: 'RATE_LIMITED', retryAfter: refusal.retryAfterSeconds } }] }
      : surface === 'otlp'
        ? { code: 429, message: refusal.message }
        : { errors: [{ status: '429', title: 'Too Many Requests', detail: refusal.message }] };
  const text = JSON.stringify(body);
  res.writeHead(429, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'retry-after': String(refusal.retryAfterSeconds) });
  res.end(text);
}

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

/** No time frees a connection, only the client closing one; this is how soon trying again is worth it. */
const STREAM_RETRY_SECONDS = 10;

/** How long a key that authenticated gets past its address's block (a NAT or proxy shared with a broken client). */
const KNOWN_GOOD_MS = 10 * 60_000;
const KNOWN_GOOD_MAX = 10_000;

/** How long a request waits for a stalled Redis before its limit is counted in memory instead. */
const REDIS_LIMIT_TIMEOUT_MS = 250;

/**
 * Where the counters live. In memory by default. With TOLLGATE_REDIS_URL, in Redis, shared by the
 * instances on the same channel, so a key's budget holds for the whole Tollgate rather than
 * per instance. When Redis does not answer, each limiter falls back to an in-memory one of the
 * same size (rate-limiter-flexible's insurance limiter): limits then count per instance, as
 * without Redis, and no request waits for Redis (no offline queue; a stalled one is given up
 * after REDIS_LIMIT_TIMEOUT_MS). Logged once when Redis is lost, once when it is back.
 */
function limiterStore(config: Pick<Config, 'redisUrl' | 'redisChannel' | 'nodeId'>, log: Logger) {
  const memory = (points: number, duration: number) => new RateLimiterMemory({ points, duration });
  if (!config.redisUrl) return { create: (_name: string, points: number, duration: number) => memory(points, duration), close: async () => {} };
  const fields = { redis: redisAddress(config.redisUrl), role: 'rate limits' };
  const client = new Redis(config.redisUrl, {
    connectionName: clientName(config.nodeId, 'limits'),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: REDIS_LIMIT_TIMEOUT_MS,
  });
  let state: 'starting' | 'up' | 'down' = 'starting';
  let closed = false;
  const lost = (err?: string) => {
    if (state === 'down' || closed) return;
    state = 'down';
    log.warn({ ...fields, err }, 'redis unreachable: rate limits count in this process only until it answers');
  };
  client.on('error', (err: Error) => lost(err.message));
  client.on('close', () => lost());
  client.on('ready', () => {
    if (state === 'down') log.info(fields, 'redis is back: rate limits are shared with other processes again');
    state = 'up';
  });
  return {
    /** `name` keeps the counters of each limit apart: `<channel>:limits:<name>:<key or address>`, expiring with the window. */
    create: (name: string, points: number, duration: number) =>
      new RateLimiterRedis({
        storeClient: client,
        keyPrefix: `${config.redisChannel}:limits:${name}`,
        points,
        duration,
        rejectIfRedisNotReady: true,
        // A key over its budget is refused here, without asking Redis, for the rest of its window.
        inMemoryBlockOnConsumed: points + 1,
        insuranceLimiter: memory(points, duration),
      }),
    close: async () => {
      closed = true;
      client.disconnect();
    },
  };
}

/**
 * rate-limiter-flexible's limiters (fixed windows per key): each entry expires with its window,
 * so memory (or Redis) holds the keys and addresses active in the last window.
 */
export function createRateLimits(
  config: Pick<Config, 'rateLimits' | 'trustedProxyHops' | 'redisUrl' | 'redisChannel' | 'nodeId'>,
  checkKey: (secret: string | null) => Promise<AuthResult>,
  log: Logger,
) {
  const limits = config.rateLimits;
  const store = limiterStore(config, log);
  const perSecond = (name: string, points: number) => (points > 0 ? store.create(name, points, 1) : null);
  const requests = perSecond('requests', limits.requestsPerSecond);
  const ingest = perSecond('ingest', limits.ingestPerSecond);
  const failures = limits.authFailuresPerMinute > 0 ? store.create('auth-failures', limits.authFailuresPerMinute, 60) : null;
  // Secrets that authenticated lately, so a client that shares its address with a misconfigured
  // one (or an attacker) keeps working while that address is refused unheard.
  const knownGood = new Map<string, number>();

  async function take(limiter: RateLimiterAbstract | null, keyId: string, what: string): Promise<Refusal | null> {
    if (!limiter) return null;
    try {
      await limiter.consume(keyId);
      return null;
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      return { message: `this API key is over its limit of ${limiter.points} ${what} per second`, retryAfterSeconds: seconds(err.msBeforeNext) };
    }
  }

  /**
   * Before a presented secret is checked: a refusal when its address failed too often this
   * minute (the key is then not looked at), unless the secret authenticated lately.
   */
  async function refusedAddress(secret: string | null, address: string): Promise<Refusal | null> {
    if (!failures || !secret) return null;
    const record = await failures.get(address);
    if (!record || record.consumedPoints < failures.points || (knownGood.get(secret) ?? 0) > Date.now()) return null;
    return { message: `too many failed authentications from this address (${failures.points} a minute); try again later`, retryAfterSeconds: seconds(record.msBeforeNext) };
  }

  /** After a secret was checked: a failure counts against the address, a success is remembered. */
  function recordAuthentication(secret: string | null, address: string, result: AuthResult): void {
    // A missing key costs nothing to check, so only presented secrets count.
    if (!failures || !secret) return;
    if (result.ok) {
      if (knownGood.size >= KNOWN_GOOD_MAX && !knownGood.has(secret)) knownGood.clear();
      knownGood.set(secret, Date.now() + KNOWN_GOOD_MS);
      return;
    }
    void failures.penalty(address).then((after) => {
      if (after.consumedPoints === failures.points)
        log.warn({ address, limit: failures.points }, 'too many failed authentications: refusing this address for the rest of the minute');
    });
  }

  // The operations sets of each key's open WebSocket connections and SSE streams: their number
  // is the key's connections, the sum of their sizes its operations. A set goes with its
  // connection, leftovers included.
  const socketsByKey = new Map<string, Set<Set<string>>>();

  /** A place for a new socket of the key (its release), or why there is none. */
  function openSocket(keyId: string, operations: Set<string>): (() => void) | string {
    const sockets = socketsByKey.get(keyId) ?? new Set();
    if (limits.sockets > 0 && sockets.size >= limits.sockets) return `too many open connections for this API key (at most ${limits.sockets})`;
    sockets.add(operations);
    socketsByKey.set(keyId, sockets);
    return () => {
      sockets.delete(operations);
      if (sockets.size === 0 && socketsByKey.get(keyId) === sockets) socketsByKey.delete(keyId);
    };
  }

  /** Why the key may not start one more WebSocket operation, or null. */
  function operationCapRefusal(keyId: string): string | null {
    if (limits.operations <= 0) return null;
    let running = 0;
    for (const operations of socketsByKey.get(keyId) ?? []) running += operations.size;
    return running >= limits.operations ? `at most ${limits.operations} operations may run at once for this API key, over all its connections: end one first` : null;
  }

  // The answer each admitted request got, for its handler to reuse rather than ask again.
  const answers = new WeakMap<IncomingMessage, { secret: string; auth: AuthResult }>();

  return {
    limits,
    /** Lets Redis go (when the counters are there). */
    close: store.close,
    openSocket,
    /** The successful authentication of `secret` this request was admitted with; none when it was not checked here or failed. */
    admittedAs(req: IncomingMessage, secret: string | null): AuthResult | undefined {
      const answer = answers.get(req);
      return answer && answer.secret === secret && answer.auth.ok ? answer.auth : undefined;
    },
    operationCapRefusal,
    addressOf: (req: IncomingMessage) => clientAddress(req, config.trustedProxyHops),
    refusedAddress,
    recordAuthentication,

    /** One WebSocket operation (query, mutation or subscription) of a key, from its request budget. */
    takeOperation: async (keyId: string) => take(requests, keyId, 'requests'),

    /**
     * Before an HTTP request reaches its handler: refuses it (answering 429 in the interface's
     * shape) when its address is blocked or its key is over budget. Requests without a key
     * and paths without one (health, metrics, the explorer) pass; their handlers decide.
     * The handler authenticates again (from the authenticator's cache when the key is good)
     * and answers and logs a failure itself.
     */
    async admitHttp(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
      try {
        return await admit(req, res, path);
      } catch (err) {
        // A limiter that fails lets the request through: the handler still authenticates it.
        log.error({ err }, 'rate limiting failed');
        return true;
      }
    },
  };

  async function admit(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    const surface = surfaceOf(path);
    if (!surface) return true;
    const secret = secretOf(surface, req, path);
    if (!secret) return true;
    const address = clientAddress(req, config.trustedProxyHops);
    const blocked = await refusedAddress(secret, address);
    if (blocked) return refuse(res, surface, blocked);
    const auth = await checkKey(secret);
    answers.set(req, { secret, auth });
    recordAuthentication(secret, address, auth);
    if (!auth.ok) return true;
    const ingestion = surface === 'otlp' || surface === 'alertmanager';
    const refusal = await take(ingestion ? ingest : requests, auth.principal.id, ingestion ? 'ingestion requests' : 'requests');
    if (refusal) return refuse(res, surface, refusal);
    // A GraphQL stream over SSE holds a connection and an operation, as a WebSocket does.
    if (surface === 'graphql' && String(req.headers.accept ?? '').includes('text/event-stream')) {
      const release = operationCapRefusal(auth.principal.id) ?? openSocket(auth.principal.id, new Set(['sse']));
      if (typeof release === 'string') return refuse(res, surface, { message: release, retryAfterSeconds: STREAM_RETRY_SECONDS });
      res.once('close', release);
    }
    return true;
  }
}

function refuse(res: ServerResponse, surface: Surface, refusal: Refusal): false {
  sendRefusal(res, surface, refusal);
  return false;
}

export type RateLimits = ReturnType<typeof createRateLimits>;
