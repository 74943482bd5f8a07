// OTLP/HTTP trace payloads: decoding (protobuf through the OpenTelemetry project's own
// generated protobufjs code, JSON as the OTLP JSON mapping) and the mapping of spans to the
// requests the APM store counts.
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';

const ExportTraceServiceRequest = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
const ExportTraceServiceResponse = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;

export class OtlpDecodeError extends Error {
  override name = 'OtlpDecodeError';
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

function mapValidSpans(req: TraceRequest, options: MappingOptions): MappedBatch {
  const spans: RequestSpan[] = [];
  let rejected = 0;
  const problems = new Set<string>();
  for (const rs of req.resourceSpans ?? []) {
    const resource = attrs(rs?.resource?.attributes);
    const service = resource.get('service.name');
    const scopes = rs?.scopeSpans ?? [];
    if (!Array.isArray(scopes)) throw new TypeError('scopeSpans must be an array');
    const allSpans = scopes.flatMap((ss) => {
      const list = ss?.spans ?? [];
      if (!Array.isArray(list)) throw new TypeError('spans must be an array');
      return list.filter((span) => span !== null && typeof span === 'object');
    });
    if (typeof service !== 'string' || service === '' || service.startsWith('unknown_service')) {
      rejected += allSpans.length;
      if (allSpans.length > 0) problems.add('resource without service.name: its spans were rejected');
      continue;
    }
    const env = String(resource.get('deployment.environment.name') ?? resource.get('deployment.environment') ?? '');
    const version = String(resource.get('service.version') ?? '');
    for (const span of allSpans) {
      const kind = kindOf(span?.kind);
      if (kind !== SPAN_KIND_SERVER && kind !== SPAN_KIND_CONSUMER) continue;
      const startMs = nanosToMs(span.startTimeUnixNano);
      const endMs = nanosToMs(span.endTimeUnixNano);
      if (!Number.isFinite(startMs)) {
        rejected++;
        problems.add('span without a valid startTimeUnixNano: rejected');
        continue;
      }
      if (startMs < options.earliest || startMs > options.latest) {
        rejected++;
        problems.add('span starting outside the retention period or in the future: rejected');
        continue;
      }
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
          const v = a.get(attribute) ?? resource.get(attribute);
          return v === undefined ? null : `${tag}:${v}`;
        })
        .filter((x): x is string => x !== null)
        .sort()
        .join(',');
      spans.push({
        service,
        env,
        version,
        resource: resourceName.slice(0, 500),
        primaryTag,
        startMs,
        durationMs: Number.isFinite(endMs) && endMs >= startMs ? Math.min(endMs - startMs, MAX_DURATION_MS) : 0,
        error,
        errorType: errorType?.slice(0, 200) ?? null,
        errorMessage,
      });
    }
  }
  return { spans, rejected, problems: [...problems] };
}
