import { and, asc, desc, eq, gt, isNotNull, isNull, lt, lte, ne, or, type SQL, sql } from 'drizzle-orm';
import type { KeysetPage, Tx } from './client.ts';
import { changed, ofNewest, utcDay } from './dialect.ts';
import { type EvaluationFilter, filterSql } from './evaluationFilter.ts';
import { inList, preparedSet } from './lists.ts';
import { allRows, firstRow, prepared, runStatement } from './prepared.ts';
import { evaluations, type RuleType, ruleEvaluations } from './schema.ts';

export type EvaluationRow = typeof evaluations.$inferSelect;
export type RuleEvaluationRow = typeof ruleEvaluations.$inferSelect;
export type NewEvaluationRow = typeof evaluations.$inferInsert;
export type NewRuleEvaluationRow = typeof ruleEvaluations.$inferInsert;
export type Status = EvaluationRow['status'];

export type { EvaluationFilter } from './evaluationFilter.ts';

/** Stores an evaluation and its rules; returns them as stored (defaults filled), rules in order. */
export async function insertEvaluation(db: Tx, row: NewEvaluationRow, rules: NewRuleEvaluationRow[]): Promise<{ evaluation: EvaluationRow; rules: RuleEvaluationRow[] }> {
  const [evaluation] = await db.insert(evaluations).values(row).returning();
  const stored = rules.length > 0 ? await db.insert(ruleEvaluations).values(rules).returning() : [];
  return { evaluation: evaluation!, rules: stored.sort((a, b) => a.position - b.position) };
}

// The engine reads and writes these for every check: prepared once per connection.
export async function getEvaluation(db: Tx, id: string): Promise<EvaluationRow | undefined> {
  return await firstRow(
    prepared(db, 'getEvaluation', () =>
      db
        .select()
        .from(evaluations)
        .where(eq(evaluations.id, sql.placeholder('id')))
        .prepare(),
    ),
    { id },
  );
}

/** Idempotency keys are unique per environment: another env's use of the same key is not found. */
export async function findByIdempotencyKey(db: Tx, env: string, key: string): Promise<EvaluationRow | undefined> {
  return (
    await db
      .select()
      .from(evaluations)
      .where(and(eq(evaluations.env, env), eq(evaluations.idempotencyKey, key)))
  )[0];
}

export async function ruleEvaluationsOf(db: Tx, evaluationIds: readonly string[]): Promise<RuleEvaluationRow[]> {
  if (evaluationIds.length === 0) return [];
  return await allRows(
    prepared(db, 'ruleEvaluationsOf', () =>
      db
        .select()
        .from(ruleEvaluations)
        .where(inList(db, ruleEvaluations.evaluationId, { placeholder: 'ids' }))
        .orderBy(asc(ruleEvaluations.evaluationId), asc(ruleEvaluations.position))
        .prepare(),
    ),
    { ids: JSON.stringify(evaluationIds) },
  );
}

export async function getRuleEvaluation(db: Tx, id: string): Promise<RuleEvaluationRow | undefined> {
  return await firstRow(
    prepared(db, 'getRuleEvaluation', () =>
      db
        .select()
        .from(ruleEvaluations)
        .where(eq(ruleEvaluations.id, sql.placeholder('id')))
        .prepare(),
    ),
    { id },
  );
}

/** A rule evaluation with its evaluation, in one statement (every check starts with both). */
export async function getRuleWithEvaluation(db: Tx, id: string): Promise<{ rule: RuleEvaluationRow; evaluation: EvaluationRow } | undefined> {
  return await firstRow(
    prepared(db, 'getRuleWithEvaluation', () =>
      db
        .select({ rule: ruleEvaluations, evaluation: evaluations })
        .from(ruleEvaluations)
        .innerJoin(evaluations, eq(evaluations.id, ruleEvaluations.evaluationId))
        .where(eq(ruleEvaluations.id, sql.placeholder('id')))
        .prepare(),
    ),
    { id },
  );
}

/** Prepared per set of columns patched (the engine always patches the same few). */
export async function updateRuleEvaluationRow(db: Tx, id: string, patch: Partial<NewRuleEvaluationRow>): Promise<void> {
  const { signature, set, values } = preparedSet(patch);
  await runStatement(
    prepared(db, `updateRuleEvaluation:${signature}`, () =>
      db
        .update(ruleEvaluations)
        .set(set as Partial<NewRuleEvaluationRow>)
        .where(eq(ruleEvaluations.id, sql.placeholder('id')))
        .prepare(),
    ),
    { ...values, id },
  );
}

