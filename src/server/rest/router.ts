// The Datadog-compatible REST API (JSON:API-style bodies in snake_case), on the same domain
// functions as GraphQL: trigger and result of evaluations, gate and rule CRUD, history.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { secretFromAuthorization } from '../../domain/apiKeys.ts';
import type { Deps } from '../../domain/deps.ts';
import type { DomainError } from '../../domain/errors.ts';
import { evaluateGateInputSchema } from '../../domain/evaluations.ts';
import { createFreezeInputSchema } from '../../domain/freezes.ts';
import { createGateInputSchema, ruleInputSchema, updateGateInputSchema, updateRuleInputSchema } from '../../domain/gates.ts';
import { failureOf, sendFailure } from '../failures.ts';
import { type Authenticate, decodePathSegment, HttpError, readBody, sendJson } from '../http.ts';
import { wireWords } from './codec.ts';
import { evaluationRoutes } from './evaluations.ts';
import { freezeRoutes } from './freezes.ts';
import { gateRoutes } from './gates.ts';
import { historyRoutes } from './history.ts';
import type { Handler, Route } from './request.ts';
import { OPTIONS_KEYS, ruleRoutes } from './rules.ts';

const PREFIXES = ['/api/v2', '/api/unstable'];

interface Compiled {
  method: Route['method'];
  pattern: RegExp;
  names: string[];
  handle: Handler;
}

/** Each route under every prefix, its `{name}` segments as captures. */
function compile(routes: Route[]): Compiled[] {
  return PREFIXES.flatMap((prefix) =>
    routes.map((r) => {
      const names = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
      const source = (prefix + r.path).split(/\{\w+\}/).map((literal) => literal.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
      return { method: r.method, pattern: new RegExp(`^${source.join('([^/]+)')}$`), names, handle: r.handle };
    }),
  );
}

// History first: /deployment_gates/{id} would otherwise read "evaluations" as an id.
const ROUTES = compile([...historyRoutes, ...evaluationRoutes, ...gateRoutes, ...ruleRoutes, ...freezeRoutes]);

/** The domain's field names in a message, as the REST body spells them. */
const wireText = wireWords(evaluateGateInputSchema, createGateInputSchema, updateGateInputSchema, ruleInputSchema, updateRuleInputSchema, createFreezeInputSchema);
const OPTIONS_LEVEL = new RegExp(`(^|\\.)options\\.(?:${OPTIONS_KEYS.join('|')})(?=\\.|\\[|$)`);

/**
 * A domain error in the REST API's words: paths into the request body (not GraphQL's `input`,
 * no `options.monitor` level) and snake_case names, leaving quoted user text alone.
 */
function restDetail(err: DomainError): string {
  const field = err.field;
  if (!field || !err.message.startsWith(`${field}: `)) return wireText(err.message);
  const path = field.replace(/^input(\.|$)/, '').replace(OPTIONS_LEVEL, '$1options');
  const message = wireText(err.message.slice(field.length + 2));
  return path ? `${wireText(path)}: ${message}` : message;
}

/** Handles /api/… requests; unknown paths under /api are a JSON 404. */
export function restHandler(deps: Deps, authenticate: Authenticate) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      const matching = ROUTES.filter((r) => r.pattern.test(url.pathname));
      if (matching.length === 0) throw new HttpError(404, `no endpoint ${url.pathname}`);
      const match = matching.find((r) => r.method === req.method);
      if (!match) throw new HttpError(405, `use ${matching.map((r) => r.method).join(' or ')}`);
      const header = (req.headers['dd-api-key'] as string | undefined) ?? req.headers.authorization;
      let auth = await authenticate(secretFromAuthorization(header), req.socket.remoteAddress);
      if (!auth.ok) throw new HttpError(401, auth.reason);
      let body: unknown;
      if (req.method === 'POST' || req.method === 'PUT') {
        const raw = await readBody(req, 1024 * 1024);
        // Again once the body is in: a key revoked or expired while it was arriving acts no more.
        auth = await authenticate(secretFromAuthorization(header), req.socket.remoteAddress);
        if (!auth.ok) throw new HttpError(401, auth.reason);
        try {
          body = JSON.parse(raw.toString('utf8') || 'null');
        } catch (err) {
          throw new HttpError(400, `body is not valid JSON: ${(err as Error).message}`);
        }
      }
      const values = match.pattern.exec(url.pathname)!.slice(1).map(decodePathSegment);
      const params = Object.fromEntries(match.names.map((name, i) => [name, values[i]!]));
      const out = await match.handle({ deps, principal: auth.principal, params, body, url });
      if (out.status === 204) {
        res.writeHead(204);
        res.end();
      } else sendJson(res, out.status, out.body);
    } catch (err) {
      sendFailure(res, failureOf(err, deps.log, 'REST', restDetail));
    }
  };
}
