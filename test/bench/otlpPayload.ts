// OTLP/HTTP export requests as an instrumented service sends them, JSON and protobuf, for the
// ingestion benchmarks.

import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import type { Request as AutocannonRequest } from 'autocannon';

const Request = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

/** A batch as an instrumented service sends it: server spans with children, ~1% errors. */
function batch(spansPerBatch: number, seq: number) {
  const now = BigInt(Date.now()) * 1_000_000n;
  const routes = ['/cart/:id', '/checkout', '/pay', '/orders', '/healthz'];
  const spans = [];
  for (let i = 0; i < spansPerBatch; i++) {
    const server = i % 3 !== 2;
    const failed = server && (seq * spansPerBatch + i) % 97 === 0;
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

/** One batch of `spansPerBatch` spans in both encodings, and the content type of each. */
export function otlpBodies(spansPerBatch: number) {
  const json = batch(spansPerBatch, 1);
  return {
    bodies: {
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
    },
    contentType: { json: 'application/json', protobuf: 'application/x-protobuf' },
  };
}

/**
 * An autocannon request that sends `body` with a field of its own appended, so no two requests
 * are byte for byte the same: Tollgate takes a repeated request for an exporter's retry and
 * stores it once. The field is one OTLP does not define (protobuf field 15; a JSON member
 * `benchRequest`), which decoders skip: every request still carries the same spans.
 */
export function eachRequestDistinct(body: Buffer, encoding: 'json' | 'protobuf'): AutocannonRequest {
  let n = 0;
  const json = body.toString('utf8');
  return {
    setupRequest: (request) => {
      n++;
      if (encoding === 'json') return { ...request, body: `${json.slice(0, json.lastIndexOf('}'))},"benchRequest":${n}}` };
      const varint: number[] = [];
      for (let v = n; ; v >>>= 7) {
        if (v < 0x80) {
          varint.push(v);
          break;
        }
        varint.push((v & 0x7f) | 0x80);
      }
      return { ...request, body: Buffer.concat([body, Buffer.from([(15 << 3) | 0, ...varint])]) };
    },
  };
}
