import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { ConfigError, loadConfig } from '../src/config.ts';
import { deserialize, serialize } from '../src/db/taggedJson.ts';
import { loadSnapshot, recordRuleUpdate } from '../src/domain/evaluations.ts';
import { createEvents, type Topics } from '../src/domain/events.ts';
import { createLogger } from '../src/log.ts';
import { createRedisEventTarget } from '../src/server/redisEvents.ts';
import { subscribeQueue } from './helpers/live.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { REDIS_URL, redisChannelPrefix, skipWithoutRedis } from './helpers/redis.ts';
import { freePort, waitFor } from './helpers/tools.ts';
import { driver, jitMonitor, startServer } from './helpers.ts';

/** A logger whose lines the test reads. */
function capturedLog() {
  const lines: { level: number; msg: string; role?: string }[] = [];
  return { log: createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line)) }), lines };
}

/** A target on the test Redis, wrapped as the server wraps it, closed after the test. */
function instance(t: TestContext, prefix: string, options: { url?: string; maxPending?: number } = {}) {
  const { log, lines } = capturedLog();
  const nodeId = `node-${randomUUID()}`;
  const shared = createRedisEventTarget({ url: options.url ?? REDIS_URL, channelPrefix: prefix, log, nodeId, maxPending: options.maxPending });
  t.after(() => shared.close());
  return { ...shared, events: createEvents(shared.target), lines, nodeId };
}

/** Resolves with the first `count` payloads of a topic. */
function collect<T extends keyof Topics>(events: ReturnType<typeof createEvents>, topic: T, count = 1): { got: Topics[T][]; done: Promise<Topics[T][]> } {
  const got: Topics[T][] = [];
  const done = new Promise<Topics[T][]>((resolve) => {
    const off = events.on(topic, (p) => {
      got.push(p);
      if (got.length === count) {
        off();
        resolve(got);
      }
    });
  });
  return { got, done };
}

const subscribed = (...targets: { ready(): { ok: boolean } }[]) => waitFor('redis subscriptions', async () => targets.every((x) => x.ready().ok));

/** An evaluation.changed payload as the domain publishes it: Dates, nulls, JSON columns. */
function evaluationSnapshot(): Topics['evaluation.changed'] {
  const startedAt = new Date('2026-03-01T10:00:00.123Z');
  return {
    evaluation: {
      id: 'ev_1',
      gateId: null,
      service: 'checkout',
      env: 'prod',
      identifier: 'default',
      version: '1.2.3',
      status: 'pass',
      dryRun: false,
      triggerEnvs: ['prod', 'staging'],
      startedAt,
      decidedAt: new Date(startedAt.getTime() + 60_000),
      finishedAt: null,
      revision: 3,
    },
    rules: [
      {
        id: 'rev_1',
        evaluationId: 'ev_1',
        name: 'no alerts',
        status: 'pass',
        evidence: { checks: [{ at: new Date('2026-03-01T10:00:30Z'), value: 0.5 }], note: null },
        startedAt,
        finishedAt: new Date(startedAt.getTime() + 30_000),
      },
    ],
  } as unknown as Topics['evaluation.changed'];
}

