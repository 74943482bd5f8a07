// POST /v1/traces: the OTLP/HTTP trace receiver.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { otlpReceiptAt } from '../db/apm.ts';
import type { AuthResult } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { canSeeEnv } from '../domain/principal.ts';
import { ApmAggregate } from '../sources/apmWriter.ts';
import { encodeErrorStatus, encodeTraceResponse, encodingOf, forEachRequestSpan, type OtlpEncoding, type RequestSpan } from '../sources/otlp.ts';
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
      // The spans of the request as received at `at` (those outside the retention period or
      // in the future then, and in environments the key may not ingest for, are rejected).
      const judge = async (at: number, keep: (span: RequestSpan) => void) => {
        let denied = 0;
        const mapped = await forEachRequestSpan(
          body,
          encoding!,
          {
            primaryTags: deps.config.primaryTags,
            earliest: at - deps.config.apmRetentionDays * 86_400_000,
            latest: at + 10 * 60_000,
            maxSpans: deps.config.otlpMaxSpans,
            slice: SLICE,
          },
          (span) => {
            if (canSeeEnv(principal, span.env)) keep(span);
            else denied++;
          },
        );
        const problems = [...mapped.problems];
        if (denied > 0) problems.push(`API key "${principal.name}" may not ingest for some environments: those spans were rejected`);
        return { rejected: mapped.rejected + denied, problems };
      };
      let answer = await judge(now, (span) => aggregate.add(span));
      // The same key sending the same bytes again is an exporter's retry: its spans were counted.
      const digest = createHash('sha256').update(`${principal.id}\u0000${encoding}\u0000`).update(body).digest('hex');
      const stored = await aggregate.store(deps, { digest, at: now });
      if (stored === null) deps.log.info({ key: principal.name, bytes: body.length }, 'OTLP request stored before (an exporter retry): its spans are not counted again');
      // A retry is answered as the request was: a span rejected then as in the future (never
      // stored) is not said to be accepted now, nor one stored then at the edge of retention
      // rejected (the retry may then have nothing left to store).
      if (stored === null || (stored.length === 0 && answer.rejected > 0)) {
        const first = await otlpReceiptAt(deps.db, digest);
        if (first !== undefined && first !== now) answer = await judge(first, () => {});
      }
      const out = encodeTraceResponse(encoding, answer.rejected, answer.problems.join('; '));
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
