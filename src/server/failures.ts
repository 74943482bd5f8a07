// The one answer to a failed request on the plain HTTP surfaces (REST, the orchestrator and
// Alertmanager hooks, OTLP ingestion): which status an error gets, the detail it tells the
// client, and when to retry. Each surface only renders it in its own wire format.
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { DomainError, type ErrorCode, RateLimitedError, storageFailure } from '../domain/errors.ts';
import { ReceiverBusyError } from '../sources/alertmanager.ts';
import { OtlpDecodeError, OtlpTooManySpansError } from '../sources/otlp.ts';
import { HttpError, sendJson } from './http.ts';

export interface Failure {
  status: number;
  /** What the client is told: the domain error's message (in the surface's words), never a stack. */
  detail: string;
  headers: Record<string, string>;
}

export const STATUS_OF_CODE: Record<ErrorCode, number> = {
  BAD_USER_INPUT: 400,
  NOT_FOUND: 404,
  // Not 409: Datadog's API answers a duplicate gate with 400, and Flagger reads 409 as "still evaluating".
  CONFLICT: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  UNAVAILABLE: 503,
};

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/**
 * The answer to `err` on `surface` (named in the log line of a failure nobody expected).
 * `detailOf` words a domain error for the surface (REST speaks its snake_case field names).
 */
export function failureOf(err: unknown, log: Logger, surface: string, detailOf: (err: DomainError) => string = (e) => e.message): Failure {
  // Retry-After on everything a client should send again later: a key over its limit, storage
  // an operator must repair, a receiver with a full queue.
  const retry = (seconds: number) => ({ 'retry-after': String(seconds) });
  if (err instanceof HttpError) return { status: err.status, detail: err.message, headers: {} };
  const storage = storageFailure(err);
  if (storage) {
    log.error({ code: storage.storageCode, surface }, `${surface} request refused: storage failure`);
    return { status: STATUS_OF_CODE.UNAVAILABLE, detail: storage.message, headers: retry(storage.retryAfterSeconds) };
  }
  if (err instanceof DomainError) return { status: STATUS_OF_CODE[err.code], detail: detailOf(err), headers: err instanceof RateLimitedError ? retry(err.retryAfterSeconds) : {} };
  if (err instanceof OtlpTooManySpansError) return { status: 413, detail: err.message, headers: {} };
  if (err instanceof OtlpDecodeError) return { status: 400, detail: err.message, headers: {} };
  if (err instanceof ReceiverBusyError) return { status: 503, detail: err.message, headers: retry(err.retryAfterSeconds) };
  log.error({ err, surface }, `${surface} request failed`);
  return { status: 500, detail: 'internal error', headers: {} };
}

/** A failure as REST and the hooks answer it: the Datadog API's `{errors: [{status, title, detail}]}`. */
export function sendFailure(res: ServerResponse, failure: Failure): void {
  const { status, detail, headers } = failure;
  sendJson(res, status, { errors: [{ status: String(status), title: TITLES[status] ?? 'Error', detail }] }, headers);
}
