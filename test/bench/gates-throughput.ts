// Requests per second of a realistic Tollgate read (20 gates with 5 rules each, over HTTP,
// authenticated) against a bare graphql-yoga `{ hello }` server measured in the same run.
// Targets: ratio >= 0.5 with the response cache on (the default), >= 0.3 with it off.
// Run: npm run bench -- gates
//
// The machine is shared: the three servers are measured in alternating rounds, so a burst of
// other work lowers one round of each rather than one server's whole figure; the ratio is the
// median of the rounds'. Each server's CPU time per request (from /proc, user + system) is
// printed too: less sensitive to other processes than requests per second.

import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { BENCH_KEY, startBare, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(child: ChildProcess): number {
  const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100/s)
}

interface Sample {
  requests: number;
  seconds: number;
  cpu: number;
  p99: number[];
}

async function load(url: string, body: string, headers: Record<string, string>, duration: number) {
  const result = await autocannon({ url, method: 'POST', body, duration, connections: CONNECTIONS, headers: { 'content-type': 'application/json', ...headers } });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result;
}

const auth = { authorization: `Bearer ${BENCH_KEY}` };
const query = '{ gates(first: 20) { edges { node { service env identifier rules { name dryRun } } } } }';
/** Fields resolved by one such read: gates, edges and for each of 20: node, 3 scalars, rules, and 5 × 2 scalars. */
const FIELDS = 2 + 20 * (1 + 1 + 3 + 1 + 5 * 2);

async function seed(server: Awaited<ReturnType<typeof startTollgate>>) {
  for (let i = 0; i < 20; i++) {
    await server.gql('mutation($input: CreateGateInput!) { createGate(input: $input) { id } }', {
      input: {
        service: `bench-${i}`,
        env: 'prod',
        rules: [1, 2, 3, 4, 5].map((r) => ({ name: `rule-${r}`, options: { monitor: { query: `service:bench-${i} team:t${r}`, duration: 600 } } })),
      },
    });
  }
  const check = await server.gql(query);
  if (check.gates.edges.length !== 20 || check.gates.edges[0].node.rules.length !== 5) throw new Error('seed failed');
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const bare = await startBare();
const cached = await startTollgate(UNREACHED_LIMITS);
const uncached = await startTollgate({ ...UNREACHED_LIMITS, TOLLGATE_RESPONSE_CACHE_TTL_MS: '0' });
try {
  await seed(cached);
  await seed(uncached);
  const targets = [
    { label: 'baseline: bare graphql-yoga { hello }          ', url: bare.url, child: bare.child, body: JSON.stringify({ query: '{ hello }' }), headers: {} },
    { label: 'tollgate: response cache on (the default)      ', url: cached.url, child: cached.child, body: JSON.stringify({ query }), headers: auth },
    { label: 'tollgate: response cache off (every read in DB)', url: uncached.url, child: uncached.child, body: JSON.stringify({ query }), headers: auth },
  ];
  // Warm up: JIT, caches, SQLite pages.
  for (const t of targets) await load(t.url, t.body, t.headers, 2);
  const samples: Sample[] = targets.map(() => ({ requests: 0, seconds: 0, cpu: 0, p99: [] }));
  const ratios: number[][] = targets.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    const rates: number[] = [];
    for (const [i, t] of targets.entries()) {
      const before = cpuSeconds(t.child);
      const r = await load(t.url, t.body, t.headers, DURATION / ROUNDS);
      const s = samples[i]!;
      s.cpu += cpuSeconds(t.child) - before;
      s.requests += r.requests.total;
      s.seconds += r.duration;
      s.p99.push(r.latency.p99);
      rates.push(r.requests.total / r.duration);
    }
    for (const i of targets.keys()) ratios[i]!.push(rates[i]! / rates[0]!);
  }
  const cpuPerRequest = (s: Sample) => (s.cpu / s.requests) * 1e6;
  const line = (i: number) => {
    const s = samples[i]!;
    return `  ${targets[i]!.label}: ${(s.requests / s.seconds).toFixed(0).padStart(6)} req/s  p99 ${String(Math.max(...s.p99)).padStart(3)} ms  ${cpuPerRequest(s).toFixed(0).padStart(5)} µs CPU/request  ratio ${median(ratios[i]!).toFixed(2)} (rounds ${ratios[i]!.map((r) => r.toFixed(2)).join(' ')})`;
  };
  const warm = median(ratios[1]!);
  const cold = median(ratios[2]!);
  const perField = (cpuPerRequest(samples[2]!) - cpuPerRequest(samples[0]!)) / FIELDS;
  console.log(
    [
      `gates(first:20){edges{node{service env identifier rules{name dryRun}}}} over HTTP, ${CONNECTIONS} connections, ${DURATION} s each in ${ROUNDS} alternating rounds, one key (its rate limit out of reach, the limiter running)`,
      ...targets.map((_, i) => line(i)),
      `  response cache on:  ratio ${warm.toFixed(2)} (target >= 0.50) ${warm >= 0.5 ? 'OK' : 'BELOW TARGET'}`,
      `  response cache off: ratio ${cold.toFixed(2)} (target >= 0.30) ${cold >= 0.3 ? 'OK' : 'BELOW TARGET'}; ${perField.toFixed(2)} µs CPU per resolved field beyond bare yoga's request (${FIELDS} fields)`,
    ].join('\n'),
  );
} finally {
  await Promise.all([bare.stop(), cached.stop(), uncached.stop()]);
}
