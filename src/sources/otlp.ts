// OTLP/HTTP trace payloads: decoding (protobuf through the OpenTelemetry project's own
// generated protobufjs code, JSON as the OTLP JSON mapping) and the mapping of spans to the
// requests the APM store counts.
import { createHash } from 'node:crypto';
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import { joinPrimaryTags } from '../db/apm.ts';

/** The generated root is untyped JavaScript: the message classes used here, as far as they are used. */
interface ProtoMessage {
  decode(buf: Uint8Array): unknown;
  encode(message: unknown): { finish(): Uint8Array };
  fromObject(object: object): unknown;
}
type ProtoRoot = {
  opentelemetry: {
    proto: {
      collector: { trace: { v1: { ExportTraceServiceRequest: ProtoMessage; ExportTraceServiceResponse: ProtoMessage } } };
      trace: { v1: { Span: ProtoMessage } };
      resource: { v1: { Resource: ProtoMessage } };
    };
  };
};
const { proto } = (root as unknown as ProtoRoot).opentelemetry;
const { ExportTraceServiceRequest, ExportTraceServiceResponse } = proto.collector.trace.v1;
const SpanMessage = proto.trace.v1.Span;
const ResourceMessage = proto.resource.v1.Resource;

export class OtlpDecodeError extends Error {
  override name = 'OtlpDecodeError';
}

/**
 * A request with more spans than one request may carry (answered 413: the exporter should
 * split); also more ResourceSpans or ScopeSpans, each of which costs memory to lay out even
 * when empty (32 MB of empty ones: 16 million, 2.5 GB and 6 s).
 */
