import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { type ApiKeyRow, getApiKey, hasActiveAdminKey, insertApiKey, listApiKeys as listApiKeyRows, preparedKeyLookup, revokeApiKeyRow } from '../db/apiKeys.ts';
import { insertAudit } from '../db/audit.ts';
import { type Db, transaction } from '../db/client.ts';
import { actorFields } from '../log.ts';
import type { Deps } from './deps.ts';
import { DomainError, notFound, storageFailure, uniqueViolation } from './errors.ts';
import type { Events } from './events.ts';
import { assertUuid, newId } from './ids.ts';
import { hasScope, type Principal, requireScope, SCOPES, type Scope, SYSTEM } from './principal.ts';
import { nullsAsUndefined } from './ruleOptions.ts';
import { audit } from './stamp.ts';

export type { ApiKeyRow };

/** `tgk_` + 32 random bytes: long enough that a fast hash (no salt, no stretching) is safe. */
export function generateSecret(): string {
  return `tgk_${randomBytes(32).toString('base64url')}`;
}

const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

const prefixOf = (secret: string) => secret.slice(0, 10);

export const createApiKeyInputSchema = z.preprocess(
  nullsAsUndefined,
  z
    .object({
      name: z.string().trim().min(1, 'name must not be empty').max(200, 'name is at most 200 characters'),
      scopes: z
        .array(z.enum(SCOPES, { message: `scopes must be among ${SCOPES.join(', ')}` }))
        .min(1, 'scopes must name at least one scope')
        .max(20, 'scopes lists at most 20 values'),
      envs: z
        .array(z.string().trim().min(1, 'envs entries must not be empty'))
        .min(1, 'envs must name at least one environment, or be omitted for all')
        .max(100, 'envs lists at most 100 environments')
        .optional(),
      expiresAt: z.date().optional(),
    })
    .strict(),
);

export type CreateApiKeyInput = z.output<typeof createApiKeyInputSchema>;

export interface CreatedApiKey {
  key: ApiKeyRow;
  secret: string;
}

const requireAdmin = (actor: Principal, action: string) => requireScope(actor, 'admin', action);

export async function createApiKey(deps: Deps, actor: Principal, input: CreateApiKeyInput): Promise<CreatedApiKey> {
  requireAdmin(actor, 'create API keys');
  assertWithinActor(actor, input);
  const created = await insertNewKey(deps, actor, input);
  deps.events.publish('config.changed', null);
  const { key } = created;
  deps.log.info({ keyId: key.id, name: key.name, prefix: key.prefix, scopes: key.scopes, envs: key.envs, expiresAt: key.expiresAt, ...actorFields(actor) }, 'API key created');
  return created;
}

/**
 * No key grants more than its creator holds: scopes it has (admin implies all), environments
 * within its own, and a lifetime that ends no later than its own.
 */
function assertWithinActor(actor: Principal, input: CreateApiKeyInput): void {
  const refuse = (field: string, problem: string) => new DomainError('FORBIDDEN', `${field}: API key "${actor.name}" ${problem}`, field);
  const extra = input.scopes.filter((s) => !hasScope(actor, s));
  if (extra.length > 0) throw refuse('input.scopes', `lacks ${extra.join(', ')} and cannot grant it`);
  if (actor.envs !== null) {
    const limit = `is limited to env ${actor.envs.join(', ')}`;
    if (!input.envs) throw refuse('input.envs', `${limit}: envs must name some of them (a key for every environment is wider)`);
    const outside = input.envs.filter((e) => !actor.envs!.includes(e));
    if (outside.length > 0) throw refuse('input.envs', `${limit} and cannot grant env ${outside.join(', ')}`);
  }
  if (actor.expiresAt) {
    if (!input.expiresAt || input.expiresAt.getTime() > actor.expiresAt.getTime()) {
      throw refuse('input.expiresAt', `expires at ${actor.expiresAt.toISOString()}: expiresAt must be no later`);
    }
  }
}

