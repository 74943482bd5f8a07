import { and, asc, desc, eq, gt, lt, type SQL, sql } from 'drizzle-orm';
import type { KeysetPage, Tx } from './client.ts';
import { inList } from './lists.ts';
import { prepared } from './prepared.ts';
import { gates, rules } from './schema.ts';

export type GateRow = typeof gates.$inferSelect;
export type RuleRow = typeof rules.$inferSelect;
export type NewGateRow = typeof gates.$inferInsert;
export type NewRuleRow = typeof rules.$inferInsert;

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

export function getGate(db: Tx, id: string): GateRow | undefined {
  return db.select().from(gates).where(eq(gates.id, id)).get();
}

export function getGates(db: Tx, ids: readonly string[]): GateRow[] {
  if (ids.length === 0) return [];
  return db.select().from(gates).where(inList(gates.id, ids)).all();
}

export function getGateByKey(db: Tx, service: string, env: string, identifier: string): GateRow | undefined {
  return db
    .select()
    .from(gates)
    .where(and(eq(gates.service, service), eq(gates.env, env), eq(gates.identifier, identifier)))
    .get();
}

function gateFilterSql(filter: GateFilter): SQL[] {
  const where: SQL[] = [];
  if (filter.service !== undefined) where.push(eq(gates.service, filter.service));
  if (filter.env !== undefined) where.push(eq(gates.env, filter.env));
  if (filter.identifier !== undefined) where.push(eq(gates.identifier, filter.identifier));
  if (filter.dryRun !== undefined) where.push(eq(gates.dryRun, filter.dryRun));
  if (filter.serviceIn?.length) where.push(inList(gates.service, filter.serviceIn));
  if (filter.envIn?.length) where.push(inList(gates.env, filter.envIn));
  if (filter.identifierIn?.length) where.push(inList(gates.identifier, filter.identifierIn));
  if (filter.envs) where.push(inList(gates.env, filter.envs));
  return where;
}

/** How many gates the filter selects: one COUNT, the same conditions as a page. */
export function countGates(db: Tx, filter: GateFilter): number {
  return db
    .select({ n: sql<number>`count(*)` })
    .from(gates)
    .where(and(...gateFilterSql(filter)))
    .get()!.n;
}

/**
 * The ids of a page of gates, in the page's order, reading only the index, from a statement
 * prepared once per combination of the conditions given (values are parameters): building and
 * preparing the SQL again was a tenth of a page read.
 */
export function listGateIds(db: Tx, filter: GateFilter, page: KeysetPage): string[] {
  const listed = (values?: readonly string[]) => (values?.length ? JSON.stringify(values) : undefined);
  const given = {
    service: filter.service,
    env: filter.env,
    identifier: filter.identifier,
    // A placeholder is bound as given: the column stores 1 and 0.
    dryRun: filter.dryRun === undefined ? undefined : Number(filter.dryRun),
    serviceIn: listed(filter.serviceIn),
    envIn: listed(filter.envIn),
    identifierIn: listed(filter.identifierIn),
    // An empty list of visible envs matches nothing, as it must.
    envs: filter.envs ? JSON.stringify(filter.envs) : undefined,
    after: page.after || undefined,
    before: page.before || undefined,
  };
  const present = (Object.keys(given) as (keyof typeof given)[]).filter((k) => given[k] !== undefined);
  const stmt = prepared(db, `listGateIds:${present.join(',')}:${page.inverted ? 'desc' : 'asc'}`, () => {
    const p = (name: string) => sql.placeholder(name);
    const condition: Record<keyof typeof given, () => SQL> = {
      service: () => eq(gates.service, p('service')),
      env: () => eq(gates.env, p('env')),
      identifier: () => eq(gates.identifier, p('identifier')),
      dryRun: () => eq(gates.dryRun, p('dryRun')),
      serviceIn: () => inList(gates.service, { placeholder: 'serviceIn' }),
      envIn: () => inList(gates.env, { placeholder: 'envIn' }),
      identifierIn: () => inList(gates.identifier, { placeholder: 'identifierIn' }),
      envs: () => inList(gates.env, { placeholder: 'envs' }),
      after: () => gt(gates.id, p('after')),
      before: () => lt(gates.id, p('before')),
    };
    return db
      .select({ id: gates.id })
      .from(gates)
      .where(and(...present.map((k) => condition[k]())))
      .orderBy(page.inverted ? desc(gates.id) : asc(gates.id))
      .limit(p('limit'))
      .prepare();
  });
  return stmt.all({ ...Object.fromEntries(present.map((k) => [k, given[k]])), limit: page.limit }).map((r) => r.id);
}

/** The rules of many gates in one statement, whatever their number, in creation order. */
export function rulesOfGates(db: Tx, gateIds: readonly string[]): RuleRow[] {
  if (gateIds.length === 0) return [];
  const stmt = prepared(db, 'rulesOfGates', () =>
    db
      .select()
      .from(rules)
      // json_each keeps one statement for any number of ids.
      .where(sql`${rules.gateId} in (select value from json_each(${sql.placeholder('ids')}))`)
      .orderBy(asc(rules.gateId), asc(rules.id))
      .prepare(),
  );
  return stmt.all({ ids: JSON.stringify(gateIds) });
}

export function getRule(db: Tx, id: string): RuleRow | undefined {
  return db.select().from(rules).where(eq(rules.id, id)).get();
}

export function insertGate(db: Tx, row: NewGateRow): GateRow {
  return db.insert(gates).values(row).returning().get();
}

export function insertRules(db: Tx, rows: NewRuleRow[]): RuleRow[] {
  if (rows.length === 0) return [];
  return db.insert(rules).values(rows).returning().all();
}

export function updateGateRow(db: Tx, id: string, patch: Partial<NewGateRow>): GateRow {
  return db.update(gates).set(patch).where(eq(gates.id, id)).returning().get()!;
}

export function deleteGateRow(db: Tx, id: string): void {
  db.delete(gates).where(eq(gates.id, id)).run();
}

export function updateRuleRow(db: Tx, id: string, patch: Partial<NewRuleRow>): RuleRow {
  return db.update(rules).set(patch).where(eq(rules.id, id)).returning().get()!;
}

export function deleteRuleRow(db: Tx, id: string): void {
  db.delete(rules).where(eq(rules.id, id)).run();
}
