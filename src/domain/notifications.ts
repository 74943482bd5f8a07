// Notifications: channels (a signed JSON webhook or a Slack incoming webhook), subscriptions
// (one gate, or a service/env query, and the events wanted) and a durable outbox. An event is
// queued in the transaction of the change that caused it (queueNotifications), one row per
// subscription and event under a unique key, so it is never queued twice; the engine's
// notifier (src/engine/notifier.ts) claims due rows and delivers them.
//
// Who sees what: a channel lists the environments it serves, and only a key that may see all
// of them sees or changes it. A subscription or a delivery is seen when its env is visible and
// so is its channel. Anything else answers exactly like an id that does not exist.
import { createHmac } from 'node:crypto';
import { z } from 'zod';
import { insertAudit } from '../db/audit.ts';
import { type Tx, transaction } from '../db/client.ts';
import type { EvaluationRow, RuleEvaluationRow } from '../db/evaluations.ts';
import { getGate } from '../db/gates.ts';
import {
  type ChannelRow,
  claimDue,
  countChannelsOfEnv,
  countSubscriptionsOfEnv,
  type DeliveryFilter,
  deleteChannelRow,
  deleteDeliveriesOfChannel,
  deleteSubscriptionRow,
  getChannel as getChannelRow,
  getDelivery as getDeliveryRow,
  getSubscription as getSubscriptionRow,
  insertChannel,
  insertOutbox,
  insertSubscription,
  listChannels as listChannelRows,
  listDeliveries as listDeliveryRows,
  listSubscriptions as listSubscriptionRows,
  matchingSubscriptions,
  type NewOutboxRow,
  nextDueAt,
  type OutboxRow,
  previousVerdict,
  type SubscriptionRow,
  settleClaim,
  subscriptionEnvsOf,
  unsettledTests,
  updateChannelRow,
  updateSubscriptionRow,
} from '../db/notifications.ts';
import { CHANNEL_TYPES, DELIVERY_STATUSES, NOTIFICATION_EVENTS, type NotificationEvent } from '../db/schema.ts';
import { actorFields } from '../log.ts';
import type { Deps } from './deps.ts';
import { badInput, conflict, notFound } from './errors.ts';
import type { EvaluationSnapshot } from './events.ts';
import { tagValue } from './gates.ts';
import { assertUuid, newId } from './ids.ts';
import { assertEnvAllowed, canSeeEnv, type Principal, requireScope } from './principal.ts';
import { ruleEvaluationFor } from './ruleEvidence.ts';
import { nullsAsUndefined, webhookUrlSchema } from './ruleOptions.ts';
import { openSecret, SecretUnavailableError, sealSecret } from './secrets.ts';
import { audit, stamp } from './stamp.ts';
import { reported } from './verdict.ts';
import { hostRefusal } from './webhooks.ts';

export type { ChannelRow, OutboxRow, SubscriptionRow };
export { DELIVERY_STATUSES };

/**
 * Bounds: channels per environment, counted among those the key sees (so a key of one env
 * fills only its own slots, and a refusal counts nothing it may not see); subscriptions per
 * environment (every change of its evaluations reads them).
 */
const MAX_CHANNELS_PER_ENV = 200;
const MAX_SUBSCRIPTIONS_PER_ENV = 200;
export const MAX_PAGE = 100;
/** Test messages one channel may have waiting: tests are for a person checking a channel, not a load. */
const MAX_UNSETTLED_TESTS = 3;
/** Failing rules a message names, and the characters kept of each reason. */
const MAX_RULES_IN_MESSAGE = 10;
const MAX_REASON_CHARS = 500;

// ---- input ----

const envsSchema = z
  .array(tagValue('envs[]'), { message: 'envs is required: the environments the channel serves' })
  .min(1, 'envs must list at least one environment')
  .max(50, 'envs lists at most 50 environments')
  .transform((envs) => [...new Set(envs)]);
const secretSchema = z.string().min(16, 'secret must be at least 16 characters').max(500, 'secret is at most 500 characters');
const nameSchema = z.string({ message: 'name is required' }).trim().min(1, 'name must not be empty').max(200, 'name is at most 200 characters');

