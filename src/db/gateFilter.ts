// The gate filter, each field described once: the SQL condition a query adds for it (with the
// value inline, or as a placeholder of a prepared statement) and the test a gate held in memory
// (a live event) must pass. Lists, counts and the gateEvents stream all read it, so they cannot
// answer differently; test/gateFilter.test.ts holds them to the same answers.
import { eq, type SQL, sql } from 'drizzle-orm';
import type { SQLiteColumn } from 'drizzle-orm/sqlite-core';
import type { Tx } from './client.ts';
import { inList } from './lists.ts';
import { gates } from './schema.ts';

type Gate = Pick<typeof gates.$inferSelect, 'service' | 'env' | 'identifier' | 'dryRun'>;

export interface GateFilter {
  /** Lists match any of their values; the single values too must hold when given. */
  serviceIn?: string[];
  envIn?: string[];
  identifierIn?: string[];
  service?: string;
  env?: string;
  identifier?: string;
  dryRun?: boolean;
  /** Environments the caller may see; null for all. */
  envs?: readonly string[] | null;
}

interface Field<V> {
  /** Whether a value that is there asks anything: an empty search list does not. */
  asks(value: V): boolean;
  /** The condition, on the value itself or on a placeholder of that name. */
  sql(db: Tx, value: V | { placeholder: string }): SQL;
  /** What a prepared statement binds to the placeholder. */
  bind(value: V): unknown;
  matches(value: V, gate: Gate): boolean;
}

function equals<T extends string | boolean>(column: SQLiteColumn, read: (g: Gate) => T): Field<T> {
  return {
    asks: () => true,
    sql: (_db, value) => eq(column, typeof value === 'object' ? sql.placeholder(value.placeholder) : value),
    // A placeholder is bound as given: a boolean column stores 1 and 0.
    bind: (value) => (typeof value === 'boolean' ? Number(value) : value),
    matches: (value, gate) => read(gate) === value,
  };
}

/** The column holds one of the values; `always` for bounds, where an empty list selects nothing. */
function oneOf(column: SQLiteColumn, read: (g: Gate) => string, always = false): Field<readonly string[]> {
  return {
    asks: (values) => always || values.length > 0,
    sql: (db, values) => inList(db, column, values),
    bind: (values) => JSON.stringify(values),
    matches: (values, gate) => values.includes(read(gate)),
  };
}

/** Every field of GateFilter, once (the type refuses a field left out). Absent or null: not asked. */
const FIELDS: { [K in keyof GateFilter]-?: Field<NonNullable<GateFilter[K]>> } = {
  serviceIn: oneOf(gates.service, (g) => g.service),
  envIn: oneOf(gates.env, (g) => g.env),
  identifierIn: oneOf(gates.identifier, (g) => g.identifier),
  service: equals(gates.service, (g) => g.service),
  env: equals(gates.env, (g) => g.env),
  identifier: equals(gates.identifier, (g) => g.identifier),
  dryRun: equals(gates.dryRun, (g) => g.dryRun),
  envs: oneOf(gates.env, (g) => g.env, true),
};

/** The filter's fields, for tests that must cover each. */
export const GATE_FILTER_FIELDS = Object.keys(FIELDS) as ReadonlyArray<keyof GateFilter>;

function asked(filter: GateFilter): Array<[keyof GateFilter, Field<unknown>, unknown]> {
  const out: Array<[keyof GateFilter, Field<unknown>, unknown]> = [];
  for (const key of GATE_FILTER_FIELDS) {
    const value = filter[key];
    const field = FIELDS[key] as Field<unknown>;
    if (value !== undefined && value !== null && field.asks(value)) out.push([key, field, value]);
  }
  return out;
}

/** The conditions a query adds for the filter (all must hold). */
export function gateFilterSql(db: Tx, filter: GateFilter): SQL[] {
  return asked(filter).map(([, field, value]) => field.sql(db, value));
}

/**
 * The same conditions for a statement prepared once per combination of fields: its name part,
 * the conditions on placeholders named after the fields, and the values to bind.
 */
export function preparedGateFilter(filter: GateFilter): { signature: string; conditions: (db: Tx) => SQL[]; values: Record<string, unknown> } {
  const fields = asked(filter);
  return {
    signature: fields.map(([key]) => key).join(','),
    conditions: (db) => fields.map(([key, field]) => field.sql(db, { placeholder: key })),
    values: Object.fromEntries(fields.map(([key, field, value]) => [key, field.bind(value)])),
  };
}

/** Whether a gate held in memory is one the filter's query would select. */
export function gateMatches(gate: Gate, filter: GateFilter): boolean {
  return asked(filter).every(([, field, value]) => field.matches(value, gate));
}
