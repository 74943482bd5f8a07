import { resolveArrayConnection } from '@pothos/plugin-relay';
import { recentTransitions } from '../db/monitors.ts';
import { monitorTransitions } from '../domain/live.ts';
import { checkMonitorFilter, filterMonitors } from '../domain/monitorFilter.ts';
import {
  type ApmDefinition,
  createMonitor,
  createMonitorInputSchema,
  deleteMonitor,
  getMonitor,
  type MonitorDefinition,
  type MonitorGroupRow,
  type MonitorRow,
  type MonitorStateChange,
  monitorGroups,
  parseMonitorSearch,
  reportMonitorState,
  reportMonitorStateInputSchema,
  searchMonitors,
  updateMonitor,
  updateMonitorInputSchema,
  worstState,
} from '../domain/monitors.ts';
import { builder, CHANGES_ONLY } from './builder.ts';
import { totalCountFields, withTotalCount } from './connections.ts';
import { childrenLoader } from './loaders.ts';

export const MonitorState = builder.enumType('MonitorState', {
  values: { OK: { value: 'ok' }, WARN: { value: 'warn' }, ALERT: { value: 'alert' }, NO_DATA: { value: 'no_data' } } as const,
});

const MonitorType = builder.enumType('MonitorType', {
  values: {
    EXTERNAL: { value: 'external', description: 'State pushed by reportMonitorState or the Alertmanager receiver.' },
    APM: { value: 'apm', description: 'Evaluated by Tollgate over its own APM store.' },
    PROMETHEUS: { value: 'prometheus', description: 'A PromQL expression Tollgate evaluates.' },
  } as const,
});

const Comparator = builder.enumType('ThresholdComparator', {
  values: { ABOVE: { value: 'above', description: 'Alert when the value is at or above the threshold.' }, BELOW: { value: 'below' } } as const,
});

export const ApmMetric = builder.enumType('ApmMetric', {
  values: { ERROR_RATE: { value: 'error_rate' }, ERROR_COUNT: { value: 'error_count' }, HITS: { value: 'hits' }, P95: { value: 'p95' }, P99: { value: 'p99' } } as const,
});
const ApmGroupBy = builder.enumType('ApmGroupBy', {
  values: { RESOURCE: { value: 'resource' }, VERSION: { value: 'version' }, PRIMARY_TAG: { value: 'primary_tag' } } as const,
});

const ApmMonitorDefinition = builder.objectRef<ApmDefinition>('ApmMonitorDefinition').implement({
  description: 'What an APM monitor measures over the APM store (latencies in milliseconds).',
  fields: (t) => ({
    metric: t.field({ type: ApmMetric, resolve: (d) => d.metric }),
    service: t.exposeString('service'),
    env: t.exposeString('env'),
    version: t.exposeString('version', { nullable: true }),
    resource: t.exposeString('resource', { nullable: true }),
    window: t.exposeInt('window', { description: 'Seconds.' }),
    groupBy: t.field({ type: [ApmGroupBy], resolve: (d) => d.groupBy }),
  }),
});

const ApmMonitorDefinitionInput = builder.inputType('ApmMonitorDefinitionInput', {
  fields: (t) => ({
    metric: t.field({ type: ApmMetric, required: true }),
    service: t.string({ required: true }),
    env: t.string({ required: true }),
    version: t.string(),
    resource: t.string(),
    window: t.int({ description: 'Seconds, 10–86400. Default 300.' }),
    groupBy: t.field({ type: [ApmGroupBy] }),
  }),
});

const groupsLoader = childrenLoader(
  async (ctx, ids) => monitorGroups(ctx.deps, ids),
  (g: MonitorGroupRow) => g.monitorId,
);

const MonitorGroup = builder.objectRef<MonitorGroupRow>('MonitorGroup').implement({
  fields: (t) => ({
    group: t.exposeString('group', { description: 'Tags of the group, "k:v,k2:v2"; "*" for a monitor without groups.' }),
    state: t.field({ type: MonitorState, resolve: (g) => g.state }),
    since: t.expose('since', { type: 'DateTime' }),
    message: t.exposeString('message', { nullable: true }),
    lastReportedAt: t.expose('lastReportedAt', { type: 'DateTime' }),
  }),
});

