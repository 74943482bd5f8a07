import { checkEvaluationFilter } from '../domain/evaluations.ts';
import {
  type DayCounts,
  evaluationFacets,
  evaluationInsights,
  type Facets,
  type FailureReasonGroup,
  type Insights,
  MAX_REASON_ROWS,
  type VerdictTime,
} from '../domain/insights.ts';
import { builder } from './builder.ts';
import { EvaluationFilter, GateFailures, RuleFailures } from './evaluation.ts';
import { RuleType } from './rule.ts';

const READ = { 'gates:read': true, 'evaluations:write': true } as const;

const FacetValue = builder.objectRef<{ value: string; count: number; label?: string }>('FacetValue').implement({
  fields: (t) => ({
    value: t.exposeString('value', { description: 'As EvaluationFilter takes it back (enum names for status and rule type, "true"/"false" for dryRun, the id for a gate).' }),
    count: t.exposeInt('count', { description: 'Evaluations it selects, with every other condition of the filter applied.' }),
    label: t.exposeString('label', { nullable: true, description: 'For a gate: service/env/identifier.' }),
  }),
});

const EvaluationFacets = builder.objectRef<Facets>('EvaluationFacets').implement({
  description:
    "Each facet's values over the filtered range, most evaluations first. A facet's counts leave out its own selection (choosing one service still lists the others) and count only the caller's environments.",
  fields: (t) => ({
    startedAfter: t.expose('startedAfter', { type: 'DateTime', description: 'The range counted (default: the 7 days before startedBefore).' }),
    startedBefore: t.expose('startedBefore', { type: 'DateTime', description: 'Default: now.' }),
    service: t.field({ type: [FacetValue], resolve: (f) => f.values.service }),
    env: t.field({ type: [FacetValue], resolve: (f) => f.values.env }),
    identifier: t.field({ type: [FacetValue], resolve: (f) => f.values.identifier }),
    version: t.field({ type: [FacetValue], resolve: (f) => f.values.version }),
    status: t.field({ type: [FacetValue], description: 'The real status (dry run ignored).', resolve: (f) => f.values.status }),
    dryRun: t.field({ type: [FacetValue], resolve: (f) => f.values.dryRun }),
    gate: t.field({ type: [FacetValue], description: 'Stored gates (just-in-time evaluations have none).', resolve: (f) => f.values.gate }),
    ruleType: t.field({ type: [FacetValue], resolve: (f) => f.values.ruleType }),
    ruleName: t.field({ type: [FacetValue], resolve: (f) => f.values.ruleName }),
  }),
});

builder.queryField('evaluationFacets', (t) =>
  t.field({
    type: EvaluationFacets,
    authScopes: READ,
    description: 'The values the evaluation filters offer, with counts. The range is at most 30 days.',
    args: {
      filter: t.arg({ type: EvaluationFilter }),
      top: t.arg.int({ defaultValue: 20, description: 'Values per facet, 1–100.' }),
    },
    resolve: async (_root, args, { deps, principal }) => evaluationFacets(deps, principal, checkEvaluationFilter(args.filter), args.top ?? 20),
  }),
);

const InsightDay = builder.objectRef<DayCounts>('InsightDay').implement({
  description: 'Evaluations started on one UTC day, by real status (dry run ignored).',
  fields: (t) => ({
    day: t.exposeString('day', { description: 'YYYY-MM-DD, UTC.' }),
    pass: t.exposeInt('pass'),
    fail: t.exposeInt('fail'),
    canceled: t.exposeInt('canceled'),
    inProgress: t.exposeInt('inProgress'),
    total: t.exposeInt('total'),
  }),
});

const FailureReason = builder.objectRef<FailureReasonGroup>('FailureReason').implement({
  description: 'Failed rules whose reasons differ only in numbers, ids and times.',
  fields: (t) => ({
    pattern: t.exposeString('pattern', { description: 'The reason with <n>, <id> and <time> in place of what varies.' }),
    sample: t.exposeString('sample', { description: 'The newest reason of the group, as the caller may see it.' }),
    label: t.exposeString('label', { description: 'The sample without the times its failures differ in ("was ALERT at <time>" reads "was ALERT"): for people.' }),
    ruleType: t.field({ type: RuleType, resolve: (r) => r.ruleType }),
    count: t.exposeInt('count'),
  }),
});

const TimeToVerdict = builder.objectRef<VerdictTime>('TimeToVerdict').implement({
  description: 'From start to verdict (decidedAt − startedAt) over the evaluations decided PASS or FAIL; nearest-rank percentiles, in seconds.',
  fields: (t) => ({
    decided: t.exposeInt('decided', { description: 'Evaluations measured.' }),
    p50Seconds: t.float({ nullable: true, resolve: (v) => (v.p50Ms === null ? null : v.p50Ms / 1000) }),
    p90Seconds: t.float({ nullable: true, resolve: (v) => (v.p90Ms === null ? null : v.p90Ms / 1000) }),
    p95Seconds: t.float({ nullable: true, resolve: (v) => (v.p95Ms === null ? null : v.p95Ms / 1000) }),
    maxSeconds: t.float({ nullable: true, resolve: (v) => (v.maxMs === null ? null : v.maxMs / 1000) }),
  }),
});

const EvaluationInsights = builder.objectRef<Insights>('EvaluationInsights').implement({
  description: "The insights page over a range of at most 30 days, only in the caller's environments.",
  fields: (t) => ({
    startedAfter: t.expose('startedAfter', { type: 'DateTime', description: 'Default: 7 days before startedBefore.' }),
    startedBefore: t.expose('startedBefore', { type: 'DateTime', description: 'Default: now.' }),
    days: t.field({ type: [InsightDay], description: 'Every UTC day of the range, oldest first, zeros included.', resolve: (i) => i.days }),
    mostFailingGates: t.field({ type: [GateFailures], resolve: (i) => i.failingGates }),
    mostFailingRules: t.field({ type: [RuleFailures], resolve: (i) => i.failingRules }),
    failureReasons: t.field({ type: [FailureReason], description: 'The most common, most first.', resolve: (i) => i.failureReasons }),
    failedRulesRead: t.exposeInt('failedRulesRead', { description: `Failed rules whose reasons were grouped (the newest ${MAX_REASON_ROWS} at most).` }),
    failedRulesComplete: t.exposeBoolean('failedRulesComplete', { description: 'False when the range held more failed rules than were read.' }),
    timeToVerdict: t.field({ type: TimeToVerdict, resolve: (i) => i.timeToVerdict }),
  }),
});

builder.queryField('evaluationInsights', (t) =>
  t.field({
    type: EvaluationInsights,
    authScopes: READ,
    description: 'Per day, most failing gates and rules, common failure reasons and time to verdict, over the filtered evaluations (range at most 30 days).',
    args: {
      filter: t.arg({ type: EvaluationFilter }),
      top: t.arg.int({ defaultValue: 10, description: 'Length of each list, 1–100.' }),
    },
    resolve: async (_root, args, { deps, principal }) => evaluationInsights(deps, principal, checkEvaluationFilter(args.filter), args.top ?? 10),
  }),
);
