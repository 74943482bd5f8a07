import { createContextCache } from '@pothos/core';
import { resolveCursorConnection } from '@pothos/plugin-relay';
import DataLoader from 'dataloader';
import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import type { GateRow } from '../db/gates.ts';
import { DomainError } from '../domain/errors.ts';
import {
  boundedFilterList,
  cancelEvaluation,
  checkEvaluationFilter,
  countEvaluations,
  type EvaluationSnapshot,
  evaluateGate,
  evaluateGateInputSchema,
  evaluationStats,
  evaluationUrl,
  gateEvaluationsLimit,
  getEvaluation,
  latestEvaluationsOf,
  listEvaluations,
  MAX_GATE_EVALUATIONS,
  MAX_OVERRIDES_PER_EVALUATION,
  type OverrideView,
  overrideEvaluation,
  overrideOfEvaluation,
  overridesOfEvaluations,
  reported,
  rerunEvaluation,
  rulesOfEvaluations,
} from '../domain/evaluations.ts';
import { decidedWithoutData, passedWithoutEvidence } from '../domain/fdd.ts';
import { type FddArmView, type FddEvidenceView, type FddFaultyView, type FddNewErrorTypeView, readFddEvidence } from '../domain/fddEvidence.ts';
import type { FreezeEntry, FreezeEvidence } from '../domain/freezeEvidence.ts';
import { evaluationChanges, followEvaluation } from '../domain/live.ts';
import { type MetricEvidenceView, type MetricPointView, readMetricEvidence } from '../domain/metricEvidence.ts';
import { ruleEvaluationFor } from '../domain/ruleEvidence.ts';
import { MAX_RULE_TRANSITIONS, type RuleTransition, ruleTransitions } from '../domain/ruleTimeline.ts';
import type { WebhookCallEvidence, WebhookEvidence, WebhookTry } from '../engine/webhookRule.ts';
import { builder, CHANGES_ONLY, STARTS_WITH_STATE } from './builder.ts';
import { totalCountFields, withTotalCount } from './connections.ts';
import type { Context } from './context.ts';
import { Gate, gateLoader, SourceErrorPolicy } from './gate.ts';
import { BATCH_ONLY, childrenLoader } from './loaders.ts';
import { MonitorState } from './monitor.ts';
import { RuleInput, RuleOptions, RuleType, typedOptions } from './rule.ts';

/** An evaluation row, possibly with its rules already in hand (snapshots carry them). */
type EvaluationView = EvaluationRow & { knownRules?: RuleEvaluationRow[] };
const view = (s: EvaluationSnapshot): EvaluationView => ({ ...s.evaluation, knownRules: s.rules });

const rulesLoader = childrenLoader(
  async (ctx, ids) => rulesOfEvaluations(ctx.deps, ids),
  (r: RuleEvaluationRow) => r.evaluationId,
);

const overridesLoader = childrenLoader(
  async (ctx, ids) => overridesOfEvaluations(ctx.deps, ids),
  (o: { evaluationId: string }) => o.evaluationId,
);

const EvaluationStatus = builder.enumType('EvaluationStatus', {
  values: {
    IN_PROGRESS: { value: 'in_progress' },
    PASS: { value: 'pass' },
    FAIL: { value: 'fail' },
    CANCELED: { value: 'canceled' },
  } as const,
});

// ---- evidence, typed per rule type ----

type MonitorEvidence = {
  matchedMonitors?: Array<{ id: string; name: string; groups: number }>;
  failingGroups?: Array<{ monitorId: string; monitorName: string; group: string; state: string; since: string; url: string }>;
};

const MatchedMonitor = builder.objectRef<{ id: string; name: string; groups: number }>('MatchedMonitor').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    groups: t.exposeInt('groups', { description: 'Groups the rule judged on this monitor.' }),
  }),
});

const FailingMonitorGroup = builder
  .objectRef<{ monitorId: string; monitorName: string; group: string; state: string; since: string; url: string }>('FailingMonitorGroup')
  .implement({
    fields: (t) => ({
      monitorId: t.exposeID('monitorId'),
      monitorName: t.exposeString('monitorName'),
      group: t.exposeString('group', { description: '"*" for a monitor without groups.' }),
      state: t.field({ type: MonitorState, resolve: (g) => g.state as 'alert' }),
      since: t.field({ type: 'DateTime', resolve: (g) => new Date(g.since) }),
      url: t.exposeString('url'),
    }),
  });

const MonitorRuleEvidence = builder.objectRef<MonitorEvidence>('MonitorRuleEvidence').implement({
  fields: (t) => ({
    matchedMonitors: t.field({ type: [MatchedMonitor], resolve: (e) => e.matchedMonitors ?? [] }),
    failingGroups: t.field({ type: [FailingMonitorGroup], resolve: (e) => e.failingGroups ?? [] }),
  }),
});

// Counts are Float: a day's requests of a busy service can pass GraphQL Int's 32 bits.
const FddArm = builder.objectRef<FddArmView>('FddArm').implement({
  description: 'Requests and errors of one side (canary or baseline) of a test.',
  fields: (t) => ({
    requests: t.exposeFloat('requests', { nullable: true, description: 'A whole number.' }),
    errors: t.exposeFloat('errors', { nullable: true, description: 'A whole number.' }),
    errorRate: t.exposeFloat('errorRate', { nullable: true, description: 'errors / requests, 0 to 1.' }),
  }),
});

