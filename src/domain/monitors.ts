import { z } from 'zod';
import { insertAudit } from '../db/audit.ts';
import { type Tx, transaction } from '../db/client.ts';
import {
  deleteMonitorRow,
  getGroup,
  getMonitor as getMonitorRow,
  getMonitors,
  groupsOf,
  insertMonitor,
  insertTransition,
  type MonitorGroupRow,
  type MonitorRow,
  type MonitorStateValue,
  markNoData,
  monitorsPage,
  setSourceHealth,
  silentGroups,
  touchGroup,
  updateMonitorRow,
  upsertGroup,
} from '../db/monitors.ts';
import { MONITOR_STATES, MONITOR_TYPES } from '../db/schema.ts';
import { actorFields } from '../log.ts';
import type { Deps } from './deps.ts';
import { badInput, DomainError, notFound, parseInput } from './errors.ts';
import type { MonitorStateChange } from './events.ts';
import { assertUuid, newId } from './ids.ts';
import { type Expr, groupTagsOf, type MatchableMonitor, MonitorQueryError, matches, matchWork, mentions, normalizeGroup, parseMonitorQuery } from './monitorQuery.ts';
import { type Principal, requireScope } from './principal.ts';
import { nullsAsUndefined } from './ruleOptions.ts';
import { audit, stamp } from './stamp.ts';

export type { MonitorGroupRow, MonitorRow, MonitorStateChange, MonitorStateValue };

// ---- input ----

/**
 * Bounds of what a monitor holds, whichever path creates it (GraphQL, the Alertmanager
 * receiver, imported Prometheus rules): every search matches names and tags, so their size is
 * the cost of every search and every transition's subscriber check.
 */
export const MAX_MONITOR_NAME_LENGTH = 300;
export const MAX_TAG_LENGTH = 200;
export const MAX_TAGS = 100;
/** A group name ("k:v,k2:v2"), as reported or built from alert labels. */
export const MAX_GROUP_LENGTH = 1000;
export const MAX_STATE_MESSAGE_LENGTH = 4000;

const tag = z
  .string()
  .trim()
  .min(1, 'tags must not be empty')
  .max(MAX_TAG_LENGTH, `a tag is at most ${MAX_TAG_LENGTH} characters`)
  .regex(/^[^\s,]+$/, 'a tag is key:value or a bare word, without spaces or commas');

export const apmDefinitionSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      metric: z.enum(['error_rate', 'error_count', 'hits', 'p95', 'p99'], { message: 'metric must be ERROR_RATE, ERROR_COUNT, HITS, P95 or P99' }),
      service: z.string().trim().min(1, 'service must not be empty'),
      env: z.string().trim().min(1, 'env must not be empty'),
      version: z.string().trim().min(1).optional(),
      resource: z.string().trim().min(1).optional(),
      window: z.number().int().min(10, 'window is at least 10 seconds').max(86_400, 'window is at most 86400 seconds').default(300),
      groupBy: z
        .array(z.enum(['resource', 'version', 'primary_tag']))
        .max(3, 'groupBy lists at most 3 dimensions')
        .default([]),
    })
    .strict(),
);
export type ApmDefinition = z.output<typeof apmDefinitionSchema>;

/** What an evaluated monitor keeps in `definition`. */
export interface MonitorDefinition {
  comparator?: 'above' | 'below';
  apm?: ApmDefinition;
  /** Set on monitors imported from Prometheus alerting rules. */
  importedRule?: { group: string; name: string; labels?: Record<string, string> };
}

/** Every field of a monitor with its bounds: one definition for every path that creates one. */
const monitorFields = z
  .object({
    name: z.string().trim().min(1, 'name must not be empty').max(MAX_MONITOR_NAME_LENGTH, `name is at most ${MAX_MONITOR_NAME_LENGTH} characters`),
    type: z.enum(MONITOR_TYPES, { message: 'type must be EXTERNAL, APM or PROMETHEUS' }),
    tags: z.array(tag).max(MAX_TAGS, `at most ${MAX_TAGS} tags`).default([]),
    query: z.string().max(4000, 'query is at most 4000 characters').default(''),
    muted: z.boolean().default(false),
    priority: z.number().int().min(1, 'priority is 1 (highest) to 5').max(5, 'priority is 1 (highest) to 5').optional(),
    noDataTimeframe: z
      .number()
      .int()
      .min(60, 'noDataTimeframe is at least 60 seconds')
      .max(86_400 * 7)
      .optional(),
    critical: z.number().finite().optional(),
    warning: z.number().finite().optional(),
    comparator: z.enum(['above', 'below']).default('above'),
    apm: apmDefinitionSchema.optional(),
  })
  .strict();

