// Small helpers for the plain HTTP endpoints beside GraphQL (ingestion, webhooks).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import { type AuthResult, secretFromAuthorization } from '../domain/apiKeys.ts';
import { hasScope, type Principal, type Scope } from '../domain/principal.ts';

const gunzipAsync = promisify(gunzip);
const inflateAsync = promisify(inflate);

/**
 * Checks a presented secret. `client` is the caller's address, for the log line an
 * authentication failure leaves (see buildApp).
 */
export type Authenticate = (secret: string | null, client?: string) => Promise<AuthResult>;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The body, decompressed, refused with 413 past `limit` bytes on the wire or 4× after. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new HttpError(413, `body of ${declared} bytes is over the limit of ${limit}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, `body is over the limit of ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  const raw = Buffer.concat(chunks);
  const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
  try {
    if (encoding === 'gzip') return await gunzipAsync(raw, { maxOutputLength: limit * 4 });
    if (encoding === 'deflate') return await inflateAsync(raw, { maxOutputLength: limit * 4 });
  } catch (err) {
    const e = err as { code?: string; message: string };
    if (e.code === 'ERR_BUFFER_TOO_LARGE') throw new HttpError(413, `decompressed body is over the limit of ${limit * 4} bytes`);
    throw new HttpError(400, `body is not valid ${encoding}: ${e.message}`);
  }
  if (encoding !== 'identity') throw new HttpError(415, `Content-Encoding ${encoding} is not supported: use gzip, deflate or none`);
  return raw;
}

/**
 * A request body that must be one JSON object: `null`, a number, a string or an array is the
 * client's mistake (400), never a TypeError further down.
 */
export function parseJsonObject(raw: Buffer, what = 'body'): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new HttpError(400, `${what} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isJsonObject(json)) throw new HttpError(400, `${what}: must be a JSON object, not ${jsonKind(json)}`);
  return json;
}

export const isJsonObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `null`, `an array`, `a number`…, for messages. */
export const jsonKind = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);

/**
 * A path segment decoded, or a 400: `%E0%A4%A`, `%ZZ` or an overlong `%C0%AF` are the client's
 * mistake, where decodeURIComponent would throw a URIError.
 */
export function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, `path segment "${segment.slice(0, 100)}" is not valid percent-encoding (UTF-8 bytes as %XX)`);
  }
}

/**
 * The request target as a URL, or null when it is none: `//[` would be read as a host by
 * `new URL(target, base)` and throw, so an origin-form target is only ever a path here.
 */
export function requestUrl(target: string): URL | null {
  try {
    return target.startsWith('/') ? new URL(`http://tollgate${target}`) : new URL(target);
  } catch {
    return null;
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * The caller of a plain HTTP endpoint: `Authorization: Bearer`, `DD-API-KEY`, or a `key`
 * query parameter (for senders such as Alertmanager that cannot always set headers).
 */
export async function requireCaller(req: IncomingMessage, url: URL, authenticate: Authenticate, scope: Scope): Promise<Principal> {
  const header = req.headers.authorization ?? (req.headers['dd-api-key'] as string | undefined);
  const secret = secretFromAuthorization(header) ?? url.searchParams.get('key');
  const result = await authenticate(secret, req.socket.remoteAddress);
  if (!result.ok) throw new HttpError(401, result.reason);
  if (!hasScope(result.principal, scope)) throw new HttpError(403, `API key "${result.principal.name}" lacks the ${scope} scope`);
  return result.principal;
}
