// The few places where SQLite and PostgreSQL need different SQL. Everything else is the same
// drizzle query on both: PostgreSQL runs the SQLite table objects (src/db/pgClient.ts says how).
import { is, type SQL, type SQLWrapper, sql } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';

/** A drizzle handle or transaction of either store. */
type Tx = object;

export type Dialect = 'sqlite' | 'pg';

export function dialectOf(db: Tx): Dialect {
  return is((db as { dialect?: unknown }).dialect, PgDialect) ? 'pg' : 'sqlite';
}

/** A table expression `j` with one text column `value`: the elements of a JSON array (a column or a bound JSON string). */
export function jsonArrayElements(db: Tx, json: unknown): SQL {
  return dialectOf(db) === 'pg' ? sql`jsonb_array_elements_text(${json}::jsonb) as j(value)` : sql`json_each(${json}) as j`;
}

/** The number a JSON object (a bound JSON string) holds under `key`, or null. */
export function jsonObjectNumber(db: Tx, json: string, key: SQL): SQL<number | null> {
  return dialectOf(db) === 'pg' ? sql<number | null>`(${json}::jsonb ->> ${key})::int` : sql<number | null>`(select value from json_each(${json}) where key = ${key})`;
}

/**
 * In a query grouped with `max(by)` selected: `column` of the group's row holding that max.
 * SQLite takes a bare column from that row when max() is the only min/max aggregate.
 */
export function ofNewest(db: Tx, column: SQLWrapper, by: SQLWrapper): SQLWrapper {
  return dialectOf(db) === 'pg' ? sql<string>`(array_agg(${column} order by ${by} desc))[1]` : column;
}

/** The UTC day (YYYY-MM-DD) of an epoch-milliseconds column. */
export function utcDay(db: Tx, epochMs: unknown): SQL<string> {
  return dialectOf(db) === 'pg'
    ? sql<string>`to_char(to_timestamp(${epochMs} / 1000.0) at time zone 'UTC', 'YYYY-MM-DD')`
    : sql<string>`strftime('%Y-%m-%d', ${epochMs} / 1000, 'unixepoch')`;
}

/** Rows a write changed: SQLite's `changes`, PostgreSQL's `rowCount`. */
export function changed(result: unknown): number {
  const r = result as { changes?: number; rowCount?: number | null };
  return r.changes ?? r.rowCount ?? 0;
}