const FddTestScope = builder.enumType('FddTestScope', {
  values: {
    RESOURCE: { value: 'resource', description: 'One resource (endpoint), or "(other resources)" past the ones tested one by one.' },
    PRIMARY_TAG: { value: 'primary_tag', description: 'One primary-tag value, e.g. region:us-east-1.' },
    AGGREGATE: { value: 'aggregate', description: 'The whole service, each resource compared with itself.' },
  } as const,
});

const FddBaselineKind = builder.enumType('FddBaselineKind', {
  values: {
    CONCURRENT: { value: 'concurrent', description: 'Other versions serving traffic at the same time.' },
    LOOKBACK: { value: 'lookback', description: 'Other versions in the hour before the evaluation started (no concurrent traffic).' },
  } as const,
});

const FddFaultyResource = builder.objectRef<FddFaultyView>('FddFaultyResource').implement({
  description: 'A test whose evidence reached its threshold: the canary is worse there.',
  fields: (t) => ({
    scope: t.field({ type: FddTestScope, nullable: true, resolve: (f) => f.scope }),
    name: t.exposeString('name', { description: 'The resource, "(all resources)", or the primary-tag value.' }),
    canary: t.field({ type: FddArm, resolve: (f) => f.canary }),
    baseline: t.field({ type: FddArm, resolve: (f) => f.baseline }),
    eValue: t.exposeFloat('eValue', { nullable: true, description: 'The evidence against "no worse than the baseline"; the test fails at threshold.' }),
    threshold: t.exposeFloat('threshold', { nullable: true, description: '1 / the share of alpha this test was given.' }),
    jointly: t.exposeBoolean('jointly', { description: "True when it failed with the family's joint evidence (familyEValue), not past its own threshold alone." }),
  }),
});

const FddNewErrorType = builder.objectRef<FddNewErrorTypeView>('FddNewErrorType').implement({
  description: 'An error type the canary raised and the baseline never did (over the last day), often enough to count.',
  fields: (t) => ({
    errorType: t.exposeString('errorType'),
    count: t.exposeFloat('count', { nullable: true, description: 'Times the canary raised it (a whole number).' }),
    resources: t.exposeStringList('resources', { description: 'Resources it was raised on.' }),
    sampleMessage: t.exposeString('sampleMessage', { nullable: true }),
    eValue: t.exposeFloat('eValue', { nullable: true }),
    threshold: t.exposeFloat('threshold', { nullable: true }),
    jointly: t.exposeBoolean('jointly', { description: "True when it failed with the family's joint evidence, not alone." }),
  }),
});

const FddPlacebo = builder.objectRef<NonNullable<NonNullable<FddEvidenceView['clustering']>['placebo']>>('FddPlacebo').implement({
  description:
    'Placebo instances: each baseline instance (pod) compared with the others as the canary is with them, over the window so far and blocks as long in the hour before; how much more they varied than the model says.',
  fields: (t) => ({
    instances: t.exposeInt('instances', { description: 'Baseline instances in the window.' }),
    degreesOfFreedom: t.exposeInt('degreesOfFreedom', { description: 'What the figure rests on: (instances − 1) per block, window and hour before.' }),
    factor: t.exposeFloat('factor', { description: 'The figure, made an upper estimate for its degrees of freedom; the spells factor is at least this.' }),
  }),
});

const FddClustering = builder.objectRef<FddEvidenceView['clustering'] & {}>('FddClustering').implement({
  description: 'How clustered the errors were, within a time bucket and across consecutive ones; the tests discount their evidence by it.',
  fields: (t) => ({
    resources: t.exposeFloat('resources', { nullable: true, description: 'Within-bucket correlation of errors, measured per resource in the window (0: independent draws).' }),
    aggregate: t.exposeFloat('aggregate', { nullable: true, description: 'Within-bucket correlation, measured on the whole service per bucket.' }),
    spells: t.exposeFloat('spells', {
      nullable: true,
      description: "How much more the baseline's errors varied over blocks of consecutive buckets than bucket by bucket (1: no spells); the evidence is divided by it.",
    }),
    baselineDispersion: t.exposeFloat('baselineDispersion', { nullable: true, description: "Variance over mean of the baseline's errors per bucket (1: Poisson)." }),
    placebo: t.field({
      type: FddPlacebo,
      nullable: true,
      description: 'Null when spans name no instance (service.instance.id, k8s.pod.name, host.name), or the hour before has too few of them.',
      resolve: (c) => c.placebo,
    }),
  }),
});

