// Latency of verdicts pushed to a graphql-ws subscriber, each next to a baseline measured in
// the same run on the same server: a monitor state report echoed to a subscriber.
//   A. trigger → verdict, JIT monitor rule with duration 0, at 100 triggers/s (target p99 ≤ 50 ms)
//   B. monitor → ALERT → gate FAIL, with 1,000 other evaluations in progress (target p99 ≤ 50 ms)
import { fmt, listen, percentile, sleep, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const RATE = Number(process.env.BENCH_RATE ?? 100);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const OTHERS = Number(process.env.BENCH_OTHERS ?? 1000);
const ALERTS = Number(process.env.BENCH_ALERTS ?? 100);

const server = await startTollgate(UNREACHED_LIMITS);
const createMonitor = async (tag: string) => {
  const d = await server.gql('mutation($t: String!) { createMonitor(input: { name: $t, type: EXTERNAL, tags: [$t] }) { id } }', { t: tag });
  await server.gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', { id: d.createMonitor.id });
  return d.createMonitor.id as string;
};
const evaluate = (service: string, version: string, query: string, duration: number) =>
  server.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
    i: { service, env: 'bench', version, configuration: { rules: [{ name: 'monitors', options: { monitor: { query, duration } } }] } },
  });

/** Sends `count` requests at `rate` per second; `send(i)` records its own start time. */
async function paced(count: number, rate: number, send: (i: number) => Promise<unknown>) {
  const started = performance.now();
  const inflight: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const due = started + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    inflight.push(send(i));
  }
  await Promise.all(inflight);
}

/** Echo baseline: a state report sent at t0, received by a monitorStateChanged subscriber. */
async function echoBaseline(count: number, rate: number): Promise<number[]> {
  const echo = await createMonitor('bench:echo');
  const sent = new Map<string, number>();
  const latencies: number[] = [];
  const stop = await listen<{ monitorStateChanged: { message: string } }>(server.ws(), 'subscription { monitorStateChanged(query: "bench:echo") { message } }', (d) => {
    const t0 = sent.get(d.monitorStateChanged.message);
    if (t0 !== undefined) latencies.push(performance.now() - t0);
  });
  await paced(count, rate, (i) => {
    sent.set(`e${i}`, performance.now());
    return server.gql('mutation($id: ID!, $s: MonitorState!, $m: String!) { reportMonitorState(input: { monitorId: $id, state: $s, message: $m }) { id } }', {
      id: echo,
      s: i % 2 === 0 ? 'WARN' : 'OK',
      m: `e${i}`,
    });
  });
  await sleep(200);
  stop();
  return latencies;
}

function row(label: string, values: number[], baseline: number[]) {
  const p50 = percentile(values, 50);
  const p99 = percentile(values, 99);
  return `  ${label.padEnd(44)} n=${String(values.length).padStart(5)}  p50 ${fmt(p50).padStart(9)}  p99 ${fmt(p99).padStart(9)}  (x${(p99 / percentile(baseline, 99)).toFixed(2)} of baseline p99)`;
}

try {
  // ---- A ----
  await createMonitor('bench:trigger');
  const baselineA = await echoBaseline(RATE * SECONDS, RATE);
  const sent = new Map<string, number>();
  const verdicts: number[] = [];
  const stopA = await listen<{ evaluationEvents: { version: string; status: string } }>(
    server.ws(),
    'subscription { evaluationEvents(filter: { service: ["bench-trigger"], status: [PASS, FAIL] }) { version status } }',
    (d) => {
      const t0 = sent.get(d.evaluationEvents.version);
      if (t0 !== undefined) verdicts.push(performance.now() - t0);
    },
  );
  await paced(RATE * SECONDS, RATE, (i) => {
    sent.set(`r${i}`, performance.now());
    return evaluate('bench-trigger', `r${i}`, 'bench:trigger', 0);
  });
  await sleep(500);
  stopA();

  // ---- B ----
  await createMonitor('bench:others');
  for (let i = 0; i < OTHERS; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, OTHERS - i) }, (_, j) => evaluate('bench-others', `o${i + j}`, 'bench:others', 3600)));
  }
  const baselineB = await echoBaseline(200, 50);
  const failSent = new Map<string, number>();
  const fails: number[] = [];
  const stopB = await listen<{ evaluationEvents: { version: string } }>(
    server.ws(),
    'subscription { evaluationEvents(filter: { service: ["bench-alert"], status: [FAIL] }) { version } }',
    (d) => {
      const t0 = failSent.get(d.evaluationEvents.version);
      if (t0 !== undefined) fails.push(performance.now() - t0);
    },
  );
  for (let i = 0; i < ALERTS; i++) {
    const monitorId = await createMonitor(`bench:target-${i}`);
    await evaluate('bench-alert', `a${i}`, `bench:target-${i}`, 3600);
    await sleep(5);
    failSent.set(`a${i}`, performance.now());
    await server.gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: ALERT }) { id } }', { id: monitorId });
  }
  await sleep(500);
  stopB();
  const running = await server.gql('{ evaluations(first: 1, filter: { service: ["bench-others"], status: [IN_PROGRESS] }) { edges { node { id } } } }');

  console.log(
    [
      `A. trigger → verdict pushed over graphql-ws, JIT monitor rule (duration 0), ${RATE} triggers/s for ${SECONDS} s`,
      row('baseline: state report → subscriber', baselineA, baselineA),
      row('trigger → verdict (target p99 ≤ 50 ms)', verdicts, baselineA),
      `   ${verdicts.length}/${RATE * SECONDS} verdicts received; p99 ${percentile(verdicts, 99) <= 50 ? 'within' : 'ABOVE'} target`,
      `B. monitor ALERT → gate FAIL pushed over graphql-ws, ${OTHERS} other evaluations in progress`,
      row('baseline: state report → subscriber', baselineB, baselineB),
      row('ALERT → FAIL (target p99 ≤ 50 ms)', fails, baselineB),
      `   ${fails.length}/${ALERTS} failures received; others still in progress: ${running.evaluations.edges.length > 0 ? 'yes' : 'NO'}; p99 ${percentile(fails, 99) <= 50 ? 'within' : 'ABOVE'} target`,
    ].join('\n'),
  );
} finally {
  await server.stop();
}