export const createChannelInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      name: nameSchema,
      type: z.enum(CHANNEL_TYPES, { message: 'type must be webhook or slack' }),
      url: webhookUrlSchema,
      envs: envsSchema,
      secret: secretSchema.optional(),
    })
    .strict(),
);
export type CreateChannelInput = z.output<typeof createChannelInputSchema>;

export const updateChannelInputSchema = z.preprocess(
  nullsAsUndefined,
  z.object({ name: nameSchema.optional(), url: webhookUrlSchema.optional(), envs: envsSchema.optional(), secret: secretSchema.optional() }).strict(),
);
export type UpdateChannelInput = z.output<typeof updateChannelInputSchema>;

const eventsSchema = z
  .array(z.enum(NOTIFICATION_EVENTS, { message: `events are ${NOTIFICATION_EVENTS.join(', ')}` }), { message: 'events is required' })
  .min(1, 'events must list at least one event')
  .max(NOTIFICATION_EVENTS.length)
  .transform((events) => [...new Set(events)]);

export const createSubscriptionInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      channelId: z.string({ message: 'channelId is required' }),
      gateId: z.string().optional(),
      service: tagValue('service').optional(),
      env: tagValue('env'),
      events: eventsSchema,
    })
    .strict(),
);
export type CreateSubscriptionInput = z.output<typeof createSubscriptionInputSchema>;

export const updateSubscriptionInputSchema = z.preprocess(nullsAsUndefined, z.object({ events: eventsSchema }).strict());

// ---- visibility ----

const canSeeChannel = (actor: Principal, c: Pick<ChannelRow, 'envs'>) => actor.envs === null || c.envs.every((e) => actor.envs!.includes(e));

const noChannel = (id: string, field = 'id') => notFound(`notification channel ${id} does not exist`, field);
const noSubscription = (id: string) => notFound(`notification subscription ${id} does not exist`, 'id');

const requireRead = (actor: Principal) => requireScope(actor, 'gates:read', 'read notifications');
const requireWrite = (actor: Principal, action: string) => requireScope(actor, 'gates:write', action);

/** A page size asked for: 1 to MAX_PAGE. */
function notificationPageSize(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE) throw badInput('first', `must be between 1 and ${MAX_PAGE}, got ${first}`);
  return first;
}

async function visibleChannel(deps: Deps | { db: Tx }, actor: Principal, id: string, field = 'id'): Promise<ChannelRow> {
  const c = await getChannelRow(deps.db, assertUuid(id, field));
  if (!c || !canSeeChannel(actor, c)) throw noChannel(id, field);
  return c;
}

// ---- reads ----

export async function getChannel(deps: Deps, actor: Principal, id: string): Promise<ChannelRow | null> {
  requireRead(actor);
  const c = await getChannelRow(deps.db, assertUuid(id, 'id'));
  return c && canSeeChannel(actor, c) ? c : null;
}

export async function listChannels(deps: Deps, actor: Principal, page: { after?: string; first: number }): Promise<ChannelRow[]> {
  requireRead(actor);
  if (page.after) assertUuid(page.after, 'after');
  return listChannelRows(deps.db, actor.envs, { after: page.after, limit: notificationPageSize(page.first) });
}

/** The channel of a subscription or delivery the actor sees (so the channel is visible too). */
export async function channelOf(deps: Deps, actor: Principal, channelId: string): Promise<ChannelRow | null> {
  const c = await getChannelRow(deps.db, channelId);
  return c && canSeeChannel(actor, c) ? c : null;
}

export async function listSubscriptions(deps: Deps, actor: Principal, filter: { channelId?: string }, page: { after?: string; first: number }): Promise<SubscriptionRow[]> {
  requireRead(actor);
  if (page.after) assertUuid(page.after, 'after');
  if (filter.channelId) assertUuid(filter.channelId, 'channelId');
  return listSubscriptionRows(deps.db, actor.envs, filter, { after: page.after, limit: notificationPageSize(page.first) });
}

export async function listDeliveries(deps: Deps, actor: Principal, filter: DeliveryFilter, page: { after?: string; first: number }): Promise<OutboxRow[]> {
  requireRead(actor);
  if (page.after) assertUuid(page.after, 'after');
  if (filter.channelId) assertUuid(filter.channelId, 'filter.channelId');
  if (filter.evaluationId) assertUuid(filter.evaluationId, 'filter.evaluationId');
  for (const s of filter.status ?? []) if (!(DELIVERY_STATUSES as readonly string[]).includes(s)) throw badInput('filter.status', `${s} is not a delivery status`);
  return listDeliveryRows(deps.db, actor.envs, filter, { after: page.after, limit: notificationPageSize(page.first) });
}