/** A key is inside an actor's reach when it is limited to environments the actor has. */
const withinReach = (actor: Principal, key: ApiKeyRow): boolean => actor.envs === null || (key.envs?.every((e) => actor.envs!.includes(e)) ?? false);

async function insertNewKey(deps: Deps, actor: Principal, input: CreateApiKeyInput): Promise<CreatedApiKey> {
  if (input.expiresAt && input.expiresAt.getTime() <= deps.now().getTime()) {
    throw new DomainError('BAD_USER_INPUT', 'input.expiresAt: must be in the future', 'input.expiresAt');
  }
  return insertKey(deps.db, actor, deps.now(), {
    name: input.name,
    scopes: [...new Set(input.scopes)],
    envs: input.envs ? [...new Set(input.envs)] : null,
    expiresAt: input.expiresAt ?? null,
    secret: generateSecret(),
  });
}

async function insertKey(
  db: Db,
  actor: Principal,
  now: Date,
  k: { name: string; scopes: Scope[]; envs: string[] | null; expiresAt: Date | null; secret: string },
): Promise<CreatedApiKey> {
  const key = await transaction(db, async (tx) => {
    const row = await insertApiKey(tx, {
      id: newId(),
      name: k.name,
      secretHash: hashSecret(k.secret),
      prefix: prefixOf(k.secret),
      scopes: k.scopes,
      envs: k.envs,
      createdAt: now,
      createdById: actor.id,
      expiresAt: k.expiresAt,
    });
    const { secretHash: _omit, ...safe } = row;
    await insertAudit(tx, [audit(actor, now, 'api_key.created', { type: 'api_key', id: row.id }, null, safe)]);
    return row;
  });
  return { key, secret: k.secret };
}

export async function revokeApiKey(deps: Deps, actor: Principal, id: string): Promise<ApiKeyRow> {
  requireAdmin(actor, 'revoke API keys');
  const now = deps.now();
  const revoked = await transaction(deps.db, async (tx) => {
    const before = await getApiKey(tx, assertUuid(id, 'id'));
    // Keys beyond the actor's environments answer as missing: their existence is not its business.
    if (!before || !withinReach(actor, before)) throw notFound(`API key ${id} does not exist`, 'id');
    if (before.revokedAt) return before;
    const row = await revokeApiKeyRow(tx, before.id, now);
    await insertAudit(tx, [audit(actor, now, 'api_key.revoked', { type: 'api_key', id: row.id }, null, { revokedAt: now })]);
    return row;
  });
  deps.events.publish('config.changed', null);
  deps.events.publish('apiKey.revoked', { id: revoked.id });
  deps.log.info({ keyId: revoked.id, name: revoked.name, prefix: revoked.prefix, ...actorFields(actor) }, 'API key revoked');
  return revoked;
}

export async function listApiKeys(deps: Deps, actor: Principal): Promise<ApiKeyRow[]> {
  requireAdmin(actor, 'list API keys');
  return (await listApiKeyRows(deps.db)).filter((k) => withinReach(actor, k));
}

/**
 * On start: make the configured bootstrap key exist, or, when no admin key exists at all
 * (a first start), create one and return its secret so it can be printed once.
 */
export async function ensureBootstrapKey(db: Db, now: Date, configured: string | undefined): Promise<{ created: boolean; secret?: string }> {
  if (configured) {
    if (await preparedKeyLookup(db).find(hashSecret(configured))) return { created: false };
    try {
      await insertKey(db, SYSTEM, now, { name: 'bootstrap', scopes: ['admin'], envs: null, expiresAt: null, secret: configured });
    } catch (err) {
      // Instances starting together on one PostgreSQL: another one inserted it first.
      if (uniqueViolation(err, { name: 'api_keys_secret_hash_unique', columns: 'api_keys.secret_hash' })) return { created: false };
      throw err;
    }
    return { created: true, secret: configured };
  }
  if (await hasActiveAdminKey(db)) return { created: false };
  const secret = generateSecret();
  await insertKey(db, SYSTEM, now, { name: 'bootstrap', scopes: ['admin'], envs: null, expiresAt: null, secret });
  return { created: true, secret };
}