const FddRuleEvidence = builder.objectRef<FddEvidenceView>('FddRuleEvidence').implement({
  description:
    'What a faulty deployment detection check found, as of its latest check. Fields a check did not record read null (or empty): evidence is kept as the rule version that ran wrote it.',
  fields: (t) => ({
    version: t.exposeString('version', { nullable: true, description: 'The canary version.' }),
    baseline: t.field({ type: FddBaselineKind, nullable: true, description: 'What the canary was compared with.', resolve: (e) => e.baseline }),
    baselineVersions: t.exposeStringList('baselineVersions', { description: 'The other versions that made up the baseline.' }),
    tests: t.exposeInt('tests', { nullable: true, description: 'Error-rate tests run (resources, tag values, aggregate).' }),
    alpha: t.exposeFloat('alpha', { nullable: true }),
    canaryRequests: t.exposeFloat('canaryRequests', { nullable: true, description: 'A whole number.' }),
    largestEValue: t.exposeFloat('largestEValue', { nullable: true }),
    familyEValue: t.exposeFloat('familyEValue', {
      nullable: true,
      description: "Every test's evidence together (a weighted sum); the rule also fails when it reaches familyThreshold.",
    }),
    familyThreshold: t.float({ nullable: true, description: '1 / alpha.', resolve: (e) => (e.alpha && e.alpha > 0 ? 1 / e.alpha : null) }),
    clustering: t.field({ type: FddClustering, nullable: true, resolve: (e) => e.clustering }),
    faultyResources: t.field({ type: [FddFaultyResource], resolve: (e) => e.faultyResources }),
    newErrorTypes: t.field({ type: [FddNewErrorType], resolve: (e) => e.newErrorTypes }),
    insufficientData: t.exposeBoolean('insufficientData', { description: 'The window ended without the traffic needed to detect the increase asked for.' }),
    requestsNeeded: t.exposeFloat('requestsNeeded', { nullable: true, description: 'With insufficientData: canary requests the rule needed (a whole number).' }),
    sourceErrors: t.exposeInt('sourceErrors', { nullable: true, description: 'Consecutive failed tries to read the data, when the source failed.' }),
  }),
});

const MetricSource = builder.enumType('MetricSource', {
  values: { PROMETHEUS: { value: 'prometheus' }, APM: { value: 'apm', description: "Tollgate's APM store." } } as const,
});

const MetricPointResult = builder.enumType('MetricPointResult', {
  values: {
    PASS: { value: 'pass', description: 'Within the bound.' },
    FAIL: { value: 'fail', description: 'Outside the bound: one of the points that broke it.' },
    NO_DATA: { value: 'no_data', description: 'No value (no series, NaN, too few requests); a failure when failOnNoData.' },
  } as const,
});

const MetricPointRef = builder.objectRef<MetricPointView>('MetricPoint').implement({
  description: 'One measurement of a metric rule.',
  fields: (t) => ({
    at: t.field({ type: 'DateTime', description: 'The time measured (PromQL evaluated at it; APM: the window before it).', resolve: (p) => new Date(p.at) }),
    value: t.exposeFloat('value', { nullable: true, description: 'The canary value; null without data or when infinite (see text).' }),
    text: t.exposeString('text', { description: 'The value as shown: a number, +Inf, -Inf or "no data".' }),
    baseline: t.exposeFloat('baseline', { nullable: true, description: 'Relative bounds: the baseline at the same time.' }),
    limit: t.exposeFloat('limit', { nullable: true, description: 'The limit the value was held to (the bound applied to the baseline).' }),
    result: t.field({ type: MetricPointResult, resolve: (p) => p.result }),
    note: t.exposeString('note', { nullable: true, description: 'Why the point had no data.' }),
    requests: t.exposeFloat('requests', { nullable: true, description: 'APM: requests behind the value (a whole number).' }),
    baselineRequests: t.exposeFloat('baselineRequests', { nullable: true, description: 'APM: requests behind the baseline.' }),
  }),
});

const MetricRuleEvidence = builder.objectRef<MetricEvidenceView>('MetricRuleEvidence').implement({
  description: 'Every point a metric rule measured, the bound and which points broke it, as of its latest check.',
  fields: (t) => ({
    source: t.field({ type: MetricSource, nullable: true, resolve: (e) => e.source }),
    query: t.exposeString('query', { nullable: true, description: 'The PromQL sent, placeholders filled.' }),
    baselineQuery: t.exposeString('baselineQuery', { nullable: true, description: 'The PromQL sent for the baseline.' }),
    apmMetric: t.exposeString('apmMetric', { nullable: true, description: 'APM: error_rate, error_count, hits, p95 or p99.' }),
    resource: t.exposeString('resource', { nullable: true }),
    window: t.exposeInt('window', { nullable: true, description: 'APM: seconds of traffic behind each point.' }),
    version: t.exposeString('version', { nullable: true, description: 'APM: the version measured; null: the whole service.' }),
    baselineVersions: t.exposeStringList('baselineVersions', { description: 'APM, relative bounds: the other versions that made up the baseline.' }),
    bound: t.exposeString('bound', { nullable: true }),
    margin: t.exposeFloat('margin', { nullable: true }),
    failureLimit: t.exposeInt('failureLimit', { nullable: true }),
    consecutiveSuccessLimit: t.exposeInt('consecutiveSuccessLimit', { nullable: true }),
    planned: t.exposeInt('planned', { nullable: true, description: 'Points in the window.' }),
    failures: t.exposeInt('failures', { nullable: true, description: 'Points outside the bound.' }),
    noData: t.exposeInt('noData', { nullable: true, description: 'Points without data.' }),
    points: t.field({ type: [MetricPointRef], description: 'Every point measured, oldest first.', resolve: (e) => e.points }),
    sourceErrors: t.exposeInt('sourceErrors', { nullable: true, description: 'Consecutive failed tries to read the source, when it failed.' }),
  }),
});

