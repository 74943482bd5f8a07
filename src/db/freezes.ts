import { and, desc, eq, gt, isNull, lt, lte, not, or, type SQL } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { inList } from './lists.ts';
import { freezes } from './schema.ts';

export type FreezeRow = typeof freezes.$inferSelect;
export type NewFreezeRow = typeof freezes.$inferInsert;

export interface FreezeFilter {
  envIn?: readonly string[];
  /** Active at `at` (started, not past its planned end, not ended), or not. */
  active?: { at: Date; is: boolean };
  /** Environments the caller may see; null for all. */
  envs?: readonly string[] | null;
}

/** Active at `at`: the one definition, for queries here and for rows in hand (`isActive`). */
const activeSql = (at: Date): SQL => and(lte(freezes.startsAt, at), or(isNull(freezes.endsAt), gt(freezes.endsAt, at)), or(isNull(freezes.endedAt), gt(freezes.endedAt, at)))!;

export const isFreezeActive = (f: Pick<FreezeRow, 'startsAt' | 'endsAt' | 'endedAt'>, at: Date): boolean =>
  f.startsAt <= at && (f.endsAt === null || f.endsAt > at) && (f.endedAt === null || f.endedAt > at);

export async function getFreeze(db: Tx, id: string): Promise<FreezeRow | undefined> {
  return (await db.select().from(freezes).where(eq(freezes.id, id)))[0];
}

/** Newest first; keyset on the id (UUIDv7, creation order). */
export async function listFreezes(db: Tx, filter: FreezeFilter, page: { after?: string; limit: number }): Promise<FreezeRow[]> {
  const where: SQL[] = [];
  if (filter.envIn?.length) where.push(inList(db, freezes.env, filter.envIn));
  if (filter.envs) where.push(inList(db, freezes.env, filter.envs));
  if (filter.active) where.push(filter.active.is ? activeSql(filter.active.at) : not(activeSql(filter.active.at)));
  if (page.after) where.push(lt(freezes.id, page.after));
  return await db
    .select()
    .from(freezes)
    .where(and(...where))
    .orderBy(desc(freezes.id))
    .limit(page.limit);
}

/** The freezes of an environment active at `at`, for one service (those of every service included). */
export async function activeFreezesFor(db: Tx, env: string, service: string, at: Date): Promise<FreezeRow[]> {
  return await db
    .select()
    .from(freezes)
    .where(and(eq(freezes.env, env), or(isNull(freezes.service), eq(freezes.service, service)), activeSql(at)))
    .orderBy(desc(freezes.id))
    .limit(100);
}

export async function insertFreeze(db: Tx, row: NewFreezeRow): Promise<FreezeRow> {
  return (await db.insert(freezes).values(row).returning())[0]!;
}

export async function updateFreezeRow(db: Tx, id: string, patch: Partial<NewFreezeRow>): Promise<FreezeRow> {
  return (await db.update(freezes).set(patch).where(eq(freezes.id, id)).returning())[0]!;
}