export const createMonitorInputSchema = z.preprocess(
  nullsAsUndefined,
  monitorFields.superRefine((m, ctx) => {
    if (m.type === 'prometheus' && m.query.trim() === '') ctx.addIssue({ code: 'custom', path: ['query'], message: 'a PROMETHEUS monitor needs its PromQL expression in query' });
    if (m.type === 'apm' && !m.apm) ctx.addIssue({ code: 'custom', path: ['apm'], message: 'an APM monitor needs its apm definition' });
    if (m.type !== 'apm' && m.apm) ctx.addIssue({ code: 'custom', path: ['apm'], message: 'apm is only for APM monitors' });
    if (m.type !== 'external' && m.critical === undefined)
      ctx.addIssue({ code: 'custom', path: ['critical'], message: `a ${m.type.toUpperCase()} monitor needs a critical threshold` });
    if (m.critical !== undefined && m.warning !== undefined && (m.comparator === 'above' ? m.warning > m.critical : m.warning < m.critical)) {
      ctx.addIssue({
        code: 'custom',
        path: ['warning'],
        message: `warning must be on the OK side of critical (${m.comparator === 'above' ? 'at most' : 'at least'} ${m.critical})`,
      });
    }
  }),
);
/** Imported alerting rules: the same fields and bounds, but Prometheus decides their state, not a threshold. */
const importedMonitorInputSchema = z.preprocess(nullsAsUndefined, monitorFields);

export const updateMonitorInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      name: z.string().trim().min(1, 'name must not be empty').max(MAX_MONITOR_NAME_LENGTH, `name is at most ${MAX_MONITOR_NAME_LENGTH} characters`).optional(),
      tags: z.array(tag).max(MAX_TAGS, `at most ${MAX_TAGS} tags`).optional(),
      query: z.string().max(4000, 'query is at most 4000 characters').optional(),
      muted: z.boolean().optional(),
      priority: z.number().int().min(1, 'priority is 1 (highest) to 5').max(5, 'priority is 1 (highest) to 5').optional(),
    })
    .strict(),
);

export const reportMonitorStateInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      monitorId: z.string().uuid('monitorId must be a UUID'),
      group: z.string().max(MAX_GROUP_LENGTH, `group is at most ${MAX_GROUP_LENGTH} characters`).optional(),
      state: z.enum(MONITOR_STATES, { message: 'state must be OK, WARN, ALERT or NO_DATA' }),
      message: z.string().max(MAX_STATE_MESSAGE_LENGTH, `message is at most ${MAX_STATE_MESSAGE_LENGTH} characters`).optional(),
    })
    .strict(),
);
export type ReportMonitorStateInput = z.output<typeof reportMonitorStateInputSchema>;

// ---- views ----

const SEVERITY: Record<MonitorStateValue, number> = { ok: 0, warn: 1, no_data: 2, alert: 3 };

/** The worst state among a monitor's groups; null when no group has reported. */
export function worstState(groups: readonly Pick<MonitorGroupRow, 'state'>[]): MonitorStateValue | null {
  let worst: MonitorStateValue | null = null;
  for (const g of groups) if (worst === null || SEVERITY[g.state] > SEVERITY[worst]) worst = g.state;
  return worst;
}

export function matchable(m: MonitorRow, groups: readonly MonitorGroupRow[]): MatchableMonitor {
  return {
    id: m.id,
    name: m.name,
    type: m.type,
    tags: m.tags,
    query: m.query,
    muted: m.muted,
    priority: m.priority,
    status: worstState(groups) ?? 'no_data',
  };
}

export function monitorUrl(deps: Deps, id: string): string {
  return `${deps.baseUrl()}/monitors/${id}`;
}

// ---- reads ----

const requireRead = (actor: Principal) => requireScope(actor, ['gates:read', 'monitors:write'], 'read monitors');

