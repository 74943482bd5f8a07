import type { AuditEntry } from '../db/audit.ts';
import { newId } from './ids.ts';
import type { Principal } from './principal.ts';

/** created/updated at and by, for a new row. */
export function stamp(actor: Principal, now: Date) {
  return {
    createdAt: now,
    createdById: actor.id,
    createdByName: actor.name,
    updatedAt: now,
    updatedById: actor.id,
    updatedByName: actor.name,
  };
}

/** An audit-log entry: who did what to which thing, and how it looked before and after. */
export function audit(actor: Principal, now: Date, action: string, target: { type: string; id: string }, before: unknown, after: unknown): AuditEntry {
  return { id: newId(), at: now, actorId: actor.id, actorName: actor.name, action, targetType: target.type, targetId: target.id, before, after };
}
