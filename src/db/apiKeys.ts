import { and, asc, eq, inArray, isNotNull, isNull, sql } from 'drizzle-orm';
import type { Db, Tx } from './client.ts';
import { firstRow, runStatement } from './prepared.ts';
import { apiKeys } from './schema.ts';

export type ApiKeyRow = typeof apiKeys.$inferSelect;

export async function insertApiKey(db: Tx, row: typeof apiKeys.$inferInsert): Promise<ApiKeyRow> {
  return (await db.insert(apiKeys).values(row).returning())[0]!;
}

export async function getApiKey(db: Tx, id: string): Promise<ApiKeyRow | undefined> {
  return (await db.select().from(apiKeys).where(eq(apiKeys.id, id)))[0];
}

export async function listApiKeys(db: Tx): Promise<ApiKeyRow[]> {
  return await db.select().from(apiKeys).orderBy(asc(apiKeys.id));
}

export async function revokeApiKeyRow(db: Tx, id: string, at: Date): Promise<ApiKeyRow> {
  return (await db.update(apiKeys).set({ revokedAt: at }).where(eq(apiKeys.id, id)).returning())[0]!;
}

export async function hasActiveAdminKey(db: Tx): Promise<boolean> {
  return (await db.select({ id: apiKeys.id, scopes: apiKeys.scopes }).from(apiKeys).where(isNull(apiKeys.revokedAt))).some((k) => k.scopes.includes('admin'));
}

/** Every authenticated request looks its key up by hash, so the statement is prepared once. */
export function preparedKeyLookup(db: Db) {
  const byHash = db
    .select()
    .from(apiKeys)
    .where(eq(apiKeys.secretHash, sql.placeholder('hash')))
    .prepare();
  const touch = db
    .update(apiKeys)
    .set({ lastUsedAt: sql`${sql.placeholder('at')}` })
    .where(eq(apiKeys.id, sql.placeholder('id')))
    .prepare();
  return {
    find: async (hash: string): Promise<ApiKeyRow | undefined> => firstRow(byHash, { hash }),
    touch: async (id: string, at: Date): Promise<void> => runStatement(touch, { id, at: at.getTime() }),
  };
}

/** Of these key ids, the ones revoked (a bounded list: the keys that hold open streams). */
export async function revokedAmong(db: Tx, ids: readonly string[]): Promise<string[]> {
  const revoked: string[] = [];
  for (let i = 0; i < ids.length; i += 500) {
    const chunk = ids.slice(i, i + 500);
    for (const row of await db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(inArray(apiKeys.id, chunk), isNotNull(apiKeys.revokedAt)))) {
      revoked.push(row.id);
    }
  }
  return revoked;
}