/** A monitor belongs to the environments of its `env:` tags. */
export const envsOf = (tags: readonly string[]) => tags.filter((t) => t.startsWith('env:')).map((t) => t.slice(4));

/**
 * The one visibility rule for monitors: seen from `envs` (null: every environment), a monitor
 * of `monitorEnvs` is visible when it belongs to one of them. Keys, rule matching (under the
 * trigger's envs) and rule evidence (under the reader's) all use it.
 */
export function monitorVisibleUnder(envs: readonly string[] | null, monitorEnvs: readonly string[]): boolean {
  return envs === null || monitorEnvs.some((e) => envs.includes(e));
}

/** Keys limited to environments see and touch only monitors tagged with one of them. */
export function canSeeMonitor(actor: Pick<Principal, 'envs'>, m: Pick<MonitorRow, 'tags'>): boolean {
  return monitorVisibleUnder(actor.envs, envsOf(m.tags));
}

/** Another env's monitor answers in the very words of one that does not exist. */
function assertMonitorVisible(actor: Principal, m: MonitorRow, id: string, field: string): void {
  if (!canSeeMonitor(actor, m)) throw notFound(`monitor ${id} does not exist`, field);
}

/**
 * Changing a monitor (its state, tags, mute, existence) changes the verdicts of every env it is
 * tagged with: a key may see a monitor shared with another env, but change only one whose
 * envs are all its own.
 */
export function canChangeMonitor(actor: Pick<Principal, 'envs'>, m: Pick<MonitorRow, 'tags'>): boolean {
  return actor.envs === null || (canSeeMonitor(actor, m) && envsOf(m.tags).every((e) => actor.envs!.includes(e)));
}

/** Not found for a monitor the actor cannot see; FORBIDDEN, naming the other envs, for one it sees but shares. */
function assertMonitorChangeable(actor: Principal, m: MonitorRow, id: string, field: string): void {
  assertMonitorVisible(actor, m, id, field);
  if (canChangeMonitor(actor, m)) return;
  const others = envsOf(m.tags).filter((e) => !actor.envs!.includes(e));
  throw new DomainError(
    'FORBIDDEN',
    `API key "${actor.name}" is limited to env ${actor.envs!.join(', ')}; monitor ${id} is also in env ${others.join(', ')}, so only a key for those envs too may change it`,
    field,
  );
}

/** A limited key may only create or retag monitors into its own environments. */
function assertTagsAllowed(actor: Principal, tags: readonly string[]): void {
  if (actor.envs === null) return;
  const envs = envsOf(tags);
  if (envs.length === 0 || envs.some((e) => !actor.envs!.includes(e))) {
    throw new DomainError(
      'FORBIDDEN',
      `API key "${actor.name}" is limited to env ${actor.envs.join(', ')}: the monitor's tags must include env:${actor.envs[0]} and no other env`,
      'input.tags',
    );
  }
}

/** An APM monitor measures its definition's env: a limited key may only measure its own. */
function assertApmEnvAllowed(actor: Principal, apm: { env: string } | undefined): void {
  if (actor.envs === null || !apm || actor.envs.includes(apm.env)) return;
  throw new DomainError('FORBIDDEN', `API key "${actor.name}" is limited to env ${actor.envs.join(', ')} and cannot measure env ${apm.env}`, 'input.apm.env');
}
/** PromQL can read any environment's series, so only keys for every environment may write it. */
function assertPromqlAllowed(actor: Principal, field: string): void {
  if (actor.envs === null) return;
  throw new DomainError(
    'FORBIDDEN',
    `API key "${actor.name}" is limited to env ${actor.envs.join(', ')}; a PromQL expression is not, so only a key for every environment may write one`,
    field,
  );
}
const requireWrite = (actor: Principal, action: string) => requireScope(actor, 'monitors:write', action);

/** A monitor to watch by id: NOT_FOUND (naming `field`) when it does not exist or is another env's. */
export async function requireVisibleMonitor(deps: Deps, actor: Principal, id: string, field: string): Promise<MonitorRow> {
  requireRead(actor);
  const m = await getMonitorRow(deps.db, assertUuid(id, field));
  if (!m) throw notFound(`monitor ${id} does not exist`, field);
  assertMonitorVisible(actor, m, id, field);
  return m;
}

