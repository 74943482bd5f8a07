// Issue 9, items 6 and 9: inputs that used to stall the whole server. Every monitor is
// validated on every path that creates one, monitor search is linear and bounded, and OTLP
// requests are bounded in spans and processed in slices (JSON too: a span or resource at a
// time, never one JSON.parse of the body).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { countsByResource } from '../src/db/apm.ts';
import { allMonitors } from '../src/db/monitors.ts';
import { MAX_PATTERN_LENGTH, MAX_QUERY_LENGTH, type MatchableMonitor, matches, matchWork, parseMonitorQuery } from '../src/domain/monitorQuery.ts';
import { createMonitor, MAX_MONITOR_NAME_LENGTH, searchMonitors } from '../src/domain/monitors.ts';
import { SYSTEM } from '../src/domain/principal.ts';
import { decodeTraceRequest, forEachRequestSpan, MAX_JSON_MESSAGE_BYTES, mapSpans, type RequestSpan } from '../src/sources/otlp.ts';
import { turnsDuring } from './helpers/tools.ts';
import { driver, jitMonitor, startServer, type TestServer, wsOnce } from './helpers.ts';

let s: TestServer;
let ingest: string;
before(async () => {
  s = await startServer();
  ingest = await s.createKey(['ingest']);
});
after(() => s.stop());

const alertmanager = (alerts: unknown[]) =>
  fetch(`${s.url}/hooks/alertmanager`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: `Bearer ${ingest}` },
    body: new Uint8Array(gzipSync(JSON.stringify({ version: '4', status: 'firing', alerts }))),
  });

describe('monitors are validated on every path', () => {
  test('an Alertmanager alert with a 4-million-character label creates no huge monitor, and says why', async () => {
    const huge = 'x'.repeat(4_000_000);
    const res = await alertmanager([
      { status: 'firing', labels: { alertname: huge } },
      { status: 'firing', labels: { alertname: 'HugeInstance', instance: huge } },
      { status: 'firing', labels: { alertname: 'FineAlert', env: 'prod', instance: 'a:9100' }, annotations: { summary: huge } },
    ]);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { received: number; rejected: number; problems: string[] };
    assert.equal(body.received, 1);
    assert.equal(body.rejected, 2);
    assert.ok(
      body.problems.some((p) => /alertname/.test(p) && /at most/.test(p)),
      body.problems.join('\n'),
    );
    assert.ok(
      body.problems.some((p) => /instance/.test(p) && /at most/.test(p)),
      body.problems.join('\n'),
    );
    assert.ok(
      body.problems.every((p) => p.length < 1000),
      'problems never echo the label',
    );
    const monitors = await allMonitors(s.app.deps.db);
    assert.ok(monitors.every((m) => m.name.length <= MAX_MONITOR_NAME_LENGTH && m.tags.every((t) => t.length <= 200)));
    assert.ok(monitors.some((m) => m.name === 'FineAlert'));
    assert.ok(!monitors.some((m) => m.name === 'HugeInstance'), 'a refused alert creates no monitor');
    const fine = await s.gql('{ monitors(query: "alertname:FineAlert") { edges { node { groups { group message } } } } }');
    const group = fine.data.monitors.edges[0].node.groups[0];
    assert.equal(group.group, 'env:prod,instance:a:9100');
    assert.ok(group.message.length <= 4000, 'a long summary is cut, not stored whole');
  });

  test('createMonitor refuses what the domain refuses, whoever calls it', async () => {
    await assert.rejects(
      async () => createMonitor(s.app.deps, SYSTEM, { name: 'n'.repeat(MAX_MONITOR_NAME_LENGTH + 1), type: 'external', tags: [], query: '', muted: false, comparator: 'above' }),
      (err: any) => err.code === 'BAD_USER_INPUT' && /name/.test(err.message),
    );
    await assert.rejects(
      async () =>
        createMonitor(s.app.deps, SYSTEM, { name: 'ok', type: 'external', tags: Array.from({ length: 101 }, (_, i) => `t:${i}`), query: '', muted: false, comparator: 'above' }),
      (err: any) => err.code === 'BAD_USER_INPUT' && /tags/.test(err.message),
    );
  });
});

