// OTLP ingestion: spans per second through Tollgate (decode, map, aggregate, write) next to
// a server on the same HTTP path that only decodes and maps, for JSON and protobuf batches of
// realistic spans. Also the event-loop delay of the Tollgate process while it ingests flat out.
// Target: ratio ≥ 0.5.
import autocannon from 'autocannon';
import { BENCH_KEY, startBare, startTollgate, UNREACHED_LIMITS } from './lib.ts';
import { eachRequestDistinct, otlpBodies } from './otlpPayload.ts';

const SECONDS = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 4);
const SPANS_PER_BATCH = Number(process.env.BENCH_BATCH ?? 500);
const { bodies, contentType } = otlpBodies(SPANS_PER_BATCH);

async function rate(url: string, encoding: 'json' | 'protobuf', auth: boolean) {
  const run = (duration: number) =>
    autocannon({
      url,
      method: 'POST',
      body: bodies[encoding],
      // Distinct bytes each time: a repeated request would be taken for a retry and not stored.
      requests: [eachRequestDistinct(bodies[encoding], encoding)],
      duration,
      connections: CONNECTIONS,
      headers: { 'content-type': contentType[encoding], ...(auth && { authorization: `Bearer ${BENCH_KEY}` }) },
    });
  await run(2);
  const r = await run(SECONDS);
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${url}: ${r.non2xx} non-2xx, ${r.errors} errors`);
  return (r.requests.average * SPANS_PER_BATCH * 2) / 3; // two thirds are SERVER spans, the requests
}

async function lagSeconds(base: string): Promise<{ p99: number; max: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^tollgate_nodejs_eventloop_lag_${name}_seconds (\\S+)`, 'm').exec(text)?.[1]);
  return { p99: read('p99'), max: read('max') };
}

const decodeOnly = await startBare('otlp-decode');
const tollgate = await startTollgate(UNREACHED_LIMITS);
try {
  const decodeUrl = decodeOnly.url.replace('/graphql', '/v1/traces');
  const ingestUrl = tollgate.url.replace('/graphql', '/v1/traces');
  const lines = [`OTLP/HTTP ingestion, batches of ${SPANS_PER_BATCH} spans (${Math.round((SPANS_PER_BATCH * 2) / 3)} requests), ${CONNECTIONS} connections, ${SECONDS} s each`];
  for (const encoding of ['json', 'protobuf'] as const) {
    const baseline = await rate(decodeUrl, encoding, false);
    const measured = await rate(ingestUrl, encoding, true);
    lines.push(
      `  ${encoding.padEnd(8)} (${(bodies[encoding].length / 1024).toFixed(0)} KiB/batch): decode only ${baseline.toFixed(0).padStart(7)} spans/s, tollgate ${measured.toFixed(0).padStart(7)} spans/s, ratio ${(measured / baseline).toFixed(2)} (target ≥ 0.50) ${measured / baseline >= 0.5 ? 'OK' : 'BELOW TARGET'}`,
    );
  }
  const lag = await lagSeconds(tollgate.url.replace('/graphql', ''));
  lines.push(`  event-loop delay in Tollgate while ingesting: p99 ${(lag.p99 * 1000).toFixed(1)} ms, max ${(lag.max * 1000).toFixed(1)} ms`);
  console.log(lines.join('\n'));
} finally {
  await Promise.all([decodeOnly.stop(), tollgate.stop()]);
}
