// A backtest over days of a busy service's telemetry, in a real Tollgate in its own process:
// how long the replay takes, and what it does to everyone else meanwhile — the server's own
// event-loop delay (read and reset through /metrics) and /healthz probed every 10 ms — next to
// the same server idle. Target: max lag ≤ 200 ms while it runs (as for the attacks of issue 9).
import { BENCH_KEY, fmt, percentile, sleep, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const DAYS = Number(process.env.BENCH_BACKTEST_DAYS ?? 3);
const RESOURCES = Number(process.env.BENCH_BACKTEST_RESOURCES ?? 10);
/** A new version every this many hours, after a 15-minute canary beside the old one. */
const DEPLOY_EVERY_HOURS = Number(process.env.BENCH_BACKTEST_DEPLOY_HOURS ?? 6);
const TARGET_MS = 200;
const MIN = 60_000;
const HOUR = 60 * MIN;

const server = await startTollgate(UNREACHED_LIMITS);
const base = server.url.replace(/\/graphql$/, '');

/** Requests of one version: `perMinute` per resource over [from, from + minutes), one in 20 failing. */
async function serve(version: string, from: number, minutes: number, perMinute: number): Promise<number> {
  const spans: unknown[] = [];
  let sent = 0;
  const flush = async () => {
    if (spans.length === 0) return;
    const attributes = [
      ['service.name', 'bench-shop'],
      ['deployment.environment.name', 'prod'],
      ['service.version', version],
    ].map(([key, value]) => ({ key, value: { stringValue: value } }));
    const res = await fetch(`${base}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_KEY}` },
      body: JSON.stringify({ resourceSpans: [{ resource: { attributes }, scopeSpans: [{ spans: spans.splice(0) }] }] }),
    });
    if (res.status !== 200) throw new Error(`OTLP answered ${res.status}: ${await res.text()}`);
  };
  const count = minutes * perMinute;
  for (let r = 0; r < RESOURCES; r++) {
    for (let i = 0; i < count; i++) {
      const start = BigInt(Math.floor(from + (i * minutes * MIN) / count)) * 1_000_000n;
      const failed = i % 20 === 0;
      spans.push({
        name: `GET /r${r}`,
        kind: 2,
        startTimeUnixNano: String(start),
        endTimeUnixNano: String(start + 3_000_000n),
        attributes: [
          { key: 'http.request.method', value: { stringValue: 'GET' } },
          { key: 'http.route', value: { stringValue: `/r${r}` } },
          { key: 'http.response.status_code', value: { intValue: failed ? 500 : 200 } },
        ],
        status: { code: failed ? 2 : 0 },
      });
      sent++;
      if (spans.length >= 4000) await flush();
    }
  }
  await flush();
  return sent;
}

async function serverLag(): Promise<{ max: number; p99: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^tollgate_nodejs_eventloop_lag_${name}_seconds (\\S+)`, 'm').exec(text)?.[1]) * 1000;
  return { max: read('max'), p99: read('p99') };
}

/** Runs `work` while probing /healthz every 10 ms; the server's lag histogram is reset first. */
async function measure<T>(work: () => Promise<T>) {
  await serverLag();
  const probes: number[] = [];
  let stop = false;
  const prober = await (async () => {
    while (!stop) {
      const started = performance.now();
      await (await fetch(`${base}/healthz`)).arrayBuffer();
      const ms = performance.now() - started;
      probes.push(ms);
      await sleep(Math.max(0, 10 - ms));
    }
  })();
  const started = performance.now();
  let result: T;
  try {
    result = await work();
  } finally {
    stop = true;
    await prober;
  }
  const lag = await serverLag();
  return { result, seconds: (performance.now() - started) / 1000, lag, healthzMax: Math.max(...probes), healthzP99: percentile(probes, 99) };
}

try {
  const start = Math.floor((Date.now() - DAYS * 24 * HOUR) / HOUR) * HOUR;
  const end = Date.now() - 5 * MIN;
  let spans = 0;
  let version = 0;
  const ingestStarted = performance.now();
  for (let at = start; at < end; at += DEPLOY_EVERY_HOURS * HOUR) {
    const span = Math.min(DEPLOY_EVERY_HOURS * HOUR, end - at) / MIN;
    if (version > 0) spans += await serve(`v${version - 1}`, at, 15, 6);
    spans += await serve(`v${version}`, at, span, 6);
    version++;
  }
  console.log(
    `${DAYS} days of bench-shop: ${RESOURCES} resources, ${version} versions (one every ${DEPLOY_EVERY_HOURS} h), ${spans} spans ingested in ${((performance.now() - ingestStarted) / 1000).toFixed(0)} s`,
  );

  const idle = await measure(() => sleep(3000));
  const run = await measure(async () => {
    const started = await server.gql('mutation($i: BacktestGateInput!) { backtestGate(input: $i) { id } }', {
      i: {
        service: 'bench-shop',
        env: 'prod',
        configuration: { rules: [{ name: 'errors', options: { faultyDeploymentDetection: { duration: 900 } } }] },
        from: new Date(start + 30 * MIN).toISOString(),
        to: new Date().toISOString(),
      },
    });
    for (;;) {
      await sleep(250);
      const { backtest } = await server.gql('query($id: ID!) { backtest(id: $id) { status error progress { done total } summary { deploys failed passed undecided } } }', {
        id: started.backtestGate.id,
      });
      if (backtest.status !== 'RUNNING') return backtest;
    }
  });
  const line = (name: string, m: { seconds: number; lag: { max: number; p99: number }; healthzMax: number; healthzP99: number }) =>
    `  ${name.padEnd(10)} ${m.seconds.toFixed(1).padStart(6)} s; server lag max ${fmt(m.lag.max).padStart(9)}, p99 ${fmt(m.lag.p99).padStart(9)}; /healthz max ${fmt(m.healthzMax).padStart(9)}, p99 ${fmt(m.healthzP99).padStart(9)}`;
  console.log(line('idle', idle));
  console.log(
    `${line('backtest', run)}  ${run.lag.max <= TARGET_MS && run.healthzMax <= TARGET_MS ? 'OK' : 'OVER TARGET'}\n      ${run.result.status}: ${JSON.stringify(run.result.summary ?? run.result.error)}, ${(run.result.progress.done / run.seconds).toFixed(2)} deploys/s`,
  );
} finally {
  await server.stop();
}
