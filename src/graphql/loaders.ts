import { createContextCache } from '@pothos/core';
import DataLoader from 'dataloader';
import type { Context } from './context.ts';

/**
 * A per-operation loader of "the children of each parent" from one batched read: one
 * statement for a whole page of parents, each getting its children in the read's order.
 */
export function childrenLoader<T>(load: (ctx: Context, parentIds: readonly string[]) => T[], parentOf: (child: T) => string) {
  return createContextCache(
    (ctx: Context) =>
      new DataLoader<string, T[]>(async (ids) => {
        const byParent = new Map<string, T[]>();
        for (const child of load(ctx, ids)) {
          const list = byParent.get(parentOf(child));
          if (list) list.push(child);
          else byParent.set(parentOf(child), [child]);
        }
        return ids.map((id) => byParent.get(id) ?? []);
      }),
  );
}