export type AuthResult = { ok: true; principal: Principal } | { ok: false; reason: string };

/**
 * Turns a presented secret into a Principal. Last use is recorded at most once a minute per
 * key so authentication stays a read on the hot path.
 */
export function createAuthenticator(db: Db, now: () => Date = () => new Date(), events?: Events, options: { cacheMs?: number } = {}) {
  const cacheMs = options.cacheMs ?? AUTH_CACHE_MS;
  const lookup = preparedKeyLookup(db);
  const checkOnce = mergingConcurrent(check, events);
  const lastTouched = new Map<string, number>();
  // Recent answers, so a busy client costs a map lookup instead of a hash and a query. A key
  // revoked or changed in this process is forgotten at once; in other processes within AUTH_CACHE_MS.
  const recent = new Map<string, { result: AuthResult; until: number }>();
  // Bumped by every change: an answer read before a change (a revocation) arrived is not kept.
  let generation = 0;
  events?.on('config.changed', () => {
    generation++;
    recent.clear();
  });
  return async (secret: string | null | undefined): Promise<AuthResult> => {
    if (!secret) return { ok: false, reason: 'missing API key: send "Authorization: Bearer <key>"' };
    const t0 = now().getTime();
    const hit = recent.get(secret);
    if (hit && hit.until > t0) return hit.result;
    const asked = generation;
    const result = await checkOnce(secret);
    if (recent.size > 10_000) recent.clear();
    if (result.ok && cacheMs > 0 && generation === asked) recent.set(secret, { result, until: Math.min(t0 + cacheMs, expiryOf(result)) });
    return result;
  };

  function expiryOf(result: AuthResult): number {
    return result.ok && result.principal.expiresAt ? result.principal.expiresAt.getTime() : Number.POSITIVE_INFINITY;
  }

  async function check(secret: string): Promise<AuthResult> {
    const row = await lookup.find(hashSecret(secret));
    if (!row) return { ok: false, reason: 'invalid API key' };
    const t = now();
    if (row.revokedAt) return { ok: false, reason: `API key "${row.name}" was revoked` };
    if (row.expiresAt && row.expiresAt.getTime() <= t.getTime()) return { ok: false, reason: `API key "${row.name}" has expired` };
    if (t.getTime() - (lastTouched.get(row.id) ?? 0) > 60_000) {
      lastTouched.set(row.id, t.getTime());
      // Last use is a hint: storage that cannot be written must not refuse reads.
      try {
        await lookup.touch(row.id, t);
      } catch (err) {
        if (!storageFailure(err)) throw err;
      }
    }
    return {
      ok: true,
      principal: { id: row.id, name: row.name, scopes: new Set(row.scopes as Scope[]), envs: row.envs ?? null, expiresAt: row.expiresAt },
    };
  }
}

/**
 * `check`, shared by the calls for one secret made while it runs: a burst of sockets or requests
 * of one key (a deploy's jobs, a dashboard reconnecting) costs one lookup, where no answer is
 * cached (PostgreSQL). Forgotten once settled; a configuration change (a revocation) makes the
 * calls after it start a lookup of their own.
 */
function mergingConcurrent(check: (secret: string) => Promise<AuthResult>, events: Events | undefined): (secret: string) => Promise<AuthResult> {
  const inFlight = new Map<string, Promise<AuthResult>>();
  events?.on('config.changed', () => inFlight.clear());
  return (secret) => {
    let pending = inFlight.get(secret);
    if (!pending) {
      const started: Promise<AuthResult> = check(secret).finally(() => {
        if (inFlight.get(secret) === started) inFlight.delete(secret);
      });
      inFlight.set(secret, (pending = started));
    }
    return pending;
  };
}

/**
 * How long a positive authentication is reused without looking at the database: a key revoked
 * by another process (`tollgate keys revoke`) is refused within this, on every transport.
 */
const AUTH_CACHE_MS = 1_000;

/** `Bearer <key>`, a bare key, or null. */
export function secretFromAuthorization(header: string | null | undefined): string | null {
  if (!header) return null;
  const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1]! : header.trim() || null;
}
