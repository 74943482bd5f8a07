import { sql } from 'drizzle-orm';
import { bigint, boolean, customType, doublePrecision, foreignKey, index, integer, jsonb, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';
import * as sqlite from './schema.ts';

// The PostgreSQL store's tables: a mirror of ./schema.ts (the SQLite tables), column for column.
// These define the PostgreSQL database (its migrations); the queries run the SQLite table objects
// on both stores, so their encoders and decoders meet PostgreSQL's values, and each type here is
// one they work with, given the pool's parsers (pgClient.ts): integer timestamp_ms -> bigint of
// epoch ms (a number both ways, turned into a Date by the SQLite column), integer boolean ->
// boolean (takes 1/0, read back as true/false), JSON text -> jsonb (read back as its text),
// epoch-ms and summed counts -> bigint read as a number, real -> double precision, blob -> bytea
// (a Buffer), enums stay text with the same lists. test/pgStore.test.ts checks the mirror (names,
// types, nullability, keys, indexes) and the round trip. A change to one is made to both, with a
// migration each (npm run db:generate).

// The enums and constants are the SQLite schema's, so both modules export the same names.
export {
  APM_BUCKET_MS,
  BACKTEST_STATUSES,
  type BacktestStatus,
  CHANNEL_TYPES,
  type ChannelType,
  DELIVERY_STATUSES,
  type DeliveryStatus,
  MONITOR_STATES,
  MONITOR_TYPES,
  type MonitorStateValue,
  type MonitorType,
  NOTIFICATION_EVENTS,
  type NotificationEvent,
  RULE_TYPES,
  type RuleType,
} from './schema.ts';

/**
 * An instant as epoch milliseconds, like SQLite's integer timestamp_ms: the SQLite column sends
 * getTime() and makes a Date of the number it gets back.
 */
const instant = (name: string) => bigint(name, { mode: 'number' });

/** Epoch milliseconds and counts that may pass 2^31: int8, read as a JS number (exact to 2^53). */
const bigNumber = (name: string) => bigint(name, { mode: 'number' });

/** Binary data as a Buffer, as SQLite's blob mode 'buffer' gives it. */
const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

// The inline enum lists of the SQLite columns, taken from them rather than written twice.
const SOURCE_ERROR_POLICIES = sqlite.gates.onSourceError.enumValues;
const EVALUATION_STATUSES = sqlite.evaluations.status.enumValues;
const OVERRIDE_STATUSES = sqlite.evaluations.overrideStatus.enumValues;

const timestamps = {
  createdAt: instant('created_at').notNull(),
  createdById: text('created_by_id').notNull(),
  createdByName: text('created_by_name').notNull(),
  updatedAt: instant('updated_at').notNull(),
  updatedById: text('updated_by_id').notNull(),
  updatedByName: text('updated_by_name').notNull(),
};

export const gates = pgTable(
  'gates',
  {
    id: text('id').primaryKey(),
    service: text('service').notNull(),
    env: text('env').notNull(),
    identifier: text('identifier').notNull(),
    dryRun: boolean('dry_run').notNull(),
    onSourceError: text('on_source_error', { enum: SOURCE_ERROR_POLICIES }).notNull(),
    ...timestamps,
  },
  (t) => [uniqueIndex('gates_key_unique').on(t.service, t.env, t.identifier), index('gates_env_idx').on(t.env)],
);

export const rules = pgTable(
  'rules',
  {
    id: text('id').primaryKey(),
    gateId: text('gate_id')
      .notNull()
      .references(() => gates.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    type: text('type', { enum: sqlite.RULE_TYPES }).notNull(),
    dryRun: boolean('dry_run').notNull(),
    options: jsonb('options').notNull().$type<Record<string, unknown>>(),
    ...timestamps,
  },
  (t) => [uniqueIndex('rules_gate_name_unique').on(t.gateId, t.name)],
);

export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    secretHash: text('secret_hash').notNull(),
    prefix: text('prefix').notNull(),
    scopes: jsonb('scopes').notNull().$type<string[]>(),
    envs: jsonb('envs').$type<string[] | null>(),
    createdAt: instant('created_at').notNull(),
    createdById: text('created_by_id'),
    expiresAt: instant('expires_at'),
    lastUsedAt: instant('last_used_at'),
    revokedAt: instant('revoked_at'),
  },
  (t) => [uniqueIndex('api_keys_secret_hash_unique').on(t.secretHash)],
);

