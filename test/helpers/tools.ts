import { execFileSync, spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { join } from 'node:path';

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
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      `/CN=${hosts[0]}`,
      '-addext',
      `subjectAltName=${[...hosts.map((h) => `DNS:${h}`), 'IP:127.0.0.1'].join(',')}`,
    ],
    { stdio: 'ignore' },
  );
  return { certFile, keyFile };
}

/** A TCP port free at the time of asking, for programs (Prometheus, Alertmanager) that need one named. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Polls until probe answers something truthy (errors count as not yet), or fails naming what it waited for. */
/**
 * Counts the turns of the event loop (one setImmediate each) while `work` runs: work sliced
 * with yields between its slices lets the loop turn about once a slice, work done in one
 * piece not at all.
 */
export async function turnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let running = true;
  const turn = () => {
    turns++;
    if (running) setImmediate(turn);
  };
  setImmediate(turn);
  try {
    return { result: await work(), turns };
  } finally {
    running = false;
  }
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Runs the `tollgate` CLI from source as a user would, collecting what it prints and its exit code. */
export function runTollgate(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * A real local HTTP receiver (a webhook's other end) on a free port: each request is answered
 * with the status `status()` gives, and counted. `url` ends with `path`; close() ends it.
 */
export async function startReceiver(
  path: string,
  status: () => number,
  body = 'answer',
): Promise<{ url: string; calls: () => number; reset: () => void; close: () => Promise<void> }> {
  let calls = 0;
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => {
      calls++;
      res.writeHead(status()).end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`,
    calls: () => calls,
    reset: () => {
      calls = 0;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
