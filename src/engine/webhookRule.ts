// The webhook rule: POST the evaluation's facts to a URL; a 2xx answer passes, anything else
// fails with the status and the first KB of the answer. `once` calls once; `poll` calls every
// `interval` until the window ends and passes only if every call passed. A call that fails
// without a definite answer (no answer, timeout, 408, 425, 429, 5xx) is retried `retries`
// times with backoff; the tries are scheduled through the rule's state, so a restart resumes
// them instead of starting over. A call that never got an answer is the source failing: the
// gate's onSourceError decides.
import type { Deps } from '../domain/deps.ts';
import { hostRefusal, listedAddresses, SecretUnavailableError, type StoredWebhookOptions, webhookHeaderValues } from '../domain/webhooks.ts';
import { callWebhook, type WebhookAnswer } from '../sources/webhook.ts';
import type { CheckResult, RuleRunner } from './runner.ts';

/** First retry after this long, doubling each time, at most RETRY_MAX_MS. */
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30_000;
/** Finished calls kept in the evidence (the failing one is always the last). */
const MAX_CALLS_SHOWN = 10;

export type WebhookTry = {
  at: string;
  status: number | null;
  error: string | null;
  ms: number;
};

export type WebhookCallEvidence = {
  /** 1 for the first call. */
  call: number;
  at: string;
  passed: boolean;
  status: number | null;
  error: string | null;
  /** The first KB of the last answer. */
  body: string | null;
  bodyTruncated: boolean;
  /** A redirect's target (redirects are not followed). */
  location?: string;
  tries: WebhookTry[];
};

export type WebhookEvidence = {
  url: string;
  mode: 'once' | 'poll';
  passedCalls: number;
  /** The latest calls, oldest first; the one under way (retrying) last, not yet passed. */
  calls: WebhookCallEvidence[];
  /** Set when the rule failed without calling (host no longer allowed, a secret that does not open). */
  refused?: string;
};

type WebhookState = {
  /** The call under way, 1-based. */
  call: number;
  /** Tries of that call so far. */
  tries: WebhookTry[];
  /** When the next try (or call) is due. */
  dueAt: string;
  /** Every call up to the window's end has passed: only the end is awaited. */
  allPassed?: boolean;
  passedCalls: number;
  calls: WebhookCallEvidence[];
};

const iso = (d: Date) => d.toISOString();
const backoff = (failedTries: number) => Math.min(RETRY_BASE_MS * 2 ** (failedTries - 1), RETRY_MAX_MS);
const retryable = (a: WebhookAnswer) => !a.answered || a.status === 408 || a.status === 425 || a.status === 429 || a.status >= 500;
const describe = (a: WebhookAnswer) => (a.answered ? `HTTP ${a.status}` : a.error);

/** The longest a once call may take: every try timing out, with the backoffs between. */
function onceBudgetMs(o: StoredWebhookOptions): number {
  let total = (o.retries + 1) * o.timeout * 1000;
  for (let n = 1; n <= o.retries; n++) total += backoff(n);
  return total;
}

/** What the webhook is told: who asks, about what, and which call and try this is. */
function payload(deps: Deps, input: Parameters<RuleRunner['check']>[1], o: StoredWebhookOptions, call: number, attempt: number): string {
  const { rule, evaluation: e } = input;
  return JSON.stringify({
    evaluation: { id: e.id, url: `${deps.baseUrl()}/evaluations/${e.id}`, startedAt: iso(e.startedAt), dryRun: e.dryRun },
    gate: { id: e.gateId, identifier: e.identifier, justInTime: e.justInTime },
    service: e.service,
    env: e.env,
    version: e.version,
    primaryTag: e.primaryTag,
    rule: { name: rule.name, type: 'webhook', dryRun: rule.dryRun, mode: o.mode },
    call,
    attempt,
  });
}

