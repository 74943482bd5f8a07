import { z } from 'zod';
import { canonicalTimeZone, cronProblem } from './freezeCalendar.ts';
import { derivedBaselineProblem, formatBound, isRelativeBound, MAX_METRIC_POINTS, MAX_PROMQL_LENGTH, parseBound, pointCount, promqlProblem, usesPlaceholder } from './metric.ts';
import { MAX_QUERY_LENGTH, MonitorQueryError, normalizeGroup, parseMonitorQuery } from './monitorQuery.ts';

/**
 * The options of each rule type, validated and defaulted here once for every entry point
 * (GraphQL, REST, gates-as-code). Stored rules hold the parsed output, so a rule read back
 * always shows every option it is evaluated with.
 */

const MAX_WINDOW_SECONDS = 7200;

/** A monitor search query that parses; the parser's message says where it does not. */
const monitorQuerySchema = z
  .string()
  .trim()
  .min(1, 'query must not be empty')
  .max(MAX_QUERY_LENGTH, `query is at most ${MAX_QUERY_LENGTH} characters`)
  .superRefine((q, ctx) => {
    try {
      parseMonitorQuery(q);
    } catch (err) {
      if (!(err instanceof MonitorQueryError)) throw err;
      ctx.addIssue({ code: 'custom', message: `invalid monitor query: ${err.message}` });
    }
  });

/** GraphQL sends an omitted nullable input field as null; zod's optional means undefined. */
export const nullsAsUndefined = (value: unknown): unknown => {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== null) out[k] = v;
  return out;
};

const seconds = (what: string, max: number) =>
  z
    .number({ message: `${what} must be a number of seconds` })
    .int(`${what} must be a whole number of seconds`)
    .min(0, `${what} must be between 0 and ${max} seconds`)
    .max(max, `${what} must be between 0 and ${max} seconds`);

const resourceList = (what: string) =>
  z.array(z.string().trim().min(1, `${what} entries must not be empty`).max(500, `${what} entries are at most 500 characters`)).max(1000, `${what} holds at most 1000 resources`);

const monitorIdSchema = z.object({
  id: z.string().trim().min(1, 'monitor id must not be empty'),
  // Stored group names are normalized (sorted tags); names given here are compared the same way.
  groups: z.array(z.string().trim().min(1, 'group names must not be empty').transform(normalizeGroup)).max(100, 'groups lists at most 100 group names').default([]),
});

export const monitorRuleOptionsSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      query: monitorQuerySchema.optional(),
      monitorIds: z.array(monitorIdSchema).min(1, 'monitorIds must list at least one monitor').max(50, 'monitorIds lists at most 50 monitors').optional(),
      duration: seconds('duration', MAX_WINDOW_SECONDS).default(0),
      warmup: seconds('warmup', MAX_WINDOW_SECONDS).default(0),
      failOnNoData: z.boolean().default(true),
      failOnNoGroupsFound: z.boolean().default(false),
    })
    .strict()
    .superRefine((o, ctx) => {
      if (o.query !== undefined && o.monitorIds !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['monitorIds'], message: 'give either query or monitorIds, not both' });
      } else if (o.query === undefined && o.monitorIds === undefined) {
        ctx.addIssue({ code: 'custom', path: ['query'], message: 'a monitor rule needs a query or monitorIds' });
      }
    }),
);
export type MonitorRuleOptions = z.output<typeof monitorRuleOptionsSchema>;

export const fddRuleOptionsSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      duration: seconds('duration', MAX_WINDOW_SECONDS).default(900),
      excludedResources: resourceList('excludedResources').optional(),
      allowedResources: resourceList('allowedResources').optional(),
      alpha: z.number().gt(0, 'alpha must be greater than 0').max(0.2, 'alpha must be at most 0.2 (a 20% false-failure budget)').default(0.01),
      minRelativeIncrease: z.number().gt(0, 'minRelativeIncrease must be greater than 0').max(100, 'minRelativeIncrease must be at most 100 (+10000%)').default(0.5),
      newErrorTypes: z.boolean().default(true),
      onInsufficientData: z.enum(['pass', 'fail'], { message: 'onInsufficientData must be pass or fail' }).default('pass'),
    })
    .strict()
    .superRefine((o, ctx) => {
      if (o.excludedResources !== undefined && o.allowedResources !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['allowedResources'],
          message: 'give either excludedResources or allowedResources, not both',
        });
      }
    }),
);
export type FddRuleOptions = z.output<typeof fddRuleOptionsSchema>;