describe('events between processes through Redis', () => {
  it('carries an evaluation change from A to B with its Dates, and A hears its own event once', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const prefix = redisChannelPrefix();
    const a = instance(t, prefix);
    const b = instance(t, prefix);
    await subscribed(a, b);
    const onA = collect(a.events, 'evaluation.changed', 2);
    const onB = collect(b.events, 'evaluation.changed');
    const sent = evaluationSnapshot();
    a.events.publish('evaluation.changed', sent);
    assert.equal(onA.got.length, 1, 'A hears its own event at once, without waiting for Redis');
    const [received] = await onB.done;
    assert.ok(received!.evaluation.startedAt instanceof Date);
    assert.ok(received!.evaluation.decidedAt instanceof Date);
    assert.deepEqual(received, sent);
    assert.notEqual(received, sent, 'a copy, not the publisher object');

    // B answers after it heard A's event, so Redis delivers A's own echo (if it were not ignored) before B's answer.
    const answer = collect(a.events, 'config.changed');
    b.events.publish('config.changed', null);
    assert.deepEqual(await answer.done, [null]);
    assert.equal(onA.got.length, 1, 'A did not hear its own event again through Redis');
    assert.equal(a.stats().received, 1);
  });

  it('keeps the order of 200 events, and another prefix hears none of them', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const prefix = redisChannelPrefix();
    const other = redisChannelPrefix();
    const a = instance(t, prefix);
    const b = instance(t, prefix);
    const c = instance(t, other);
    const d = instance(t, other);
    await subscribed(a, b, c, d);
    const heardByC: string[] = [];
    c.target.addEventListener('apm.ingested', () => heardByC.push('apm.ingested'));
    c.target.addEventListener('config.changed', () => heardByC.push('config.changed'));
    const onB = collect(b.events, 'apm.ingested', 200);
    const at = new Date('2026-03-01T00:00:00Z');
    for (let i = 0; i < 200; i++) a.events.publish('apm.ingested', { service: `svc-${i}`, env: 'prod', at: new Date(at.getTime() + i) });
    const received = await onB.done;
    assert.deepEqual(
      received.map((p) => p.service),
      Array.from({ length: 200 }, (_, i) => `svc-${i}`),
    );
    assert.deepEqual(
      received.map((p) => p.at.getTime()),
      Array.from({ length: 200 }, (_, i) => at.getTime() + i),
    );
    // Redis has handled A's 200 publishes; D's marker comes after them, so were C on A's
    // channel it would hear them before the marker.
    const marker = collect(c.events, 'config.changed');
    d.events.publish('config.changed', null);
    await marker.done;
    assert.deepEqual(heardByC, ['config.changed']);
  });

  it('shares events published right after start, before its connection is up', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const prefix = redisChannelPrefix();
    const b = instance(t, prefix);
    await subscribed(b);
    const onB = collect(b.events, 'notification.queued');
    const a = instance(t, prefix);
    a.events.publish('notification.queued', null);
    assert.notEqual(a.ready().ok, true, 'published before A connected');
    await waitFor("A's publish answered", async () => a.stats().published + a.stats().failed === 1);
    assert.equal(a.stats().published, 1, 'sent once connected, not refused');
    assert.deepEqual(await onB.done, [null]);
  });

  it('subscribes again after its connection to Redis is cut, and says so in the log', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const prefix = redisChannelPrefix();
    const a = instance(t, prefix);
    const b = instance(t, prefix);
    await subscribed(a, b);
    const admin = new Redis(REDIS_URL);
    t.after(() => admin.quit());
    const clients = (await admin.client('LIST')) as string;
    const line = clients.split('\n').find((l) => l.includes(` name=tollgate:${b.nodeId}:sub `));
    assert.ok(line, `B's subscriber connection is named in CLIENT LIST:\n${clients}`);
    const id = /\bid=(\d+)/.exec(line)![1]!;
    let resumed = 0;
    let since = new Date(Number.NaN);
    b.onResumed((from) => {
      resumed++;
      since = from;
    });
    const killedAt = Date.now();
    await admin.client('KILL', 'ID', id);
    await waitFor('B subscribed again', async () => b.stats().subscriptions === 2 && b.ready().ok);
    // What A published while B was away never came: B is told to read the state again, from
    // the last moment it heard the channel (its subscription, here), before the cut.
    await waitFor('B told it may have missed events', async () => resumed === 1);
    assert.ok(since.getTime() <= killedAt, `missed from ${since.toISOString()}, cut at ${new Date(killedAt).toISOString()}`);

    const onB = collect(b.events, 'apiKey.revoked');
    a.events.publish('apiKey.revoked', { id: 'key_1' });
    assert.deepEqual(await onB.done, [{ id: 'key_1' }]);
    const messages = b.lines.filter((l) => l.role === 'subscribe').map((l) => l.msg);
    assert.deepEqual(messages, [
      'redis connected',
      'redis connection lost: events reach this process only until it is back',
      'redis is back: events are shared with other processes again',
    ]);
  });

  it('delivers locally when Redis is unreachable, without throwing, holding at most maxPending publishes', async (t) => {
    const port = await freePort(); // nothing listens there
    const down = instance(t, redisChannelPrefix(), { url: `redis://127.0.0.1:${port}`, maxPending: 100 });
    const local = collect(down.events, 'apm.ingested', 1000);
    for (let i = 0; i < 1000; i++) down.events.publish('apm.ingested', { service: `svc-${i}`, env: 'prod', at: new Date() });
    assert.equal(local.got.length, 1000, 'every event reached the local listener synchronously');
    assert.ok(down.stats().pending <= 100, `at most maxPending publishes wait: ${down.stats().pending}`);
    await waitFor('publishes refused', async () => down.stats().pending === 0);
    const stats = down.stats();
    assert.equal(stats.failed + stats.dropped, 1000);
    assert.equal(stats.published, 0);
    await waitFor('connection errors seen', async () => down.lines.some((l) => l.msg.startsWith('redis unreachable')));
    const ready = down.ready();
    assert.equal(ready.ok, false);
    assert.match(ready.detail, /events reach this process only/);
    assert.doesNotMatch(ready.detail, /undefined/);
    const unshared = down.lines.filter((l) => l.msg.startsWith('events are not reaching other processes'));
    assert.equal(unshared.length, 1, 'one warning for the outage, not one per event');
    await down.close();
    assert.equal(down.ready().ok, false);
    down.events.publish('config.changed', null); // after close: local only, no throw
  });

  it('closes while it has never connected', async (t) => {
    const port = await freePort();
    const down = instance(t, redisChannelPrefix(), { url: `redis://127.0.0.1:${port}` });
    await down.close();
    await down.close(); // twice is fine
  });
});

