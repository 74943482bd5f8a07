import {
  type BacktestSummary,
  type BacktestView,
  backtestResults,
  backtestsPageSize,
  cancelBacktest,
  type DeployResult,
  followBacktest,
  getBacktest,
  listBacktests,
  MAX_BACKTEST_DEPLOYS,
  MAX_BACKTEST_WINDOW_DAYS,
  MAX_BACKTESTS_PAGE,
  type RuleReplay,
  type SkippedRule,
  startBacktest,
} from '../domain/backtests.ts';
import { builder, STARTS_WITH_STATE } from './builder.ts';
import { EvaluationConfigurationInput } from './evaluation.ts';
import { RuleType } from './rule.ts';

const READ = { 'gates:read': true, 'evaluations:write': true } as const;

const BacktestStatus = builder.enumType('BacktestStatus', {
  values: {
    RUNNING: { value: 'running' },
    DONE: { value: 'done' },
    CANCELED: { value: 'canceled' },
    FAILED: { value: 'failed', description: 'The replay broke, or the server stopped while it ran (jobs are not resumed).' },
  } as const,
});

const BacktestVerdict = builder.enumType('BacktestVerdict', {
  values: {
    PASS: { value: 'pass' },
    FAIL: { value: 'fail' },
    UNDECIDED: { value: 'undecided', description: 'No answer before the replay reached the present.' },
  } as const,
});

const RuleReplayStatus = builder.enumType('BacktestRuleStatus', {
  values: { PASS: { value: 'pass' }, FAIL: { value: 'fail' }, IN_PROGRESS: { value: 'in_progress', description: 'Still undecided when the replay stopped.' } } as const,
});

const SkippedRuleType = builder.objectRef<SkippedRule>('BacktestSkippedRule').implement({
  description: 'A rule that cannot be judged from stored data, left out of the replay.',
  fields: (t) => ({
    name: t.exposeString('name'),
    type: t.field({ type: RuleType, resolve: (r) => r.type }),
    why: t.exposeString('why'),
  }),
});

const RuleReplayType = builder.objectRef<RuleReplay>('BacktestRuleResult').implement({
  fields: (t) => ({
    name: t.exposeString('name'),
    type: t.field({ type: RuleType, resolve: (r) => r.type }),
    dryRun: t.exposeBoolean('dryRun'),
    status: t.field({ type: RuleReplayStatus, resolve: (r) => r.status }),
    reason: t.exposeString('reason'),
    decidedAt: t.field({ type: 'DateTime', nullable: true, resolve: (r) => (r.at ? new Date(r.at) : null) }),
  }),
});

const Rollback = builder.objectRef<NonNullable<DeployResult['rollback']>>('BacktestRollback').implement({
  description: 'The version stopped serving within the hour after it appeared, older versions serving instead.',
  fields: (t) => ({
    at: t.field({ type: 'DateTime', resolve: (r) => new Date(r.at) }),
    versions: t.exposeStringList('versions', { description: 'The older versions that served right after.' }),
  }),
});

const BacktestDeploy = builder.objectRef<DeployResult>('BacktestDeploy').implement({
  description: 'One deploy found in the stored telemetry, replayed as if evaluated when its version first appeared.',
  fields: (t) => ({
    version: t.exposeString('version'),
    firstSeenAt: t.field({ type: 'DateTime', resolve: (d) => new Date(d.firstSeenAt) }),
    verdict: t.field({ type: BacktestVerdict, description: 'What the gate would have reported (a dry-run gate passes).', resolve: (d) => d.verdict }),
    realVerdict: t.field({ type: BacktestVerdict, description: 'Dry run ignored.', resolve: (d) => d.realVerdict }),
    decidingRule: t.exposeString('decidingRule', { nullable: true }),
    decidedAt: t.field({ type: 'DateTime', nullable: true, resolve: (d) => (d.decidedAt ? new Date(d.decidedAt) : null) }),
    timeToVerdictSeconds: t.float({ nullable: true, resolve: (d) => (d.timeToVerdictMs === null ? null : d.timeToVerdictMs / 1000) }),
    reason: t.exposeString('reason'),
    rollback: t.field({ type: Rollback, nullable: true, resolve: (d) => d.rollback }),
    rules: t.field({ type: [RuleReplayType], resolve: (d) => d.rules }),
  }),
});

const Summary = builder.objectRef<BacktestSummary>('BacktestSummary').implement({
  description: "Counted on the deploys' real verdicts: a dry-run gate's failures count.",
  fields: (t) => ({
    deploys: t.exposeInt('deploys'),
    failed: t.exposeInt('failed'),
    passed: t.exposeInt('passed'),
    undecided: t.exposeInt('undecided'),
    failedThenRolledBack: t.exposeInt('failedThenRolledBack', { description: 'Failed deploys followed by a rollback-looking event.' }),
    truncated: t.exposeBoolean('truncated', { description: `More than ${MAX_BACKTEST_DEPLOYS} deploys were found: the first ${MAX_BACKTEST_DEPLOYS} were replayed.` }),
  }),
});

