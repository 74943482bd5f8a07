import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { type Client, createClient } from 'graphql-ws';
import pg from 'pg';
import WebSocket from 'ws';
import { type Config, type RateLimitConfig, testConfig } from '../../src/config.ts';
import { type AppOptions, buildApp } from '../../src/server/app.ts';
import { createPgDatabase } from './pg.ts';

export const ADMIN_KEY = 'test-admin-key-0123456789abcdefghij';

/**
 * Limits no test reaches (tests fire requests far faster than any client and share one address);
 * the limiters still run. test/rateLimit.test.ts sets small ones.
 */
export const UNREACHABLE_LIMITS: RateLimitConfig = {
  requestsPerSecond: 1_000_000,
  ingestPerSecond: 1_000_000,
  triggersPerMinute: 1_000_000,
  inProgress: 1_000_000,
  sockets: 1_000_000,
  operations: 1_000_000,
  authFailuresPerMinute: 1_000_000,
};

export interface GqlResponse<T = any> {
  status: number;
  data?: T;
  errors?: Array<{ message: string; path?: string[]; extensions?: Record<string, any> }>;
}

export interface TestServer {
  url: string;
  graphqlUrl: string;
  wsUrl: string;
  dir: string;
  dbPath: string;
  app: Awaited<ReturnType<typeof buildApp>>;
  /** SQL statements run since the last reset. */
  queries: string[];
  gql<T = any>(query: string, variables?: Record<string, unknown>, key?: string | null): Promise<GqlResponse<T>>;
  /** An HTTP(S) request to this server; over TLS it trusts the server's certificate (or `trust`). */
  request(method: string, path: string, options?: { body?: unknown; key?: string | null; trust?: Buffer }): Promise<HttpResult>;
  ws(key?: string | null, extra?: Partial<Parameters<typeof createClient>[0]>): Client;
  createKey(scopes: string[], envs?: string[]): Promise<string>;
  /** Rows of a raw SQL query on the server's store, whichever it is (`?` placeholders; counts come back as numbers). */
  sql<T = Record<string, any>>(text: string, ...params: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

export interface HttpResult {
  status: number;
  text: string;
  /** The body parsed as JSON, when it is JSON. */
  json: any;
  /** The certificate the server presented, over TLS. */
  peer?: PeerCertificate;
  headers: IncomingHttpHeaders;
}

/**
 * node's http/https client rather than fetch, because fetch cannot be told to trust a test's
 * self-signed certificate. A fresh connection each time, so a reloaded certificate is seen.
 */
function httpCall(url: string, method: string, headers: Record<string, string>, body: string | undefined, ca?: Buffer): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = send(url, { method, headers, agent: false, ...(ca ? { ca } : {}) });
    req.on('response', (res) => {
      const peer = 'getPeerCertificate' in res.socket ? (res.socket as TLSSocket).getPeerCertificate() : undefined;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => {
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode!, text, json, peer, headers: res.headers });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The store of the servers tests start: SQLite, or with TOLLGATE_TEST_STORE=pg a throwaway
 * PostgreSQL database per server (CI runs the storage suites both ways). A test that reopens
 * the same directory (`options.dir`) tests the SQLite file itself and keeps it.
 */
const onPostgres = process.env.TOLLGATE_TEST_STORE === 'pg';

/** A real Tollgate on port 0 with its own SQLite file in a temporary directory (or its own PostgreSQL database). */
export async function startServer(overrides: Partial<Config> = {}, options: AppOptions & { dir?: string } = {}): Promise<TestServer> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tollgate-test-'));
  const dbPath = join(dir, 'tollgate.db');
  const queries: string[] = [];
  const pgDatabase = onPostgres && !options.dir && !overrides.postgresUrl ? await createPgDatabase() : undefined;
  const config = testConfig({
    port: 0,
    host: '127.0.0.1',
    dbPath,
    postgresUrl: pgDatabase?.url,
    bootstrapKey: ADMIN_KEY,
    // TOLLGATE_TEST_LOG=error (or debug…) shows a failing suite's server logs on stdout.
    logLevel: (process.env.TOLLGATE_TEST_LOG as Config['logLevel'] | undefined) ?? 'silent',
    rateLimits: UNREACHABLE_LIMITS,
    ...overrides,
  });
  const app = await buildApp(config, { onQuery: (sql) => queries.push(sql), ...options });
  const { url, graphqlUrl } = await app.listen();
  const wsUrl = graphqlUrl.replace(/^http/, 'ws');
  const clients: Client[] = [];
  // A self-signed test certificate is its own CA.
  const ca = config.tls?.cert;
  const TrustingWebSocket = ca
    ? class extends WebSocket {
        constructor(address: string, protocols?: string | string[]) {
          super(address, protocols, { ca });
        }
      }
    : WebSocket;

  const server: TestServer = {
    url,
    graphqlUrl,
    wsUrl,
    dir,
    dbPath,
    app,
    queries,
    async gql(query, variables, key = ADMIN_KEY) {
      const res = await server.request('POST', '/graphql', { body: { query, variables }, key });
      return { ...(res.json as GqlResponse), status: res.status };
    },
    async request(method, path, { body, key = ADMIN_KEY, trust = ca } = {}) {
      const headers: Record<string, string> = { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) };
      return httpCall(`${url}${path}`, method, headers, body === undefined ? undefined : JSON.stringify(body), trust);
    },
    ws(key = ADMIN_KEY, extra = {}) {
      const client = createClient({
        url: wsUrl,
        webSocketImpl: TrustingWebSocket,
        retryAttempts: 0,
        lazy: true,
        connectionParams: key ? { authorization: `Bearer ${key}` } : {},
        ...extra,
      });
      clients.push(client);
      return client;
    },
    async createKey(scopes, envs) {
      const r = await server.gql('mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }', {
        input: { name: `key-${scopes.join('+')}`, scopes: scopes.map((x) => x.replace(':', '_').toUpperCase()), envs },
      });
      if (!r.data) throw new Error(JSON.stringify(r.errors));
      return r.data.createApiKey.secret;
    },
    async sql(text, ...params) {
      const client = app.deps.db.$client as unknown;
      if (client instanceof pg.Pool) {
        let n = 0;
        return (
          await client.query(
            text.replace(/\?/g, () => `$${++n}`),
            params,
          )
        ).rows;
      }
      return (client as typeof app.deps.db.$client).prepare(text).all(...params) as never;
    },
    async stop() {
      await Promise.all(clients.map((c) => c.dispose()));
      await app.stop();
      await pgDatabase?.drop();
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}
