// Faults an operator or a careless client causes: a second server on the same file, storage
// that stops being writable under a running server, and requests the server cannot parse.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../src/config.ts';
import { openDb } from '../src/db/client.ts';
import { ADMIN_KEY, CREATE_GATE, sleep, startServer, type TestServer } from './helpers.ts';

const root = mkdtempSync(join(tmpdir(), 'tollgate-faults-'));
chmodSync(root, 0o777);
after(() => {
  chmodAll(root);
  rmSync(root, { recursive: true, force: true });
});

/** Gives every directory back its write bit, so a test's read-only directory can be removed. */
function chmodAll(dir: string) {
  spawnSync('chmod', ['-R', 'u+rwX,go+rwX', dir]);
}

let counter = 0;
/** A fresh directory every user may write, for one database. */
function freshDir(): string {
  const dir = join(root, `case-${++counter}`);
  mkdirSync(dir);
  chmodSync(dir, 0o777);
  return dir;
}

/**
 * Permissions do not bind root, so a test about a read-only file runs the server as an
 * unprivileged user (nobody) when the test itself runs as root.
 */
const asUnprivileged = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};

/** `tollgate serve` as a user runs it, in its own process. */
function serve(dbPath: string, options: { unprivileged?: boolean } = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', TOLLGATE_DB: dbPath, TOLLGATE_BOOTSTRAP_KEY: ADMIN_KEY, TOLLGATE_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(options.unprivileged ? asUnprivileged : {}),
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let url = '';
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}`, ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, json, text };
  };
  return {
    child,
    exited,
    stderr: () => stderr,
    /** Resolves with the URL once it listens, or null if it exited first. */
    async started(): Promise<string | null> {
      for (let i = 0; i < 600 && !/listening on (http:\/\/\S+)/.test(stderr); i++) {
        if (child.exitCode !== null) return null;
        await sleep(50);
      }
      url = /listening on (http:\/\/\S+)/.exec(stderr)?.[1] ?? '';
      assert.ok(url, `did not start: ${stderr}`);
      return url;
    },
    /** The exit code, or 'still running' (and then it is stopped) if it has not exited within the time. */
    async exitCode(ms = 30_000): Promise<number | null | 'still running'> {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'still running'>((r) => (timer = setTimeout(() => r('still running'), ms)));
      const code = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (code === 'still running') {
        child.kill('SIGKILL');
        await exited;
      }
      return code;
    },
    call,
    gql: (query: string, variables?: Record<string, unknown>) => call('POST', '/graphql', { query, variables }),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

type Served = ReturnType<typeof serve>;

const gateInput = (service: string) => ({ input: { service, env: 'prod', rules: [{ name: 'm', options: { monitor: { query: 'tag:x' } } }] } });

async function waitFor<T>(what: string, probe: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
  let last: T = await probe();
  for (let i = 0; i < 150 && !done(last); i++) {
    await sleep(100);
    last = await probe();
  }
  assert.ok(done(last), `${what}: last seen ${JSON.stringify(last)}`);
  return last;
}

describe('one server per database file', () => {
  test('a second server on the same file refuses to start, naming the file and the holder; the keys CLI still works', async () => {
    const db = join(freshDir(), 'tollgate.db');
    const first = serve(db);
    try {
      assert.ok(await first.started());
      const second = serve(db);
      assert.equal(await second.exitCode(), 2, second.stderr());
      assert.match(second.stderr(), new RegExp(`${db.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
      assert.match(second.stderr(), new RegExp(`another Tollgate server \\(pid ${first.child.pid}\\b`));
      assert.doesNotMatch(second.stderr(), /\n\s+at /, 'no stack trace');

      // Local administration on the file keeps working beside the running server.
      const keys = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'keys', 'list', '--db', db], { encoding: 'utf8' });
      assert.equal(keys.status, 0, keys.stderr);
      assert.match(keys.stdout, /bootstrap/);
      // And the first server still serves, its files untouched.
      assert.equal((await first.gql(CREATE_GATE, gateInput('still-mine'))).status, 200);
      assert.equal((await first.call('GET', '/readyz')).status, 200);
    } finally {
      await first.stop();
    }
  });

  test('in one process too: a second app on the file is refused, and stop() hands the file on', async () => {
    const dir = freshDir();
    const first = await startServer({}, { dir });
    try {
      await assert.rejects(startServer({}, { dir }), new RegExp(`another Tollgate server \\(pid ${process.pid}\\b`));
    } finally {
      await first.stop();
    }
    const next = await startServer({}, { dir });
    await next.stop();
  });

  test('the lock dies with its holder: after kill -9 a new server starts on the same file at once', async () => {
    const db = join(freshDir(), 'tollgate.db');
    const first = serve(db);
    assert.ok(await first.started());
    first.child.kill('SIGKILL');
    await first.exited;
    const second = serve(db);
    try {
      assert.ok(await second.started(), second.stderr());
    } finally {
      await second.stop();
    }
  });
});

