// What holds across instances sharing one PostgreSQL and one Redis (docs/scale-out.md), beyond
// the acceptance run of test/cluster.test.ts: the database or Redis decides, not a process.
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { describe, type TestContext, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createApiKey, createApiKeyInputSchema } from '../src/domain/apiKeys.ts';
import { parseInput } from '../src/domain/errors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { REDIS_URL, redisChannelPrefix, skipWithoutRedis } from './helpers/redis.ts';
import { ADMIN_KEY, startServer, type TestServer, UNREACHABLE_LIMITS } from './helpers/server.ts';
import { freePort, waitFor } from './helpers/tools.ts';

const noPg = await skipWithoutPg();

/** Two instances on a fresh database and Redis channel; `done()` stops them, ends `sessions`, then drops the database. */
async function twoInstances(overrides: Parameters<typeof startServer>[0] = {}) {
  const database = await createPgDatabase();
  const shared = { postgresUrl: database.url, redisUrl: REDIS_URL, redisChannel: redisChannelPrefix(), ...overrides };
  const servers: TestServer[] = [];
  const sessions: pg.Client[] = [];
  const done = async () => {
    for (const c of sessions) await c.end().catch(() => {});
    for (const s of servers) await s.stop().catch(() => {});
    await database.drop();
  };
  try {
    servers.push(await startServer({ ...shared, nodeId: 'instance-a' }));
    servers.push(await startServer({ ...shared, nodeId: 'instance-b' }));
  } catch (err) {
    await done();
    throw err;
  }
  /** A session of its own on the database (to hold locks), ended by done(). */
  const session = async () => {
    const c = new pg.Client({ connectionString: database.url });
    await c.connect();
    sessions.push(c);
    return c;
  };
  return { a: servers[0]!, b: servers[1]!, session, done };
}