export async function updateEvaluationRow(db: Tx, id: string, patch: Partial<NewEvaluationRow>): Promise<EvaluationRow> {
  const { signature, set, values } = preparedSet(patch);
  return (await firstRow(
    prepared(db, `updateEvaluation:${signature}`, () =>
      db
        .update(evaluations)
        .set({ ...(set as Partial<NewEvaluationRow>), revision: sql`${evaluations.revision} + 1` })
        .where(eq(evaluations.id, sql.placeholder('id')))
        .returning()
        .prepare(),
    ),
    { ...values, id },
  ))!;
}

/** How many evaluations the filter selects: one COUNT, the same conditions as a page. */
export async function countEvaluations(db: Tx, filter: EvaluationFilter): Promise<number> {
  return (
    await db
      .select({ n: sql<number>`count(*)` })
      .from(evaluations)
      .where(and(...filterSql(db, filter)))
  )[0]!.n;
}

/** Newest first: `after` moves to older evaluations (ids are time-ordered). */
export async function listEvaluations(db: Tx, filter: EvaluationFilter, page: KeysetPage): Promise<EvaluationRow[]> {
  const where = filterSql(db, filter);
  if (page.after) where.push(lt(evaluations.id, page.after));
  if (page.before) where.push(gt(evaluations.id, page.before));
  return await db
    .select()
    .from(evaluations)
    .where(and(...where))
    .orderBy(page.inverted ? asc(evaluations.id) : desc(evaluations.id))
    .limit(page.limit);
}

/** Conditions on the rule evaluations themselves (their evaluation's are an EvaluationFilter). */
export interface RuleEvaluationFilter {
  /** Rule evaluation ids. */
  ids?: string[];
  /** Configured rules (just-in-time rules have none, so match none). */
  ruleIds?: string[];
  type?: string[];
  name?: string[];
  /** The rule's own status, not its evaluation's. */
  status?: Status[];
  /** The rule's dry run, not its evaluation's. */
  dryRun?: boolean;
}

function ruleFilterSql(db: Tx, rules: RuleEvaluationFilter): SQL[] {
  const where: SQL[] = [];
  if (rules.ids) where.push(inList(db, ruleEvaluations.id, rules.ids));
  if (rules.ruleIds) where.push(inList(db, ruleEvaluations.ruleId, rules.ruleIds));
  if (rules.type?.length) where.push(inList(db, ruleEvaluations.type, rules.type));
  if (rules.name?.length) where.push(inList(db, ruleEvaluations.name, rules.name));
  if (rules.status?.length) where.push(inList(db, ruleEvaluations.status, rules.status));
  if (rules.dryRun !== undefined) where.push(eq(ruleEvaluations.dryRun, rules.dryRun));
  return where;
}

/**
 * Rule evaluations with their evaluation, of the evaluations `filter` selects: newest evaluation
 * first, each one's rules in order. `after` is where the previous page ended.
 */
export async function listRuleEvaluations(
  db: Tx,
  filter: EvaluationFilter,
  rules: RuleEvaluationFilter,
  page: { after?: { evaluationId: string; position: number }; limit: number },
): Promise<Array<{ evaluation: EvaluationRow; rule: RuleEvaluationRow }>> {
  const where = [...filterSql(db, filter), ...ruleFilterSql(db, rules)];
  const after = page.after;
  if (after) {
    where.push(or(lt(evaluations.id, after.evaluationId), and(eq(evaluations.id, after.evaluationId), gt(ruleEvaluations.position, after.position)))!);
  }
  return (await db
    .select({ evaluation: evaluations, rule: ruleEvaluations })
    .from(ruleEvaluations)
    .innerJoin(evaluations, eq(ruleEvaluations.evaluationId, evaluations.id))
    .where(and(...where))
    .orderBy(desc(evaluations.id), asc(ruleEvaluations.position))
    .limit(page.limit)) as Array<{ evaluation: EvaluationRow; rule: RuleEvaluationRow }>;
}

/**
 * Takes over unfinished evaluations nobody drives: unowned, or with an expired lease. With
 * `includeOwn` (at start) also those already leased to this node, left by its previous life.
 */
export async function claimUnfinished(db: Tx, owner: string, now: Date, leaseUntil: Date, includeOwn: boolean): Promise<string[]> {
  const orphaned = or(isNull(evaluations.leaseOwner), lt(evaluations.leaseExpiresAt, now));
  const notOurs = or(isNull(evaluations.leaseOwner), ne(evaluations.leaseOwner, owner));
  const claimable = and(isNull(evaluations.finishedAt), includeOwn ? or(eq(evaluations.leaseOwner, owner), orphaned) : and(notOurs, orphaned));
  return (await db.update(evaluations).set({ leaseOwner: owner, leaseExpiresAt: leaseUntil }).where(claimable).returning({ id: evaluations.id })).map((r) => r.id);
}

