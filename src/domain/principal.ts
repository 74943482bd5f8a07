import { forbidden } from './errors.ts';

export const SCOPES = ['gates:read', 'gates:write', 'evaluations:write', 'evaluations:override', 'monitors:write', 'ingest', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who is calling: an API key with its scopes and, optionally, the environments it may touch. */
export interface Principal {
  id: string;
  name: string;
  scopes: ReadonlySet<Scope>;
  /** null: every environment. */
  envs: readonly string[] | null;
  /** When the key stops being valid; null or absent: never (revocation aside). */
  expiresAt?: Date | null;
}

/** The actor recorded for changes made by Tollgate itself (bootstrap, migrations). */
export const SYSTEM: Principal = { id: 'system', name: 'tollgate', scopes: new Set(['admin']), envs: null };

/** `admin` grants everything, and a write scope grants the matching read. */
export function hasScope(p: Principal, scope: Scope): boolean {
  if (p.scopes.has('admin') || p.scopes.has(scope)) return true;
  return scope === 'gates:read' && p.scopes.has('gates:write');
}

export function canSeeEnv(p: Principal, env: string): boolean {
  return p.envs === null || p.envs.includes(env);
}

export function assertEnvAllowed(p: Principal, env: string): void {
  if (!canSeeEnv(p, env)) {
    throw forbidden(`API key "${p.name}" is limited to env ${p.envs!.join(', ')} and cannot act on env ${env}`);
  }
}

/** Refuses unless the key has one of the scopes; the message names them and the action. */
export function requireScope(actor: Principal, scopes: Scope | readonly Scope[], action: string): void {
  const any = typeof scopes === 'string' ? [scopes] : scopes;
  if (!any.some((s) => hasScope(actor, s))) {
    throw forbidden(`API key "${actor.name}" lacks the ${any.join(' or ')} scope needed to ${action}`);
  }
}
