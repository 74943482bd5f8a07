// One event to N live subscribers (issue 12): N graphql-ws sockets (opened in bursts of 500),
// one `monitorStateChanged(query: …)` subscription each, then reportMonitorState, which all of
// them receive. Tollgate runs in its own process; the clients (a minimal graphql-transport-ws
// implementation over `ws`) run in this one. Beside it, measured in the same run: the same
// message written to N plain `ws` sockets by a bare `ws` server in its own process.
//   BENCH_FANOUT_SIZES=1000,5000,10000  BENCH_FANOUT_ROUNDS=5  BENCH_FANOUT_VARIANT=1
// The variant: 10,000 subscribers over 100 distinct filters and keys of four visibilities
// (all envs, prod, staging, prod+staging); every subscriber must receive exactly the events its
// key may see, counted. Tollgate's per-key caps (200 sockets, 2,000 operations, 100 requests a
// second by default) are raised for the run: one key opens every socket here.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import { BENCH_KEY, fmt, percentile, processUsage, sleep, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const BURST = 500;

// ---------------------------------------------------------------------------------------
// The baseline server: accepts graphql-transport-ws sockets, acknowledges them, and on
// POST /publish writes the request's body to every socket as it is.
if (process.argv[2] === 'bare-ws-server') {
  const http = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const message = Buffer.concat(chunks).toString();
    for (const socket of wss.clients) socket.send(message);
    res.end(String(wss.clients.size));
  });
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      if (String(data).includes('"connection_init"')) socket.send('{"type":"connection_ack"}');
    });
  });
  http.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => console.log(JSON.stringify({ port: (http.address() as AddressInfo).port })));
  process.once('SIGTERM', () => process.exit(0));
}

interface Subscriber {
  socket: WebSocket;
  acked: boolean;
  failed: boolean;
  /** When each event (by its monitor's name and round) arrived. */
  received: Map<string, number>;
  /** Every `next` received, to count deliveries the key may not see. */
  nexts: number;
  firstMessage?: string;
}

/** Opens `n` sockets in bursts, each subscribing with `subscribeFor(i)` once acknowledged. */
async function openSubscribers(url: string, n: number, authorizationFor: (i: number) => string, subscribeFor: (i: number) => string | null): Promise<Subscriber[]> {
  const subs: Subscriber[] = [];
  for (let start = 0; start < n; start += BURST) {
    const burst: Promise<void>[] = [];
    for (let i = start; i < Math.min(n, start + BURST); i++) {
      const socket = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
      const sub: Subscriber = { socket, acked: false, failed: false, received: new Map(), nexts: 0 };
      subs.push(sub);
      burst.push(
        new Promise<void>((resolve) => {
          socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${authorizationFor(i)}` } })));
          socket.on('message', (data) => {
            const at = performance.now();
            const text = String(data);
            if (!sub.acked && text.includes('"connection_ack"')) {
              sub.acked = true;
              const subscribe = subscribeFor(i);
              if (subscribe) socket.send(subscribe);
              return resolve();
            }
            if (!text.startsWith('{"id"')) return;
            const message = JSON.parse(text) as { type: string; payload?: any };
            if (message.type !== 'next') return;
            sub.nexts++;
            sub.firstMessage ??= text;
            const change = message.payload?.data?.monitorStateChanged;
            const key = change ? `${change.monitor.name}#${change.message}` : (message.payload?.round ?? 'bare');
            sub.received.set(String(key), at);
          });
          socket.on('error', () => {
            sub.failed = true;
            resolve();
          });
          socket.on('close', () => resolve());
        }),
      );
    }
    await Promise.all(burst);
  }
  return subs;
}

async function closeAll(subs: Subscriber[]): Promise<void> {
  await Promise.all(
    subs.map((s) => {
      if (s.socket.readyState === WebSocket.CLOSED) return undefined;
      const closed = once(s.socket, 'close');
      s.socket.terminate();
      return closed;
    }),
  );
}