export async function getDelivery(deps: Deps, actor: Principal, id: string): Promise<OutboxRow | null> {
  requireRead(actor);
  const d = await getDeliveryRow(deps.db, assertUuid(id, 'id'));
  return d && canSeeEnv(actor, d.env) && (await channelOf(deps, actor, d.channelId)) ? d : null;
}

/** What readers see of a channel's URL: a Slack webhook's path is its secret. */
export function publicChannelUrl(c: Pick<ChannelRow, 'type' | 'url'>): string {
  if (c.type !== 'slack') return c.url;
  return `${new URL(c.url).origin}/…`;
}

// ---- writes: one transaction each, audited ----

/** The audit's view of a channel: never the sealed secret, nor a Slack URL's path. */
const auditedChannel = (c: ChannelRow) => ({ ...c, url: publicChannelUrl(c), secret: c.secret ? '(sealed)' : null });

/** A secret opens only for its channel, sent to the origin it was sealed for. */
const secretContext = (channelId: string, url: string) => `notification-channel\u0000${channelId}\u0000${new URL(url).origin}`;

function sealed(deps: Deps, channelId: string, url: string, secret: string): string {
  if (!deps.config.secretKey) throw badInput('input.secret', 'secrets are stored encrypted, and TOLLGATE_SECRET_KEY is not set on this Tollgate: ask the operator to set it');
  return sealSecret(deps.config.secretKey, secret, secretContext(channelId, url));
}

function assertUrlAllowed(deps: Deps, url: string): void {
  const refusal = hostRefusal(deps.config.webhookAllowedHosts, url);
  if (refusal) throw badInput('input.url', refusal);
}

async function assertChannelRoom(tx: Tx, actor: Principal, envs: readonly string[]): Promise<void> {
  for (const env of envs) {
    if ((await countChannelsOfEnv(tx, env, actor.envs)) >= MAX_CHANNELS_PER_ENV)
      throw conflict(`env ${env} holds at most ${MAX_CHANNELS_PER_ENV} notification channels`, 'input.envs');
  }
}

function assertEnvsAllowed(actor: Principal, envs: readonly string[]): void {
  for (const env of envs) assertEnvAllowed(actor, env);
}

/** After a write commits: cached reads drop what they hold, and the operator gets a line. */
function changed(deps: Deps, actor: Principal, what: string, fields: Record<string, unknown>): void {
  deps.events.publish('config.changed', null);
  deps.log.info({ ...fields, ...actorFields(actor) }, what);
}

export async function createChannel(deps: Deps, actor: Principal, input: CreateChannelInput): Promise<ChannelRow> {
  requireWrite(actor, 'create notification channels');
  assertEnvsAllowed(actor, input.envs);
  assertUrlAllowed(deps, input.url);
  if (input.type === 'webhook' && !input.secret) throw badInput('input.secret', 'is required for a webhook channel: receivers verify the X-Tollgate-Signature with it');
  if (input.type === 'slack' && input.secret) throw badInput('input.secret', 'a slack channel takes no secret: Slack does not verify signatures of incoming webhooks');
  const now = deps.now();
  const id = newId();
  const channel = await transaction(deps.db, async (tx) => {
    await assertChannelRoom(tx, actor, input.envs);
    const row = await insertChannel(tx, {
      id,
      name: input.name,
      type: input.type,
      url: input.url,
      secret: input.secret ? sealed(deps, id, input.url, input.secret) : null,
      envs: input.envs,
      ...stamp(actor, now),
    });
    await insertAudit(tx, [audit(actor, now, 'notification_channel.created', { type: 'notification_channel', id }, null, auditedChannel(row))]);
    return row;
  });
  changed(deps, actor, 'notification channel created', { channelId: id, type: channel.type });
  return channel;
}

