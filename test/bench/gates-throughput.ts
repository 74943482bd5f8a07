// Requests per second of a realistic Tollgate read (20 gates with 5 rules each, over HTTP,
// authenticated) against a bare graphql-yoga `{ hello }` server measured in the same run.
// Target: ratio >= 0.5. Run: npm run bench
import autocannon from 'autocannon';
import { BENCH_KEY, startBare, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);

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

const bare = await startBare();
const cached = await startTollgate(UNREACHED_LIMITS);
const uncached = await startTollgate({ ...UNREACHED_LIMITS, TOLLGATE_RESPONSE_CACHE_TTL_MS: '0' });
try {
  await seed(cached);
  await seed(uncached);
  const baseline = await load(bare.url, JSON.stringify({ query: '{ hello }' }), {});
  const warm = await load(cached.url, JSON.stringify({ query }), auth);
  const cold = await load(uncached.url, JSON.stringify({ query }), auth);
  const line = (label: string, r: autocannon.Result) =>
    `  ${label}: ${r.requests.average.toFixed(0).padStart(6)} req/s  p99 ${String(r.latency.p99).padStart(3)} ms  ratio ${(r.requests.average / baseline.requests.average).toFixed(2)}`;
  const ratio = warm.requests.average / baseline.requests.average;
  console.log(
    [
      `gates(first:20){edges{node{service env identifier rules{name dryRun}}}} over HTTP, ${CONNECTIONS} connections, ${DURATION} s each, one key (its rate limit out of reach, the limiter running)`,
      line('baseline: bare graphql-yoga { hello }          ', baseline),
      line('tollgate: response cache on (the default)      ', warm),
      line('tollgate: response cache off (every read in DB)', cold),
      `  ratio with the default configuration: ${ratio.toFixed(2)} (target >= 0.50) ${ratio >= 0.5 ? 'OK' : 'BELOW TARGET'}`,
    ].join('\n'),
  );
} finally {
  await Promise.all([bare.stop(), cached.stop(), uncached.stop()]);
}
