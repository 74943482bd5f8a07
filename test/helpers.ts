import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { type IncomingHttpHeaders, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Client, createClient, type FormattedExecutionResult } from 'graphql-ws';

type ExecutionResult<T> = FormattedExecutionResult<T, unknown>;
import WebSocket from 'ws';
import { type Config, type RateLimitConfig, testConfig } from '../src/config.ts';
import { type AppOptions, buildApp } from '../src/server/app.ts';

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

/** A real Tollgate on port 0 with its own SQLite file in a temporary directory. */
export async function startServer(
  overrides: Partial<Config> = {},
  options: AppOptions & { dir?: string } = {},
): Promise<TestServer> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tollgate-test-'));
  const dbPath = join(dir, 'tollgate.db');
  const queries: string[] = [];
  const config = testConfig({ port: 0, host: '127.0.0.1', dbPath, bootstrapKey: ADMIN_KEY, logLevel: 'silent', rateLimits: UNREACHABLE_LIMITS, ...overrides });
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
    request(method, path, { body, key = ADMIN_KEY, trust = ca } = {}) {
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
      const r = await server.gql(
        'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }',
        { input: { name: `key-${scopes.join('+')}`, scopes: scopes.map((x) => x.replace(':', '_').toUpperCase()), envs } },
      );
      if (!r.data) throw new Error(JSON.stringify(r.errors));
      return r.data.createApiKey.secret;
    },
    async stop() {
      await Promise.all(clients.map((c) => c.dispose()));
      await app.stop();
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Runs one operation over a graphql-ws client and returns its first result. */
export function wsOnce<T = any>(client: Client, query: string, variables?: Record<string, unknown>): Promise<ExecutionResult<T>> {
  return new Promise((resolve, reject) => {
    let done = false;
    const dispose = client.subscribe<T>(
      { query, variables },
      {
        next: (value) => {
          if (!done) {
            done = true;
            resolve(value);
            dispose();
          }
        },
        error: (err) => {
          if (done) return;
          done = true;
          // graphql-ws reports operation errors as an array of GraphQL errors.
          if (Array.isArray(err)) resolve({ errors: err } as ExecutionResult<T>);
          else reject(err);
        },
        complete: () => {
          if (!done) reject(new Error('completed without a result'));
        },
      },
    );
  });
}

/** A queue over a subscription: `next()` waits for the following event. */
export function subscribeQueue<T = any>(client: Client, query: string, variables?: Record<string, unknown>) {
  const values: ExecutionResult<T>[] = [];
  const waiters: Array<(v: ExecutionResult<T>) => void> = [];
  let failure: unknown;
  const dispose = client.subscribe<T>(
    { query, variables },
    {
      next: (value) => {
        const w = waiters.shift();
        if (w) w(value);
        else values.push(value);
      },
      error: (err) => {
        failure = err;
        const w = waiters.shift();
        if (w) w({ errors: Array.isArray(err) ? err : [err] } as ExecutionResult<T>);
      },
      complete: () => {},
    },
  );
  return {
    next(timeoutMs = 5000): Promise<ExecutionResult<T>> {
      const v = values.shift();
      if (v) return Promise.resolve(v);
      if (failure) return Promise.resolve({ errors: Array.isArray(failure) ? failure : [failure] } as ExecutionResult<T>);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no event within ${timeoutMs} ms`)), timeoutMs);
        waiters.push((value) => {
          clearTimeout(timer);
          resolve(value);
        });
      });
    },
    dispose,
  };
}

export const GATE_FIELDS = `id service env identifier dryRun onSourceError createdBy updatedBy createdAt updatedAt
  rules { id name type dryRun options { __typename
    ... on MonitorRuleOptions { query monitorIds { id groups } duration warmup failOnNoData failOnNoGroupsFound }
    ... on FddRuleOptions { duration excludedResources allowedResources alpha minRelativeIncrease newErrorTypes onInsufficientData } } }`;

export const CREATE_GATE = `mutation($input: CreateGateInput!) { createGate(input: $input) { ${GATE_FIELDS} } }`;

export const monitorRule = (name: string, options: Record<string, unknown> = {}) => ({
  name,
  options: { monitor: { query: 'service:checkout', ...options } },
});

export const fddRule = (name: string, options: Record<string, unknown> = {}) => ({
  name,
  options: { faultyDeploymentDetection: { ...options } },
});

export const EVALUATION_FIELDS = `id gateId service env identifier version primaryTag dryRun justInTime status reportedStatus
  startedAt decidedAt finishedAt evaluationUrl rerunOf revision
  rules { id ruleId name type dryRun status reason startedAt windowStartsAt windowEndsAt finishedAt
    evidence { matchedMonitors { id name groups } failingGroups { monitorId monitorName group state since url } } }`;

/** Monitors, states and evaluations through the public API, as a user would drive them. */
export function driver(s: TestServer) {
  const must = async (query: string, variables?: Record<string, unknown>) => {
    const r = await s.gql(query, variables);
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data;
  };
  return {
    async monitor(name: string, tags: string[], extra: Record<string, unknown> = {}): Promise<string> {
      const d = await must('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', { i: { name, type: 'EXTERNAL', tags, ...extra } });
      return d.createMonitor.id;
    },
    async report(monitorId: string, state: 'OK' | 'WARN' | 'ALERT' | 'NO_DATA', group?: string) {
      await must('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId, state, group } });
    },
    async evaluate(input: Record<string, unknown>) {
      return s.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { ${EVALUATION_FIELDS} } }`, { i: input });
    },
    async get(id: string) {
      return (await must(`query($id: ID!) { evaluation(id: $id) { ${EVALUATION_FIELDS} } }`, { id })).evaluation;
    },
    /** Every snapshot a graphql-ws subscriber sees until the evaluation finishes. */
    async follow(id: string, timeoutMs = 15_000): Promise<any[]> {
      const client = s.ws();
      const seen: any[] = [];
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`evaluation ${id} did not finish within ${timeoutMs} ms: ${JSON.stringify(seen.at(-1))}`)), timeoutMs);
          client.subscribe<any>(
            { query: `subscription($id: ID!) { evaluationUpdated(id: $id) { ${EVALUATION_FIELDS} } }`, variables: { id } },
            {
              next: (v) => {
                if (v.errors) return reject(new Error(JSON.stringify(v.errors)));
                seen.push(v.data!.evaluationUpdated);
              },
              error: (e) => reject(e instanceof Error ? e : new Error(JSON.stringify(e))),
              complete: () => {
                clearTimeout(timer);
                resolve();
              },
            },
          );
        });
      } finally {
        await client.dispose();
      }
      return seen;
    },
  };
}