export async function getMonitor(deps: Deps, actor: Principal, id: string): Promise<MonitorRow | null> {
  requireRead(actor);
  const m = await getMonitorRow(deps.db, assertUuid(id, 'id'));
  return m && canSeeMonitor(actor, m) ? m : null;
}

export async function monitorGroups(deps: Deps, monitorIds: readonly string[]): Promise<MonitorGroupRow[]> {
  return groupsOf(deps.db, monitorIds);
}

/** Matching work (characters examined) between two turns of the event loop: about 10 ms. */
const SEARCH_SLICE_STEPS = 1_000_000;
/** Past this much matching a search is refused rather than run for seconds. */
const MAX_SEARCH_STEPS = 100_000_000;

/** What a monitor rule's selection may cost in one go (it runs inside a check): about 100 ms. */
export const MAX_RULE_MATCH_STEPS = 20_000_000;

/**
 * The monitors `test` selects, without yielding, for callers that must answer at once (a rule's
 * check), within `maxSteps`: past it, `tooCostly()` is thrown rather than holding the event loop.
 */
export function filterMatchingNow<T>(monitors: readonly T[], test: (m: T) => boolean, maxSteps: number, tooCostly: () => Error): T[] {
  const start = matchWork.steps;
  const out: T[] = [];
  for (const m of monitors) {
    if (test(m)) out.push(m);
    if (matchWork.steps - start > maxSteps) throw tooCostly();
  }
  return out;
}

function searchTooCostly(field: string, monitorCount: number, maxSteps = MAX_SEARCH_STEPS): DomainError {
  return badInput(
    field,
    `matching this query against ${monitorCount} monitors is too costly (over ${maxSteps} characters to examine): use fewer leading '*' wildcards or narrow it with exact tags`,
  );
}

/** Monitors a search reads per turn of the event loop (a page takes a few ms to read and map). */
export const SEARCH_PAGE_SIZE = 1000;

/**
 * Monitors matching a search query (all of them without one), in creation order. The monitors
 * are read a page at a time with a turn of the event loop between pages, and matched in slices
 * of SEARCH_SLICE_STEPS within MAX_SEARCH_STEPS: 40,000 monitors read at once held the loop for
 * 250-570 ms. Groups are read only for the monitors whose match depends on them.
 */
