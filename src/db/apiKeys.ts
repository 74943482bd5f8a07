import { and, asc, eq, inArray, isNotNull, isNull, sql } from 'drizzle-orm';
import type { Db, Tx } from './client.ts';
import { apiKeys } from './schema.ts';

export type ApiKeyRow = typeof apiKeys.$inferSelect;

export async function insertApiKey(db: Tx, row: typeof apiKeys.$inferInsert): Promise<ApiKeyRow> {
  return db.insert(apiKeys).values(row).returning().get();
}

export async function getApiKey(db: Tx, id: string): Promise<ApiKeyRow | undefined> {
  return db.select().from(apiKeys).where(eq(apiKeys.id, id)).get();
}

export async function listApiKeys(db: Tx): Promise<ApiKeyRow[]> {
  return db.select().from(apiKeys).orderBy(asc(apiKeys.id)).all();
}

export async function revokeApiKeyRow(db: Tx, id: string, at: Date): Promise<ApiKeyRow> {
  return db.update(apiKeys).set({ revokedAt: at }).where(eq(apiKeys.id, id)).returning().get()!;
}

export async function hasActiveAdminKey(db: Tx): Promise<boolean> {
  return db
    .select({ id: apiKeys.id, scopes: apiKeys.scopes })
    .from(apiKeys)
    .where(isNull(apiKeys.revokedAt))
    .all()
    .some((k) => k.scopes.includes('admin'));
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
    find: (hash: string): ApiKeyRow | undefined => byHash.get({ hash }),
    touch: (id: string, at: Date): void => void touch.run({ id, at: at.getTime() }),
  };
}

/** Of these key ids, the ones revoked (a bounded list: the keys that hold open streams). */
export async function revokedAmong(db: Tx, ids: readonly string[]): Promise<string[]> {
  const revoked: string[] = [];
  for (let i = 0; i < ids.length; i += 500) {
    const chunk = ids.slice(i, i + 500);
    for (const row of db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(inArray(apiKeys.id, chunk), isNotNull(apiKeys.revokedAt)))
      .all()) {
      revoked.push(row.id);
    }
  }
  return revoked;
}
