import type { z } from 'zod';

export type ErrorCode = 'BAD_USER_INPUT' | 'NOT_FOUND' | 'CONFLICT' | 'UNAUTHENTICATED' | 'FORBIDDEN' | 'RATE_LIMITED' | 'UNAVAILABLE';

/**
 * An expected failure that a caller can act on. Every transport maps it the same way:
 * GraphQL puts `code` and `field` in `extensions`, REST turns `code` into a 4xx status.
 */
export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

/** A key over one of its limits: HTTP answers 429 with Retry-After, GraphQL adds `retryAfter`. */
export class RateLimitedError extends DomainError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('RATE_LIMITED', message);
  }
}

/**
 * The store failed, not the request (a read-only or deleted file, a full disk, an I/O error):
 * HTTP answers 503, GraphQL `UNAVAILABLE`. Retrying later may work (idempotency keys make it safe).
 */
export class StorageUnavailableError extends DomainError {
  constructor(
    message: string,
    readonly storageCode: string,
  ) {
    super('UNAVAILABLE', message);
    this.name = 'StorageUnavailableError';
  }

  /** Seconds a client should wait before retrying: an operator has to act. */
  readonly retryAfterSeconds = 5;
}

/**
 * A data source could not answer (timeout, HTTP error): the engine retries the rule, then
 * applies the gate's onSourceError policy. Thrown by sources and rule runners alike.
 */
export class SourceError extends Error {
  override name = 'SourceError';
  constructor(
    message: string,
    /** What the check had found when its source failed; recorded instead of the last evidence. */
    readonly evidence?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** SQLite's result codes (extended ones start the same), PostgreSQL's SQLSTATEs and the network's errors that mean the storage itself failed. */
const STORAGE_FAILURES: Array<[RegExp, string]> = [
  [/^(08\w{3}|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND)$/, 'the database cannot be reached'],
  [/^57P0[1-3]$/, 'the database is shutting down or restarting'],
  [/^53\w{3}$/, 'the database is out of resources (disk, memory or connections)'],
  [/^25006$/, 'the database is read-only (a standby)'],
  [/^SQLITE_READONLY/, 'the database cannot be written'],
  [/^SQLITE_IOERR/, 'the database file could not be read or written'],
  [/^SQLITE_FULL/, 'the disk holding the database is full'],
  [/^SQLITE_(CORRUPT|NOTADB)/, 'the database file is damaged'],
  [/^SQLITE_CANTOPEN/, 'the database file cannot be opened'],
  [/^SQLITE_(BUSY|LOCKED)/, 'the database is locked by another process'],
  [/^POOL_TIMEOUT$/, 'every database connection stayed busy for the pool timeout'],
];

/** node-postgres's pool error when no connection frees up in time. */
const POOL_TIMEOUT = 'timeout exceeded when trying to connect';

/**
 * The storage failure behind an error (drizzle may wrap the driver's error in `cause`), as the
 * error every transport answers with; undefined for anything else.
 */
export function storageFailure(err: unknown): StorageUnavailableError | undefined {
  if (err instanceof StorageUnavailableError) return err;
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    // node-postgres's pool gives up waiting for a free connection with an Error that has no
    // code: every connection is busy, which is the storage failing to keep up, not a bug.
    const code = (e as { code?: unknown }).code ?? (e instanceof Error && e.message === POOL_TIMEOUT ? 'POOL_TIMEOUT' : undefined);
    if (typeof code !== 'string') continue;
    const known = STORAGE_FAILURES.find(([pattern]) => pattern.test(code));
    if (known)
      return new StorageUnavailableError(
        `Tollgate's storage is unavailable (${code}: ${known[1]}): the request failed. Retry later; the operator sees the cause on /readyz.`,
        code,
      );
  }
  return undefined;
}

/**
 * A unique index refused the write: SQLite names its columns (`table.column, …`), PostgreSQL
 * the index; either is enough to tell which.
 */
export function uniqueViolation(err: unknown, index: { name: string; columns: string }): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, message, constraint } = e as { code?: unknown; message?: unknown; constraint?: unknown };
    if (code === 'SQLITE_CONSTRAINT_UNIQUE' && typeof message === 'string' && message.includes(index.columns)) return true;
    if (code === '23505' && constraint === index.name) return true;
  }
  return false;
}

export const badInput = (field: string, message: string) => new DomainError('BAD_USER_INPUT', `${field}: ${message}`, field);
export const notFound = (message: string, field?: string) => new DomainError('NOT_FOUND', message, field);
export const conflict = (message: string, field?: string) => new DomainError('CONFLICT', message, field);
export const forbidden = (message: string) => new DomainError('FORBIDDEN', message);

/** `input.rules[0].options.monitor.duration` from a validation issue's path. */
export function fieldPath(path: readonly unknown[] | undefined, prefix?: string): string {
  let out = prefix ?? '';
  for (const seg of path ?? []) {
    const key = typeof seg === 'object' && seg !== null && 'key' in seg ? (seg as { key: unknown }).key : seg;
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out || (prefix ?? 'input');
}

/** Parses with a zod schema, turning the first problem into a BAD_USER_INPUT naming the field. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, prefix?: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  throw badInput(fieldPath(issue.path, prefix), issue.message);
}