// Evidence lists stay shallow (scalars inside), so a page of evaluations with every evidence field stays within the query cost limit.
const describeTry = (a: WebhookTry) => (a.status !== null ? `HTTP ${a.status}` : (a.error ?? 'no answer'));

const WebhookCall = builder.objectRef<WebhookCallEvidence>('WebhookCall').implement({
  description: 'One call of a webhook rule, with its retries.',
  fields: (t) => ({
    call: t.exposeInt('call', { description: '1 for the first call.' }),
    at: t.field({ type: 'DateTime', description: 'When its first try started.', resolve: (c) => new Date(c.at) }),
    passed: t.exposeBoolean('passed'),
    status: t.exposeInt('status', { nullable: true, description: "The last try's HTTP status; null when it got no answer." }),
    error: t.exposeString('error', { nullable: true, description: 'Why the last try got no answer (refused, timeout…).' }),
    body: t.exposeString('body', { nullable: true, description: 'The first KB of the answer.' }),
    bodyTruncated: t.boolean({ resolve: (c) => c.bodyTruncated === true }),
    location: t.string({ nullable: true, description: "A redirect's target: redirects are not followed.", resolve: (c) => c.location ?? null }),
    attempts: t.int({ description: 'Tries made for this call.', resolve: (c) => (Array.isArray(c.tries) ? c.tries.length : 1) }),
    earlierAttempts: t.stringList({
      description: 'What each try before the last got, oldest first: "HTTP 503", "no answer within 10000 ms".',
      resolve: (c) => (Array.isArray(c.tries) ? c.tries.slice(0, -1).map(describeTry) : []),
    }),
  }),
});

const WebhookRuleEvidence = builder.objectRef<WebhookEvidence>('WebhookRuleEvidence').implement({
  fields: (t) => ({
    url: t.exposeString('url'),
    passedCalls: t.int({ resolve: (e) => e.passedCalls ?? 0 }),
    calls: t.field({ type: [WebhookCall], description: 'The latest calls, oldest first.', resolve: (e) => (Array.isArray(e.calls) ? e.calls : []) }),
    refused: t.string({ nullable: true, description: 'Why the rule failed without calling.', resolve: (e) => e.refused ?? null }),
  }),
});

const FreezeKind = builder.enumType('FreezeKind', {
  values: {
    CALENDAR: { value: 'calendar', description: "A window of the rule's calendars." },
    AD_HOC: { value: 'ad_hoc', description: 'A freeze set through the API (createFreeze).' },
    INCIDENT: { value: 'incident', description: 'A monitor matching the incidentQuery in ALERT.' },
  } as const,
});

const FreezeFound = builder.objectRef<FreezeEntry & { active: boolean }>('FreezeFound').implement({
  description: 'A freeze a freeze rule found.',
  fields: (t) => ({
    active: t.exposeBoolean('active', { description: 'In force at the latest check; false: found at an earlier check and over since.' }),
    kind: t.field({ type: FreezeKind, resolve: (f) => f.kind }),
    name: t.exposeString('name', { description: "A calendar window's name (or cron), an ad-hoc freeze's reason, an incident monitor's name." }),
    startedAt: t.field({ type: 'DateTime', nullable: true, resolve: (f) => (f.startedAt ? new Date(f.startedAt) : null) }),
    endsAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'null: until lifted, or until the monitor recovers.',
      resolve: (f) => (f.endsAt ? new Date(f.endsAt) : null),
    }),
    endsAtLeast: t.boolean({ description: 'Calendar windows chaining on: it ends at endsAt at the earliest.', resolve: (f) => f.endsAtLeast === true }),
    cron: t.string({ nullable: true, resolve: (f) => f.cron ?? null }),
    timeZone: t.string({ nullable: true, resolve: (f) => f.timeZone ?? null }),
    freezeId: t.id({ nullable: true, resolve: (f) => f.freezeId ?? null }),
    setBy: t.string({ nullable: true, description: 'The API key that set an ad-hoc freeze.', resolve: (f) => f.setBy ?? null }),
    service: t.string({ nullable: true, resolve: (f) => f.service ?? null }),
    monitorId: t.id({ nullable: true, resolve: (f) => f.monitorId ?? null }),
    group: t.string({ nullable: true, resolve: (f) => f.group ?? null }),
    url: t.string({ nullable: true, resolve: (f) => f.url ?? null }),
  }),
});

const FreezeRuleEvidence = builder.objectRef<FreezeEvidence>('FreezeRuleEvidence').implement({
  fields: (t) => ({
    freezes: t.field({
      type: [FreezeFound],
      description: 'The freezes in force at the latest check (active), then those found earlier and over since.',
      resolve: (e) => [
        ...(Array.isArray(e.active) ? e.active : []).map((f) => ({ ...f, active: true })),
        ...(Array.isArray(e.waitedFor) ? e.waitedFor : []).map((f) => ({ ...f, active: false })),
      ],
    }),
  }),
});

