// Evaluation history: /deployment_gates/evaluations and /deployment_gates/evaluations/rules.
import type { EvaluationFilter, EvaluationRow, RuleEvaluationFilter, Status } from '../../db/evaluations.ts';
import { RULE_TYPES } from '../../db/schema.ts';
import type { Deps } from '../../domain/deps.ts';
import { DomainError } from '../../domain/errors.ts';
import { boundedFilterList, getEvaluation, listEvaluations, listRuleEvaluations } from '../../domain/evaluations.ts';
import { decidedWithoutData } from '../../domain/fdd.ts';
import { HttpError } from '../http.ts';
import { overrideAttribute } from './evaluations.ts';
import { pageOf, readPage } from './page.ts';
import { type Route, route, uuidParam } from './request.ts';
import { optionsToWire } from './rules.ts';

const DAY_MS = 86_400_000;
const MAX_HISTORY_MS = 30 * DAY_MS;

/** Statuses a filter may name (a record, so a new status cannot be forgotten here). */
const STATUSES = Object.keys({ in_progress: true, pass: true, fail: true, canceled: true } satisfies Record<Status, true>) as Status[];

/** Datadog's filters of each endpoint (reference §4.7); any other `filter[…]` is refused, not ignored. */
const GATE_FILTERS = ['from', 'to', 'service', 'env', 'identifier', 'version', 'status', 'dry_run', 'evaluation_id', 'gate_id'];
const RULE_FILTERS = [...GATE_FILTERS, 'gate_evaluation_id', 'rule_id', 'type', 'name', 'gate_dry_run'];

/** Reads a request's `filter[…]` parameters; every refusal names the parameter. */
function filters(url: URL, known: readonly string[]) {
  for (const key of new Set(url.searchParams.keys())) {
    const name = /^filter\[(.*)\]$/.exec(key)?.[1];
    if ((name !== undefined && !known.includes(name)) || (key.startsWith('page[') && key !== 'page[size]' && key !== 'page[cursor]')) {
      throw new HttpError(400, `${key} is not a parameter of this endpoint`);
    }
  }
  /** A single-valued filter: given at most once. */
  const one = (name: string): string | undefined => {
    const values = url.searchParams.getAll(`filter[${name}]`);
    if (values.length > 1) throw new HttpError(400, `filter[${name}] takes one value, got ${values.length}`);
    return values[0];
  };
  /** A multi-valued filter: repeated, comma-separated or both, the values ORed. */
  const many = (name: string): string[] | undefined => {
    const values = url.searchParams
      .getAll(`filter[${name}]`)
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter(Boolean);
    return boundedFilterList(values.length > 0 ? values : undefined, `filter[${name}]`);
  };
  return {
    many,
    oneOf<T extends string>(name: string, allowed: readonly T[]): T[] | undefined {
      const values = many(name);
      const bad = values?.find((v) => !allowed.includes(v as T));
      if (bad !== undefined) throw new HttpError(400, `filter[${name}] must be one of ${allowed.join(', ')} (got "${bad}")`);
      return values as T[] | undefined;
    },
    bool(name: string): boolean | undefined {
      const value = one(name);
      if (value === undefined) return undefined;
      if (value !== 'true' && value !== 'false') throw new HttpError(400, `filter[${name}] must be true or false (got "${value}")`);
      return value === 'true';
    },
    uuid(name: string): string | undefined {
      const value = one(name);
      return value === undefined ? undefined : uuidParam(value, `filter[${name}]`);
    },
    time(name: string): number | undefined {
      const value = one(name);
      if (value === undefined) return undefined;
      const t = parseTime(value);
      if (t === undefined) throw new HttpError(400, `filter[${name}] must be an RFC 3339 date-time or epoch milliseconds (got "${value}")`);
      return t;
    },
  };
}

const RFC_3339 = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$/;

