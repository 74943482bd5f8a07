import { sql } from 'drizzle-orm';
import { blob, index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

// Times are epoch milliseconds. Ids are UUIDv7, so ordering by id is ordering by creation.

const timestamps = {
  createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  createdById: text('created_by_id').notNull(),
  createdByName: text('created_by_name').notNull(),
  updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  updatedById: text('updated_by_id').notNull(),
  updatedByName: text('updated_by_name').notNull(),
};

export const gates = sqliteTable(
  'gates',
  {
    id: text('id').primaryKey(),
    service: text('service').notNull(),
    env: text('env').notNull(),
    identifier: text('identifier').notNull(),
    dryRun: integer('dry_run', { mode: 'boolean' }).notNull(),
    onSourceError: text('on_source_error', { enum: ['fail', 'pass'] }).notNull(),
    ...timestamps,
  },
  (t) => [uniqueIndex('gates_key_unique').on(t.service, t.env, t.identifier), index('gates_env_idx').on(t.env)],
);

/**
 * The rule types: the one list (tables, validation, GraphQL and the engine's runners all
 * follow it). A new type is added here, then gets its options (src/domain/ruleOptions.ts)
 * and its runner (src/engine/runners.ts).
 */
export const RULE_TYPES = ['monitor', 'faulty_deployment_detection', 'metric', 'webhook', 'freeze'] as const;
export type RuleType = (typeof RULE_TYPES)[number];

export const rules = sqliteTable(
  'rules',
  {
    id: text('id').primaryKey(),
    gateId: text('gate_id')
      .notNull()
      .references(() => gates.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    type: text('type', { enum: RULE_TYPES }).notNull(),
    dryRun: integer('dry_run', { mode: 'boolean' }).notNull(),
    /** The validated, defaulted options of the rule's type (camelCase JSON). */
    options: text('options', { mode: 'json' }).notNull().$type<Record<string, unknown>>(),
    ...timestamps,
  },
  (t) => [uniqueIndex('rules_gate_name_unique').on(t.gateId, t.name)],
);

export const apiKeys = sqliteTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    /** sha256 of the secret; the secret itself is shown once and never stored. */
    secretHash: text('secret_hash').notNull(),
    /** The first characters of the secret, so a person can tell keys apart. */
    prefix: text('prefix').notNull(),
    scopes: text('scopes', { mode: 'json' }).notNull().$type<string[]>(),
    /** null: every environment. */
    envs: text('envs', { mode: 'json' }).$type<string[] | null>(),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    createdById: text('created_by_id'),
    expiresAt: integer('expires_at', { mode: 'timestamp_ms' }),
    lastUsedAt: integer('last_used_at', { mode: 'timestamp_ms' }),
    revokedAt: integer('revoked_at', { mode: 'timestamp_ms' }),
  },
  (t) => [uniqueIndex('api_keys_secret_hash_unique').on(t.secretHash)],
);

/** Who changed which configuration, when, and what it looked like before and after. */
export const auditLog = sqliteTable(
  'audit_log',
  {
    id: text('id').primaryKey(),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    actorId: text('actor_id').notNull(),
    actorName: text('actor_name').notNull(),
    action: text('action').notNull(),
    targetType: text('target_type').notNull(),
    targetId: text('target_id').notNull(),
    before: text('before', { mode: 'json' }),
    after: text('after', { mode: 'json' }),
  },
  (t) => [index('audit_log_target_idx').on(t.targetType, t.targetId), index('audit_log_at_idx').on(t.at)],
);

/**
 * One run of a gate for a version. The rules are snapshotted into rule_evaluations at trigger
 * time, so editing or deleting the gate never changes a running evaluation (gate_id is only a
 * link for history and becomes null when the gate goes).
 */
