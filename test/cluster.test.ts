// Issue 14's acceptance check: three real `tollgate serve` processes on one PostgreSQL database
// and one Redis channel behave as one Tollgate (a gate made on one, triggered on another, watched
// on the third; kill -9 of one mid-window; keys, idempotency and unique gates across instances).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type Client, createClient } from 'graphql-ws';
import pg from 'pg';
import WebSocket from 'ws';
import { EVALUATION_FIELDS, monitorRule } from './helpers/api.ts';
import { subscribeQueue } from './helpers/live.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { REDIS_URL, redisChannelPrefix, skipWithoutRedis } from './helpers/redis.ts';
import { waitFor } from './helpers/tools.ts';

const ADMIN_KEY = 'cluster-admin-key-0123456789abcdefghij';
/** The engine's lease (src/engine): a killed instance's evaluations are claimed within it + 4 s. */
const LEASE_MS = 30_000;

// A failed assertion must not leave a server behind: a live child keeps the test process (and CI) waiting.
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill('SIGKILL');
});

type Gql = { data?: any; errors?: Array<{ message: string; extensions?: Record<string, any> }> };

/** One `tollgate serve` child, as an operator starts it, and how to talk to it. */
async function startNode(nodeId: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', TOLLGATE_NODE_ID: nodeId, TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_BOOTSTRAP_KEY: ADMIN_KEY, ...env },
    // Their JSON logs go to CLUSTER_LOGS/<node id>.log when set (to see why a run failed).
    stdio: ['ignore', process.env.CLUSTER_LOGS ? openSync(join(process.env.CLUSTER_LOGS, `${nodeId}.log`), 'w') : 'ignore', 'pipe'],
  });
  children.add(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  exited.then(() => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const url = await waitFor(
    `node ${nodeId} to listen`,
    async () => {
      if (child.exitCode !== null) throw new Error(`node ${nodeId} exited ${child.exitCode}: ${stderr}`);
      return /Tollgate listening on (http:\/\/\S+)/.exec(stderr)?.[1];
    },
    90_000,
  ); // three tsx starts at once on a busy two-core machine take a while
  const sockets: Client[] = [];
  return {
    id: nodeId,
    child,
    async request(method: string, path: string, body?: unknown, key = ADMIN_KEY) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json().catch(() => undefined)) as any };
    },
    async gql(query: string, variables?: Record<string, unknown>, key = ADMIN_KEY): Promise<Gql> {
      return (await this.request('POST', '/graphql', { query, variables }, key)).json;
    },
    /** A graphql-ws client; `closed` resolves with the close code the server sent. */
    ws(key = ADMIN_KEY) {
      let closedWith: (code: number) => void = () => {};
      const closed = new Promise<number>((r) => (closedWith = r));
      const client = createClient({
        url: `${url.replace(/^http/, 'ws')}/graphql`,
        webSocketImpl: WebSocket,
        retryAttempts: 0,
        connectionParams: { authorization: `Bearer ${key}` },
        on: { closed: (event) => closedWith((event as { code: number }).code) },
      });
      sockets.push(client);
      return { client, closed };
    },
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      await Promise.all(sockets.map((c) => c.dispose()));
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
type Node = Awaited<ReturnType<typeof startNode>>;

/** The data of an operation that must succeed. */
async function must(node: Node, query: string, variables?: Record<string, unknown>) {
  const r = await node.gql(query, variables);
  assert.equal(r.errors, undefined, `${node.id}: ${JSON.stringify(r.errors)}`);
  return r.data;
}

const EVALUATE = `mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id status } }`;
const GET_EVALUATION = `query($id: ID!) { evaluation(id: $id) { ${EVALUATION_FIELDS} } }`;
const FOLLOW = `subscription($id: ID!) { evaluationUpdated(id: $id) { id status revision decidedAt finishedAt rules { status reason windowEndsAt } } }`;

async function externalMonitor(node: Node, tag: string, state: 'OK' | 'ALERT') {
  const id = (await must(node, 'mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', { i: { name: `m ${tag}`, type: 'EXTERNAL', tags: [tag] } })).createMonitor
    .id;
  await report(node, id, state);
  return id as string;
}