describe('imported Prometheus alerting rules are validated too', () => {
  test('a rule with a huge name or label is skipped, the others imported', async () => {
    const huge = 'y'.repeat(1_000_000);
    const rule = (name: string, labels: Record<string, string>) => ({ type: 'alerting', name, query: 'up == 0', labels, state: 'inactive', alerts: [] });
    // Prometheus is outside Tollgate: a real HTTP server answering its rules API stands in.
    const prometheus = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          status: 'success',
          data: { groups: [{ name: 'g', rules: [rule(huge, {}), rule('LabelTooLong', { team: huge }), rule('InstanceDown', { severity: 'page' })] }] },
        }),
      );
    });
    prometheus.listen(0, '127.0.0.1');
    await once(prometheus, 'listening');
    const p = await startServer({ prometheusUrl: `http://127.0.0.1:${(prometheus.address() as AddressInfo).port}`, monitorIntervalMs: 3_600_000 });
    try {
      await p.app.monitorEvaluator.evaluateNow();
      const names = (await allMonitors(p.app.deps.db)).map((m) => m.name);
      assert.deepEqual(names, ['InstanceDown']);
    } finally {
      await p.stop();
      prometheus.close();
    }
  });
});

describe('monitor search is bounded and linear', () => {
  test('an overlong query is refused with a clear error on every path', async () => {
    const long = `name:${'a'.repeat(MAX_QUERY_LENGTH)}`;
    const search = await s.gql('query($q: String) { monitors(query: $q) { edges { node { id } } } }', { q: long });
    assert.equal(search.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(search.errors![0]!.message, new RegExp(`query: .*at most ${MAX_QUERY_LENGTH} characters`));
    const d = driver(s);
    const rule = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [jitMonitor('m', { query: long })] } });
    assert.equal(rule.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(rule.errors![0]!.message, /query.*at most 1000 characters/);
    const sub = await wsOnce(s.ws(), 'subscription($q: String) { monitorStateChanged(query: $q) { group } }', { q: long });
    assert.match(String((sub.errors as any)?.[0]?.message), /at most 1000 characters/);
    // A pattern longer than any name or tag can be is refused, pointing at it.
    assert.throws(() => parseMonitorQuery(`env:prod name:${'b'.repeat(MAX_PATTERN_LENGTH + 1)}`), /at most \d+ characters .*at column 15/);
  });

  test('the pathological pattern costs at most a few steps per character', () => {
    const name = 'a'.repeat(MAX_MONITOR_NAME_LENGTH);
    const pattern = `${'*a'.repeat((MAX_PATTERN_LENGTH - 2) / 2)}b*`;
    assert.ok(pattern.length <= MAX_PATTERN_LENGTH);
    const expr = parseMonitorQuery(`name:"${pattern}"`);
    const m: MatchableMonitor = { id: 'x', name, type: 'external', tags: [], query: '', muted: false, priority: null, status: 'ok' };
    const before = matchWork.steps;
    assert.equal(matches(expr, m), false);
    const steps = matchWork.steps - before;
    assert.ok(steps <= 4 * (name.length + pattern.length), `${steps} steps for ${name.length} + ${pattern.length} characters`);
    // Still a real wildcard match.
    assert.equal(matches(parseMonitorQuery('name:"*a*a*b*"'), { ...m, name: 'xxaxxaxxbxx' }), true);
  });

  test('a search over many monitors yields to the event loop and completes', async () => {
    const name = 'a'.repeat(MAX_MONITOR_NAME_LENGTH - 4);
    for (let i = 0; i < 3000; i++)
      await createMonitor(s.app.deps, SYSTEM, { name: `${name}${i}`, type: 'external', tags: ['suite:scan', `n:${i}`], query: '', muted: false, comparator: 'above' });
    const pattern = `${'*a'.repeat((MAX_PATTERN_LENGTH - 2) / 2)}b*`;
    const { result: found, turns } = await turnsDuring(() => searchMonitors(s.app.deps, SYSTEM, `suite:scan name:"${pattern}"`));
    assert.deepEqual(found, []);
    assert.ok(turns >= 2, `the event loop turned ${turns} times during the search`);
    const health = fetch(`${s.url}/healthz`);
    const over = await s.gql('query($q: String) { monitors(query: $q) { edges { node { id } } } }', { q: `suite:scan name:"${pattern}"` });
    assert.equal(over.errors, undefined, JSON.stringify(over.errors));
    assert.equal((await health).status, 200);
  });
});