/** RFC 3339 (a time without offset is UTC) or epoch milliseconds; undefined when neither. */
function parseTime(value: string): number | undefined {
  if (/^\d+$/.test(value)) return Number(value);
  const m = RFC_3339.exec(value);
  if (!m) return undefined;
  const [, year, month, day, zone] = m;
  // Date.parse rolls 2026-02-30 over into March: a day the month lacks is refused instead.
  if (Number(month) < 1 || Number(month) > 12 || Number(day) < 1 || Number(day) > new Date(Date.UTC(Number(year), Number(month), 0)).getUTCDate()) return undefined;
  const t = Date.parse(value.length > 10 && !zone ? `${value}Z` : value);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * What both endpoints select of the gate evaluations: the window on their start (from
 * inclusive, to exclusive, the last 24 h by default, at most 30 days) and the gate's tags and
 * ids. Newest first.
 */
function gateFilter(deps: Deps, f: ReturnType<typeof filters>): EvaluationFilter {
  const to = f.time('to') ?? deps.now().getTime() + 1;
  const from = f.time('from') ?? to - DAY_MS;
  if (from >= to) throw new HttpError(400, 'filter[to] must be after filter[from]');
  if (to - from > MAX_HISTORY_MS) throw new HttpError(400, 'filter[from] and filter[to] may be at most 30 days apart');
  return {
    service: f.many('service'),
    env: f.many('env'),
    identifier: f.many('identifier'),
    version: f.many('version'),
    gateId: f.uuid('gate_id'),
    startedAfter: new Date(from),
    startedBefore: new Date(to),
  };
}

const ids = (id: string | undefined) => (id === undefined ? undefined : [id]);

function evaluationAttributes(e: EvaluationRow) {
  return {
    dry_run: e.dryRun,
    duration_seconds: e.finishedAt ? (e.finishedAt.getTime() - e.startedAt.getTime()) / 1000 : null,
    env: e.env,
    evaluation_id: e.id,
    finished_at: e.finishedAt?.toISOString() ?? null,
    gate_id: e.gateId,
    identifier: e.identifier,
    service: e.service,
    started_at: e.startedAt.toISOString(),
    status: e.status,
    version: e.version ?? '',
    ...overrideAttribute(e),
  };
}

export const historyRoutes: Route[] = [
  route('GET', '/deployment_gates/evaluations', async ({ deps, principal, url }) => {
    const f = filters(url, GATE_FILTERS);
    const filter: EvaluationFilter = {
      ...gateFilter(deps, f),
      status: f.oneOf('status', STATUSES),
      dryRun: f.bool('dry_run'),
      evaluationIds: ids(f.uuid('evaluation_id')),
    };
    const page = readPage(url, { default: 20, max: 100 });
    // A cursor is an evaluation the caller sees: another env's answers as one that never was.
    if (page.cursor && !(await getEvaluation(deps, principal, page.cursor))) throw new HttpError(400, 'page[cursor] is invalid');
    const { items, next } = pageOf(await listEvaluations(deps, principal, filter, { after: page.cursor, limit: page.size + 1, inverted: false }), page);
    return {
      status: 200,
      body: { data: items.map((e) => ({ id: e.id, type: 'deployment_gate_evaluation', attributes: evaluationAttributes(e) })), meta: { page: next ? { next_cursor: next } : {} } },
    };
  }),

  // Paged by rule evaluation (the cursor is the last one shown), so a page is full up to the last.
  route('GET', '/deployment_gates/evaluations/rules', async ({ deps, principal, url }) => {
    // Here status, dry_run and evaluation_id are the rule's; the gate's have their own names.
    const f = filters(url, RULE_FILTERS);
    const filter: EvaluationFilter = { ...gateFilter(deps, f), dryRun: f.bool('gate_dry_run'), evaluationIds: ids(f.uuid('gate_evaluation_id')) };
    const rules: RuleEvaluationFilter = {
      ids: ids(f.uuid('evaluation_id')),
      ruleIds: ids(f.uuid('rule_id')),
      type: f.oneOf('type', RULE_TYPES),
      name: f.many('name'),
      status: f.oneOf('status', STATUSES),
      dryRun: f.bool('dry_run'),
    };
    const page = readPage(url, { default: 20, max: 100 });
    let rows: Awaited<ReturnType<typeof listRuleEvaluations>>;
    try {
      rows = await listRuleEvaluations(deps, principal, filter, rules, { after: page.cursor, limit: page.size + 1 });
    } catch (err) {
      if (err instanceof DomainError && err.field === 'after') throw new HttpError(400, 'page[cursor] is invalid');
      throw err;
    }
    const { items, next } = pageOf(
      rows.map((row) => ({ id: row.rule.id, ...row })),
      page,
    );
    return {
      status: 200,
      body: {
        data: items.map(({ evaluation: e, rule: r }) => {
          const evidence = (r.evidence ?? {}) as { failingGroups?: Array<{ monitorId: string; state: string; url: string }>; faultyResources?: Array<{ name: string }> };
          return {
            id: r.id,
            type: 'deployment_gate_rule_evaluation',
            attributes: {
              ...evaluationAttributes(e),
              configuration: optionsToWire(r),
              dry_run: r.dryRun,
              gate_dry_run: e.dryRun,
              evaluation_id: r.id,
              gate_evaluation_id: e.id,
              rule_id: r.ruleId,
              name: r.name,
              type: r.type,
              status: r.status,
              reason: r.reason,
              insufficient_data: decidedWithoutData(r),
              started_at: r.startedAt.toISOString(),
              finished_at: r.finishedAt?.toISOString() ?? null,
              duration_seconds: r.finishedAt ? (r.finishedAt.getTime() - r.startedAt.getTime()) / 1000 : null,
              failures: {
                faulty_apm_resources: (evidence.faultyResources ?? []).map((f) => f.name),
                monitors: (evidence.failingGroups ?? []).map((g) => ({ id: g.monitorId, state: g.state.toUpperCase(), url: g.url })),
                narratives: [],
              },
            },
          };
        }),
        meta: { page: next ? { next_cursor: next } : {} },
      },
    };
  }),
];
