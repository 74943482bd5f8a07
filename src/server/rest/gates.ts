// Gates: /deployment_gates[/{id}].
import type { GateRow } from '../../db/gates.ts';
import { DomainError, parseInput } from '../../domain/errors.ts';
import { createGate, createGateInputSchema, deleteGate, getGate, listGates, updateGate, updateGateInputSchema } from '../../domain/gates.ts';
import { HttpError } from '../http.ts';
import { decodeFields } from './codec.ts';
import { pageOf, readPage } from './page.ts';
import { attributesOf, type Route, route, uuidParam } from './request.ts';
import { user } from './users.ts';

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

export const gateRoutes: Route[] = [
  route('POST', '/deployment_gates', async ({ deps, principal, body }) => {
    const a = attributesOf(body);
    if (a.env === '') throw new DomainError('BAD_USER_INPUT', 'attribute "env" is required', 'env');
    const input = parseInput(createGateInputSchema, decodeFields(createGateInputSchema, a, ['service', 'env', 'identifier', 'dryRun'], 'data.attributes'));
    try {
      return { status: 200, body: { data: gateToWire((await createGate(deps, principal, input)).gate) } };
    } catch (err) {
      if (err instanceof DomainError && err.code === 'CONFLICT') throw new HttpError(400, 'Gate already exists with the given env, service and identifier');
      throw err;
    }
  }),

  route('GET', '/deployment_gates', async ({ deps, principal, url }) => {
    const page = readPage(url, { default: 50, max: 1000 });
    const dryRun = url.searchParams.get('filter[dry_run]');
    const filter = {
      service: url.searchParams.get('filter[service]') ?? undefined,
      env: url.searchParams.get('filter[env]') ?? undefined,
      identifier: url.searchParams.get('filter[identifier]') ?? undefined,
      dryRun: dryRun === null ? undefined : dryRun === 'true',
    };
    const { items, next } = pageOf(await listGates(deps, principal, filter, { after: page.cursor, limit: page.size + 1, inverted: false }), page);
    return { status: 200, body: { data: items.map(gateToWire), meta: { page: { cursor: page.cursor ?? null, size: page.size, ...(next && { next_cursor: next }) } } } };
  }),

  route('GET', '/deployment_gates/{id}', async ({ deps, principal, params }) => {
    const gate = await getGate(deps, principal, uuidParam(params.id!));
    if (!gate) throw new HttpError(404, 'Gate does not exist');
    return { status: 200, body: { data: gateToWire(gate) } };
  }),

  route('PUT', '/deployment_gates/{id}', async ({ deps, principal, params, body }) => {
    const input = parseInput(updateGateInputSchema, decodeFields(updateGateInputSchema, attributesOf(body), ['dryRun', 'service', 'env', 'identifier'], 'data.attributes'));
    return { status: 200, body: { data: gateToWire(await updateGate(deps, principal, uuidParam(params.id!), input)) } };
  }),

  route('DELETE', '/deployment_gates/{id}', async ({ deps, principal, params }) => {
    await deleteGate(deps, principal, uuidParam(params.id!));
    return { status: 204 };
  }),
];