export const evaluations = sqliteTable(
  'evaluations',
  {
    id: text('id').primaryKey(),
    gateId: text('gate_id').references(() => gates.id, { onDelete: 'set null' }),
    service: text('service').notNull(),
    env: text('env').notNull(),
    identifier: text('identifier').notNull(),
    version: text('version'),
    primaryTag: text('primary_tag'),
    dryRun: integer('dry_run', { mode: 'boolean' }).notNull(),
    onSourceError: text('on_source_error', { enum: ['fail', 'pass'] }).notNull(),
    /** Real status, dry run ignored; what callers act on is derived from it and dry_run. */
    status: text('status', { enum: ['in_progress', 'pass', 'fail', 'canceled'] }).notNull(),
    justInTime: integer('just_in_time', { mode: 'boolean' }).notNull(),
    /** Unique per environment: a key used in another env is not this env's business. */
    idempotencyKey: text('idempotency_key'),
    rerunOf: text('rerun_of'),
    /**
     * The environments the trigger's key may see (null: all). Rules match only monitors
     * visible under them, so an evaluation never reaches further than the key that started it.
     */
    triggerEnvs: text('trigger_envs', { mode: 'json' }).$type<string[]>(),
    triggeredById: text('triggered_by_id').notNull(),
    triggeredByName: text('triggered_by_name').notNull(),
    startedAt: integer('started_at', { mode: 'timestamp_ms' }).notNull(),
    /** When the reported verdict became known; rules may keep running after it. */
    decidedAt: integer('decided_at', { mode: 'timestamp_ms' }),
    /** When the last rule finished. */
    finishedAt: integer('finished_at', { mode: 'timestamp_ms' }),
    /** Work sharing between processes: who drives this evaluation, and until when. */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: integer('lease_expires_at', { mode: 'timestamp_ms' }),
    /** Bumped by every change, so a subscriber can tell an event it has seen from a new one. */
    revision: integer('revision').notNull().default(1),
    /**
     * A person's verdict in place of the gate's (overrideEvaluation): what the deploy is told
     * from then on; null: not overridden. The real status and evidence stay as they were.
     */
    overrideStatus: text('override_status', { enum: ['pass', 'fail'] }),
    overrideReason: text('override_reason'),
    overriddenAt: integer('overridden_at', { mode: 'timestamp_ms' }),
    overriddenById: text('overridden_by_id'),
    overriddenByName: text('overridden_by_name'),
    /** The reported status the (latest) override replaced. */
    overrideReplaced: text('override_replaced', { enum: ['in_progress', 'pass', 'fail', 'canceled'] }),
  },
  (t) => [
    uniqueIndex('evaluations_env_idempotency_unique').on(t.env, t.idempotencyKey).where(sql`${t.idempotencyKey} is not null`),
    index('evaluations_key_started_idx').on(t.service, t.env, t.identifier, t.startedAt),
    index('evaluations_status_idx').on(t.status),
    index('evaluations_started_idx').on(t.startedAt),
    index('evaluations_gate_idx').on(t.gateId),
    index('evaluations_unfinished_idx').on(t.finishedAt, t.leaseOwner),
    // The per-key limits (src/db/evaluationQuotas.ts): evaluations started in the last minute,
    // and those still running (partial: only the few unfinished are in it).
    index('evaluations_triggered_by_started_idx').on(t.triggeredById, t.startedAt),
    index('evaluations_running_by_key_idx').on(t.triggeredById).where(sql`${t.finishedAt} is null`),
  ],
);

