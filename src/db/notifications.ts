// Notification channels, subscriptions and the outbox. Visibility by environment is part of
// every read: a channel is visible to a key that may see every env it lists; a subscription
// and a delivery when their env is visible and so is their channel.

import { and, asc, desc, eq, isNotNull, isNull, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { changed, jsonArrayElements, jsonObjectNumber } from './dialect.ts';
import { inList } from './lists.ts';
import { evaluations, notificationChannels, notificationOutbox, notificationSubscriptions } from './schema.ts';

export type ChannelRow = typeof notificationChannels.$inferSelect;
export type NewChannelRow = typeof notificationChannels.$inferInsert;
export type SubscriptionRow = typeof notificationSubscriptions.$inferSelect;
export type NewSubscriptionRow = typeof notificationSubscriptions.$inferInsert;
export type OutboxRow = typeof notificationOutbox.$inferSelect;
export type NewOutboxRow = typeof notificationOutbox.$inferInsert;

/** Every env the channel lists is among `envs` (null: the caller sees every env). */
const channelWithin = (db: Tx, envs: readonly string[] | null): SQL | undefined =>
  envs === null ? undefined : sql`not exists (select 1 from ${jsonArrayElements(db, notificationChannels.envs)} where not ${inList(db, sql`j.value`, envs)})`;

/** The same, for the channel of another table's row. */
const channelOfWithin = (
  db: Tx,
  channelId: SQL | typeof notificationOutbox.channelId | typeof notificationSubscriptions.channelId,
  envs: readonly string[] | null,
): SQL | undefined =>
  envs === null
    ? undefined
    : sql`not exists (select 1 from ${notificationChannels}, ${jsonArrayElements(db, notificationChannels.envs)} where ${notificationChannels.id} = ${channelId} and not ${inList(db, sql`j.value`, envs)})`;

export async function getChannel(db: Tx, id: string): Promise<ChannelRow | undefined> {
  return (await db.select().from(notificationChannels).where(eq(notificationChannels.id, id)))[0];
}

export async function listChannels(db: Tx, envs: readonly string[] | null, page: { after?: string; limit: number }): Promise<ChannelRow[]> {
  return await db
    .select()
    .from(notificationChannels)
    .where(and(channelWithin(db, envs), page.after ? lt(notificationChannels.id, page.after) : undefined))
    .orderBy(desc(notificationChannels.id))
    .limit(page.limit);
}

/** Channels serving `env` that a reader of `envs` sees (null: every one). */
export async function countChannelsOfEnv(db: Tx, env: string, envs: readonly string[] | null): Promise<number> {
  return (
    await db
      .select({ n: sql<number>`count(*)` })
      .from(notificationChannels)
      .where(and(sql`exists (select 1 from ${jsonArrayElements(db, notificationChannels.envs)} where j.value = ${env})`, channelWithin(db, envs)))
  )[0]!.n;
}

export async function insertChannel(db: Tx, row: NewChannelRow): Promise<ChannelRow> {
  return (await db.insert(notificationChannels).values(row).returning())[0]!;
}

export async function updateChannelRow(db: Tx, id: string, patch: Partial<NewChannelRow>): Promise<ChannelRow> {
  return (await db.update(notificationChannels).set(patch).where(eq(notificationChannels.id, id)).returning())[0]!;
}

export async function deleteChannelRow(db: Tx, id: string): Promise<void> {
  await db.delete(notificationChannels).where(eq(notificationChannels.id, id));
}

export async function getSubscription(db: Tx, id: string): Promise<SubscriptionRow | undefined> {
  return (await db.select().from(notificationSubscriptions).where(eq(notificationSubscriptions.id, id)))[0];
}

export async function listSubscriptions(
  db: Tx,
  envs: readonly string[] | null,
  filter: { channelId?: string },
  page: { after?: string; limit: number },
): Promise<SubscriptionRow[]> {
  return await db
    .select()
    .from(notificationSubscriptions)
    .where(
      and(
        envs === null ? undefined : inList(db, notificationSubscriptions.env, envs),
        channelOfWithin(db, notificationSubscriptions.channelId, envs),
        filter.channelId ? eq(notificationSubscriptions.channelId, filter.channelId) : undefined,
        page.after ? lt(notificationSubscriptions.id, page.after) : undefined,
      ),
    )
    .orderBy(desc(notificationSubscriptions.id))
    .limit(page.limit);
}

export async function countSubscriptionsOfEnv(db: Tx, env: string): Promise<number> {
  return (await db.select({ n: sql<number>`count(*)` }).from(notificationSubscriptions).where(eq(notificationSubscriptions.env, env)))[0]!.n;
}

/** Subscriptions of a channel reaching outside `envs` (a channel cannot shrink under them). */
export async function subscriptionEnvsOf(db: Tx, channelId: string): Promise<string[]> {
  const rows = await db
    .select({ env: notificationSubscriptions.env })
    .from(notificationSubscriptions)
    .where(eq(notificationSubscriptions.channelId, channelId))
    .groupBy(notificationSubscriptions.env);
  return rows.map((r) => r.env);
}

export async function insertSubscription(db: Tx, row: NewSubscriptionRow): Promise<SubscriptionRow> {
  return (await db.insert(notificationSubscriptions).values(row).returning())[0]!;
}

export async function updateSubscriptionRow(db: Tx, id: string, patch: Partial<NewSubscriptionRow>): Promise<SubscriptionRow> {
  return (await db.update(notificationSubscriptions).set(patch).where(eq(notificationSubscriptions.id, id)).returning())[0]!;
}

export async function deleteSubscriptionRow(db: Tx, id: string): Promise<void> {
  await db.delete(notificationSubscriptions).where(eq(notificationSubscriptions.id, id));
}

/**
 * Subscriptions an evaluation of (gate, service, env) matches, each with its channel's
 * environments (what its messages may tell); bounded by the per-env cap.
 */
export async function matchingSubscriptions(
  db: Tx,
  e: { gateId: string | null; service: string; env: string },
  limit: number,
): Promise<Array<{ subscription: SubscriptionRow; channelEnvs: string[] }>> {
  return await db
    .select({ subscription: notificationSubscriptions, channelEnvs: notificationChannels.envs })
    .from(notificationSubscriptions)
    .innerJoin(notificationChannels, eq(notificationChannels.id, notificationSubscriptions.channelId))
    .where(
      and(
        eq(notificationSubscriptions.env, e.env),
        e.gateId ? or(isNull(notificationSubscriptions.gateId), eq(notificationSubscriptions.gateId, e.gateId)) : isNull(notificationSubscriptions.gateId),
        or(isNull(notificationSubscriptions.service), eq(notificationSubscriptions.service, e.service)),
      ),
    )
    .orderBy(asc(notificationSubscriptions.id))
    .limit(limit);
}

/**
 * The last evaluation of the same service, env and identifier started before `before` that
 * reached a verdict (pass or fail, or an override): what a pass "recovers" from.
 */
export async function previousVerdict(db: Tx, e: { id: string; service: string; env: string; identifier: string; startedAt: Date }) {
  return (
    await db
      .select()
      .from(evaluations)
      .where(
        and(
          eq(evaluations.service, e.service),
          eq(evaluations.env, e.env),
          eq(evaluations.identifier, e.identifier),
          lt(evaluations.startedAt, e.startedAt),
          // An override is a verdict too (one that ended a running evaluation leaves it canceled).
          or(inList(db, evaluations.status, ['pass', 'fail']), isNotNull(evaluations.overrideStatus)),
        ),
      )
      .orderBy(desc(evaluations.startedAt))
      .limit(1)
  )[0];
}

/** Queues rows; an event already queued (same event_key) is left as it is. */
export async function insertOutbox(db: Tx, rows: NewOutboxRow[]): Promise<void> {
  if (rows.length > 0) await db.insert(notificationOutbox).values(rows).onConflictDoNothing({ target: notificationOutbox.eventKey });
}

export interface DeliveryFilter {
  status?: readonly string[];
  channelId?: string;
  evaluationId?: string;
}

export async function listDeliveries(db: Tx, envs: readonly string[] | null, filter: DeliveryFilter, page: { after?: string; limit: number }): Promise<OutboxRow[]> {
  return await db
    .select()
    .from(notificationOutbox)
    .where(
      and(
        envs === null ? undefined : inList(db, notificationOutbox.env, envs),
        channelOfWithin(db, notificationOutbox.channelId, envs),
        filter.status?.length ? inList(db, notificationOutbox.status, filter.status) : undefined,
        filter.channelId ? eq(notificationOutbox.channelId, filter.channelId) : undefined,
        filter.evaluationId ? eq(notificationOutbox.evaluationId, filter.evaluationId) : undefined,
        page.after ? lt(notificationOutbox.id, page.after) : undefined,
      ),
    )
    .orderBy(desc(notificationOutbox.id))
    .limit(page.limit);
}

export async function getDelivery(db: Tx, id: string): Promise<OutboxRow | undefined> {
  return (await db.select().from(notificationOutbox).where(eq(notificationOutbox.id, id)))[0];
}

/**
 * Claims up to `limit` rows due at `now` in one statement: pending rows whose time has come,
 * and rows a sender claimed and never settled (it crashed) once its claim ran out. Each gets
 * status delivering, this node's claim and one more attempt, so no other sender takes it.
 * At most `perChannel` rows of one channel, counting its sends under way (`inFlight`): a
 * channel that does not answer holds a few senders, not all of them.
 */
export async function claimDue(db: Tx, nodeId: string, now: Date, claimMs: number, limit: number, perChannel: number, inFlight: ReadonlyMap<string, number>): Promise<OutboxRow[]> {
  const o = notificationOutbox;
  const sending = JSON.stringify(Object.fromEntries(inFlight));
  const due = sql`select id from (${claimCandidates(now, perChannel)}) as candidates where rn + coalesce(${jsonObjectNumber(db, sending, sql`channel`)}, 0) <= ${perChannel} order by due_at limit ${limit}`;
  return await db
    .update(o)
    .set({ status: 'delivering', claimedBy: nodeId, claimExpiresAt: new Date(now.getTime() + claimMs), attempts: sql`${o.attempts} + 1` })
    // Still claimable as the row is written: PostgreSQL checks this again on a row another
    // instance claimed meanwhile (it does not rerun the subquery), so a row is sent by one.
    .where(and(sql`${o.id} in (${due})`, or(and(eq(o.status, 'pending'), lte(o.nextAttemptAt, now)), and(eq(o.status, 'delivering'), lte(o.claimExpiresAt, now)))))
    .returning();
}

/**
 * The rows a claim chooses from (id, channel, due_at, ranked within their channel as rn): the
 * `perChannel` earliest due rows of each channel, each read through the channel's due index,
 * so a claim costs channels × perChannel rows however many thousands wait.
 */
export function claimCandidates(now: Date, perChannel: number): SQL {
  const at = now.getTime();
  const firstDue = (status: 'pending' | 'delivering', column: 'next_attempt_at' | 'claim_expires_at') =>
    sql`select y.id from notification_outbox y where y.channel_id = c.id and y.status = ${status} and y.${sql.raw(column)} <= ${at} order by y.${sql.raw(column)}, y.id limit ${perChannel}`;
  return sql`select x.id as id, x.channel_id as channel, x.next_attempt_at as due_at,
    row_number() over (partition by x.channel_id order by x.next_attempt_at, x.id) as rn
    from notification_channels c join notification_outbox x on x.id in (${firstDue('pending', 'next_attempt_at')}) or x.id in (${firstDue('delivering', 'claim_expires_at')})`;
}

/** Settles a claimed row; false when the claim was no longer ours (it ran out and another took it). */
export async function settleClaim(db: Tx, id: string, nodeId: string, attempts: number, patch: Partial<NewOutboxRow>): Promise<boolean> {
  const r = await db
    .update(notificationOutbox)
    .set({ ...patch, claimedBy: null, claimExpiresAt: null })
    .where(and(eq(notificationOutbox.id, id), eq(notificationOutbox.status, 'delivering'), eq(notificationOutbox.claimedBy, nodeId), eq(notificationOutbox.attempts, attempts)));
  return changed(r) > 0;
}

/** Deletes every delivery of a channel (settled or not); the count. */
export async function deleteDeliveriesOfChannel(db: Tx, channelId: string): Promise<number> {
  return changed(await db.delete(notificationOutbox).where(eq(notificationOutbox.channelId, channelId)));
}

/** Test messages of a channel not yet settled. */
export async function unsettledTests(db: Tx, channelId: string): Promise<number> {
  return (
    await db
      .select({ n: sql<number>`count(*)` })
      .from(notificationOutbox)
      .where(and(eq(notificationOutbox.channelId, channelId), eq(notificationOutbox.event, 'test'), inList(db, notificationOutbox.status, ['pending', 'delivering'])))
  )[0]!.n;
}

/** Deletes deliveries settled (delivered or failed) and queued before `before`; the count. */
export async function deleteSettledBefore(db: Tx, before: Date): Promise<number> {
  return changed(await db.delete(notificationOutbox).where(and(inList(db, notificationOutbox.status, ['delivered', 'failed']), lt(notificationOutbox.createdAt, before))));
}

/**
 * When the next row falls due (pending, or a claim running out), or null when none waits:
 * two minimums, the first read off the due index's end (a flood of pending rows costs nothing).
 */
export async function nextDueAt(db: Tx): Promise<Date | null> {
  const o = notificationOutbox;
  const pending =
    (
      await db
        .select({ at: sql<number | null>`min(${o.nextAttemptAt})` })
        .from(o)
        .where(eq(o.status, 'pending'))
    )[0]?.at ?? null;
  const claimed =
    (
      await db
        .select({ at: sql<number | null>`min(${o.claimExpiresAt})` })
        .from(o)
        .where(eq(o.status, 'delivering'))
    )[0]?.at ?? null;
  const at = pending === null ? claimed : claimed === null ? pending : Math.min(pending, claimed);
  return at === null ? null : new Date(at);
}
