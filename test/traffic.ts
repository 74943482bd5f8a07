import assert from 'node:assert/strict';
import type { TestServer } from './helpers.ts';

/** Requests of one resource of one version, as an instrumented service reports them over OTLP. */
export interface Traffic {
  service: string;
  version: string;
  /** `METHOD /route`. */
  resource: string;
  count: number;
  /** The first `errors` of them fail (HTTP 500), with an exception of `errorType` when given. */
  errors?: number;
  /** Instead of the first ones: every `errorsEvery`-th request fails, spread over the whole time. */
  errorsEvery?: number;
  errorType?: string;
  message?: string;
  /** Spread evenly over [from, from + spreadMs). */
  from: number;
  spreadMs: number;
  env?: string;
  /** The pod that served them (k8s.pod.name), as Kubernetes' OpenTelemetry setup reports it. */
  pod?: string;
  /** More resource attributes, e.g. cloud.region for a primary tag. */
  attributes?: Record<string, string>;
}

/** Sends `t` to the server's OTLP endpoint (4,000 spans a request), stamped with the times given. */
export async function sendTraffic(s: TestServer, t: Traffic, key?: string): Promise<void> {
  const [method, route] = t.resource.split(' ');
  for (let offset = 0; offset < t.count; offset += 4000) {
    const spans = [];
    for (let i = offset; i < Math.min(t.count, offset + 4000); i++) {
      const start = BigInt(Math.floor(t.from + (i * t.spreadMs) / t.count)) * 1_000_000n;
      const failed = t.errorsEvery ? i % t.errorsEvery === 0 : i < (t.errors ?? 0);
      spans.push({
        name: t.resource,
        kind: 2,
        startTimeUnixNano: String(start),
        endTimeUnixNano: String(start + 3_000_000n),
        attributes: [
          { key: 'http.request.method', value: { stringValue: method } },
          { key: 'http.route', value: { stringValue: route } },
          { key: 'http.response.status_code', value: { intValue: failed ? 500 : 200 } },
        ],
        events:
          failed && t.errorType
            ? [
                {
                  name: 'exception',
                  attributes: [
                    { key: 'exception.type', value: { stringValue: t.errorType } },
                    { key: 'exception.message', value: { stringValue: t.message ?? 'boom' } },
                  ],
                },
              ]
            : [],
        status: { code: failed ? 2 : 0 },
      });
    }
    const attributes = [
      ['service.name', t.service],
      ['deployment.environment.name', t.env ?? 'prod'],
      ['service.version', t.version],
      ...(t.pod ? [['k8s.pod.name', t.pod]] : []),
      ...Object.entries(t.attributes ?? {}),
    ].map(([key, value]) => ({ key, value: { stringValue: value } }));
    const r = await s.request('POST', '/v1/traces', { body: { resourceSpans: [{ resource: { attributes }, scopeSpans: [{ spans }] }] }, ...(key && { key }) });
    assert.equal(r.status, 200, r.text);
  }
}