const RuleMonitorTransition = builder.objectRef<RuleTransition>('RuleMonitorTransition').implement({
  description: 'A state change of a monitor the rule matched, while the rule watched.',
  fields: (t) => ({
    monitorId: t.exposeID('monitorId'),
    monitorName: t.exposeString('monitorName'),
    group: t.exposeString('group', { description: '"*" for a monitor without groups.' }),
    from: t.field({ type: MonitorState, nullable: true, resolve: (x) => x.from }),
    to: t.field({ type: MonitorState, resolve: (x) => x.to }),
    at: t.expose('at', { type: 'DateTime' }),
    message: t.exposeString('message', { nullable: true }),
  }),
});

const RuleEvaluation = builder.objectRef<RuleEvaluationRow>('RuleEvaluation').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    ruleId: t.exposeID('ruleId', { nullable: true, description: 'The stored rule; null for just-in-time rules.' }),
    name: t.exposeString('name'),
    type: t.field({ type: RuleType, resolve: (r) => r.type }),
    dryRun: t.exposeBoolean('dryRun', { description: 'Recorded with its real status, never counted in the verdict.' }),
    status: t.field({ type: EvaluationStatus, resolve: (r) => r.status }),
    reason: t.exposeString('reason', { nullable: true, description: 'One sentence: why the rule stands where it does.' }),
    evidence: t.field({
      type: MonitorRuleEvidence,
      nullable: true,
      description: 'Structured evidence for monitor rules; see evidenceJson for every type.',
      resolve: (r) => (r.type === 'monitor' && r.evidence ? (r.evidence as MonitorEvidence) : null),
    }),
    fddEvidence: t.field({
      type: FddRuleEvidence,
      nullable: true,
      description: 'Structured evidence for faulty deployment detection rules (null for other types and before the first check).',
      // r is the rule as the reader may see it (Evaluation.rules applies the per-reader view).
      resolve: (r) => (r.type === 'faulty_deployment_detection' ? readFddEvidence(r.evidence) : null),
    }),
    metricEvidence: t.field({
      type: MetricRuleEvidence,
      nullable: true,
      description: 'Structured evidence for metric rules (null for other types and before the first check).',
      // r is the rule as the reader may see it (Evaluation.rules applies the per-reader view).
      resolve: (r) => (r.type === 'metric' ? readMetricEvidence(r.evidence) : null),
    }),
    webhookEvidence: t.field({
      type: WebhookRuleEvidence,
      nullable: true,
      description: 'Structured evidence for webhook rules (null for other types and before the first call).',
      resolve: (r) => (r.type === 'webhook' && r.evidence ? (r.evidence as WebhookEvidence) : null),
    }),
    freezeEvidence: t.field({
      type: FreezeRuleEvidence,
      nullable: true,
      description: 'Structured evidence for freeze rules (null for other types and before the first check).',
      // r is the rule as the reader may see it (Evaluation.rules applies the per-reader view).
      resolve: (r) => (r.type === 'freeze' && r.evidence ? (r.evidence as FreezeEvidence) : null),
    }),
    evidenceJson: t.field({ type: 'JSON', nullable: true, resolve: (r) => r.evidence ?? null }),
    monitorTransitions: t.field({
      type: [RuleMonitorTransition],
      description:
        'Monitor rules: state changes of the monitors it matched from its start to the end of its window (or its finish), oldest first; only monitors the caller may see. Empty for other rule types.',
      args: { first: t.arg.int({ defaultValue: 100, description: `1–${MAX_RULE_TRANSITIONS}.` }) },
      // r is the rule as the reader may see it (Evaluation.rules applies the per-reader view).
      resolve: async (r, args, ctx) => ruleTransitions(ctx.deps, ctx.principal, r, args.first ?? 100),
    }),
    insufficientData: t.boolean({
      description:
        'True when the rule ended without the traffic it needed to decide, so its status is what onInsufficientData says, not a finding about the version (faulty deployment detection).',
      resolve: (r) => decidedWithoutData(r),
    }),
    options: t.field({ type: RuleOptions, description: 'The options as evaluated (snapshotted at trigger).', resolve: (r) => typedOptions(r) }),
    startedAt: t.expose('startedAt', { type: 'DateTime' }),
    windowStartsAt: t.expose('windowStartsAt', { type: 'DateTime', description: 'Start plus warmup.' }),
    windowEndsAt: t.expose('windowEndsAt', { type: 'DateTime' }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true }),
    consecutiveSourceErrors: t.exposeInt('consecutiveErrors'),
  }),
});

const OverrideVerdict = builder.enumType('OverrideVerdict', {
  values: { PASS: { value: 'pass' }, FAIL: { value: 'fail' } } as const,
});

const OverrideActor = builder.objectRef<{ id: string; name: string }>('OverrideActor').implement({
  description: 'The API key that overrode an evaluation, as recorded then (its name may have changed since).',
  fields: (t) => ({ id: t.exposeID('id'), name: t.exposeString('name') }),
});