export async function searchMonitors(deps: Deps, actor: Principal, query: string | undefined): Promise<MonitorRow[]> {
  requireRead(actor);
  const expr = query?.trim() ? parseMonitorQuery(query) : null;
  const needGroups = expr !== null && (mentions(expr, 'group') || mentions(expr, 'status'));
  const start = matchWork.steps;
  let sliceStart = start;
  let seen = 0;
  /** Between two monitors: yields once a slice of matching is spent, refuses past the budget. */
  const spent = (): Promise<void> | undefined => {
    if (matchWork.steps - sliceStart < SEARCH_SLICE_STEPS) return undefined;
    // Counts only monitors the actor may see: the total would tell a limited key about other envs.
    if (matchWork.steps - start > MAX_SEARCH_STEPS) throw searchTooCostly('query', seen);
    return nextTurn().then(() => {
      sliceStart = matchWork.steps;
    });
  };
  const out: MonitorRow[] = [];
  for (let after: string | null = null; ; ) {
    const page = await monitorsPage(deps.db, after, SEARCH_PAGE_SIZE);
    const visible = page.filter((m) => canSeeMonitor(actor, m));
    seen += visible.length;
    if (expr === null) out.push(...visible);
    else {
      const known: Array<boolean | null> = [];
      for (const m of visible) {
        known.push(needGroups ? decidedWithoutGroups(expr, m) : matches(expr, matchable(m, []), null));
        const turn = spent();
        if (turn) await turn;
      }
      const groups = groupsByMonitor(
        await groupsOf(
          deps.db,
          visible.filter((_, i) => known[i] === null).map((m) => m.id),
        ),
      );
      for (const [i, m] of visible.entries()) {
        if (known[i] === null) {
          known[i] = monitorMatches(expr, m, groups.get(m.id) ?? []);
          const turn = spent();
          if (turn) await turn;
        }
        if (known[i]) out.push(m);
      }
    }
    if (page.length < SEARCH_PAGE_SIZE) return out;
    after = page.at(-1)!.id;
    await nextTurn();
    sliceStart = matchWork.steps;
  }
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * What the query says of a monitor before its groups are read: true or false when the group
 * and status terms cannot change the answer, null when they can. Only `group:` reads a group
 * and only `status:` reads the groups' states, so the other terms are judged on the monitor.
 */
function decidedWithoutGroups(expr: Expr, m: MonitorRow): boolean | null {
  if (!mentions(expr, 'group') && !mentions(expr, 'status')) return matches(expr, matchable(m, []), null);
  switch (expr.kind) {
    case 'and':
    case 'or': {
      const decisive = expr.kind === 'or';
      let unknown = false;
      for (const item of expr.items) {
        const r = decidedWithoutGroups(item, m);
        if (r === decisive) return decisive;
        if (r === null) unknown = true;
      }
      return unknown ? null : !decisive;
    }
    case 'not': {
      const r = decidedWithoutGroups(expr.item, m);
      return r === null ? null : !r;
    }
    default:
      return null;
  }
}

export function groupsByMonitor(rows: readonly MonitorGroupRow[]): Map<string, MonitorGroupRow[]> {
  const map = new Map<string, MonitorGroupRow[]>();
  for (const g of rows) {
    const list = map.get(g.monitorId);
    if (list) list.push(g);
    else map.set(g.monitorId, [g]);
  }
  return map;
}

/** A monitor matches when the query holds for it as a whole, or for one of its groups. */
export function monitorMatches(expr: Expr, m: MonitorRow, groups: readonly MonitorGroupRow[]): boolean {
  const mm = matchable(m, groups);
  return matches(expr, mm, null) || groups.some((g) => matches(expr, mm, groupTagsOf(g.group)));
}

/** A monitor search as the caller gave it in `field`: null when empty, BAD_USER_INPUT naming the field when it does not parse. */
export function parseMonitorSearch(query: string | null | undefined, field: string): Expr | null {
  if (!query?.trim()) return null;
  try {
    return parseMonitorQuery(query);
  } catch (err) {
    if (err instanceof MonitorQueryError) throw badInput(field, `invalid monitor query: ${err.message}`);
    throw err;
  }
}

/**
 * Whether a transition concerns what the query selects: the monitor as a whole, or the group
 * that moved. Two matches per transition, however many groups the monitor has (a status term
 * reads the others' states, not their names).
 */
export async function transitionMatches(deps: Deps, expr: Expr, change: Pick<MonitorStateChange, 'monitor' | 'group'>): Promise<boolean> {
  const mm = matchable(change.monitor, mentions(expr, 'status') ? await groupsOf(deps.db, [change.monitor.id]) : []);
  return matches(expr, mm, null) || matches(expr, mm, groupTagsOf(change.group));
}

// ---- writes ----

/**
 * Creates a monitor. The input is validated here, whoever calls (GraphQL validates it first
 * for its error paths, the sources do not): no path stores a monitor outside the bounds.
 */
export async function createMonitor(
  deps: Deps,
  actor: Principal,
  raw: z.input<typeof createMonitorInputSchema>,
  /** What a source creating it knows: the Prometheus rule it imports, the receiver's key (unique: see `monitors.alertKey`). */
  origin: { imported?: MonitorDefinition['importedRule']; alertKey?: string } = {},
): Promise<MonitorRow> {
  const { imported, alertKey } = origin;
  requireWrite(actor, 'create monitors');
  const input = parseInput(imported ? importedMonitorInputSchema : createMonitorInputSchema, raw, 'input');
  assertTagsAllowed(actor, input.tags);
  assertApmEnvAllowed(actor, input.apm);
  if (input.type === 'prometheus') assertPromqlAllowed(actor, 'input.type');
  const now = deps.now();
  const row = await transaction(deps.db, async (tx) => {
    const m = await insertMonitor(tx, {
      id: newId(),
      name: input.name,
      type: input.type,
      tags: input.tags,
      query: input.query,
      muted: input.muted,
      priority: input.priority ?? null,
      noDataTimeframe: input.noDataTimeframe ?? null,
      critical: input.critical ?? null,
      warning: input.warning ?? null,
      definition: { comparator: input.comparator, ...(input.apm && { apm: input.apm }), ...(imported && { importedRule: imported }) } satisfies MonitorDefinition,
      alertKey: alertKey ?? null,
      ...stamp(actor, now),
    });
    await insertAudit(tx, [audit(actor, now, 'monitor.created', { type: 'monitor', id: m.id }, null, m)]);
    return m;
  });
  deps.events.publish('monitor.changed', row);
  deps.log.info({ monitorId: row.id, name: row.name.slice(0, 200), type: row.type, ...actorFields(actor) }, 'monitor created');
  return row;
}

export async function updateMonitor(deps: Deps, actor: Principal, id: string, raw: z.input<typeof updateMonitorInputSchema>): Promise<MonitorRow> {
  requireWrite(actor, 'update monitors');
  const input = parseInput(updateMonitorInputSchema, raw, 'input');
  const now = deps.now();
  const row = await transaction(deps.db, async (tx) => {
    const before = await getMonitorRow(tx, assertUuid(id, 'id'));
    if (!before) throw notFound(`monitor ${id} does not exist`, 'id');
    assertMonitorChangeable(actor, before, id, 'id');
    if (input.tags !== undefined) assertTagsAllowed(actor, input.tags);
    if (input.query !== undefined && before.type === 'prometheus') assertPromqlAllowed(actor, 'input.query');
    const m = await updateMonitorRow(tx, before.id, {
      ...(input.name !== undefined && { name: input.name }),
      ...(input.tags !== undefined && { tags: input.tags }),
      ...(input.query !== undefined && { query: input.query }),
      ...(input.muted !== undefined && { muted: input.muted }),
      ...(input.priority !== undefined && { priority: input.priority }),
      updatedAt: now,
      updatedById: actor.id,
      updatedByName: actor.name,
    });
    await insertAudit(tx, [audit(actor, now, 'monitor.updated', { type: 'monitor', id: m.id }, before, m)]);
    return m;
  });
  deps.events.publish('monitor.changed', row);
  return row;
}

export async function deleteMonitor(deps: Deps, actor: Principal, id: string): Promise<string> {
  requireWrite(actor, 'delete monitors');
  const now = deps.now();
  const row = await transaction(deps.db, async (tx) => {
    const m = await getMonitorRow(tx, assertUuid(id, 'id'));
    if (!m) throw notFound(`monitor ${id} does not exist`, 'id');
    assertMonitorChangeable(actor, m, id, 'id');
    await deleteMonitorRow(tx, m.id);
    await insertAudit(tx, [audit(actor, now, 'monitor.deleted', { type: 'monitor', id: m.id }, m, null)]);
    return m;
  });
  deps.events.publish('monitor.changed', row);
  deps.log.info({ monitorId: row.id, name: row.name.slice(0, 200), type: row.type, ...actorFields(actor) }, 'monitor deleted');
  return row.id;
}

/**
 * Records a group's state. A change of state is a transition, kept forever (until retention)
 * so windows can be judged after the fact; the same state again only refreshes the report time.
 */
export async function reportMonitorState(deps: Deps, actor: Principal, input: ReportMonitorStateInput): Promise<MonitorRow> {
  requireWrite(actor, 'report monitor states');
  const m = await getMonitorRow(deps.db, input.monitorId);
  if (!m) throw notFound(`monitor ${input.monitorId} does not exist`, 'input.monitorId');
  assertMonitorChangeable(actor, m, input.monitorId, 'input.monitorId');
  return recordState(deps, m.id, normalizeGroup(input.group), input.state, input.message ?? null);
}

/** The same, for Tollgate's own sources (evaluated monitors, the Alertmanager receiver). */
export async function recordState(deps: Deps, monitorId: string, group: string, state: MonitorStateValue, rawMessage: string | null): Promise<MonitorRow> {
  // Sources build groups from labels they do not control: the same bound as reported ones.
  if (group.length > MAX_GROUP_LENGTH) throw badInput('group', `group is at most ${MAX_GROUP_LENGTH} characters`);
  const at = deps.now();
  const recorded = await transaction(deps.db, async (tx) => recordStateIn(tx, monitorId, group, state, rawMessage, at));
  if (!recorded) throw notFound(`monitor ${monitorId} does not exist`, 'input.monitorId');
  if (recorded.change) deps.events.publish('monitor.transition', recorded.change);
  return recorded.monitor;
}

/** Records a group's state inside `tx`; the caller publishes the change once it has committed. Null for a missing monitor. */
async function recordStateIn(
  tx: Tx,
  monitorId: string,
  group: string,
  state: MonitorStateValue,
  rawMessage: string | null,
  at: Date,
): Promise<{ monitor: MonitorRow; change: MonitorStateChange | null } | null> {
  const message = rawMessage?.slice(0, MAX_STATE_MESSAGE_LENGTH) ?? null;
  const m = await getMonitorRow(tx, monitorId);
  if (!m) return null;
  const current = await getGroup(tx, m.id, group);
  if (current && current.state === state) {
    await touchGroup(tx, m.id, group, at, message);
    return { monitor: m, change: null };
  }
  await insertTransition(tx, { id: newId(), monitorId: m.id, group, from: current?.state ?? null, to: state, at, message });
  await upsertGroup(tx, { monitorId: m.id, group, state, since: at, message, lastReportedAt: at });
  return { monitor: m, change: { monitor: m, group, from: current?.state ?? null, to: state, at, message } };
}

/** Silent groups recorded per batch of a NO_DATA sweep: one transaction, a few ms. */
const SWEEP_BATCH = 500;

/**
 * A group of a monitor with a no-data timeframe that has not reported within it goes NO_DATA,
 * recorded as a transition like any other, so rules watching it react at once. Recorded in
 * batches, each one transaction whose transitions are published after its commit, with a turn
 * of the event loop between them: 40,000 monitors falling silent at once were one long block.
 * Resolves with the number of groups recorded; `stopped` ends it between batches.
 */
export async function sweepNoData(deps: Deps, stopped: () => boolean = () => false): Promise<number> {
  const now = deps.now();
  let recorded = 0;
  let after: { monitorId: string; group: string } | undefined;
  while (!stopped()) {
    const from = after;
    // The cursor moves after the commit: a transaction run again (PostgreSQL, another instance sweeping) starts where this one did.
    const swept = await transaction(deps.db, async (tx) => {
      const silent = await silentGroups(tx, now, { after: from, limit: SWEEP_BATCH });
      if (silent.length === 0) return null;
      const last = silent.at(-1);
      const byId = new Map((await getMonitors(tx, [...new Set(silent.map((g) => g.monitorId))])).map((m) => [m.id, m]));
      const rows = silent.map((g) => ({ id: newId(), monitorId: g.monitorId, group: g.group, from: g.state, message: `no report for more than ${g.timeframe} s` }));
      const changes = (await markNoData(tx, rows, now)).map(
        (t): MonitorStateChange => ({ monitor: byId.get(t.monitorId)!, group: t.group, from: t.from, to: t.to, at: t.at, message: t.message }),
      );
      return { changes, last };
    });
    if (swept === null) break;
    after = swept.last;
    const { changes } = swept;
    recorded += changes.length;
    for (const change of changes) deps.events.publish('monitor.transition', change);
    if (changes.length < SWEEP_BATCH) break;
    await nextTurn();
  }
  return recorded;
}

/**
 * The state a value puts a threshold monitor in. NaN (a PromQL 0/0: an error ratio with no
 * traffic) is no data, not OK: every comparison with it is false, so it would pass any threshold.
 */
export function stateForValue(m: Pick<MonitorRow, 'critical' | 'warning' | 'definition'>, value: number): MonitorStateValue {
  if (Number.isNaN(value)) return 'no_data';
  const above = ((m.definition ?? {}) as MonitorDefinition).comparator !== 'below';
  const beyond = (threshold: number | null) => threshold !== null && (above ? value >= threshold : value <= threshold);
  if (beyond(m.critical)) return 'alert';
  if (beyond(m.warning)) return 'warn';
  return 'ok';
}

/** A source answered (0) or failed (its message): rules read this as the monitor's health. */
export async function recordSourceHealth(deps: Deps, monitorId: string, error: string | null): Promise<void> {
  await transaction(deps.db, async (tx) => setSourceHealth(tx, monitorId, error));
}
