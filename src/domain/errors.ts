import type { z } from 'zod';

export type ErrorCode = 'BAD_USER_INPUT' | 'NOT_FOUND' | 'CONFLICT' | 'UNAUTHENTICATED' | 'FORBIDDEN' | 'RATE_LIMITED';

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

export const badInput = (field: string, message: string) =>
  new DomainError('BAD_USER_INPUT', `${field}: ${message}`, field);
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
