// `tollgate evaluate`: datadog-ci's `deployment gate` flags, against Tollgate, with live
// progress over the WebSocket subscription (polling when WebSockets are blocked).
// Exit codes: 0 pass, 1 fail; timeouts and server errors follow --fail-on-error (default:
// pass), client errors (4xx, bad input) are 1.
import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

export interface EvaluateFlags {
  service?: string;
  env?: string;
  identifier?: string;
  version?: string;
  primaryTag?: string;
  config?: string;
  timeout: string;
  failOnError?: boolean;
  url: string;
  apiKey?: string;
  json?: boolean;
  watch: boolean;
}

class CliError extends Error {
  constructor(
    message: string,
    /** A server-side or network problem: --fail-on-error decides; else the input was wrong. */
    readonly serverSide: boolean,
    /** Set when Tollgate asked us to come back later (429 Retry-After): wait this long, then retry. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * Unreachable is not a verdict, yet (datadog-ci's semantics) the run passes without
 * --fail-on-error: say so on stderr, where CI logs show it, when it happens and at the end.
 */
function unreachableWarnings(base: string, failOnError: boolean) {
  let cause: string | undefined;
  let warned = false;
  return {
    /** A request got no answer at all. */
    failed(code: string) {
      cause = code;
      if (warned) return;
      warned = true;
      const then = failOnError
        ? 'this run will fail (--fail-on-error) if it stays unreachable'
        : 'without --fail-on-error this run will pass, without a verdict, when the retries or the timeout end';
      process.stderr.write(`WARNING: Tollgate at ${base} is unreachable (${cause}); ${then}\n`);
    },
    /** A request got an answer: the server is back. */
    answered() {
      cause = undefined;
      warned = false;
    },
    /** The closing line, when the run ends without a verdict while the server is unreachable. */
    atEnd() {
      if (!cause) return;
      const outcome = failOnError ? 'failing because of --fail-on-error' : 'passing without a verdict because --fail-on-error is not set';
      process.stderr.write(`WARNING: Tollgate at ${base} is unreachable (${cause}): ${outcome}\n`);
    },
  };
}

interface Result {
  gate_status: string;
  dry_run: boolean;
  evaluation_url: string;
  /** The verdict is pass but a counted rule passed only for lack of data (absent from older servers). */
  passed_without_evidence?: boolean;
  rules: Array<{ name: string; status: string; reason?: string; dry_run: boolean; insufficient_data?: boolean }>;
  /** A person's verdict in place of the gate's (gate_status is then its verdict); absent when nobody overrode it. */
  override?: { verdict: string; reason: string; at: string; by: { id: string; name: string }; replaced: string };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function evaluate(flags: EvaluateFlags): Promise<number> {
  const log = (line: string) => (flags.json ? process.stderr : process.stdout).write(`${line}\n`);
  const failOnError = Boolean(flags.failOnError);
  const unreachable = unreachableWarnings(flags.url.replace(/\/+$/, ''), failOnError);
  const tolerate = (why: string) => {
    log(`${why}`);
    unreachable.atEnd();
    log(failOnError ? 'Failing because of --fail-on-error.' : 'Exiting with status 0 (pass); use --fail-on-error to fail instead.');
    return failOnError ? 1 : 0;
  };
  try {
    if (!flags.service) throw new CliError('--service is required', false);
    if (!flags.env) throw new CliError('--env is required', false);
    const timeout = Number(flags.timeout);
    if (!Number.isInteger(timeout) || timeout <= 0) throw new CliError(`--timeout must be a positive whole number of seconds, not ${flags.timeout}`, false);
    const key = flags.apiKey ?? process.env.TOLLGATE_API_KEY ?? process.env.DD_API_KEY;
    if (!key) throw new CliError('an API key is required: --api-key, TOLLGATE_API_KEY or DD_API_KEY', false);
    const base = flags.url.replace(/\/+$/, '');
    const deadline = Date.now() + timeout * 1000;

    let configuration: unknown;
    if (flags.config) {
      let text: string;
      try {
        text = readFileSync(flags.config, 'utf8');
      } catch (err) {
        throw new CliError(`cannot read --config ${flags.config}: ${(err as Error).message}`, false);
      }
      let parsed: { dryRun?: boolean; rules?: Array<Record<string, unknown>> };
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        throw new CliError(`--config ${flags.config} is not valid JSON: ${(err as Error).message}`, false);
      }
      if (!Array.isArray(parsed.rules) || parsed.rules.length === 0) throw new CliError(`--config ${flags.config} needs a non-empty "rules" array`, false);
      configuration = {
        dry_run: parsed.dryRun,
        rules: parsed.rules.map(({ dryRun, ...rule }) => ({ ...rule, ...(dryRun !== undefined && { dry_run: dryRun }) })),
      };
    }

    log(
      `Evaluating the gate for service ${flags.service}, env ${flags.env}${flags.identifier ? `, identifier ${flags.identifier}` : ''}${flags.version ? `, version ${flags.version}` : ''} (timeout ${timeout} s)`,
    );
    const headers = { 'content-type': 'application/json', 'DD-API-KEY': key };
    const request = async (method: string, path: string, body?: unknown) => {
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
      } catch (err) {
        const cause = (err as Error & { cause?: { code?: string; message?: string } }).cause;
        const code = cause?.code ?? cause?.message ?? (err as Error).message;
        unreachable.failed(code);
        throw new CliError(`cannot reach Tollgate at ${base}: ${code}`, true);
      }
      unreachable.answered();
      const json = (await res.json().catch(() => null)) as { data?: any; errors?: Array<{ detail?: string }> } | null;
      if (res.status >= 400) {
        const detail = json?.errors?.map((e) => e.detail).join('; ') || res.statusText;
        if (res.status === 429) {
          // Rate limited: not the input's fault, so retry after what the server asked for.
          const seconds = Number(res.headers.get('retry-after'));
          throw new CliError(`Tollgate answered 429: ${detail}`, true, (Number.isFinite(seconds) && seconds > 0 ? seconds : 5) * 1000);
        }
        throw new CliError(`Tollgate answered ${res.status}: ${detail}`, res.status >= 500);
      }
      return json!;
    };

    // Trigger, retrying server errors for up to a minute as datadog-ci does.
    let evaluationId: string | undefined;
    for (let attempt = 0; !evaluationId; attempt++) {
      try {
        const triggered = await request('POST', '/api/v2/deployments/gates/evaluation', {
          data: {
            type: 'deployment_gates_evaluation_request',
            attributes: { service: flags.service, env: flags.env, identifier: flags.identifier, version: flags.version, primary_tag: flags.primaryTag, configuration },
          },
        });
        evaluationId = triggered.data.attributes.evaluation_id as string;
      } catch (err) {
        const wait = err instanceof CliError && err.retryAfterMs !== undefined ? err.retryAfterMs : Math.min(5000 * 1.5 ** attempt, 30_000);
        // A rate limit is waited out until the deadline; other server errors are retried for a minute.
        const giveUpAt = err instanceof CliError && err.retryAfterMs !== undefined ? deadline : Math.min(deadline, Date.now() + 60_000);
        if (!(err instanceof CliError) || !err.serverSide || Date.now() + wait > giveUpAt || attempt >= (err.retryAfterMs !== undefined ? 100 : 5)) throw err;
        log(`${err.message}; retrying in ${Math.round(wait / 1000)} s`);
        await sleep(wait);
      }
    }
    // The link first, so the live page can be opened while the rules run. Datadog's trigger answer
    // carries only the id; the address this CLI reached Tollgate at serves the page. The closing
    // `Details:` line repeats the server's own link (TOLLGATE_PUBLIC_URL behind a proxy).
    log(`Evaluation ${evaluationId} started; follow it live at ${base}/evaluations/${evaluationId}`);

    const result = (flags.watch && (await watch(base, key, evaluationId, deadline, log))) || (await poll(request, evaluationId, deadline, log));
    if (!result) return tolerate(`Timeout reached after ${timeout} s; the evaluation is still running.`);

    if (flags.json) process.stdout.write(`${JSON.stringify({ evaluation_id: evaluationId, ...result }, null, 2)}\n`);
    log('');
    log(
      `Gate ${result.gate_status === 'pass' ? 'PASSED' : 'FAILED'}${result.passed_without_evidence ? ' WITHOUT EVIDENCE (a rule had too little data to decide)' : ''} (evaluation mode: ${result.dry_run ? 'Dry run' : 'Active'})`,
    );
    const o = result.override;
    if (o) log(`Overridden to ${o.verdict.toUpperCase()} by ${o.by.name} at ${o.at} (the gate said ${o.replaced.toUpperCase()}): ${o.reason}`);
    for (const r of result.rules)
      log(
        `  ${r.status.toUpperCase().padEnd(11)} ${r.name}${r.dry_run ? ' (dry run)' : ''}${r.insufficient_data ? ' (insufficient data)' : ''}${r.reason ? ` — ${r.reason}` : ''}`,
      );
    log(`Details: ${result.evaluation_url}`);
    return result.gate_status === 'pass' ? 0 : 1;
  } catch (err) {
    if (err instanceof CliError) {
      if (err.serverSide) return tolerate(`Error: ${err.message}`);
      log(`Error: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

/** Follows the evaluation over graphql-ws; null if WebSockets fail, so the caller polls. */
async function watch(base: string, key: string, id: string, deadline: number, log: (s: string) => void): Promise<Result | null | undefined> {
  const client = createClient({
    url: `${base.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${key}` },
    retryAttempts: 0,
    lazy: true,
  });
  const seen = new Map<string, string>();
  let lastDone = -1;
  let lastProgress = 0;
  try {
    return await new Promise<Result | null | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()));
      let last: Result | null = null;
      client.subscribe<any>(
        {
          query: `subscription($id: ID!) { evaluationUpdated(id: $id) { reportedStatus dryRun evaluationUrl finishedAt passedWithoutEvidence override { verdict reason at by { id name } replaced } rules { name status reason dryRun windowEndsAt insufficientData } } }`,
          variables: { id },
        },
        {
          next: ({ data, errors }) => {
            if (errors || !data) return;
            const e = data.evaluationUpdated;
            const done = e.rules.filter((r: any) => r.status !== 'IN_PROGRESS').length;
            for (const r of e.rules) {
              if (r.status !== 'IN_PROGRESS' && seen.get(r.name) !== r.status) {
                seen.set(r.name, r.status);
                log(`  [${done}/${e.rules.length}] ${r.name}: ${r.status}${r.reason ? ` — ${r.reason}` : ''}`);
              }
            }
            const pending = e.rules.filter((r: any) => r.status === 'IN_PROGRESS');
            // Progress when a rule finishes, else every ten seconds: rules re-check often.
            if (pending.length > 0 && e.reportedStatus === 'IN_PROGRESS' && (done !== lastDone || Date.now() - lastProgress >= 10_000)) {
              lastDone = done;
              lastProgress = Date.now();
              const left = Math.max(...pending.map((r: any) => Date.parse(r.windowEndsAt) - Date.now()));
              log(`  ${done}/${e.rules.length} rules completed, about ${Math.max(0, Math.ceil(left / 1000))} s left`);
            }
            last = {
              gate_status: e.reportedStatus.toLowerCase(),
              dry_run: e.dryRun,
              evaluation_url: e.evaluationUrl,
              passed_without_evidence: e.passedWithoutEvidence,
              ...(e.override && {
                override: { ...e.override, verdict: e.override.verdict.toLowerCase(), replaced: e.override.replaced.toLowerCase(), at: new Date(e.override.at).toISOString() },
              }),
              rules: e.rules.map((r: any) => ({
                name: r.name,
                status: r.status.toLowerCase(),
                reason: r.reason ?? undefined,
                dry_run: r.dryRun,
                insufficient_data: r.insufficientData,
              })),
            };
            // The deploy can go on as soon as the verdict is known.
            if (e.reportedStatus !== 'IN_PROGRESS') {
              clearTimeout(timer);
              resolve(last);
            }
          },
          // The stream ended without a verdict (the instance restarted, a network cut): not a verdict; poll for it instead.
          error: () => {
            clearTimeout(timer);
            log('WebSocket closed before the verdict; polling instead');
            resolve(last && last.gate_status !== 'in_progress' ? last : null);
          },
          complete: () => {
            clearTimeout(timer);
            resolve(last && last.gate_status !== 'in_progress' ? last : null);
          },
        },
      );
    });
  } finally {
    await client.dispose();
  }
}

async function poll(request: (m: string, p: string) => Promise<{ data?: any }>, id: string, deadline: number, log: (s: string) => void): Promise<Result | null> {
  for (;;) {
    try {
      const r = (await request('GET', `/api/v2/deployments/gates/evaluation/${id}`)).data.attributes as Result;
      if (r.gate_status !== 'in_progress') return r;
      log(`Gate evaluation in progress (${r.rules.filter((x) => x.status !== 'in_progress').length}/${r.rules.length} rules completed)`);
    } catch (err) {
      if (!(err instanceof CliError) || !err.serverSide) throw err;
      log(`${err.message}; retrying`);
      if (err.retryAfterMs !== undefined) {
        const backoff = Math.min(err.retryAfterMs, deadline - Date.now());
        if (backoff <= 0) return null;
        await sleep(backoff);
        continue;
      }
    }
    const wait = Math.min(Number(process.env.TOLLGATE_POLL_INTERVAL_MS ?? 15_000), deadline - Date.now());
    if (wait <= 0) return null;
    await sleep(wait);
  }
}
