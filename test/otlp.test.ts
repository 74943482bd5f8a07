import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { addInstanceStats, countsByResource, errorTypes, INSTANCES_READ_PER_VERSION, type InstanceRow, instanceCounts } from '../src/db/apm.ts';
import { APM_BUCKET_MS } from '../src/db/schema.ts';
import { APM_INSTANCES_PER_REQUEST } from '../src/sources/apmWriter.ts';
import { MAX_INSTANCE_LENGTH } from '../src/sources/otlp.ts';
import { startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let key: string;
before(async () => {
  s = await startServer({ otlpMaxBytes: 64 * 1024 });
  key = await s.createKey(['ingest']);
});
after(() => s.stop());

const window = (service: string) => ({ service, env: 'prod', from: 0, to: Date.now() + 3_600_000 });

/** An instrumented service as the OpenTelemetry JS SDK sends it. */
async function emit(exporter: ProtoExporter | JsonExporter, service: string, version: string) {
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service, 'deployment.environment.name': 'prod', 'service.version': version, 'cloud.region': 'eu-west-1' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('test');
  for (let i = 0; i < 3; i++) {
    tracer.startSpan('GET', { kind: SpanKind.SERVER, attributes: { 'http.request.method': 'GET', 'http.route': '/cart/:id', 'http.response.status_code': 200 } }).end();
  }
  const failed = tracer.startSpan('POST', { kind: SpanKind.SERVER, attributes: { 'http.request.method': 'POST', 'http.route': '/pay', 'http.response.status_code': 500 } });
  failed.recordException(Object.assign(new Error('card declined by upstream'), { name: 'PaymentGatewayError' }));
  failed.setStatus({ code: SpanStatusCode.ERROR });
  failed.end();
  const consumer = tracer.startSpan('orders process', { kind: SpanKind.CONSUMER });
  consumer.end();
  tracer.startSpan('SELECT orders', { kind: SpanKind.CLIENT }).end(); // not a request
  tracer.startSpan('render', { kind: SpanKind.INTERNAL }).end(); // not a request
  await provider.forceFlush();
  await provider.shutdown();
}

describe('OTLP/HTTP from the OpenTelemetry JS SDK', () => {
  for (const [encoding, Exporter] of [
    ['protobuf', ProtoExporter],
    ['json', JsonExporter],
  ] as const) {
    test(`${encoding}: requests land by resource, version and error type`, async () => {
      const service = `otel-${encoding}`;
      await emit(new Exporter({ url: `${s.url}/v1/traces`, headers: { authorization: `Bearer ${key}` } }), service, 'v2.1');
      const counts = (await countsByResource(s.app.deps.db, window(service))).sort((a, b) => (a.resource < b.resource ? -1 : 1));
      assert.deepEqual(
        counts.map((c) => [c.version, c.resource, c.primaryTag, c.hits, c.errors]),
        [
          ['v2.1', 'GET /cart/:id', 'region:eu-west-1', 3, 0],
          ['v2.1', 'POST /pay', 'region:eu-west-1', 1, 1],
          ['v2.1', 'orders process', 'region:eu-west-1', 1, 0],
        ],
      );
      const types = await errorTypes(s.app.deps.db, window(service));
      assert.deepEqual(
        types.map((t) => [t.resource, t.errorType, t.count, t.sampleMessage]),
        [['POST /pay', 'PaymentGatewayError', 1, 'card declined by upstream']],
      );
    });
  }
});

describe('OTLP receiver: bad input gets a clear 4xx, good spans are kept', () => {
  const post = (body: Buffer | string, headers: Record<string, string> = {}, k: string | null = key) =>
    fetch(`${s.url}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(k ? { authorization: `Bearer ${k}` } : {}), ...headers },
      body: typeof body === 'string' ? body : new Uint8Array(body),
    });
  const span = (name: string, extra: Record<string, unknown> = {}) => ({
    name,
    kind: 2,
    startTimeUnixNano: String(BigInt(Date.now()) * 1_000_000n),
    endTimeUnixNano: String(BigInt(Date.now() + 5) * 1_000_000n),
    ...extra,
  });
  const batch = (service: string | null, spans: unknown[]) => ({
    resourceSpans: [
      {
        resource: {
          attributes: service
            ? [
                { key: 'service.name', value: { stringValue: service } },
                { key: 'deployment.environment', value: { stringValue: 'prod' } },
              ]
            : [],
        },
        scopeSpans: [{ spans }],
      },
    ],
  });

  test('without a key 401, without the ingest scope 403', async () => {
    assert.equal((await post('{}', {}, null)).status, 401);
    const reader = await s.createKey(['gates:read']);
    const r = await post('{}', {}, reader);
    assert.equal(r.status, 403);
    assert.match(((await r.json()) as any).message, /ingest/);
  });

  test('wrong content type 415, malformed JSON or protobuf 400, oversized 413, bad gzip 400', async () => {
    const wrongType = await post('{}', { 'content-type': 'text/plain' });
    assert.equal(wrongType.status, 415);
    assert.match(((await wrongType.json()) as any).message, /application\/json or application\/x-protobuf/);
    const badJson = await post('{"resourceSpans": [');
    assert.equal(badJson.status, 400);
    assert.match(((await badJson.json()) as any).message, /not valid JSON/);
    assert.equal((await post('{"resourceSpans": 5}')).status, 400);
    const badProto = await post(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), { 'content-type': 'application/x-protobuf' });
    assert.equal(badProto.status, 400);
    const big = await post(JSON.stringify(batch('big', [span('x', { name: 'x'.repeat(70_000) })])));
    assert.equal(big.status, 413);
    const badGzip = await post('not gzip', { 'content-encoding': 'gzip' });
    assert.equal(badGzip.status, 400);
    const bomb = await post(gzipSync(Buffer.alloc(10_000_000, 32)), { 'content-encoding': 'gzip' });
    assert.equal(bomb.status, 413);
    assert.equal((await fetch(`${s.url}/v1/traces`, { headers: { authorization: `Bearer ${key}` } })).status, 405);
  });

  test('a resource without service.name is rejected, the rest of the batch kept (partial success)', async () => {
    const body = {
      resourceSpans: [...batch(null, [span('lost'), span('lost too')]).resourceSpans, ...batch('kept-service', [span('GET /ok')]).resourceSpans],
    };
    const r = await post(gzipSync(JSON.stringify(body)), { 'content-encoding': 'gzip' });
    assert.equal(r.status, 200);
    const answer = (await r.json()) as any;
    assert.equal(answer.partialSuccess.rejectedSpans, '2');
    assert.match(answer.partialSuccess.errorMessage, /service.name/);
    assert.equal((await countsByResource(s.app.deps.db, window('kept-service')))[0]?.hits, 1);
  });

  test('backfilled spans land in the past, where they happened', async () => {
    const past = Date.now() - 3_600_000;
    const old = span('GET /old', { startTimeUnixNano: String(BigInt(past) * 1_000_000n), endTimeUnixNano: String(BigInt(past + 1) * 1_000_000n) });
    assert.equal((await post(JSON.stringify(batch('backfill', [old])))).status, 200);
    assert.equal((await countsByResource(s.app.deps.db, { service: 'backfill', env: 'prod', from: past - 10_000, to: past + 10_000 }))[0]?.hits, 1);
    assert.equal((await countsByResource(s.app.deps.db, { service: 'backfill', env: 'prod', from: Date.now() - 60_000, to: Date.now() + 60_000 })).length, 0);
  });

  test("an exporter's retry of a stored request counts nothing twice; another key's or a changed request counts", async () => {
    const body = JSON.stringify(batch('retried', [span('GET /r'), span('GET /r', { status: { code: 2 } })]));
    const hits = async () => (await countsByResource(s.app.deps.db, window('retried')))[0];
    const first = await post(body);
    assert.equal(first.status, 200);
    // The answer was lost: the exporter sends the same request again, compressed this time.
    const retry = await post(gzipSync(body), { 'content-encoding': 'gzip' });
    assert.equal(retry.status, 200, 'a retry is answered as a success: its spans are stored');
    assert.deepEqual(await retry.json(), await first.json());
    assert.deepEqual([(await hits())?.hits, (await hits())?.errors], [2, 1]);
    // The same spans from another key are another sender's: counted.
    assert.equal((await post(body, {}, await s.createKey(['ingest']))).status, 200);
    // A request that differs in one byte is another request.
    assert.equal((await post(body.replace('"GET /r"', '"GET /r" '))).status, 200);
    assert.deepEqual([(await hits())?.hits, (await hits())?.errors], [6, 3]);
  });

  test('a retry is answered as the request was, though spans it rejected as in the future are no longer so', async () => {
    const deps = s.app.deps;
    const realNow = deps.now;
    const t0 = Date.now();
    const at = (ms: number) => ({ name: 'GET /later', kind: 2, startTimeUnixNano: `${BigInt(ms) * 1_000_000n}`, endTimeUnixNano: `${BigInt(ms) * 1_000_000n + 1000n}` });
    // A client whose clock is 11 minutes fast sent one of the spans.
    const body = JSON.stringify(batch('skewed', [at(t0), at(t0 + 11 * 60_000)]));
    try {
      deps.now = () => new Date(t0);
      const first = await post(body);
      const answer = (await first.json()) as any;
      assert.equal(answer.partialSuccess.rejectedSpans, '1');
      // Its answer was lost; the exporter sends it again two minutes later.
      deps.now = () => new Date(t0 + 2 * 60_000);
      const retry = await post(body);
      assert.equal(retry.status, 200);
      assert.deepEqual(await retry.json(), answer, 'the span rejected then, and never stored, is not said to be accepted now');
      // And one whose only span was stored at the edge of retention, which it is past at the retry.
      const edge = JSON.stringify(batch('skewed', [at(t0 - deps.config.apmRetentionDays * 86_400_000 + 60_000)]));
      deps.now = () => new Date(t0);
      assert.deepEqual(await (await post(edge)).json(), {});
      deps.now = () => new Date(t0 + 2 * 60_000);
      assert.deepEqual(await (await post(edge)).json(), {}, 'the span stored then is not said to be rejected now');
    } finally {
      deps.now = realNow;
    }
    assert.deepEqual(
      (await countsByResource(s.app.deps.db, window('skewed'))).map((c) => c.hits),
      [2],
    );
  });

  test('a key limited to staging cannot ingest prod spans', async () => {
    const staging = await s.createKey(['ingest'], ['staging']);
    const r = await post(JSON.stringify(batch('limited', [span('GET /x')])), {}, staging);
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as any).partialSuccess.rejectedSpans, '1');
    assert.equal((await countsByResource(s.app.deps.db, window('limited'))).length, 0);
  });
});

describe('APM monitors', () => {
  test('an error-rate monitor over the APM store alerts when the new version fails', async () => {
    const created = await s.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', {
      i: {
        name: 'pay errors',
        type: 'APM',
        critical: 0.2,
        warning: 0.1,
        tags: ['source:apm-test'],
        apm: { metric: 'ERROR_RATE', service: 'apm-mon', env: 'prod', window: 300, groupBy: ['RESOURCE'] },
      },
    });
    assert.equal(created.errors, undefined, JSON.stringify(created.errors));
    const id = created.data.createMonitor.id;
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'apm-mon', 'deployment.environment.name': 'prod', 'service.version': 'v3' }),
      spanProcessors: [new SimpleSpanProcessor(new ProtoExporter({ url: `${s.url}/v1/traces`, headers: { authorization: `Bearer ${key}` } }))],
    });
    const tracer = provider.getTracer('test');
    for (let i = 0; i < 10; i++) {
      const span = tracer.startSpan('POST', {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': 'POST', 'http.route': '/pay', 'http.response.status_code': i < 5 ? 503 : 200 },
      });
      if (i < 5) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    await provider.forceFlush();
    await provider.shutdown();
    let monitor: any;
    // Each span is its own request: the monitor alerts from the first errors, and reads 0.5 once all ten are in.
    for (let i = 0; i < 80; i++) {
      monitor = (await s.gql('query($id: ID!) { monitor(id: $id) { state groups { group state message } } }', { id })).data.monitor;
      if (monitor.state === 'ALERT' && /error_rate 0.5 over/.test(monitor.groups[0]?.message)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(monitor.state, 'ALERT');
    assert.deepEqual(
      monitor.groups.map((g: any) => [g.group, g.state]),
      [['resource:POST /pay', 'ALERT']],
    );
    assert.match(monitor.groups[0].message, /error_rate 0.5 over 300 s/);
  });

  test('a PROMETHEUS or APM monitor without its threshold or definition is refused', async () => {
    const noCritical = await s.gql('mutation { createMonitor(input: { name: "x", type: PROMETHEUS, query: "up" }) { id } }');
    assert.equal(noCritical.errors?.[0]?.extensions?.field, 'input.critical');
    const noQuery = await s.gql('mutation { createMonitor(input: { name: "x", type: PROMETHEUS, critical: 1 }) { id } }');
    assert.equal(noQuery.errors?.[0]?.extensions?.field, 'input.query');
    const noApm = await s.gql('mutation { createMonitor(input: { name: "x", type: APM, critical: 1 }) { id } }');
    assert.equal(noApm.errors?.[0]?.extensions?.field, 'input.apm');
    const inverted = await s.gql('mutation { createMonitor(input: { name: "x", type: PROMETHEUS, query: "up", critical: 1, warning: 2 }) { id } }');
    assert.equal(inverted.errors?.[0]?.extensions?.field, 'input.warning');
  });
});

describe('OTLP receiver: structures and times that are not requests', () => {
  const post = (body: unknown) =>
    fetch(`${s.url}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
  const resource = (spans: unknown, attributes: unknown = [{ key: 'service.name', value: { stringValue: 'odd' } }]) => ({
    resourceSpans: [{ resource: { attributes }, scopeSpans: [{ spans }] }],
  });

  test('a structure that is not OTLP is a 400 naming it, not a 500', async () => {
    for (const body of [
      resource([], 5),
      { resourceSpans: [{ scopeSpans: {} }] },
      resource({}),
      resource([{ name: 'x', kind: 2, startTimeUnixNano: `${BigInt(Date.now()) * 1_000_000n}`, status: { code: 2 }, events: {} }]),
    ]) {
      const r = await post(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(((await r.json()) as any).message, /not an OTLP trace request|must be/);
    }
  });

  test('spans from the far past or the future are rejected, not stored', async () => {
    const at = (ms: number) => ({
      name: 'GET /t',
      kind: 2,
      startTimeUnixNano: `${BigInt(Math.round(ms)) * 1_000_000n}`,
      endTimeUnixNano: `${BigInt(Math.round(ms)) * 1_000_000n + 1000n}`,
    });
    const r = await post(resource([at(Date.now() + 86_400_000), at(1), at(Date.now())]));
    assert.equal(r.status, 200);
    const answer = (await r.json()) as any;
    assert.equal(answer.partialSuccess.rejectedSpans, '2');
    assert.match(answer.partialSuccess.errorMessage, /outside the retention period or in the future/);
    assert.equal((await countsByResource(s.app.deps.db, { service: 'odd', env: '', from: 0, to: Number.MAX_SAFE_INTEGER }))[0]?.hits, 1);
  });
});

describe('OTLP receiver: requests per instance (apm_instance_stats)', () => {
  const Request = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
  const attr = (k: string, value: string) => ({ key: k, value: { stringValue: value } });
  const nanos = (ms: number) => String(BigInt(ms) * 1_000_000n);
  const span = (at: number, failed = false) => ({
    name: 'GET /i',
    kind: 2,
    startTimeUnixNano: nanos(at),
    endTimeUnixNano: nanos(at + 3),
    ...(failed ? { status: { code: 2 } } : {}),
  });
  /** A resource of `service`, version `version`, with the instance attributes given, and its spans. */
  const resource = (service: string, version: string, instanceAttributes: Record<string, string>, spans: unknown[]) => ({
    resource: {
      attributes: [
        attr('service.name', service),
        attr('deployment.environment.name', 'prod'),
        attr('service.version', version),
        ...Object.entries(instanceAttributes).map(([k, v]) => attr(k, v)),
      ],
    },
    scopeSpans: [{ spans }],
  });
  const post = (request: unknown, encoding: 'json' | 'protobuf', k = key) =>
    fetch(`${s.url}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': `application/${encoding === 'json' ? 'json' : 'x-protobuf'}`, authorization: `Bearer ${k}` },
      body: encoding === 'json' ? JSON.stringify(request) : new Uint8Array(Request.encode(Request.fromObject(request)).finish()),
    });
  const window = (service: string) => ({ service, env: 'prod', from: 0, to: Date.now() + 3_600_000 });
  /** The rows as [version, instance, bucket, hits, errors], in the order returned (by bucket), then sorted within a bucket. */
  const rowsOf = (rows: InstanceRow[]) => {
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1]!.bucket <= rows[i]!.bucket, 'ordered by bucket');
    return rows.map((r) => [r.version, r.instance, r.bucket, r.hits, r.errors] as const).sort((a, b) => a[2] - b[2] || (a[0] + a[1] < b[0] + b[1] ? -1 : 1));
  };
  /** The start of a bucket a minute ago, so that spans at +1 s and +11 s land in two buckets. */
  const bucketStart = () => Math.floor((Date.now() - 60_000) / APM_BUCKET_MS) * APM_BUCKET_MS;

  for (const encoding of ['json', 'protobuf'] as const) {
    test(`${encoding}: service.instance.id, else k8s.pod.name, else host.name; none is not recorded; a retry adds nothing`, async () => {
      const service = `instances-${encoding}`;
      const b0 = bucketStart();
      const b1 = b0 + APM_BUCKET_MS;
      const request = {
        resourceSpans: [
          // All three: the instance id wins.
          resource(service, 'v1', { 'service.instance.id': 'inst-a', 'k8s.pod.name': 'pod-x', 'host.name': 'host-x' }, [span(b0 + 1000), span(b0 + 2000, true), span(b1 + 1000)]),
          // The pod name before the host name.
          resource(service, 'v1', { 'k8s.pod.name': 'pod-b', 'host.name': 'host-y' }, [span(b0 + 1000, true), span(b0 + 1500, true)]),
          resource(service, 'v2', { 'host.name': 'host-c' }, [span(b1 + 2000), span(b1 + 3000), span(b1 + 4000, true)]),
          // No instance (and an empty one): counted in apm_stats only.
          resource(service, 'v2', {}, [span(b0 + 1000), span(b1 + 1000, true)]),
          resource(service, 'v2', { 'service.instance.id': '' }, [span(b0 + 1000)]),
        ],
      };
      const expected = [
        ['v1', 'inst-a', b0, 2, 1],
        ['v1', 'pod-b', b0, 2, 2],
        ['v1', 'inst-a', b1, 1, 0],
        ['v2', 'host-c', b1, 3, 1],
      ];
      const first = await post(request, encoding);
      assert.equal(first.status, 200);
      assert.deepEqual(rowsOf(await instanceCounts(s.app.deps.db, window(service))), expected);
      const hits = async () => (await countsByResource(s.app.deps.db, window(service))).reduce((n, c) => n + c.hits, 0);
      assert.equal(await hits(), 11, 'every span counts in apm_stats, with an instance or not');
      // The exporter lost the answer and sends the same request again: nothing is added.
      assert.equal((await post(request, encoding)).status, 200);
      assert.deepEqual(rowsOf(await instanceCounts(s.app.deps.db, window(service))), expected);
      assert.equal(await hits(), 11);
      // The same spans from another key are another request: they add up.
      assert.equal((await post(request, encoding, await s.createKey(['ingest']))).status, 200);
      assert.deepEqual(
        rowsOf(await instanceCounts(s.app.deps.db, window(service))),
        expected.map(([v, i, b, h, e]) => [v, i, b, (h as number) * 2, (e as number) * 2]),
      );
      // The window is [from, to).
      assert.deepEqual(
        rowsOf(await instanceCounts(s.app.deps.db, { service, env: 'prod', from: b1, to: b1 + APM_BUCKET_MS })).map((r) => r[1]),
        ['inst-a', 'host-c'],
      );
      assert.deepEqual(await instanceCounts(s.app.deps.db, { service, env: 'prod', from: b0 - APM_BUCKET_MS, to: b0 }), []);
    });
  }

  test('a NUL character in a pod, a span name or a message is stored as U+FFFD: PostgreSQL text cannot hold it, and the batch must not fail for it', async () => {
    const service = 'instances-nul';
    const at = bucketStart();
    const failing = { ...span(at, true), name: 'GET /a\u0000b', status: { code: 2, message: 'boom\u0000' } };
    const request = { resourceSpans: [resource(service, 'v1\u0000x', { 'k8s.pod.name': 'pod\u0000-1' }, [failing])] };
    const r = await post(request, 'json');
    assert.equal(r.status, 200, await r.text());
    const rows = await instanceCounts(s.app.deps.db, window(service));
    assert.deepEqual(
      rows.map((x) => [x.version, x.instance, x.hits, x.errors]),
      [['v1\uFFFDx', 'pod\uFFFD-1', 1, 1]],
    );
    const types = await errorTypes(s.app.deps.db, window(service));
    assert.deepEqual(
      types.map((t) => [t.resource, t.sampleMessage]),
      [['GET /a\uFFFDb', 'boom\uFFFD']],
    );
  });

  test('an instance longer than MAX_INSTANCE_LENGTH keeps its start and ends with a digest: two pods that differ at their end stay two', async () => {
    const service = 'instances-long';
    const at = bucketStart();
    const prefix = 'checkout-'.repeat(30);
    const request = {
      resourceSpans: [
        resource(service, 'v1', { 'k8s.pod.name': `${prefix}aaaaa` }, [span(at)]),
        resource(service, 'v1', { 'k8s.pod.name': `${prefix}bbbbb` }, [span(at), span(at + 1)]),
      ],
    };
    assert.equal((await post(request, 'json')).status, 200);
    const rows = await instanceCounts(s.app.deps.db, window(service));
    assert.deepEqual(rows.map((r) => r.hits).sort(), [1, 2]);
    for (const r of rows) {
      assert.equal(r.instance.length, MAX_INSTANCE_LENGTH);
      assert.match(r.instance, /^(checkout-)+[a-z-]*#[0-9a-f]{8}$/);
      assert.ok(prefix.startsWith(r.instance.slice(0, r.instance.indexOf('#'))));
    }
  });

  test(`a request naming 100 instances of a version records the first ${APM_INSTANCES_PER_REQUEST}; all its spans count in apm_stats`, async () => {
    const service = 'instances-many';
    const at = bucketStart();
    const pods = Array.from({ length: 100 }, (_, i) => `pod-${String(i).padStart(3, '0')}`);
    const request = {
      resourceSpans: [
        ...pods.map((pod) => resource(service, 'v1', { 'k8s.pod.name': pod }, [span(at + 1000, true)])),
        // Another version of the same request has its own allowance.
        resource(service, 'v2', { 'k8s.pod.name': 'pod-v2' }, [span(at + 1000)]),
      ],
    };
    assert.equal((await post(request, 'protobuf')).status, 200);
    const rows = await instanceCounts(s.app.deps.db, window(service));
    const v1 = rows.filter((r) => r.version === 'v1');
    assert.equal(v1.length, APM_INSTANCES_PER_REQUEST);
    assert.deepEqual(v1.map((r) => r.instance).sort(), pods.slice(0, APM_INSTANCES_PER_REQUEST));
    assert.ok(v1.every((r) => r.hits === 1 && r.errors === 1));
    assert.deepEqual(
      rows.filter((r) => r.version === 'v2').map((r) => r.instance),
      ['pod-v2'],
    );
    const counts = await countsByResource(s.app.deps.db, window(service));
    assert.deepEqual(counts.map((c) => [c.version, c.hits, c.errors]).sort(), [
      ['v1', 100, 100],
      ['v2', 1, 0],
    ]);
  });

  test(`instanceCounts returns the ${INSTANCES_READ_PER_VERSION} busiest instances of each version over its window`, async () => {
    const service = 'instances-read';
    const b0 = bucketStart();
    const row = (version: string, instance: string, bucket: number, hits: number) => ({ service, env: 'prod', version, instance, bucket, hits, errors: 0 });
    const many = INSTANCES_READ_PER_VERSION + 50;
    await addInstanceStats(s.app.deps.db, [
      // i-0 is the quietest in each bucket, i-(many-1) the busiest.
      ...Array.from({ length: many }, (_, i) => row('v1', `i-${i}`, b0, i + 1)),
      ...Array.from({ length: many }, (_, i) => row('v1', `i-${i}`, b0 + APM_BUCKET_MS, i + 1)),
      row('v2', 'lone', b0, 1),
    ]);
    // An instance busy outside the window does not count as busy.
    await addInstanceStats(s.app.deps.db, [row('v1', 'i-0', b0 - APM_BUCKET_MS, 1_000_000)]);
    const rows = await instanceCounts(s.app.deps.db, { service, env: 'prod', from: b0, to: b0 + 2 * APM_BUCKET_MS });
    const v1 = new Set(rows.filter((r) => r.version === 'v1').map((r) => r.instance));
    assert.equal(v1.size, INSTANCES_READ_PER_VERSION);
    for (let i = 0; i < many - INSTANCES_READ_PER_VERSION; i++) assert.ok(!v1.has(`i-${i}`), `i-${i} is among the quietest`);
    assert.equal(rows.filter((r) => r.version === 'v1').length, 2 * INSTANCES_READ_PER_VERSION, 'both buckets of each');
    assert.deepEqual(
      rows.filter((r) => r.version === 'v2').map((r) => r.instance),
      ['lone'],
    );
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1]!.bucket <= rows[i]!.bucket);
  });
});
