// 10,000 evaluations in progress (1 h windows): what they cost at rest, next to the same
// server holding none, measured in the same run. Target: ≤ 5% of one core.
import { processUsage, sleep, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const COUNT = Number(process.env.BENCH_EVALUATIONS ?? 10_000);
const REST_SECONDS = Number(process.env.BENCH_REST_SECONDS ?? 30);

async function atRest(pid: number, seconds: number) {
  const before = processUsage(pid);
  await sleep(seconds * 1000);
  const after = processUsage(pid);
  return { cpuShare: (after.cpuSeconds - before.cpuSeconds) / seconds, rssBytes: after.rssBytes };
}

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

const empty = await startTollgate(UNREACHED_LIMITS);
const loaded = await startTollgate(UNREACHED_LIMITS);
try {
  const monitor = await loaded.gql('mutation { createMonitor(input: { name: "idle", type: EXTERNAL, tags: ["bench:idle"] }) { id } }');
  await loaded.gql('mutation($id: ID!) { reportMonitorState(input: { monitorId: $id, state: OK }) { id } }', { id: monitor.createMonitor.id });
  const started = performance.now();
  for (let i = 0; i < COUNT; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, COUNT - i) }, (_, j) =>
        loaded.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
          i: {
            service: 'idle',
            env: 'bench',
            version: `v${i + j}`,
            configuration: { rules: [{ name: 'monitors', options: { monitor: { query: 'bench:idle', duration: 3600 } } }] },
          },
        }),
      ),
    );
  }
  const triggerSeconds = (performance.now() - started) / 1000;
  await sleep(3000); // let the first checks settle
  const [restEmpty, restLoaded] = await Promise.all([atRest(empty.child.pid!, REST_SECONDS), atRest(loaded.child.pid!, REST_SECONDS)]);
  const inProgress = await loaded.gql('{ evaluationStats(filter: { service: ["idle"], status: [IN_PROGRESS] }) { total } }');
  console.log(
    [
      `${COUNT} evaluations in progress (1 h monitor windows), ${REST_SECONDS} s at rest; triggered in ${triggerSeconds.toFixed(1)} s (${(COUNT / triggerSeconds).toFixed(0)}/s)`,
      `  baseline: same server, no evaluations : CPU ${pct(restEmpty.cpuShare).padStart(7)} of one core, RSS ${mib(restEmpty.rssBytes)}`,
      `  ${String(inProgress.evaluationStats.total).padStart(5)} evaluations in progress        : CPU ${pct(restLoaded.cpuShare).padStart(7)} of one core, RSS ${mib(restLoaded.rssBytes)}`,
      `  difference: CPU +${pct(restLoaded.cpuShare - restEmpty.cpuShare)}, RSS +${mib(restLoaded.rssBytes - restEmpty.rssBytes)} (target: ≤ 5% of one core) ${restLoaded.cpuShare <= 0.05 ? 'OK' : 'ABOVE TARGET'}`,
    ].join('\n'),
  );
} finally {
  await Promise.all([empty.stop(), loaded.stop()]);
}