/** Waits until every subscriber in `expected` has `key`, or 30 s; the latencies from `t0`. */
async function deliveries(expected: Subscriber[], key: string, t0: number): Promise<{ latencies: number[]; missing: number }> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && expected.some((s) => !s.received.has(key))) await sleep(5);
  const latencies: number[] = [];
  let missing = 0;
  for (const s of expected) {
    const at = s.received.get(key);
    if (at === undefined) missing++;
    else latencies.push(at - t0);
  }
  return { latencies, missing };
}

function summary(latencies: number[]): { p50: number; p99: number; max: number } {
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.length ? Math.max(...latencies) : Number.NaN };
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
}

async function untilOperations(base: string, n: number): Promise<void> {
  for (let i = 0; i < 600 && (await metric(base, 'tollgate_ws_operations')) < n; i++) await sleep(50);
  await sleep(300); // from a group's start to its listener on the bus
}

async function startBareWs(): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'bare-ws-server'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const { port } = JSON.parse(String(line)) as { port: number };
  return {
    url: `ws://127.0.0.1:${port}`,
    pid: child.pid!,
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/** Both processes hold one descriptor per socket. */
function checkDescriptors(n: number): void {
  const soft = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim());
  if (Number.isFinite(soft) && soft < n + 1000) {
    console.error(
      `fanout: ${n} sockets need at least ${n + 1000} file descriptors in this process and in the server's; ulimit -n is ${soft}. Raise it (ulimit -n ${n + 1000}, up to ulimit -Hn) and run again.`,
    );
    process.exit(2);
  }
}

