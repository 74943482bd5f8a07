import type { RuleRow } from '../db/gates.ts';
import { RULE_TYPES, type RuleType as RuleTypeValue } from '../db/schema.ts';
import { createRule, deleteRule, getRule, ruleInputSchema, updateRule, updateRuleInputSchema } from '../domain/gates.ts';
import type { TypedRuleOptions } from '../domain/ruleOptions.ts';
import { publicRuleOptions } from '../domain/ruleStorage.ts';
import type { PublicWebhookOptions } from '../domain/webhooks.ts';
import { builder } from './builder.ts';
import { ApmMetric } from './monitor.ts';

/** What each rule type judges; every type of RULE_TYPES needs one (the compiler says so). */
const RULE_TYPE_DESCRIPTIONS: Record<RuleTypeValue, string> = {
  monitor: 'The states of a set of monitors over a window.',
  faulty_deployment_detection: "The new version's error rate and error types against the baseline's.",
  metric: 'A PromQL or APM metric against an absolute bound or the baseline.',
  webhook: 'An external HTTP check: 2xx passes, anything else fails.',
  freeze: 'Fails while a freeze applies: calendar windows, ad-hoc freezes, incidents.',
};

/** One GraphQL value per rule type, named in capitals (MONITOR for monitor). */
export const RuleType = builder.enumType('RuleType', {
  values: Object.fromEntries(RULE_TYPES.map((value) => [value.toUpperCase(), { value, description: RULE_TYPE_DESCRIPTIONS[value] }])) as Record<
    Uppercase<RuleTypeValue>,
    { value: RuleTypeValue; description: string }
  >,
});

const WebhookMode = builder.enumType('WebhookMode', {
  values: {
    ONCE: { value: 'once', description: 'One call (with its retries).' },
    POLL: { value: 'poll', description: 'A call every interval until the window ends; passes only if every call passed.' },
  } as const,
});

const InsufficientDataPolicy = builder.enumType('InsufficientDataPolicy', {
  values: { PASS: { value: 'pass' }, FAIL: { value: 'fail' } } as const,
});

// ---- output: options typed per rule type ----

const MonitorRef = builder.objectRef<{ id: string; groups: string[] }>('MonitorRef').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    groups: t.exposeStringList('groups', { description: 'Exact group names; empty means every group.' }),
  }),
});

type Typed<T extends TypedRuleOptions['type']> = Extract<TypedRuleOptions, { type: T }>;

const MonitorRuleOptionsRef = builder.objectRef<Typed<'monitor'>>('MonitorRuleOptions').implement({
  fields: (t) => ({
    query: t.string({ nullable: true, description: 'Monitor search query.', resolve: ({ options }) => options.query ?? null }),
    monitorIds: t.field({ type: [MonitorRef], nullable: true, resolve: ({ options }) => options.monitorIds ?? null }),
    duration: t.int({ description: 'Window length in seconds; 0 checks once.', resolve: ({ options }) => options.duration }),
    warmup: t.int({ description: 'Seconds to wait after the start before checking.', resolve: ({ options }) => options.warmup }),
    failOnNoData: t.boolean({ resolve: ({ options }) => options.failOnNoData }),
    failOnNoGroupsFound: t.boolean({ resolve: ({ options }) => options.failOnNoGroupsFound }),
  }),
});

const FddRuleOptionsRef = builder.objectRef<Typed<'faulty_deployment_detection'>>('FddRuleOptions').implement({
  fields: (t) => ({
    duration: t.int({ description: 'Analysis window in seconds.', resolve: ({ options }) => options.duration }),
    excludedResources: t.stringList({ nullable: true, resolve: ({ options }) => options.excludedResources ?? null }),
    allowedResources: t.stringList({ nullable: true, resolve: ({ options }) => options.allowedResources ?? null }),
    alpha: t.float({ description: 'False-failure budget for the whole rule.', resolve: ({ options }) => options.alpha }),
    minRelativeIncrease: t.float({
      description: 'Smallest error-rate increase worth failing for (0.5 = +50%).',
      resolve: ({ options }) => options.minRelativeIncrease,
    }),
    newErrorTypes: t.boolean({ resolve: ({ options }) => options.newErrorTypes }),
    onInsufficientData: t.field({ type: InsufficientDataPolicy, resolve: ({ options }) => options.onInsufficientData }),
  }),
});

