import { and, asc, count, eq } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { inList } from './lists.ts';
import { auditLog } from './schema.ts';

export type AuditEntry = typeof auditLog.$inferInsert;
export type AuditRow = typeof auditLog.$inferSelect;

/** Written inside the transaction of the change it describes, so neither exists without the other. */
export async function insertAudit(db: Tx, entries: AuditEntry[]): Promise<void> {
  if (entries.length > 0) await db.insert(auditLog).values(entries);
}

/** The entries of one action on these targets, oldest first (the target index). */
export async function auditEntriesOf(db: Tx, targetType: string, targetIds: readonly string[], action: string): Promise<AuditRow[]> {
  if (targetIds.length === 0) return [];
  return await db
    .select()
    .from(auditLog)
    .where(and(eq(auditLog.targetType, targetType), inList(db, auditLog.targetId, targetIds), eq(auditLog.action, action)))
    .orderBy(asc(auditLog.at), asc(auditLog.id));
}

/** How many entries of one action a target has. */
export async function countAuditEntries(db: Tx, targetType: string, targetId: string, action: string): Promise<number> {
  return (
    await db
      .select({ n: count() })
      .from(auditLog)
      .where(and(eq(auditLog.targetType, targetType), eq(auditLog.targetId, targetId), eq(auditLog.action, action)))
  )[0]!.n;
}
