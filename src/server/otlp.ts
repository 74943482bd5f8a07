// POST /v1/traces: the OTLP/HTTP trace receiver.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthResult } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { canSeeEnv } from '../domain/principal.ts';
import { ApmAggregate } from '../sources/apmWriter.ts';
import { encodeErrorStatus, encodeTraceResponse, encodingOf, forEachRequestSpan, type OtlpEncoding } from '../sources/otlp.ts';
import { failureOf } from './failures.ts';
import { HttpError, readBody, requireCaller } from './http.ts';

/** Spans decoded, mapped and aggregated between two turns of the event loop. */
const SLICE = 2000;

export function otlpTracesHandler(deps: Deps, authenticate: (secret: string | null) => Promise<AuthResult>) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    let encoding: OtlpEncoding | null = null;
    try {
      if (req.method !== 'POST') throw new HttpError(405, 'use POST');
      encoding = encodingOf(req.headers['content-type'] ?? null);
      await requireCaller(req, url, authenticate, 'ingest');
      if (!encoding) throw new HttpError(415, `Content-Type must be application/json or application/x-protobuf, not ${req.headers['content-type'] ?? 'none'}`);
      const body = await readBody(req, deps.config.otlpMaxBytes);
      // Again once the body is in: a key revoked or expired while it was arriving acts no more.
      const principal = await requireCaller(req, url, authenticate, 'ingest');
      const now = deps.now().getTime();
      // Decoded, mapped and aggregated in slices (the event loop breathes between them),
      // written in one transaction once the whole request is read: all or nothing, so an
      // exporter's retry after a failure never counts a span twice, nor (by its receipt) a
      // retry after a success whose answer was lost.
      const aggregate = new ApmAggregate();
      let denied = 0;
      const mapped = await forEachRequestSpan(
        body,
        encoding,
        {
          primaryTags: deps.config.primaryTags,
          earliest: now - deps.config.apmRetentionDays * 86_400_000,
          latest: now + 10 * 60_000,
          maxSpans: deps.config.otlpMaxSpans,
          slice: SLICE,
        },
        (span) => {
          if (canSeeEnv(principal, span.env)) aggregate.add(span);
          else denied++;
        },
      );
      const problems = [...mapped.problems];
      if (denied > 0) problems.push(`API key "${principal.name}" may not ingest for some environments: those spans were rejected`);
      // The same key sending the same bytes again is an exporter's retry: its spans were counted.
      const receipt = createHash('sha256').update(`${principal.id}\u0000${encoding}\u0000`).update(body).digest('hex');
      if ((await aggregate.store(deps, receipt)) === null)
        deps.log.info({ key: principal.name, bytes: body.length }, 'OTLP request stored before (an exporter retry): its spans are not counted again');
      const out = encodeTraceResponse(encoding, mapped.rejected + denied, problems.join('; '));
      res.writeHead(200, { 'content-type': encoding === 'json' ? 'application/json' : 'application/x-protobuf' });
      res.end(out);
    } catch (err) {
      // OTLP's own error body (a Status in the request's encoding); 503 and 429 carry Retry-After,
      // which OTLP exporters honour before sending the batch again.
      const { status, detail, headers } = failureOf(err, deps.log, 'OTLP');
      const { contentType, body } = encodeErrorStatus(encoding, status, detail);
      res.writeHead(status, { 'content-type': contentType, ...headers });
      res.end(body);
    }
  };
}