export const webhookRunner: RuleRunner = {
  type: 'webhook',

  plan(options, start) {
    const o = options as StoredWebhookOptions;
    const span = o.mode === 'poll' ? (o.duration ?? 0) * 1000 : onceBudgetMs(o);
    return { windowStartsAt: start, windowEndsAt: new Date(start.getTime() + span), nextCheckAt: start };
  },

  async check(deps, input): Promise<CheckResult> {
    const { rule, evaluation, now } = input;
    const o = rule.options as StoredWebhookOptions;
    const state: WebhookState = (rule.state as WebhookState | null) ?? { call: 1, tries: [], dueAt: iso(rule.windowStartsAt), passedCalls: 0, calls: [] };
    const evidence = (extra: Partial<WebhookEvidence> = {}, calls = state.calls): WebhookEvidence => ({
      url: o.url,
      mode: o.mode,
      passedCalls: state.passedCalls,
      calls,
      ...extra,
    });
    const dueAt = new Date(state.dueAt);
    // Woken early (a restart looks at every rule at once): a call is never made before its time.
    if (now < dueAt) return { status: 'in_progress', reason: rule.reason ?? 'Waiting for the first call.', evidence: rule.evidence ?? evidence(), state, nextCheckAt: dueAt };
    if (state.allPassed)
      return { status: 'pass', reason: `All ${state.passedCalls} calls answered 2xx from ${iso(rule.windowStartsAt)} to ${iso(rule.windowEndsAt)}.`, evidence: evidence(), state };

    // The list may have changed since the rule was stored: nothing is sent to a host it no longer holds.
    const refusal = hostRefusal(deps.config.webhookAllowedHosts, o.url);
    if (refusal) return { status: 'fail', reason: `Not called: ${refusal}.`, evidence: evidence({ refused: refusal }), state };
    let headers: Record<string, string>;
    try {
      headers = webhookHeaderValues(deps, o);
    } catch (err) {
      if (!(err instanceof SecretUnavailableError)) throw err;
      return { status: 'fail', reason: `Not called: ${err.message}.`, evidence: evidence({ refused: err.message }), state };
    }

    const attempt = state.tries.length + 1;
    const answer = await callWebhook({
      url: o.url,
      headers: { ...headers, 'idempotency-key': `${rule.id}:${state.call}` },
      body: payload(deps, input, o, state.call, attempt),
      timeoutMs: o.timeout * 1000,
      listedAddresses: listedAddresses(deps.config.webhookAllowedHosts),
    });
    const at = deps.now();
    const tries = [...state.tries, { at: iso(at), status: answer.answered ? answer.status : null, error: answer.answered ? null : answer.error, ms: answer.ms }];
    const passed = answer.answered && answer.status >= 200 && answer.status < 300;
    const record: WebhookCallEvidence = {
      call: state.call,
      at: tries[0]!.at,
      passed,
      status: answer.answered ? answer.status : null,
      error: answer.answered ? null : answer.error,
      body: answer.answered ? answer.body : null,
      bodyTruncated: answer.answered && answer.truncated,
      ...(answer.answered && answer.location && { location: answer.location }),
      tries,
    };
    const tried = attempt === 1 ? '' : ` (attempt ${attempt} of ${o.retries + 1})`;

    if (!passed && retryable(answer) && attempt <= o.retries) {
      const retryAt = new Date(at.getTime() + backoff(attempt));
      const next: WebhookState = { ...state, tries, dueAt: iso(retryAt) };
      return {
        status: 'in_progress',
        reason: `Call ${state.call}, attempt ${attempt} of ${o.retries + 1}: ${describe(answer)}; retrying at ${iso(retryAt)}.`,
        evidence: evidence({}, [...state.calls, record].slice(-MAX_CALLS_SHOWN)),
        state: next,
        nextCheckAt: retryAt,
      };
    }

    const calls = [...state.calls, record].slice(-MAX_CALLS_SHOWN);
    if (!passed) {
      const failed: WebhookState = { ...state, tries: [], calls };
      if (answer.answered) {
        const redirect = answer.location ? ` (a redirect to ${answer.location}; redirects are not followed)` : '';
        return { status: 'fail', reason: `The webhook answered HTTP ${answer.status} to call ${state.call}${tried}${redirect}.`, evidence: evidence({}, calls), state: failed };
      }
      const policy = evaluation.onSourceError;
      return {
        status: policy,
        reason: `The webhook did not answer call ${state.call} in ${attempt} attempt(s) (last: ${answer.error}); the gate's onSourceError policy makes the rule ${policy}.`,
        evidence: { ...evidence({}, calls), sourceErrors: attempt, lastError: answer.error },
        state: failed,
      };
    }

    const passedCalls = state.passedCalls + 1;
    const done: WebhookState = { ...state, call: state.call + 1, tries: [], passedCalls, calls };
    const shown = { ...evidence({}, calls), passedCalls };
    if (o.mode === 'once') return { status: 'pass', reason: `The webhook answered HTTP ${record.status} in ${answer.ms} ms${tried}.`, evidence: shown, state: done };
    // Calls are due at the window's start and every interval after it, up to its end.
    const nextCall = new Date(rule.windowStartsAt.getTime() + state.call * (o.interval ?? 60) * 1000);
    if (nextCall <= rule.windowEndsAt) {
      const due = nextCall > at ? nextCall : at;
      return {
        status: 'in_progress',
        reason: `Call ${state.call} answered HTTP ${record.status}${tried}; next call at ${iso(due)}.`,
        evidence: shown,
        state: { ...done, dueAt: iso(due) },
        nextCheckAt: due,
      };
    }
    if (at >= rule.windowEndsAt)
      return { status: 'pass', reason: `All ${passedCalls} calls answered 2xx from ${iso(rule.windowStartsAt)} to ${iso(rule.windowEndsAt)}.`, evidence: shown, state: done };
    return {
      status: 'in_progress',
      reason: `All ${passedCalls} calls answered 2xx; passing when the window ends at ${iso(rule.windowEndsAt)}.`,
      evidence: shown,
      state: { ...done, allPassed: true, dueAt: iso(rule.windowEndsAt) },
      nextCheckAt: rule.windowEndsAt,
    };
  },
};