export async function updateChannel(deps: Deps, actor: Principal, id: string, input: UpdateChannelInput): Promise<ChannelRow> {
  requireWrite(actor, 'change notification channels');
  if (input.envs) assertEnvsAllowed(actor, input.envs);
  if (input.url) assertUrlAllowed(deps, input.url);
  const now = deps.now();
  const channel = await transaction(deps.db, async (tx) => {
    const before = await visibleChannel({ db: tx }, actor, id);
    if (before.type === 'slack' && input.secret) throw badInput('input.secret', 'a slack channel takes no secret');
    const url = input.url ?? before.url;
    let secret = before.secret;
    if (input.secret) secret = sealed(deps, before.id, url, input.secret);
    else if (before.secret && new URL(url).origin !== new URL(before.url).origin) {
      throw badInput('input.secret', 'give the secret again: the url now points to another origin, and a stored secret is never sent to another host');
    }
    if (input.envs) {
      await assertChannelRoom(
        tx,
        actor,
        input.envs.filter((e) => !before.envs.includes(e)),
      );
      const outside = (await subscriptionEnvsOf(tx, before.id)).filter((e) => !input.envs!.includes(e));
      if (outside.length > 0) throw conflict(`the channel has subscriptions in env ${outside.join(', ')}: delete them first, or keep the env`, 'input.envs');
      // Its messages were written for readers of every env it served, and its pending ones
      // would go wherever a key of the narrower envs now points it: they go with the env.
      if (before.envs.some((e) => !input.envs!.includes(e))) await deleteDeliveriesOfChannel(tx, before.id);
    }
    const row = await updateChannelRow(tx, before.id, {
      name: input.name ?? before.name,
      url,
      secret,
      envs: input.envs ?? before.envs,
      updatedAt: now,
      updatedById: actor.id,
      updatedByName: actor.name,
    });
    await insertAudit(tx, [audit(actor, now, 'notification_channel.updated', { type: 'notification_channel', id: row.id }, auditedChannel(before), auditedChannel(row))]);
    return row;
  });
  changed(deps, actor, 'notification channel updated', { channelId: channel.id });
  return channel;
}

/** Deletes the channel, its subscriptions and its deliveries. Returns the id. */
export async function deleteChannel(deps: Deps, actor: Principal, id: string): Promise<string> {
  requireWrite(actor, 'delete notification channels');
  const now = deps.now();
  await transaction(deps.db, async (tx) => {
    const before = await visibleChannel({ db: tx }, actor, id);
    await deleteChannelRow(tx, before.id);
    await insertAudit(tx, [audit(actor, now, 'notification_channel.deleted', { type: 'notification_channel', id: before.id }, auditedChannel(before), null)]);
  });
  changed(deps, actor, 'notification channel deleted', { channelId: id });
  return id;
}

export async function createSubscription(deps: Deps, actor: Principal, input: CreateSubscriptionInput): Promise<SubscriptionRow> {
  requireWrite(actor, 'create notification subscriptions');
  assertEnvAllowed(actor, input.env);
  const now = deps.now();
  const subscription = await transaction(deps.db, async (tx) => {
    const channel = await visibleChannel({ db: tx }, actor, input.channelId, 'input.channelId');
    if (!channel.envs.includes(input.env)) throw badInput('input.env', `${input.env} is not one of the channel's environments (${channel.envs.join(', ')})`);
    let gateId: string | null = null;
    if (input.gateId) {
      const gate = await getGate(tx, assertUuid(input.gateId, 'input.gateId'));
      if (!gate || !canSeeEnv(actor, gate.env)) throw notFound(`gate ${input.gateId} does not exist`, 'input.gateId');
      if (gate.env !== input.env) throw badInput('input.env', `must be the gate's env (${gate.env})`);
      if (input.service && input.service !== gate.service) throw badInput('input.service', `must be the gate's service (${gate.service}) or omitted`);
      gateId = gate.id;
    }
    if ((await countSubscriptionsOfEnv(tx, input.env)) >= MAX_SUBSCRIPTIONS_PER_ENV) {
      throw conflict(`env ${input.env} holds at most ${MAX_SUBSCRIPTIONS_PER_ENV} notification subscriptions`, 'input.env');
    }
    const row = await insertSubscription(tx, {
      id: newId(),
      channelId: channel.id,
      gateId,
      service: input.service ?? null,
      env: input.env,
      events: input.events,
      ...stamp(actor, now),
    });
    await insertAudit(tx, [audit(actor, now, 'notification_subscription.created', { type: 'notification_subscription', id: row.id }, null, row)]);
    return row;
  });
  changed(deps, actor, 'notification subscription created', { subscriptionId: subscription.id, env: subscription.env });
  return subscription;
}

