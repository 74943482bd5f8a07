// What holds across instances sharing one PostgreSQL and one Redis (docs/scale-out.md), beyond
// the acceptance run of test/cluster.test.ts: the database or Redis decides, not a process.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pg from 'pg';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { REDIS_URL, redisChannelPrefix, skipWithoutRedis } from './helpers/redis.ts';
import { ADMIN_KEY, startServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/tools.ts';

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
