import {
  type ChannelRow,
  channelOf,
  createChannel,
  createChannelInputSchema,
  createSubscription,
  createSubscriptionInputSchema,
  DELIVERY_STATUSES,
  deleteChannel,
  deleteSubscription,
  getChannel,
  getDelivery,
  listChannels,
  listDeliveries,
  listSubscriptions,
  MAX_PAGE,
  type OutboxRow,
  publicChannelUrl,
  type SubscriptionRow,
  sendTestNotification,
  updateChannel,
  updateChannelInputSchema,
  updateSubscription,
  updateSubscriptionInputSchema,
} from '../domain/notifications.ts';
import { builder } from './builder.ts';

const ChannelType = builder.enumType('NotificationChannelType', {
  values: {
    WEBHOOK: { value: 'webhook', description: 'A JSON POST signed with X-Tollgate-Signature (HMAC-SHA256 of "<timestamp>.<body>").' },
    SLACK: { value: 'slack', description: 'A Slack incoming webhook: a {text, blocks} message.' },
  } as const,
});

const NotificationEvent = builder.enumType('NotificationEvent', {
  values: {
    FAIL: { value: 'fail', description: 'The reported status became fail.' },
    RECOVERED: { value: 'recovered', description: 'A pass after a fail of the same service, env and identifier.' },
    OVERRIDE: { value: 'override', description: 'Someone overrode the verdict.' },
    SOURCE_ERROR: { value: 'source_error', description: "A rule's data source failed (its first error in the evaluation)." },
  } as const,
});

const DeliveryStatus = builder.enumType('NotificationDeliveryStatus', {
  values: Object.fromEntries(DELIVERY_STATUSES.map((s) => [s.toUpperCase(), { value: s }])) as {
    [K in Uppercase<(typeof DELIVERY_STATUSES)[number]>]: { value: Lowercase<K> };
  },
});