async function visibleSubscription(tx: Tx, actor: Principal, id: string): Promise<SubscriptionRow> {
  const s = await getSubscriptionRow(tx, assertUuid(id, 'id'));
  if (!s || !canSeeEnv(actor, s.env)) throw noSubscription(id);
  const c = await getChannelRow(tx, s.channelId);
  if (!c || !canSeeChannel(actor, c)) throw noSubscription(id);
  return s;
}

export async function updateSubscription(deps: Deps, actor: Principal, id: string, input: z.output<typeof updateSubscriptionInputSchema>): Promise<SubscriptionRow> {
  requireWrite(actor, 'change notification subscriptions');
  const now = deps.now();
  const subscription = await transaction(deps.db, async (tx) => {
    const before = await visibleSubscription(tx, actor, id);
    const row = await updateSubscriptionRow(tx, before.id, { events: input.events, updatedAt: now, updatedById: actor.id, updatedByName: actor.name });
    await insertAudit(tx, [audit(actor, now, 'notification_subscription.updated', { type: 'notification_subscription', id: row.id }, before, row)]);
    return row;
  });
  changed(deps, actor, 'notification subscription updated', { subscriptionId: subscription.id });
  return subscription;
}

export async function deleteSubscription(deps: Deps, actor: Principal, id: string): Promise<string> {
  requireWrite(actor, 'delete notification subscriptions');
  const now = deps.now();
  await transaction(deps.db, async (tx) => {
    const before = await visibleSubscription(tx, actor, id);
    await deleteSubscriptionRow(tx, before.id);
    await insertAudit(tx, [audit(actor, now, 'notification_subscription.deleted', { type: 'notification_subscription', id: before.id }, before, null)]);
  });
  changed(deps, actor, 'notification subscription deleted', { subscriptionId: id });
  return id;
}

/** Queues a test message to one channel (for one of its envs), delivered like any other. */
export async function sendTestNotification(deps: Deps, actor: Principal, channelId: string): Promise<OutboxRow> {
  requireWrite(actor, 'send test notifications');
  const now = deps.now();
  const row = await transaction(deps.db, async (tx) => {
    const channel = await visibleChannel({ db: tx }, actor, channelId, 'channelId');
    if ((await unsettledTests(tx, channel.id)) >= MAX_UNSETTLED_TESTS) {
      throw conflict(`channel ${channelId} already has ${MAX_UNSETTLED_TESTS} test messages waiting to be delivered: see notificationDeliveries`, 'channelId');
    }
    const id = newId();
    const payload: NotificationPayload = { event: 'test', at: now.toISOString(), text: `Test notification from Tollgate, sent by ${actor.name}.` };
    await insertOutbox(tx, [
      {
        id,
        eventKey: `test:${id}`,
        event: 'test',
        channelId: channel.id,
        subscriptionId: null,
        evaluationId: null,
        env: channel.envs[0]!,
        payload: payload as unknown as Record<string, unknown>,
        status: 'pending',
        nextAttemptAt: now,
        createdAt: now,
      },
    ]);
    return (await getDeliveryRow(tx, id))!;
  });
  deps.events.publish('notification.queued', null);
  return row;
}

// ---- queueing: inside the change's transaction ----

/** What a message says; stored with the outbox row as it stood when the event happened. */
export interface NotificationPayload {
  event: NotificationEvent | 'test';
  at: string;
  text?: string;
  evaluation?: {
    id: string;
    url: string;
    status: string;
    realStatus: string;
    service: string;
    env: string;
    identifier: string;
    version: string | null;
    primaryTag: string | null;
    gateId: string | null;
    dryRun: boolean;
    startedAt: string;
    decidedAt: string | null;
  };
  failingRules?: Array<{ name: string; type: string; reason: string | null }>;
  sourceError?: { rule: string; error: string | null };
  override?: { verdict: string; reason: string | null; by: string | null; at: string | null; replaced: string | null };
  recoveredFrom?: { id: string; url: string };
}

/** The status a deploy acts on: the override if any, else the dry-run math (reported() of evaluations.ts, which imports this module). */