const MonitorTransition = builder
  .objectRef<{ group: string; from: MonitorGroupRow['state'] | null; to: MonitorGroupRow['state']; at: Date; message: string | null }>('MonitorTransition')
  .implement({
    fields: (t) => ({
      group: t.exposeString('group'),
      from: t.field({ type: MonitorState, nullable: true, resolve: (x) => x.from }),
      to: t.field({ type: MonitorState, resolve: (x) => x.to }),
      at: t.expose('at', { type: 'DateTime' }),
      message: t.exposeString('message', { nullable: true }),
    }),
  });

const Monitor = builder.objectRef<MonitorRow>('Monitor');

Monitor.implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    type: t.field({ type: MonitorType, resolve: (m) => m.type }),
    tags: t.exposeStringList('tags'),
    query: t.exposeString('query', { description: 'The monitor’s own query; `scope:` searches look inside it.' }),
    muted: t.exposeBoolean('muted', { description: 'Muted monitors are never evaluated by monitor rules.' }),
    priority: t.exposeInt('priority', { nullable: true }),
    noDataTimeframe: t.exposeInt('noDataTimeframe', { nullable: true }),
    critical: t.exposeFloat('critical', { nullable: true }),
    warning: t.exposeFloat('warning', { nullable: true }),
    comparator: t.field({ type: Comparator, resolve: (m) => ((m.definition ?? {}) as MonitorDefinition).comparator ?? 'above' }),
    apm: t.field({ type: ApmMonitorDefinition, nullable: true, resolve: (m) => ((m.definition ?? {}) as MonitorDefinition).apm ?? null }),
    importedFromRule: t.string({
      nullable: true,
      description: 'The Prometheus alerting rule this monitor mirrors ("group/name").',
      resolve: (m) => {
        const r = ((m.definition ?? {}) as MonitorDefinition).importedRule;
        return r ? `${r.group}/${r.name}` : null;
      },
    }),
    sourceErrors: t.exposeInt('sourceErrors', { description: 'Consecutive failures of its data source; rules treat them as source errors.' }),
    lastSourceError: t.exposeString('lastSourceError', { nullable: true }),
    state: t.field({
      type: MonitorState,
      nullable: true,
      description: 'Its worst group; null before any group has reported.',
      resolve: async (m, _a, ctx) => worstState(await groupsLoader(ctx).load(m.id)),
    }),
    groups: t.field({ type: [MonitorGroup], resolve: (m, _a, ctx) => groupsLoader(ctx).load(m.id) }),
    transitions: t.field({
      type: [MonitorTransition],
      description: 'Newest first.',
      args: { last: t.arg.int({ defaultValue: 20 }) },
      resolve: async (m, args, ctx) => recentTransitions(ctx.deps.db, m.id, Math.min(Math.max(args.last ?? 20, 1), 500)),
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const MonitorStateChangeRef = builder.objectRef<MonitorStateChange>('MonitorStateChange').implement({
  fields: (t) => ({
    monitor: t.field({ type: Monitor, resolve: (c) => c.monitor }),
    group: t.exposeString('group'),
    from: t.field({ type: MonitorState, nullable: true, resolve: (c) => c.from }),
    to: t.field({ type: MonitorState, resolve: (c) => c.to }),
    at: t.expose('at', { type: 'DateTime' }),
    message: t.exposeString('message', { nullable: true }),
  }),
});

const CreateMonitorInput = builder.inputType('CreateMonitorInput', {
  fields: (t) => ({
    name: t.string({ required: true }),
    type: t.field({ type: MonitorType, required: true }),
    tags: t.stringList({ description: 'Static tags, "key:value".' }),
    query: t.string({ description: 'The monitor’s own query, searched by `scope:`.' }),
    muted: t.boolean({ description: 'Default false.' }),
    priority: t.int({ description: '1 (highest) to 5.' }),
    noDataTimeframe: t.int({ description: 'Seconds without data before NO_DATA.' }),
    critical: t.float({ description: 'Threshold for ALERT (PROMETHEUS and APM monitors).' }),
    warning: t.float({ description: 'Threshold for WARN.' }),
    comparator: t.field({ type: Comparator, description: 'Default ABOVE.' }),
    apm: t.field({ type: ApmMonitorDefinitionInput, description: 'Required for APM monitors.' }),
  }),
});

const UpdateMonitorInput = builder.inputType('UpdateMonitorInput', {
  fields: (t) => ({
    name: t.string(),
    tags: t.stringList(),
    query: t.string(),
    muted: t.boolean(),
    priority: t.int(),
  }),
});

const ReportMonitorStateInput = builder.inputType('ReportMonitorStateInput', {
  fields: (t) => ({
    monitorId: t.id({ required: true }),
    group: t.string({ description: 'Group tags, "k:v,k2:v2"; omit for the monitor as a whole.' }),
    state: t.field({ type: MonitorState, required: true }),
    message: t.string(),
  }),
});

const MonitorFilterInput = builder.inputType('MonitorFilter', {
  fields: (t) => ({
    states: t.field({ type: [MonitorState], description: 'The monitor’s state (its worst group) is one of these; a monitor no group has reported matches none.' }),
    types: t.field({ type: [MonitorType] }),
    muted: t.boolean(),
  }),
});

const READ = { 'gates:read': true, 'monitors:write': true } as const;

builder.queryField('monitor', (t) =>
  t.field({
    type: Monitor,
    nullable: true,
    authScopes: READ,
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => getMonitor(deps, principal, String(id)),
  }),
);

builder.queryField('monitors', (t) =>
  t.connection(
    {
      type: Monitor,
      authScopes: READ,
      description: 'Monitors matching a monitor search query (all without one), in creation order.',
      args: {
        query: t.arg.string({ description: 'A monitor search, e.g. `service:checkout env:prod status:alert`.' }),
        filter: t.arg({ type: MonitorFilterInput, description: 'Typed conditions, all of which must hold, beside the query.' }),
      },
      resolve: async (_root, args, { deps, principal }) => {
        parseMonitorSearch(args.query, 'query');
        const filter = checkMonitorFilter({
          states: args.filter?.states ?? undefined,
          types: args.filter?.types ?? undefined,
          muted: args.filter?.muted ?? undefined,
        });
        const found = await filterMonitors(deps, await searchMonitors(deps, principal, args.query ?? undefined), filter);
        // The search already holds every match the caller may see: counting them is free.
        return withTotalCount(resolveArrayConnection({ args }, found), () => found.length);
      },
    },
    { name: 'MonitorConnection', ...totalCountFields },
    { name: 'MonitorEdge' },
  ),
);

builder.mutationField('createMonitor', (t) =>
  t.field({
    type: Monitor,
    authScopes: { 'monitors:write': true },
    args: { input: t.arg({ type: CreateMonitorInput, required: true }).validate(createMonitorInputSchema) },
    resolve: async (_root, { input }, { deps, principal }) => createMonitor(deps, principal, input),
  }),
);

builder.mutationField('updateMonitor', (t) =>
  t.field({
    type: Monitor,
    authScopes: { 'monitors:write': true },
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateMonitorInput, required: true }).validate(updateMonitorInputSchema) },
    resolve: async (_root, { id, input }, { deps, principal }) => updateMonitor(deps, principal, String(id), input),
  }),
);