async function main() {
  const sizes = (process.env.BENCH_FANOUT_SIZES ?? '1000,5000,10000').split(',').map(Number);
  const rounds = Number(process.env.BENCH_FANOUT_ROUNDS ?? 5);
  const variant = process.env.BENCH_FANOUT_VARIANT !== '0';
  checkDescriptors(Math.max(...sizes, variant ? 10_000 : 0));
  console.log(
    `somaxconn ${execFileSync('cat', ['/proc/sys/net/core/somaxconn']).toString().trim()} (caps Tollgate's listen backlog of 4096), ulimit -n ${execFileSync('sh', ['-c', 'ulimit -n']).toString().trim()}`,
  );

  const rows: string[] = [];
  for (const n of sizes) {
    // Tollgate: N subscribers of one key, one filter.
    const server = await startTollgate(UNREACHED_LIMITS);
    const base = server.url.replace(/\/graphql$/, '');
    const wsUrl = server.url.replace('http', 'ws');
    const monitor = (await server.gql('mutation { createMonitor(input: { name: "fanout", type: EXTERNAL, tags: ["service:fanout", "env:prod"] }) { id } }')).createMonitor
      .id as string;
    const rssIdle = processUsage(server.child.pid!).rssBytes;
    const subscribe = JSON.stringify({
      id: '1',
      type: 'subscribe',
      payload: { query: 'subscription { monitorStateChanged(query: "service:fanout") { monitor { id name } group from to at message } }' },
    });
    const t0Connect = performance.now();
    const subs = await openSubscribers(
      wsUrl,
      n,
      () => BENCH_KEY,
      () => subscribe,
    );
    const connectMs = performance.now() - t0Connect;
    const connected = subs.filter((s) => s.acked).length;
    await untilOperations(base, connected);
    const rssConnected = processUsage(server.child.pid!).rssBytes;
    const latencies: number[] = [];
    const roundP99: number[] = [];
    let missing = 0;
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      await server.gql('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', {
        i: { monitorId: monitor, state: r % 2 === 0 ? 'ALERT' : 'OK', message: `round ${r}` },
      });
      const got = await deliveries(
        subs.filter((s) => s.acked),
        `fanout#round ${r}`,
        t0,
      );
      latencies.push(...got.latencies);
      roundP99.push(percentile(got.latencies, 99));
      missing += got.missing;
    }
    const rssAfter = processUsage(server.child.pid!).rssBytes;
    const groups = await metric(base, 'tollgate_ws_shared_subscriptions');
    const message = subs.find((s) => s.firstMessage)?.firstMessage ?? '{}';
    await closeAll(subs);
    await server.stop();
    const t = summary(latencies);

    // Baseline: the same message to N plain ws sockets.
    const bare = await startBareWs();
    const bareSubs = await openSubscribers(
      bare.url,
      n,
      () => BENCH_KEY,
      () => null,
    );
    const bareConnected = bareSubs.filter((s) => s.acked).length;
    const bareLatencies: number[] = [];
    const bareRoundP99: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const body = message.replace(/"message":"[^"]*"/, `"message":"bare ${r}"`);
      const t0 = performance.now();
      await fetch(`${bare.url.replace('ws', 'http')}/publish`, { method: 'POST', body });
      const got = await deliveries(
        bareSubs.filter((s) => s.acked),
        `fanout#bare ${r}`,
        t0,
      );
      bareLatencies.push(...got.latencies);
      bareRoundP99.push(percentile(got.latencies, 99));
    }
    const bareRss = processUsage(bare.pid).rssBytes;
    await closeAll(bareSubs);
    await bare.stop();
    const b = summary(bareLatencies);

    const line =
      `N=${n}: connected ${connected}/${n} in ${(connectMs / 1000).toFixed(1)} s, ${missing} deliveries missing, groups ${groups}; ` +
      `p50 ${fmt(t.p50)} p99 ${fmt(t.p99)} max ${fmt(t.max)}; bare ws (${bareConnected} connected) p50 ${fmt(b.p50)} p99 ${fmt(b.p99)} max ${fmt(b.max)}; ` +
      `p99 ${(t.p99 / b.p99).toFixed(2)}× bare; server RSS ${mib(rssIdle)} idle, ${mib(rssConnected)} connected ` +
      `(${((rssConnected - rssIdle) / Math.max(1, connected) / 1024).toFixed(1)} KiB per idle subscriber), ${mib(rssAfter)} after; bare ws RSS ${mib(bareRss)}`;
    console.log(line);
    // On a shared machine one round can stall on another process: the median round says what a
    // typical event costs, the pooled p99 above what the worst of them did.
    const medianRound = { tollgate: percentile(roundP99, 50), bare: percentile(bareRoundP99, 50) };
    console.log(
      `  p99 per round: Tollgate ${roundP99.map((v) => v.toFixed(0)).join(', ')} ms; bare ws ${bareRoundP99.map((v) => v.toFixed(0)).join(', ')} ms; ` +
        `median round p99 ${fmt(medianRound.tollgate)} vs ${fmt(medianRound.bare)} (${(medianRound.tollgate / medianRound.bare).toFixed(2)}×)`,
    );
    rows.push(
      `| ${n.toLocaleString('en')} | ${connected.toLocaleString('en')} | ${t.p50.toFixed(0)} / ${t.p99.toFixed(0)} / ${t.max.toFixed(0)} ms | ${b.p50.toFixed(0)} / ${b.p99.toFixed(0)} / ${b.max.toFixed(0)} ms | ${(t.p99 / b.p99).toFixed(2)} × | ${mib(rssAfter)} (${((rssConnected - rssIdle) / Math.max(1, connected) / 1024).toFixed(1)} KiB/subscriber) |`,
    );
    if (n === 10_000) {
      const meets = (p99: number, bareP99: number) => connected === n && missing === 0 && p99 <= 1000 && p99 <= 3 * bareP99 && rssAfter <= 2 ** 30;
      console.log(
        `targets at 10,000 (all connected, p99 ≤ 1 s and ≤ 3× bare, RSS ≤ 1 GiB): pooled over the rounds ${meets(t.p99, b.p99) ? 'met' : 'NOT met'}, ` +
          `median round ${meets(medianRound.tollgate, medianRound.bare) ? 'met' : 'NOT met'}`,
      );
    }
  }

  if (variant) await variantRun(rounds);
  console.log(['', '| subscribers | connected | Tollgate p50 / p99 / max | bare ws p50 / p99 / max | p99 vs bare | server RSS |', '|---|---|---|---|---|---|', ...rows].join('\n'));
  process.exit(0);
}