const NotificationChannel = builder.objectRef<ChannelRow>('NotificationChannel').implement({
  description: 'Where notifications go. Seen only by keys that may see every environment it serves.',
  authScopes: { 'gates:read': true },
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    type: t.field({ type: ChannelType, resolve: (c) => c.type }),
    url: t.string({ description: "The URL; a Slack webhook's path (its secret) is not shown.", resolve: (c) => publicChannelUrl(c) }),
    envs: t.exposeStringList('envs', { description: 'The environments it serves; its subscriptions stay within them.' }),
    hasSecret: t.boolean({ description: 'A signing secret is stored (write-only, sealed).', resolve: (c) => c.secret !== null }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    createdBy: t.exposeString('createdByName'),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const NotificationSubscription = builder.objectRef<SubscriptionRow>('NotificationSubscription').implement({
  description: 'Which events of which evaluations a channel is told of: one gate, or every evaluation of env (and service).',
  authScopes: { 'gates:read': true },
  fields: (t) => ({
    id: t.exposeID('id'),
    channel: t.field({ type: NotificationChannel, nullable: true, resolve: async (s, _a, { deps, principal }) => channelOf(deps, principal, s.channelId) }),
    gateId: t.exposeID('gateId', { nullable: true, description: "Only this gate's evaluations; null: a query by service and env." }),
    service: t.exposeString('service', { nullable: true, description: 'null: every service of env.' }),
    env: t.exposeString('env'),
    events: t.field({ type: [NotificationEvent], resolve: (s) => s.events }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    createdBy: t.exposeString('createdByName'),
  }),
});

const NotificationDelivery = builder.objectRef<OutboxRow>('NotificationDelivery').implement({
  description: 'One event queued for one channel, and how its delivery went.',
  authScopes: { 'gates:read': true },
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Sent as X-Tollgate-Event-Id: the same on every attempt, for receivers to drop repeats.' }),
    event: t.exposeString('event', { description: 'fail, recovered, override, source_error or test.' }),
    status: t.field({ type: DeliveryStatus, resolve: (d) => d.status }),
    attempts: t.exposeInt('attempts'),
    nextAttemptAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When a pending delivery is tried next.',
      resolve: (d) => (d.status === 'pending' ? d.nextAttemptAt : null),
    }),
    lastStatus: t.exposeInt('lastStatus', { nullable: true, description: "The receiver's last HTTP status." }),
    lastError: t.exposeString('lastError', { nullable: true }),
    deliveredAt: t.expose('deliveredAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    env: t.exposeString('env'),
    evaluationId: t.exposeID('evaluationId', { nullable: true }),
    subscriptionId: t.exposeID('subscriptionId', { nullable: true }),
    channel: t.field({ type: NotificationChannel, nullable: true, resolve: async (d, _a, { deps, principal }) => channelOf(deps, principal, d.channelId) }),
    payload: t.field({ type: 'JSON', description: 'What the message says, as it stood when the event happened.', resolve: (d) => d.payload }),
  }),
});

const CreateNotificationChannelInput = builder.inputType('CreateNotificationChannelInput', {
  fields: (t) => ({
    name: t.string({ required: true }),
    type: t.field({ type: ChannelType, required: true }),
    url: t.string({ required: true, description: 'Its host must be on TOLLGATE_WEBHOOK_ALLOWED_HOSTS.' }),
    envs: t.stringList({ required: true, description: 'The environments it serves (all within the caller’s).' }),
    secret: t.string({ description: 'Webhook channels: the HMAC signing secret (16–500 characters), stored sealed, never shown.' }),
  }),
});

const UpdateNotificationChannelInput = builder.inputType('UpdateNotificationChannelInput', {
  fields: (t) => ({
    name: t.string(),
    url: t.string({ description: 'Another origin needs the secret again.' }),
    envs: t.stringList(),
    secret: t.string(),
  }),
});

const CreateNotificationSubscriptionInput = builder.inputType('CreateNotificationSubscriptionInput', {
  fields: (t) => ({
    channelId: t.id({ required: true }),
    gateId: t.id({ description: "Only this gate's evaluations (env must be the gate's)." }),
    service: t.string({ description: 'Only this service; omitted: every service of env.' }),
    env: t.string({ required: true, description: "One of the channel's environments." }),
    events: t.field({ type: [NotificationEvent], required: true }),
  }),
});

const UpdateNotificationSubscriptionInput = builder.inputType('UpdateNotificationSubscriptionInput', {
  fields: (t) => ({ events: t.field({ type: [NotificationEvent], required: true }) }),
});

const DeliveryFilter = builder.inputType('NotificationDeliveryFilter', {
  fields: (t) => ({
    status: t.field({ type: [DeliveryStatus] }),
    channelId: t.id(),
    evaluationId: t.id(),
  }),
});

builder.queryField('notificationChannels', (t) =>
  t.field({
    type: [NotificationChannel],
    description: 'Channels whose environments the caller may all see, newest first.',
    authScopes: { 'gates:read': true },
    args: {
      first: t.arg.int({ defaultValue: 50, description: `1–${MAX_PAGE}.` }),
      after: t.arg.id({ description: 'The id of the last item of the previous page (newest first).' }),
    },
    resolve: async (_r, { first, after }, { deps, principal }) => listChannels(deps, principal, { first: first ?? 50, after: after ? String(after) : undefined }),
  }),
);

builder.queryField('notificationChannel', (t) =>
  t.field({
    type: NotificationChannel,
    nullable: true,
    authScopes: { 'gates:read': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_r, { id }, { deps, principal }) => getChannel(deps, principal, String(id)),
  }),
);

builder.queryField('notificationSubscriptions', (t) =>
  t.field({
    type: [NotificationSubscription],
    description: 'Subscriptions of the environments (and channels) the caller may see, newest first.',
    authScopes: { 'gates:read': true },
    args: {
      channelId: t.arg.id(),
      first: t.arg.int({ defaultValue: 50, description: `1–${MAX_PAGE}.` }),
      after: t.arg.id({ description: 'The id of the last item of the previous page (newest first).' }),
    },
    resolve: async (_r, { channelId, first, after }, { deps, principal }) =>
      listSubscriptions(deps, principal, { channelId: channelId ? String(channelId) : undefined }, { first: first ?? 50, after: after ? String(after) : undefined }),
  }),
);

builder.queryField('notificationDeliveries', (t) =>
  t.field({
    type: [NotificationDelivery],
    description: 'Queued and past deliveries the caller may see, newest first.',
    authScopes: { 'gates:read': true },
    args: {
      filter: t.arg({ type: DeliveryFilter }),
      first: t.arg.int({ defaultValue: 50, description: `1–${MAX_PAGE}.` }),
      after: t.arg.id({ description: 'The id of the last item of the previous page (newest first).' }),
    },
    resolve: async (_r, { filter, first, after }, { deps, principal }) =>
      listDeliveries(
        deps,
        principal,
        {
          status: filter?.status ?? undefined,
          channelId: filter?.channelId ? String(filter.channelId) : undefined,
          evaluationId: filter?.evaluationId ? String(filter.evaluationId) : undefined,
        },
        { first: first ?? 50, after: after ? String(after) : undefined },
      ),
  }),
);

builder.queryField('notificationDelivery', (t) =>
  t.field({
    type: NotificationDelivery,
    nullable: true,
    authScopes: { 'gates:read': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_r, { id }, { deps, principal }) => getDelivery(deps, principal, String(id)),
  }),
);

builder.mutationField('createNotificationChannel', (t) =>
  t.field({
    type: NotificationChannel,
    description: 'A channel serving the given environments. Audited.',
    authScopes: { 'gates:write': true },
    args: { input: t.arg({ type: CreateNotificationChannelInput, required: true }).validate(createChannelInputSchema) },
    resolve: async (_r, { input }, { deps, principal }) => createChannel(deps, principal, input),
  }),
);

builder.mutationField('updateNotificationChannel', (t) =>
  t.field({
    type: NotificationChannel,
    description: 'Changes what is given. Audited.',
    authScopes: { 'gates:write': true },
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateNotificationChannelInput, required: true }).validate(updateChannelInputSchema) },
    resolve: async (_r, { id, input }, { deps, principal }) => updateChannel(deps, principal, String(id), input),
  }),
);

