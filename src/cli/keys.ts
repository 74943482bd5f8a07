// `tollgate keys …` and `tollgate migrate`: local administration on the database file, for
// the operator who has the machine (a lost admin key, a CI key before any key exists).
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Config, ConfigError, loadConfig } from '../config.ts';
import { openDb } from '../db/client.ts';
import { createApiKey, createApiKeyInputSchema, listApiKeys, revokeApiKey } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { DomainError, parseInput } from '../domain/errors.ts';
import { createEvents } from '../domain/events.ts';
import { SCOPES, SYSTEM } from '../domain/principal.ts';
import { planWindow } from '../engine/runners.ts';
import { createLogger } from '../log.ts';

function localDeps(db?: string): Deps {
  let config: Config;
  try {
    config = loadConfig(process.env, { TOLLGATE_DB: db });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`tollgate: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  // Run from the wrong directory, the default path would be a new empty database, and a key
  // made there one the server has never heard of. Only an explicit --db may create one.
  if (!db && !existsSync(config.dbPath)) {
    const source = process.env.TOLLGATE_DB ? 'TOLLGATE_DB' : 'the default, relative to this directory';
    console.error(
      `tollgate: no database at ${resolve(config.dbPath)} (${source}); run this where the server keeps its database, or name the file with --db <path> (which creates it if it does not exist)`,
    );
    process.exit(2);
  }
  let database: ReturnType<typeof openDb>;
  try {
    database = openDb(config.dbPath);
  } catch (err) {
    // A directory, a file that is not SQLite, one it may not read: the operator's to fix.
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'string' || !code.startsWith('SQLITE_')) throw err;
    console.error(`tollgate: cannot use ${resolve(config.dbPath)} as the database (${code}: ${(err as Error).message}); name the server's database file with --db <path>`);
    process.exit(2);
  }
  return {
    db: database,
    events: createEvents(),
    log: createLogger('warn'),
    config,
    now: () => new Date(),
    nodeId: config.nodeId,
    baseUrl: () => config.publicUrl ?? `http://localhost:${config.port}`,
    planWindow,
  };
}

async function run(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof DomainError) {
      console.error(`tollgate: ${err.message}`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

/** `gates:read` as the docs write it or `GATES_READ` as GraphQL does: the same scope. */
function asScope(text: string): string {
  const wanted = text.trim().toLowerCase();
  const scope = SCOPES.find((s) => s === wanted || s.replace(':', '_') === wanted);
  if (!scope)
    throw new DomainError(
      'BAD_USER_INPUT',
      `--scope ${text}: scopes must be among ${SCOPES.join(', ')} (or spelled as in GraphQL: ${SCOPES.map((s) => s.replace(':', '_').toUpperCase()).join(', ')})`,
      'scope',
    );
  return scope;
}

export async function keysCreate(flags: { name: string; scope: string[]; env?: string[]; db?: string }): Promise<void> {
  const deps = localDeps(flags.db);
  await run(async () => {
    const input = parseInput(createApiKeyInputSchema, { name: flags.name, scopes: flags.scope.map(asScope), envs: flags.env }, 'key');
    const { key, secret } = await createApiKey(deps, SYSTEM, input);
    console.log(secret);
    console.error(`created API key ${key.id} "${key.name}" (${key.scopes.join(', ')}${key.envs ? `; envs ${key.envs.join(', ')}` : ''}); the secret above is shown once`);
  });
  deps.db.$client.close();
}

export async function keysList(flags: { db?: string }): Promise<void> {
  const deps = localDeps(flags.db);
  for (const k of await listApiKeys(deps, SYSTEM)) {
    console.log([k.id, k.prefix, k.name, k.scopes.join(','), k.envs?.join(',') ?? '*', k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : 'active'].join('\t'));
  }
  deps.db.$client.close();
}

export async function keysRevoke(id: string, flags: { db?: string }): Promise<void> {
  const deps = localDeps(flags.db);
  await run(async () => {
    const key = await revokeApiKey(deps, SYSTEM, id);
    console.error(`revoked API key ${key.id} "${key.name}"`);
  });
  deps.db.$client.close();
}

/** Applies pending migrations and exits (the server does it at start too). */
export function migrate(flags: { db?: string }): void {
  const deps = localDeps(flags.db);
  console.error(`database ${deps.config.dbPath} is up to date`);
  deps.db.$client.close();
}
