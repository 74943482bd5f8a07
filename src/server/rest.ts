// The Datadog-compatible REST API (JSON:API-style bodies in snake_case), on the same domain
// functions as GraphQL: trigger and result of evaluations, gate and rule CRUD.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Deps } from '../domain/deps.ts';
import { DomainError, parseInput } from '../domain/errors.ts';
import { boundedFilterList, evaluateGate, evaluateGateInputSchema, evaluationUrl, getEvaluation, listEvaluations, reported, rulesOfEvaluations } from '../domain/evaluations.ts';
import type { EvaluationFilter, EvaluationRow } from '../db/evaluations.ts';
import {
  createGate,
  createGateInputSchema,
  createRule,
  deleteGate,
  deleteRule,
  getGate,
  getRule,
  listGates,
  ruleInputSchema,
  rulesOf,
  updateGate,
  updateGateInputSchema,
  updateRule,
  updateRuleInputSchema,
} from '../domain/gates.ts';
import type { GateRow, RuleRow } from '../db/gates.ts';
import { validate as isUuid } from 'uuid';
import type { Principal } from '../domain/principal.ts';
import { ruleEvaluationFor } from '../domain/ruleEvidence.ts';
import { decidedWithoutData, passedWithoutEvidence } from '../domain/fdd.ts';
import { secretFromAuthorization } from '../domain/apiKeys.ts';
import { failureOf, sendFailure } from './failures.ts';
import { type Authenticate, decodePathSegment, HttpError, readBody, sendJson } from './http.ts';

// ---- option names: snake_case on the wire, camelCase inside ----

const MONITOR_KEYS: Record<string, string> = { query: 'query', duration: 'duration', warmup: 'warmup', fail_on_no_data: 'failOnNoData', fail_on_no_groups_found: 'failOnNoGroupsFound', monitor_ids: 'monitorIds' };
const FDD_KEYS: Record<string, string> = {
  duration: 'duration',
  excluded_resources: 'excludedResources',
  allowed_resources: 'allowedResources',
  included_resources: 'allowedResources', // the name the Datadog docs use
  alpha: 'alpha',
  min_relative_increase: 'minRelativeIncrease',
  new_error_types: 'newErrorTypes',
  on_insufficient_data: 'onInsufficientData',
};

/** The wire's snake_case name of each camelCase name the domain's messages use. */
const WIRE_NAMES = new Map<string, string>(
  [...Object.entries(MONITOR_KEYS), ...Object.entries(FDD_KEYS).filter(([wire]) => wire !== 'included_resources'), ['dry_run', 'dryRun'], ['on_source_error', 'onSourceError'], ['primary_tag', 'primaryTag'], ['idempotency_key', 'idempotencyKey']].map(
    ([wire, name]) => [name!, wire!] as const,
  ),
);

/**
 * A domain error in the REST API's words: paths into the request body (not GraphQL's `input`,
 * no `options.monitor` level) and snake_case names, leaving quoted user text alone.
 */