const Progress = builder.objectRef<{ done: number; total: number }>('BacktestProgress').implement({
  fields: (t) => ({
    done: t.exposeInt('done', { description: 'Deploys replayed.' }),
    total: t.exposeInt('total', { description: 'Deploys found (0 until they are).' }),
  }),
});

const Backtest = builder.objectRef<BacktestView>('Backtest').implement({
  description: "A gate's rules replayed over the deploys found in the stored telemetry.",
  fields: (t) => ({
    id: t.exposeID('id'),
    gateId: t.exposeID('gateId', { nullable: true, description: 'null for rules given inline (or once the gate is deleted).' }),
    service: t.exposeString('service'),
    env: t.exposeString('env'),
    from: t.expose('from', { type: 'DateTime' }),
    to: t.expose('to', { type: 'DateTime' }),
    status: t.field({ type: BacktestStatus, resolve: (b) => b.status }),
    progress: t.field({ type: Progress, resolve: (b) => ({ done: b.done, total: b.total }) }),
    skippedRules: t.field({ type: [SkippedRuleType], resolve: (b) => b.skippedRules as SkippedRule[] }),
    deploys: t.field({
      type: [BacktestDeploy],
      description: 'In the order they appeared; filled in as the replay goes.',
      resolve: async (b, _args, { deps, principal }) => backtestResults(deps, principal, b),
    }),
    summary: t.field({ type: Summary, nullable: true, description: 'Once done.', resolve: (b) => (b.summary as BacktestSummary | null) ?? null }),
    error: t.exposeString('error', { nullable: true, description: 'Why it failed, or who canceled it.' }),
    createdBy: t.exposeString('createdByName'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true }),
    revision: t.exposeInt('revision'),
  }),
});

const BacktestGateInput = builder.inputType('BacktestGateInput', {
  description: 'Either gateId or configuration (then service and env).',
  fields: (t) => ({
    gateId: t.id({ description: 'A stored gate: its rules, service and env.' }),
    service: t.string(),
    env: t.string(),
    configuration: t.field({ type: EvaluationConfigurationInput, description: 'Rules to try before storing them in a gate.' }),
    from: t.field({ type: 'DateTime', required: true, description: 'Deploys whose version first appeared at or after this.' }),
    to: t.field({ type: 'DateTime', required: true, description: `…and before this; at most ${MAX_BACKTEST_WINDOW_DAYS} days after from.` }),
  }),
});

builder.queryField('backtest', (t) =>
  t.field({
    type: Backtest,
    nullable: true,
    authScopes: READ,
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => getBacktest(deps, principal, String(id)),
  }),
);

builder.queryField('backtests', (t) =>
  t.field({
    type: [Backtest],
    description: 'Backtests of the environments the caller may see, newest first.',
    authScopes: READ,
    args: {
      gateId: t.arg.id({ description: 'Only those of this gate.' }),
      first: t.arg.int({ defaultValue: 20, description: `1–${MAX_BACKTESTS_PAGE}.` }),
      after: t.arg.id({ description: 'The id of the last backtest of the previous page.' }),
    },
    resolve: async (_root, { gateId, first, after }, { deps, principal }) =>
      listBacktests(deps, principal, { gateId: gateId ? String(gateId) : undefined }, { limit: backtestsPageSize(first ?? 20), after: after ? String(after) : undefined }),
  }),
);

builder.mutationField('backtestGate', (t) =>
  t.field({
    type: Backtest,
    description: `Replays a gate's rules over the deploys seen in [from, to) in the background (at most ${MAX_BACKTEST_DEPLOYS} deploys); follow it with backtestProgress.`,
    authScopes: { 'evaluations:write': true },
    args: { input: t.arg({ type: BacktestGateInput, required: true }) },
    resolve: async (_root, { input }, { deps, principal }) => startBacktest(deps, principal, { ...input, gateId: input.gateId == null ? input.gateId : String(input.gateId) }),
  }),
);

builder.mutationField('cancelBacktest', (t) =>
  t.field({
    type: Backtest,
    description: 'Stops a running backtest; the deploys replayed so far stay.',
    authScopes: { 'evaluations:write': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => cancelBacktest(deps, principal, String(id)),
  }),
);

builder.subscriptionField('backtestProgress', (t) =>
  t.field({
    extensions: STARTS_WITH_STATE,
    type: Backtest,
    authScopes: READ,
    description: 'The backtest now, then after each deploy replayed, until it ends.',
    args: { id: t.arg.id({ required: true }) },
    subscribe: async (_root, { id }, { deps, principal }) => followBacktest(deps, principal, String(id)),
    resolve: (b) => b,
  }),
);