/** A PromQL expression that passes the lexical check (Prometheus parses it at the first check). */
const promqlSchema = (what: string) =>
  z
    .string({ message: `${what} must be a PromQL expression` })
    .trim()
    .min(1, `${what} must not be empty`)
    .max(MAX_PROMQL_LENGTH, `${what} is at most ${MAX_PROMQL_LENGTH} characters`)
    .superRefine((q, ctx) => {
      const problem = promqlProblem(q);
      if (problem) ctx.addIssue({ code: 'custom', message: `invalid PromQL: ${problem}` });
    });

const APM_METRICS = ['error_rate', 'error_count', 'hits', 'p95', 'p99'] as const;

const metricApmSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      metric: z.enum(APM_METRICS, { message: 'metric must be error_rate, error_count, hits, p95 or p99' }),
      resource: z.string().trim().min(1, 'resource must not be empty').max(500, 'resource is at most 500 characters').optional(),
      /** Seconds of traffic behind each point; default: the rule's interval. */
      window: z
        .number()
        .int('window must be a whole number of seconds')
        .min(10, 'window must be between 10 and 3600 seconds')
        .max(3600, 'window must be between 10 and 3600 seconds')
        .optional(),
      minRequests: z.number().int('minRequests must be a whole number').min(1, 'minRequests must be at least 1').max(1_000_000_000).default(1),
    })
    .strict(),
);

// ---- webhook: an external HTTP check ----

/** Headers Tollgate itself sets: they frame or route the request, so a rule may not replace them. */
const RESERVED_HEADERS = new Set([
  'host',
  'content-length',
  'content-type',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'proxy-authorization',
  'proxy-connection',
]);

export const webhookUrlSchema = z
  .string({ message: 'url is required' })
  .trim()
  .max(2048, 'url is at most 2048 characters')
  .transform((text, ctx) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: `url "${text}" is not an absolute URL such as https://hooks.example.com/check` });
      return z.NEVER;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: `url must be http or https, not ${url.protocol.replace(/:$/, '')}` });
    // A secret in the URL would be shown to every reader of the rule: headers are kept sealed.
    else if (url.username || url.password)
      ctx.addIssue({ code: 'custom', message: 'url must not hold a user name or password: send credentials in a header (headers are stored encrypted)' });
    else if (url.hash) ctx.addIssue({ code: 'custom', message: 'url must not have a #fragment (it is never sent)' });
    else return url.href;
    return z.NEVER;
  });

const webhookHeaderSchema = z
  .object({
    name: z
      .string({ message: 'header name is required' })
      .trim()
      .min(1, 'header name must not be empty')
      .max(100, 'header name is at most 100 characters')
      .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "header name may hold letters, digits and !#$%&'*+-.^_`|~ only")
      .refine((n) => !RESERVED_HEADERS.has(n.toLowerCase()), { message: 'header is set by Tollgate itself (host, content-type, content-length, and the connection headers)' }),
    /** Write-only: sealed when stored, never shown. Omitted on an update, the stored value stays. */
    value: z
      .string()
      .max(4096, 'header value is at most 4096 characters')
      .regex(/^[^\r\n\0]*$/, 'header value must not hold line breaks or NUL')
      .optional(),
  })
  .strict();