describe('storage that cannot be written', { skip: process.platform === 'win32' && 'POSIX permissions' }, () => {
  test('a read-only database file, or a read-only directory, is refused at start with exit 2 naming it', async () => {
    const dir = freshDir();
    const db = join(dir, 'tollgate.db');
    openDb(db).$client.close();
    chmodSync(db, 0o444);
    const refused = serve(db, { unprivileged: true });
    assert.equal(await refused.exitCode(), 2, refused.stderr());
    assert.match(refused.stderr(), /tollgate\.db/);
    assert.match(refused.stderr(), /read-only|not writable/);
    assert.doesNotMatch(refused.stderr(), /\n\s+at /, 'no stack trace');

    const dir2 = freshDir();
    const db2 = join(dir2, 'tollgate.db');
    openDb(db2).$client.close();
    chmodSync(db2, 0o666);
    chmodSync(dir2, 0o555);
    const refused2 = serve(db2, { unprivileged: true });
    assert.equal(await refused2.exitCode(), 2, refused2.stderr());
    assert.match(refused2.stderr(), new RegExp(`directory ${dir2.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    chmodSync(dir2, 0o777);
  });

  describe('made read-only under a running server', () => {
    let server: Served;
    let db: string;
    before(async () => {
      db = join(freshDir(), 'tollgate.db');
      server = serve(db, { unprivileged: true });
      assert.ok(await server.started(), server.stderr());
    });
    after(async () => {
      chmodSync(db, 0o644);
      await server.stop();
    });

    test('every transport answers UNAVAILABLE (503) with a clear message, /readyz is 503, and both recover once it is writable again', async () => {
      assert.equal((await server.gql(CREATE_GATE, gateInput('before'))).json.data.createGate.service, 'before');
      chmodSync(db, 0o444);
      const ready = await waitFor(
        '/readyz turns 503',
        () => server.call('GET', '/readyz'),
        (r) => r.status === 503,
      );
      assert.match(ready.text, /tollgate\.db.*(read-only|not writable)/);

      const read = await server.gql('{ gates(first: 5) { edges { node { service } } } }');
      assert.deepEqual(
        read.json.data.gates.edges.map((e: any) => e.node.service),
        ['before'],
        'reads go on',
      );

      const graphql = await server.gql(CREATE_GATE, gateInput('during'));
      assert.equal(graphql.status, 503);
      assert.equal(graphql.json.errors[0].extensions.code, 'UNAVAILABLE');
      assert.match(graphql.json.errors[0].message, /storage/i);

      const rest = await server.call('POST', '/api/v2/deployment_gates', { data: { type: 'deployment_gate', attributes: { service: 'rest-during', env: 'prod' } } });
      assert.equal(rest.status, 503);
      assert.match(rest.json.errors[0].detail, /storage/i);

      const hook = await server.call('POST', '/hooks/gate', { service: 'before', env: 'prod', version: 'v1' });
      assert.equal(hook.status, 503);
      assert.match(hook.json.errors[0].detail, /storage/i);

      const nowNs = `${BigInt(Date.now()) * 1_000_000n}`;
      const otlp = await server.call('POST', '/v1/traces', {
        resourceSpans: [
          {
            resource: { attributes: [{ key: 'service.name', value: { stringValue: 'svc' } }] },
            scopeSpans: [{ spans: [{ name: 'GET /x', kind: 2, startTimeUnixNano: nowNs, endTimeUnixNano: nowNs }] }],
          },
        ],
      });
      assert.equal(otlp.status, 503);
      assert.match(otlp.json.message, /storage/i);

      chmodSync(db, 0o644);
      await waitFor(
        '/readyz back to 200',
        () => server.call('GET', '/readyz'),
        (r) => r.status === 200,
      );
      assert.equal((await server.gql(CREATE_GATE, gateInput('after'))).json.data.createGate.service, 'after');
    });
  });

  test('a -wal deleted under a running server: writes refused, /readyz 503, and nothing acknowledged is lost after kill -9', async () => {
    const db = join(freshDir(), 'tollgate.db');
    const first = serve(db);
    assert.ok(await first.started());
    const acknowledged: string[] = [];
    const create = async (service: string) => {
      const r = await first.gql(CREATE_GATE, gateInput(service));
      if (r.json.data?.createGate) acknowledged.push(service);
      return r;
    };
    try {
      for (const s of ['one', 'two', 'three']) assert.equal((await create(s)).status, 200);
      assert.ok(existsSync(`${db}-wal`));
      unlinkSync(`${db}-wal`);
      await create('right-after'); // acknowledged or refused, both are honest; what matters is that an acknowledged one survives
      const ready = await waitFor(
        '/readyz turns 503',
        () => first.call('GET', '/readyz'),
        (r) => r.status === 503,
      );
      assert.match(ready.text, /-wal/);
      const refused = await create('later');
      assert.equal(refused.status, 503);
      assert.equal(refused.json.errors[0].extensions.code, 'UNAVAILABLE');
    } finally {
      first.child.kill('SIGKILL');
      await first.exited;
    }
    const second = serve(db);
    try {
      assert.ok(await second.started(), second.stderr());
      const r = await second.gql('{ gates(first: 50) { edges { node { service } } } }');
      const services = r.json.data.gates.edges.map((e: any) => e.node.service).sort();
      assert.deepEqual(services, [...acknowledged].sort());
      assert.ok(acknowledged.includes('three'));
    } finally {
      await second.stop();
    }
  });
});

test('durability: synchronous NORMAL by default, FULL with TOLLGATE_DB_SYNCHRONOUS=full, anything else refused', async () => {
  const normal = await startServer();
  try {
    assert.equal(normal.app.deps.db.$client.pragma('synchronous', { simple: true }), 1);
    assert.equal(normal.app.deps.db.$client.pragma('journal_mode', { simple: true }), 'wal');
  } finally {
    await normal.stop();
  }
  const full = await startServer({ dbSynchronous: 'full' });
  try {
    assert.equal(full.app.deps.db.$client.pragma('synchronous', { simple: true }), 2);
  } finally {
    await full.stop();
  }
  assert.equal(loadConfig({ TOLLGATE_DB_SYNCHRONOUS: 'full' }).dbSynchronous, 'full');
  assert.throws(() => loadConfig({ TOLLGATE_DB_SYNCHRONOUS: 'sometimes' }), /TOLLGATE_DB_SYNCHRONOUS.*must be normal or full/);
});

describe('requests the server cannot parse are 400s, not 500s', () => {
  let s: TestServer;
  let key: string;
  before(async () => {
    s = await startServer();
    key = await s.createKey(['evaluations:write', 'ingest']);
  });
  after(() => s.stop());

  const post = (path: string, raw: string) => fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });

  test('hook bodies that are JSON but not an object', async () => {
    for (const path of ['/hooks/flagger', '/hooks/gate', '/hooks/alertmanager']) {
      for (const raw of ['null', '42', '[]', '[{"service":"x"}]', '"text"', 'true']) {
        const r = await post(`${path}?key=${key}`, raw);
        assert.equal(r.status, 400, `${path} ${raw}`);
        const body = (await r.json()) as any;
        assert.match(body.errors[0].detail, /must be a JSON object/, `${path} ${raw}`);
      }
    }
    const r = await post(`/hooks/gate?key=${key}`, '{"metadata": "not an object", "service": "x", "env": "prod"}');
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as any).errors[0].detail, /metadata: must be a JSON object/);
  });

  test('REST paths with bad percent-encoding', async () => {
    for (const path of [
      '/api/v2/deployment_gates/%E0%A4%A',
      '/api/v2/deployment_gates/%',
      '/api/v2/deployment_gates/%ZZ/rules',
      '/api/v2/deployment_gates/00000000-0000-4000-8000-000000000000/rules/%C0%AF',
      '/api/v2/deployments/gates/evaluation/%FF',
      '/api/unstable/deployment_gates/%E0%A4%A',
    ]) {
      const r = await s.request('GET', path);
      assert.equal(r.status, 400, path);
      assert.match(r.json.errors[0].detail, /percent-encoding/, path);
    }
    const put = await s.request('PUT', '/api/v2/deployment_gates/%FF', { body: { data: { attributes: { dry_run: true } } } });
    assert.equal(put.status, 400);
  });

  test('a request target that is not a plain path is a 4xx, and the server keeps serving (`//[` used to end the process)', async () => {
    const { port } = new URL(s.url);
    for (const target of ['//[', '//:99999/x', '/\\[']) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: target, method: 'GET' }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.end();
      });
      assert.ok(status >= 400 && status < 500, `${target}: ${status}`);
    }
    assert.equal((await s.request('GET', '/healthz')).status, 200);
  });
});
