import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { selfSignedCert, skipWithout } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-proc-'));
// A failed assertion must not leave a server behind: a live child keeps the test process (and CI) waiting.
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** `tollgate serve` as a user runs it, in its own process. */
function serve(env: Record<string, string>, args: string[] = []) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', ...args], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', TOLLGATE_DB: join(dir, 'proc.db'), TOLLGATE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const banner = async () => {
    for (let i = 0; i < 1200 && !/Admin API key[^\n]*\n?.*/s.test(stderr.split('Database:')[1] ?? ''); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    return stderr;
  };
  return { child, exited, banner, stderr: () => stderr };
}

async function stopWith(child: ChildProcess, exited: Promise<number | null>, signal: NodeJS.Signals) {
  const t0 = Date.now();
  child.kill(signal);
  const code = await exited;
  return { code, ms: Date.now() - t0 };
}

test('a bad setting stops the start with a message naming it', async () => {
  for (const [name, value, message] of [
    ['PORT', 'abc', /PORT \("abc"\): must be a number/],
    ['PORT', '70000', /PORT \("70000"\): must be between 0 and 65535/],
    ['TOLLGATE_PUBLIC_URL', 'not a url', /TOLLGATE_PUBLIC_URL .*absolute http\(s\) URL/],
    ['TOLLGATE_LOG_LEVEL', 'loud', /TOLLGATE_LOG_LEVEL .*must be one of/],
    ['TOLLGATE_BOOTSTRAP_KEY', 'short', /TOLLGATE_BOOTSTRAP_KEY: must be at least 24 characters/],
    ['DATABASE_URL', 'mysql://db/tollgate', /DATABASE_URL: must be postgres:\/\/…, sqlite:<path> or file:<path>/],
    // Port 1 answers nothing: the start fails at once, naming the server and not the password.
    ['DATABASE_URL', 'postgres://tollgate:s3cret@127.0.0.1:1/tollgate', /DATABASE_URL: cannot use PostgreSQL at 127\.0\.0\.1:1\/tollgate \(ECONNREFUSED/],
  ] as const) {
    const p = serve({ [name]: value });
    assert.equal(await p.exited, 2, `${name}=${value} should refuse to start`);
    assert.match(p.stderr(), message);
    assert.doesNotMatch(p.stderr(), /s3cret/, 'a password in DATABASE_URL is never printed');
  }
  const flag = serve({}, ['--port', 'nope']);
  assert.equal(await flag.exited, 2);
  assert.match(flag.stderr(), /PORT \("nope"\)/);
});

test('first start prints where it listens and an admin key that works; SIGTERM stops it cleanly', async () => {
  const p = serve({});
  const out = await p.banner();
  const url = /Tollgate listening on (http:\/\/\S+)/.exec(out)?.[1];
  const key = /^\s+(tgk_\S+)$/m.exec(out)?.[1];
  assert.ok(url, out);
  assert.ok(key, out);
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query: '{ apiKeys { name scopes } }' }),
  });
  assert.deepEqual(((await res.json()) as any).data.apiKeys, [{ name: 'bootstrap', scopes: ['ADMIN'] }]);
  const stopped = await stopWith(p.child, p.exited, 'SIGTERM');
  assert.equal(stopped.code, 0);
  assert.ok(stopped.ms < 5000, `took ${stopped.ms} ms`);

  // A second start on the same database keeps the key and prints none.
  const again = serve({});
  const out2 = await again.banner();
  assert.doesNotMatch(out2, /tgk_/);
  assert.match(out2, /printed on the first start/);
  const stopped2 = await stopWith(again.child, again.exited, 'SIGINT');
  assert.equal(stopped2.code, 0);
});

test('serve --tls-cert/--tls-key listens on https and reloads the certificate on SIGHUP', { skip: skipWithout('openssl') }, async () => {
  const { certFile, keyFile } = selfSignedCert(dir, 'serve', ['localhost']);
  const p = serve({ TOLLGATE_LOG_LEVEL: 'info', TOLLGATE_DB: join(dir, 'tls.db') }, ['--tls-cert', certFile, '--tls-key', keyFile]);
  const out = await p.banner();
  assert.match(out, /Tollgate listening on https:\/\/127\.0\.0\.1:\d+/);
  assert.match(out, /TLS certificate: .*serve\.crt \(kill -HUP \d+ reloads it\)/);
  let stdout = '';
  p.child.stdout!.on('data', (d) => (stdout += d));
  p.child.kill('SIGHUP');
  for (let i = 0; i < 100 && !stdout.includes('TLS certificate reloaded'); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(stdout, /"msg":"TLS certificate reloaded"/);
  assert.equal(p.child.exitCode, null, 'SIGHUP must not stop the server');
  const stopped = await stopWith(p.child, p.exited, 'SIGTERM');
  assert.equal(stopped.code, 0);
});