export const ruleEvaluations = sqliteTable(
  'rule_evaluations',
  {
    id: text('id').primaryKey(),
    evaluationId: text('evaluation_id')
      .notNull()
      .references(() => evaluations.id, { onDelete: 'cascade' }),
    ruleId: text('rule_id'),
    position: integer('position').notNull(),
    name: text('name').notNull(),
    type: text('type', { enum: RULE_TYPES }).notNull(),
    dryRun: integer('dry_run', { mode: 'boolean' }).notNull(),
    /** Options as evaluated (snapshot). */
    options: text('options', { mode: 'json' }).notNull().$type<Record<string, unknown>>(),
    status: text('status', { enum: ['in_progress', 'pass', 'fail', 'canceled'] }).notNull(),
    reason: text('reason'),
    evidence: text('evidence', { mode: 'json' }).$type<Record<string, unknown>>(),
    startedAt: integer('started_at', { mode: 'timestamp_ms' }).notNull(),
    /** start + warmup: before it, the rule only waits. */
    windowStartsAt: integer('window_starts_at', { mode: 'timestamp_ms' }).notNull(),
    windowEndsAt: integer('window_ends_at', { mode: 'timestamp_ms' }).notNull(),
    finishedAt: integer('finished_at', { mode: 'timestamp_ms' }),
    /** Scheduler state: everything a rule needs to continue after a restart. */
    nextCheckAt: integer('next_check_at', { mode: 'timestamp_ms' }),
    consecutiveErrors: integer('consecutive_errors').notNull().default(0),
    lastError: text('last_error'),
    /** Runner-specific accumulated state (counts, seen transitions, e-values). */
    state: text('state', { mode: 'json' }).$type<Record<string, unknown>>(),
  },
  (t) => [
    index('rule_evaluations_evaluation_idx').on(t.evaluationId, t.position),
    index('rule_evaluations_due_idx').on(t.status, t.nextCheckAt),
    // A stored rule's history (REST filter[rule_id]) reads its own rows, not the window's.
    index('rule_evaluations_rule_idx').on(t.ruleId),
  ],
);

/**
 * Every revision of every evaluation, as published (the evaluation row with its rule rows, in
 * the tagged JSON of src/db/taggedJson.ts so Dates come back as Dates): a live reader that
 * missed events (an outage of the events between instances) reads the revisions between the
 * last it showed and the one it hears, so it never skips one. One row per revision, deleted
 * with its evaluation.
 */
export const evaluationRevisions = sqliteTable(
  'evaluation_revisions',
  {
    evaluationId: text('evaluation_id')
      .notNull()
      .references(() => evaluations.id, { onDelete: 'cascade' }),
    revision: integer('revision').notNull(),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    snapshot: text('snapshot', { mode: 'json' }).notNull().$type<unknown>(),
  },
  // By time: what was written while events between instances were lost (src/domain/revisionFeed.ts).
  (t) => [primaryKey({ columns: [t.evaluationId, t.revision] }), index('evaluation_revisions_at_idx').on(t.at)],
);

export const MONITOR_STATES = ['ok', 'warn', 'alert', 'no_data'] as const;
export type MonitorStateValue = (typeof MONITOR_STATES)[number];

/** Where a monitor's states come from; each type has its source (src/sources/monitorSources.ts). */
export const MONITOR_TYPES = ['external', 'apm', 'prometheus'] as const;
export type MonitorType = (typeof MONITOR_TYPES)[number];

/** A monitor: something with a state per group that monitor rules look at. */
export const monitors = sqliteTable(
  'monitors',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    type: text('type', { enum: MONITOR_TYPES }).notNull(),
    /** Static tags, "key:value" strings. */
    tags: text('tags', { mode: 'json' }).notNull().$type<string[]>(),
    /** The monitor's own query (PromQL, APM filter); `scope:` searches look inside it. */
    query: text('query').notNull().default(''),
    /** Kind-specific definition (APM metric and filters, PromQL details). */
    definition: text('definition', { mode: 'json' }).$type<Record<string, unknown>>(),
    critical: real('critical'),
    warning: real('warning'),
    muted: integer('muted', { mode: 'boolean' }).notNull(),
    priority: integer('priority'),
    /** Seconds without data before a group goes NO_DATA; null never. */
    noDataTimeframe: integer('no_data_timeframe'),
    /** Consecutive failures of the monitor's data source (Prometheus down); rules treat them as source errors. */
    sourceErrors: integer('source_errors').notNull().default(0),
    lastSourceError: text('last_source_error'),
    /**
     * Set on the monitors the Alertmanager receiver creates (src/sources/alertmanager.ts): one per
     * key, so instances receiving the same new alertname at once create one monitor, not two.
     */
    alertKey: text('alert_key'),
    ...timestamps,
  },
  (t) => [index('monitors_name_idx').on(t.name), uniqueIndex('monitors_alert_key_idx').on(t.alertKey)],
);