export const webhookRuleOptionsSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      url: webhookUrlSchema,
      headers: z.array(z.preprocess(nullsAsUndefined, webhookHeaderSchema)).max(20, 'headers lists at most 20 headers').default([]),
      timeout: z
        .number({ message: 'timeout must be a number of seconds' })
        .int('timeout must be a whole number of seconds')
        .min(1, 'timeout must be between 1 and 60 seconds')
        .max(60, 'timeout must be between 1 and 60 seconds')
        .default(10),
      retries: z
        .number({ message: 'retries must be a number' })
        .int('retries must be a whole number')
        .min(0, 'retries must be between 0 and 5')
        .max(5, 'retries must be between 0 and 5')
        .default(2),
      mode: z.enum(['once', 'poll'], { message: 'mode must be once or poll' }).default('once'),
      interval: z
        .number({ message: 'interval must be a number of seconds' })
        .int('interval must be a whole number of seconds')
        .min(5, 'interval must be between 5 and 3600 seconds')
        .max(3600, 'interval must be between 5 and 3600 seconds')
        .optional(),
      duration: seconds('duration', MAX_WINDOW_SECONDS).optional(),
    })
    .strict()
    .superRefine((o, ctx) => {
      const seen = new Set<string>();
      o.headers.forEach((h, i) => {
        if (seen.has(h.name.toLowerCase())) ctx.addIssue({ code: 'custom', path: ['headers', i, 'name'], message: `header ${h.name} is given twice` });
        seen.add(h.name.toLowerCase());
      });
      if (o.mode === 'poll' && !o.duration) ctx.addIssue({ code: 'custom', path: ['duration'], message: 'a poll webhook needs a duration (seconds to keep polling), 1 to 7200' });
      if (o.mode === 'once') {
        for (const key of ['interval', 'duration'] as const) {
          if (o[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${key} applies to mode poll only` });
        }
      }
    })
    .transform((o) => (o.mode === 'poll' ? { ...o, interval: o.interval ?? 60 } : o)),
);
/** As given: header values in clear. Stored rules hold them sealed (see StoredWebhookHeader in webhooks.ts). */
export type WebhookRuleOptions = z.output<typeof webhookRuleOptionsSchema>;

// ---- freeze: fails while a freeze applies ----

const calendarWindowSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      name: z.string().trim().min(1, 'name must not be empty').max(200, 'name is at most 200 characters').optional(),
      cron: z
        .string({ message: 'cron is required' })
        .trim()
        .min(1, 'cron must not be empty')
        .max(200, 'cron is at most 200 characters')
        .superRefine((cron, ctx) => {
          const problem = cronProblem(cron);
          if (problem)
            ctx.addIssue({ code: 'custom', message: `cron "${cron}" ${problem.startsWith('has') || problem.startsWith('matches') ? problem : `is invalid: ${problem}`}` });
        }),
      duration: z
        .number({ message: 'duration must be a number of seconds' })
        .int('duration must be a whole number of seconds')
        .min(60, 'duration must be between 60 seconds and 31 days (2678400)')
        .max(31 * 86_400, 'duration must be between 60 seconds and 31 days (2678400)'),
      timeZone: z
        .string({ message: 'timeZone is required: an IANA zone such as Europe/Paris or UTC' })
        .trim()
        .transform((zone, ctx) => {
          const canonical = canonicalTimeZone(zone);
          if (canonical) return canonical;
          ctx.addIssue({ code: 'custom', message: `timeZone "${zone}" is not an IANA time zone such as Europe/Paris, America/New_York or UTC` });
          return z.NEVER;
        }),
    })
    .strict(),
);

const count = (what: string, min: number) =>
  z
    .number({ message: `${what} must be a number` })
    .int(`${what} must be a whole number`)
    .min(min, `${what} must be ${min} or more`)
    .max(1000, `${what} must be at most 1000`);

export const metricRuleOptionsSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      query: promqlSchema('query').optional(),
      baselineQuery: promqlSchema('baselineQuery').optional(),
      apm: metricApmSchema.optional(),
      bound: z.string({ message: 'bound is required, e.g. "<= 0.02" or "<= +10%"' }).transform((text, ctx) => {
        const b = parseBound(text);
        if (typeof b !== 'string') return formatBound(b);
        ctx.addIssue({ code: 'custom', message: b });
        return z.NEVER;
      }),
      margin: z.number({ message: 'margin must be a number' }).min(0, 'margin must be 0 or more').finite().optional(),
      duration: seconds('duration', MAX_WINDOW_SECONDS).default(0),
      warmup: seconds('warmup', MAX_WINDOW_SECONDS).default(0),
      interval: z
        .number({ message: 'interval must be a number of seconds' })
        .int('interval must be a whole number of seconds')
        .min(10, 'interval must be between 10 and 3600 seconds')
        .max(3600, 'interval must be between 10 and 3600 seconds')
        .default(60),
      failureLimit: count('failureLimit', -1).default(0),
      consecutiveSuccessLimit: count('consecutiveSuccessLimit', 0).default(0),
      failOnNoData: z.boolean().default(true),
    })
    .strict()
    .superRefine((o, ctx) => {
      const issue = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: [field], message });
      const relative = isRelativeBound(o.bound);
      if (o.query !== undefined && o.apm !== undefined) issue('apm', 'give either query (PromQL) or apm, not both');
      else if (o.query === undefined && o.apm === undefined) issue('query', 'a metric rule needs a PromQL query or an apm metric');
      if (o.baselineQuery !== undefined && o.query === undefined)
        issue('baselineQuery', 'baselineQuery goes with a PromQL query; an apm metric is compared with the other versions by itself');
      else if (o.baselineQuery !== undefined && !relative) issue('baselineQuery', 'baselineQuery is only read with a relative bound such as "<= +10%"');
      if (o.margin !== undefined && !relative) issue('margin', 'margin widens a relative bound such as "<= +10%"; an absolute bound is already exact');
      if (relative && o.query !== undefined && o.baselineQuery === undefined) {
        const problem = derivedBaselineProblem(o.query);
        if (problem) issue('query', problem);
      }
      const points = pointCount(o.duration, o.interval);
      if (points > MAX_METRIC_POINTS) {
        let enough = o.interval;
        while (pointCount(o.duration, enough) > MAX_METRIC_POINTS) enough++;
        issue(
          'interval',
          `measuring ${o.duration} s every ${o.interval} s takes ${points} points; a metric rule takes at most ${MAX_METRIC_POINTS}: use an interval of at least ${enough} s`,
        );
      }
      if (o.failureLimit === -1 && o.consecutiveSuccessLimit === 0)
        issue('failureLimit', 'failureLimit -1 counts no failure, so the rule needs consecutiveSuccessLimit (> 0) to decide');
      else if (o.failureLimit >= points)
        issue('failureLimit', `failureLimit ${o.failureLimit} tolerates a failure at every one of the window's ${points} point(s): the rule could never fail`);
      if (o.consecutiveSuccessLimit > points)
        issue('consecutiveSuccessLimit', `the window has ${points} point(s); ${o.consecutiveSuccessLimit} consecutive successes can never happen`);
    })
    // Stored as evaluated: an APM point covers the interval unless told otherwise.
    .transform((o) => (o.apm ? { ...o, apm: { ...o.apm, window: o.apm.window ?? o.interval } } : o)),
);
export type MetricRuleOptions = z.output<typeof metricRuleOptionsSchema>;

/** Why a metric rule cannot run without the evaluation's version (null: it can). */
export function whyMetricNeedsVersion(o: MetricRuleOptions): string | null {
  if (usesPlaceholder(o.query, 'version') || usesPlaceholder(o.baselineQuery, 'version')) return 'its query matches {{version}}';
  if (o.apm && isRelativeBound(o.bound)) return 'it compares the version with the others';
  return null;
}
export const freezeRuleOptionsSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      calendars: z.array(calendarWindowSchema).max(20, 'calendars lists at most 20 windows').default([]),
      adHoc: z.boolean().default(true),
      incidentQuery: monitorQuerySchema.optional(),
      duration: seconds('duration', MAX_WINDOW_SECONDS).default(0),
    })
    .strict()
    .superRefine((o, ctx) => {
      if (o.calendars.length === 0 && !o.adHoc && o.incidentQuery === undefined) {
        ctx.addIssue({ code: 'custom', path: ['adHoc'], message: 'a freeze rule needs something to follow: calendars, adHoc or an incidentQuery' });
      }
    }),
);
export type FreezeRuleOptions = z.output<typeof freezeRuleOptionsSchema>;

