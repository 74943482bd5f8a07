// POST /v1/traces: the OTLP/HTTP trace receiver.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthResult } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { canSeeEnv } from '../domain/principal.ts';
import { ingestRequests } from '../sources/apm.ts';
import { decodeTraceRequest, encodeTraceResponse, encodingOf, mapSpans, OtlpDecodeError, type RequestSpan } from '../sources/otlp.ts';
import { HttpError, readBody, requireCaller, sendJson } from './http.ts';

/** Spans written per transaction: short enough that WebSocket pings stay on time. */
const CHUNK = 2000;

export function otlpTracesHandler(deps: Deps, authenticate: (secret: string | null) => AuthResult) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      if (req.method !== 'POST') throw new HttpError(405, 'use POST');
      const principal = requireCaller(req, url, authenticate, 'ingest');
      const encoding = encodingOf(req.headers['content-type'] ?? null);
      if (!encoding) throw new HttpError(415, `Content-Type must be application/json or application/x-protobuf, not ${req.headers['content-type'] ?? 'none'}`);
      const body = await readBody(req, deps.config.otlpMaxBytes);
      const mapped = mapSpans(decodeTraceRequest(body, encoding), { primaryTags: deps.config.primaryTags });
      const allowed: RequestSpan[] = [];
      let rejected = mapped.rejected;
      const problems = [...mapped.problems];
      for (const span of mapped.spans) {
        if (canSeeEnv(principal, span.env)) allowed.push(span);
        else rejected++;
      }
      if (allowed.length < mapped.spans.length) problems.push(`API key "${principal.name}" may not ingest for some environments: those spans were rejected`);
      for (let i = 0; i < allowed.length; i += CHUNK) {
        ingestRequests(deps, allowed.slice(i, i + CHUNK));
        if (i + CHUNK < allowed.length) await new Promise((r) => setImmediate(r));
      }
      const out = encodeTraceResponse(encoding, rejected, problems.join('; '));
      res.writeHead(200, { 'content-type': encoding === 'json' ? 'application/json' : 'application/x-protobuf' });
      res.end(out);
    } catch (err) {
      if (err instanceof HttpError) return sendJson(res, err.status, { code: err.status, message: err.message });
      if (err instanceof OtlpDecodeError) return sendJson(res, 400, { code: 400, message: err.message });
      deps.log.error({ err }, 'OTLP ingestion failed');
      sendJson(res, 500, { code: 500, message: 'internal error while ingesting' });
    }
  };
}
