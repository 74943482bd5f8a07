// Ad-hoc freezes: set and lifted through the API, one environment each (and optionally one
// service), under the same rules as gates: a key sees and changes only its environments' freezes.
// Every change is audited and published, so freeze rules waiting on it look again at once.

import { z } from 'zod';
import { insertAudit } from '../db/audit.ts';
import { transaction } from '../db/client.ts';
import { type FreezeRow, getFreeze as getFreezeRow, insertFreeze, isFreezeActive, listFreezes as listFreezeRows, updateFreezeRow } from '../db/freezes.ts';
import { actorFields } from '../log.ts';
import type { Deps } from './deps.ts';
import { badInput, conflict, notFound, parseInput } from './errors.ts';
import { tagValue } from './gates.ts';
import { assertUuid, newId } from './ids.ts';
import { assertEnvAllowed, canSeeEnv, type Principal, requireScope } from './principal.ts';
import { nullsAsUndefined } from './ruleOptions.ts';
import { audit, stamp } from './stamp.ts';

export type { FreezeRow };
export { isFreezeActive };

const instant = (what: string) => z.coerce.date({ message: `${what} must be an RFC 3339 date such as 2026-12-20T18:00:00Z` });

export const createFreezeInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      env: tagValue('env'),
      service: tagValue('service').optional(),
      reason: z.string({ message: 'reason is required: say why deploys stop' }).trim().min(1, 'reason must not be empty').max(1000, 'reason is at most 1000 characters'),
      startsAt: instant('startsAt').optional(),
      endsAt: instant('endsAt').optional(),
    })
    .strict(),
);
export type CreateFreezeInput = z.output<typeof createFreezeInputSchema>;

const endReasonSchema = z.string().trim().min(1, 'must not be empty').max(1000, 'is at most 1000 characters').optional();

export interface FreezeListFilter {
  envs?: string[];
  /** true: only freezes active now; false: only the others. */
  active?: boolean;
}

export const MAX_FREEZES_PAGE = 100;

// ---- reads: a freeze of an environment the caller cannot see does not exist for it ----

export async function getFreeze(deps: Deps, actor: Principal, id: string): Promise<FreezeRow | null> {
  requireScope(actor, 'gates:read', 'read freezes');
  const freeze = await getFreezeRow(deps.db, assertUuid(id, 'id'));
  return freeze && canSeeEnv(actor, freeze.env) ? freeze : null;
}

/** A page size asked for: 1 to MAX_FREEZES_PAGE. */
export function freezesPageSize(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_FREEZES_PAGE) throw badInput('first', `must be between 1 and ${MAX_FREEZES_PAGE}, got ${first}`);
  return first;
}

/** Newest first; `limit` rows at most (a page, or a page and one to know there is more). */
export async function listFreezes(deps: Deps, actor: Principal, filter: FreezeListFilter, page: { after?: string; limit: number }): Promise<FreezeRow[]> {
  requireScope(actor, 'gates:read', 'read freezes');
  const limit = Math.max(1, Math.min(page.limit, MAX_FREEZES_PAGE + 1));
  if (page.after) assertUuid(page.after, 'after');
  if (filter.envs && filter.envs.length > 100) throw badInput('filter.envs', `lists at most 100 values, got ${filter.envs.length}`);
  const active = filter.active === undefined ? undefined : { at: deps.now(), is: filter.active };
  return listFreezeRows(deps.db, { envIn: filter.envs, envs: actor.envs, active }, { after: page.after, limit });
}

// ---- writes: one transaction each, audit inside it, event after commit ----

export async function createFreeze(deps: Deps, actor: Principal, input: CreateFreezeInput): Promise<FreezeRow> {
  requireScope(actor, 'gates:write', 'create freezes');
  assertEnvAllowed(actor, input.env);
  const now = deps.now();
  const startsAt = input.startsAt ?? now;
  if (input.endsAt && input.endsAt <= startsAt) throw badInput('input.endsAt', `must be after startsAt (${startsAt.toISOString()})`);
  if (input.endsAt && input.endsAt <= now) throw badInput('input.endsAt', 'is in the past: a freeze that already ended stops nothing');
  const freeze = await transaction(deps.db, async (tx) => {
    const row = await insertFreeze(tx, {
      id: newId(),
      env: input.env,
      service: input.service ?? null,
      reason: input.reason,
      startsAt,
      endsAt: input.endsAt ?? null,
      ...stamp(actor, now),
    });
    await insertAudit(tx, [audit(actor, now, 'freeze.created', { type: 'freeze', id: row.id }, null, row)]);
    return row;
  });
  published(deps, actor, 'freeze created', freeze);
  return freeze;
}

/** Lifts a freeze now (or cancels one not yet started). Ending an ended freeze is a conflict. */
export async function endFreeze(deps: Deps, actor: Principal, id: string, reason?: string): Promise<FreezeRow> {
  requireScope(actor, 'gates:write', 'end freezes');
  const why = parseInput(endReasonSchema, reason, 'reason');
  const now = deps.now();
  const freeze = await transaction(deps.db, async (tx) => {
    const before = await getFreezeRow(tx, assertUuid(id, 'id'));
    if (!before || !canSeeEnv(actor, before.env)) throw notFound(`freeze ${id} does not exist`, 'id');
    const over = before.endedAt ?? (before.endsAt && before.endsAt <= now ? before.endsAt : null);
    if (over) throw conflict(`freeze ${id} already ended at ${over.toISOString()}`, 'id');
    const row = await updateFreezeRow(tx, before.id, {
      endedAt: now,
      endedById: actor.id,
      endedByName: actor.name,
      endReason: why ?? null,
      updatedAt: now,
      updatedById: actor.id,
      updatedByName: actor.name,
    });
    await insertAudit(tx, [audit(actor, now, 'freeze.ended', { type: 'freeze', id: row.id }, before, row)]);
    return row;
  });
  published(deps, actor, 'freeze ended', freeze);
  return freeze;
}

function published(deps: Deps, actor: Principal, what: string, freeze: FreezeRow): void {
  deps.events.publish('freeze.changed', freeze);
  deps.log.info({ freezeId: freeze.id, env: freeze.env, service: freeze.service, ...actorFields(actor) }, what);
}
