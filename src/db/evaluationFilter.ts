// The evaluation filter, each field described once: the SQL condition a query adds for it and
// the test an evaluation held in memory (a live event) must pass. Queries (lists, counts,
// stats, facets, insights) take `filterSql`, live streams take `filterMatches`, so the two
// cannot answer differently; test/evaluationFilter.test.ts holds them to the same answers.
import { eq, gte, isNotNull, isNull, lt, type SQL, sql } from 'drizzle-orm';
import type { SQLiteColumn } from 'drizzle-orm/sqlite-core';
import type { Tx } from './client.ts';
import { inList } from './lists.ts';
import { evaluations, ruleEvaluations } from './schema.ts';

type Evaluation = typeof evaluations.$inferSelect;
type RuleEvaluation = typeof ruleEvaluations.$inferSelect;

export interface EvaluationFilter {
  service?: string[];
  env?: string[];
  identifier?: string[];
  version?: string[];
  /** The real status (dry run and override ignored). */
  status?: Evaluation['status'][];
  /** true: evaluations a person overrode; false: the others. */
  overridden?: boolean;
  dryRun?: boolean;
  gateId?: string;
  gateIds?: string[];
  /** An evaluation matches when one of its rules has one of these types / names. */
  ruleType?: RuleEvaluation['type'][];
  ruleName?: string[];
  /** Inclusive. */
  startedAfter?: Date;
  /** Exclusive. */
  startedBefore?: Date;
  /** Environments the caller may see; null for all. */
  envs?: readonly string[] | null;
  evaluationIds?: string[];
}

/** An evaluation with its rules, as a live event carries it. */
export interface FilterSubject {
  evaluation: Evaluation;
  rules: ReadonlyArray<Pick<RuleEvaluation, 'type' | 'name'>>;
}

interface Field<V> {
  /** Whether a value that is there asks anything: an empty search list does not. */
  asks(value: V): boolean;
  sql(db: Tx, value: V): SQL;
  matches(value: V, subject: FilterSubject): boolean;
}

const nonEmpty = (values: readonly unknown[]) => values.length > 0;
const always = () => true;

/** A search list: the column holds one of the values (never when it is null). */
function oneOf<T extends string>(column: SQLiteColumn, read: (e: Evaluation) => T | null, asks: (values: readonly T[]) => boolean = nonEmpty): Field<readonly T[]> {
  return {
    asks,
    sql: (db, values) => inList(db, column, values),
    matches: (values, { evaluation }) => {
      const value = read(evaluation);
      return value !== null && values.includes(value);
    },
  };
}

/** A bound on what the caller may see: an empty list is still a bound, and selects nothing. */
const within = <T extends string>(column: SQLiteColumn, read: (e: Evaluation) => T) => oneOf(column, read, always);

function equals<T extends string | boolean>(column: SQLiteColumn, read: (e: Evaluation) => T | null): Field<T> {
  return { asks: always, sql: (_db, value) => eq(column, value), matches: (value, { evaluation }) => read(evaluation) === value };
}

/** One of the evaluation's rules has one of the values (read through the rules' evaluation index). */
function anyRule(column: SQLiteColumn, read: (r: FilterSubject['rules'][number]) => string): Field<readonly string[]> {
  return {
    asks: nonEmpty,
    sql: (db, values) => sql`exists (select 1 from ${ruleEvaluations} where ${ruleEvaluations.evaluationId} = ${evaluations.id} and ${inList(db, column, values)})`,
    matches: (values, { rules }) => rules.some((r) => values.includes(read(r))),
  };
}

const overridden: Field<boolean> = {
  asks: always,
  sql: (_db, value) => (value ? isNotNull(evaluations.overrideStatus) : isNull(evaluations.overrideStatus)),
  matches: (value, { evaluation }) => (evaluation.overrideStatus !== null) === value,
};

const startedFrom: Field<Date> = {
  asks: always,
  sql: (_db, at) => gte(evaluations.startedAt, at),
  matches: (at, { evaluation }) => evaluation.startedAt.getTime() >= at.getTime(),
};

const startedUntil: Field<Date> = {
  asks: always,
  sql: (_db, at) => lt(evaluations.startedAt, at),
  matches: (at, { evaluation }) => evaluation.startedAt.getTime() < at.getTime(),
};

/** Every field of EvaluationFilter, once (the type refuses a field left out). Absent or null: not asked. */
const FIELDS: { [K in keyof EvaluationFilter]-?: Field<NonNullable<EvaluationFilter[K]>> } = {
  service: oneOf(evaluations.service, (e) => e.service),
  env: oneOf(evaluations.env, (e) => e.env),
  identifier: oneOf(evaluations.identifier, (e) => e.identifier),
  version: oneOf(evaluations.version, (e) => e.version),
  status: oneOf(evaluations.status, (e) => e.status),
  overridden,
  dryRun: equals(evaluations.dryRun, (e) => e.dryRun),
  gateId: equals(evaluations.gateId, (e) => e.gateId),
  gateIds: oneOf(evaluations.gateId, (e) => e.gateId),
  ruleType: anyRule(ruleEvaluations.type, (r) => r.type),
  ruleName: anyRule(ruleEvaluations.name, (r) => r.name),
  startedAfter: startedFrom,
  startedBefore: startedUntil,
  envs: within(evaluations.env, (e) => e.env),
  evaluationIds: within(evaluations.id, (e) => e.id),
};

/** The filter's fields, for tests that must cover each. */
export const FILTER_FIELDS = Object.keys(FIELDS) as ReadonlyArray<keyof EvaluationFilter>;

/** The fields the filter asks about, each with its value. */
function asked(filter: EvaluationFilter): Array<[Field<unknown>, unknown]> {
  const out: Array<[Field<unknown>, unknown]> = [];
  for (const key of FILTER_FIELDS) {
    const value = filter[key];
    const field = FIELDS[key] as Field<unknown>;
    if (value !== undefined && value !== null && field.asks(value)) out.push([field, value]);
  }
  return out;
}

/** The conditions a query adds for the filter (all must hold). */
export function filterSql(db: Tx, filter: EvaluationFilter): SQL[] {
  return asked(filter).map(([field, value]) => field.sql(db, value));
}

/** Whether an evaluation held in memory is one the filter's query would select. */
export function filterMatches(filter: EvaluationFilter, subject: FilterSubject): boolean {
  return asked(filter).every(([field, value]) => field.matches(value, subject));
}
