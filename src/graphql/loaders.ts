import { createContextCache } from '@pothos/core';
import DataLoader from 'dataloader';
import type { Context } from './context.ts';

/**
 * Loaders batch and never cache: a subscription's context, and so its loaders, lives as long as
 * the subscription, and a value cached for one event would be pushed again, stale, with the next
 * (a gate edited, an evaluation overridden again). A key asked twice in one batch is read twice.
 */
export const BATCH_ONLY = { cache: false } as const;

/**
 * A per-operation loader of "the children of each parent" from one batched read: one
 * statement for a whole page of parents, each getting its children in the read's order.
 */
export function childrenLoader<T>(load: (ctx: Context, parentIds: readonly string[]) => T[] | Promise<T[]>, parentOf: (child: T) => string) {
  return createContextCache(
    (ctx: Context) =>
      new DataLoader<string, T[]>(async (ids) => {
        const byParent = new Map<string, T[]>();
        for (const child of await load(ctx, ids)) {
          const list = byParent.get(parentOf(child));
          if (list) list.push(child);
          else byParent.set(parentOf(child), [child]);
        }
        return ids.map((id) => byParent.get(id) ?? []);
      }, BATCH_ONLY),
  );
}