/** Running rules of the evaluations this node drives (to find any the scheduler lost). */
export async function runningRulesOf(db: Tx, owner: string): Promise<Array<{ id: string; evaluationId: string }>> {
  return await db
    .select({ id: ruleEvaluations.id, evaluationId: ruleEvaluations.evaluationId })
    .from(ruleEvaluations)
    .innerJoin(evaluations, eq(ruleEvaluations.evaluationId, evaluations.id))
    .where(and(eq(evaluations.leaseOwner, owner), isNull(evaluations.finishedAt), eq(ruleEvaluations.status, 'in_progress')));
}

export async function renewLeases(db: Tx, owner: string, leaseUntil: Date): Promise<void> {
  await db
    .update(evaluations)
    .set({ leaseExpiresAt: leaseUntil })
    .where(and(eq(evaluations.leaseOwner, owner), isNull(evaluations.finishedAt)));
}

export async function releaseLeases(db: Tx, owner: string): Promise<void> {
  await db
    .update(evaluations)
    .set({ leaseExpiresAt: new Date(0) })
    .where(and(eq(evaluations.leaseOwner, owner), isNull(evaluations.finishedAt)));
}

/** Finished evaluations older than the retention horizon go, their rule evaluations with them. */
export async function deleteFinishedBefore(db: Tx, horizon: Date): Promise<number> {
  return changed(await db.delete(evaluations).where(and(lte(evaluations.finishedAt, horizon))));
}

export interface EvaluationStatsRow {
  total: number;
  byStatus: Array<{ status: Status; count: number }>;
  byDay: Array<{ day: string; status: Status; count: number }>;
  failingGates: Array<{ gateId: string | null; service: string; env: string; identifier: string; failures: number; evaluations: number }>;
  failingRules: Array<{
    gateId: string | null;
    ruleId: string | null;
    service: string;
    env: string;
    identifier: string;
    name: string;
    type: string;
    failures: number;
    evaluations: number;
  }>;
}

/** Aggregates for the explorer: real statuses (dry run ignored), grouped several ways. */
export async function evaluationStats(db: Tx, filter: EvaluationFilter, limit: number): Promise<EvaluationStatsRow> {
  const where = and(...filterSql(db, filter));
  const { failingGates, failingRules } = await mostFailing(db, filter, limit);
  const byStatus = await db.select({ status: evaluations.status, count: sql<number>`count(*)` }).from(evaluations).where(where).groupBy(evaluations.status);
  const day = utcDay(db, evaluations.startedAt);
  const byDay = await db.select({ day, status: evaluations.status, count: sql<number>`count(*)` }).from(evaluations).where(where).groupBy(day, evaluations.status).orderBy(day);
  return {
    total: byStatus.reduce((n, r) => n + r.count, 0),
    byStatus,
    byDay,
    failingGates,
    failingRules,
  };
}

/**
 * The gates and the rules that failed most. A gate is its id (a deleted gate and the one
 * recreated under the same key are two gates; just-in-time evaluations group by their key with
 * no id); a rule is its stored id within its gate (named as in its newest evaluation: a rule
 * may be renamed), or its name and type for just-in-time rules.
 */
