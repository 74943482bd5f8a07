import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * Where a credential could ride into a log line: request headers, graphql-ws connection
 * parameters, a `key` query parameter (the hooks accept ?key=), a created key's secret.
 * Log calls should not pass these at all; this is the net under them.
 */
const REDACT = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'headers["dd-api-key"]',
  '*.headers["dd-api-key"]',
  'headers.cookie',
  '*.headers.cookie',
  'connectionParams',
  '*.connectionParams',
  'secret',
  '*.secret',
  '*.*.secret',
  'key',
  '*.key',
  'query.key',
  '*.query.key',
];

/**
 * A Tollgate secret inside text a line quotes (a client pasting one where an id belongs, the
 * refusal quoting it back): its first 10 characters stay, as secretPrefix shows them, the rest goes.
 */
const SECRET_IN_TEXT = /\b(tgk_[\w-]{6})[\w-]+/g;
const scrub = (text: string) => (text.includes('tgk_') ? text.replace(SECRET_IN_TEXT, '$1…') : text);

/** The strings of a log call's message and plain fields, scrubbed; errors and other objects are left whole. */
function scrubArgs(args: unknown[]): unknown[] {
  return args.map((arg) => {
    if (typeof arg === 'string') return scrub(arg);
    const proto = arg !== null && typeof arg === 'object' ? Object.getPrototypeOf(arg) : undefined;
    if (proto !== Object.prototype && proto !== null) return arg;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(arg as Record<string, unknown>)) out[k] = typeof v === 'string' ? scrub(v) : v;
    return out;
  });
}

/** Structured JSON logs on stdout, one object a line. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'tollgate' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
      hooks: {
        logMethod(args, method) {
          method.apply(this, scrubArgs(args) as Parameters<typeof method>);
        },
      },
    },
    destination,
  );
}

/** Who did it, in every lifecycle line (a Principal; spelled out so this module imports nothing of ours). */
export const actorFields = (actor: { id: string; name: string }) => ({ actorId: actor.id, actorName: actor.name });

/**
 * Enough of a presented secret to tell keys apart in logs (Tollgate's keys show the same
 * 10 characters as their stored prefix), never the secret: at most a third of what was sent.
 */
export function secretPrefix(secret: string | null | undefined): string | undefined {
  if (!secret) return undefined;
  return secret.slice(0, Math.min(10, Math.floor(secret.length / 3)));
}

/** A connection URL (PostgreSQL, Redis) as it may be printed or logged: the password never is. */
export function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}
