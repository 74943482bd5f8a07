// Requests per second of a realistic Tollgate read (20 gates with 5 rules each, over HTTP,
// authenticated) against a bare graphql-yoga `{ hello }` server measured in the same run.
// Target: ratio >= 0.5. Run: npm run bench
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const BENCH_KEY = 'bench-admin-key-0123456789abcdefghij';
const here = dirname(fileURLToPath(import.meta.url));
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);

async function startServer(kind: 'bare' | 'tollgate', env: Record<string, string> = {}): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'servers.ts'), kind], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TOLLGATE_BOOTSTRAP_KEY: BENCH_KEY, ...env },
  });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const { port } = JSON.parse(String(line)) as { port: number };
  return { child, url: `http://127.0.0.1:${port}/graphql` };
}

async function load(url: string, body: string, headers: Record<string, string>) {
  const run = (duration: number) =>
    autocannon({ url, method: 'POST', body, duration, connections: CONNECTIONS, headers: { 'content-type': 'application/json', ...headers } });
  await run(2); // warm up: JIT, caches, SQLite pages
  const result = await run(DURATION);
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result;
}

const auth = { authorization: `Bearer ${BENCH_KEY}` };
const query = '{ gates(first: 20) { edges { node { service env identifier rules { name dryRun } } } } }';

async function seed(url: string) {
  for (let i = 0; i < 20; i++) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify({
        query: 'mutation($input: CreateGateInput!) { createGate(input: $input) { id } }',
        variables: {
          input: {
            service: `bench-${i}`,
            env: 'prod',
            rules: [1, 2, 3, 4, 5].map((r) => ({ name: `rule-${r}`, options: { monitor: { query: `service:bench-${i} team:t${r}`, duration: 600 } } })),
          },
        },
      }),
    });
    const json = (await res.json()) as { errors?: unknown };
    if (json.errors) throw new Error(JSON.stringify(json.errors));
  }
  const check = (await (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ query }) })).json()) as any;
  if (check.data.gates.edges.length !== 20 || check.data.gates.edges[0].node.rules.length !== 5) throw new Error('seed failed');
}

const bare = await startServer('bare');
const cached = await startServer('tollgate');
const uncached = await startServer('tollgate', { TOLLGATE_RESPONSE_CACHE_TTL_MS: '0' });
try {
  await seed(cached.url);
  await seed(uncached.url);
  const baseline = await load(bare.url, JSON.stringify({ query: '{ hello }' }), {});
  const warm = await load(cached.url, JSON.stringify({ query }), auth);
  const cold = await load(uncached.url, JSON.stringify({ query }), auth);
  const line = (label: string, r: autocannon.Result) =>
    `  ${label}: ${r.requests.average.toFixed(0).padStart(6)} req/s  p99 ${String(r.latency.p99).padStart(3)} ms  ratio ${(r.requests.average / baseline.requests.average).toFixed(2)}`;
  const ratio = warm.requests.average / baseline.requests.average;
  console.log(
    [
      `gates(first:20){edges{node{service env identifier rules{name dryRun}}}} over HTTP, ${CONNECTIONS} connections, ${DURATION} s each`,
      line('baseline: bare graphql-yoga { hello }          ', baseline),
      line('tollgate: response cache on (the default)      ', warm),
      line('tollgate: response cache off (every read in DB)', cold),
      `  ratio with the default configuration: ${ratio.toFixed(2)} (target >= 0.50) ${ratio >= 0.5 ? 'OK' : 'BELOW TARGET'}`,
    ].join('\n'),
  );
} finally {
  for (const s of [bare, cached, uncached]) s.child.kill();
}
