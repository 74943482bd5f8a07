// OTLP/HTTP trace payloads: decoding (protobuf through the OpenTelemetry project's own
// generated protobufjs code, JSON as the OTLP JSON mapping) and the mapping of spans to the
// requests the APM store counts.
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';

const ExportTraceServiceRequest = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
const ExportTraceServiceResponse = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;
const SpanMessage = (root as any).opentelemetry.proto.trace.v1.Span;
const ResourceMessage = (root as any).opentelemetry.proto.resource.v1.Resource;

export class OtlpDecodeError extends Error {
  override name = 'OtlpDecodeError';
}

/** A request with more spans than one request may carry (answered 413: the exporter should split). */
export class OtlpTooManySpansError extends Error {
  override name = 'OtlpTooManySpansError';
  constructor(readonly max: number) {
    super(`the request holds more than the ${max} spans one request may carry (TOLLGATE_OTLP_MAX_SPANS): send smaller batches`);
  }
}

/** The parts of the OTLP trace model Tollgate reads; both encodings decode to this shape. */
interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string | { toNumber(): number };
  doubleValue?: number;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}
interface OtlpSpan {
  name?: string;
  kind?: number | string;
  startTimeUnixNano?: number | string | { toNumber(): number };
  endTimeUnixNano?: number | string | { toNumber(): number };
  attributes?: KeyValue[];
  events?: Array<{ name?: string; attributes?: KeyValue[] }>;
  status?: { code?: number | string; message?: string };
}
interface ResourceSpans {
  resource?: { attributes?: KeyValue[] };
  scopeSpans?: Array<{ spans?: OtlpSpan[] }>;
}
export interface TraceRequest {
  resourceSpans?: ResourceSpans[];
}

export type OtlpEncoding = 'json' | 'protobuf';

export function encodingOf(contentType: string | null): OtlpEncoding | null {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/json') return 'json';
  if (type === 'application/x-protobuf' || type === 'application/protobuf') return 'protobuf';
  return null;
}