type MetricApm = NonNullable<Typed<'metric'>['options']['apm']>;

const MetricApmOptionsRef = builder.objectRef<MetricApm>('MetricApmOptions').implement({
  description: "A metric of Tollgate's APM store, for the evaluation's service and env (latencies in milliseconds).",
  fields: (t) => ({
    metric: t.field({ type: ApmMetric, resolve: (a) => a.metric }),
    resource: t.string({ nullable: true, description: 'One resource (`GET /cart`); null: the whole service.', resolve: (a) => a.resource ?? null }),
    window: t.int({ description: 'Seconds of traffic behind each point.', resolve: (a) => a.window ?? 0 }),
    minRequests: t.exposeInt('minRequests', { description: 'A point with fewer requests has no data (every metric but HITS).' }),
  }),
});

const MetricRuleOptionsRef = builder.objectRef<Typed<'metric'>>('MetricRuleOptions').implement({
  fields: (t) => ({
    query: t.string({ nullable: true, description: 'PromQL, with the placeholders {{version}}, {{service}}, {{env}}.', resolve: ({ options }) => options.query ?? null }),
    baselineQuery: t.string({ nullable: true, description: 'PromQL of the baseline; null: derived from query.', resolve: ({ options }) => options.baselineQuery ?? null }),
    apm: t.field({ type: MetricApmOptionsRef, nullable: true, resolve: ({ options }) => options.apm ?? null }),
    bound: t.string({ description: 'Absolute (`<= 0.02`) or relative to the baseline (`<= +10%`).', resolve: ({ options }) => options.bound }),
    margin: t.float({ nullable: true, description: 'Absolute slack added to a relative bound.', resolve: ({ options }) => options.margin ?? null }),
    duration: t.int({ description: 'Window length in seconds; 0 measures once.', resolve: ({ options }) => options.duration }),
    warmup: t.int({ description: 'Seconds to wait after the start before measuring.', resolve: ({ options }) => options.warmup }),
    interval: t.int({ description: 'Seconds between points.', resolve: ({ options }) => options.interval }),
    failureLimit: t.int({ description: 'Points allowed outside the bound; -1: none counted.', resolve: ({ options }) => options.failureLimit }),
    consecutiveSuccessLimit: t.int({
      description: 'Consecutive points within the bound that pass the rule early; 0: off.',
      resolve: ({ options }) => options.consecutiveSuccessLimit,
    }),
    failOnNoData: t.boolean({ description: 'A point without data counts as outside the bound.', resolve: ({ options }) => options.failOnNoData }),
  }),
});

const WebhookHeader = builder.objectRef<{ name: string }>('WebhookHeader').implement({
  description: 'A header sent with each call. Its value is a secret: stored encrypted, never shown.',
  fields: (t) => ({ name: t.exposeString('name') }),
});

type PublicTyped<T extends TypedRuleOptions['type']> = T extends 'webhook' ? { type: 'webhook'; options: PublicWebhookOptions } : Typed<T>;

const WebhookRuleOptionsRef = builder.objectRef<PublicTyped<'webhook'>>('WebhookRuleOptions').implement({
  fields: (t) => ({
    url: t.string({ description: 'Where the call is POSTed; its host is on TOLLGATE_WEBHOOK_ALLOWED_HOSTS.', resolve: ({ options }) => options.url }),
    headers: t.field({ type: [WebhookHeader], description: 'Header names only: values are write-only.', resolve: ({ options }) => options.headers }),
    timeout: t.int({ description: 'Seconds one try may take.', resolve: ({ options }) => options.timeout }),
    retries: t.int({ description: 'Tries after the first when a call gets no definite answer (no answer, 408, 425, 429, 5xx).', resolve: ({ options }) => options.retries }),
    mode: t.field({ type: WebhookMode, resolve: ({ options }) => options.mode }),
    // Non-null and 0 in ONCE mode, so a client's fragments on several option types agree on the fields' types.
    interval: t.int({ description: 'POLL: seconds between calls; 0 in ONCE mode.', resolve: ({ options }) => options.interval ?? 0 }),
    duration: t.int({ description: 'POLL: seconds to keep calling; 0 in ONCE mode.', resolve: ({ options }) => options.duration ?? 0 }),
  }),
});

