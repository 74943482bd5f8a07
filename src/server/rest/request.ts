// What every REST resource reads of a request: its route, path parameters and JSON:API body.
import { validate as isUuid } from 'uuid';
import type { Deps } from '../../domain/deps.ts';
import { DomainError } from '../../domain/errors.ts';
import type { Principal } from '../../domain/principal.ts';
import { HttpError } from '../http.ts';

export interface RestRequest {
  deps: Deps;
  principal: Principal;
  /** The path's `{name}` segments, decoded. */
  params: Record<string, string>;
  body: unknown;
  url: URL;
}

export type Handler = (req: RestRequest) => { status: number; body?: unknown } | Promise<{ status: number; body?: unknown }>;

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Below the API prefix, with `{name}` for a path parameter: `/deployment_gates/{id}`. */
  path: string;
  handle: Handler;
}

export const route = (method: Route['method'], path: string, handle: Handler): Route => ({ method, path, handle });

/** `data.attributes` of a JSON:API body. */
export function attributesOf(body: unknown): Record<string, unknown> {
  const data = (body as { data?: { attributes?: unknown } } | null)?.data;
  if (!data || typeof data !== 'object') throw new DomainError('BAD_USER_INPUT', 'data: is required (a JSON:API body: {"data": {"type": …, "attributes": {…}}})', 'data');
  const attributes = data.attributes;
  if (!attributes || typeof attributes !== 'object' || Array.isArray(attributes)) throw new DomainError('BAD_USER_INPUT', 'data.attributes: is required', 'data.attributes');
  return attributes as Record<string, unknown>;
}

/** An id in the path or a filter, worded as Datadog's API words a bad one. */
export function uuidParam(value: string, what = 'id'): string {
  if (!isUuid(value)) throw new HttpError(400, `attribute "${what}" Invalid id`);
  return value.toLowerCase();
}
