// POST /v1/traces: the OTLP/HTTP trace receiver.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthResult } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { canSeeEnv } from '../domain/principal.ts';
import { ingestRequests } from '../sources/apm.ts';
import { decodeTraceRequest, encodeTraceResponse, encodingOf, mapSpans, OtlpDecodeError, type RequestSpan } from '../sources/otlp.ts';
import { HttpError, readBody, requireCaller, sendJson } from './http.ts';

/** Spans aggregated between two turns of the event loop. */
const CHUNK = 2000;

export function otlpTracesHandler(deps: Deps, authenticate: (secret: string | null) => AuthResult) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    try {
      if (req.method !== 'POST') throw new HttpError(405, 'use POST');
      const principal = requireCaller(req, url, authenticate, 'ingest');
      const encoding = encodingOf(req.headers['content-type'] ?? null);
      if (!encoding) throw new HttpError(415, `Content-Type must be application/json or application/x-protobuf, not ${req.headers['content-type'] ?? 'none'}`);
      const body = await readBody(req, deps.config.otlpMaxBytes);
      const now = deps.now().getTime();
      const mapped = mapSpans(decodeTraceRequest(body, encoding), {
        primaryTags: deps.config.primaryTags,
        earliest: now - deps.config.apmRetentionDays * 86_400_000,
        latest: now + 10 * 60_000,
      });
      const allowed: RequestSpan[] = [];
      let rejected = mapped.rejected;
      const problems = [...mapped.problems];
      for (const span of mapped.spans) {
        if (canSeeEnv(principal, span.env)) allowed.push(span);
        else rejected++;
      }
      if (allowed.length < mapped.spans.length) problems.push(`API key "${principal.name}" may not ingest for some environments: those spans were rejected`);
      // Aggregated in chunks (the event loop breathes between them), written in one
      // transaction: an exporter's retry after a failure never counts a span twice.
      await ingestRequests(deps, allowed, CHUNK);
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