export async function mostFailing(db: Tx, filter: EvaluationFilter, limit: number): Promise<Pick<EvaluationStatsRow, 'failingGates' | 'failingRules'>> {
  const where = and(...filterSql(db, filter));
  const failures = sql<number>`sum(case when ${evaluations.status} = 'fail' then 1 else 0 end)`;
  const failingGates = await db
    .select({
      gateId: evaluations.gateId,
      service: evaluations.service,
      env: evaluations.env,
      identifier: evaluations.identifier,
      failures,
      evaluations: sql<number>`count(*)`,
    })
    .from(evaluations)
    .where(where)
    .groupBy(evaluations.gateId, evaluations.service, evaluations.env, evaluations.identifier)
    .having(sql`${failures} > 0`)
    .orderBy(desc(failures), asc(evaluations.service), asc(evaluations.env), asc(evaluations.identifier), asc(evaluations.gateId))
    .limit(limit);
  const ruleFailures = sql<number>`sum(case when ${ruleEvaluations.status} = 'fail' then 1 else 0 end)`;
  const failingRules = (
    await db
      .select({
        gateId: evaluations.gateId,
        ruleId: ruleEvaluations.ruleId,
        service: evaluations.service,
        env: evaluations.env,
        identifier: evaluations.identifier,
        name: ofNewest(db, ruleEvaluations.name, evaluations.startedAt) as typeof ruleEvaluations.name,
        newest: sql<number>`max(${evaluations.startedAt})`,
        type: ruleEvaluations.type,
        failures: ruleFailures,
        evaluations: sql<number>`count(*)`,
      })
      .from(ruleEvaluations)
      .innerJoin(evaluations, eq(ruleEvaluations.evaluationId, evaluations.id))
      .where(where)
      .groupBy(
        evaluations.gateId,
        ruleEvaluations.ruleId,
        sql`case when ${ruleEvaluations.ruleId} is null then ${ruleEvaluations.name} end`,
        ruleEvaluations.type,
        evaluations.service,
        evaluations.env,
        evaluations.identifier,
      )
      .having(sql`${ruleFailures} > 0`)
      .orderBy(
        desc(ruleFailures),
        asc(evaluations.service),
        asc(ofNewest(db, ruleEvaluations.name, evaluations.startedAt)),
        asc(ruleEvaluations.type),
        asc(evaluations.gateId),
        asc(ruleEvaluations.ruleId),
      )
      .limit(limit)
  ).map(({ newest: _, ...rule }) => rule);
  return { failingGates, failingRules };
}

// ---- the explorer's facets and insights ----

export type Facet = 'service' | 'env' | 'identifier' | 'version' | 'status' | 'dryRun' | 'gate' | 'ruleType' | 'ruleName';
export interface FacetValueRow {
  value: string;
  count: number;
  /** For gates: service/env/identifier. */
  label?: string;
}

const FACET_COLUMNS = {
  service: evaluations.service,
  env: evaluations.env,
  identifier: evaluations.identifier,
  version: evaluations.version,
  status: evaluations.status,
  dryRun: evaluations.dryRun,
} as const;

/**
 * The values of one facet with how many evaluations each selects, most first, at most `limit`.
 * `filter` should leave out the facet's own selection, so that every value stays offered.
 */
export async function facetValues(db: Tx, facet: Facet, filter: EvaluationFilter, limit: number): Promise<FacetValueRow[]> {
  const where = and(...filterSql(db, filter));
  const n = sql<number>`count(*)`;
  if (facet === 'gate') {
    return (
      await db
        // A gate's evaluations share its key: any row's (max) names it, on both stores.
        .select({
          value: evaluations.gateId,
          count: n,
          service: sql<string>`max(${evaluations.service})`,
          env: sql<string>`max(${evaluations.env})`,
          identifier: sql<string>`max(${evaluations.identifier})`,
        })
        .from(evaluations)
        .where(and(where, isNotNull(evaluations.gateId)))
        .groupBy(evaluations.gateId)
        .orderBy(desc(n), asc(evaluations.gateId))
        .limit(limit)
    ).map((r) => ({ value: r.value!, count: r.count, label: `${r.service}/${r.env}/${r.identifier}` }));
  }
  if (facet === 'ruleType' || facet === 'ruleName') {
    const column = facet === 'ruleType' ? ruleEvaluations.type : ruleEvaluations.name;
    // Evaluations, not rules: two rules of one type count their evaluation once.
    const evaluationsCounted = sql<number>`count(distinct ${ruleEvaluations.evaluationId})`;
    return await db
      .select({ value: column, count: evaluationsCounted })
      .from(ruleEvaluations)
      .innerJoin(evaluations, eq(ruleEvaluations.evaluationId, evaluations.id))
      .where(where)
      .groupBy(column)
      .orderBy(desc(evaluationsCounted), asc(column))
      .limit(limit);
  }
  const column = FACET_COLUMNS[facet];
  return (
    await db
      .select({ value: column, count: n })
      .from(evaluations)
      .where(and(where, isNotNull(column)))
      .groupBy(column)
      .orderBy(desc(n), asc(column))
      .limit(limit)
  ).map((r) => ({ value: String(r.value), count: r.count }));
}

/** Evaluations per UTC day and real status. */
export async function countsByDay(db: Tx, filter: EvaluationFilter): Promise<Array<{ day: string; status: Status; count: number }>> {
  const day = utcDay(db, evaluations.startedAt);
  return await db
    .select({ day, status: evaluations.status, count: sql<number>`count(*)` })
    .from(evaluations)
    .where(and(...filterSql(db, filter)))
    .groupBy(day, evaluations.status)
    .orderBy(day);
}