const FreezeCalendar = builder.objectRef<Typed<'freeze'>['options']['calendars'][number]>('FreezeCalendar').implement({
  description: 'A recurring freeze window: opens at each time the cron expression names on the wall clock of timeZone, for duration seconds.',
  fields: (t) => ({
    name: t.exposeString('name', { nullable: true }),
    cron: t.exposeString('cron', { description: 'Five fields (minute hour day-of-month month day-of-week) or an @alias.' }),
    duration: t.exposeInt('duration', { description: 'Seconds of elapsed time each window lasts.' }),
    timeZone: t.exposeString('timeZone', { description: 'IANA time zone, e.g. Europe/Paris.' }),
  }),
});

const FreezeRuleOptionsRef = builder.objectRef<Typed<'freeze'>>('FreezeRuleOptions').implement({
  fields: (t) => ({
    calendars: t.field({ type: [FreezeCalendar], resolve: ({ options }) => options.calendars }),
    adHoc: t.boolean({ description: "Ad-hoc freezes of the evaluation's environment (createFreeze) apply.", resolve: ({ options }) => options.adHoc }),
    incidentQuery: t.string({ nullable: true, description: 'Frozen while any monitor matching this query is ALERT.', resolve: ({ options }) => options.incidentQuery ?? null }),
    duration: t.int({ description: 'Seconds the rule waits for a freeze to end; 0: checks once.', resolve: ({ options }) => options.duration }),
  }),
});

export const RuleOptions = builder.unionType('RuleOptions', {
  types: [MonitorRuleOptionsRef, FddRuleOptionsRef, MetricRuleOptionsRef, WebhookRuleOptionsRef, FreezeRuleOptionsRef],
  resolveType: (value) => {
    switch (value.type) {
      case 'monitor':
        return MonitorRuleOptionsRef;
      case 'metric':
        return MetricRuleOptionsRef;
      case 'webhook':
        return WebhookRuleOptionsRef;
      case 'freeze':
        return FreezeRuleOptionsRef;
      default:
        return FddRuleOptionsRef;
    }
  },
});

type PublicTypedRuleOptions = { [T in TypedRuleOptions['type']]: PublicTyped<T> }[TypedRuleOptions['type']];

/** Stored options are plain JSON; their rule's type says which shape they have. Secrets stay out. */
export const typedOptions = (rule: Pick<RuleRow, 'type' | 'options'>) => ({ type: rule.type, options: publicRuleOptions(rule) }) as PublicTypedRuleOptions;

/** `Rule.gate` is added by gate.ts, which imports this module (one direction, no cycle). */
export const Rule = builder.objectRef<RuleRow>('Rule');