/** The current state of each group of a monitor; "*" is the monitor as a whole. */
export const monitorGroups = sqliteTable(
  'monitor_groups',
  {
    monitorId: text('monitor_id')
      .notNull()
      .references(() => monitors.id, { onDelete: 'cascade' }),
    group: text('group').notNull(),
    state: text('state', { enum: MONITOR_STATES }).notNull(),
    since: integer('since', { mode: 'timestamp_ms' }).notNull(),
    message: text('message'),
    lastReportedAt: integer('last_reported_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.monitorId, t.group] })],
);

/**
 * Every state change, kept so that a rule can ask "was any group ALERT at any instant of my
 * window?" after the fact: an ALERT shorter than any check interval still counts.
 */
export const monitorTransitions = sqliteTable(
  'monitor_transitions',
  {
    id: text('id').primaryKey(),
    monitorId: text('monitor_id')
      .notNull()
      .references(() => monitors.id, { onDelete: 'cascade' }),
    group: text('group').notNull(),
    from: text('from', { enum: MONITOR_STATES }),
    to: text('to', { enum: MONITOR_STATES }).notNull(),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    message: text('message'),
  },
  (t) => [index('monitor_transitions_monitor_at_idx').on(t.monitorId, t.at), index('monitor_transitions_at_idx').on(t.at)],
);

/** Width of an APM time bucket. Spans land in the bucket of their own start time. */
export const APM_BUCKET_MS = 10_000;

const apmKey = {
  service: text('service').notNull(),
  env: text('env').notNull(),
  /** '' when the span carried no service.version. */
  version: text('version').notNull(),
  resource: text('resource').notNull(),
  /** Primary-tag values of the spans, "region:us-east-1" (sorted, comma-joined); '' for none. */
  primaryTag: text('primary_tag').notNull(),
  bucket: integer('bucket').notNull(),
};

/** Requests (SERVER and CONSUMER spans) per key and time bucket. */
export const apmStats = sqliteTable(
  'apm_stats',
  {
    ...apmKey,
    hits: integer('hits').notNull(),
    errors: integer('errors').notNull(),
    /** DDSketch of durations in milliseconds (protobuf), mergeable across buckets. */
    durations: blob('durations', { mode: 'buffer' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.service, t.env, t.version, t.resource, t.primaryTag, t.bucket] }),
    index('apm_stats_service_bucket_idx').on(t.service, t.env, t.bucket),
    index('apm_stats_bucket_idx').on(t.bucket),
  ],
);

/** Errors per type, next to the requests they belong to. */
export const apmErrors = sqliteTable(
  'apm_errors',
  {
    ...apmKey,
    errorType: text('error_type').notNull(),
    count: integer('count').notNull(),
    sampleMessage: text('sample_message'),
  },
  (t) => [
    primaryKey({ columns: [t.service, t.env, t.version, t.resource, t.primaryTag, t.errorType, t.bucket] }),
    index('apm_errors_service_bucket_idx').on(t.service, t.env, t.bucket),
  ],
);

/**
 * Requests per instance (the span's resource: service.instance.id, else k8s.pod.name, else
 * host.name) of a version and time bucket, for rules that measure how the pods of one version
 * differ. Spans without an instance are not kept here; at most APM_INSTANCES_PER_REQUEST
 * (src/sources/apmWriter.ts) instances of a service, env and version per OTLP request are.
 * Kept APM_INSTANCE_RETENTION_MS (src/db/apm.ts), far less than apm_stats.
 */
export const apmInstanceStats = sqliteTable(
  'apm_instance_stats',
  {
    service: text('service').notNull(),
    env: text('env').notNull(),
    /** '' when the span carried no service.version. */
    version: text('version').notNull(),
    /** At most MAX_INSTANCE_LENGTH characters (src/sources/otlp.ts). */
    instance: text('instance').notNull(),
    bucket: integer('bucket').notNull(),
    hits: integer('hits').notNull(),
    errors: integer('errors').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.service, t.env, t.version, t.instance, t.bucket] }),
    index('apm_instance_stats_service_bucket_idx').on(t.service, t.env, t.bucket),
    index('apm_instance_stats_bucket_idx').on(t.bucket),
  ],
);

