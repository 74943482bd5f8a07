import { z } from 'zod';
import { MAX_QUERY_LENGTH, MonitorQueryError, normalizeGroup, parseMonitorQuery } from './monitorQuery.ts';

/**
 * The options of each rule type, validated and defaulted here once for every entry point
 * (GraphQL, REST, gates-as-code). Stored rules hold the parsed output, so a rule read back
 * always shows every option it is evaluated with.
 */

export const MAX_WINDOW_SECONDS = 7200;

/** A monitor search query that parses; the parser's message says where it does not. */
export const monitorQuerySchema = z
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
  z
    .array(z.string().trim().min(1, `${what} entries must not be empty`).max(500, `${what} entries are at most 500 characters`))
    .max(1000, `${what} holds at most 1000 resources`);

export const monitorIdSchema = z.object({
  id: z.string().trim().min(1, 'monitor id must not be empty'),
  // Stored group names are normalized (sorted tags); names given here are compared the same way.
  groups: z
    .array(z.string().trim().min(1, 'group names must not be empty').transform(normalizeGroup))
    .max(100, 'groups lists at most 100 group names')
    .default([]),
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
      alpha: z
        .number()
        .gt(0, 'alpha must be greater than 0')
        .max(0.2, 'alpha must be at most 0.2 (a 20% false-failure budget)')
        .default(0.01),
      minRelativeIncrease: z
        .number()
        .gt(0, 'minRelativeIncrease must be greater than 0')
        .max(100, 'minRelativeIncrease must be at most 100 (+10000%)')
        .default(0.5),
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

export type TypedRuleOptions =
  | { type: 'monitor'; options: MonitorRuleOptions }
  | { type: 'faulty_deployment_detection'; options: FddRuleOptions };

/**
 * `{ monitor: {...} }` or `{ faultyDeploymentDetection: {...} }`: exactly one key, as the
 * GraphQL `@oneOf` input says. Parsed into the rule's type and its options.
 */
export const ruleOptionsInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      monitor: monitorRuleOptionsSchema.optional(),
      faultyDeploymentDetection: fddRuleOptionsSchema.optional(),
    })
    .strict()
    .superRefine((o, ctx) => {
      const given = Object.values(o).filter((v) => v !== undefined).length;
      if (given !== 1) {
        ctx.addIssue({
          code: 'custom',
          path: [],
          message: 'give exactly one of monitor or faultyDeploymentDetection',
        });
      }
    })
    .transform((o): TypedRuleOptions =>
      o.monitor !== undefined
        ? { type: 'monitor', options: o.monitor }
        : { type: 'faulty_deployment_detection', options: o.faultyDeploymentDetection! },
    ),
);

/** The options of a faulty-deployment-detection rule given none. */
export const FDD_DEFAULTS: FddRuleOptions = fddRuleOptionsSchema.parse({});