function restDetail(err: DomainError): string {
  const wire = (text: string) =>
    text
      .split(/("[^"]*")/)
      .map((part, i) => (i % 2 === 1 ? part : part.replace(/\b[a-z]+(?:[A-Z][a-z]*)+\b/g, (w) => WIRE_NAMES.get(w) ?? w)))
      .join('');
  const field = err.field;
  if (!field || !err.message.startsWith(`${field}: `)) return wire(err.message);
  const path = field.replace(/^input(\.|$)/, '').replace(/(^|\.)options\.(?:monitor|faultyDeploymentDetection)(?=\.|\[|$)/, '$1options');
  const message = wire(err.message.slice(field.length + 2));
  return path ? `${wire(path)}: ${message}` : message;
}

function rename(obj: unknown, keys: Record<string, string>, where: string): Record<string, unknown> {
  if (obj === undefined || obj === null) return {};
  if (typeof obj !== 'object' || Array.isArray(obj)) throw new DomainError('BAD_USER_INPUT', `${where}: must be an object`, where);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const name = keys[k];
    if (!name) throw new DomainError('BAD_USER_INPUT', `${where}: unknown option "${k}"`, `${where}.${k}`);
    out[name] = v;
  }
  return out;
}

/** `where` is the rule's path in the body; a just-in-time rule's type error keeps Datadog's wording. */
function ruleFromWire(rule: unknown, where: string, jitIndex?: number): Record<string, unknown> {
  const r = (rule ?? {}) as Record<string, unknown>;
  if (r.type !== 'monitor' && r.type !== 'faulty_deployment_detection') {
    const prefix = jitIndex === undefined ? `${where}.type` : `invalid configuration: invalid rule at index ${jitIndex}`;
    throw new DomainError('BAD_USER_INPUT', `${prefix}: invalid rule type: ${String(r.type)} (must be monitor or faulty_deployment_detection)`, `${where}.type`);
  }
  const options = r.type === 'monitor' ? { monitor: rename(r.options, MONITOR_KEYS, `${where}.options`) } : { faultyDeploymentDetection: rename(r.options, FDD_KEYS, `${where}.options`) };
  return { name: r.name, dryRun: r.dry_run, options };
}

function optionsToWire(rule: Pick<RuleRow, 'type' | 'options'>): Record<string, unknown> {
  const keys = rule.type === 'monitor' ? MONITOR_KEYS : FDD_KEYS;
  const back = Object.fromEntries(Object.entries(keys).filter(([k]) => k !== 'included_resources').map(([wire, name]) => [name, wire]));
  return Object.fromEntries(Object.entries(rule.options).filter(([, v]) => v !== undefined).map(([k, v]) => [back[k] ?? k, v]));
}

const user = (id: string, name: string) => ({ id, name, handle: name });

function gateToWire(g: GateRow) {
  return {
    id: g.id,
    type: 'deployment_gate',
    attributes: {
      service: g.service,
      env: g.env,
      identifier: g.identifier,
      dry_run: g.dryRun,
      created_at: g.createdAt.toISOString(),
      created_by: user(g.createdById, g.createdByName),
      updated_at: g.updatedAt.toISOString(),
      updated_by: user(g.updatedById, g.updatedByName),
    },
  };
}

function ruleAttributes(r: RuleRow) {
  return {
    gate_id: r.gateId,
    name: r.name,
    type: r.type,
    dry_run: r.dryRun,
    options: optionsToWire(r),
    created_at: r.createdAt.toISOString(),
    created_by: user(r.createdById, r.createdByName),
    updated_at: r.updatedAt.toISOString(),
    updated_by: user(r.updatedById, r.updatedByName),
  };
}

const ruleToWire = (r: RuleRow) => ({ id: r.id, type: 'deployment_rule', attributes: ruleAttributes(r) });

function attributesOf(body: unknown): Record<string, unknown> {
  const data = (body as { data?: { attributes?: unknown } } | null)?.data;
  if (!data || typeof data !== 'object') throw new DomainError('BAD_USER_INPUT', 'data: is required (a JSON:API body: {"data": {"type": …, "attributes": {…}}})', 'data');
  const attributes = data.attributes;
  if (!attributes || typeof attributes !== 'object' || Array.isArray(attributes)) throw new DomainError('BAD_USER_INPUT', 'data.attributes: is required', 'data.attributes');
  return attributes as Record<string, unknown>;
}

function uuidParam(value: string, what = 'id'): string {
  if (!isUuid(value)) throw new HttpError(400, `attribute "${what}" Invalid id`);
  return value.toLowerCase();
}

// ---- evaluation history ----

const MAX_HISTORY_MS = 30 * 86_400_000;

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

/** The history endpoints' filters: the last 24 h by default, at most 30 days, newest first. */
function historyQuery(url: URL) {
  const to = time(url, 'filter[to]', Date.now() + 1);
  const from = time(url, 'filter[from]', to - 86_400_000);
  if (from >= to) throw new HttpError(400, 'filter[to] must be after filter[from]');
  if (to - from > MAX_HISTORY_MS) throw new HttpError(400, 'the time range is at most 30 days');
  const size = Number(url.searchParams.get('page[size]') ?? 20);
  if (!Number.isInteger(size) || size < 1 || size > 100) throw new HttpError(400, 'page[size] must be between 1 and 100');
  const cursor = url.searchParams.get('page[cursor]') ?? undefined;
  if (cursor !== undefined && !isUuid(cursor)) throw new HttpError(400, 'page[cursor] is invalid');
  const dryRun = url.searchParams.get('filter[dry_run]');
  const evaluationId = url.searchParams.get('filter[evaluation_id]');
  const gateId = url.searchParams.get('filter[gate_id]');
  const filter: EvaluationFilter & { evaluationIds?: string[] } = {
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
  return { filter, page: { after: cursor, limit: size + 1, inverted: false } };
}

function nextCursor(rows: readonly { id: string }[], size: number) {
  return rows.length > size ? { next_cursor: rows[size - 1]!.id } : {};
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

// ---- routes ----

type Handler = (ctx: { deps: Deps; principal: Principal; params: string[]; body: unknown; url: URL }) => { status: number; body?: unknown };

const routes: Array<{ method: string; pattern: RegExp; handle: Handler }> = [];
const route = (method: string, pattern: RegExp, handle: Handler) => routes.push({ method, pattern, handle });
const PREFIXES = ['/api/v2', '/api/unstable'];

for (const prefix of PREFIXES) {
  const p = prefix.replace('/', '\\/');
  // Registered before /deployment_gates/{id}, which would otherwise read "evaluations" as an id.
  route('GET', new RegExp(`^${p}\\/deployment_gates\\/evaluations$`), ({ deps, principal, url }) => {
    const { filter, page } = historyQuery(url);
    const rows = listEvaluations(deps, principal, filter, page);
    const items = rows.slice(0, page.limit - 1);
    return {
      status: 200,
      body: { data: items.map((e) => ({ id: e.id, type: 'deployment_gate_evaluation', attributes: evaluationAttributes(e) })), meta: { page: nextCursor(rows, page.limit - 1) } },
    };
  });

  route('GET', new RegExp(`^${p}\\/deployment_gates\\/evaluations\\/rules$`), ({ deps, principal, url }) => {
    const { filter, page } = historyQuery(url);
    const gateEvaluation = url.searchParams.get('filter[gate_evaluation_id]');
    if (gateEvaluation !== null) filter.evaluationIds = [uuidParam(gateEvaluation, 'filter[gate_evaluation_id]')];
    const rows = listEvaluations(deps, principal, filter, page);
    const items = rows.slice(0, page.limit - 1);
    const byId = new Map(items.map((e) => [e.id, e]));
    const type = url.searchParams.get('filter[type]');
    const name = url.searchParams.get('filter[name]');
    // Each rule as the caller may see it: evidence about monitors outside its environments is left out.
    const rules = rulesOfEvaluations(deps, items.map((e) => e.id))
      .filter((r) => (!type || r.type === type) && (!name || r.name === name))
      .map((r) => ruleEvaluationFor(principal, byId.get(r.evaluationId)!, r));
    return {
      status: 200,
      body: {
        data: rules.map((r) => {
          const e = byId.get(r.evaluationId)!;
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
        meta: { page: nextCursor(rows, page.limit - 1) },
      },
    };
  });

  route('POST', new RegExp(`^${p}\\/deployments\\/gates\\/evaluation$`), ({ deps, principal, body }) => {
    const a = attributesOf(body);
    if (a.env === '' || a.env === undefined) throw new DomainError('BAD_USER_INPUT', 'required env field is missing', 'env');
    const configuration = a.configuration as { dry_run?: unknown; on_source_error?: unknown; rules?: unknown } | undefined;
    const rules = configuration?.rules;
    if (configuration !== undefined && (!Array.isArray(rules) || rules.length === 0)) {
      throw new DomainError('BAD_USER_INPUT', 'invalid configuration: rules must be a non-empty array', 'configuration.rules');
    }
    const input = parseInput(evaluateGateInputSchema, {
      service: a.service,
      env: a.env,
      identifier: a.identifier ?? undefined,
      version: a.version ?? undefined,
      primaryTag: a.primary_tag ?? a.apm_primary_tag ?? undefined,
      idempotencyKey: a.idempotency_key ?? undefined,
      configuration: configuration && {
        dryRun: configuration.dry_run,
        onSourceError: configuration.on_source_error,
        rules: (rules as unknown[]).map((r, i) => ruleFromWire(r, `configuration.rules[${i}]`, i)),
      },
    });
    const snap = evaluateGate(deps, principal, input);
    const id = snap.evaluation.id;
    return { status: 202, body: { data: { id, type: 'deployment_gates_evaluation_response', attributes: { evaluation_id: id } } } };
  });

  route('GET', new RegExp(`^${p}\\/deployments\\/gates\\/evaluation\\/([^/]+)$`), ({ deps, principal, params }) => {
    const id = uuidParam(params[0]!);
    // Null for another env's evaluation as for none; the rules as the caller may see them.
    const snap = getEvaluation(deps, principal, id);
    if (!snap) throw new HttpError(404, `gate evaluation with id ${id} not found`);
    const e = snap.evaluation;
    return {
      status: 200,
      body: {
        data: {
          id,
          type: 'deployment_gates_evaluation_result_response',
          attributes: {
            dry_run: e.dryRun,
            evaluation_id: id,
            evaluation_url: evaluationUrl(deps, id),
            gate_id: e.gateId,
            gate_status: reported(e),
            passed_without_evidence: passedWithoutEvidence(e, snap.rules),
            rules: snap.rules.map((r) => ({ name: r.name, status: r.status, reason: r.reason ?? undefined, dry_run: r.dryRun, insufficient_data: decidedWithoutData(r) })),
          },
        },
      },
    };
  });

  route('POST', new RegExp(`^${p}\\/deployment_gates$`), ({ deps, principal, body }) => {
    const a = attributesOf(body);
    if (a.env === '') throw new DomainError('BAD_USER_INPUT', 'attribute "env" is required', 'env');
    const input = parseInput(createGateInputSchema, { service: a.service, env: a.env, identifier: a.identifier ?? undefined, dryRun: a.dry_run ?? undefined });
    try {
      return { status: 200, body: { data: gateToWire(createGate(deps, principal, input).gate) } };
    } catch (err) {
      if (err instanceof DomainError && err.code === 'CONFLICT') throw new HttpError(400, 'Gate already exists with the given env, service and identifier');
      throw err;
    }
  });

  route('GET', new RegExp(`^${p}\\/deployment_gates$`), ({ deps, principal, url }) => {
    const size = Number(url.searchParams.get('page[size]') ?? 50);
    if (!Number.isInteger(size) || size < 1 || size > 1000) throw new HttpError(400, 'page[size] must be between 1 and 1000');
    const cursor = url.searchParams.get('page[cursor]') ?? undefined;
    if (cursor !== undefined && !isUuid(cursor)) throw new HttpError(400, 'page[cursor] is invalid');
    const dryRun = url.searchParams.get('filter[dry_run]');
    const rows = listGates(
      deps,
      principal,
      {
        service: url.searchParams.get('filter[service]') ?? undefined,
        env: url.searchParams.get('filter[env]') ?? undefined,
        identifier: url.searchParams.get('filter[identifier]') ?? undefined,
        dryRun: dryRun === null ? undefined : dryRun === 'true',
      },
      { after: cursor, limit: size + 1, inverted: false },
    );
    const page = rows.slice(0, size);
    const next = rows.length > size ? page.at(-1)!.id : undefined;
    return { status: 200, body: { data: page.map(gateToWire), meta: { page: { cursor: cursor ?? null, size, ...(next && { next_cursor: next }) } } } };
  });

  route('GET', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)$`), ({ deps, principal, params }) => {
    const gate = getGate(deps, principal, uuidParam(params[0]!));
    if (!gate) throw new HttpError(404, 'Gate does not exist');
    return { status: 200, body: { data: gateToWire(gate) } };
  });

  route('PUT', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)$`), ({ deps, principal, params, body }) => {
    const a = attributesOf(body);
    const input = parseInput(updateGateInputSchema, { dryRun: a.dry_run, service: a.service, env: a.env, identifier: a.identifier });
    return { status: 200, body: { data: gateToWire(updateGate(deps, principal, uuidParam(params[0]!), input)) } };
  });

  route('DELETE', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)$`), ({ deps, principal, params }) => {
    deleteGate(deps, principal, uuidParam(params[0]!));
    return { status: 204 };
  });

  route('POST', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)\\/rules$`), ({ deps, principal, params, body }) => {
    const input = parseInput(ruleInputSchema, ruleFromWire(attributesOf(body), 'data.attributes'));
    return { status: 200, body: { data: ruleToWire(createRule(deps, principal, uuidParam(params[0]!, 'gate_id'), input)) } };
  });

  route('GET', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)\\/rules$`), ({ deps, principal, params }) => {
    const gateId = uuidParam(params[0]!, 'gate_id');
    if (!getGate(deps, principal, gateId)) throw new HttpError(404, 'Gate does not exist');
    return { status: 200, body: { data: { id: gateId, type: 'list_deployment_rules', attributes: { rules: rulesOf(deps, [gateId]).map((r) => ({ id: r.id, ...ruleAttributes(r) })) } } } };
  });

  const ruleOfGate = (deps: Deps, principal: Principal, params: string[]) => {
    const gateId = uuidParam(params[0]!, 'gate_id');
    const rule = getRule(deps, principal, uuidParam(params[1]!));
    if (!rule || rule.gateId !== gateId) throw new HttpError(404, 'Rule does not exist');
    return rule;
  };

  route('GET', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)\\/rules\\/([^/]+)$`), ({ deps, principal, params }) => ({
    status: 200,
    body: { data: ruleToWire(ruleOfGate(deps, principal, params)) },
  }));

  route('PUT', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)\\/rules\\/([^/]+)$`), ({ deps, principal, params, body }) => {
    const rule = ruleOfGate(deps, principal, params);
    const a = attributesOf(body);
    const wire = a.options === undefined ? {} : ruleFromWire({ type: a.type ?? rule.type, name: a.name, options: a.options }, 'data.attributes');
    const input = parseInput(updateRuleInputSchema, { name: a.name, dryRun: a.dry_run, options: (wire as { options?: unknown }).options });
    return { status: 200, body: { data: ruleToWire(updateRule(deps, principal, rule.id, input)) } };
  });

  route('DELETE', new RegExp(`^${p}\\/deployment_gates\\/([^/]+)\\/rules\\/([^/]+)$`), ({ deps, principal, params }) => {
    deleteRule(deps, principal, ruleOfGate(deps, principal, params).id);
    return { status: 204 };
  });
}

/** Handles /api/… requests; unknown paths under /api are a JSON 404. */
export function restHandler(deps: Deps, authenticate: Authenticate) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      const matching = routes.filter((r) => r.pattern.test(url.pathname));
      if (matching.length === 0) throw new HttpError(404, `no endpoint ${url.pathname}`);
      const match = matching.find((r) => r.method === req.method);
      if (!match) throw new HttpError(405, `use ${matching.map((r) => r.method).join(' or ')}`);
      const header = (req.headers['dd-api-key'] as string | undefined) ?? req.headers.authorization;
      let auth = authenticate(secretFromAuthorization(header), req.socket.remoteAddress);
      if (!auth.ok) throw new HttpError(401, auth.reason);
      let body: unknown;
      if (req.method === 'POST' || req.method === 'PUT') {
        const raw = await readBody(req, 1024 * 1024);
        // Again once the body is in: a key revoked or expired while it was arriving acts no more.
        auth = authenticate(secretFromAuthorization(header), req.socket.remoteAddress);
        if (!auth.ok) throw new HttpError(401, auth.reason);
        try {
          body = JSON.parse(raw.toString('utf8') || 'null');
        } catch (err) {
          throw new HttpError(400, `body is not valid JSON: ${(err as Error).message}`);
        }
      }
      const params = match.pattern.exec(url.pathname)!.slice(1).map(decodePathSegment);
      const out = match.handle({ deps, principal: auth.principal, params, body, url });
      if (out.status === 204) {
        res.writeHead(204);
        res.end();
      } else sendJson(res, out.status, out.body);
    } catch (err) {
      sendFailure(res, failureOf(err, deps.log, 'REST', restDetail));
    }
  };
}
