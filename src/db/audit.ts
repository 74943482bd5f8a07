import type { Tx } from './client.ts';
import { auditLog } from './schema.ts';

export type AuditEntry = typeof auditLog.$inferInsert;

/** Written inside the transaction of the change it describes, so neither exists without the other. */
export function insertAudit(db: Tx, entries: AuditEntry[]): void {
  if (entries.length > 0) db.insert(auditLog).values(entries).run();
}