/**
 * The test Redis behind a proxy the test can cut: its connections are dropped and new ones
 * refused until it is restored, so one instance loses Redis while the others keep it.
 */
async function redisProxy(t: TestContext) {
  let up = true;
  const sockets = new Set<Socket>();
  const keep = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  };
  const server = createServer((client) => {
    keep(client);
    if (!up) return void client.destroy();
    const upstream = connect(6379, '127.0.0.1');
    keep(upstream);
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const cut = () => {
    up = false;
    for (const socket of sockets) socket.destroy();
  };
  t.after(() => {
    cut();
    server.close();
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    cut,
    restore: () => {
      up = true;
    },
  };
}

describe('a live view across an outage of Redis', () => {
  it('a subscriber on B gets every revision A made while B was cut off from Redis, in order, once Redis is back', { timeout: 60_000 }, async (t) => {
    if (await skipWithoutRedis(t)) return;
    const noPg = await skipWithoutPg();
    if (noPg) return t.skip(noPg);
    // Stopped in this order when the test ends: the subscription, the instances, then their database.
    const stops: Array<() => unknown> = [];
    t.after(async () => {
      for (const stop of stops.reverse()) await stop();
    });
    const database = await createPgDatabase();
    stops.push(database.drop);
    const postgresUrl = database.url;
    const proxy = await redisProxy(t);
    const redisChannel = redisChannelPrefix();
    const a = await startServer({ postgresUrl, redisUrl: REDIS_URL, redisChannel, nodeId: `a-${randomUUID()}` });
    stops.push(a.stop);
    const b = await startServer({ postgresUrl, redisUrl: proxy.url, redisChannel, nodeId: `b-${randomUUID()}` });
    stops.push(b.stop);
    const ready = async (s: typeof a) => (await s.request('GET', '/readyz')).status === 200;
    await waitFor('both instances on Redis', async () => (await ready(a)) && (await ready(b)));

    const d = driver(a);
    const monitor = await d.monitor('outage', ['revlog:outage']);
    await d.report(monitor, 'OK');
    const evaluated = await d.evaluate({ service: 'revlog-outage', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'revlog:outage', duration: 600 })] } });
    const id: string = evaluated.data.evaluateGate.id;
    const q = subscribeQueue(b.ws(), 'subscription($id: ID!) { evaluationUpdated(id: $id) { revision status } }', { id });
    stops.push(q.dispose);
    const seen: Array<{ revision: number; status: string }> = [];
    const first = await q.next(10_000);
    assert.equal(first.errors, undefined, JSON.stringify(first.errors));
    seen.push(first.data.evaluationUpdated);

    // B loses Redis: what A publishes from here never reaches it.
    proxy.cut();
    const ruleId = (await loadSnapshot(a.app.deps, id))!.rules[0]!.id;
    for (const reason of ['checked during the outage', 'checked again during the outage']) {
      assert.ok(await recordRuleUpdate(a.app.deps, ruleId, { status: 'in_progress', reason, nextCheckAt: new Date(Date.now() + 60_000), consecutiveErrors: 0 }));
    }
    const duringOutage = (await loadSnapshot(a.app.deps, id))!.evaluation.revision;
    assert.ok(duringOutage >= seen[0]!.revision + 2);
    proxy.restore();
    await waitFor('B back on Redis', () => ready(b));
    const canceled = await a.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { revision status } }', { id });
    assert.equal(canceled.errors, undefined, JSON.stringify(canceled.errors));
    const last: { revision: number; status: string } = canceled.data.cancelEvaluation;

    while (seen.at(-1)!.revision < last.revision) {
      const next = await q.next(15_000);
      assert.equal(next.errors, undefined, JSON.stringify(next.errors));
      seen.push(next.data.evaluationUpdated);
    }
    assert.deepEqual(
      seen.map((s) => s.revision),
      Array.from({ length: last.revision - seen[0]!.revision + 1 }, (_, i) => seen[0]!.revision + i),
      'every revision once, in order',
    );
    assert.equal(seen.at(-1)!.status, 'CANCELED');
  });
});

