// One instance of several evaluates the monitors: the 'monitors' lease (src/db/leases.ts) in the
// shared database elects it. The lease's rules on whichever store TOLLGATE_TEST_STORE selects, and
// two instances on one PostgreSQL and Redis, where spans ingested on the other one are judged by
// the holder alone, and the other takes over when the holder stops.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { holdLease, releaseLease } from '../src/db/leases.ts';
import { MONITOR_LEASE, monitorLeaseMs } from '../src/sources/monitorEvaluator.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { REDIS_URL, redisChannelPrefix, skipWithoutRedis } from './helpers/redis.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/tools.ts';

describe('holdLease', () => {
  let s: TestServer;
  after(async () => s?.stop());

  test('takes a free lease, renews its own, refuses another until it expires, releases only its own', async () => {
    s = await startServer();
    const db = s.app.deps.db;
    const t0 = new Date('2026-01-01T00:00:00Z');
    const at = (ms: number) => new Date(t0.getTime() + ms);
    assert.equal(await holdLease(db, 'job', 'a', t0, 1000), true, 'free: taken');
    assert.equal(await holdLease(db, 'job', 'a', at(900), 1000), true, 'ours: renewed (to 1900)');
    assert.equal(await holdLease(db, 'job', 'b', at(1500), 1000), false, 'held by a until 1900');
    assert.equal(await holdLease(db, 'other', 'b', at(1500), 1000), true, 'another name is another lease');
    assert.equal(await holdLease(db, 'job', 'b', at(2000), 1000), true, 'expired: taken over');
    assert.equal(await holdLease(db, 'job', 'a', at(2100), 1000), false, 'a lost it');
    await releaseLease(db, 'job', 'a'); // not a's any more: no effect
    assert.equal(await holdLease(db, 'job', 'a', at(2200), 1000), false);
    await releaseLease(db, 'job', 'b');
    assert.equal(await holdLease(db, 'job', 'a', at(2300), 1000), true, 'released: free at once');
    const rows = await s.sql<{ name: string; owner: string }>("select name, owner from leases where name in ('job', 'other') order by name");
    assert.deepEqual(
      rows.map((r) => [r.name, r.owner]),
      [
        ['job', 'a'],
        ['other', 'b'],
      ],
    );
  });

  test('the evaluator lease runs three rounds, at least 30 s', () => {
    assert.equal(monitorLeaseMs(1000), 30_000);
    assert.equal(monitorLeaseMs(15_000), 45_000);
  });
});

describe('two instances on one PostgreSQL', async () => {
  const noPg = await skipWithoutPg();
  const servers: TestServer[] = [];
  let drop: (() => Promise<void>) | undefined;
  after(async () => {
    for (const s of servers) await s.stop().catch(() => {});
    await drop?.();
  });

  test('spans ingested on B are judged once, by A (the lease holder); when A stops, B takes over', { skip: noPg }, async (t) => {
    if (await skipWithoutRedis(t)) return;
    const database = await createPgDatabase();
    drop = database.drop;
    const shared = { postgresUrl: database.url, redisUrl: REDIS_URL, redisChannel: redisChannelPrefix(), monitorIntervalMs: 200 };
    const a = await startServer({ ...shared, nodeId: 'node-a' });
    servers.push(a);
    const leaseOwner = async () => (await a.sql<{ owner: string }>('select owner from leases where name = ?', MONITOR_LEASE))[0]?.owner;
    await waitFor('A to take the monitor lease', async () => (await leaseOwner()) === 'node-a', 10_000);
    const b = await startServer({ ...shared, nodeId: 'node-b' });
    servers.push(b);

    const created = await a.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', {
      i: { name: 'pay errors', type: 'APM', critical: 0.2, apm: { metric: 'ERROR_RATE', service: 'lease-svc', env: 'prod', window: 300 } },
    });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const id: string = created.data.createMonitor.id;
    const key = await a.createKey(['ingest']);
    const ingest = async (on: TestServer, errors: number, total: number) => {
      const now = BigInt(Date.now()) * 1_000_000n;
      const spans = Array.from({ length: total }, (_, i) => ({
        name: 'POST /pay',
        kind: 2,
        startTimeUnixNano: String(now),
        endTimeUnixNano: String(now + 5_000_000n),
        status: { code: i < errors ? 2 : 1 },
      }));
      const attributes = [
        { key: 'service.name', value: { stringValue: 'lease-svc' } },
        { key: 'deployment.environment', value: { stringValue: 'prod' } },
      ];
      const r = await fetch(`${on.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ resourceSpans: [{ resource: { attributes }, scopeSpans: [{ spans }] }] }),
      });
      assert.equal(r.status, 200);
    };
    const transitions = async () => await a.sql<{ to: string }>('select "to" from monitor_transitions where monitor_id = ? order by at, id', id);
    const recordedTransitions = (s: TestServer) => s.queries.filter((q) => /insert into "monitor_transitions"/i.test(q)).length;
    const stateOf = async () => (await a.gql('query($id: ID!) { monitor(id: $id) { state } }', { id })).data.monitor.state;

    a.queries.length = 0;
    b.queries.length = 0;
    await ingest(b, 5, 10);
    await waitFor('the monitor to alert', async () => (await stateOf()) === 'ALERT', 10_000);
    // Several rounds of both instances pass: the state holds, recorded once, and never by B.
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(
      (await transitions()).map((r) => r.to),
      ['alert'],
    );
    assert.equal(recordedTransitions(a), 1);
    assert.equal(recordedTransitions(b), 0, 'B, not holding the lease, evaluated nothing');
    // The evaluator's read of a monitor's window (statsRows), not the ingestion's read of one bucket.
    const windowReads = (s: TestServer) => s.queries.filter((q) => /^select "version", "resource", "primary_tag", "hits", "errors", "durations" from "apm_stats"/i.test(q)).length;
    assert.ok(windowReads(a) > 0);
    assert.equal(windowReads(b), 0, 'B did not evaluate the monitor');

    await a.stop();
    servers.splice(servers.indexOf(a), 1);
    // A handed the lease back: B takes it at its next round, not after the 30 s lease.
    await waitFor(
      'B to take the monitor lease',
      async () => (await b.sql<{ owner: string }>('select owner from leases where name = ?', MONITOR_LEASE))[0]?.owner === 'node-b',
      5_000,
    );
    await ingest(b, 0, 200); // error rate 5/210: OK
    await waitFor(
      'B to record the recovery',
      async () => (await b.sql<{ to: string }>('select "to" from monitor_transitions where monitor_id = ? order by at, id', id)).length === 2,
      10_000,
    );
    const recovered = await b.sql<{ to: string }>('select "to" from monitor_transitions where monitor_id = ? order by at, id', id);
    assert.deepEqual(
      recovered.map((r) => r.to),
      ['alert', 'ok'],
    );
    assert.equal(recordedTransitions(b), 1);
  });
});