/**
 * OTLP requests stored lately, by a digest of the key that sent them and their body: an
 * exporter that lost the answer sends the same request again, and the retry then counts
 * nothing twice. Kept for OTLP_RECEIPT_MS (src/db/apm.ts), well past exporters' retries.
 */
export const otlpReceipts = sqliteTable(
  'otlp_receipts',
  {
    /** SHA-256 (hex) of the key's id, the encoding and the decompressed body. */
    digest: text('digest').primaryKey(),
    /** Epoch milliseconds. */
    receivedAt: integer('received_at').notNull(),
  },
  (t) => [index('otlp_receipts_received_at_idx').on(t.receivedAt)],
);

/**
 * Ad-hoc freezes set through the API: while one is active in an environment (for one service or
 * all), freeze rules of that environment fail. Ending one keeps it, with who ended it and when.
 */
export const freezes = sqliteTable(
  'freezes',
  {
    id: text('id').primaryKey(),
    env: text('env').notNull(),
    /** null: every service of the environment. */
    service: text('service'),
    reason: text('reason').notNull(),
    startsAt: integer('starts_at', { mode: 'timestamp_ms' }).notNull(),
    /** Planned end; null: until ended. */
    endsAt: integer('ends_at', { mode: 'timestamp_ms' }),
    /** When it was lifted through the API (endFreeze). */
    endedAt: integer('ended_at', { mode: 'timestamp_ms' }),
    endedById: text('ended_by_id'),
    endedByName: text('ended_by_name'),
    endReason: text('end_reason'),
    ...timestamps,
  },
  (t) => [index('freezes_env_idx').on(t.env, t.startsAt)],
);

export const BACKTEST_STATUSES = ['running', 'done', 'canceled', 'failed'] as const;
export type BacktestStatus = (typeof BACKTEST_STATUSES)[number];

/**
 * A gate's rules replayed over past deploys found in the stored telemetry (src/engine/backtest.ts).
 * The rules are snapshotted at the start, like an evaluation's; results and summary are JSON,
 * bounded by the number of deploys a backtest may hold.
 */
export const backtests = sqliteTable(
  'backtests',
  {
    id: text('id').primaryKey(),
    /** The gate replayed, null for rules given inline (or once the gate is deleted). */
    gateId: text('gate_id').references(() => gates.id, { onDelete: 'set null' }),
    service: text('service').notNull(),
    env: text('env').notNull(),
    /** The gate's settings and rules as replayed. */
    configuration: text('configuration', { mode: 'json' }).notNull().$type<Record<string, unknown>>(),
    from: integer('from', { mode: 'timestamp_ms' }).notNull(),
    to: integer('to', { mode: 'timestamp_ms' }).notNull(),
    status: text('status', { enum: BACKTEST_STATUSES }).notNull(),
    /** Deploys replayed so far, of `total`. */
    done: integer('done').notNull().default(0),
    total: integer('total').notNull().default(0),
    results: text('results', { mode: 'json' }).notNull().$type<Array<Record<string, unknown>>>(),
    skippedRules: text('skipped_rules', { mode: 'json' }).notNull().$type<Array<{ name: string; type: string; why: string }>>(),
    summary: text('summary', { mode: 'json' }).$type<Record<string, unknown>>(),
    /** Why it failed, or who canceled it. */
    error: text('error'),
    /** The process running it, while `leaseExpiresAt` is ahead: it renews the lease as it runs. */
    nodeId: text('node_id').notNull(),
    /** Past it (or null: a row of a version without leases), a running backtest's process is gone and any instance fails it. */
    leaseExpiresAt: integer('lease_expires_at', { mode: 'timestamp_ms' }),
    /** The environments the starting key could see: rules match only monitors visible under them. */
    triggerEnvs: text('trigger_envs', { mode: 'json' }).$type<string[]>(),
    createdById: text('created_by_id').notNull(),
    createdByName: text('created_by_name').notNull(),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    finishedAt: integer('finished_at', { mode: 'timestamp_ms' }),
    revision: integer('revision').notNull().default(1),
  },
  (t) => [
    index('backtests_env_idx').on(t.env, t.id),
    index('backtests_running_by_key_idx').on(t.createdById).where(sql`${t.status} = 'running'`),
    index('backtests_gate_idx').on(t.gateId),
  ],
);

