// One large OTLP request (issue 9, item 9): a gzipped protobuf batch of many small spans, as a
// careless or hostile exporter sends it. While Tollgate processes it, /healthz is probed every
// 10 ms; reported: the answer, the time, the slowest /healthz answer (the longest the event loop
// was held, within 10 ms), and how much the server's resident memory grew (peak, VmHWM).
// Cases: 190,000 spans at the default TOLLGATE_OTLP_MAX_SPANS (refused), the same with the bound
// raised over it (processed whole), and 50,000 spans (the default bound, processed).
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import { BENCH_KEY, fmt, sleep, startTollgate } from './lib.ts';

const Request = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

function body(n: number): Buffer {
  const now = BigInt(Date.now()) * 1_000_000n;
  const spans = [];
  for (let i = 0; i < n; i++) {
    const start = now - BigInt(i % 1000) * 1_000_000n;
    spans.push({
      traceId: Buffer.alloc(16, i % 251),
      spanId: Buffer.alloc(8, i % 251),
      name: `GET /r${i % 50}`,
      kind: 2,
      startTimeUnixNano: String(start),
      endTimeUnixNano: String(start + 5_000_000n),
      attributes: [
        { key: 'http.request.method', value: { stringValue: 'GET' } },
        { key: 'http.route', value: { stringValue: `/r${i % 50}` } },
        { key: 'http.response.status_code', value: { intValue: i % 97 === 0 ? 503 : 200 } },
      ],
      status: { code: i % 97 === 0 ? 2 : 0 },
    });
  }
  const req = {
    resourceSpans: [
      {
        resource: {
          attributes: [
            { key: 'service.name', value: { stringValue: 'big' } },
            { key: 'deployment.environment.name', value: { stringValue: 'prod' } },
          ],
        },
        scopeSpans: [{ spans }],
      },
    ],
  };
  return gzipSync(Buffer.from(Request.encode(Request.fromObject(req)).finish()));
}

const kb = (pid: number, field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

const attributes = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: { stringValue: 'v' } }));
const jsonSpan = (i: number, attrs: unknown[]) => {
  const start = BigInt(Date.now()) * 1_000_000n - BigInt(i % 1000) * 1_000_000n;
  return {
    traceId: 'ab'.repeat(16),
    spanId: 'cd'.repeat(8),
    name: `GET /r${i % 50}`,
    kind: 2,
    startTimeUnixNano: String(start),
    endTimeUnixNano: String(start + 5_000_000n),
    attributes: attrs,
    status: { code: 0 },
  };
};
const jsonService = [
  { key: 'service.name', value: { stringValue: 'big' } },
  { key: 'deployment.environment.name', value: { stringValue: 'prod' } },
];
/** JSON bodies near the decompressed limit (4 × 8 MB): one span or one resource of 600,000 attributes, or 50,000 spans of 10 attributes. */
function jsonBody(shape: 'span-attributes' | 'resource-attributes' | 'batch'): Buffer {
  const req =
    shape === 'span-attributes'
      ? { resourceSpans: [{ resource: { attributes: jsonService }, scopeSpans: [{ spans: [jsonSpan(0, attributes(600_000))] }] }] }
      : shape === 'resource-attributes'
        ? { resourceSpans: [{ resource: { attributes: [...jsonService, ...attributes(600_000)] }, scopeSpans: [{ spans: [jsonSpan(0, [])] }] }] }
        : {
            resourceSpans: [
              {
                resource: { attributes: jsonService },
                scopeSpans: [{ spans: Array.from({ length: 50_000 }, (_, i) => jsonSpan(i, [...attributes(9), { key: 'http.route', value: { stringValue: `/r${i % 50}` } }])) }],
              },
            ],
          };
  return gzipSync(Buffer.from(JSON.stringify(req)));
}

async function run(label: string, spans: number | Parameters<typeof jsonBody>[0], env: Record<string, string>) {
  const server = await startTollgate({ TOLLGATE_OTLP_MAX_BYTES: String(8 * 1024 * 1024), ...env });
  try {
    const base = server.url.replace('/graphql', '');
    const gz = typeof spans === 'number' ? body(spans) : jsonBody(spans);
    await sleep(500);
    const pid = server.child.pid!;
    const rssBefore = kb(pid, 'VmRSS');
    const hwmBefore = kb(pid, 'VmHWM');
    let done = false;
    let slowest = 0;
    let probes = 0;
    const started = performance.now();
    const sent = fetch(`${base}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': typeof spans === 'number' ? 'application/x-protobuf' : 'application/json', 'content-encoding': 'gzip', authorization: `Bearer ${BENCH_KEY}` },
      body: new Uint8Array(gz),
    }).then(async (r) => {
      const text = r.headers.get('content-type') === 'application/json' ? await r.text() : (await r.arrayBuffer(), '');
      done = true;
      return { status: r.status, ms: performance.now() - started, text };
    });
    while (!done) {
      const t = performance.now();
      await fetch(`${base}/healthz`);
      slowest = Math.max(slowest, performance.now() - t);
      probes++;
      await sleep(10);
    }
    const answer = await sent;
    const peak = Math.max(0, kb(pid, 'VmHWM') - Math.max(hwmBefore, rssBefore));
    console.log(
      `  ${label.padEnd(44)} ${String(answer.status).padEnd(4)} in ${fmt(answer.ms).padStart(10)}, slowest /healthz ${fmt(slowest).padStart(9)} (${probes} probes), RSS peak +${(peak / 1024).toFixed(0)} MB (gzip body ${(gz.length / 1024 / 1024).toFixed(1)} MB)${answer.text ? ` ${answer.text.slice(0, 140)}` : ''}`,
    );
  } finally {
    await server.stop();
  }
}

console.log('One large OTLP/HTTP protobuf request (gzip), /healthz probed every 10 ms while it is processed');
await run('190,000 spans, default bound (50,000)', 190_000, {});
await run('190,000 spans, bound raised to 200,000', 190_000, { TOLLGATE_OTLP_MAX_SPANS: '200000' });
await run('50,000 spans, default bound', 50_000, {});
console.log('One large OTLP/HTTP JSON request (gzip), near the decompressed limit of 32 MB');
await run('JSON: one span of 600,000 attributes', 'span-attributes', {});
await run('JSON: 600,000 attributes on the resource', 'resource-attributes', {});
await run('JSON: 50,000 spans of 10 attributes', 'batch', {});