export const auditLog = pgTable(
  'audit_log',
  {
    id: text('id').primaryKey(),
    at: instant('at').notNull(),
    actorId: text('actor_id').notNull(),
    actorName: text('actor_name').notNull(),
    action: text('action').notNull(),
    targetType: text('target_type').notNull(),
    targetId: text('target_id').notNull(),
    before: jsonb('before'),
    after: jsonb('after'),
  },
  (t) => [index('audit_log_target_idx').on(t.targetType, t.targetId), index('audit_log_at_idx').on(t.at)],
);

export const evaluations = pgTable(
  'evaluations',
  {
    id: text('id').primaryKey(),
    gateId: text('gate_id').references(() => gates.id, { onDelete: 'set null' }),
    service: text('service').notNull(),
    env: text('env').notNull(),
    identifier: text('identifier').notNull(),
    version: text('version'),
    primaryTag: text('primary_tag'),
    dryRun: boolean('dry_run').notNull(),
    onSourceError: text('on_source_error', { enum: SOURCE_ERROR_POLICIES }).notNull(),
    status: text('status', { enum: EVALUATION_STATUSES }).notNull(),
    justInTime: boolean('just_in_time').notNull(),
    idempotencyKey: text('idempotency_key'),
    rerunOf: text('rerun_of'),
    triggerEnvs: jsonb('trigger_envs').$type<string[]>(),
    triggeredById: text('triggered_by_id').notNull(),
    triggeredByName: text('triggered_by_name').notNull(),
    startedAt: instant('started_at').notNull(),
    decidedAt: instant('decided_at'),
    finishedAt: instant('finished_at'),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: instant('lease_expires_at'),
    revision: integer('revision').notNull().default(1),
    overrideStatus: text('override_status', { enum: OVERRIDE_STATUSES }),
    overrideReason: text('override_reason'),
    overriddenAt: instant('overridden_at'),
    overriddenById: text('overridden_by_id'),
    overriddenByName: text('overridden_by_name'),
    overrideReplaced: text('override_replaced', { enum: EVALUATION_STATUSES }),
  },
  (t) => [
    uniqueIndex('evaluations_env_idempotency_unique').on(t.env, t.idempotencyKey).where(sql`${t.idempotencyKey} is not null`),
    index('evaluations_key_started_idx').on(t.service, t.env, t.identifier, t.startedAt),
    index('evaluations_status_idx').on(t.status),
    index('evaluations_started_idx').on(t.startedAt),
    index('evaluations_gate_idx').on(t.gateId),
    index('evaluations_unfinished_idx').on(t.finishedAt, t.leaseOwner),
    index('evaluations_triggered_by_started_idx').on(t.triggeredById, t.startedAt),
    index('evaluations_running_by_key_idx').on(t.triggeredById).where(sql`${t.finishedAt} is null`),
  ],
);

export const ruleEvaluations = pgTable(
  'rule_evaluations',
  {
    id: text('id').primaryKey(),
    evaluationId: text('evaluation_id')
      .notNull()
      .references(() => evaluations.id, { onDelete: 'cascade' }),
    ruleId: text('rule_id'),
    position: integer('position').notNull(),
    name: text('name').notNull(),
    type: text('type', { enum: sqlite.RULE_TYPES }).notNull(),
    dryRun: boolean('dry_run').notNull(),
    options: jsonb('options').notNull().$type<Record<string, unknown>>(),
    status: text('status', { enum: EVALUATION_STATUSES }).notNull(),
    reason: text('reason'),
    evidence: jsonb('evidence').$type<Record<string, unknown>>(),
    startedAt: instant('started_at').notNull(),
    windowStartsAt: instant('window_starts_at').notNull(),
    windowEndsAt: instant('window_ends_at').notNull(),
    finishedAt: instant('finished_at'),
    nextCheckAt: instant('next_check_at'),
    consecutiveErrors: integer('consecutive_errors').notNull().default(0),
    lastError: text('last_error'),
    state: jsonb('state').$type<Record<string, unknown>>(),
  },
  (t) => [
    index('rule_evaluations_evaluation_idx').on(t.evaluationId, t.position),
    index('rule_evaluations_due_idx').on(t.status, t.nextCheckAt),
    index('rule_evaluations_rule_idx').on(t.ruleId),
  ],
);

export const evaluationRevisions = pgTable(
  'evaluation_revisions',
  {
    evaluationId: text('evaluation_id')
      .notNull()
      .references(() => evaluations.id, { onDelete: 'cascade' }),
    revision: integer('revision').notNull(),
    at: instant('at').notNull(),
    snapshot: jsonb('snapshot').notNull().$type<unknown>(),
  },
  // By time: what was written while events between instances were lost (src/domain/revisionFeed.ts).
  (t) => [primaryKey({ columns: [t.evaluationId, t.revision] }), index('evaluation_revisions_at_idx').on(t.at)],
);

