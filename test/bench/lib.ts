// Shared pieces of the benchmarks: a real Tollgate in its own process, a GraphQL client and
// a graphql-ws client against it, and percentiles.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';

export const BENCH_KEY = 'bench-admin-key-0123456789abcdefghij';

/**
 * Per-key limits no benchmark reaches: one key doing the work of a whole fleet is what a
 * capacity benchmark measures, not a client's budget. The limiters still run, so their cost is in.
 */
export const UNREACHED_LIMITS: Record<string, string> = Object.fromEntries(
  ['REQUESTS_PER_SECOND', 'INGEST_PER_SECOND', 'TRIGGERS_PER_MINUTE', 'IN_PROGRESS', 'SOCKETS', 'OPERATIONS', 'AUTH_FAILURES_PER_MINUTE'].map((name) => [
    `TOLLGATE_RATE_LIMIT_${name}`,
    '1000000000',
  ]),
);
const here = dirname(fileURLToPath(import.meta.url));

export interface BenchServer {
  child: ChildProcess;
  url: string;
  gql<T = any>(query: string, variables?: Record<string, unknown>): Promise<T>;
  ws(): Client;
  stop(): Promise<void>;
}

async function spawnServer(kind: 'bare' | 'tollgate' | 'otlp-decode', env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'servers.ts'), kind], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TOLLGATE_BOOTSTRAP_KEY: BENCH_KEY, ...env },
  });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const { port } = JSON.parse(String(line)) as { port: number };
  return { child, url: `http://127.0.0.1:${port}/graphql` };
}

/** A bare graphql-yoga `{ hello }` server (or the decode-only OTLP server): baselines. */
export async function startBare(kind: 'bare' | 'otlp-decode' = 'bare'): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const { child, url } = await spawnServer(kind, {});
  return {
    url,
    child,
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

export async function startTollgate(env: Record<string, string> = {}): Promise<BenchServer> {
  const { child, url } = await spawnServer('tollgate', env);
  return benchClient(child, url);
}

/** GraphQL over HTTP and graphql-ws with the bench key, against a Tollgate running as `child`; stop() sends it SIGTERM. */
export function benchClient(child: ChildProcess, url: string): BenchServer {
  const clients: Client[] = [];
  return {
    child,
    url,
    async gql(query, variables) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_KEY}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await res.json()) as { data?: any; errors?: unknown };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body.data;
    },
    ws() {
      const client = createClient({ url: url.replace('http', 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${BENCH_KEY}` }, retryAttempts: 0 });
      clients.push(client);
      return client;
    },
    async stop() {
      await Promise.all(clients.map((c) => c.dispose()));
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/** Calls `onEvent` for every event of a subscription; resolves once the server has it running. */
export async function listen<T>(client: Client, query: string, onEvent: (data: T) => void): Promise<() => void> {
  const dispose = client.subscribe<T>({ query }, { next: (v) => v.data && onEvent(v.data as T), error: (e) => console.error(e), complete: () => {} });
  await new Promise((r) => setTimeout(r, 200));
  return dispose;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

export const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

/** CPU seconds (user + system) and resident memory of a process, from /proc. */
export function processUsage(pid: number): { cpuSeconds: number; rssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return { cpuSeconds: ticks / 100, rssBytes: rssKb * 1024 };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
