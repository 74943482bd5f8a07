// POST /hooks/alertmanager: Alertmanager's webhook receiver.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthResult } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { DomainError } from '../domain/errors.ts';
import { receiveAlertmanager } from '../sources/alertmanager.ts';
import { HttpError, readBody, requireCaller, sendJson } from './http.ts';

export function alertmanagerHandler(deps: Deps, authenticate: (secret: string | null) => AuthResult) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      if (req.method !== 'POST') throw new HttpError(405, 'use POST');
      const principal = requireCaller(req, url, authenticate, 'ingest');
      const body = await readBody(req, 4 * 1024 * 1024);
      let json: unknown;
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch (err) {
        throw new HttpError(400, `body is not valid JSON: ${(err as Error).message}`);
      }
      sendJson(res, 200, receiveAlertmanager(deps, principal, json));
    } catch (err) {
      if (err instanceof HttpError) return sendJson(res, err.status, { errors: [{ status: String(err.status), detail: err.message }] });
      if (err instanceof DomainError) return sendJson(res, 400, { errors: [{ status: '400', detail: err.message }] });
      deps.log.error({ err }, 'Alertmanager notification failed');
      sendJson(res, 500, { errors: [{ status: '500', detail: 'internal error' }] });
    }
  };
}
