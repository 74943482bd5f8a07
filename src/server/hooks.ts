// POST /hooks/alertmanager: Alertmanager's webhook receiver.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthResult } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { parseInput } from '../domain/errors.ts';
import { type EvaluationSnapshot, evaluateGate, evaluateGateInputSchema, evaluationUrl, overrideOfEvaluation, reported } from '../domain/evaluations.ts';
import type { Principal } from '../domain/principal.ts';
import { receiveAlertmanager } from '../sources/alertmanager.ts';
import { failureOf, sendFailure } from './failures.ts';
import { HttpError, isJsonObject, jsonKind, parseJsonObject, readBody, requireCaller, sendJson } from './http.ts';

export function alertmanagerHandler(deps: Deps, authenticate: (secret: string | null) => Promise<AuthResult>) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      if (req.method !== 'POST') throw new HttpError(405, 'use POST');
      await requireCaller(req, url, authenticate, 'ingest');
      const json = parseJsonObject(await readBody(req, 4 * 1024 * 1024));
      // Again once the body is in: a key revoked or expired while it was arriving acts no more.
      const principal = await requireCaller(req, url, authenticate, 'ingest');
      sendJson(res, 200, await receiveAlertmanager(deps, principal, json));
    } catch (err) {
      sendFailure(res, failureOf(err, deps.log, 'Alertmanager hook'));
    }
  };
}

/**
 * The gate as a single idempotent call, for orchestrators that can only make one kind of
 * request: the first call for a service/env/identifier/version (and optional run id) starts
 * the evaluation, later calls read it. Parameters come from the query string or a JSON body
 * (Flagger puts them under `metadata`).
 */
async function gateCall(deps: Deps, principal: Principal, params: Record<string, unknown>): Promise<EvaluationSnapshot> {
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const service = str(params.service);
  const env = str(params.env);
  const identifier = str(params.identifier) ?? 'default';
  const version = str(params.version);
  const run = str(params.run) ?? '';
  const key = `hook:${service}:${env}:${identifier}:${version ?? ''}:${run}`.slice(0, 200);
  return evaluateGate(deps, principal, parseInput(evaluateGateInputSchema, { service, env, identifier, version, primaryTag: str(params.primary_tag), idempotencyKey: key }));
}

function verdictBody(deps: Deps, snap: EvaluationSnapshot) {
  return {
    status: reported(snap.evaluation),
    /** Who overrode the verdict, when, why and what it replaced; null when nobody did. */
    override: overrideOfEvaluation(snap.evaluation),
    evaluation_id: snap.evaluation.id,
    evaluation_url: evaluationUrl(deps, snap.evaluation.id),
    rules: snap.rules.map((r) => ({ name: r.name, status: r.status, reason: r.reason, dry_run: r.dryRun })),
  };
}

async function hookParams(req: IncomingMessage, url: URL): Promise<Record<string, unknown>> {
  // No prototype: a body's "__proto__" key must stay a key, not become the parameters' prototype.
  const params: Record<string, unknown> = Object.assign(Object.create(null), Object.fromEntries(url.searchParams));
  if (req.method === 'POST') {
    const raw = await readBody(req, 256 * 1024);
    if (raw.length > 0) {
      const json = parseJsonObject(raw);
      if (json.metadata != null && !isJsonObject(json.metadata)) throw new HttpError(400, `metadata: must be a JSON object, not ${jsonKind(json.metadata)}`);
      // Flagger: {name, namespace, phase, checksum, metadata: {…}}; one canary revision, one run.
      Object.assign(params, json, json.metadata ?? {});
      if (json.checksum && !params.run) params.run = `${json.namespace}/${json.name}/${json.checksum}`;
    }
  }
  return params;
}

/**
 * Flagger webhooks (pre-rollout, rollout, confirm-promotion): 200 once the gate has passed,
 * 409 while it is evaluating, 412 when it failed, so Flagger holds or rolls back.
 */
export function flaggerHandler(deps: Deps, authenticate: (secret: string | null) => Promise<AuthResult>) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      if (req.method !== 'POST' && req.method !== 'GET') throw new HttpError(405, 'use POST or GET');
      await requireCaller(req, url, authenticate, 'evaluations:write');
      const params = await hookParams(req, url);
      // Again once the body is in: a key revoked or expired while it was arriving acts no more.
      const snap = await gateCall(deps, await requireCaller(req, url, authenticate, 'evaluations:write'), params);
      const body = verdictBody(deps, snap);
      sendJson(res, body.status === 'pass' ? 200 : body.status === 'in_progress' ? 409 : 412, body);
    } catch (err) {
      sendFailure(res, failureOf(err, deps.log, 'gate hook'));
    }
  };
}

/** The same call answering 200 with the status in the body, for Argo Rollouts' web metrics. */
export function gateHookHandler(deps: Deps, authenticate: (secret: string | null) => Promise<AuthResult>) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      if (req.method !== 'POST' && req.method !== 'GET') throw new HttpError(405, 'use POST or GET');
      await requireCaller(req, url, authenticate, 'evaluations:write');
      const params = await hookParams(req, url);
      // Again once the body is in: a key revoked or expired while it was arriving acts no more.
      sendJson(res, 200, verdictBody(deps, await gateCall(deps, await requireCaller(req, url, authenticate, 'evaluations:write'), params)));
    } catch (err) {
      sendFailure(res, failureOf(err, deps.log, 'gate hook'));
    }
  };
}