builder.mutationField('deleteMonitor', (t) =>
  t.id({
    authScopes: { 'monitors:write': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_root, { id }, { deps, principal }) => deleteMonitor(deps, principal, String(id)),
  }),
);

builder.mutationField('reportMonitorState', (t) =>
  t.field({
    type: Monitor,
    authScopes: { 'monitors:write': true },
    description: 'Sets the state of a group; a change is recorded as a transition and re-checks the rules watching it at once.',
    args: { input: t.arg({ type: ReportMonitorStateInput, required: true }).validate(reportMonitorStateInputSchema) },
    resolve: async (_root, { input }, { deps, principal }) => reportMonitorState(deps, principal, input),
  }),
);

builder.subscriptionField('monitorStateChanged', (t) =>
  t.field({
    extensions: CHANGES_ONLY,
    type: MonitorStateChangeRef,
    authScopes: READ,
    description:
      'Every transition of a monitor matching the query (all without one), or of the one monitor monitorId names (NOT_FOUND when the key cannot see it). Both given: that monitor while it matches the query.',
    args: { query: t.arg.string(), monitorId: t.arg.id() },
    subscribe: async (_root, args, { deps, principal }) => monitorTransitions(deps, principal, { query: args.query, monitorId: args.monitorId?.toString() }),
    resolve: (c) => c,
  }),
);