export type TypedRuleOptions =
  | { type: 'monitor'; options: MonitorRuleOptions }
  | { type: 'faulty_deployment_detection'; options: FddRuleOptions }
  | { type: 'metric'; options: MetricRuleOptions }
  | { type: 'webhook'; options: WebhookRuleOptions }
  | { type: 'freeze'; options: FreezeRuleOptions };

/**
 * `{ monitor: {...} }`, `{ faultyDeploymentDetection: {...} }`, `{ metric: {...} }`,
 * `{ webhook: {...} }` or `{ freeze: {...} }`: exactly one key, as the GraphQL `@oneOf` input
 * says. Parsed into the rule's type and its options.
 */
export const ruleOptionsInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      monitor: monitorRuleOptionsSchema.optional(),
      faultyDeploymentDetection: fddRuleOptionsSchema.optional(),
      metric: metricRuleOptionsSchema.optional(),
      webhook: webhookRuleOptionsSchema.optional(),
      freeze: freezeRuleOptionsSchema.optional(),
    })
    .strict()
    .superRefine((o, ctx) => {
      const given = Object.values(o).filter((v) => v !== undefined).length;
      if (given !== 1) {
        ctx.addIssue({
          code: 'custom',
          path: [],
          message: 'give exactly one of monitor, faultyDeploymentDetection, metric, webhook or freeze',
        });
      }
    })
    .transform((o): TypedRuleOptions => {
      if (o.monitor !== undefined) return { type: 'monitor', options: o.monitor };
      if (o.metric !== undefined) return { type: 'metric', options: o.metric };
      if (o.webhook !== undefined) return { type: 'webhook', options: o.webhook };
      if (o.freeze !== undefined) return { type: 'freeze', options: o.freeze };
      return { type: 'faulty_deployment_detection', options: o.faultyDeploymentDetection! };
    }),
);

/** The options of a faulty-deployment-detection rule given none. */
export const FDD_DEFAULTS: FddRuleOptions = fddRuleOptionsSchema.parse({});
