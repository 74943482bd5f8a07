// A Prometheus HTTP API client: instant queries and alerting rules. Every failure (refused,
// timeout, HTTP error, an error answer) is a SourceError that names the server and the cause.
import { SourceError } from '../domain/errors.ts';

export interface PrometheusOptions {
  url: string;
  /** Sent as `Authorization: Bearer …` when set. */
  bearerToken?: string;
  timeoutMs: number;
}

export interface Series {
  labels: Record<string, string>;
  value: number;
}

export interface AlertingRule {
  group: string;
  name: string;
  query: string;
  labels: Record<string, string>;
  state: 'firing' | 'pending' | 'inactive';
  alerts: Array<{ labels: Record<string, string>; state: 'firing' | 'pending' | 'inactive'; value?: string }>;
}

/**
 * Prometheus answered, and refused the query itself (a parse error, a range vector where an
 * instant one is needed): asking again cannot help. Monitors treat it as any source error; a
 * metric rule fails at once, since onSourceError is for a source that cannot answer.
 */
export class PromqlRejected extends SourceError {
  override name = 'PromqlRejected';
}

/** Prometheus writes infinities as +Inf/-Inf, which Number() does not read. */
export function sampleValue(v: string): number {
  if (v === '+Inf' || v === 'Inf') return Number.POSITIVE_INFINITY;
  if (v === '-Inf') return Number.NEGATIVE_INFINITY;
  return Number(v);
}

export function prometheusClient(o: PrometheusOptions) {
  const base = o.url.replace(/\/+$/, '');
  async function get<T>(path: string): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        headers: { accept: 'application/json', ...(o.bearerToken && { authorization: `Bearer ${o.bearerToken}` }) },
        signal: AbortSignal.timeout(o.timeoutMs),
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${o.timeoutMs} ms` : (e.cause?.code ?? e.message);
      throw new SourceError(`Prometheus at ${base} is unreachable: ${why}`);
    }
    const body = (await res.json().catch(() => null)) as { status?: string; data?: T; error?: string; errorType?: string } | null;
    if (!res.ok || body?.status !== 'success') {
      const message = `Prometheus at ${base} answered ${res.status}: ${body?.error ?? res.statusText}`;
      throw body?.errorType === 'bad_data' ? new PromqlRejected(message) : new SourceError(message);
    }
    return body.data as T;
  }

  return {
    /** An instant query (now, or at `at`); a vector or a scalar, as series. */
    async query(expr: string, at?: Date): Promise<Series[]> {
      const time = at ? `&time=${at.getTime() / 1000}` : '';
      const data = await get<{ resultType: string; result: unknown }>(`/api/v1/query?query=${encodeURIComponent(expr)}${time}`);
      if (data.resultType === 'scalar') return [{ labels: {}, value: sampleValue((data.result as [number, string])[1]) }];
      if (data.resultType !== 'vector') throw new PromqlRejected(`PromQL \`${expr}\` returned a ${data.resultType}, not an instant vector`);
      return (data.result as Array<{ metric: Record<string, string>; value: [number, string] }>).map((r) => ({
        labels: r.metric,
        value: sampleValue(r.value[1]),
      }));
    },

    async alertingRules(): Promise<AlertingRule[]> {
      const data = await get<{ groups: Array<{ name: string; rules: ApiRule[] }> }>('/api/v1/rules?type=alert');
      return data.groups.flatMap((g) =>
        g.rules
          .filter((r) => r.type === 'alerting')
          .map((r) => ({
            group: g.name,
            name: String(r.name),
            query: String(r.query ?? ''),
            labels: (r.labels ?? {}) as Record<string, string>,
            state: r.state,
            alerts: ((r.alerts ?? []) as AlertingRule['alerts']).map((a) => ({ labels: a.labels, state: a.state, value: a.value })),
          })),
      );
    },
  };
}

export type PrometheusClient = ReturnType<typeof prometheusClient>;

/** A rule as /api/v1/rules answers it, as far as it is read (recording rules carry no state or alerts). */
interface ApiRule {
  type: string;
  name?: unknown;
  query?: unknown;
  labels?: Record<string, string>;
  state: AlertingRule['state'];
  alerts?: AlertingRule['alerts'];
}