/** 10,000 subscribers, 100 filters, four visibilities: each gets exactly what its key may see. */
async function variantRun(rounds: number): Promise<void> {
  const n = 10_000;
  const server = await startTollgate(UNREACHED_LIMITS);
  const base = server.url.replace(/\/graphql$/, '');
  const wsUrl = server.url.replace('http', 'ws');
  const key = async (name: string, envs: string[] | null) =>
    (await server.gql('mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }', { i: { name, scopes: ['GATES_READ'], envs } })).createApiKey.secret as string;
  const keys = [
    { secret: BENCH_KEY, prod: true, staging: true },
    { secret: await key('prod', ['prod']), prod: true, staging: false },
    { secret: await key('staging', ['staging']), prod: false, staging: true },
    { secret: await key('prod+staging', ['prod', 'staging']), prod: true, staging: true },
  ];
  const create = async (name: string, env: string) =>
    (await server.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', { i: { name, type: 'EXTERNAL', tags: ['service:fanout', `env:${env}`] } }))
      .createMonitor.id as string;
  const monitors = { prod: await create('fanout-prod', 'prod'), staging: await create('fanout-staging', 'staging') };
  const keyOf = (i: number) => keys[i % keys.length]!;
  // 100 distinct filters, all matching both monitors: shared execution must not collapse when queries differ a little.
  const subscribeFor = (i: number) =>
    JSON.stringify({
      id: `s${i}`,
      type: 'subscribe',
      payload: {
        query: `subscription { monitorStateChanged(query: "service:fanout -team:t${Math.floor(i / keys.length) % 100}") { monitor { id name } group from to at message } }`,
      },
    });
  const subs = await openSubscribers(wsUrl, n, (i) => keyOf(i).secret, subscribeFor);
  const connected = subs.filter((s) => s.acked).length;
  await untilOperations(base, connected);
  const groups = await metric(base, 'tollgate_ws_shared_subscriptions');
  const latencies: number[] = [];
  let missing = 0;
  const expectedNexts = new Map<Subscriber, number>();
  for (let r = 0; r < rounds; r++) {
    for (const env of ['prod', 'staging'] as const) {
      const expected = subs.filter((s, i) => s.acked && keyOf(i)[env]);
      for (const s of expected) expectedNexts.set(s, (expectedNexts.get(s) ?? 0) + 1);
      const t0 = performance.now();
      await server.gql('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', {
        i: { monitorId: monitors[env], state: r % 2 === 0 ? 'ALERT' : 'OK', message: `round ${r}` },
      });
      const got = await deliveries(expected, `fanout-${env}#round ${r}`, t0);
      latencies.push(...got.latencies);
      missing += got.missing;
    }
  }
  await sleep(500); // anything delivered to a key that may not see it would have arrived by now
  let wrong = 0;
  subs.forEach((s) => {
    if (s.acked && s.nexts !== (expectedNexts.get(s) ?? 0)) wrong++;
  });
  const rss = processUsage(server.child.pid!).rssBytes;
  await closeAll(subs);
  await server.stop();
  const t = summary(latencies);
  console.log(
    `variant N=${n}, 100 filters × 4 visibilities: connected ${connected}/${n}, groups ${groups}, ${latencies.length} deliveries, ${missing} missing, ` +
      `${wrong} subscribers with other than exactly what their key may see; p50 ${fmt(t.p50)} p99 ${fmt(t.p99)} max ${fmt(t.max)}; server RSS ${mib(rss)}`,
  );
}

if (process.argv[2] !== 'bare-ws-server') await main();