describe('two instances on one PostgreSQL and Redis', { skip: noPg }, () => {
  test('the same new alertname sent to both at once makes one monitor (the unique alert key decides)', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const { a, b, session, done } = await twoInstances();
    t.after(done);
    const staging = await a.createKey(['ingest'], ['staging']);
    const notify = (s: TestServer, key: string, alertname: string, env: string) =>
      fetch(`${s.url}/hooks/alertmanager?key=${key}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ version: '4', status: 'firing', alerts: [{ status: 'firing', labels: { alertname, env, instance: s === a ? 'a' : 'b' } }] }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
    const monitorsNamed = (alertname: string) =>
      a.sql<{ id: string; tags: string }>(`select id, tags::text from monitors where tags @> ?::jsonb order by id`, JSON.stringify([`alertname:${alertname}`]));

    // An admin key (one monitor per alertname), then a key limited to staging (one per alertname
    // and env: the prod monitor of the first round is not its to change).
    for (const [key, env] of [
      [ADMIN_KEY, 'prod'],
      [staging, 'staging'],
    ] as const) {
      // Both requests read "no monitor yet", then wait at their insert until this session lets
      // them through together: the race happens every run, whatever the machine's speed.
      const blocker = await session();
      // Another session watches: statistics views read inside a transaction keep its first answer.
      const watcher = await session();
      await blocker.query('begin');
      await blocker.query('lock table monitors in share mode');
      const sent = [notify(a, key, 'DiskFull', env), notify(b, key, 'DiskFull', env)];
      await waitFor(
        'both inserts to wait for the lock',
        async () =>
          (
            await watcher.query<{ n: number }>(
              `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query ilike 'insert into "monitors"%'`,
            )
          ).rows[0]!.n === 2,
        20_000,
      );
      await blocker.query('commit');
      const answers = await Promise.all(sent);
      for (const r of answers) assert.deepEqual([r.status, r.body.received, r.body.problems], [200, 1, []], JSON.stringify(r.body));
      const mine = (await monitorsNamed('DiskFull')).filter((m) => m.tags.includes(`"env:${env}"`));
      assert.equal(mine.length, 1, `one ${env} monitor for DiskFull: ${JSON.stringify(mine)}`);
      // Both alerts landed in it, each as its own group.
      const groups = await a.sql<{ group: string; state: string }>('select "group", state from monitor_groups where monitor_id = ? order by "group"', mine[0]!.id);
      assert.deepEqual(
        groups.map((g) => [g.group, g.state]),
        [
          [`env:${env},instance:a`, 'alert'],
          [`env:${env},instance:b`, 'alert'],
        ],
      );
    }
    assert.equal((await monitorsNamed('DiskFull')).length, 2);
  });
});

const QUERY = '{ gates(first: 1) { edges { cursor } } }';
/** A secret no key has: each one presented is a failed authentication of the test's address. */
const badSecret = (n: number | string) => `tgk_not-a-key-${n}-0123456789abcdefghijklmnop`;

/** A key of its own, made without a request (an admin request would count against the admin key's budget). */
async function freshKey(s: TestServer, name: string): Promise<string> {
  return (await createApiKey(s.app.deps, SYSTEM, parseInput(createApiKeyInputSchema, { name, scopes: ['gates:read'] }))).secret;
}

/** Once `s` refuses a bad secret unheard (429), its count of the address's failures has reached the limit. */
const untilAddressRefused = (s: TestServer) => waitFor('the address to be refused', async () => (await s.gql(QUERY, undefined, badSecret('probe'))).status === 429, 20_000);

describe('rate limits with TOLLGATE_REDIS_URL', { skip: noPg }, () => {
  test("a key's request budget and an address's failed authentications are counted once for the whole Tollgate", async (t) => {
    if (await skipWithoutRedis(t)) return;
    const { a, b, done } = await twoInstances({ rateLimits: { ...UNREACHABLE_LIMITS, requestsPerSecond: 3, authFailuresPerMinute: 3 } });
    t.after(done);

    // A key spends its 3 requests of the second on A; B then refuses its fourth. B sees each key
    // once, so it refuses only by A's count. A second may pass between the two on a slow
    // machine (a new window): then another key tries again.
    let refusedByB: Awaited<ReturnType<TestServer['gql']>> | undefined;
    for (let attempt = 0; attempt < 10 && !refusedByB; attempt++) {
      const secret = await freshKey(a, `budget-${attempt}`);
      const onA = await Promise.all([1, 2, 3].map(() => a.gql(QUERY, undefined, secret)));
      assert.deepEqual(
        onA.map((r) => r.status),
        [200, 200, 200],
      );
      const onB = await b.gql(QUERY, undefined, secret);
      if (onB.status === 429) refusedByB = onB;
      else assert.equal(onB.status, 200);
    }
    assert.ok(refusedByB, 'B never refused a key that had spent its budget on A: each instance counts its own');
    assert.match(refusedByB.errors![0]!.message, /over its limit of 3 requests per second/);

    // Three failed authentications on A: B refuses the address too, before looking at the secret.
    for (let i = 0; i < 3; i++) assert.equal((await a.gql(QUERY, undefined, badSecret(i))).status, 401);
    await untilAddressRefused(a);
    const onB = await b.gql(QUERY, undefined, badSecret('on-b'));
    assert.equal(onB.status, 429);
    assert.match(onB.errors![0]!.message, /too many failed authentications from this address/);
  });
});

/** A proxy to the test Redis that can stall: connections stay open and nothing passes either way. */
async function stallingRedis(t: TestContext) {
  let stalled = false;
  const sockets = new Set<Socket>();
  const pipes: Array<{ from: Socket; to: Socket }> = [];
  const server = createServer((client) => {
    const upstream = connect(6379, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
    }
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      pipes.push({ from, to });
      from.on('data', (chunk) => !stalled && to.write(chunk));
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return { url: `redis://127.0.0.1:${port}`, stall: () => void (stalled = true) };
}

describe('rate limits when Redis does not answer', () => {
  const limits = { rateLimits: { ...UNREACHABLE_LIMITS, authFailuresPerMinute: 2 } };

  test('unreachable from the start: each instance counts in its own memory, and requests are served', async (t) => {
    const s = await startServer({ ...limits, redisUrl: `redis://127.0.0.1:${await freePort()}`, redisChannel: redisChannelPrefix() });
    t.after(() => s.stop());
    assert.equal((await s.gql(QUERY)).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await s.gql(QUERY, undefined, badSecret(i))).status, 401);
    await untilAddressRefused(s);
    assert.equal((await s.gql(QUERY)).status, 200, 'a key that authenticated lately gets past the address block');
  });

  test('stalled after it answered: a request waits for it a moment, then is counted in memory', { timeout: 120_000 }, async (t) => {
    if (await skipWithoutRedis(t)) return;
    const redis = await stallingRedis(t);
    const channel = redisChannelPrefix();
    const s = await startServer({ ...limits, redisUrl: redis.url, redisChannel: channel });
    t.after(() => s.stop());
    const direct = new Redis(REDIS_URL);
    t.after(() => direct.disconnect());
    // Until its connection is up, the instance counts in memory: a request counted in Redis says it is.
    await waitFor(
      'requests counted in Redis',
      async () => {
        assert.equal((await s.gql(QUERY)).status, 200);
        return (await direct.keys(`${channel}:limits:requests:*`)).length > 0;
      },
      20_000,
    );
    // One failure counted in Redis…
    assert.equal((await s.gql(QUERY, undefined, badSecret(0))).status, 401);
    await waitFor('the failure counted in Redis', async () => (await direct.get(`${channel}:limits:auth-failures:127.0.0.1`)) === '1', 20_000);
    redis.stall();
    // …then none reaches it: the count starts again in memory, and two failures there refuse the
    // address. On a loaded machine Redis may have taken over 250 ms with the first failure, which
    // memory then counted too, so one more failure can be enough. Every request is answered.
    const unauthorized: number[] = [];
    await waitFor(
      'the address to be refused from memory',
      async () => {
        const status = (await s.gql(QUERY, undefined, badSecret(unauthorized.length + 1))).status;
        if (status === 401) unauthorized.push(status);
        else assert.equal(status, 429);
        return status === 429;
      },
      20_000,
    );
    assert.ok(unauthorized.length >= 1 && unauthorized.length <= 2, `${unauthorized.length} failures after the stall before the address was refused; the limit is 2`);
    assert.equal((await s.gql(QUERY)).status, 200);
  });
});