builder.mutationField('deleteNotificationChannel', (t) =>
  t.id({
    description: 'Deletes the channel with its subscriptions and deliveries; returns its id. Audited.',
    authScopes: { 'gates:write': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_r, { id }, { deps, principal }) => deleteChannel(deps, principal, String(id)),
  }),
);

builder.mutationField('createNotificationSubscription', (t) =>
  t.field({
    type: NotificationSubscription,
    authScopes: { 'gates:write': true },
    args: { input: t.arg({ type: CreateNotificationSubscriptionInput, required: true }).validate(createSubscriptionInputSchema) },
    resolve: async (_r, { input }, { deps, principal }) => createSubscription(deps, principal, input),
  }),
);

builder.mutationField('updateNotificationSubscription', (t) =>
  t.field({
    type: NotificationSubscription,
    authScopes: { 'gates:write': true },
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateNotificationSubscriptionInput, required: true }).validate(updateSubscriptionInputSchema) },
    resolve: async (_r, { id, input }, { deps, principal }) => updateSubscription(deps, principal, String(id), input),
  }),
);

builder.mutationField('deleteNotificationSubscription', (t) =>
  t.id({
    authScopes: { 'gates:write': true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_r, { id }, { deps, principal }) => deleteSubscription(deps, principal, String(id)),
  }),
);

builder.mutationField('sendTestNotification', (t) =>
  t.field({
    type: NotificationDelivery,
    description: 'Queues a test message to the channel, delivered (and retried) like any other.',
    authScopes: { 'gates:write': true },
    args: { channelId: t.arg.id({ required: true }) },
    resolve: async (_r, { channelId }, { deps, principal }) => sendTestNotification(deps, principal, String(channelId)),
  }),
);