export class OtlpTooManySpansError extends Error {
  override name = 'OtlpTooManySpansError';
  constructor(
    readonly max: number,
    what: 'spans' | 'ResourceSpans' | 'ScopeSpans' = 'spans',
  ) {
    super(`the request holds more than the ${max} ${what} one request may carry (TOLLGATE_OTLP_MAX_SPANS): send smaller batches`);
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
  /**
   * The instance (pod, host) that served it: the resource's service.instance.id, else
   * k8s.pod.name, else host.name, at most MAX_INSTANCE_LENGTH characters; '' for none.
   */
  instance: string;
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

/**
 * A NUL character is valid in OTLP strings but not in PostgreSQL text: one in a span name or an
 * attribute made the whole batch fail to store, and its exporter retry it forever.
 */
const withoutNul = (text: string): string => (text.includes('\0') ? text.replaceAll('\0', '\uFFFD') : text);

function scalar(v: AnyValue | undefined): string | number | boolean | undefined {
  if (!v) return undefined;
  if (v.stringValue !== undefined && v.stringValue !== null) return withoutNul(String(v.stringValue));
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
  typeof k === 'number' ? k : typeof k === 'string' ? (({ SPAN_KIND_SERVER: 2, SPAN_KIND_CONSUMER: 5 } as Record<string, number>)[k] ?? Number(k)) : 0;
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

/** What the spans of one resource share: its service, env, version, instance and attributes. */
interface ResourceContext {
  service: string | null;
  env: string;
  version: string;
  instance: string;
  attributes: Map<string, string | number | boolean>;
}

/** Resource attributes naming the instance, the first one present (and not empty) wins. */
const INSTANCE_ATTRIBUTES = ['service.instance.id', 'k8s.pod.name', 'host.name'] as const;

/**
 * The longest instance stored (characters). Pod names are at most 63 in practice and 253 by
 * Kubernetes' rules, host names 253, instance ids anything a sender likes.
 */
export const MAX_INSTANCE_LENGTH = 128;
const INSTANCE_DIGEST_LENGTH = 8;

/**
 * A longer instance keeps its start and ends with a digest of the whole value, rather than
 * being cut: names generated for pods and hosts differ at their end (`checkout-7d9c5b-x2k4q`),
 * so a cut would count different pods as one. Readable and still distinct.
 */
function boundedInstance(value: string): string {
  if (value.length <= MAX_INSTANCE_LENGTH) return value;
  let cut = MAX_INSTANCE_LENGTH - INSTANCE_DIGEST_LENGTH - 1;
  // Not between the two halves of a surrogate pair.
  const last = value.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--;
  const digest = createHash('sha256').update(value).digest('hex').slice(0, INSTANCE_DIGEST_LENGTH);
  return `${value.slice(0, cut)}#${digest}`;
}

function instanceOf(a: Map<string, string | number | boolean>): string {
  for (const name of INSTANCE_ATTRIBUTES) {
    const v = a.get(name);
    if (v !== undefined && v !== '') return boundedInstance(String(v));
  }
  return '';
}

function resourceContext(attributes: KeyValue[] | undefined): ResourceContext {
  const a = attrs(attributes);
  const service = a.get('service.name');
  return {
    service: typeof service === 'string' && service !== '' && !service.startsWith('unknown_service') ? service : null,
    env: String(a.get('deployment.environment.name') ?? a.get('deployment.environment') ?? ''),
    version: String(a.get('service.version') ?? ''),
    // Once per resource, not per span: its spans share it.
    instance: instanceOf(a),
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
  const name = typeof span.name === 'string' && span.name !== '' ? withoutNul(span.name) : 'unnamed';
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
    errorMessage = withoutNul(String(ex.get('exception.message') ?? span.status?.message ?? '')).slice(0, 500) || null;
  }
  const primaryTag = joinPrimaryTags(
    options.primaryTags.flatMap(({ tag, attribute }) => {
      const v = a.get(attribute) ?? ctx.attributes.get(attribute);
      return v === undefined ? [] : [[tag, String(v)] as const];
    }),
  );
  return {
    service: ctx.service,
    env: ctx.env,
    version: ctx.version,
    resource: resourceName.slice(0, 500),
    primaryTag,
    instance: ctx.instance,
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
const MAX_MESSAGE_BYTES = 256 * 1024;
/** Protobuf bytes decoded, or JSON bytes scanned or parsed, between two turns of the event loop (about 60 ms of decoding). */
const SLICE_BYTES = 1024 * 1024;
/**
 * The largest span or resource a JSON request may hold, as text: JSON spells out what
 * protobuf packs (field names, hex ids, numbers as strings), so twice the protobuf bound;
 * parsed and mapped in ~20 ms. Real spans (at most 128 attributes by the SDK's default
 * limits) are a few KB.
 */
export const MAX_JSON_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES;

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
        const ctx = resourceContext(r.resource ? decodeMessage<{ attributes?: KeyValue[] }>(ResourceMessage, body, r.resource).attributes : []);
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
          await handle(decodeMessage<OtlpSpan>(SpanMessage, body, range), ctx as ResourceContext & { service: string });
        }
      }
    } else {
      // The same plan in JSON: the layout first (sliced), then one JSON.parse per resource
      // and per span, never one of the whole body (27 MB: 0.4 s to 1 s in one step).
      const resources = await scanJson(body, options.maxSpans);
      let bytesSinceTurn = 0;
      const parseInTurn = async (range: Range): Promise<unknown> => {
        bytesSinceTurn += range.end - range.start;
        if (bytesSinceTurn >= SLICE_BYTES) {
          bytesSinceTurn = 0;
          sinceTurn = 0;
          await nextTurn();
        }
        // The scan has validated the whole body: this parse cannot fail.
        return JSON.parse(body.toString('utf8', range.start, range.end));
      };
      for (const r of resources) {
        if (r.resource && r.resource.end - r.resource.start > MAX_JSON_MESSAGE_BYTES) {
          rejected += r.spans.length;
          if (r.spans.length > 0) problems.add(`a resource is over ${MAX_JSON_MESSAGE_BYTES} bytes: its spans were rejected`);
          continue;
        }
        const resource = r.resource ? ((await parseInTurn(r.resource)) as ResourceSpans['resource']) : undefined;
        const ctx = resourceContext(resource?.attributes);
        if (ctx.service === null) {
          rejected += r.spans.length;
          if (r.spans.length > 0) problems.add(NO_SERVICE);
          continue;
        }
        for (const range of r.spans) {
          if (range.end - range.start > MAX_JSON_MESSAGE_BYTES) {
            rejected++;
            problems.add(`a span is over ${MAX_JSON_MESSAGE_BYTES} bytes: it was rejected`);
            continue;
          }
          await handle((await parseInTurn(range)) as OtlpSpan, ctx as ResourceContext & { service: string });
        }
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

function decodeMessage<T>(type: ProtoMessage, body: Buffer, r: Range): T {
  try {
    return type.decode(body.subarray(r.start, r.end)) as T;
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
 * tiny fields; stops as soon as the spans (or ResourceSpans, or ScopeSpans) are over `maxSpans`.
 */
async function scanProtobuf(body: Buffer, maxSpans: number): Promise<Array<{ resource: Range | null; spans: Range[] }>> {
  const top: Range[] = [];
  let fields = eachField(body, 0, body.length, (field, r) => {
    if (field !== 1) return;
    if (top.length >= maxSpans) throw new OtlpTooManySpansError(maxSpans, 'ResourceSpans');
    top.push(r);
  });
  const out: Array<{ resource: Range | null; spans: Range[] }> = [];
  let count = 0;
  let scopeCount = 0;
  for (const rsRange of top) {
    const rs = { resource: null as Range | null, spans: [] as Range[] };
    const scopes: Range[] = [];
    fields += eachField(body, rsRange.start, rsRange.end, (field, r) => {
      if (field === 1) rs.resource = r;
      else if (field === 2) {
        if (++scopeCount > maxSpans) throw new OtlpTooManySpansError(maxSpans, 'ScopeSpans');
        scopes.push(r);
      }
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

// ---- JSON layout ----

/** Where a ResourceSpans' resource and spans lie in a JSON body. */
interface JsonResourceLayout {
  resource: Range | null;
  scopes: Array<{ spans: Range[]; spansInvalid: boolean }>;
  scopeSpansInvalid: boolean;
}

// What a JSON value is in an ExportTraceServiceRequest; everything else is only validated.
const SKIP = 0;
const ROOT = 1;
const RESOURCE_SPANS_LIST = 2;
const RESOURCE_SPANS = 3;
const SCOPE_SPANS_LIST = 4;
const SCOPE_SPANS = 5;
const SPANS_LIST = 6;
const SPAN = 7;
const RESOURCE = 8;

// Where the scanner is between two tokens.
const EXPECT_VALUE = 0;
const EXPECT_VALUE_OR_CLOSE = 1;
const EXPECT_KEY_OR_CLOSE = 2;
const EXPECT_KEY = 3;
const EXPECT_COLON = 4;
const EXPECT_COMMA_OR_CLOSE = 5;
const EXPECT_END = 6;
const IN_STRING = 7;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const isDigit = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x39;
const isHex = (c: number | undefined) => c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));

/**
 * A validating JSON scanner that records where the resources and spans of an OTLP request
 * lie without building any of it, a bounded number of bytes per call, so that a request is
 * parsed one resource or span at a time. It accepts exactly what JSON.parse accepts and reads
 * the structure as the JSON mapping of the whole body did: the last of duplicate keys counts,
 * keys may be spelled with escapes, a non-object where a ResourceSpans, ScopeSpans or span is
 * expected is ignored, and `resourceSpans`, `scopeSpans` and `spans` that are not arrays are
 * refused.
 */
class JsonLayoutScanner {
  private pos = 0;
  private state = EXPECT_VALUE;
  private depth = 0;
  private kinds = new Uint8Array(64); // per open container: 1 object, 0 array
  private roles = new Uint8Array(64);
  /** The role of the value after the key just read (in the objects whose keys matter). */
  private keyRole = SKIP;
  private stringStart = 0;
  private stringIsKey = false;
  /** The value being recorded (a resource or a span): where it starts, and at which depth. */
  private recordStart = -1;
  private recordDepth = 0;
  private recordRole = SKIP;
  private spans = 0;
  private resourceSpansCount = 0;
  private scopeSpansCount = 0;
  private rootIsObject = false;
  private resourceSpansInvalid = false;
  private resources: JsonResourceLayout[] = [];
  private resourceSpans: JsonResourceLayout | null = null;
  private scopeSpans: JsonResourceLayout['scopes'][number] | null = null;

  constructor(
    private readonly buf: Buffer,
    private readonly maxSpans: number,
  ) {}

  /** Scans at most `budget` more bytes (one string or number may run past); true once the body is scanned whole. */
  scan(budget: number): boolean {
    const buf = this.buf;
    const stop = Math.min(buf.length, this.pos + budget);
    let p = this.pos;
    while (p < stop) {
      if (this.state === IN_STRING) {
        p = this.stringRest(p, stop);
        continue;
      }
      const c = buf[p]!;
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
        p++;
        continue;
      }
      switch (this.state) {
        case EXPECT_VALUE_OR_CLOSE:
        case EXPECT_VALUE:
          p = c === 0x5d && this.state === EXPECT_VALUE_OR_CLOSE ? this.close(p, 0) : this.value(p, c);
          break;
        case EXPECT_KEY_OR_CLOSE:
        case EXPECT_KEY:
          if (c === 0x7d && this.state === EXPECT_KEY_OR_CLOSE) {
            p = this.close(p, 1);
            break;
          }
          if (c !== QUOTE) this.unexpected(p);
          this.stringStart = p;
          this.stringIsKey = true;
          this.state = IN_STRING;
          p++;
          break;
        case EXPECT_COLON:
          if (c !== 0x3a) this.unexpected(p);
          this.state = EXPECT_VALUE;
          p++;
          break;
        case EXPECT_COMMA_OR_CLOSE:
          if (c === 0x2c) {
            this.state = this.kinds[this.depth - 1] === 1 ? EXPECT_KEY : EXPECT_VALUE;
            p++;
          } else if (c === 0x7d || c === 0x5d) {
            p = this.close(p, c === 0x7d ? 1 : 0);
          } else {
            this.unexpected(p);
          }
          break;
        default: // EXPECT_END: nothing but whitespace after the body's value
          this.unexpected(p);
      }
    }
    this.pos = p;
    if (p < buf.length) return false;
    if (this.state !== EXPECT_END) throw new OtlpDecodeError('body is not valid JSON: unexpected end of input');
    if (!this.rootIsObject) throw new OtlpDecodeError('body must be a JSON object with resourceSpans');
    if (this.resourceSpansInvalid) throw new OtlpDecodeError('resourceSpans must be an array');
    return true;
  }

  /** Each ResourceSpans, its resource and the spans of all its ScopeSpans. */
  layout(): Array<{ resource: Range | null; spans: Range[] }> {
    return this.resources.map((r) => ({ resource: r.resource, spans: r.scopes.flatMap((s) => s.spans) }));
  }

  private unexpected(p: number): never {
    if (p >= this.buf.length) throw new OtlpDecodeError('body is not valid JSON: unexpected end of input');
    const c = this.buf[p]!;
    const shown = c >= 0x20 && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, '0')}`;
    throw new OtlpDecodeError(`body is not valid JSON: unexpected ${shown} at byte ${p}`);
  }

  /** A value starts at `p` with byte `c`: what it is in the request, then the value itself. */
  private value(p: number, c: number): number {
    let role = SKIP;
    const parent = this.depth === 0 ? -1 : this.roles[this.depth - 1];
    if (parent === -1) {
      this.rootIsObject = c === 0x7b;
      if (this.rootIsObject) role = ROOT;
    } else if (parent === ROOT) {
      if (this.keyRole === RESOURCE_SPANS_LIST) {
        if (c === 0x5b) role = RESOURCE_SPANS_LIST;
        else this.resourceSpansInvalid = true; // null too: JSON.parse's `resourceSpans !== undefined`
      }
    } else if (parent === RESOURCE_SPANS_LIST) {
      if (c === 0x7b) role = RESOURCE_SPANS;
    } else if (parent === RESOURCE_SPANS) {
      if (this.keyRole === RESOURCE) role = RESOURCE;
      else if (this.keyRole === SCOPE_SPANS_LIST) {
        const rs = this.resourceSpans!;
        if (c === 0x5b) role = SCOPE_SPANS_LIST;
        else if (c === 0x6e) {
          // null: no ScopeSpans (and if it is not null, the scan refuses it as JSON)
          rs.scopes = [];
          rs.scopeSpansInvalid = false;
        } else rs.scopeSpansInvalid = true;
      }
    } else if (parent === SCOPE_SPANS_LIST) {
      if (c === 0x7b) role = SCOPE_SPANS;
    } else if (parent === SCOPE_SPANS) {
      if (this.keyRole === SPANS_LIST) {
        const ss = this.scopeSpans!;
        if (c === 0x5b) role = SPANS_LIST;
        else if (c === 0x6e) {
          ss.spans = [];
          ss.spansInvalid = false;
        } else ss.spansInvalid = true;
      }
    } else if (parent === SPANS_LIST) {
      // An array counts as a span (as `typeof [] === 'object'` did) but is never a request.
      if ((c === 0x7b || c === 0x5b) && ++this.spans > this.maxSpans) throw new OtlpTooManySpansError(this.maxSpans);
      if (c === 0x7b) role = SPAN;
    }
    if (role === SPAN || role === RESOURCE) {
      this.recordStart = p;
      this.recordDepth = this.depth;
      this.recordRole = role;
      role = SKIP; // what is inside is only validated here, and parsed later
    }
    if (c === 0x7b || c === 0x5b) return this.open(p, c === 0x7b ? 1 : 0, role);
    if (c === QUOTE) {
      this.stringStart = p;
      this.stringIsKey = false;
      this.state = IN_STRING;
      return p + 1;
    }
    if (c === 0x74) return this.valueDone(this.literal(p, 'true'));
    if (c === 0x66) return this.valueDone(this.literal(p, 'false'));
    if (c === 0x6e) return this.valueDone(this.literal(p, 'null'));
    return this.valueDone(this.number(p));
  }

  private open(p: number, kind: number, role: number): number {
    if (this.depth === this.kinds.length) {
      const kinds = new Uint8Array(this.kinds.length * 2);
      kinds.set(this.kinds);
      this.kinds = kinds;
      const roles = new Uint8Array(this.roles.length * 2);
      roles.set(this.roles);
      this.roles = roles;
    }
    this.kinds[this.depth] = kind;
    this.roles[this.depth] = role;
    this.depth++;
    if (role === RESOURCE_SPANS_LIST) {
      this.resources = [];
      this.resourceSpansInvalid = false;
    } else if (role === RESOURCE_SPANS) {
      if (++this.resourceSpansCount > this.maxSpans) throw new OtlpTooManySpansError(this.maxSpans, 'ResourceSpans');
      this.resourceSpans = { resource: null, scopes: [], scopeSpansInvalid: false };
      this.resources.push(this.resourceSpans);
    } else if (role === SCOPE_SPANS_LIST) {
      this.resourceSpans!.scopes = [];
      this.resourceSpans!.scopeSpansInvalid = false;
    } else if (role === SCOPE_SPANS) {
      if (++this.scopeSpansCount > this.maxSpans) throw new OtlpTooManySpansError(this.maxSpans, 'ScopeSpans');
      this.scopeSpans = { spans: [], spansInvalid: false };
      this.resourceSpans!.scopes.push(this.scopeSpans);
    } else if (role === SPANS_LIST) {
      this.scopeSpans!.spans = [];
      this.scopeSpans!.spansInvalid = false;
    }
    this.keyRole = SKIP;
    this.state = kind === 1 ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
    return p + 1;
  }

  private close(p: number, kind: number): number {
    if (this.kinds[this.depth - 1] !== kind) this.unexpected(p);
    this.depth--;
    const role = this.roles[this.depth];
    // Checked once the object is whole, as the last of duplicate keys is the one that counts.
    if (role === RESOURCE_SPANS && this.resourceSpans!.scopeSpansInvalid) throw new TypeError('scopeSpans must be an array');
    if (role === SCOPE_SPANS && this.scopeSpans!.spansInvalid) throw new TypeError('spans must be an array');
    return this.valueDone(p + 1);
  }

  /** A value ended at `end`: recorded if it is a resource or a span. */
  private valueDone(end: number): number {
    if (this.recordStart >= 0 && this.depth === this.recordDepth) {
      const range = { start: this.recordStart, end };
      if (this.recordRole === SPAN) this.scopeSpans!.spans.push(range);
      else this.resourceSpans!.resource = range;
      this.recordStart = -1;
    }
    this.state = this.depth === 0 ? EXPECT_END : EXPECT_COMMA_OR_CLOSE;
    return end;
  }

  /** The rest of a string from `p`, at most to `stop` (then the string goes on in the next call). */
  private stringRest(p: number, stop: number): number {
    const buf = this.buf;
    while (p < stop) {
      const c = buf[p]!;
      if (c === QUOTE) return this.stringDone(p + 1);
      if (c === BACKSLASH) {
        const e = buf[p + 1];
        if (e === 0x75) {
          if (!(isHex(buf[p + 2]) && isHex(buf[p + 3]) && isHex(buf[p + 4]) && isHex(buf[p + 5]))) this.unexpected(Math.min(p + 2, buf.length));
          p += 6;
        } else if (e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
          p += 2;
        } else {
          this.unexpected(p + 1);
        }
      } else if (c < 0x20) {
        this.unexpected(p);
      } else {
        p++;
      }
    }
    if (p >= buf.length) this.unexpected(p);
    return p;
  }

  private stringDone(end: number): number {
    if (!this.stringIsKey) return this.valueDone(end);
    this.state = EXPECT_COLON;
    const role = this.roles[this.depth - 1];
    if (role === SKIP) return end;
    // Keys of the request's own objects: short ones are read (escapes too: "resource\u0053pans").
    const name = end - this.stringStart <= 100 ? (JSON.parse(this.buf.toString('utf8', this.stringStart, end)) as string) : '';
    this.keyRole =
      role === ROOT && name === 'resourceSpans'
        ? RESOURCE_SPANS_LIST
        : role === RESOURCE_SPANS && name === 'resource'
          ? RESOURCE
          : role === RESOURCE_SPANS && name === 'scopeSpans'
            ? SCOPE_SPANS_LIST
            : role === SCOPE_SPANS && name === 'spans'
              ? SPANS_LIST
              : SKIP;
    return end;
  }

  private literal(p: number, word: string): number {
    for (let i = 0; i < word.length; i++) if (this.buf[p + i] !== word.charCodeAt(i)) this.unexpected(p + i);
    return p + word.length;
  }

  /** -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
  private number(p: number): number {
    const buf = this.buf;
    if (buf[p] === 0x2d) p++;
    if (buf[p] === 0x30) p++;
    else if (isDigit(buf[p])) while (isDigit(buf[p])) p++;
    else this.unexpected(p);
    if (buf[p] === 0x2e) {
      p++;
      if (!isDigit(buf[p])) this.unexpected(p);
      while (isDigit(buf[p])) p++;
    }
    if (buf[p] === 0x65 || buf[p] === 0x45) {
      p++;
      if (buf[p] === 0x2b || buf[p] === 0x2d) p++;
      if (!isDigit(buf[p])) this.unexpected(p);
      while (isDigit(buf[p])) p++;
    }
    return p;
  }
}

/**
 * The layout of a JSON ExportTraceServiceRequest, validated whole and scanned a slice per
 * turn of the event loop; stops as soon as the spans (or ResourceSpans, or ScopeSpans) are
 * over `maxSpans`.
 */
async function scanJson(body: Buffer, maxSpans: number): Promise<Array<{ resource: Range | null; spans: Range[] }>> {
  const scanner = new JsonLayoutScanner(body, maxSpans);
  while (!scanner.scan(SLICE_BYTES)) await nextTurn();
  return scanner.layout();
}