export const monitors = pgTable(
  'monitors',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    type: text('type', { enum: sqlite.MONITOR_TYPES }).notNull(),
    tags: jsonb('tags').notNull().$type<string[]>(),
    query: text('query').notNull().default(''),
    definition: jsonb('definition').$type<Record<string, unknown>>(),
    critical: doublePrecision('critical'),
    warning: doublePrecision('warning'),
    muted: boolean('muted').notNull(),
    priority: integer('priority'),
    noDataTimeframe: integer('no_data_timeframe'),
    sourceErrors: integer('source_errors').notNull().default(0),
    lastSourceError: text('last_source_error'),
    alertKey: text('alert_key'),
    ...timestamps,
  },
  (t) => [index('monitors_name_idx').on(t.name), uniqueIndex('monitors_alert_key_idx').on(t.alertKey)],
);

export const monitorGroups = pgTable(
  'monitor_groups',
  {
    monitorId: text('monitor_id')
      .notNull()
      .references(() => monitors.id, { onDelete: 'cascade' }),
    group: text('group').notNull(),
    state: text('state', { enum: sqlite.MONITOR_STATES }).notNull(),
    since: instant('since').notNull(),
    message: text('message'),
    lastReportedAt: instant('last_reported_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.monitorId, t.group] })],
);

export const monitorTransitions = pgTable(
  'monitor_transitions',
  {
    id: text('id').primaryKey(),
    monitorId: text('monitor_id')
      .notNull()
      .references(() => monitors.id, { onDelete: 'cascade' }),
    group: text('group').notNull(),
    from: text('from', { enum: sqlite.MONITOR_STATES }),
    to: text('to', { enum: sqlite.MONITOR_STATES }).notNull(),
    at: instant('at').notNull(),
    message: text('message'),
  },
  (t) => [index('monitor_transitions_monitor_at_idx').on(t.monitorId, t.at), index('monitor_transitions_at_idx').on(t.at)],
);

const apmKey = {
  service: text('service').notNull(),
  env: text('env').notNull(),
  version: text('version').notNull(),
  resource: text('resource').notNull(),
  primaryTag: text('primary_tag').notNull(),
  /** Epoch milliseconds of the bucket's start: past int4. */
  bucket: bigNumber('bucket').notNull(),
};

export const apmStats = pgTable(
  'apm_stats',
  {
    ...apmKey,
    // Summed on every flush into the bucket, so bigint like the bucket.
    hits: bigNumber('hits').notNull(),
    errors: bigNumber('errors').notNull(),
    durations: bytea('durations').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.service, t.env, t.version, t.resource, t.primaryTag, t.bucket] }),
    index('apm_stats_service_bucket_idx').on(t.service, t.env, t.bucket),
    index('apm_stats_bucket_idx').on(t.bucket),
  ],
);

export const apmErrors = pgTable(
  'apm_errors',
  {
    ...apmKey,
    errorType: text('error_type').notNull(),
    count: bigNumber('count').notNull(),
    sampleMessage: text('sample_message'),
  },
  (t) => [
    // Named: drizzle's default name passes PostgreSQL's 63 characters, which it would truncate.
    primaryKey({ name: 'apm_errors_pk', columns: [t.service, t.env, t.version, t.resource, t.primaryTag, t.errorType, t.bucket] }),
    index('apm_errors_service_bucket_idx').on(t.service, t.env, t.bucket),
  ],
);

export const apmInstanceStats = pgTable(
  'apm_instance_stats',
  {
    service: text('service').notNull(),
    env: text('env').notNull(),
    version: text('version').notNull(),
    instance: text('instance').notNull(),
    bucket: bigNumber('bucket').notNull(),
    // Summed on every flush into the bucket, so bigint like apm_stats'.
    hits: bigNumber('hits').notNull(),
    errors: bigNumber('errors').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.service, t.env, t.version, t.instance, t.bucket] }),
    index('apm_instance_stats_service_bucket_idx').on(t.service, t.env, t.bucket),
    index('apm_instance_stats_bucket_idx').on(t.bucket),
  ],
);

export const otlpReceipts = pgTable(
  'otlp_receipts',
  {
    digest: text('digest').primaryKey(),
    receivedAt: bigNumber('received_at').notNull(),
  },
  (t) => [index('otlp_receipts_received_at_idx').on(t.receivedAt)],
);