Rule.implement({
  authScopes: { 'gates:read': true },
  fields: (t) => ({
    id: t.exposeID('id'),
    gateId: t.exposeID('gateId'),
    name: t.exposeString('name'),
    type: t.field({ type: RuleType, resolve: (r) => r.type }),
    dryRun: t.exposeBoolean('dryRun', { description: 'Evaluated and recorded, never counted in the verdict.' }),
    options: t.field({ type: RuleOptions, resolve: (r) => typedOptions(r) }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    createdBy: t.exposeString('createdByName'),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    updatedBy: t.exposeString('updatedByName'),
  }),
});

// ---- input: one options input per type, exactly one given ----

const MonitorIdInput = builder.inputType('MonitorIdInput', {
  fields: (t) => ({
    id: t.id({ required: true }),
    groups: t.stringList({ description: 'Exact group names; omitted or empty means every group.' }),
  }),
});

const MonitorRuleOptionsInput = builder.inputType('MonitorRuleOptionsInput', {
  description: 'Give `query` or `monitorIds`, not both.',
  fields: (t) => ({
    query: t.string({ description: 'Monitor search query, e.g. `service:checkout env:prod`.' }),
    monitorIds: t.field({ type: [MonitorIdInput] }),
    duration: t.int({ description: 'Window length in seconds, 0–7200. Default 0: check once.' }),
    warmup: t.int({ description: 'Seconds to wait before checking, ≥ 0. Default 0.' }),
    failOnNoData: t.boolean({ description: 'Fail when a matched group is NO_DATA. Default true.' }),
    failOnNoGroupsFound: t.boolean({ description: 'Fail when the matched monitors have no groups. Default false.' }),
  }),
});

const FddRuleOptionsInput = builder.inputType('FddRuleOptionsInput', {
  description: 'Give `excludedResources` or `allowedResources`, not both.',
  fields: (t) => ({
    duration: t.int({ description: 'Analysis window in seconds, 0–7200. Default 900.' }),
    excludedResources: t.stringList({ description: 'Resources to ignore, e.g. `GET /healthz`.' }),
    allowedResources: t.stringList({ description: 'Only these resources are analysed.' }),
    alpha: t.float({ description: 'False-failure budget for the whole rule, (0, 0.2]. Default 0.01.' }),
    minRelativeIncrease: t.float({ description: 'Smallest error-rate increase worth failing for. Default 0.5 (+50%).' }),
    newErrorTypes: t.boolean({ description: 'Fail on error types the baseline never had. Default true.' }),
    onInsufficientData: t.field({ type: InsufficientDataPolicy, description: 'Verdict when traffic was too low. Default PASS.' }),
  }),
});

const MetricApmOptionsInput = builder.inputType('MetricApmOptionsInput', {
  fields: (t) => ({
    metric: t.field({ type: ApmMetric, description: 'Required.' }),
    resource: t.string({ description: 'One resource, e.g. `GET /cart`; omitted: the whole service.' }),
    window: t.int({ description: 'Seconds of traffic behind each point, 10–3600. Default: the interval.' }),
    minRequests: t.int({ description: 'A point with fewer requests has no data (every metric but HITS). Default 1.' }),
  }),
});

const MetricRuleOptionsInput = builder.inputType('MetricRuleOptionsInput', {
  description: 'Give `query` (PromQL) or `apm`, not both. See docs/rules/metric.md.',
  fields: (t) => ({
    query: t.string({ description: 'PromQL returning one value; `version="{{version}}"` matches the evaluated version.' }),
    baselineQuery: t.string({ description: 'PromQL of the baseline, for a relative bound; default: query with version!="{{version}}".' }),
    apm: t.field({ type: MetricApmOptionsInput }),
    // Required, but checked with the other options so the error names the field.
    bound: t.string({ description: 'Required. Absolute (`<= 0.02`) or relative to the baseline (`<= +10%`, `>= -5%`).' }),
    margin: t.float({ description: 'Absolute slack added to a relative bound, ≥ 0.' }),
    duration: t.int({ description: 'Window length in seconds, 0–7200. Default 0: measure once.' }),
    warmup: t.int({ description: 'Seconds to wait before measuring. Default 0.' }),
    interval: t.int({ description: 'Seconds between points, 10–3600. Default 60.' }),
    failureLimit: t.int({ description: 'Points allowed outside the bound (-1: none counted). Default 0.' }),
    consecutiveSuccessLimit: t.int({ description: 'Consecutive points within the bound that pass the rule early. Default 0: off.' }),
    failOnNoData: t.boolean({ description: 'A point without data counts as outside the bound. Default true.' }),
  }),
});

const WebhookHeaderInput = builder.inputType('WebhookHeaderInput', {
  fields: (t) => ({
    name: t.string({ required: true, description: 'e.g. Authorization. Host, Content-Type, Content-Length and the connection headers are set by Tollgate.' }),
    value: t.string({ description: 'Write-only: stored encrypted (TOLLGATE_SECRET_KEY), never shown. Omit it on an update to keep the stored value (same origin only).' }),
  }),
});

const WebhookRuleOptionsInput = builder.inputType('WebhookRuleOptionsInput', {
  description: 'POSTs the evaluation (evaluation, gate, service, env, version, rule) as JSON to url: 2xx passes, anything else fails.',
  fields: (t) => ({
    url: t.string({ required: true, description: 'http(s) URL whose host is on TOLLGATE_WEBHOOK_ALLOWED_HOSTS; no credentials in it (use a header).' }),
    headers: t.field({ type: [WebhookHeaderInput], description: 'At most 20.' }),
    timeout: t.int({ description: 'Seconds one try may take, 1–60. Default 10.' }),
    retries: t.int({ description: 'Tries after the first when a call gets no definite answer, 0–5. Default 2.' }),
    mode: t.field({ type: WebhookMode, description: 'Default ONCE.' }),
    interval: t.int({ description: 'POLL only: seconds between calls, 5–3600. Default 60.' }),
    duration: t.int({ description: 'POLL only (required): seconds to keep calling, 1–7200.' }),
  }),
});

const FreezeCalendarInput = builder.inputType('FreezeCalendarInput', {
  fields: (t) => ({
    name: t.string({ description: 'Shown in the evidence; default: the cron expression.' }),
    cron: t.string({ required: true, description: 'Five fields or an @alias, read on the wall clock of timeZone, e.g. `0 18 * * FRI`.' }),
    duration: t.int({ required: true, description: 'Seconds of elapsed time each window lasts, 60 to 2678400 (31 days).' }),
    timeZone: t.string({ required: true, description: 'IANA time zone, e.g. Europe/Paris or UTC.' }),
  }),
});

const FreezeRuleOptionsInput = builder.inputType('FreezeRuleOptionsInput', {
  description: 'Fails while a freeze applies. Give at least one source: calendars, adHoc (the default) or incidentQuery.',
  fields: (t) => ({
    calendars: t.field({ type: [FreezeCalendarInput], description: 'Recurring windows, at most 20.' }),
    adHoc: t.boolean({ description: "Ad-hoc freezes of the evaluation's environment apply (createFreeze). Default true." }),
    incidentQuery: t.string({ description: 'Monitor search query: frozen while any matching monitor is ALERT.' }),
    duration: t.int({ description: 'Seconds to wait for a freeze to end before failing, 0–7200. Default 0: check once.' }),
  }),
});

const RuleOptionsInput = builder.inputType('RuleOptionsInput', {
  isOneOf: true,
  fields: (t) => ({
    monitor: t.field({ type: MonitorRuleOptionsInput }),
    faultyDeploymentDetection: t.field({ type: FddRuleOptionsInput }),
    metric: t.field({ type: MetricRuleOptionsInput }),
    webhook: t.field({ type: WebhookRuleOptionsInput }),
    freeze: t.field({ type: FreezeRuleOptionsInput }),
  }),
});

export const RuleInput = builder.inputType('RuleInput', {
  fields: (t) => ({
    name: t.string({ required: true, description: 'Unique within its gate.' }),
    dryRun: t.boolean({ description: 'Default false.' }),
    options: t.field({ type: RuleOptionsInput, required: true }),
  }),
});

const UpdateRuleInput = builder.inputType('UpdateRuleInput', {
  description: 'Only the given fields change. The type of a rule cannot change.',
  fields: (t) => ({
    name: t.string(),
    dryRun: t.boolean(),
    options: t.field({ type: RuleOptionsInput }),
  }),
});

// ---- root fields ----

builder.queryField('rule', (t) =>
  t.field({
    type: Rule,
    nullable: true,
    authScopes: { 'gates:read': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => getRule(deps, principal, String(id)),
  }),
);

builder.mutationField('createRule', (t) =>
  t.field({
    type: Rule,
    authScopes: { 'gates:write': true },
    args: {
      gateId: t.arg.id({ required: true }),
      input: t.arg({ type: RuleInput, required: true }).validate(ruleInputSchema),
    },
    resolve: async (_root, { gateId, input }, { deps, principal }) => createRule(deps, principal, String(gateId), input),
  }),
);

builder.mutationField('updateRule', (t) =>
  t.field({
    type: Rule,
    authScopes: { 'gates:write': true },
    args: {
      id: t.arg.id({ required: true }),
      input: t.arg({ type: UpdateRuleInput, required: true }).validate(updateRuleInputSchema),
    },
    resolve: async (_root, { id, input }, { deps, principal }) => updateRule(deps, principal, String(id), input),
  }),
);

builder.mutationField('deleteRule', (t) =>
  t.id({
    authScopes: { 'gates:write': true },
    description: 'Deletes the rule and returns its id.',
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => deleteRule(deps, principal, String(id)),
  }),
);
