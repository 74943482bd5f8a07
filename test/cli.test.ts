import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { driver, startServer, type TestServer, UNREACHABLE_LIMITS } from './helpers.ts';

let s: TestServer;
let key: string;
const dir = mkdtempSync(join(tmpdir(), 'tollgate-cli-'));
before(async () => {
  s = await startServer();
  key = await s.createKey(['evaluations:write']);
  const d = driver(s);
  await d.report(await d.monitor('cli ok', ['cli:ok']), 'OK');
  await d.report(await d.monitor('cli bad', ['cli:bad']), 'ALERT');
});
after(async () => {
  await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** `tollgate evaluate …` as a pipeline runs it. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'evaluate', ...args], {
      env: { ...process.env, TOLLGATE_API_KEY: key, TOLLGATE_URL: s.url, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function config(name: string, rules: unknown[], dryRun?: boolean) {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ dryRun, rules }));
  return file;
}

describe('tollgate evaluate', () => {
  test('a passing gate exits 0 and shows each rule as it lands', async () => {
    const r = await cli(['--service', 'cli', '--env', 'prod', '--config', config('ok', [{ type: 'monitor', name: 'monitors', options: { query: 'cli:ok' } }])]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /\[1\/1\] monitors: PASS/);
    assert.match(r.stdout, /Gate PASSED \(evaluation mode: Active\)/);
    const id = r.stdout.match(/Evaluation (\S+) started; follow it live at /)?.[1];
    assert.ok(id, r.stdout);
    assert.ok(r.stdout.indexOf('started; follow it live') < r.stdout.indexOf('[1/1] monitors'), 'the link comes before the first rule lands');
    assert.match(r.stdout, new RegExp(`Details: ${s.url}/evaluations/${id}\n`));
  });

  test('a failing gate exits 1 with the reason; a dry-run gate exits 0', async () => {
    const rules = [{ type: 'monitor', name: 'monitors', options: { query: 'cli:bad' } }];
    const r = await cli(['--service', 'cli', '--env', 'prod', '--config', config('bad', rules)]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /FAIL\s+monitors — Monitor "cli bad" was ALERT/);
    const dry = await cli(['--service', 'cli', '--env', 'prod', '--config', config('dry', rules, true)]);
    assert.equal(dry.code, 0, dry.stdout);
    assert.match(dry.stdout, /evaluation mode: Dry run/);
  });

  test('--json prints the result on stdout; polling works without WebSocket', async () => {
    const r = await cli(['--service', 'cli', '--env', 'prod', '--json', '--no-watch', '--config', config('json', [{ type: 'monitor', name: 'm', options: { query: 'cli:ok' } }])], {
      TOLLGATE_POLL_INTERVAL_MS: '200',
    });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.gate_status, 'pass');
    assert.deepEqual(
      out.rules.map((x: any) => [x.name, x.status]),
      [['m', 'pass']],
    );
  });

  test('client errors exit 1; unreachable servers pass unless --fail-on-error', async () => {
    const missing = await cli(['--service', 'no-such-gate', '--env', 'prod']);
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /404: no gate found for service no-such-gate/);
    const badConfig = await cli(['--service', 'cli', '--env', 'prod', '--config', config('empty', [])]);
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.stdout, /needs a non-empty "rules" array/);
    const down = await cli(['--service', 'cli', '--env', 'prod', '--timeout', '2', '--url', 'http://127.0.0.1:9']);
    assert.equal(down.code, 0, down.stdout);
    assert.match(down.stdout, /cannot reach Tollgate/);
    const strict = await cli(['--service', 'cli', '--env', 'prod', '--timeout', '2', '--url', 'http://127.0.0.1:9', '--fail-on-error']);
    assert.equal(strict.code, 1);
  });

  test('a timeout passes by default and fails with --fail-on-error', async () => {
    const long = config('long', [{ type: 'monitor', name: 'm', options: { query: 'cli:ok', duration: 3600 } }]);
    const r = await cli(['--service', 'cli', '--env', 'prod', '--timeout', '2', '--config', long]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Timeout reached after 2 s/);
    // The evaluation is still running, and its live page was linked from the start, not only with the verdict.
    const started = r.stdout.match(/Evaluation (\S+) started; follow it live at (\S+)\n/);
    assert.ok(started, r.stdout);
    assert.equal(started[2], `${s.url}/evaluations/${started[1]}`);
    assert.ok(r.stdout.indexOf(started[0]) < r.stdout.indexOf('Timeout reached'), r.stdout);
    assert.equal((await fetch(started[2])).status, 200, 'the link opens the explorer page');
    const strict = await cli(['--service', 'cli', '--env', 'prod', '--timeout', '2', '--fail-on-error', '--config', long]);
    assert.equal(strict.code, 1);
  });
});

