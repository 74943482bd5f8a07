// Work triggered by one event, against a real Tollgate in its own process (issue 9, item 7):
//   A. N evaluations (default 8,000) whose monitor rule watches one monitor: one
//      reportMonitorState WARN (wakes every rule, decides nothing), then ALERT (fails them all).
//      Time for the mutation to return, the server's event-loop delay (its own histogram,
//      through /metrics) and the worst /healthz latency seen by a keep-alive client while the
//      checks run, time until every verdict is recorded, and keep-alive connections reset.
//   B. One Alertmanager notification with 10,000 new alerts: time to answer, worst /healthz.
//   C. monitors(query:) once those 10,000 (or BENCH_MONITORS) monitors exist.
import { Agent, request } from 'node:http';
import { BENCH_KEY, fmt, sleep, startTollgate } from './lib.ts';

const WATCHERS = Number(process.env.BENCH_WATCHERS ?? 8000);
const WATCH = process.env.BENCH_WATCH ?? 'ids'; // ids | query
const ALERTS = Number(process.env.BENCH_ALERTS ?? 10_000);
const MONITORS = Number(process.env.BENCH_MONITORS ?? ALERTS);

// One key creates every watcher: the per-key limits (issue 9, item 8) are off for the bench.
const NO_LIMITS = Object.fromEntries(
  ['REQUESTS_PER_SECOND', 'INGEST_PER_SECOND', 'TRIGGERS_PER_MINUTE', 'IN_PROGRESS', 'SOCKETS', 'OPERATIONS'].map((k) => [`TOLLGATE_RATE_LIMIT_${k}`, '0']),
);
const server = await startTollgate(NO_LIMITS);
const base = server.url.replace(/\/graphql$/, '');

/** The server's own event-loop delay since the last read (prom-client resets it on each read), in ms. */
async function serverLag(): Promise<number> {
  try {
    const text = await (await fetch(`${base}/metrics`)).text();
    return Number(/^tollgate_nodejs_eventloop_lag_max_seconds (\S+)/m.exec(text)?.[1]) * 1000;
  } catch {
    return Number.NaN;
  }
}

/** /healthz in a loop over one keep-alive connection: worst latency and resets while it runs. */
async function probeHealth() {
  const lag = serverLag(); // resets the server's histogram
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let worst = 0;
  let errors = 0;
  let stopped = false;
  const once = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = request(`${base}/healthz`, { agent }, (res) => {
        res.resume();
        res.on('end', () => {
          worst = Math.max(worst, performance.now() - t0);
          resolve();
        });
      });
      req.on('error', () => {
        // A reset keep-alive connection: the stall that caused it counts too.
        worst = Math.max(worst, performance.now() - t0);
        errors++;
        resolve();
      });
      req.end();
    });
  const loop = await (async () => {
    while (!stopped) {
      await once();
      await sleep(5);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      agent.destroy();
      await lag;
      return { worst, errors, serverMax: await serverLag() };
    },
  };
}

/** Whether any evaluation of the service is still running (one indexed row, cheap to poll). */
async function anyInProgress(service: string): Promise<boolean> {
  const d = await server.gql('query($s: [String!]) { evaluations(filter: { service: $s, status: [IN_PROGRESS] }, first: 1) { edges { node { id } } } }', { s: [service] });
  return d.evaluations.edges.length > 0;
}

async function watchers() {
  const m = await server.gql('mutation { createMonitor(input: { name: "watched", type: EXTERNAL, tags: ["bench:watched", "env:bench"] }) { id } }');
  const id = m.createMonitor.id as string;
  await server.gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', { id });
  const monitor = WATCH === 'query' ? { query: 'bench:watched', duration: 3600 } : { monitorIds: [{ id }], duration: 3600 };
  const started = performance.now();
  for (let i = 0; i < WATCHERS; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, WATCHERS - i) }, (_, j) =>
        server.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
          i: { service: 'watchers', env: 'bench', version: `v${i + j}`, configuration: { rules: [{ name: 'watch', options: { monitor } }] } },
        }),
      ),
    );
  }
  console.log(`${WATCHERS} evaluations watching one monitor (${WATCH}) triggered in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  await sleep(2000); // the first checks settle

  for (const state of ['WARN', 'ALERT'] as const) {
    const probe = await probeHealth();
    await sleep(100);
    const t0 = performance.now();
    await server.gql('mutation($id: ID!, $s: MonitorState!) { reportMonitorState(input: { monitorId: $id, state: $s }) { id } }', { id, s: state });
    const returned = performance.now() - t0;
    let settled: number;
    if (state === 'ALERT') {
      while (await anyInProgress('watchers')) await sleep(100);
      settled = performance.now() - t0;
    } else {
      // Nothing to wait for from outside: give the woken checks time to run.
      await sleep(Math.max(2000, WATCHERS / 2));
      settled = Number.NaN;
    }
    const { worst, errors, serverMax } = await probe.stop();
    console.log(
      `  ${state.padEnd(5)}: mutation returned in ${fmt(returned)}, server event-loop delay max ${fmt(serverMax)}, worst /healthz ${fmt(worst)}, keep-alive errors ${errors}` +
        (state === 'ALERT' ? `, all ${WATCHERS} verdicts FAIL after ${fmt(settled)}` : ''),
    );
  }
}

async function alertmanager() {
  const alerts = Array.from({ length: ALERTS }, (_, i) => ({ status: 'firing', labels: { alertname: `bench-alert-${i}`, env: 'bench', instance: `i${i}` } }));
  const probe = await probeHealth();
  await sleep(100);
  const t0 = performance.now();
  const res = await fetch(`${base}/hooks/alertmanager`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_KEY}` },
    body: JSON.stringify({ version: '4', status: 'firing', alerts }),
  });
  const body = (await res.json()) as unknown;
  const took = performance.now() - t0;
  const { worst, errors, serverMax } = await probe.stop();
  console.log(
    `Alertmanager, ${ALERTS} new alerts: HTTP ${res.status} in ${fmt(took)}, server event-loop delay max ${fmt(serverMax)}, worst /healthz ${fmt(worst)}, keep-alive errors ${errors}; ${JSON.stringify(body).slice(0, 120)}`,
  );
  for (let made = ALERTS; made < MONITORS; made += 10_000) {
    const more = Array.from({ length: Math.min(10_000, MONITORS - made) }, (_, i) => ({ status: 'firing', labels: { alertname: `bench-more-${made + i}`, env: 'bench' } }));
    await fetch(`${base}/hooks/alertmanager`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_KEY}` },
      body: JSON.stringify({ version: '4', alerts: more }),
    });
  }
}

async function search() {
  const t0 = performance.now();
  const res = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_KEY}` },
    body: JSON.stringify({ query: '{ monitors(query: "env:bench", first: 5) { edges { node { name } } } }' }),
  });
  const body = (await res.json()) as { data?: unknown; errors?: Array<{ message: string }> };
  console.log(`monitors(query:) over ${MONITORS}+ monitors: ${fmt(performance.now() - t0)}, ${body.errors ? `ERROR ${body.errors[0]!.message.slice(0, 100)}` : 'answered'}`);
}

try {
  const only = process.env.BENCH_PARTS?.split(',') ?? ['watchers', 'alertmanager', 'search'];
  if (only.includes('watchers')) await watchers();
  if (only.includes('alertmanager')) await alertmanager();
  if (only.includes('search')) await search();
} finally {
  await server.stop();
}
