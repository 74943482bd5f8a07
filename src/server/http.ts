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
export type Authenticate = (secret: string | null, client?: string) => AuthResult;

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

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * The caller of a plain HTTP endpoint: `Authorization: Bearer`, `DD-API-KEY`, or a `key`
 * query parameter (for senders such as Alertmanager that cannot always set headers).
 */
export function requireCaller(
  req: IncomingMessage,
  url: URL,
  authenticate: Authenticate,
  scope: Scope,
): Principal {
  const header = req.headers.authorization ?? (req.headers['dd-api-key'] as string | undefined);
  const secret = secretFromAuthorization(header) ?? url.searchParams.get('key');
  const result = authenticate(secret, req.socket.remoteAddress);
  if (!result.ok) throw new HttpError(401, result.reason);
  if (!hasScope(result.principal, scope)) throw new HttpError(403, `API key "${result.principal.name}" lacks the ${scope} scope`);
  return result.principal;
}