/**
 * Two instances on one fresh PostgreSQL database and one Redis channel; `proxied` reaches Redis
 * through a proxy the test cuts. Stopped (and the database dropped) when the test ends.
 */
async function twoInstances(t: TestContext, proxied: 'a' | 'b') {
  const stops: Array<() => unknown> = [];
  t.after(async () => {
    for (const stop of stops.reverse()) await stop();
  });
  const database = await createPgDatabase();
  stops.push(database.drop);
  const proxy = await redisProxy(t);
  const redisChannel = redisChannelPrefix();
  const start = async (name: 'a' | 'b') => {
    const s = await startServer({ postgresUrl: database.url, redisUrl: name === proxied ? proxy.url : REDIS_URL, redisChannel, nodeId: `${name}-${randomUUID()}` });
    stops.push(s.stop);
    return s;
  };
  const a = await start('a');
  const b = await start('b');
  return { a, b, proxy, stops };
}

interface Seen {
  id: string;
  env: string;
  revision: number;
  status: string;
  finishedAt: string | null;
}

/**
 * The evaluationEvents subscriber on B, keyed to prod only, while A decides evaluations in
 * prod and staging and `proxy` cuts one of them off from Redis: every revision of every prod
 * evaluation reaches it once, in order, and nothing of staging.
 */
async function everyRevisionAcrossACut(t: TestContext, proxied: 'a' | 'b') {
  const { a, b, proxy, stops } = await twoInstances(t, proxied);
  const d = driver(a);
  const monitor = await d.monitor('cut', ['feed:cut']);
  await d.report(monitor, 'OK');
  const evaluate = async (env: string, version: string) => {
    const r = await d.evaluate({ service: 'feed-cut', env, version, configuration: { rules: [jitMonitor('m', { query: 'feed:cut', duration: 0 })] } });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data.evaluateGate.id as string;
  };
  const prodOnly = await b.createKey(['gates:read'], ['prod']);
  const q = subscribeQueue(b.ws(prodOnly), 'subscription { evaluationEvents(filter: { service: ["feed-cut"] }) { id env revision status finishedAt } }');
  stops.push(q.dispose);
  let seen: Seen[] = [];
  /** Reads events until `done` holds for what was seen. */
  const until = async (what: string, done: () => boolean) => {
    while (!done()) {
      const next = await q.next(30_000).catch((err: Error) => assert.fail(`${what}: ${err.message}; seen ${JSON.stringify(seen)}`));
      assert.equal(next.errors, undefined, JSON.stringify(next.errors));
      seen.push(next.data.evaluationEvents);
    }
  };
  const finished = (id: string) => () => seen.some((s) => s.id === id && s.finishedAt !== null);

  // The subscription is live once an evaluation made after it was opened reaches it.
  const first = await evaluate('prod', 'before');
  await until('the first verdict', finished(first));
  seen = [];

  proxy.cut();
  const prod = [await evaluate('prod', '1'), await evaluate('prod', '2'), await evaluate('prod', '3')];
  const staging = [await evaluate('staging', '1'), await evaluate('staging', '2')];
  const read = async (id: string) => (await a.gql('query($id: ID!) { evaluation(id: $id) { revision finishedAt } }', { id })).data.evaluation;
  const finals = new Map<string, number>();
  for (const id of [...prod, ...staging]) finals.set(id, (await waitFor(`verdict of ${id} on A`, async () => (await read(id)).finishedAt && (await read(id)))).revision);
  proxy.restore();

  await until('the verdicts decided during the cut', () => prod.every((id) => seen.some((s) => s.id === id && s.revision === finals.get(id))));
  // Anything still to come (a repeat) would come before the verdict of an evaluation made now.
  const last = await evaluate('prod', 'after');
  await until('the verdict after the cut', finished(last));
  finals.set(last, (await read(last)).revision);

  assert.deepEqual(
    seen.filter((s) => s.env !== 'prod'),
    [],
    'nothing from staging reaches a key of prod',
  );
  for (const id of [...prod, last]) {
    const revisions = seen.filter((s) => s.id === id).map((s) => s.revision);
    assert.deepEqual(
      revisions,
      Array.from({ length: finals.get(id)! }, (_, i) => i + 1),
      `every revision of ${id} once, in order (seen ${JSON.stringify(seen)})`,
    );
  }
  assert.ok(seen.filter((s) => prod.includes(s.id) && s.finishedAt !== null).every((s) => s.status === 'PASS'));
}