export interface FailedRuleLine {
  id: string;
  evaluationId: string;
  position: number;
  type: RuleType;
  reason: string | null;
  triggerEnvs: string[] | null;
}

/**
 * Failed rules of the filtered evaluations, newest evaluation first, `limit` at a time: the
 * light columns only (no evidence); `after` is the last line of the previous page.
 */
export async function failedRulesPage(db: Tx, filter: EvaluationFilter, after: Pick<FailedRuleLine, 'evaluationId' | 'position'> | null, limit: number): Promise<FailedRuleLine[]> {
  const where = [...filterSql(db, filter), eq(ruleEvaluations.status, 'fail')];
  if (after) {
    where.push(or(lt(evaluations.id, after.evaluationId), and(eq(evaluations.id, after.evaluationId), gt(ruleEvaluations.position, after.position)))!);
  }
  return await db
    .select({
      id: ruleEvaluations.id,
      evaluationId: ruleEvaluations.evaluationId,
      position: ruleEvaluations.position,
      type: ruleEvaluations.type,
      reason: ruleEvaluations.reason,
      triggerEnvs: evaluations.triggerEnvs,
    })
    .from(ruleEvaluations)
    .innerJoin(evaluations, eq(ruleEvaluations.evaluationId, evaluations.id))
    .where(and(...where))
    .orderBy(desc(evaluations.id), asc(ruleEvaluations.position))
    .limit(limit);
}

export async function getRuleEvaluations(db: Tx, ids: readonly string[]): Promise<RuleEvaluationRow[]> {
  if (ids.length === 0) return [];
  return await db
    .select()
    .from(ruleEvaluations)
    .where(inList(db, ruleEvaluations.id, ids));
}

/**
 * Nearest-rank percentiles of decidedAt − startedAt (ms) over the decided (pass or fail)
 * evaluations of the filter, from one sort: ranks ⌈p·n⌉ in integer arithmetic (p to 0.001).
 */
export async function verdictTimes(db: Tx, filter: EvaluationFilter, percents: readonly number[]): Promise<{ count: number; byPercent: Map<number, number>; max: number | null }> {
  const where = and(...filterSql(db, filter), inList(db, evaluations.status, ['pass', 'fail']), isNotNull(evaluations.decidedAt));
  const ms = sql<number>`(${evaluations.decidedAt} - ${evaluations.startedAt})`;
  const ranked = db
    .select({ ms: ms.as('ms'), rn: sql<number>`row_number() over (order by ${ms})`.as('rn'), n: sql<number>`count(*) over ()`.as('n') })
    .from(evaluations)
    .where(where)
    .as('ranked');
  const wanted = sql.join(
    [
      ...percents.map(
        (p) =>
          sql`${ranked.rn} = (case when ${ranked.n} * ${sql.raw(String(Math.round(p * 1000)))} < 1000 then 1 else (${sql.raw(String(Math.round(p * 1000)))} * ${ranked.n} + 999) / 1000 end)`,
      ),
      sql`${ranked.rn} = ${ranked.n}`,
    ],
    sql` or `,
  );
  const rows = await db.select({ ms: ranked.ms, rn: ranked.rn, n: ranked.n }).from(ranked).where(wanted);
  const count = rows[0]?.n ?? 0;
  const at = new Map(rows.map((r) => [r.rn, r.ms]));
  const byPercent = new Map(percents.map((p) => [p, at.get(Math.max(1, Math.ceil((Math.round(p * 1000) * count) / 1000)))!] as [number, number]));
  return { count, byPercent: count > 0 ? byPercent : new Map(), max: count > 0 ? at.get(count)! : null };
}

/**
 * The newest `limit` evaluations of each gate, one indexed read per gate: a gate's evaluations
 * share its key, so the key's (service, env, identifier, startedAt) index walks back from now.
 */
export async function latestEvaluationsOfGates(
  db: Tx,
  gates: ReadonlyArray<{ id: string; service: string; env: string; identifier: string }>,
  limit: number,
): Promise<EvaluationRow[]> {
  const rows: EvaluationRow[] = [];
  for (const g of gates) {
    rows.push(
      ...(await db
        .select()
        .from(evaluations)
        .where(and(eq(evaluations.service, g.service), eq(evaluations.env, g.env), eq(evaluations.identifier, g.identifier), eq(evaluations.gateId, g.id)))
        .orderBy(desc(evaluations.startedAt), desc(evaluations.id))
        .limit(limit)),
    );
  }
  return rows;
}