describe('OTLP requests are bounded in spans and processed in slices', () => {
  const Request = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
  /** `n` spans of one service, two in three SERVER spans (requests), one request in 100 failed. */
  function traces(service: string, n: number) {
    const now = BigInt(Date.now()) * 1_000_000n;
    const spans = [];
    for (let i = 0; i < n; i++) {
      const start = now - BigInt(i % 5000) * 1_000_000n;
      spans.push({
        name: `GET /r${i % 20}`,
        kind: i % 3 === 2 ? 3 : 2,
        startTimeUnixNano: String(start),
        endTimeUnixNano: String(start + 5_000_000n),
        attributes: [{ key: 'http.response.status_code', value: { intValue: i % 100 === 0 ? 503 : 200 } }],
      });
    }
    return {
      resourceSpans: [
        {
          resource: {
            attributes: [
              { key: 'service.name', value: { stringValue: service } },
              { key: 'deployment.environment.name', value: { stringValue: 'prod' } },
            ],
          },
          scopeSpans: [{ spans }],
        },
      ],
    };
  }
  const post = (server: TestServer, key: string, body: Buffer, contentType: string) =>
    fetch(`${server.url}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': contentType, 'content-encoding': 'gzip', authorization: `Bearer ${key}` },
      body: new Uint8Array(gzipSync(body)),
    });
  const protobuf = (t: unknown) => Buffer.from(Request.encode(Request.fromObject(t)).finish());

  test('a request over the span bound is refused with 413, in its own encoding, and nothing is stored', async () => {
    const small = await startServer({ otlpMaxSpans: 1000 });
    try {
      const k = await small.createKey(['ingest']);
      const pb = await post(small, k, protobuf(traces('over-pb', 1001)), 'application/x-protobuf');
      assert.equal(pb.status, 413);
      assert.equal(pb.headers.get('content-type'), 'application/x-protobuf');
      const status = Buffer.from(await pb.arrayBuffer());
      assert.equal(status[0], 0x08, 'a google.rpc.Status: code first');
      assert.match(status.toString('utf8'), /more than the 1000 spans .*TOLLGATE_OTLP_MAX_SPANS/);
      const json = await post(small, k, Buffer.from(JSON.stringify(traces('over-json', 1001))), 'application/json');
      assert.equal(json.status, 413);
      assert.match(((await json.json()) as any).message, /more than the 1000 spans/);
      assert.deepEqual(await countsByResource(small.app.deps.db, { service: 'over-pb', env: 'prod', from: 0, to: Date.now() + 3_600_000 }), []);
      const fits = await post(small, k, protobuf(traces('fits', 1000)), 'application/x-protobuf');
      assert.equal(fits.status, 200);
    } finally {
      await small.stop();
    }
  });

  test('more ResourceSpans or ScopeSpans than the span bound are refused with 413, even empty, in both encodings', async () => {
    // 32 MB of empty ResourceSpans laid out took 2.5 GB and 6 s (protobuf), 1.8 GB (JSON).
    const small = await startServer({ otlpMaxSpans: 1000 });
    try {
      const k = await small.createKey(['ingest']);
      const emptyResources = { resourceSpans: Array.from({ length: 1001 }, () => ({})) };
      const emptyScopes = { resourceSpans: [{ resource: traces('x', 0).resourceSpans[0]!.resource, scopeSpans: Array.from({ length: 1001 }, () => ({})) }] };
      for (const [what, t] of [
        ['ResourceSpans', emptyResources],
        ['ScopeSpans', emptyScopes],
      ] as const) {
        const json = await post(small, k, Buffer.from(JSON.stringify(t)), 'application/json');
        assert.equal(json.status, 413);
        assert.match(((await json.json()) as any).message, new RegExp(`more than the 1000 ${what} `));
        // protobufjs writes an empty message as a zero-length field: each still costs a layout entry
        const pb = await post(small, k, protobuf(t), 'application/x-protobuf');
        assert.equal(pb.status, 413);
        assert.match(Buffer.from(await pb.arrayBuffer()).toString('utf8'), new RegExp(`more than the 1000 ${what} `));
      }
      const fits = { resourceSpans: Array.from({ length: 1000 }, () => ({ scopeSpans: [{}] })) };
      assert.equal((await post(small, k, Buffer.from(JSON.stringify(fits)), 'application/json')).status, 200);
      assert.equal((await post(small, k, protobuf(fits), 'application/x-protobuf')).status, 200);
    } finally {
      await small.stop();
    }
  });

  test('a large request within the bound is stored exactly while /healthz keeps answering', async () => {
    const n = 50_000;
    const body = protobuf(traces('large', n));
    const sent = post(s, ingest, body, 'application/x-protobuf');
    let done = false;
    let answeredDuring = 0;
    const res = sent.then((r) => {
      done = true;
      return r;
    });
    while (!done) {
      const h = await fetch(`${s.url}/healthz`);
      if (!done && h.status === 200) answeredDuring++;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal((await res).status, 200);
    assert.ok(answeredDuring >= 1, '/healthz answered while the request was processed');
    const rows = await countsByResource(s.app.deps.db, { service: 'large', env: 'prod', from: 0, to: Date.now() + 3_600_000 });
    const requests = Array.from({ length: n }, (_, i) => i).filter((i) => i % 3 !== 2);
    assert.equal(
      rows.reduce((sum, r) => sum + r.hits, 0),
      requests.length,
    );
    assert.equal(
      rows.reduce((sum, r) => sum + r.errors, 0),
      requests.filter((i) => i % 100 === 0).length,
    );
  });

  test('a malformed span deep in a large request stores none of it', async () => {
    const good = protobuf(traces('torn', 5000));
    // A last ResourceSpans of the same service whose one span is cut short (trace_id: 5 bytes
    // announced, none there): found only when that span is decoded, after 5000 others.
    const Resource = (root as any).opentelemetry.proto.resource.v1.Resource;
    const resource = Buffer.from(Resource.encode(Resource.fromObject(traces('torn', 0).resourceSpans[0]!.resource)).finish());
    const span = [0x0a, 0x05];
    const scope = [0x12, span.length, ...span];
    const rs = [0x0a, resource.length, ...resource, 0x12, scope.length, ...scope];
    const torn = Buffer.concat([good, Buffer.from([0x0a, rs.length, ...rs])]);
    const r = await post(s, ingest, torn, 'application/x-protobuf');
    assert.equal(r.status, 400);
    assert.match(Buffer.from(await r.arrayBuffer()).toString('utf8'), /not an OTLP ExportTraceServiceRequest/);
    assert.deepEqual(await countsByResource(s.app.deps.db, { service: 'torn', env: 'prod', from: 0, to: Date.now() + 3_600_000 }), []);
  });
});

describe('OTLP JSON requests are parsed span by span, in slices', () => {
  const nanos = (ms = Date.now()) => String(BigInt(ms) * 1_000_000n);
  const attributes = (n: number, prefix = 'k') => Array.from({ length: n }, (_, i) => ({ key: `${prefix}${i}`, value: { stringValue: 'v' } }));
  const service = (name: string) => [
    { key: 'service.name', value: { stringValue: name } },
    { key: 'deployment.environment.name', value: { stringValue: 'prod' } },
  ];
  const request = (resourceAttributes: unknown[], spans: unknown[]) => ({ resourceSpans: [{ resource: { attributes: resourceAttributes }, scopeSpans: [{ spans }] }] });
  const serverSpan = (name: string, attrs: unknown[] = [], i = 0) => ({
    name,
    kind: 2,
    startTimeUnixNano: nanos(Date.now() - (i % 1000)),
    endTimeUnixNano: nanos(Date.now() - (i % 1000) + 5),
    attributes: attrs,
    status: { code: i % 100 === 0 ? 2 : 0 },
  });
  const options = { primaryTags: [{ tag: 'region', attribute: 'cloud.region' }], earliest: Date.now() - 86_400_000, latest: Date.now() + 3_600_000, maxSpans: 50_000, slice: 2000 };
  /** The hostile bodies, each near the decompressed limit (32 MB): 600,000 attributes on one span, on the resource, and 50,000 spans. */
  const wideSpan = () => JSON.stringify(request(service('wide-span'), [serverSpan('GET /wide', attributes(600_000)), serverSpan('GET /fine')]));
  const wideResource = () => JSON.stringify(request([...service('wide-resource'), ...attributes(600_000)], [serverSpan('GET /a'), serverSpan('GET /b')]));
  const bigBatch = () =>
    JSON.stringify(
      request(
        service('json-batch'),
        Array.from({ length: 50_000 }, (_, i) => serverSpan(`GET /r${i % 20}`, attributes(7, 'http.x'), i)),
      ),
    );

  /**
   * forEachRequestSpan over `json`, counting the turns the event loop took meanwhile and the
   * longest text one JSON.parse call was given (a stall is one synchronous parse of the body).
   */
  async function sliced(json: string) {
    const body = Buffer.from(json);
    const parse = JSON.parse;
    let largestParse = 0;
    JSON.parse = ((text: string, reviver?: Parameters<typeof JSON.parse>[1]) => {
      largestParse = Math.max(largestParse, text.length);
      return parse(text, reviver);
    }) as typeof JSON.parse;
    const spans: RequestSpan[] = [];
    try {
      const { result, turns } = await turnsDuring(() => forEachRequestSpan(body, 'json', options, (span) => spans.push(span)));
      return { ...result, spans, turns, largestParse, bytes: body.length };
    } finally {
      JSON.parse = parse;
    }
  }
  const inSlices = (r: { turns: number; largestParse: number; bytes: number }) => {
    assert.ok(r.largestParse <= MAX_JSON_MESSAGE_BYTES, `one JSON.parse of ${r.largestParse} characters`);
    assert.ok(r.turns >= r.bytes / (2 * 1024 * 1024), `${r.turns} turns of the event loop for ${r.bytes} bytes`);
  };

  test('a span of 600,000 attributes is rejected (partial success), the body never parsed in one piece', async () => {
    const r = await sliced(wideSpan());
    inSlices(r);
    assert.equal(r.rejected, 1);
    assert.deepEqual(r.problems, [`a span is over ${MAX_JSON_MESSAGE_BYTES} bytes: it was rejected`]);
    assert.deepEqual(
      r.spans.map((s) => s.resource),
      ['GET /fine'],
    );
  });

  test('a resource of 600,000 attributes rejects its spans, the body never parsed in one piece', async () => {
    const r = await sliced(wideResource());
    inSlices(r);
    assert.equal(r.rejected, 2);
    assert.deepEqual(r.problems, [`a resource is over ${MAX_JSON_MESSAGE_BYTES} bytes: its spans were rejected`]);
    assert.deepEqual(r.spans, []);
  });

  test('50,000 spans near the size limit are all counted, a slice at a time', async () => {
    const r = await sliced(bigBatch());
    inSlices(r);
    assert.equal(r.rejected, 0);
    assert.equal(r.spans.length, 50_000);
  });

  test('over HTTP: each hostile body is answered as designed, the batch stored exactly, /healthz answering meanwhile', async () => {
    const send = async (json: string) => {
      const gz = gzipSync(json);
      let done = false;
      let answeredDuring = 0;
      const res = fetch(`${s.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: `Bearer ${ingest}` },
        body: new Uint8Array(gz),
      }).then(async (r) => {
        const answer = { status: r.status, body: (await r.json()) as any };
        done = true;
        return answer;
      });
      while (!done) {
        const h = await fetch(`${s.url}/healthz`);
        if (!done && h.status === 200) answeredDuring++;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(answeredDuring >= 1, '/healthz answered while the request was processed');
      return res;
    };
    const window = async (service: string) => countsByResource(s.app.deps.db, { service, env: 'prod', from: 0, to: Date.now() + 3_600_000 });
    const span = await send(wideSpan());
    assert.equal(span.status, 200);
    assert.deepEqual(span.body, { partialSuccess: { rejectedSpans: '1', errorMessage: `a span is over ${MAX_JSON_MESSAGE_BYTES} bytes: it was rejected` } });
    assert.deepEqual(
      (await window('wide-span')).map((r) => [r.resource, r.hits]),
      [['GET /fine', 1]],
    );
    const resource = await send(wideResource());
    assert.deepEqual(resource.body, { partialSuccess: { rejectedSpans: '2', errorMessage: `a resource is over ${MAX_JSON_MESSAGE_BYTES} bytes: its spans were rejected` } });
    assert.deepEqual(await window('wide-resource'), []);
    const batch = await send(bigBatch());
    assert.equal(batch.status, 200);
    assert.deepEqual(batch.body, {});
    const rows = await window('json-batch');
    assert.equal(rows.length, 20);
    assert.equal(
      rows.reduce((sum, r) => sum + r.hits, 0),
      50_000,
    );
    assert.equal(
      rows.reduce((sum, r) => sum + r.errors, 0),
      500,
    );
  });

  test('batches from the OpenTelemetry JSON exporter at the SDK limits (512 spans of 128 attributes) land exactly', async () => {
    // Real SDK spans, exported by the real JSON exporter a batch of 512 at a time (what its
    // BatchSpanProcessor sends by default), each export awaited.
    const recorded = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'sdk-batch', 'deployment.environment.name': 'prod', 'cloud.region': 'eu-west-1' }),
      spanProcessors: [new SimpleSpanProcessor(recorded)],
    });
    const tracer = provider.getTracer('stalls');
    const extra = Object.fromEntries(Array.from({ length: 125 }, (_, i) => [`app.attribute.${i}`, `value ${i} `.repeat(4)]));
    for (let i = 0; i < 2048; i++) {
      const span = tracer.startSpan('GET', {
        kind: SpanKind.SERVER,
        attributes: { ...extra, 'http.request.method': 'GET', 'http.route': `/items/${i % 4}`, 'http.response.status_code': i % 64 === 0 ? 503 : 200 },
      });
      if (i % 64 === 0) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    const spans = recorded.getFinishedSpans();
    assert.equal(spans.length, 2048);
    assert.equal(Object.keys(spans[0]!.attributes).length, 128);
    const exporter = new JsonExporter({ url: `${s.url}/v1/traces`, headers: { authorization: `Bearer ${ingest}` } });
    for (let i = 0; i < spans.length; i += 512) {
      const result = await new Promise<{ code: number; error?: Error }>((resolve) => exporter.export(spans.slice(i, i + 512), resolve));
      assert.equal(result.code, 0, String(result.error));
    }
    await exporter.shutdown();
    await provider.shutdown();
    const rows = (await countsByResource(s.app.deps.db, { service: 'sdk-batch', env: 'prod', from: 0, to: Date.now() + 3_600_000 })).sort((a, b) =>
      a.resource < b.resource ? -1 : 1,
    );
    assert.deepEqual(
      rows.map((r) => [r.resource, r.primaryTag, r.hits, r.errors]),
      [0, 1, 2, 3].map((k) => [`GET /items/${k}`, 'region:eu-west-1', 512, k === 0 ? 32 : 0]),
    );
  });

  test('every JSON body maps as one JSON.parse of it did: same spans, rejections and problems, or the same refusal', async () => {
    const span = (name: string, extra: Record<string, unknown> = {}) => ({ ...serverSpan(name, [{ key: 'cloud.region', value: { stringValue: 'eu' } }]), ...extra });
    const ok = JSON.stringify(span('GET /ok'));
    const bodies = [
      '{}',
      '{"resourceSpans":[]}',
      ' \n\t{"resourceSpans" : [ ] } \r\n',
      '{"resourceSpans":null}',
      `{"resourceSpans":5,"resourceSpans":${JSON.stringify(request(service('dup'), [span('GET /last')]).resourceSpans)}}`,
      `{"resourceSpans":${JSON.stringify(request(service('dup'), [span('GET /first')]).resourceSpans)},"resourceSpans":5}`,
      `{"resourceSpans":[null,5,"x",[],{},true,{"scopeSpans":null},{"resource":null,"scopeSpans":[{"spans":[${ok}]}]}]}`,
      // the resource after its spans, given twice (the last counts), keys spelled with escapes
      `{"resourceSpans":[{"scopeSpans":[{"spans":[${ok}]}],"resource":{"attributes":[]},"reso\\u0075rce":${JSON.stringify({ attributes: service('escaped') })}}]}`,
      `{"resource\\u0053pans":[{"resource":${JSON.stringify({ attributes: service('escaped-top') })},"scopeSpans":[{"spans":[${ok}]}]}]}`,
      // duplicate scopeSpans and spans: the last of each
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('dups') })},"scopeSpans":[{"spans":[${ok},${ok}]}],"scopeSpans":[{"spans":[${JSON.stringify(span('GET /a'))}],"spans":[${JSON.stringify(span('GET /b'))}]},null,5,{"spans":null},{"spans":[null,5,"x",[],{},${ok}]}]}]}`,
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('bad') })},"scopeSpans":5,"scopeSpans":[{"spans":[${ok}]}]}]}`,
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('bad') })},"scopeSpans":[{"spans":[${ok}]}],"scopeSpans":{}}]}`,
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('bad') })},"scopeSpans":[{"spans":"x"}]}]}`,
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('bad') })},"scopeSpans":[{"spans":false}]}]}`,
      `{"resourceSpans":[{"resource":{"attributes":5},"scopeSpans":[{"spans":[${ok}]}]}]}`,
      // an array where a span belongs is not a request, however large
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('arrays') })},"scopeSpans":[{"spans":[${JSON.stringify(attributes(20_000))},${ok}]}]}]}`,
      `{"resourceSpans":[{"resource":"a string","scopeSpans":[{"spans":[${ok}]}]}]}`,
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('no-kind') })},"scopeSpans":[{"spans":[{"name":"x"},${JSON.stringify(span('GET /err', { status: { code: 2 }, events: [{ name: 'exception', attributes: [{ key: 'exception.type', value: { stringValue: 'Boom' } }] }] }))}]}]}]}`,
      `{"resourceSpans":[{"resource":${JSON.stringify({ attributes: service('bad-events') })},"scopeSpans":[{"spans":[${JSON.stringify(span('GET /err', { status: { code: 2 }, events: {} }))}]}]}]}`,
      // spans-like keys where they mean nothing, every kind of JSON value, unicode and escapes
      `{"x":{"resourceSpans":[1]},"resourceSpans":[{"y":{"scopeSpans":[{"spans":[${ok}]}]},"resource":${JSON.stringify({ attributes: [...service('deep'), { key: 'é\n\u2028"\\', value: { doubleValue: -1.5e3 } }] })},"scopeSpans":[{"scope":{"name":"s","spans":[${ok}]},"spans":[${JSON.stringify(span('GET /é', { name: 'GET /\u00e9\ud83d\ude00\\"' }))}]}],"n":[-0,0.5,1E+2,2e-3,true,false,null,{},[],""]}]}`,
      JSON.stringify(request([], [span('GET /no-service')])),
      JSON.stringify(request(service('old'), [span('GET /old', { startTimeUnixNano: '1000', endTimeUnixNano: '2000' }), span('GET /now')])),
      // not JSON, or not an object
      '',
      '   ',
      '{"resourceSpans": [',
      '{"a":1,}',
      '{"a":01}',
      '{"a":"\u0001"}',
      '{"a":tru}',
      '{"a":nul}',
      '{} x',
      '{}{}',
      '[1]',
      '"x"',
      '5',
      'null',
      '[1',
      '{"a":"\\q"}',
      '{"a":"\\u12G4"}',
      '{"a" 1}',
      '{"a":1 "b":2}',
      '{"a":[1,]}',
      '{"a":-}',
      '{"a":1.}',
      '{"a":1e}',
      '{"a":.5}',
      '{"a":+1}',
      "{'a':1}",
      '{a:1}',
      '{"a":1]',
      '{"a":[1}',
      '\ufeff{}',
      '{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x",}]}]}]}',
      `{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"spans":[${ok}]}]}],"x":"unterminated}`,
    ];
    const seen = new Map<string, number>();
    for (const json of bodies) {
      const body = Buffer.from(json);
      let expected: unknown;
      try {
        const m = mapSpans(decodeTraceRequest(body, 'json'), options);
        expected = { spans: m.spans, rejected: m.rejected, problems: m.problems };
      } catch (err) {
        expected = { error: (err as Error).name };
      }
      let actual: unknown;
      try {
        const spans: RequestSpan[] = [];
        const r = await forEachRequestSpan(body, 'json', options, (s) => spans.push(s));
        actual = { spans, rejected: r.rejected, problems: r.problems };
      } catch (err) {
        actual = { error: (err as Error).name };
      }
      assert.deepEqual(actual, expected, json);
      const kind = 'error' in (expected as object) ? 'refused' : (expected as { spans: unknown[] }).spans.length > 0 ? 'mapped' : 'empty';
      seen.set(kind, (seen.get(kind) ?? 0) + 1);
    }
    // The comparison covers every outcome, not only refusals.
    assert.deepEqual(Object.fromEntries(seen), { mapped: 9, empty: 6, refused: 39 });
  });
});

describe('stopping while ingested spans are still to be evaluated', () => {
  test('a batch published in the turn the server stops neither reads the closed database nor rejects unhandled', async () => {
    const server = await startServer();
    const rejections: unknown[] = [];
    const onRejection = (err: unknown) => rejections.push(err);
    process.on('unhandledRejection', onRejection);
    try {
      // What an OTLP request does after its commit, then the stop in the same turn.
      server.app.deps.events.publish('apm.ingested', { service: 'late', env: 'prod', at: new Date() });
      await server.stop();
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(rejections, []);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
