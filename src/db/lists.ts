import { is, SQL, sql } from 'drizzle-orm';
import type { SQLiteColumn } from 'drizzle-orm/sqlite-core';
import type { Tx } from './client.ts';
import { dialectOf } from './dialect.ts';

/**
 * `column IN (values)` with the whole list bound as one JSON parameter. An IN list of bound
 * values costs one SQL variable per value, and SQLite refuses statements with more than
 * 32,766 of them (`too many SQL variables`), so every list that can grow goes through here:
 * one statement, one variable, any length. Give a placeholder's name instead of the values
 * for a prepared statement, and bind `JSON.stringify(values)` to it.
 */
export function inList(db: Tx, column: SQLiteColumn | SQL, values: readonly string[] | { placeholder: string }): SQL {
  const param = 'placeholder' in values ? sql.placeholder(values.placeholder) : JSON.stringify(values);
  return dialectOf(db) === 'pg' ? sql`${column} in (select jsonb_array_elements_text(${param}::jsonb))` : sql`${column} in (select value from json_each(${param}))`;
}

/**
 * The `set` of a prepared UPDATE: a placeholder per column, and a literal NULL for nulls (a
 * placeholder's value goes through the column's encoder, which does not expect null). The
 * signature names the statement: one per set of columns and nulls.
 */
export function preparedSet(patch: Record<string, unknown>): { signature: string; set: Record<string, unknown>; values: Record<string, unknown> } {
  const keys = Object.keys(patch)
    .filter((k) => patch[k] !== undefined)
    .sort();
  const set: Record<string, unknown> = {};
  const values: Record<string, unknown> = {};
  for (const k of keys) {
    // An SQL expression would be baked into the statement with its first values: plain values only.
    if (is(patch[k], SQL)) throw new Error(`preparedSet: ${k} is an SQL expression; write it into the statement instead`);
    if (patch[k] === null) set[k] = sql`null`;
    else {
      set[k] = sql.placeholder(k);
      values[k] = patch[k];
    }
  }
  return { signature: keys.map((k) => (patch[k] === null ? `${k}=null` : k)).join(','), set, values };
}