const EvaluationOverride = builder.objectRef<OverrideView>('EvaluationOverride').implement({
  description: "A person's verdict in place of the gate's: what the deploy is told. The real status and evidence stay.",
  fields: (t) => ({
    verdict: t.field({ type: OverrideVerdict, resolve: (o) => o.verdict }),
    reason: t.exposeString('reason'),
    at: t.expose('at', { type: 'DateTime' }),
    by: t.field({ type: OverrideActor, description: 'The API key that overrode it.', resolve: (o) => o.by }),
    replaced: t.field({
      type: EvaluationStatus,
      description: 'The reported status it replaced (an earlier override, when overridden again).',
      resolve: (o) => o.replaced,
    }),
  }),
});

const Evaluation = builder.objectRef<EvaluationView>('Evaluation');

Evaluation.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    gate: t.field({
      type: Gate,
      nullable: true,
      description: 'The stored gate evaluated; null for just-in-time evaluations or a deleted gate.',
      resolve: (e, _args, ctx) =>
        e.gateId
          ? gateLoader(ctx)
              .load(e.gateId)
              .catch(() => null)
          : null,
    }),
    gateId: t.exposeID('gateId', { nullable: true }),
    service: t.exposeString('service'),
    env: t.exposeString('env'),
    identifier: t.exposeString('identifier'),
    version: t.exposeString('version', { nullable: true }),
    primaryTag: t.exposeString('primaryTag', { nullable: true }),
    dryRun: t.exposeBoolean('dryRun'),
    onSourceError: t.field({ type: SourceErrorPolicy, resolve: (e) => e.onSourceError }),
    justInTime: t.exposeBoolean('justInTime'),
    status: t.field({ type: EvaluationStatus, description: 'The real verdict, dry run and override ignored.', resolve: (e) => e.status }),
    reportedStatus: t.field({
      type: EvaluationStatus,
      description: "What the deploy acts on: the override's verdict when overridden, else PASS for a decided dry-run gate, else the real status.",
      resolve: (e) => reported(e),
    }),
    override: t.field({
      type: EvaluationOverride,
      nullable: true,
      description: 'Who overrode the verdict, when, why and what it replaced; null when nobody did.',
      resolve: (e) => overrideOfEvaluation(e),
    }),
    overrides: t.field({
      type: [EvaluationOverride],
      description: `Every override of the evaluation, oldest first; the last is \`override\`. At most ${MAX_OVERRIDES_PER_EVALUATION}.`,
      resolve: async (e, _args, ctx) => (e.overrideStatus ? (await overridesLoader(ctx).load(e.id)).map((o) => o.override) : []),
    }),
    startedAt: t.expose('startedAt', { type: 'DateTime' }),
    decidedAt: t.expose('decidedAt', { type: 'DateTime', nullable: true, description: 'When the verdict became known.' }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true, description: 'When the last rule finished.' }),
    evaluationUrl: t.string({ resolve: (e, _a, ctx) => evaluationUrl(ctx.deps, e.id) }),
    rerunOf: t.exposeID('rerunOf', { nullable: true }),
    triggeredBy: t.exposeString('triggeredByName'),
    revision: t.exposeInt('revision', { description: 'Grows with every change; orders the snapshots of one evaluation.' }),
    passedWithoutEvidence: t.boolean({
      description:
        'True when the verdict is PASS but at least one counted rule passed only for lack of data (its insufficientData is true): "passed, nothing was found", not "passed, checked and fine". False once overridden: the verdict is then the override.',
      resolve: async (e, _a, ctx) =>
        passedWithoutEvidence(
          e,
          (e.knownRules ?? (await rulesLoader(ctx).load(e.id))).map((r) => ruleEvaluationFor(ctx.principal, e, r)),
        ),
    }),
    rules: t.field({
      type: [RuleEvaluation],
      description:
        "Each rule as the caller may see it: evidence about monitors outside the caller's environments is left out. With `status`, only the rules with one of those statuses (e.g. [FAIL] for the failing rules of a list row).",
      args: { status: t.arg({ type: [EvaluationStatus], description: 'Keep only rules with one of these statuses; all rules when omitted.' }) },
      // Every GraphQL path to a rule's reason and evidence (queries, mutations, both
      // subscriptions) comes through here, with the caller's own principal.
      resolve: async (e, args, ctx) => {
        const wanted = boundedFilterList(args.status ?? undefined, 'status');
        const rules = (e.knownRules ?? (await rulesLoader(ctx).load(e.id))).filter((r) => !wanted?.length || wanted.includes(r.status));
        return rules.map((r) => ruleEvaluationFor(ctx.principal, e, r));
      },
    }),
  }),
});

/** Per operation and per `first`: a page of gates asking for their last evaluations is one batch. */
const lastEvaluationsLoader = createContextCache((ctx: Context) => {
  const byLimit = new Map<number, DataLoader<GateRow, EvaluationRow[], string>>();
  return (limit: number) => {
    let loader = byLimit.get(limit);
    if (!loader) {
      loader = new DataLoader<GateRow, EvaluationRow[], string>(
        async (gates) => {
          // Without a cache a gate comes once per parent asking (a page of its evaluations):
          // read it once, or each copy's rows would be read again and handed to every copy.
          const unique = [...new Map(gates.map((g) => [g.id, g])).values()];
          const rows = await latestEvaluationsOf(ctx.deps, ctx.principal, unique, limit);
          return gates.map((g) => rows.filter((e) => e.gateId === g.id));
        },
        { ...BATCH_ONLY, cacheKeyFn: (g) => g.id },
      );
      byLimit.set(limit, loader);
    }
    return loader;
  };
});