/** What a notification subscription can be told of (src/domain/notifications.ts). */
export const NOTIFICATION_EVENTS = ['fail', 'recovered', 'override', 'source_error'] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];
/** How a channel's messages are shaped: a signed JSON webhook, or a Slack incoming webhook. */
export const CHANNEL_TYPES = ['webhook', 'slack'] as const;
export type ChannelType = (typeof CHANNEL_TYPES)[number];
export const DELIVERY_STATUSES = ['pending', 'delivering', 'delivered', 'failed'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * Where notifications go. A channel serves the environments it lists: only keys that may see
 * all of them see (and change) it, and its subscriptions stay within them.
 */
export const notificationChannels = sqliteTable('notification_channels', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  type: text('type', { enum: CHANNEL_TYPES }).notNull(),
  /** On TOLLGATE_WEBHOOK_ALLOWED_HOSTS when stored, checked again before every delivery. */
  url: text('url').notNull(),
  /** The HMAC signing secret of a webhook channel, sealed (src/domain/secrets.ts); null for Slack. */
  secret: text('secret'),
  envs: text('envs', { mode: 'json' }).notNull().$type<string[]>(),
  ...timestamps,
});

/** Which events of which evaluations a channel is told of: one gate, or a service/env query. */
export const notificationSubscriptions = sqliteTable(
  'notification_subscriptions',
  {
    id: text('id').primaryKey(),
    channelId: text('channel_id')
      .notNull()
      .references(() => notificationChannels.id, { onDelete: 'cascade' }),
    /** Only this gate's evaluations; null: every evaluation matching service and env. */
    gateId: text('gate_id').references(() => gates.id, { onDelete: 'cascade' }),
    /** null: every service of env. */
    service: text('service'),
    env: text('env').notNull(),
    events: text('events', { mode: 'json' }).notNull().$type<NotificationEvent[]>(),
    ...timestamps,
  },
  (t) => [index('notification_subscriptions_env_idx').on(t.env), index('notification_subscriptions_channel_idx').on(t.channelId)],
);

/**
 * The durable outbox: one row per subscription and event, written in the transaction of the
 * change that caused it. event_key is unique, so one event is never queued twice; a worker
 * claims a row (status delivering, attempts + 1) before it sends.
 */
export const notificationOutbox = sqliteTable(
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
    /** What the message says, as it stood when the event happened. */
    payload: text('payload', { mode: 'json' }).notNull().$type<Record<string, unknown>>(),
    status: text('status', { enum: DELIVERY_STATUSES }).notNull(),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: integer('next_attempt_at', { mode: 'timestamp_ms' }).notNull(),
    /** Who holds a row being delivered, and until when (a crashed sender's claim runs out). */
    claimedBy: text('claimed_by'),
    claimExpiresAt: integer('claim_expires_at', { mode: 'timestamp_ms' }),
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    deliveredAt: integer('delivered_at', { mode: 'timestamp_ms' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    uniqueIndex('notification_outbox_event_key_unique').on(t.eventKey),
    index('notification_outbox_due_idx').on(t.status, t.nextAttemptAt),
    index('notification_outbox_env_idx').on(t.env, t.id),
    index('notification_outbox_channel_idx').on(t.channelId, t.id),
    /** A claim's reads: the first due rows of each channel. */
    index('notification_outbox_channel_due_idx').on(t.channelId, t.status, t.nextAttemptAt, t.id),
  ],
);

/**
 * Work one instance of several does at a time (the monitor evaluator): a named lease held by one
 * node until it expires, renewed while the node keeps doing the work.
 */
export const leases = sqliteTable('leases', {
  name: text('name').primaryKey(),
  owner: text('owner').notNull(),
  expiresAt: integer('expires_at', { mode: 'timestamp_ms' }).notNull(),
});