export const jitMonitor = (name: string, options: Record<string, unknown>, dryRun = false) => ({ name, dryRun, options: { monitor: options } });
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function wsOperations(s: TestServer): Promise<number> {
  const { text } = await s.request('GET', '/metrics');
  return Number(/^tollgate_ws_operations (\S+)$/m.exec(text)?.[1] ?? 0);
}

/**
 * A subscription that is running on the server before this resolves (the server's count of
 * WebSocket operations has grown), so an event published next cannot be missed on a slow machine.
 */
export async function subscribeLive<T = any>(s: TestServer, client: Client, query: string, variables?: Record<string, unknown>) {
  const before = await wsOperations(s);
  const queue = subscribeQueue<T>(client, query, variables);
  for (let i = 0; i < 200 && (await wsOperations(s)) <= before; i++) await sleep(25);
  await sleep(25); // from the operation's start to its listener on the bus
  return queue;
}

/** The path of the first of these commands on PATH, or null. */
export function which(...names: string[]): string | null {
  for (const name of names) {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || null;
    } catch {}
  }
  return null;
}

/**
 * Tests that need these programs (`a|b`: either) skip without them, unless TOLLGATE_REQUIRE_INTEGRATION=1 (as
 * in CI), where a missing one fails the test instead. Returns a skip reason or false.
 */
export function skipWithout(...names: string[]): string | false {
  const missing = names.filter((n) => !which(...n.split('|'))).map((n) => n.replaceAll('|', ' or '));
  if (missing.length === 0) return false;
  if (process.env.TOLLGATE_REQUIRE_INTEGRATION === '1') throw new Error(`TOLLGATE_REQUIRE_INTEGRATION=1 but not installed: ${missing.join(', ')}`);
  return `not installed: ${missing.join(', ')}`;
}

/**
 * A fresh self-signed certificate (P-256, two days) for these host names and 127.0.0.1, made by
 * the openssl command; it is its own CA, so a client trusting it (`ca`, NODE_EXTRA_CA_CERTS) can verify it.
 */
export function selfSignedCert(dir: string, name: string, hosts: string[]): { certFile: string; keyFile: string } {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${hosts[0]}`,
    '-addext', `subjectAltName=${[...hosts.map((h) => `DNS:${h}`), 'IP:127.0.0.1'].join(',')}`,
  ], { stdio: 'ignore' });
  return { certFile, keyFile };
}
