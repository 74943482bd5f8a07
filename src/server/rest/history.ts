// Evaluation history: /deployment_gates/evaluations and /deployment_gates/evaluations/rules.
import type { EvaluationFilter, EvaluationRow } from '../../db/evaluations.ts';
import type { Deps } from '../../domain/deps.ts';
import { DomainError } from '../../domain/errors.ts';
import { boundedFilterList, listEvaluations, listRuleEvaluations } from '../../domain/evaluations.ts';
import { decidedWithoutData } from '../../domain/fdd.ts';
import { HttpError } from '../http.ts';
import { type Page, pageOf, readPage } from './page.ts';
import { type Route, route, uuidParam } from './request.ts';
import { optionsToWire } from './rules.ts';

const DAY_MS = 86_400_000;
const MAX_HISTORY_MS = 30 * DAY_MS;

/** A multi-valued filter: repeated, comma-separated, or both. */
function multi(url: URL, name: string): string[] | undefined {
  const values = url.searchParams.getAll(name).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  return boundedFilterList(values.length > 0 ? values : undefined, name);
}

function time(url: URL, name: string, fallback: number): number {
  const raw = url.searchParams.get(name);
  if (raw === null) return fallback;
  const t = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (Number.isNaN(t)) throw new HttpError(400, `${name} must be a date (RFC 3339) or epoch milliseconds`);
  return t;
}

/** The filters both endpoints take: the last 24 h by default, at most 30 days, newest first. */
function historyQuery(deps: Deps, url: URL): { filter: EvaluationFilter; page: Page } {
  const to = time(url, 'filter[to]', deps.now().getTime() + 1);
  const from = time(url, 'filter[from]', to - DAY_MS);
  if (from >= to) throw new HttpError(400, 'filter[to] must be after filter[from]');
  if (to - from > MAX_HISTORY_MS) throw new HttpError(400, 'the time range is at most 30 days');
  const page = readPage(url, { default: 20, max: 100 });
  const dryRun = url.searchParams.get('filter[dry_run]');
  const evaluationId = url.searchParams.get('filter[evaluation_id]');
  const gateId = url.searchParams.get('filter[gate_id]');
  const filter: EvaluationFilter = {
    service: multi(url, 'filter[service]'),
    env: multi(url, 'filter[env]'),
    identifier: multi(url, 'filter[identifier]'),
    version: multi(url, 'filter[version]'),
    status: multi(url, 'filter[status]') as EvaluationFilter['status'],
    dryRun: dryRun === null ? undefined : dryRun === 'true',
    gateId: gateId === null ? undefined : uuidParam(gateId, 'filter[gate_id]'),
    startedAfter: new Date(from),
    startedBefore: new Date(to),
  };
  if (evaluationId !== null) filter.evaluationIds = [uuidParam(evaluationId, 'filter[evaluation_id]')];
  return { filter, page };
}

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
  };
}

export const historyRoutes: Route[] = [
  route('GET', '/deployment_gates/evaluations', ({ deps, principal, url }) => {
    const { filter, page } = historyQuery(deps, url);
    const { items, next } = pageOf(listEvaluations(deps, principal, filter, { after: page.cursor, limit: page.size + 1, inverted: false }), page);
    return {
      status: 200,
      body: { data: items.map((e) => ({ id: e.id, type: 'deployment_gate_evaluation', attributes: evaluationAttributes(e) })), meta: { page: next ? { next_cursor: next } : {} } },
    };
  }),

  // Paged by rule evaluation (the cursor is the last one shown), so a page is full up to the last.
  route('GET', '/deployment_gates/evaluations/rules', ({ deps, principal, url }) => {
    const { filter, page } = historyQuery(deps, url);
    const gateEvaluation = url.searchParams.get('filter[gate_evaluation_id]');
    if (gateEvaluation !== null) filter.evaluationIds = [uuidParam(gateEvaluation, 'filter[gate_evaluation_id]')];
    const type = url.searchParams.get('filter[type]');
    const name = url.searchParams.get('filter[name]');
    let rows: ReturnType<typeof listRuleEvaluations>;
    try {
      rows = listRuleEvaluations(deps, principal, filter, { type: type ? [type] : undefined, name: name ? [name] : undefined }, { after: page.cursor, limit: page.size + 1 });
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