export const freezes = pgTable(
  'freezes',
  {
    id: text('id').primaryKey(),
    env: text('env').notNull(),
    service: text('service'),
    reason: text('reason').notNull(),
    startsAt: instant('starts_at').notNull(),
    endsAt: instant('ends_at'),
    endedAt: instant('ended_at'),
    endedById: text('ended_by_id'),
    endedByName: text('ended_by_name'),
    endReason: text('end_reason'),
    ...timestamps,
  },
  (t) => [index('freezes_env_idx').on(t.env, t.startsAt)],
);

export const backtests = pgTable(
  'backtests',
  {
    id: text('id').primaryKey(),
    gateId: text('gate_id').references(() => gates.id, { onDelete: 'set null' }),
    service: text('service').notNull(),
    env: text('env').notNull(),
    configuration: jsonb('configuration').notNull().$type<Record<string, unknown>>(),
    from: instant('from').notNull(),
    to: instant('to').notNull(),
    status: text('status', { enum: sqlite.BACKTEST_STATUSES }).notNull(),
    done: integer('done').notNull().default(0),
    total: integer('total').notNull().default(0),
    results: jsonb('results').notNull().$type<Array<Record<string, unknown>>>(),
    skippedRules: jsonb('skipped_rules').notNull().$type<Array<{ name: string; type: string; why: string }>>(),
    summary: jsonb('summary').$type<Record<string, unknown>>(),
    error: text('error'),
    nodeId: text('node_id').notNull(),
    leaseExpiresAt: instant('lease_expires_at'),
    triggerEnvs: jsonb('trigger_envs').$type<string[]>(),
    createdById: text('created_by_id').notNull(),
    createdByName: text('created_by_name').notNull(),
    createdAt: instant('created_at').notNull(),
    finishedAt: instant('finished_at'),
    revision: integer('revision').notNull().default(1),
  },
  (t) => [
    index('backtests_env_idx').on(t.env, t.id),
    index('backtests_running_by_key_idx').on(t.createdById).where(sql`${t.status} = 'running'`),
    index('backtests_gate_idx').on(t.gateId),
  ],
);

export const notificationChannels = pgTable('notification_channels', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  type: text('type', { enum: sqlite.CHANNEL_TYPES }).notNull(),
  url: text('url').notNull(),
  secret: text('secret'),
  envs: jsonb('envs').notNull().$type<string[]>(),
  ...timestamps,
});

export const notificationSubscriptions = pgTable(
  'notification_subscriptions',
  {
    id: text('id').primaryKey(),
    channelId: text('channel_id').notNull(),
    gateId: text('gate_id').references(() => gates.id, { onDelete: 'cascade' }),
    service: text('service'),
    env: text('env').notNull(),
    events: jsonb('events').notNull().$type<sqlite.NotificationEvent[]>(),
    ...timestamps,
  },
  (t) => [
    // Named: drizzle's default name passes PostgreSQL's 63 characters, which it would truncate.
    foreignKey({ name: 'notification_subscriptions_channel_id_fk', columns: [t.channelId], foreignColumns: [notificationChannels.id] }).onDelete('cascade'),
    index('notification_subscriptions_env_idx').on(t.env),
    index('notification_subscriptions_channel_idx').on(t.channelId),
  ],
);

export const notificationOutbox = pgTable(
  'notification_outbox',
  {
    id: text('id').primaryKey(),
    eventKey: text('event_key').notNull(),
    event: text('event').notNull(),
    channelId: text('channel_id')
      .notNull()
      .references(() => notificationChannels.id, { onDelete: 'cascade' }),
    subscriptionId: text('subscription_id'),
    evaluationId: text('evaluation_id'),
    env: text('env').notNull(),
    payload: jsonb('payload').notNull().$type<Record<string, unknown>>(),
    status: text('status', { enum: sqlite.DELIVERY_STATUSES }).notNull(),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: instant('next_attempt_at').notNull(),
    claimedBy: text('claimed_by'),
    claimExpiresAt: instant('claim_expires_at'),
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    deliveredAt: instant('delivered_at'),
    createdAt: instant('created_at').notNull(),
  },
  (t) => [
    uniqueIndex('notification_outbox_event_key_unique').on(t.eventKey),
    index('notification_outbox_due_idx').on(t.status, t.nextAttemptAt),
    index('notification_outbox_env_idx').on(t.env, t.id),
    index('notification_outbox_channel_idx').on(t.channelId, t.id),
    index('notification_outbox_channel_due_idx').on(t.channelId, t.status, t.nextAttemptAt, t.id),
  ],
);

export const leases = pgTable('leases', {
  name: text('name').primaryKey(),
  owner: text('owner').notNull(),
  expiresAt: instant('expires_at').notNull(),
});
