// Ad-hoc freezes: /deployment_freezes[/{id}], and POST /deployment_freezes/{id}/end to lift one.
// Not a Datadog endpoint: Tollgate's own, in the same JSON:API shape as the rest.
import type { FreezeRow } from '../../db/freezes.ts';
import { parseInput } from '../../domain/errors.ts';
import { createFreeze, createFreezeInputSchema, endFreeze, getFreeze, isFreezeActive, listFreezes, MAX_FREEZES_PAGE } from '../../domain/freezes.ts';
import { HttpError, isJsonObject } from '../http.ts';
import { decodeFields } from './codec.ts';
import { pageOf, readPage } from './page.ts';
import { attributesOf, type Route, route, uuidParam } from './request.ts';
import { user } from './users.ts';

function freezeToWire(f: FreezeRow, now: Date) {
  return {
    id: f.id,
    type: 'deployment_freeze',
    attributes: {
      env: f.env,
      service: f.service,
      reason: f.reason,
      starts_at: f.startsAt.toISOString(),
      ends_at: f.endsAt?.toISOString() ?? null,
      active: isFreezeActive(f, now),
      ended_at: f.endedAt?.toISOString() ?? null,
      ended_by: f.endedById && f.endedByName ? user(f.endedById, f.endedByName) : null,
      end_reason: f.endReason,
      created_at: f.createdAt.toISOString(),
      created_by: user(f.createdById, f.createdByName),
    },
  };
}

export const freezeRoutes: Route[] = [
  route('POST', '/deployment_freezes', async ({ deps, principal, body }) => {
    const input = parseInput(
      createFreezeInputSchema,
      decodeFields(createFreezeInputSchema, attributesOf(body), ['env', 'service', 'reason', 'startsAt', 'endsAt'], 'data.attributes'),
    );
    return { status: 200, body: { data: freezeToWire(await createFreeze(deps, principal, input), deps.now()) } };
  }),

  route('GET', '/deployment_freezes', async ({ deps, principal, url }) => {
    const page = readPage(url, { default: 50, max: MAX_FREEZES_PAGE });
    const envs = url.searchParams
      .getAll('filter[env]')
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter(Boolean);
    const active = url.searchParams.get('filter[active]');
    const rows = await listFreezes(
      deps,
      principal,
      { envs: envs.length > 0 ? envs : undefined, active: active === null ? undefined : active === 'true' },
      { after: page.cursor, limit: page.size + 1 },
    );
    const { items, next } = pageOf(rows, page);
    const now = deps.now();
    return {
      status: 200,
      body: { data: items.map((f) => freezeToWire(f, now)), meta: { page: { cursor: page.cursor ?? null, size: page.size, ...(next && { next_cursor: next }) } } },
    };
  }),

  route('GET', '/deployment_freezes/{id}', async ({ deps, principal, params }) => {
    const freeze = await getFreeze(deps, principal, uuidParam(params.id!));
    if (!freeze) throw new HttpError(404, 'Freeze does not exist');
    return { status: 200, body: { data: freezeToWire(freeze, deps.now()) } };
  }),

  route('POST', '/deployment_freezes/{id}/end', async ({ deps, principal, params, body }) => {
    // The body is optional: {"data": {"attributes": {"reason": "…"}}}.
    const reason = isJsonObject(body) ? attributesOf(body).reason : undefined;
    if (reason !== undefined && reason !== null && typeof reason !== 'string') throw new HttpError(400, 'data.attributes.reason: must be a string');
    return { status: 200, body: { data: freezeToWire(await endFreeze(deps, principal, uuidParam(params.id!), reason ?? undefined), deps.now()) } };
  }),
];
