// Evaluations: trigger (/deployments/gates/evaluation) and result (…/evaluation/{id}).
import type { EvaluationRow } from '../../db/evaluations.ts';
import { DomainError, parseInput } from '../../domain/errors.ts';
import { evaluateGate, evaluateGateInputSchema, evaluationUrl, getEvaluation, overrideOfEvaluation, reported } from '../../domain/evaluations.ts';
import { decidedWithoutData, passedWithoutEvidence } from '../../domain/fdd.ts';
import { HttpError, isJsonObject } from '../http.ts';
import { decodeFields, fieldSchema } from './codec.ts';
import { attributesOf, type Route, route, uuidParam } from './request.ts';
import { ruleFromWire } from './rules.ts';

const configurationSchema = fieldSchema(evaluateGateInputSchema, 'configuration')!;

/**
 * `override` (verdict, reason, at, by { id, name }, replaced) when a person overrode the
 * verdict; absent otherwise, so an evaluation nobody overrode answers in Datadog's shape.
 */
export function overrideAttribute(e: EvaluationRow) {
  const o = overrideOfEvaluation(e);
  return o ? { override: { verdict: o.verdict, reason: o.reason, at: o.at.toISOString(), by: o.by, replaced: o.replaced } } : {};
}

export const evaluationRoutes: Route[] = [
  route('POST', '/deployments/gates/evaluation', async ({ deps, principal, body }) => {
    const a = attributesOf(body);
    if (a.env === '' || a.env === undefined) throw new DomainError('BAD_USER_INPUT', 'required env field is missing', 'env');
    const configuration = a.configuration;
    let rules: unknown;
    if (configuration !== undefined) {
      rules = isJsonObject(configuration) ? configuration.rules : undefined;
      if (!Array.isArray(rules) || rules.length === 0) throw new DomainError('BAD_USER_INPUT', 'invalid configuration: rules must be a non-empty array', 'configuration.rules');
    }
    const input = parseInput(evaluateGateInputSchema, {
      ...decodeFields(evaluateGateInputSchema, a, ['service', 'env', 'identifier', 'version', 'primaryTag', 'idempotencyKey'], 'data.attributes'),
      configuration: isJsonObject(configuration)
        ? {
            ...decodeFields(configurationSchema, configuration, ['dryRun', 'onSourceError'], 'configuration'),
            rules: (rules as unknown[]).map((r, i) => ruleFromWire(r, `configuration.rules[${i}]`, i)),
          }
        : undefined,
    });
    const id = (await evaluateGate(deps, principal, input)).evaluation.id;
    return { status: 202, body: { data: { id, type: 'deployment_gates_evaluation_response', attributes: { evaluation_id: id } } } };
  }),

  route('GET', '/deployments/gates/evaluation/{id}', async ({ deps, principal, params }) => {
    const id = uuidParam(params.id!);
    // Null for another env's evaluation as for none; the rules as the caller may see them.
    const snap = await getEvaluation(deps, principal, id);
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
            // Overridden: gate_status is the override's verdict, and `override` says who, when, why.
            gate_status: reported(e),
            ...overrideAttribute(e),
            passed_without_evidence: passedWithoutEvidence(e, snap.rules),
            rules: snap.rules.map((r) => ({ name: r.name, status: r.status, reason: r.reason ?? undefined, dry_run: r.dryRun, insufficient_data: decidedWithoutData(r) })),
          },
        },
      },
    };
  }),
];
