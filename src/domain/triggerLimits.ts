// Per-key limits on starting evaluations, checked in the domain so that every entry point
// (GraphQL evaluateGate and rerunEvaluation, REST, the Flagger and Argo hooks) has them, and
// counted from the database so that a restart forgets nothing.
import type { RateLimitConfig } from '../config.ts';
import type { Tx } from '../db/client.ts';
import { hasRunningAtLeast, nthStartSince } from '../db/evaluationQuotas.ts';
import { RateLimitedError } from './errors.ts';
import type { Principal } from './principal.ts';

const MINUTE_MS = 60_000;

/**
 * No time frees a place in progress, only an evaluation finishing does; this is how soon
 * trying again is worth it (a rule checked once ends within seconds, a window in minutes).
 */
const IN_PROGRESS_RETRY_SECONDS = 30;

/**
 * Refuses (RATE_LIMITED) a new evaluation by `actor` past its evaluations running (in
 * progress, or decided with dry-run rules still watching: the engine's work either way) or its
 * evaluations started in the last minute (a sliding window: the oldest of them says when a
 * place frees). Run inside the transaction that creates the evaluation, after its insert: the
 * counts include it.
 */
export async function assertCanStartEvaluation(tx: Tx, limits: Pick<RateLimitConfig, 'inProgress' | 'triggersPerMinute'>, actor: Principal, now: Date): Promise<void> {
  // The new evaluation is already stored: the limit is passed when it makes one more than allowed.
  if (limits.inProgress > 0 && (await hasRunningAtLeast(tx, actor.id, limits.inProgress + 1))) {
    throw new RateLimitedError(
      `API key "${actor.name}" already has ${limits.inProgress} evaluations in progress (or with dry-run rules still watching), its limit: wait for one to finish, or cancel one`,
      IN_PROGRESS_RETRY_SECONDS,
    );
  }
  if (limits.triggersPerMinute > 0) {
    // The oldest of the last `triggersPerMinute` starts before this one, if within the minute, says when a place frees.
    const oldest = await nthStartSince(tx, actor.id, new Date(now.getTime() - MINUTE_MS), limits.triggersPerMinute + 1);
    if (oldest) {
      const retryAfter = Math.max(1, Math.ceil((oldest.getTime() + MINUTE_MS - now.getTime()) / 1000));
      throw new RateLimitedError(
        `API key "${actor.name}" started ${limits.triggersPerMinute} evaluations in the last minute, its limit of ${limits.triggersPerMinute} evaluations per minute`,
        retryAfter,
      );
    }
  }
}