const clip = (s: string | null, n: number) => (s && s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * The message of one event, as a reader of the channel's environments may see it: a rule's
 * reason or source error naming a monitor outside them is withheld, as the API withholds it
 * from a key limited to those environments (src/domain/ruleEvidence.ts).
 */
function payloadFor(
  deps: Deps,
  event: NotificationEvent,
  after: EvaluationSnapshot,
  now: Date,
  reader: { envs: readonly string[] },
  extra: Partial<NotificationPayload>,
): NotificationPayload {
  const e = after.evaluation;
  const rules = after.rules.map((r) => ruleEvaluationFor(reader, e, r));
  return {
    event,
    at: now.toISOString(),
    evaluation: {
      id: e.id,
      url: `${deps.baseUrl()}/evaluations/${e.id}`,
      status: reported(e),
      realStatus: e.status,
      service: e.service,
      env: e.env,
      identifier: e.identifier,
      version: e.version,
      primaryTag: e.primaryTag,
      gateId: e.gateId,
      dryRun: e.dryRun,
      startedAt: e.startedAt.toISOString(),
      decidedAt: e.decidedAt?.toISOString() ?? null,
    },
    failingRules: rules
      .filter((r) => r.status === 'fail' && !r.dryRun)
      .slice(0, MAX_RULES_IN_MESSAGE)
      .map((r) => ({ name: r.name, type: r.type, reason: clip(r.reason, MAX_REASON_CHARS) })),
    ...(e.overrideStatus
      ? {
          override: {
            verdict: e.overrideStatus,
            reason: clip(e.overrideReason, MAX_REASON_CHARS),
            by: e.overriddenByName,
            at: e.overriddenAt?.toISOString() ?? null,
            replaced: e.overrideReplaced,
          },
        }
      : {}),
    ...extra,
  };
}

/** A rule's change, for source errors: the rule before and what the update wrote. */
export interface RuleChange {
  before: RuleEvaluationRow;
  consecutiveErrors?: number;
  lastError?: string | null;
  evidence?: Record<string, unknown> | null;
}

/**
 * The source error a rule's change records, or undefined: the engine counts failed checks in
 * consecutiveErrors; a runner that retries by itself (the webhook rule) reports them in its
 * evidence (`sourceErrors`, `lastError`) when its policy decides.
 */
function sourceErrorOf(c: RuleChange): { error: string | null } | undefined {
  if ((c.consecutiveErrors ?? 0) > 0) return c.before.consecutiveErrors === 0 ? { error: c.lastError ?? null } : undefined;
  const errorsIn = (evidence: unknown) => {
    const ev = evidence as { sourceErrors?: unknown; lastError?: unknown } | null | undefined;
    return typeof ev?.sourceErrors === 'number' && ev.sourceErrors > 0 ? { error: typeof ev.lastError === 'string' ? ev.lastError : null } : undefined;
  };
  return errorsIn(c.before.evidence) ? undefined : errorsIn(c.evidence);
}

/** A source error's message as a reader of the channel's envs may see it (it may name a monitor). */
function sourceErrorSeenBy(reader: { envs: readonly string[] }, after: EvaluationSnapshot, ruleId: string, error: string | null): string | null {
  const rule = after.rules.find((r) => r.id === ruleId);
  if (!rule) return error;
  const seen = ruleEvaluationFor(reader, after.evaluation, rule);
  if (seen === rule) return error;
  const shown = (seen.evidence as { lastError?: unknown } | null)?.lastError;
  return seen.lastError ?? (typeof shown === 'string' ? shown : null);
}

/**
 * Queues the notifications a change of an evaluation causes, in the caller's transaction:
 * `fail` when the reported status became fail; `recovered` when it became pass and the
 * previous verdict of the same service/env/identifier was a fail; `override` when an override
 * was set or replaced (alone: the status it sets is not also a fail or a recovery);
 * `source_error` on a rule's first source error. One row per matching subscription and
 * event; a row already queued for the same event is left alone. Returns how many rows it
 * queued (0: nothing to wake the notifier for).
 */
export async function queueNotifications(tx: Tx, deps: Deps, before: EvaluationRow, after: EvaluationSnapshot, rule?: RuleChange): Promise<number> {
  const e = after.evaluation;
  const was = reported(before);
  const is = reported(e);
  const events: Array<{ event: NotificationEvent; key: string; extra?: (reader: { envs: readonly string[] }) => Partial<NotificationPayload> }> = [];
  const beforeOverride = before.overriddenAt?.getTime() ?? null;
  const afterOverride = e.overriddenAt?.getTime() ?? null;
  // An override is its own event: the status it sets is not also a fail or a recovery.
  const overridden = afterOverride !== null && afterOverride !== beforeOverride;
  if (overridden) events.push({ event: 'override', key: `override:${afterOverride}` });
  if (!overridden && is === 'fail' && was !== 'fail') events.push({ event: 'fail', key: 'fail' });
  // Once per rule evaluation (its key): the first error; the retries after it say nothing new.
  const sourceError = rule && sourceErrorOf(rule);
  if (rule && sourceError) {
    events.push({
      event: 'source_error',
      key: `source_error:${rule.before.id}`,
      extra: (reader) => ({ sourceError: { rule: rule.before.name, error: clip(sourceErrorSeenBy(reader, after, rule.before.id, sourceError.error), MAX_REASON_CHARS) } }),
    });
  }
  // A real pass: a dry-run gate reports pass over failed rules, which recovers from nothing.
  const maybeRecovered = !overridden && is === 'pass' && was !== 'pass' && e.status === 'pass';
  // Most changes cause no event: they read nothing more.
  if (events.length === 0 && !maybeRecovered) return 0;
  const subscriptions = await matchingSubscriptions(tx, e, MAX_SUBSCRIPTIONS_PER_ENV);
  if (subscriptions.length === 0) return 0;
  // Recovered is a pass after a fail: the previous verdict is read only when someone asks.
  if (maybeRecovered && subscriptions.some(({ subscription: s }) => s.events.includes('recovered'))) {
    const previous = await previousVerdict(tx, e);
    if (previous && reported(previous) === 'fail') {
      const recoveredFrom = { id: previous.id, url: `${deps.baseUrl()}/evaluations/${previous.id}` };
      events.push({ event: 'recovered', key: 'recovered', extra: () => ({ recoveredFrom }) });
    }
  }
  const now = deps.now();
  const rows: NewOutboxRow[] = [];
  for (const ev of events) {
    // One message per set of channel environments that hears it.
    const payloads = new Map<string, NotificationPayload>();
    for (const { subscription: s, channelEnvs } of subscriptions) {
      if (!s.events.includes(ev.event)) continue;
      const reader = { envs: channelEnvs };
      const seenBy = JSON.stringify([...channelEnvs].sort());
      let payload = payloads.get(seenBy);
      if (!payload) payloads.set(seenBy, (payload = payloadFor(deps, ev.event, after, now, reader, ev.extra?.(reader) ?? {})));
      rows.push({
        id: newId(),
        eventKey: `${s.id}:${e.id}:${ev.key}`,
        event: ev.event,
        channelId: s.channelId,
        subscriptionId: s.id,
        evaluationId: e.id,
        env: e.env,
        payload: payload as unknown as Record<string, unknown>,
        status: 'pending',
        nextAttemptAt: now,
        createdAt: now,
      });
    }
  }
  await insertOutbox(tx, rows);
  return rows.length;
}

// ---- delivery: what the notifier asks of the domain ----

/** A claimed row with what sending it needs: its channel, and the body and headers to send. */
export interface Delivery {
  row: OutboxRow;
  channel: ChannelRow | undefined;
}

/**
 * Claims up to `limit` due rows for this node (see claimDue), at most `perChannel` of one
 * channel with its sends under way (`inFlight`): each is ours until settled or `claimMs` passes.
 */
export async function claimDeliveries(deps: Deps, limit: number, claimMs: number, perChannel: number, inFlight: ReadonlyMap<string, number>): Promise<Delivery[]> {
  const rows = await claimDue(deps.db, deps.nodeId, deps.now(), claimMs, limit, perChannel, inFlight);
  const deliveries: Delivery[] = [];
  for (const row of rows) deliveries.push({ row, channel: await getChannelRow(deps.db, row.channelId) });
  return deliveries;
}

export async function nextDeliveryDueAt(deps: Deps): Promise<Date | null> {
  return nextDueAt(deps.db);
}

/** Delay before the attempt after `attempts` failed ones: base × 2^(attempts-1), at most an hour. */
const retryDelayMs = (baseMs: number, attempts: number) => Math.min(baseMs * 2 ** (attempts - 1), 3_600_000);

/**
 * Records how an attempt went: delivered, or back to pending with its next time, or failed
 * after the last attempt (or at once, for a refusal no retry can change). False when the
 * claim was no longer this node's.
 */
export async function settleDelivery(deps: Deps, row: OutboxRow, outcome: { ok: boolean; status: number | null; error: string | null; final?: boolean }): Promise<boolean> {
  const now = deps.now();
  const { retryBaseMs, maxAttempts } = deps.config.notifications;
  const error = clip(outcome.error, 1000);
  if (outcome.ok) return settleClaim(deps.db, row.id, deps.nodeId, row.attempts, { status: 'delivered', deliveredAt: now, lastStatus: outcome.status, lastError: null });
  const giveUp = outcome.final || row.attempts >= maxAttempts;
  return settleClaim(deps.db, row.id, deps.nodeId, row.attempts, {
    status: giveUp ? 'failed' : 'pending',
    lastStatus: outcome.status,
    lastError: error,
    nextAttemptAt: giveUp ? row.nextAttemptAt : new Date(now.getTime() + retryDelayMs(retryBaseMs, row.attempts)),
  });
}

/** Why this channel may not be called now (its host left the allow-list), or null. */
export function channelRefusal(deps: Deps, channel: ChannelRow): string | null {
  return hostRefusal(deps.config.webhookAllowedHosts, channel.url);
}

/** The signing secret of a webhook channel, opened. Throws SecretUnavailableError. */
export function channelSecret(deps: Deps, channel: ChannelRow): string {
  if (!channel.secret) throw new SecretUnavailableError('the channel has no secret');
  return openSecret(deps.config.secretKey, channel.secret, secretContext(channel.id, channel.url));
}

/** `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>"): X-Tollgate-Signature. */
export function signNotification(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

const STATUS_WORDS: Record<string, string> = { fail: 'failed', recovered: 'passed again', override: 'was overridden', source_error: 'hit a source error', test: 'test' };

/** One line naming the gate, service/env/version and what happened. */
function headline(p: NotificationPayload): string {
  if (!p.evaluation) return p.text ?? 'Tollgate notification';
  const e = p.evaluation;
  const gate = `${e.service}/${e.env}${e.identifier !== 'default' ? ` (${e.identifier})` : ''}`;
  const version = e.version ? ` version ${e.version}` : '';
  const what = p.event === 'override' && p.override ? `overridden to ${p.override.verdict.toUpperCase()}` : STATUS_WORDS[p.event];
  return `Gate ${gate}${version} ${what}`;
}

/** The generic webhook's JSON body. */
export function webhookBody(row: Pick<OutboxRow, 'id' | 'event'>, p: NotificationPayload): string {
  return JSON.stringify({ id: row.id, type: `tollgate.${row.event}`, text: headline(p), ...p });
}

/** A Slack incoming webhook's body: `text` as the fallback, `blocks` for the layout. */
export function slackBody(p: NotificationPayload): string {
  const lines: string[] = [];
  const e = p.evaluation;
  if (e) lines.push(`*Status:* ${e.status}${e.status !== e.realStatus ? ` (real: ${e.realStatus})` : ''}`);
  for (const r of p.failingRules ?? []) lines.push(`• *${r.name}* (${r.type}): ${r.reason ?? 'failed'}`);
  if (p.sourceError) lines.push(`*Source error* in ${p.sourceError.rule}: ${p.sourceError.error ?? 'unknown'}`);
  if (p.override) lines.push(`*Override* to ${p.override.verdict} by ${p.override.by ?? '?'}: ${p.override.reason ?? ''} (replaced ${p.override.replaced ?? '?'})`);
  if (p.recoveredFrom) lines.push(`Previous verdict was a fail: <${p.recoveredFrom.url}|evaluation>`);
  const slackEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const title = slackEscape(headline(p));
  const blocks: unknown[] = [{ type: 'section', text: { type: 'mrkdwn', text: `*${title}*` } }];
  if (lines.length) blocks.push({ type: 'section', text: { type: 'mrkdwn', text: lines.join('\n').slice(0, 2900) } });
  if (e) blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `<${e.url}|Open in Tollgate>` }] });
  return JSON.stringify({ text: e ? `${headline(p)}: ${e.url}` : headline(p), blocks });
}

export { SecretUnavailableError };
