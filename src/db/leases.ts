// Named leases: which instance does a piece of work that only one of them may do at a time.
import { and, eq, lt, or } from 'drizzle-orm';
import type { Tx } from './client.ts';
import { leases } from './schema.ts';

/**
 * Takes the lease `name` for `owner` until now + ms if it is free, expired or already the
 * owner's (then renewed), in one statement. True when `owner` holds it after the call.
 */
export async function holdLease(db: Tx, name: string, owner: string, now: Date, ms: number): Promise<boolean> {
  const expiresAt = new Date(now.getTime() + ms);
  const rows = await db
    .insert(leases)
    .values({ name, owner, expiresAt })
    .onConflictDoUpdate({
      target: leases.name,
      set: { owner, expiresAt },
      setWhere: or(eq(leases.owner, owner), lt(leases.expiresAt, now)),
    })
    .returning({ owner: leases.owner });
  return rows[0]?.owner === owner;
}

/** Gives the lease back (if `owner` still holds it): another instance may take it at once. */
export async function releaseLease(db: Tx, name: string, owner: string): Promise<void> {
  await db.delete(leases).where(and(eq(leases.name, name), eq(leases.owner, owner)));
}