builder.objectField(Gate, 'lastEvaluations', (t) =>
  t.field({
    type: [Evaluation],
    description: 'Its newest evaluations, newest first.',
    args: { first: t.arg.int({ defaultValue: 5, description: `1–${MAX_GATE_EVALUATIONS}.` }) },
    resolve: (g, args, ctx) => lastEvaluationsLoader(ctx)(gateEvaluationsLimit(args.first ?? 5)).load(g),
  }),
);

// ---- inputs ----

export const EvaluationConfigurationInput = builder.inputType('EvaluationConfigurationInput', {
  description: 'Just-in-time rules: evaluated instead of any stored gate.',
  fields: (t) => ({
    dryRun: t.boolean({ description: 'Default false.' }),
    onSourceError: t.field({ type: SourceErrorPolicy, description: 'Default FAIL.' }),
    rules: t.field({ type: [RuleInput], required: true }),
  }),
});

const EvaluateGateInput = builder.inputType('EvaluateGateInput', {
  fields: (t) => ({
    service: t.string({ required: true }),
    env: t.string({ required: true }),
    identifier: t.string({ description: 'Default `default`.' }),
    version: t.string({ description: 'Required when a faulty-deployment-detection rule is evaluated.' }),
    primaryTag: t.string({ description: 'Narrows the analysis to one primary tag value, e.g. `region:us-east-1`.' }),
    idempotencyKey: t.string({ description: 'The same key returns the evaluation it first created.' }),
    configuration: t.field({ type: EvaluationConfigurationInput }),
  }),
});

export const EvaluationFilter = builder.inputType('EvaluationFilter', {
  fields: (t) => ({
    service: t.stringList(),
    env: t.stringList(),
    identifier: t.stringList(),
    version: t.stringList(),
    status: t.field({ type: [EvaluationStatus], description: 'The real status (dry run and override ignored); see overridden.' }),
    overridden: t.boolean({ description: 'true: only overridden evaluations; false: only those not overridden.' }),
    dryRun: t.boolean(),
    gateId: t.id({ deprecationReason: 'Use gateIds, a list.' }),
    gateIds: t.idList(),
    ruleType: t.field({ type: [RuleType], description: 'Evaluations with at least one rule of one of these types.' }),
    ruleName: t.stringList({ description: 'Evaluations with at least one rule of one of these names.' }),
    startedAfter: t.field({ type: 'DateTime', description: 'Inclusive.' }),
    startedBefore: t.field({ type: 'DateTime', description: 'Exclusive.' }),
  }),
});

// ---- stats ----

const StatusCount = builder.objectRef<{ status: EvaluationRow['status']; count: number }>('StatusCount').implement({
  fields: (t) => ({ status: t.field({ type: EvaluationStatus, resolve: (r) => r.status }), count: t.exposeInt('count') }),
});
const DayStatusCount = builder.objectRef<{ day: string; status: EvaluationRow['status']; count: number }>('DayStatusCount').implement({
  fields: (t) => ({
    day: t.exposeString('day', { description: 'UTC date, YYYY-MM-DD.' }),
    status: t.field({ type: EvaluationStatus, resolve: (r) => r.status }),
    count: t.exposeInt('count'),
  }),
});
export const GateFailures = builder
  .objectRef<{ gateId: string | null; service: string; env: string; identifier: string; failures: number; evaluations: number }>('GateFailures')
  .implement({
    description: 'A gate by its id (a gate deleted and recreated under the same key is another gate); just-in-time evaluations of one key have no id.',
    fields: (t) => ({
      gateId: t.exposeID('gateId', { nullable: true }),
      service: t.exposeString('service'),
      env: t.exposeString('env'),
      identifier: t.exposeString('identifier'),
      failures: t.exposeInt('failures'),
      evaluations: t.exposeInt('evaluations'),
    }),
  });
export const RuleFailures = builder
  .objectRef<{ gateId: string | null; ruleId: string | null; service: string; env: string; identifier: string; name: string; type: string; failures: number; evaluations: number }>(
    'RuleFailures',
  )
  .implement({
    description: 'A rule: its stored id within its gate, or its name and type for just-in-time rules (gateId and ruleId null).',
    fields: (t) => ({
      gateId: t.exposeID('gateId', { nullable: true }),
      ruleId: t.exposeID('ruleId', { nullable: true, description: 'The stored rule (it may have been deleted since).' }),
      service: t.exposeString('service'),
      env: t.exposeString('env'),
      identifier: t.exposeString('identifier'),
      name: t.exposeString('name', { description: 'As in its newest evaluation of the range (a stored rule may have been renamed).' }),
      type: t.field({ type: RuleType, resolve: (r) => r.type as 'monitor' }),
      failures: t.exposeInt('failures'),
      evaluations: t.exposeInt('evaluations'),
    }),
  });
