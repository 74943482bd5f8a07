// OTLP ingestion: spans per second through Tollgate (decode, map, aggregate, write) next to
// a server on the same HTTP path that only decodes and maps, for JSON and protobuf batches of
// realistic spans. Also the event-loop delay of the Tollgate process while it ingests flat out.
// Target: ratio ≥ 0.5.
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import autocannon from 'autocannon';
import { BENCH_KEY, startBare, startTollgate, UNREACHED_LIMITS } from './lib.ts';

const SECONDS = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 4);
const SPANS_PER_BATCH = Number(process.env.BENCH_BATCH ?? 500);
const Request = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

/** A batch as an instrumented service sends it: server spans with children, ~1% errors. */
function batch(seq: number) {
  const now = BigInt(Date.now()) * 1_000_000n;
  const routes = ['/cart/:id', '/checkout', '/pay', '/orders', '/healthz'];
  const spans = [];
  for (let i = 0; i < SPANS_PER_BATCH; i++) {
    const server = i % 3 !== 2;
    const failed = server && (seq * SPANS_PER_BATCH + i) % 97 === 0;
    const route = routes[i % routes.length]!;
    const start = now - BigInt(i) * 1_000_000n;
    spans.push({
      traceId: Buffer.alloc(16, i % 251).toString('hex'),
      spanId: Buffer.alloc(8, i % 251).toString('hex'),
      name: server ? `GET ${route}` : 'SELECT orders',
      kind: server ? 2 : 3,
      startTimeUnixNano: String(start),
      endTimeUnixNano: String(start + BigInt(5 + (i % 40)) * 1_000_000n),
      attributes: [
        { key: 'http.request.method', value: { stringValue: 'GET' } },
        { key: 'http.route', value: { stringValue: route } },
        { key: 'http.response.status_code', value: { intValue: failed ? 503 : 200 } },
        { key: 'url.path', value: { stringValue: route.replace(':id', String(i)) } },
        { key: 'server.address', value: { stringValue: 'checkout.internal' } },
        { key: 'user_agent.original', value: { stringValue: 'Mozilla/5.0 (X11; Linux x86_64)' } },
      ],
      events: failed
        ? [
            {
              name: 'exception',
              timeUnixNano: String(start),
              attributes: [
                { key: 'exception.type', value: { stringValue: 'UpstreamTimeout' } },
                { key: 'exception.message', value: { stringValue: 'upstream timed out after 2s' } },
              ],
            },
          ]
        : [],
      status: { code: failed ? 2 : 0 },
    });
  }
  return {
    resourceSpans: [
      {
        resource: {
          attributes: [
            { key: 'service.name', value: { stringValue: 'checkout' } },
            { key: 'deployment.environment.name', value: { stringValue: 'prod' } },
            { key: 'service.version', value: { stringValue: `v${seq % 3}` } },
            { key: 'cloud.region', value: { stringValue: seq % 2 ? 'eu-west-1' : 'us-east-1' } },
            { key: 'telemetry.sdk.language', value: { stringValue: 'nodejs' } },
          ],
        },
        scopeSpans: [{ scope: { name: '@opentelemetry/instrumentation-http' }, spans }],
      },
    ],
  };
}

const json = batch(1);
const bodies = {
  json: Buffer.from(JSON.stringify(json)),
  protobuf: Buffer.from(
    Request.encode(
      Request.fromObject({
        ...json,
        resourceSpans: json.resourceSpans.map((rs) => ({
          ...rs,
          scopeSpans: rs.scopeSpans.map((ss) => ({
            ...ss,
            spans: ss.spans.map((sp) => ({ ...sp, traceId: Buffer.from(sp.traceId, 'hex'), spanId: Buffer.from(sp.spanId, 'hex') })),
          })),
        })),
      }),
    ).finish(),
  ),
};
const contentType = { json: 'application/json', protobuf: 'application/x-protobuf' };

async function rate(url: string, encoding: 'json' | 'protobuf', auth: boolean) {
  const run = (duration: number) =>
    autocannon({
      url,
      method: 'POST',
      body: bodies[encoding],
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