const report = (node: Node, monitorId: string, state: 'OK' | 'ALERT') =>
  must(node, 'mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId, state } });

async function createGate(node: Node, service: string, tag: string, duration: number) {
  return (await must(node, 'mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', { i: { service, env: 'prod', rules: [monitorRule('m', { query: tag, duration })] } }))
    .createGate.id as string;
}

/** A subscriber's view of an evaluation: its first snapshot, and every snapshot until it finishes. */
function follow(client: Client, id: string, timeoutMs: number) {
  const queue = subscribeQueue(client, FOLLOW, { id });
  let firstSeen: (snapshot: any) => void = () => {};
  const first = new Promise<any>((r) => (firstSeen = r));
  const all = (async () => {
    const seen: any[] = [];
    while (!seen.at(-1)?.finishedAt) {
      const v = await queue.next(timeoutMs);
      assert.equal(v.errors, undefined, JSON.stringify(v.errors));
      seen.push(v.data!.evaluationUpdated);
      if (seen.length === 1) firstSeen(seen[0]);
    }
    queue.dispose();
    return seen;
  })();
  return { first: Promise.race([first, all.then((seen) => seen[0])]), all };
}

/** Every revision from the first one seen, in order: a gap would be a change the subscriber missed. */
function assertEveryRevision(seen: any[]) {
  const revisions = seen.map((s) => s.revision);
  assert.deepEqual(
    revisions,
    revisions.map((_, i) => revisions[0] + i),
    `revisions seen: ${revisions}`,
  );
}

const noPg = await skipWithoutPg();

// A bound, not a measure: a hung socket or lease must fail the run, not hold CI.
test('three instances on one PostgreSQL and one Redis act as one Tollgate', { skip: noPg, timeout: 240_000 }, async (t) => {
  if (await skipWithoutRedis(t)) return;
  const t0 = Date.now();
  const db = await createPgDatabase();
  const sql = new pg.Pool({ connectionString: db.url, max: 2 });
  const env = { DATABASE_URL: db.url, TOLLGATE_REDIS_URL: REDIS_URL, TOLLGATE_REDIS_CHANNEL: redisChannelPrefix() };
  const nodes: Node[] = [];
  t.after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await sql.end();
    await db.drop();
  });
  // Started together: they migrate the empty database at once (one does, under the advisory lock).
  const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((id) => startNode(id, env)));
  nodes.push(a!, b!, c!);
  t.diagnostic(`three nodes up in ${Date.now() - t0} ms`);

  await t.test('a gate made on A, triggered on B, watched on C; an ALERT reported on A fails it on B at once', async () => {
    const tag = 'cluster:one';
    const monitorId = await externalMonitor(a!, tag, 'OK');
    await createGate(a!, 'checkout', tag, 20);
    const trigger = await b!.request('POST', '/api/v2/deployments/gates/evaluation', {
      data: { type: 'deployment_gates_evaluation_request', attributes: { service: 'checkout', env: 'prod', version: '1' } },
    });
    assert.equal(trigger.status, 202, JSON.stringify(trigger.json));
    const id = trigger.json.data.attributes.evaluation_id;

    const watched = follow(c!.ws().client, id, 15_000);
    assert.equal((await watched.first).status, 'IN_PROGRESS');
    const [lease] = (await sql.query('select lease_owner from evaluations where id = $1', [id])).rows;
    assert.equal(lease.lease_owner, 'b', 'the instance that triggers an evaluation drives it');

    await report(a!, monitorId, 'ALERT');
    const seen = await watched.all;
    assertEveryRevision(seen);
    const verdict = seen.at(-1);
    assert.equal(verdict.status, 'FAIL');
    // Without the wake-up crossing from A to B the rule would only be checked at its window's end.
    assert.ok(new Date(verdict.decidedAt) < new Date(verdict.rules[0].windowEndsAt), `decided ${verdict.decidedAt}, window ends ${verdict.rules[0].windowEndsAt}`);
    const evidence = (await must(c!, GET_EVALUATION, { id })).evaluation.rules[0].evidence;
    assert.deepEqual(
      evidence.failingGroups.map((g: any) => [g.monitorId, g.state]),
      [[monitorId, 'ALERT']],
      'failed for the ALERT',
    );
    for (const node of [a!, b!]) {
      const read = (await must(node, GET_EVALUATION, { id })).evaluation;
      assert.deepEqual([read.status, read.revision], [verdict.status, verdict.revision], `${node.id} reads the verdict C saw`);
    }
    const rest = await a!.request('GET', `/api/v2/deployments/gates/evaluation/${id}`);
    assert.equal(rest.json.data.attributes.gate_status, 'fail');
  });

  await t.test('a key made on A and used on B, revoked on C: B refuses it at once and closes its socket', async () => {
    const created = await must(a!, 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret key { id } } }', { i: { name: 'ci', scopes: ['GATES_READ'] } });
    const { secret } = created.createApiKey;
    const ws = b!.ws(secret);
    const live = subscribeQueue(ws.client, 'subscription { gateEvents { __typename } }');
    // An operation answered on the same socket: it is open and authenticated.
    const probe = subscribeQueue(ws.client, '{ gates(first: 1) { totalCount } }');
    assert.equal((await probe.next(10_000)).errors, undefined);
    // Also warms B's cache of authentication answers, which the revocation must drop.
    const before = await b!.gql('{ gates(first: 1) { totalCount } }', {}, secret);
    assert.equal(before.errors, undefined, JSON.stringify(before.errors));

    await must(c!, 'mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }', { id: created.createApiKey.key.id });
    const afterRevoke = await b!.request('POST', '/graphql', { query: '{ gates(first: 1) { totalCount } }' }, secret);
    // The database decides: B must not answer from what it remembers of the key (its
    // authentication cache) before C's revocation has reached it through Redis.
    assert.equal(afterRevoke.status, 401, `B still accepted the revoked key: ${JSON.stringify(afterRevoke.json)}`);
    assert.equal(await ws.closed, 4403);
    live.dispose();
  });

  await t.test('the same idempotency key sent to A, B and C at once makes one evaluation', async () => {
    await createGate(a!, 'idem', 'cluster:idem', 1);
    const input = { service: 'idem', env: 'prod', idempotencyKey: `deploy-${Date.now()}` };
    const answers = await Promise.all([a!, b!, c!].map((n) => must(n, EVALUATE, { i: input })));
    const ids = new Set(answers.map((d) => d.evaluateGate.id));
    assert.equal(ids.size, 1, `ids: ${[...ids]}`);
    const { rows } = await sql.query('select count(*)::int as n from evaluations where idempotency_key = $1', [input.idempotencyKey]);
    assert.equal(rows[0].n, 1);
  });

  await t.test('the same gate created on A and B at once: one is made, the other is a CONFLICT', async () => {
    for (let round = 0; round < 3; round++) {
      const i = { service: 'unique', env: 'prod', identifier: `race-${round}` };
      const answers = await Promise.all([a!, b!].map((n) => n.gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', { i })));
      const made = answers.filter((r) => r.data?.createGate);
      const refused = answers.filter((r) => r.errors?.[0]?.extensions?.code === 'CONFLICT');
      assert.deepEqual([made.length, refused.length], [1, 1], JSON.stringify(answers));
    }
    const { rows } = await sql.query(`select count(*)::int as n from gates where service = 'unique'`);
    assert.equal(rows[0].n, 3);
  });

  await t.test('kill -9 of B mid-window: A and C take its evaluations over and reach the same verdicts', async () => {
    const tag = 'cluster:kill';
    await externalMonitor(a!, tag, 'OK');
    await createGate(a!, 'kill9', tag, 40);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await must(b!, EVALUATE, { i: { service: 'kill9', env: 'prod', version: String(i) } })).evaluateGate.id);
    const owners = async () => (await sql.query('select lease_owner, lease_expires_at from evaluations where id = any($1)', [ids])).rows;
    assert.deepEqual(new Set((await owners()).map((r) => r.lease_owner)), new Set(['b']));

    // Subscribed on C before the kill: each sees its evaluation through to the verdict. Running,
    // though B read monitors before A made this one (B must not select from what it read then).
    const watcher = c!.ws().client;
    const following = ids.map((id) => follow(watcher, id, 70_000));
    for (const f of following) {
      const first = await f.first;
      assert.equal(first.status, 'IN_PROGRESS', JSON.stringify(first));
    }
    await b!.kill9();
    const killedAt = Date.now();
    const takenOver = await waitFor(
      'every evaluation of B leased by A or C',
      async () => {
        const rows = await owners();
        return rows.every((r) => (r.lease_owner === 'a' || r.lease_owner === 'c') && Number(r.lease_expires_at) > Date.now()) && rows;
      },
      LEASE_MS + 15_000,
    );
    t.diagnostic(`leases taken over ${Date.now() - killedAt} ms after kill -9 (by ${[...new Set(takenOver.map((r) => r.lease_owner))].join(', ')})`);

    const verdicts = await Promise.all(following.map((f) => f.all));
    for (const seen of verdicts) {
      assertEveryRevision(seen);
      assert.equal(seen.at(-1).status, 'PASS', JSON.stringify(seen.at(-1)));
    }
    for (const id of ids) assert.equal((await must(a!, GET_EVALUATION, { id })).evaluation.status, 'PASS');
  });
  t.diagnostic(`cluster test took ${Date.now() - t0} ms`);
});