describe('a stream of every change across a loss of Redis', () => {
  it('an evaluationEvents subscriber on B gets every revision A decided while B was cut off from Redis, once each, in order', { timeout: 90_000 }, async (t) => {
    if (await skipWithoutRedis(t)) return;
    const noPg = await skipWithoutPg();
    if (noPg) return t.skip(noPg);
    await everyRevisionAcrossACut(t, 'b');
  });

  it('an evaluationEvents subscriber on B gets every revision A decided while A could not publish to Redis', { timeout: 90_000 }, async (t) => {
    if (await skipWithoutRedis(t)) return;
    const noPg = await skipWithoutPg();
    if (noPg) return t.skip(noPg);
    await everyRevisionAcrossACut(t, 'a');
  });
});

describe('event payloads as text', () => {
  it('round-trips Dates, bytes, nulls, nested values and objects that look like tags', () => {
    const value = {
      at: new Date('2026-03-01T10:00:00.123Z'),
      nothing: null,
      bytes: Buffer.from([0, 1, 2, 255]),
      typed: new Uint8Array([9, 8, 7]),
      big: 12345678901234567890n,
      inf: Number.POSITIVE_INFINITY,
      nested: [{ when: [new Date(0)], deep: { list: [1, 'two', null, true] } }],
      lookalike: { $tg: 'Date', v: '2026-01-01T00:00:00Z' },
    };
    const back = deserialize(serialize(value)) as typeof value;
    assert.deepEqual(back, value);
    assert.ok(back.at instanceof Date && back.nested[0]!.when[0] instanceof Date);
    assert.ok(Buffer.isBuffer(back.bytes));
    assert.ok(back.typed instanceof Uint8Array && !Buffer.isBuffer(back.typed));
    assert.equal(typeof back.lookalike.v, 'string');
    const invalid = deserialize(serialize({ invalid: new Date(Number.NaN) })) as { invalid: Date };
    assert.ok(invalid.invalid instanceof Date && Number.isNaN(invalid.invalid.getTime()), 'an invalid Date stays one');
  });
});

describe('TOLLGATE_REDIS_URL', () => {
  it('takes redis:// and rediss:// URLs', () => {
    assert.equal(loadConfig({}).redisUrl, undefined);
    assert.equal(loadConfig({ TOLLGATE_REDIS_URL: 'redis://redis:6379' }).redisUrl, 'redis://redis:6379');
    assert.equal(loadConfig({ TOLLGATE_REDIS_URL: 'rediss://:secret@redis.internal:6380/0' }).redisUrl, 'rediss://:secret@redis.internal:6380/0');
  });

  it('refuses anything else at start, naming the variable and not echoing a password', () => {
    for (const bad of ['http://:hunter2@redis:6379', 'redis:6379', 'localhost:6379', 'redis://']) {
      assert.throws(
        () => loadConfig({ TOLLGATE_REDIS_URL: bad }),
        (err: unknown) => err instanceof ConfigError && /TOLLGATE_REDIS_URL: must be a redis:\/\/ or rediss:\/\//.test(err.message) && !err.message.includes('hunter2'),
        bad,
      );
    }
  });
});
