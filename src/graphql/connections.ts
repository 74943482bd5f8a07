// What every connection adds to Relay's edges and pageInfo: `totalCount`, computed only when a
// query selects it (one COUNT over the same filter and the same environments as the page).

const COUNT = Symbol('countTotal');

/** A connection carrying how to count everything its filter selects. */
export type Counted = { [COUNT]?: () => number | Promise<number> };

/** The connection with its counter attached; `count` runs only if totalCount is selected. */
export async function withTotalCount<C extends object>(connection: C | Promise<C>, count: () => number | Promise<number>): Promise<C> {
  return Object.assign(await connection, { [COUNT]: count });
}

/** The connection-object options that add `totalCount`. */
export const totalCountFields = {
  // biome-ignore lint/suspicious/noExplicitAny: spread into three connections, each with its own Pothos field-builder type
  fields: (t: any) => ({
    totalCount: t.int({
      description: 'How many items the filter selects in all (not only this page), among those the caller may see.',
      resolve: (c: Counted) => c[COUNT]?.() ?? 0,
    }),
  }),
};