describe('tollgate keys', () => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'keys', ...args, '--db', s.dbPath], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.once('exit', (code) => resolve({ code, stdout, stderr }));
    });

  test('create a key on the running server’s database, use it, list it, revoke it', async () => {
    const created = await run(['create', '--name', 'from-cli', '--scope', 'gates:read', '--env', 'prod']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    assert.match(secret, /^tgk_/);
    assert.equal((await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, secret)).status, 200);
    const listed = await run(['list']);
    assert.match(listed.stdout, /from-cli\tgates:read\tprod\tactive/);
    const id = listed.stdout
      .split('\n')
      .find((l) => l.includes('from-cli'))!
      .split('\t')[0]!;
    assert.equal((await run(['revoke', id])).code, 0);
    // Another process revoked it: this server notices within its 5 s authentication cache.
    let status = 200;
    for (let i = 0; i < 40 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 250));
      status = (await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, secret)).status;
    }
    assert.equal(status, 401);
  });

  test('a bad scope is refused naming it', async () => {
    const bad = await run(['create', '--name', 'x', '--scope', 'everything']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /scopes must be among/);
  });
});

describe('tollgate keys on PostgreSQL (DATABASE_URL)', async () => {
  const noPg = await skipWithoutPg();

  test('a key it makes works on every instance at once, and once it revokes it none accepts it', { skip: noPg }, async (t) => {
    const database = await createPgDatabase();
    const servers: TestServer[] = [];
    t.after(async () => {
      for (const server of servers) await server.stop();
      await database.drop();
    });
    servers.push(await startServer({ postgresUrl: database.url, nodeId: 'keys-a' }));
    servers.push(await startServer({ postgresUrl: database.url, nodeId: 'keys-b' }));
    const keys = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const { TOLLGATE_DB: _file, ...inherited } = process.env;
        const env = { ...inherited, DATABASE_URL: database.url };
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'keys', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.once('exit', (code) => resolve({ code, stdout, stderr }));
      });
    const statusOn = async (server: TestServer, secret: string) => (await server.gql('{ gates(first: 1) { edges { cursor } } }', undefined, secret)).status;

    const created = await keys(['create', '--name', 'from-cli-pg', '--scope', 'gates:read']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    assert.match(secret, /^tgk_/);
    assert.deepEqual([await statusOn(servers[0]!, secret), await statusOn(servers[1]!, secret)], [200, 200]);
    const listed = await keys(['list']);
    assert.equal(listed.code, 0, listed.stderr);
    const line = listed.stdout.split('\n').find((l) => l.includes('from-cli-pg'));
    assert.match(line ?? '', /from-cli-pg\tgates:read\t\*\tactive/);
    const revoked = await keys(['revoke', line!.split('\t')[0]!]);
    assert.equal(revoked.code, 0, revoked.stderr);
    // Instances on PostgreSQL ask it on every request: no cache to wait out.
    assert.deepEqual([await statusOn(servers[0]!, secret), await statusOn(servers[1]!, secret)], [401, 401]);
    assert.match((await keys(['list'])).stdout, /from-cli-pg\tgates:read\t\*\trevoked /);

    const both = await keys(['list', '--db', join(servers[0]!.dir, 'other.db')]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--db names a SQLite file, but DATABASE_URL points at PostgreSQL/);
  });
});

test('tollgate demo: a bad canary fails live, a clean one passes', async () => {
  const r = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'demo', '--window', '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.once('exit', (code) => resolve({ code, stdout }));
  });
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /FAIL\s+new version errors — Version v2: error rate of POST \/pay rose/);
  assert.match(r.stdout, /v2: failed, as it should; v3: passed\./);
});

describe('tollgate evaluate against a rate-limited Tollgate', () => {
  test('waits out 429s (Retry-After) instead of failing the deploy', async () => {
    // One request a second for the key: the trigger is followed at once by a poll that is refused.
    const limited = await startServer({ rateLimits: { ...UNREACHABLE_LIMITS, requestsPerSecond: 1 } });
    try {
      const limitedKey = await limited.createKey(['evaluations:write']);
      // A dry-run gate: decided (pass) at once, so the only thing in the way is the limit.
      const file = config('limited', [{ type: 'monitor', name: 'monitors', options: { query: 'limited:none' } }], true);
      const r = await cli(['--service', 'cli', '--env', 'prod', '--no-watch', '--config', file], {
        TOLLGATE_URL: limited.url,
        TOLLGATE_API_KEY: limitedKey,
        TOLLGATE_POLL_INTERVAL_MS: '10',
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /429/, 'the run met the limit');
      assert.match(r.stdout, /Gate PASSED \(evaluation mode: Dry run\)/);
    } finally {
      await limited.stop();
    }
  });
});
