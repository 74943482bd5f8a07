import assert from 'node:assert/strict';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Config } from '../src/config.ts';
import { CHROMIUM, launchChromium } from './browser.ts';
import { ADMIN_KEY, driver, jitMonitor, skipWithout, startServer, type TestServer, waitFor } from './helpers.ts';

// Notifications end to end: a real Tollgate, a real local HTTP receiver, evaluations failed
// and passed by freeze rules (an ad-hoc freeze fails one at once; none passes it at once).

interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  raw: string;
  /** What the receiver answered. */
  status: number;
}

let receiver: Server;
let base: string;
const received: Received[] = [];
/** Per path: the status to answer the n-th request with (1-based). */
const answers = new Map<string, (n: number) => number>();
/** Requests to paths answered 0: held unanswered until the test answers them. */
const held: Array<{ path: string; res: ServerResponse }> = [];
const heldOn = (path: string) => held.filter((h) => h.path === path);
/** Removes the requests held on `path` from the list: the test answers them. */
const takeHeld = (path: string) => {
  const mine = heldOn(path);
  for (const h of mine) held.splice(held.indexOf(h), 1);
  return mine.map((h) => h.res);
};

const secretKey = randomBytes(32);
const SETTINGS: Partial<Config> = {
  webhookAllowedHosts: [{ host: '127.0.0.1', wildcard: false, port: null }],
  secretKey,
  notifications: { retryBaseMs: 50, maxAttempts: 5 },
};
let s: TestServer;

before(async () => {
  receiver = createServer((req, res: ServerResponse) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      // Answered by the hook its first segment names (a Slack URL carries more after it).
      const path = `/${(req.url ?? '/').split('/')[1]}`;
      const n = received.filter((r) => r.path === path).length + 1;
      const status = answers.get(path)?.(n) ?? 404;
      received.push({ path, headers: req.headers, raw, status });
      if (status === 0) held.push({ path, res });
      else res.writeHead(status).end(status === 200 ? 'ok' : 'try later');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  s = await startServer(SETTINGS);
});

after(async () => {
  await s.stop();
  receiver.closeAllConnections();
  await new Promise((resolve) => receiver.close(resolve));
});

let paths = 0;
function hook(answer: (n: number) => number = () => 200): string {
  const p = `/hook-${++paths}`;
  answers.set(p, answer);
  return p;
}
const to = (p: string) => received.filter((r) => r.path === p);

async function must(server: TestServer, query: string, variables?: Record<string, unknown>, key?: string) {
  const r = await server.gql(query, variables, key);
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data;
}

const CHANNEL = 'id name type url envs hasSecret';
const DELIVERY = 'id event status attempts lastStatus lastError deliveredAt env evaluationId payload channel { id }';

async function channel(server: TestServer, input: Record<string, unknown>, key?: string): Promise<string> {
  const d = await must(server, `mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { ${CHANNEL} } }`, { i: input }, key);
  return d.createNotificationChannel.id;
}

async function subscribe(server: TestServer, input: Record<string, unknown>, key?: string): Promise<string> {
  const d = await must(server, `mutation($i: CreateNotificationSubscriptionInput!) { createNotificationSubscription(input: $i) { id } }`, { i: input }, key);
  return d.createNotificationSubscription.id;
}

async function freeze(server: TestServer, service: string, env = 'prod'): Promise<string> {
  const d = await must(server, 'mutation($i: CreateFreezeInput!) { createFreeze(input: $i) { id } }', { i: { env, service, reason: 'release train 42' } });
  return d.createFreeze.id;
}

/** A just-in-time evaluation with one freeze rule, followed to its verdict. */
async function evaluate(server: TestServer, service: string, env = 'prod', version = 'v7'): Promise<{ id: string; status: string }> {
  const d = await must(server, 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
    i: { service, env, version, configuration: { rules: [{ name: 'no freeze', options: { freeze: {} } }] } },
  });
  const id = d.evaluateGate.id as string;
  return waitFor(`evaluation ${id} decided`, async () => {
    const e = (await must(server, 'query($id: ID!) { evaluation(id: $id) { id status reportedStatus } }', { id })).evaluation;
    return e.reportedStatus !== 'IN_PROGRESS' && { id, status: e.reportedStatus as string };
  });
}

async function deliveries(server: TestServer, filter: Record<string, unknown>, key?: string): Promise<any[]> {
  return (await must(server, `query($f: NotificationDeliveryFilter) { notificationDeliveries(filter: $f) { ${DELIVERY} } }`, { f: filter }, key)).notificationDeliveries;
}

/** The deliveries of an evaluation once every one has settled (delivered or failed). */
function settled(server: TestServer, evaluationId: string, count = 1, channelId?: string): Promise<any[]> {
  return waitFor(`deliveries of ${evaluationId} settled`, async () => {
    const all = await deliveries(server, { evaluationId, channelId });
    return all.length === count && all.every((d) => d.status === 'DELIVERED' || d.status === 'FAILED') && all;
  });
}

