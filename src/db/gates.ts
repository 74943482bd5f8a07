import { and, asc, desc, eq, gt, lt, sql } from 'drizzle-orm';
import type { KeysetPage, Tx } from './client.ts';
import { type GateFilter, gateFilterSql, preparedGateFilter } from './gateFilter.ts';
import { inList } from './lists.ts';
import { allRows, prepared } from './prepared.ts';
import { gates, rules } from './schema.ts';

export type GateRow = typeof gates.$inferSelect;
export type RuleRow = typeof rules.$inferSelect;
export type NewGateRow = typeof gates.$inferInsert;
export type NewRuleRow = typeof rules.$inferInsert;

export type { GateFilter } from './gateFilter.ts';

export async function getGate(db: Tx, id: string): Promise<GateRow | undefined> {
  return (await db.select().from(gates).where(eq(gates.id, id)))[0];
}

export async function getGates(db: Tx, ids: readonly string[]): Promise<GateRow[]> {
  if (ids.length === 0) return [];
  return await db
    .select()
    .from(gates)
    .where(inList(db, gates.id, ids));
}

export async function getGateByKey(db: Tx, service: string, env: string, identifier: string): Promise<GateRow | undefined> {
  return (
    await db
      .select()
      .from(gates)
      .where(and(eq(gates.service, service), eq(gates.env, env), eq(gates.identifier, identifier)))
  )[0];
}

/** How many gates the filter selects: one COUNT, the same conditions as a page. */
export async function countGates(db: Tx, filter: GateFilter): Promise<number> {
  return (
    await db
      .select({ n: sql<number>`count(*)` })
      .from(gates)
      .where(and(...gateFilterSql(db, filter)))
  )[0]!.n;
}

/**
 * The ids of a page of gates, in the page's order, reading only the index, from a statement
 * prepared once per combination of the conditions given (values are parameters): building and
 * preparing the SQL again was a tenth of a page read.
 */
export async function listGateIds(db: Tx, filter: GateFilter, page: KeysetPage): Promise<string[]> {
  const where = preparedGateFilter(filter);
  const after = page.after || undefined;
  const before = page.before || undefined;
  const name = `listGateIds:${where.signature}:${after ? 'after' : ''}:${before ? 'before' : ''}:${page.inverted ? 'desc' : 'asc'}`;
  const stmt = prepared(db, name, () =>
    db
      .select({ id: gates.id })
      .from(gates)
      .where(and(...where.conditions(db), after ? gt(gates.id, sql.placeholder('after')) : undefined, before ? lt(gates.id, sql.placeholder('before')) : undefined))
      .orderBy(page.inverted ? desc(gates.id) : asc(gates.id))
      .limit(sql.placeholder('limit'))
      .prepare(),
  );
  return (await allRows(stmt, { ...where.values, after, before, limit: page.limit })).map((r) => r.id);
}

/** The rules of many gates in one statement, whatever their number, in creation order. */
export async function rulesOfGates(db: Tx, gateIds: readonly string[]): Promise<RuleRow[]> {
  if (gateIds.length === 0) return [];
  const stmt = prepared(db, 'rulesOfGates', () =>
    db
      .select()
      .from(rules)
      .where(inList(db, rules.gateId, { placeholder: 'ids' }))
      .orderBy(asc(rules.gateId), asc(rules.id))
      .prepare(),
  );
  return await allRows(stmt, { ids: JSON.stringify(gateIds) });
}

export async function getRule(db: Tx, id: string): Promise<RuleRow | undefined> {
  return (await db.select().from(rules).where(eq(rules.id, id)))[0];
}

export async function insertGate(db: Tx, row: NewGateRow): Promise<GateRow> {
  return (await db.insert(gates).values(row).returning())[0]!;
}

export async function insertRules(db: Tx, rows: NewRuleRow[]): Promise<RuleRow[]> {
  if (rows.length === 0) return [];
  return await db.insert(rules).values(rows).returning();
}

export async function updateGateRow(db: Tx, id: string, patch: Partial<NewGateRow>): Promise<GateRow> {
  return (await db.update(gates).set(patch).where(eq(gates.id, id)).returning())[0]!;
}

export async function deleteGateRow(db: Tx, id: string): Promise<void> {
  await db.delete(gates).where(eq(gates.id, id));
}

export async function updateRuleRow(db: Tx, id: string, patch: Partial<NewRuleRow>): Promise<RuleRow> {
  return (await db.update(rules).set(patch).where(eq(rules.id, id)).returning())[0]!;
}

export async function deleteRuleRow(db: Tx, id: string): Promise<void> {
  await db.delete(rules).where(eq(rules.id, id));
}