const EvaluationStats = builder.objectRef<Awaited<ReturnType<typeof evaluationStats>>>('EvaluationStats').implement({
  description: 'Real statuses (dry run ignored) over the filtered evaluations.',
  fields: (t) => ({
    total: t.exposeInt('total'),
    byStatus: t.field({ type: [StatusCount], resolve: (s) => s.byStatus }),
    byDay: t.field({ type: [DayStatusCount], resolve: (s) => s.byDay }),
    mostFailingGates: t.field({ type: [GateFailures], resolve: (s) => s.failingGates }),
    mostFailingRules: t.field({ type: [RuleFailures], resolve: (s) => s.failingRules }),
  }),
});

// ---- root fields ----

const READ = { 'gates:read': true, 'evaluations:write': true } as const;

builder.queryField('evaluation', (t) =>
  t.field({
    type: Evaluation,
    nullable: true,
    authScopes: READ,
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => {
      const snap = await getEvaluation(deps, principal, String(id));
      return snap ? view(snap) : null;
    },
  }),
);

builder.queryField('evaluations', (t) =>
  t.connection(
    {
      type: Evaluation,
      authScopes: READ,
      description: 'Newest first.',
      args: { filter: t.arg({ type: EvaluationFilter }) },
      resolve: async (_root, args, { deps, principal }) => {
        const filter = checkEvaluationFilter(args.filter);
        return withTotalCount(
          resolveCursorConnection<Promise<EvaluationView[]>>(
            { args, toCursor: (e) => e.id },
            async ({ after, before, limit, inverted }): Promise<EvaluationView[]> => listEvaluations(deps, principal, filter, { after, before, limit, inverted }),
          ),
          async () => countEvaluations(deps, principal, filter),
        );
      },
    },
    { name: 'EvaluationConnection', ...totalCountFields },
    { name: 'EvaluationEdge' },
  ),
);

builder.queryField('evaluationStats', (t) =>
  t.field({
    type: EvaluationStats,
    authScopes: READ,
    args: { filter: t.arg({ type: EvaluationFilter }), top: t.arg.int({ defaultValue: 10, description: 'Length of the most-failing lists (1–100).' }) },
    resolve: async (_root, args, { deps, principal }) => {
      const top = args.top ?? 10;
      if (top < 1 || top > 100) throw new DomainError('BAD_USER_INPUT', 'top: must be between 1 and 100', 'top');
      return evaluationStats(deps, principal, checkEvaluationFilter(args.filter), top);
    },
  }),
);

builder.mutationField('evaluateGate', (t) =>
  t.field({
    type: Evaluation,
    authScopes: { 'evaluations:write': true },
    description: 'Starts an evaluation and returns it at once (IN_PROGRESS); follow it with evaluationUpdated.',
    args: { input: t.arg({ type: EvaluateGateInput, required: true }).validate(evaluateGateInputSchema) },
    resolve: async (_root, { input }, { deps, principal }) => view(await evaluateGate(deps, principal, input)),
  }),
);

builder.mutationField('cancelEvaluation', (t) =>
  t.field({
    type: Evaluation,
    authScopes: { 'evaluations:write': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => view(await cancelEvaluation(deps, principal, String(id))),
  }),
);

builder.mutationField('rerunEvaluation', (t) =>
  t.field({
    type: Evaluation,
    authScopes: { 'evaluations:write': true },
    description: 'A new evaluation with the same inputs and rule snapshot.',
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => view(await rerunEvaluation(deps, principal, String(id))),
  }),
);

builder.mutationField('overrideEvaluation', (t) =>
  t.field({
    type: Evaluation,
    authScopes: { 'evaluations:override': true },
    description:
      'Replaces the verdict the deploy is told (reportedStatus, REST gate_status, hooks) with `verdict`, giving a reason; the real status and evidence stay. A running evaluation ends (its running rules are canceled). Overriding again replaces the override; the audit log keeps each.',
    args: {
      id: t.arg.id({ required: true }),
      verdict: t.arg({ type: OverrideVerdict, required: true }),
      reason: t.arg.string({ required: true, description: 'Why: 1–1000 characters.' }),
    },
    resolve: async (_root, { id, verdict, reason }, { deps, principal }) => view(await overrideEvaluation(deps, principal, String(id), { verdict, reason })),
  }),
);

builder.subscriptionField('evaluationUpdated', (t) =>
  t.field({
    extensions: STARTS_WITH_STATE,
    type: Evaluation,
    authScopes: READ,
    description: 'The evaluation now, then each change of it or one of its rules, in order, until it finishes.',
    args: { id: t.arg.id({ required: true }) },
    subscribe: async (_root, { id }, { deps, principal }) => followEvaluation(deps, principal, String(id)),
    resolve: view,
  }),
);

builder.subscriptionField('evaluationEvents', (t) =>
  t.field({
    extensions: CHANGES_ONLY,
    type: Evaluation,
    authScopes: READ,
    description: 'Every change of every evaluation matching the filter (status: the real status after the change).',
    args: { filter: t.arg({ type: EvaluationFilter }) },
    subscribe: (_root, args, { deps, principal }) => evaluationChanges(deps, principal, checkEvaluationFilter(args.filter)),
    resolve: view,
  }),
);