/** The receiver's own check, written from the docs: HMAC-SHA256 of "<timestamp>.<raw body>". */
function signatureValid(secret: string, r: Received): boolean {
  const ts = String(r.headers['x-tollgate-timestamp']);
  const want = Buffer.from(`sha256=${createHmac('sha256', secret).update(`${ts}.${r.raw}`).digest('hex')}`);
  const got = Buffer.from(String(r.headers['x-tollgate-signature']));
  return want.length === got.length && timingSafeEqual(want, got);
}

describe('notifications', () => {
  test('a failed evaluation reaches a webhook signed with the channel secret; a pass after it is a recovery; Slack gets {text, blocks}', async () => {
    const secret = 'whsec-0123456789abcdef';
    const p = hook();
    const slackPath = hook();
    const ch = await channel(s, { name: 'deploy alerts', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret });
    const slack = await channel(s, { name: 'slack', type: 'SLACK', url: `${base}${slackPath}/T000/B000/XXXX`, envs: ['prod'] });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'checkout', events: ['FAIL', 'RECOVERED'] });
    await subscribe(s, { channelId: slack, env: 'prod', service: 'checkout', events: ['FAIL'] });
    // Another service's evaluation is none of this subscription's business.
    await subscribe(s, { channelId: ch, env: 'prod', service: 'billing', events: ['FAIL'] });

    const frozen = await freeze(s, 'checkout');
    const failed = await evaluate(s, 'checkout');
    assert.equal(failed.status, 'FAIL');
    const [sent, toSlack] = await settled(s, failed.id, 2).then((all) => [all.find((d) => d.channel.id === ch), all.find((d) => d.channel.id === slack)]);
    assert.equal(sent.status, 'DELIVERED');
    assert.equal(sent.attempts, 1);
    assert.equal(sent.event, 'fail');
    assert.equal(toSlack.status, 'DELIVERED');

    const [r] = to(p);
    assert.ok(r, 'the receiver got the notification');
    assert.equal(to(p).length, 1);
    assert.ok(signatureValid(secret, r), 'the signature verifies with the channel secret');
    assert.equal(signatureValid('another secret entirely', r), false);
    assert.equal(r.headers['x-tollgate-event-id'], sent.id);
    assert.equal(r.headers['x-tollgate-event'], 'fail');
    const body = JSON.parse(r.raw);
    assert.equal(body.id, sent.id);
    assert.equal(body.type, 'tollgate.fail');
    assert.match(body.text, /^Gate checkout\/prod version v7 failed$/);
    assert.equal(body.evaluation.id, failed.id);
    assert.equal(body.evaluation.url, `${s.url}/evaluations/${failed.id}`);
    assert.deepEqual([body.evaluation.service, body.evaluation.env, body.evaluation.version, body.evaluation.status], ['checkout', 'prod', 'v7', 'fail']);
    assert.equal(body.failingRules.length, 1);
    assert.equal(body.failingRules[0].name, 'no freeze');
    assert.match(body.failingRules[0].reason, /release train 42/);

    const [slackReq] = to(slackPath);
    const slackBody = JSON.parse(slackReq!.raw);
    assert.match(slackBody.text, /^Gate checkout\/prod version v7 failed: http/);
    assert.ok(Array.isArray(slackBody.blocks) && slackBody.blocks.length >= 2);
    assert.match(JSON.stringify(slackBody.blocks), /release train 42/);
    assert.equal(slackReq!.headers['x-tollgate-signature'], undefined);

    // Lifted: the next evaluation passes, and the webhook hears of the recovery.
    await must(s, 'mutation($id: ID!) { endFreeze(id: $id) { id } }', { id: frozen });
    const passed = await evaluate(s, 'checkout', 'prod', 'v8');
    assert.equal(passed.status, 'PASS');
    const [recovered] = await settled(s, passed.id);
    assert.equal(recovered.event, 'recovered');
    assert.equal(recovered.status, 'DELIVERED');
    const again = JSON.parse(to(p)[1]!.raw);
    assert.equal(again.recoveredFrom.id, failed.id);
    assert.ok(signatureValid(secret, to(p)[1]!));
  });

  test('an override is notified once, as itself (who, why, what it replaced), and a re-override again; it is not also a recovery', async () => {
    const p = hook();
    const secret = 'override-secret-0123456789';
    const ch = await channel(s, { name: 'overrides', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'refunds', events: ['FAIL', 'RECOVERED', 'OVERRIDE'] });
    await freeze(s, 'refunds');
    // A failed evaluation before it, so a pass would read as a recovery.
    await evaluate(s, 'refunds', 'prod', 'v1');
    const e = await evaluate(s, 'refunds', 'prod', 'v2');
    await settled(s, e.id);
    const override = (verdict: string, reason: string) =>
      must(s, 'mutation($id: ID!, $v: OverrideVerdict!, $r: String!) { overrideEvaluation(id: $id, verdict: $v, reason: $r) { id reportedStatus } }', {
        id: e.id,
        v: verdict,
        r: reason,
      });
    assert.equal((await override('PASS', 'known flaky check, rollout approved by SRE')).overrideEvaluation.reportedStatus, 'PASS');
    const all = await settled(s, e.id, 2);
    assert.deepEqual(all.map((d) => d.event).sort(), ['fail', 'override']);
    // A channel has two senders: the fail and the override may arrive in either order.
    const sent = to(p).filter((r) => JSON.parse(r.raw).evaluation.id === e.id);
    const overridden = sent.find((r) => JSON.parse(r.raw).type === 'tollgate.override')!;
    const msg = JSON.parse(overridden.raw);
    assert.ok(signatureValid(secret, overridden));
    assert.equal(msg.type, 'tollgate.override');
    assert.equal(msg.text, 'Gate refunds/prod version v2 overridden to PASS');
    assert.deepEqual(
      { verdict: msg.override.verdict, reason: msg.override.reason, by: msg.override.by, replaced: msg.override.replaced },
      { verdict: 'pass', reason: 'known flaky check, rollout approved by SRE', by: 'bootstrap', replaced: 'fail' },
    );
    assert.equal(msg.evaluation.status, 'pass');
    assert.equal(msg.evaluation.realStatus, 'fail');
    // Overriding again is another event.
    await override('FAIL', 'SRE changed their mind');
    const three = await settled(s, e.id, 3);
    assert.deepEqual(three.map((d) => d.event).sort(), ['fail', 'override', 'override']);
    const last = JSON.parse(to(p).filter((r) => JSON.parse(r.raw).evaluation.id === e.id)[2]!.raw);
    assert.deepEqual([last.override.verdict, last.override.replaced, last.evaluation.status], ['fail', 'pass', 'fail']);
  });

  test('a dry-run evaluation whose rules fail is neither a fail nor a recovery, though it reports pass after a fail', async () => {
    const p = hook();
    const ch = await channel(s, { name: 'dry runs', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'dryrun-secret-0123456789' });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'dryrec', events: ['FAIL', 'RECOVERED'] });
    await freeze(s, 'dryrec');
    const failed = await evaluate(s, 'dryrec', 'prod', 'v1');
    assert.deepEqual(
      (await settled(s, failed.id)).map((d) => d.event),
      ['fail'],
    );
    const d = await must(s, 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
      i: { service: 'dryrec', env: 'prod', version: 'v2', configuration: { dryRun: true, rules: [{ name: 'no freeze', options: { freeze: {} } }] } },
    });
    const id = d.evaluateGate.id as string;
    const e = await waitFor('the dry run decided', async () => {
      const r = (await must(s, 'query($id: ID!) { evaluation(id: $id) { status reportedStatus } }', { id })).evaluation;
      return r.status !== 'IN_PROGRESS' && r;
    });
    assert.deepEqual([e.status, e.reportedStatus], ['FAIL', 'PASS']);
    // Queued in the transaction that decided it: none.
    assert.deepEqual(await deliveries(s, { evaluationId: id }), []);
  });

  test('a pass after a running evaluation overridden to FAIL (its real status canceled) is a recovery from that verdict', async () => {
    const p = hook();
    const ch = await channel(s, { name: 'recoveries', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'recover-secret-0123456789' });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'ovrrec', events: ['RECOVERED'] });
    const d = driver(s);
    await d.report(await d.monitor('ovrrec healthy', ['ovrrec:ok']), 'OK');
    const run = await d.evaluate({ service: 'ovrrec', env: 'prod', version: 'v1', configuration: { rules: [jitMonitor('healthy', { query: 'ovrrec:ok', duration: 3600 })] } });
    const running = run.data.evaluateGate.id as string;
    const blocked = await must(s, 'mutation($id: ID!) { overrideEvaluation(id: $id, verdict: FAIL, reason: "hold the train") { status reportedStatus } }', { id: running });
    assert.deepEqual([blocked.overrideEvaluation.status, blocked.overrideEvaluation.reportedStatus], ['CANCELED', 'FAIL']);
    const next = await d.evaluate({ service: 'ovrrec', env: 'prod', version: 'v2', configuration: { rules: [jitMonitor('healthy', { query: 'ovrrec:ok' })] } });
    const id = next.data.evaluateGate.id as string;
    await waitFor('the next evaluation passed', async () => (await d.get(id)).status === 'PASS');
    const [sent] = await settled(s, id);
    assert.equal(sent.event, 'recovered');
    assert.equal(sent.payload.recoveredFrom.id, running);
  });

  test('a receiver that fails twice then succeeds gets the event once, on the third attempt', async () => {
    const p = hook((n) => (n <= 2 ? 503 : 200));
    const ch = await channel(s, { name: 'flaky', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'flaky-secret-0123456789' });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'payments', events: ['FAIL'] });
    await freeze(s, 'payments');
    const e = await evaluate(s, 'payments');
    const [d] = await settled(s, e.id);
    assert.equal(d.status, 'DELIVERED');
    assert.equal(d.attempts, 3);
    assert.equal(d.lastStatus, 200);
    assert.deepEqual(
      to(p).map((r) => r.status),
      [503, 503, 200],
    );
    assert.equal(new Set(to(p).map((r) => r.headers['x-tollgate-event-id'])).size, 1, 'every attempt carries the same event id');
    assert.deepEqual(
      to(p).map((r) => r.headers['x-tollgate-attempt']),
      ['1', '2', '3'],
    );
  });

  test('a receiver that never succeeds: FAILED after the last attempt, with its answer', async () => {
    const p = hook(() => 500);
    const ch = await channel(s, { name: 'down', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'down-secret-0123456789' });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'mailer', events: ['FAIL'] });
    await freeze(s, 'mailer');
    const e = await evaluate(s, 'mailer');
    const [d] = await settled(s, e.id);
    assert.equal(d.status, 'FAILED');
    assert.equal(d.attempts, 5, 'TOLLGATE_NOTIFICATION_MAX_ATTEMPTS');
    assert.equal(d.lastStatus, 500);
    assert.match(d.lastError, /^HTTP 500: try later$/);
    assert.equal(to(p).length, 5);
  });

  test('a channel moved to another origin needs its secret again; envs cannot drop one its subscriptions use', async () => {
    const ch = await channel(s, { name: 'moving', type: 'WEBHOOK', url: `${base}/moving`, envs: ['prod', 'staging'], secret: 'moving-secret-0123456789' });
    await subscribe(s, { channelId: ch, env: 'staging', events: ['FAIL'] });
    const update = (input: Record<string, unknown>) =>
      s.gql(`mutation($id: ID!, $i: UpdateNotificationChannelInput!) { updateNotificationChannel(id: $id, input: $i) { ${CHANNEL} } }`, { id: ch, i: input });
    const moved = await update({ url: 'http://127.0.0.1:1/elsewhere' });
    assert.match(moved.errors![0]!.message, /^input\.secret: give the secret again/);
    const shrunk = await update({ envs: ['prod'] });
    assert.equal(shrunk.errors![0]!.extensions!.code, 'CONFLICT');
    assert.match(shrunk.errors![0]!.message, /subscriptions in env staging/);
    const renamed = await update({ name: 'moved', url: `${base}/moved` });
    assert.equal(renamed.errors, undefined);
    assert.deepEqual([renamed.data.updateNotificationChannel.name, renamed.data.updateNotificationChannel.hasSecret], ['moved', true]);
  });

  test('a channel narrowed to sandbox neither sends nor shows what was queued for its wider audience (a sandbox key could now point it anywhere)', async () => {
    const p = hook((n) => (n === 1 ? 0 : 200));
    const ch = await channel(s, { name: 'narrowed', type: 'WEBHOOK', url: `${base}${p}`, envs: ['sandbox', 'prod'], secret: 'narrowed-secret-0123456789' });
    const sub = await subscribe(s, { channelId: ch, env: 'prod', service: 'narrowed', events: ['FAIL'] });
    await freeze(s, 'narrowed');
    const e = await evaluate(s, 'narrowed');
    await waitFor('the first attempt held by the receiver', async () => to(p).length === 1);
    await must(s, 'mutation($id: ID!) { deleteNotificationSubscription(id: $id) }', { id: sub });
    await must(s, `mutation($id: ID!, $i: UpdateNotificationChannelInput!) { updateNotificationChannel(id: $id, input: $i) { id } }`, { id: ch, i: { envs: ['sandbox'] } });
    // The prod message (written for readers of sandbox and prod) is no longer this channel's to send or show.
    assert.deepEqual(await deliveries(s, { channelId: ch }), []);
    const sandbox = await s.createKey(['gates:read'], ['sandbox']);
    assert.deepEqual(await deliveries(s, { channelId: ch }, sandbox), []);
    // The held attempt fails; nothing is retried to the (now sandbox-only) channel.
    const [heldRes] = takeHeld(p);
    heldRes!.writeHead(500).end('try later');
    await must(s, 'mutation($id: ID!) { sendTestNotification(channelId: $id) { id } }', { id: ch });
    await waitFor('the test message delivered', async () => to(p).some((r) => r.headers['x-tollgate-event'] === 'test'));
    assert.equal(to(p).filter((r) => r.raw.includes(e.id)).length, 1, 'the prod event was not sent again');
  });

  test('a receiver that never answers holds two senders: another channel is delivered meanwhile', async () => {
    let silent = true;
    const quiet = hook(() => (silent ? 0 : 200));
    const loud = hook();
    const a = await channel(s, { name: 'silent', type: 'WEBHOOK', url: `${base}${quiet}`, envs: ['prod'], secret: 'silent-secret-0123456789' });
    const b = await channel(s, { name: 'loud', type: 'WEBHOOK', url: `${base}${loud}`, envs: ['prod'], secret: 'loud-secret-0123456789' });
    await subscribe(s, { channelId: a, env: 'prod', service: 'quiet', events: ['FAIL'] });
    await subscribe(s, { channelId: b, env: 'prod', service: 'loud', events: ['FAIL'] });
    await freeze(s, 'quiet');
    await freeze(s, 'loud');
    // More deliveries to the silent channel than the notifier sends at once (16).
    for (let i = 0; i < 18; i++) await evaluate(s, 'quiet', 'prod', `v${i}`);
    await waitFor('the silent receiver holding two requests', async () => heldOn(quiet).length === 2);
    const e = await evaluate(s, 'loud');
    const [sent] = await settled(s, e.id);
    assert.equal(sent.status, 'DELIVERED');
    const waiting = await deliveries(s, { channelId: a, status: ['PENDING', 'DELIVERING'] });
    assert.equal(waiting.length, 18, 'none of the silent channel settled yet');
    assert.equal(waiting.filter((d) => d.status === 'DELIVERING').length, 2);
    assert.equal(to(quiet).length, 2);
    silent = false;
    for (const res of takeHeld(quiet)) res.writeHead(200).end('ok');
    await waitFor('every delivery to the silent channel', async () => (await deliveries(s, { channelId: a, status: ['DELIVERED'] })).length === 18);
    assert.equal(to(quiet).length, 18, 'each sent once');
  });

  test('a restart between the change and the delivery: delivered exactly once by the next server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-notify-'));
    let up = false;
    const p = hook(() => (up ? 200 : 503));
    let first: TestServer | undefined = await startServer(SETTINGS, { dir });
    let second: TestServer | undefined;
    try {
      const ch = await channel(first, { name: 'restart', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'restart-secret-0123456789' });
      await subscribe(first, { channelId: ch, env: 'prod', service: 'search', events: ['FAIL'] });
      await freeze(first, 'search');
      const e = await evaluate(first, 'search');
      // The receiver is down: the first attempt fails and the row waits for its retry.
      await waitFor('a failed first attempt', async () => {
        const [d] = await deliveries(first!, { evaluationId: e.id });
        return d && d.attempts >= 1 && d.status === 'PENDING' && d;
      });
      await first.stop();
      first = undefined;
      const downAttempts = to(p).length;
      up = true;
      second = await startServer(SETTINGS, { dir });
      const [d] = await settled(second, e.id);
      assert.equal(d.status, 'DELIVERED');
      assert.equal(d.attempts, downAttempts + 1);
      const ok = to(p).filter((r) => r.status === 200);
      assert.equal(ok.length, 1, 'delivered once');
      assert.equal(new Set(to(p).map((r) => r.headers['x-tollgate-event-id'])).size, 1);
      assert.equal((await deliveries(second, { evaluationId: e.id })).length, 1, 'one outbox row for the event');
    } finally {
      await first?.stop();
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a host taken off the allow-list after the channel was saved: the delivery fails unsent, saying why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-notify-'));
    const p = hook();
    let server: TestServer | undefined = await startServer(SETTINGS, { dir });
    try {
      const ch = await channel(server, { name: 'delisted', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'delisted-secret-0123456789' });
      await subscribe(server, { channelId: ch, env: 'prod', service: 'delisted', events: ['FAIL'] });
      await freeze(server, 'delisted');
      await server.stop();
      server = await startServer({ ...SETTINGS, webhookAllowedHosts: [{ host: 'hooks.example.com', wildcard: false, port: null }] }, { dir });
      const e = await evaluate(server, 'delisted');
      const [d] = await settled(server, e.id);
      assert.equal(d.status, 'FAILED');
      assert.equal(d.attempts, 1, 'not retried: no retry can change the answer');
      assert.match(d.lastError, /^host 127\.0\.0\.1:\d+ is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);
      assert.equal(to(p).length, 0, 'nothing sent');
    } finally {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a host off the allow-list is refused, naming the field; so is a webhook channel without a secret', async () => {
    const off = await s.gql(`mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { id } }`, {
      i: { name: 'elsewhere', type: 'WEBHOOK', url: 'https://hooks.example.com/x', envs: ['prod'], secret: 'elsewhere-secret-0123' },
    });
    assert.equal(off.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(off.errors![0]!.message, /^input\.url: host hooks\.example\.com is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);
    // localhost is the same machine, but not what the allow-list names.
    const byName = await s.gql(`mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { id } }`, {
      i: { name: 'by name', type: 'SLACK', url: `${base.replace('127.0.0.1', 'localhost')}/x`, envs: ['prod'] },
    });
    assert.match(byName.errors![0]!.message, /^input\.url: host localhost:\d+ is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS/);
    const noSecret = await s.gql(`mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { id } }`, {
      i: { name: 'unsigned', type: 'WEBHOOK', url: `${base}/x`, envs: ['prod'] },
    });
    assert.match(noSecret.errors![0]!.message, /^input\.secret: is required for a webhook channel/);
    const noEvents = await s.gql(`mutation($i: CreateNotificationSubscriptionInput!) { createNotificationSubscription(input: $i) { id } }`, {
      i: { channelId: '00000000-0000-7000-8000-000000000000', env: 'prod', events: [] },
    });
    assert.match(noEvents.errors![0]!.message, /^input\.events: events must list at least one event/);
  });

  test('a key limited to staging sees nothing of prod: channels, subscriptions, deliveries, ids', async () => {
    const p = hook();
    const prodChannel = await channel(s, { name: 'prod only', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'prod-secret-0123456789' });
    const both = await channel(s, { name: 'both envs', type: 'SLACK', url: `${base}${p}/both`, envs: ['staging', 'prod'] });
    const prodSub = await subscribe(s, { channelId: prodChannel, env: 'prod', service: 'cart', events: ['FAIL'] });
    await subscribe(s, { channelId: both, env: 'staging', service: 'cart', events: ['FAIL'] });
    await freeze(s, 'cart');
    const e = await evaluate(s, 'cart');
    const [prodDelivery] = await settled(s, e.id);

    const staging = await s.createKey(['gates:write'], ['staging']);
    const mine = await channel(s, { name: 'staging', type: 'WEBHOOK', url: `${base}${p}/staging`, envs: ['staging'], secret: 'staging-secret-012345' }, staging);
    const mySub = await subscribe(s, { channelId: mine, env: 'staging', events: ['FAIL', 'RECOVERED'] }, staging);

    const seen = await must(
      s,
      `{ notificationChannels(first: 100) { id envs } notificationSubscriptions(first: 100) { id env channel { id } }
         notificationDeliveries(first: 100) { id env } }`,
      undefined,
      staging,
    );
    assert.deepEqual(
      seen.notificationChannels.map((c: any) => c.id),
      [mine],
    );
    assert.deepEqual(
      seen.notificationSubscriptions.map((x: any) => x.id),
      [mySub],
    );
    assert.deepEqual(seen.notificationDeliveries, []);

    const byId = await must(
      s,
      'query($c: ID!, $b: ID!, $d: ID!) { c: notificationChannel(id: $c) { id } b: notificationChannel(id: $b) { id } d: notificationDelivery(id: $d) { id } }',
      { c: prodChannel, b: both, d: prodDelivery.id },
      staging,
    );
    assert.deepEqual(byId, { c: null, b: null, d: null });
    const filtered = await deliveries(s, { channelId: prodChannel }, staging);
    assert.deepEqual(filtered, []);

    // Another env's channel or subscription answers exactly like one that does not exist.
    const missing = '00000000-0000-7000-8000-000000000000';
    for (const [id, kind] of [
      [prodChannel, 'channel'],
      [missing, 'channel'],
    ] as const) {
      const r = await s.gql('mutation($id: ID!) { deleteNotificationChannel(id: $id) }', { id }, staging);
      assert.equal(r.errors?.[0]?.extensions?.code, 'NOT_FOUND');
      assert.equal(r.errors![0]!.message, `notification ${kind} ${id} does not exist`);
    }
    const sub = await s.gql('mutation($id: ID!) { deleteNotificationSubscription(id: $id) }', { id: prodSub }, staging);
    assert.equal(sub.errors![0]!.message, `notification subscription ${prodSub} does not exist`);
    const onProd = await s.gql(
      `mutation($i: CreateNotificationSubscriptionInput!) { createNotificationSubscription(input: $i) { id } }`,
      { i: { channelId: both, env: 'staging', events: ['FAIL'] } },
      staging,
    );
    assert.equal(onProd.errors![0]!.message, `notification channel ${both} does not exist`);
    const test = await s.gql('mutation($id: ID!) { sendTestNotification(channelId: $id) { id } }', { id: prodChannel }, staging);
    assert.equal(test.errors![0]!.extensions!.code, 'NOT_FOUND');
    const wide = await s.gql(
      `mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { id } }`,
      { i: { name: 'x', type: 'SLACK', url: `${base}/x`, envs: ['staging', 'prod'] } },
      staging,
    );
    assert.equal(wide.errors![0]!.extensions!.code, 'FORBIDDEN');
    assert.doesNotMatch(JSON.stringify([wide, onProd, sub]), /cart|prod only|both envs/);
  });

  test('a webhook rule whose host does not answer: one source_error notification naming the rule and the error', async () => {
    const p = hook();
    const ch = await channel(s, { name: 'sources', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'sources-secret-0123456789' });
    await subscribe(s, { channelId: ch, env: 'prod', service: 'inventory', events: ['SOURCE_ERROR'] });
    // A port nothing listens on (the receiver's, closed): no answer is the source failing.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const d = await must(s, 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
      i: {
        service: 'inventory',
        env: 'prod',
        version: 'v3',
        configuration: { rules: [{ name: 'smoke test', options: { webhook: { url: `http://127.0.0.1:${port}/smoke`, retries: 1, timeout: 1 } } }] },
      },
    });
    const [sent] = await settled(s, d.evaluateGate.id);
    assert.equal(sent.event, 'source_error');
    assert.equal(sent.status, 'DELIVERED');
    const body = JSON.parse(to(p)[0]!.raw);
    assert.equal(body.sourceError.rule, 'smoke test');
    assert.match(body.sourceError.error, /ECONNREFUSED/);
    assert.match(body.text, /^Gate inventory\/prod version v3 hit a source error$/);
    assert.equal(to(p).length, 1, 'one message for the rule, however many tries');
  });

  test("a gate's subscription hears only that gate's evaluations", async () => {
    const p = hook();
    const ch = await channel(s, { name: 'one gate', type: 'WEBHOOK', url: `${base}${p}`, envs: ['prod'], secret: 'gate-secret-0123456789' });
    const mk = async (identifier: string) =>
      (
        await must(s, 'mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
          i: { service: 'ledger', env: 'prod', identifier, rules: [{ name: 'no freeze', options: { freeze: {} } }] },
        })
      ).createGate.id as string;
    const watched = await mk('api');
    await mk('worker');
    await subscribe(s, { channelId: ch, gateId: watched, env: 'prod', events: ['FAIL'] });
    const wrongEnv = await s.gql(`mutation($i: CreateNotificationSubscriptionInput!) { createNotificationSubscription(input: $i) { id } }`, {
      i: { channelId: ch, gateId: watched, env: 'staging', events: ['FAIL'] },
    });
    assert.match(wrongEnv.errors![0]!.message, /^input\.env: /);
    await freeze(s, 'ledger');
    const ids: string[] = [];
    for (const identifier of ['worker', 'api']) {
      const r = await must(s, 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', { i: { service: 'ledger', env: 'prod', identifier, version: 'v1' } });
      ids.push(r.evaluateGate.id);
    }
    const [sent] = await settled(s, ids[1]!);
    assert.equal(sent.status, 'DELIVERED');
    assert.deepEqual(await deliveries(s, { evaluationId: ids[0] }), []);
    assert.equal(to(p).length, 1);
    assert.equal(JSON.parse(to(p)[0]!.raw).evaluation.identifier, 'api');
  });

  test("a staging channel's message names no monitor of another env, though the evaluation's trigger saw it", async () => {
    const p = hook();
    const staging = await s.createKey(['gates:write'], ['staging']);
    const ch = await channel(s, { name: 'staging only', type: 'WEBHOOK', url: `${base}${p}`, envs: ['staging'], secret: 'staging-only-secret-0123' }, staging);
    await subscribe(s, { channelId: ch, env: 'staging', service: 'orders', events: ['FAIL'] }, staging);
    const d = driver(s);
    const hidden = await d.monitor('secret-prod-billing-monitor', ['team:orders-x', 'env:prod']);
    await d.report(hidden, 'ALERT');
    // Started by the admin key, whose rules see every env: the reason names the prod monitor.
    const r = await must(s, 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
      i: { service: 'orders', env: 'staging', configuration: { rules: [jitMonitor('cross', { query: 'team:orders-x' })] } },
    });
    const id = r.evaluateGate.id as string;
    const [sent] = await settled(s, id, 1, ch);
    const admin = (await must(s, 'query($id: ID!) { evaluation(id: $id) { reportedStatus rules { reason } } }', { id })).evaluation;
    assert.equal(admin.reportedStatus, 'FAIL');
    assert.match(admin.rules[0].reason, /secret-prod-billing-monitor/);
    assert.equal(sent.status, 'DELIVERED');
    const body = JSON.parse(to(p)[0]!.raw);
    assert.doesNotMatch(to(p)[0]!.raw, /secret-prod-billing-monitor/);
    assert.match(body.failingRules[0].reason, /outside your environments/);
    // The staging key sees the delivery, with the same words.
    const [mine] = await deliveries(s, { evaluationId: id, channelId: ch }, staging);
    assert.doesNotMatch(JSON.stringify(mine.payload), /secret-prod-billing-monitor/);
  });

  test('a test notification to a channel is delivered and listed', async () => {
    const p = hook();
    const ch = await channel(s, { name: 'test me', type: 'WEBHOOK', url: `${base}${p}`, envs: ['dev'], secret: 'dev-secret-0123456789' });
    const d = await must(s, 'mutation($id: ID!) { sendTestNotification(channelId: $id) { id status } }', { id: ch });
    const done = await waitFor('test delivered', async () => {
      const [x] = await deliveries(s, { channelId: ch });
      return x?.status === 'DELIVERED' && x;
    });
    assert.equal(done.id, d.sendTestNotification.id);
    assert.equal(to(p).length, 1);
    assert.equal(JSON.parse(to(p)[0]!.raw).type, 'tollgate.test');
  });

  test('a channel takes at most three test messages waiting at once', async () => {
    let holding = true;
    const p = hook(() => (holding ? 0 : 200));
    const ch = await channel(s, { name: 'tested', type: 'WEBHOOK', url: `${base}${p}`, envs: ['dev'], secret: 'tested-secret-0123456789' });
    const send = () => s.gql('mutation($id: ID!) { sendTestNotification(channelId: $id) { id } }', { id: ch });
    for (let i = 0; i < 3; i++) assert.equal((await send()).errors, undefined);
    const fourth = await send();
    assert.equal(fourth.errors?.[0]?.extensions?.code, 'CONFLICT');
    assert.match(fourth.errors![0]!.message, /already has 3 test messages waiting/);
    // The channel's share of senders (two) hold the receiver; the third message waits for one.
    await waitFor('the held requests', async () => heldOn(p).length === 2);
    holding = false;
    for (const res of takeHeld(p)) res.writeHead(200).end('ok');
    await waitFor('the three delivered', async () => (await deliveries(s, { channelId: ch, status: ['DELIVERED'] })).length === 3);
    assert.equal((await send()).errors, undefined, 'settled tests leave room');
  });

  test("a key limited to one env fills only that env's channel slots: prod can still add one, and the refusal counts nothing of other envs", async () => {
    const capped = await s.createKey(['gates:write'], ['capped']);
    for (let i = 0; i < 200; i++) await channel(s, { name: `capped ${i}`, type: 'SLACK', url: `${base}/capped/${i}`, envs: ['capped'] }, capped);
    const full = await s.gql(
      'mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { id } }',
      {
        i: { name: 'one more', type: 'SLACK', url: `${base}/capped/more`, envs: ['capped'] },
      },
      capped,
    );
    assert.equal(full.errors?.[0]?.extensions?.code, 'CONFLICT');
    assert.match(full.errors![0]!.message, /env capped holds at most 200 notification channels/);
    await channel(s, { name: 'prod after capped filled up', type: 'SLACK', url: `${base}/prod-after`, envs: ['prod'] });
  });

  test('the explorer lists channels, subscriptions and deliveries (a staging key only its own), and sends a test', { skip: skipWithout(CHROMIUM) }, async () => {
    const p = hook();
    const ch = await channel(s, { name: 'explorer channel', type: 'SLACK', url: `${base}${p}/T1/B1/secretpath`, envs: ['qa'] });
    await subscribe(s, { channelId: ch, env: 'qa', service: 'portal', events: ['FAIL', 'OVERRIDE'] });
    const staging = await s.createKey(['gates:read'], ['staging']);
    const chromium = await launchChromium();
    try {
      const open = async (key: string) => {
        const { page } = await chromium.page();
        await page.goto(`${s.url}/notifications`);
        await page.getByLabel('API key').fill(key);
        await page.getByRole('button', { name: 'Sign in' }).click();
        await page.getByRole('heading', { name: 'Notifications' }).waitFor();
        return page;
      };
      const page = await open(ADMIN_KEY);
      const row = page.getByTestId('notification-channel').filter({ hasText: 'explorer channel' });
      await row.waitFor();
      assert.match(await row.innerText(), new RegExp(`${base.replace(/[.]/g, '[.]')}/…`));
      assert.doesNotMatch(await page.content(), /secretpath/);
      await page.getByTestId('notification-subscription').filter({ hasText: 'portal' }).filter({ hasText: 'fail, override' }).waitFor();
      await page.getByRole('button', { name: 'Send a test notification to explorer channel' }).click();
      await page.getByRole('status').filter({ hasText: 'A test notification to explorer channel is queued.' }).waitFor();
      await waitFor('the test delivered', async () => (await deliveries(s, { channelId: ch }))[0]?.status === 'DELIVERED');
      assert.equal(to(p).length, 1);
      await page.getByRole('button', { name: 'Refresh' }).click();
      await page.locator('[data-testid="notification-delivery"][data-status="DELIVERED"]').filter({ hasText: 'explorer channel' }).first().waitFor();
      await page.context().close();

      const limited = await open(staging);
      // Loaded: a row (or the empty table's note) in each table.
      for (const table of ['notification-channels', 'notification-subscriptions', 'notification-deliveries'])
        await limited.getByTestId(table).locator('tbody tr').first().waitFor();
      const shown = await limited.locator('main').innerText();
      assert.doesNotMatch(shown, /explorer channel|portal|\bqa\b|\bprod\b/);
      await limited.context().close();
    } finally {
      await chromium.close();
    }
  });
});