export function decodeTraceRequest(body: Buffer, encoding: OtlpEncoding): TraceRequest {
  if (encoding === 'protobuf') {
    try {
      return ExportTraceServiceRequest.decode(body) as TraceRequest;
    } catch (err) {
      throw new OtlpDecodeError(`body is not an OTLP ExportTraceServiceRequest in protobuf: ${(err as Error).message}`);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new OtlpDecodeError(`body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new OtlpDecodeError('body must be a JSON object with resourceSpans');
  const rs = (parsed as TraceRequest).resourceSpans;
  if (rs !== undefined && !Array.isArray(rs)) throw new OtlpDecodeError('resourceSpans must be an array');
  return parsed as TraceRequest;
}

/**
 * An error answer in the request's encoding, as OTLP/HTTP asks: a google.rpc.Status (code,
 * message) in protobuf, or the same fields in JSON.
 */
export function encodeErrorStatus(encoding: OtlpEncoding | null, code: number, message: string): { contentType: string; body: Buffer | string } {
  if (encoding !== 'protobuf') return { contentType: 'application/json', body: JSON.stringify({ code, message }) };
  const text = Buffer.from(message, 'utf8');
  // Status { int32 code = 1; string message = 2; }: small enough to write by hand.
  return { contentType: 'application/x-protobuf', body: Buffer.concat([Buffer.from([0x08]), varint(code), Buffer.from([0x12]), varint(text.length), text]) };
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/** The OTLP response, partial success included, in the request's encoding. */
export function encodeTraceResponse(encoding: OtlpEncoding, rejectedSpans: number, errorMessage: string): Buffer | string {
  const body = rejectedSpans > 0 ? { partialSuccess: { rejectedSpans, errorMessage } } : {};
  if (encoding === 'json') return JSON.stringify(rejectedSpans > 0 ? { partialSuccess: { rejectedSpans: String(rejectedSpans), errorMessage } } : {});
  return Buffer.from(ExportTraceServiceResponse.encode(ExportTraceServiceResponse.fromObject(body)).finish());
}

// ---- mapping ----

/** One request as the APM store counts it. */
export interface RequestSpan {
  service: string;
  env: string;
  version: string;
  resource: string;
  primaryTag: string;
  startMs: number;
  durationMs: number;
  error: boolean;
  errorType: string | null;
  errorMessage: string | null;
}

export interface MappingOptions {
  /** Primary tags: tag name → span or resource attribute, e.g. region → cloud.region. */
  primaryTags: ReadonlyArray<{ tag: string; attribute: string }>;
  /** Spans starting outside [earliest, latest] (ms) are rejected: nothing is kept for them. */
  earliest: number;
  latest: number;
}

/** Longer than a day is a broken clock, not a request. */
const MAX_DURATION_MS = 86_400_000;

const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CONSUMER = 5;
const STATUS_ERROR = 2;

function nanosToMs(v: OtlpSpan['startTimeUnixNano']): number {
  if (v === undefined || v === null) return Number.NaN;
  if (typeof v === 'number') return v / 1e6;
  // Split at the millisecond digit rather than through BigInt: this runs for every span.
  if (typeof v === 'string') return /^\d{7,}$/.test(v) ? Number(v.slice(0, -6)) + Number(v.slice(-6)) / 1e6 : /^\d+$/.test(v) ? Number(v) / 1e6 : Number.NaN;
  if (typeof v === 'object' && typeof (v as { toNumber?: unknown }).toNumber === 'function') return v.toNumber() / 1e6;
  return Number.NaN;
}

function scalar(v: AnyValue | undefined): string | number | boolean | undefined {
  if (!v) return undefined;
  if (v.stringValue !== undefined && v.stringValue !== null) return v.stringValue;
  if (v.intValue !== undefined && v.intValue !== null) {
    if (typeof v.intValue === 'object') return typeof v.intValue.toNumber === 'function' ? v.intValue.toNumber() : undefined;
    return Number(v.intValue);
  }
  if (v.doubleValue !== undefined && v.doubleValue !== null) return v.doubleValue;
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue;
  return undefined;
}

function attrs(list: KeyValue[] | undefined): Map<string, string | number | boolean> {
  const map = new Map<string, string | number | boolean>();
  if (list !== undefined && list !== null && !Array.isArray(list)) throw new TypeError('attributes must be an array');
  for (const kv of list ?? []) {
    const value = scalar(kv?.value);
    if (typeof kv?.key === 'string' && value !== undefined) map.set(kv.key, value);
  }
  return map;
}

const kindOf = (k: OtlpSpan['kind']): number =>
  typeof k === 'number' ? k : typeof k === 'string' ? ({ SPAN_KIND_SERVER: 2, SPAN_KIND_CONSUMER: 5 } as Record<string, number>)[k] ?? Number(k) : 0;
const statusOf = (c: unknown): number => (typeof c === 'number' ? c : c === 'STATUS_CODE_ERROR' ? 2 : Number(c) || 0);

export interface MappedBatch {
  spans: RequestSpan[];
  /** Spans that could not be counted (no service.name, no start time). */
  rejected: number;
  problems: string[];
}

/**
 * Requests are SERVER and CONSUMER spans (the others are work inside a request). Resource:
 * `METHOD route` for HTTP server spans, else the span name. An error is a span with status
 * ERROR or an HTTP status of 500 or more; its type comes from the exception event, the
 * error.type attribute, or the status code.
 */
export function mapSpans(req: TraceRequest, options: MappingOptions): MappedBatch {
  try {
    return mapValidSpans(req, options);
  } catch (err) {
    // A structure that is not OTLP (attributes: 5, scopeSpans: {}…) is the sender's error.
    if (err instanceof TypeError) throw new OtlpDecodeError(`not an OTLP trace request: ${err.message}`);
    throw err;
  }
}

/** What the spans of one resource share: its service, env, version and attributes. */
interface ResourceContext {
  service: string | null;
  env: string;
  version: string;
  attributes: Map<string, string | number | boolean>;
}

function resourceContext(attributes: KeyValue[] | undefined): ResourceContext {
  const a = attrs(attributes);
  const service = a.get('service.name');
  return {
    service: typeof service === 'string' && service !== '' && !service.startsWith('unknown_service') ? service : null,
    env: String(a.get('deployment.environment.name') ?? a.get('deployment.environment') ?? ''),
    version: String(a.get('service.version') ?? ''),
    attributes: a,
  };
}

/** One span as a request (null: not a request, a client or internal span), or why it was rejected. */
function mapSpan(span: OtlpSpan, ctx: ResourceContext & { service: string }, options: MappingOptions): RequestSpan | null | { rejected: string } {
  const kind = kindOf(span?.kind);
  if (kind !== SPAN_KIND_SERVER && kind !== SPAN_KIND_CONSUMER) return null;
  const startMs = nanosToMs(span.startTimeUnixNano);
  const endMs = nanosToMs(span.endTimeUnixNano);
  if (!Number.isFinite(startMs)) return { rejected: 'span without a valid startTimeUnixNano: rejected' };
  if (startMs < options.earliest || startMs > options.latest) return { rejected: 'span starting outside the retention period or in the future: rejected' };
  const a = attrs(span.attributes);
  const method = a.get('http.request.method') ?? a.get('http.method');
  const route = a.get('http.route');
  const name = typeof span.name === 'string' && span.name !== '' ? span.name : 'unnamed';
  const resourceName = kind === SPAN_KIND_SERVER && method && route ? `${method} ${route}` : name;
  const httpStatus = Number(a.get('http.response.status_code') ?? a.get('http.status_code') ?? 0);
  const error = statusOf(span.status?.code) === STATUS_ERROR || httpStatus >= 500;
  let errorType: string | null = null;
  let errorMessage: string | null = null;
  if (error) {
    const events = span.events ?? [];
    if (!Array.isArray(events)) throw new TypeError('events must be an array');
    const exception = events.find((e) => e?.name === 'exception');
    const ex = attrs(exception?.attributes);
    errorType = String(ex.get('exception.type') ?? a.get('error.type') ?? (httpStatus >= 500 ? httpStatus : 'error'));
    errorMessage = String(ex.get('exception.message') ?? span.status?.message ?? '').slice(0, 500) || null;
  }
  const primaryTag = options.primaryTags
    .map(({ tag, attribute }) => {
      const v = a.get(attribute) ?? ctx.attributes.get(attribute);
      return v === undefined ? null : `${tag}:${v}`;
    })
    .filter((x): x is string => x !== null)
    .sort()
    .join(',');
  return {
    service: ctx.service,
    env: ctx.env,
    version: ctx.version,
    resource: resourceName.slice(0, 500),
    primaryTag,
    startMs,
    durationMs: Number.isFinite(endMs) && endMs >= startMs ? Math.min(endMs - startMs, MAX_DURATION_MS) : 0,
    error,
    errorType: errorType?.slice(0, 200) ?? null,
    errorMessage,
  };
}

function spansOf(rs: ResourceSpans): OtlpSpan[] {
  const scopes = rs?.scopeSpans ?? [];
  if (!Array.isArray(scopes)) throw new TypeError('scopeSpans must be an array');
  return scopes.flatMap((ss) => {
    const list = ss?.spans ?? [];
    if (!Array.isArray(list)) throw new TypeError('spans must be an array');
    return list.filter((span) => span !== null && typeof span === 'object');
  });
}

const NO_SERVICE = 'resource without service.name: its spans were rejected';

function mapValidSpans(req: TraceRequest, options: MappingOptions): MappedBatch {
  const spans: RequestSpan[] = [];
  let rejected = 0;
  const problems = new Set<string>();
  for (const rs of req.resourceSpans ?? []) {
    const ctx = resourceContext(rs?.resource?.attributes);
    const allSpans = spansOf(rs);
    if (ctx.service === null) {
      rejected += allSpans.length;
      if (allSpans.length > 0) problems.add(NO_SERVICE);
      continue;
    }
    for (const span of allSpans) {
      const mapped = mapSpan(span, ctx as ResourceContext & { service: string }, options);
      if (mapped === null) continue;
      if ('rejected' in mapped) {
        rejected++;
        problems.add(mapped.rejected);
      } else {
        spans.push(mapped);
      }
    }
  }
  return { spans, rejected, problems: [...problems] };
}

// ---- sliced ingestion ----

export interface SlicedMappingOptions extends MappingOptions {
  /** More spans than this (of any kind) and the request is refused before any is decoded. */
  maxSpans: number;
  /** Spans decoded and mapped between two turns of the event loop. */
  slice: number;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * The largest span or resource a protobuf request may hold, encoded: decoding one is a single
 * synchronous step (a span of 1.4 million attributes, 27 KB gzipped, held the event loop for
 * 0.9 s). Generous for real spans, exception stack traces included.
 */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** Protobuf bytes decoded between two turns of the event loop (about 60 ms of decoding). */
const SLICE_BYTES = 1024 * 1024;

/**
 * Decodes a request and hands each of its requests to `accept`, a slice of spans per turn of
 * the event loop, so a large request never holds the process (nor keeps every decoded span in
 * memory: protobuf spans are decoded one at a time from the body). The span count is checked
 * first: over `maxSpans`, {@link OtlpTooManySpansError} before any work. A malformed span
 * anywhere is an {@link OtlpDecodeError}; `accept` has then seen some spans, so callers store
 * nothing before this resolves.
 */
export async function forEachRequestSpan(
  body: Buffer,
  encoding: OtlpEncoding,
  options: SlicedMappingOptions,
  accept: (span: RequestSpan) => void,
): Promise<{ rejected: number; problems: string[] }> {
  let rejected = 0;
  const problems = new Set<string>();
  let sinceTurn = 0;
  const handle = async (span: OtlpSpan, ctx: ResourceContext & { service: string }) => {
    if (++sinceTurn >= options.slice) {
      sinceTurn = 0;
      await nextTurn();
    }
    const mapped = mapSpan(span, ctx, options);
    if (mapped === null) return;
    if ('rejected' in mapped) {
      rejected++;
      problems.add(mapped.rejected);
    } else {
      accept(mapped);
    }
  };
  try {
    if (encoding === 'protobuf') {
      const resources = await scanProtobuf(body, options.maxSpans);
      // A slice is also bounded in bytes: a few spans of a million attributes each cost as
      // much to decode as a million small ones.
      let bytesSinceTurn = 0;
      const decodeInTurn = async (range: Range) => {
        bytesSinceTurn += range.end - range.start;
        if (bytesSinceTurn >= SLICE_BYTES) {
          bytesSinceTurn = 0;
          sinceTurn = 0;
          await nextTurn();
        }
      };
      for (const r of resources) {
        if (r.resource && r.resource.end - r.resource.start > MAX_MESSAGE_BYTES) {
          rejected += r.spans.length;
          problems.add(`a resource is over ${MAX_MESSAGE_BYTES} bytes: its spans were rejected`);
          continue;
        }
        if (r.resource) await decodeInTurn(r.resource);
        const ctx = resourceContext(r.resource ? decodeMessage(ResourceMessage, body, r.resource).attributes : []);
        if (ctx.service === null) {
          rejected += r.spans.length;
          if (r.spans.length > 0) problems.add(NO_SERVICE);
          continue;
        }
        for (const range of r.spans) {
          if (range.end - range.start > MAX_MESSAGE_BYTES) {
            rejected++;
            problems.add(`a span is over ${MAX_MESSAGE_BYTES} bytes: it was rejected`);
            continue;
          }
          await decodeInTurn(range);
          await handle(decodeMessage(SpanMessage, body, range), ctx as ResourceContext & { service: string });
        }
      }
    } else {
      const req = decodeTraceRequest(body, 'json');
      const resources = (req.resourceSpans ?? []).map((rs) => ({ rs, spans: spansOf(rs) }));
      const count = resources.reduce((n, r) => n + r.spans.length, 0);
      if (count > options.maxSpans) throw new OtlpTooManySpansError(options.maxSpans);
      for (const { rs, spans } of resources) {
        const ctx = resourceContext(rs?.resource?.attributes);
        if (ctx.service === null) {
          rejected += spans.length;
          if (spans.length > 0) problems.add(NO_SERVICE);
          continue;
        }
        for (const span of spans) await handle(span, ctx as ResourceContext & { service: string });
      }
    }
  } catch (err) {
    if (err instanceof TypeError) throw new OtlpDecodeError(`not an OTLP trace request: ${err.message}`);
    throw err;
  }
  return { rejected, problems: [...problems] };
}

interface Range {
  start: number;
  end: number;
}

function decodeMessage(type: { decode(buf: Uint8Array): unknown }, body: Buffer, r: Range): any {
  try {
    return type.decode(body.subarray(r.start, r.end));
  } catch (err) {
    throw new OtlpDecodeError(`body is not an OTLP ExportTraceServiceRequest in protobuf: ${(err as Error).message}`);
  }
}

/** Reads a protobuf varint at `pos`: [value, next position]. */
function readVarint(buf: Buffer, pos: number, end: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new OtlpDecodeError('body is not an OTLP ExportTraceServiceRequest in protobuf: truncated varint');
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
  throw new OtlpDecodeError('body is not an OTLP ExportTraceServiceRequest in protobuf: varint too long');
}

/**
 * Calls `visit(field, range)` for each length-delimited field in [start, end) and skips the
 * others; fields of a known number with another wire type are malformed. Returns fields seen.
 */
function eachField(buf: Buffer, start: number, end: number, visit: (field: number, range: Range) => void): number {
  let pos = start;
  let n = 0;
  while (pos < end) {
    const [key, afterKey] = readVarint(buf, pos, end);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    pos = afterKey;
    n++;
    if (wire === 2) {
      const [len, afterLen] = readVarint(buf, pos, end);
      if (afterLen + len > end) throw new OtlpDecodeError('body is not an OTLP ExportTraceServiceRequest in protobuf: a field runs past its message');
      visit(field, { start: afterLen, end: afterLen + len });
      pos = afterLen + len;
    } else if (wire === 0) {
      pos = readVarint(buf, pos, end)[1];
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new OtlpDecodeError(`body is not an OTLP ExportTraceServiceRequest in protobuf: wire type ${wire} is not used by OTLP`);
    }
    if (pos > end) throw new OtlpDecodeError('body is not an OTLP ExportTraceServiceRequest in protobuf: truncated field');
    if (field === 0) throw new OtlpDecodeError('body is not an OTLP ExportTraceServiceRequest in protobuf: field number 0');
  }
  return n;
}

/**
 * The layout of a protobuf ExportTraceServiceRequest without decoding a span: each
 * ResourceSpans (field 1) with its Resource (1) and the spans (2) of its ScopeSpans (2).
 * Cheap (it only reads field keys and lengths) and still sliced, for bodies of millions of
 * tiny fields; stops as soon as the spans are over `maxSpans`.
 */
async function scanProtobuf(body: Buffer, maxSpans: number): Promise<Array<{ resource: Range | null; spans: Range[] }>> {
  const top: Range[] = [];
  let fields = eachField(body, 0, body.length, (field, r) => {
    if (field === 1) top.push(r);
  });
  const out: Array<{ resource: Range | null; spans: Range[] }> = [];
  let count = 0;
  for (const rsRange of top) {
    const rs = { resource: null as Range | null, spans: [] as Range[] };
    const scopes: Range[] = [];
    fields += eachField(body, rsRange.start, rsRange.end, (field, r) => {
      if (field === 1) rs.resource = r;
      else if (field === 2) scopes.push(r);
    });
    for (const scope of scopes) {
      fields += eachField(body, scope.start, scope.end, (field, r) => {
        if (field !== 2) return;
        if (++count > maxSpans) throw new OtlpTooManySpansError(maxSpans);
        rs.spans.push(r);
      });
      if (fields >= 50_000) {
        fields = 0;
        await nextTurn();
      }
    }
    out.push(rs);
  }
  return out;
}
