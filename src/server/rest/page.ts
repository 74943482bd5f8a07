// The one reading of `page[size]` and `page[cursor]` for every REST list endpoint.
import { validate as isUuid } from 'uuid';
import { HttpError } from '../http.ts';

export interface Page {
  /** The id of the last item of the previous page. */
  cursor?: string;
  size: number;
}

/** Cursors are the id of the last item shown (opaque to clients); sizes are bounded per endpoint. */
export function readPage(url: URL, sizes: { default: number; max: number }): Page {
  const size = Number(url.searchParams.get('page[size]') ?? sizes.default);
  if (!Number.isInteger(size) || size < 1 || size > sizes.max) throw new HttpError(400, `page[size] must be between 1 and ${sizes.max}`);
  const cursor = url.searchParams.get('page[cursor]') ?? undefined;
  if (cursor !== undefined && !isUuid(cursor)) throw new HttpError(400, 'page[cursor] is invalid');
  return { cursor: cursor?.toLowerCase(), size };
}

/**
 * A page of `rows` read with one more than the page holds (`page.size + 1`): the items to
 * answer, and the cursor of the next page when there is one.
 */
export function pageOf<T extends { id: string }>(rows: readonly T[], page: Page): { items: T[]; next?: string } {
  const items = rows.slice(0, page.size);
  return rows.length > page.size ? { items, next: items.at(-1)!.id } : { items };
}
