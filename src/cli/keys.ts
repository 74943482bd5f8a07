// `tollgate keys …` and `tollgate migrate`: local administration on the server's database (the
// SQLite file, or PostgreSQL with DATABASE_URL), for the operator who has access to it (a lost
// admin key, a CI key before any key exists).
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Config, ConfigError, loadConfig } from '../config.ts';
import { openDb } from '../db/client.ts';
import { StorageStartError } from '../db/serverLock.ts';
import { openStore, type Store } from '../db/store.ts';
import { createApiKey, createApiKeyInputSchema, listApiKeys, revokeApiKey } from '../domain/apiKeys.ts';
import type { Deps } from '../domain/deps.ts';
import { DomainError, parseInput } from '../domain/errors.ts';
import { createEvents } from '../domain/events.ts';
import { SCOPES, SYSTEM } from '../domain/principal.ts';
import { planWindow } from '../engine/runners.ts';
import { createLogger, withoutPassword } from '../log.ts';

/** What a command works on: the server's store, and how to let it go. */
interface Local {
  deps: Deps;
  /** The store as an operator would name it (a file, or PostgreSQL's host and database). */
  where: string;
  close(): Promise<void>;
}

/**
 * The store the server uses: PostgreSQL when DATABASE_URL is postgres://… (opened as the server
 * opens it, migrations applied under its advisory lock), else the SQLite file, opened without
 * the server lock: the running server holds it, and a key made here is one it must see.
 */
async function openLocal(db?: string): Promise<Local> {
  let config: Config;
  try {
    config = loadConfig(process.env, { TOLLGATE_DB: db });
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const deps = (database: Deps['db']): Deps => ({
    db: database,
    events: createEvents(),
    log: createLogger('warn'),
    config,
    now: () => new Date(),
    nodeId: config.nodeId,
    baseUrl: () => config.publicUrl ?? `http://localhost:${config.port}`,
    planWindow,
  });
  if (config.postgresUrl) {
    // Instances on PostgreSQL ask it for the key of every request: a key made or revoked here
    // counts on every one at once (their open streams of a revoked key close within 500 ms).
    if (db) fail(`--db names a SQLite file, but DATABASE_URL points at PostgreSQL (${withoutPassword(config.postgresUrl)}): unset one of them`);
    const log = createLogger('warn');
    let store: Store;
    try {
      store = await openStore({ postgresUrl: config.postgresUrl, dbPath: config.dbPath }, { log });
    } catch (err) {
      if (err instanceof StorageStartError) fail(err.message);
      throw err;
    }
    return { deps: deps(store.db), where: withoutPassword(config.postgresUrl), close: () => store.close() };
  }
  // Run from the wrong directory, the default path would be a new empty database, and a key
  // made there one the server has never heard of. Only an explicit --db may create one.
  if (!db && !existsSync(config.dbPath)) {
    const source = process.env.TOLLGATE_DB ? 'TOLLGATE_DB' : 'the default, relative to this directory';
    fail(
      `no database at ${resolve(config.dbPath)} (${source}); run this where the server keeps its database, or name the file with --db <path> (which creates it if it does not exist), or set DATABASE_URL=postgres://… for PostgreSQL`,
    );
  }
  let database: ReturnType<typeof openDb>;
  try {
    database = openDb(config.dbPath);
  } catch (err) {
    // A directory, a file that is not SQLite, one it may not read: the operator's to fix.
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'string' || !code.startsWith('SQLITE_')) throw err;
    fail(`cannot use ${resolve(config.dbPath)} as the database (${code}: ${(err as Error).message}); name the server's database file with --db <path>`);
  }
  return {
    deps: deps(database),
    where: config.dbPath,
    close: async () => {
      database.$client.close();
    },
  };
}

/** A mistake of the operator's: said, and the process exits 2. */
function fail(message: string): never {
  console.error(`tollgate: ${message}`);
  process.exit(2);
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
  const local = await openLocal(flags.db);
  try {
    await run(async () => {
      const input = parseInput(createApiKeyInputSchema, { name: flags.name, scopes: flags.scope.map(asScope), envs: flags.env }, 'key');
      const { key, secret } = await createApiKey(local.deps, SYSTEM, input);
      console.log(secret);
      console.error(`created API key ${key.id} "${key.name}" (${key.scopes.join(', ')}${key.envs ? `; envs ${key.envs.join(', ')}` : ''}); the secret above is shown once`);
    });
  } finally {
    await local.close();
  }
}

export async function keysList(flags: { db?: string }): Promise<void> {
  const local = await openLocal(flags.db);
  try {
    for (const k of await listApiKeys(local.deps, SYSTEM)) {
      console.log([k.id, k.prefix, k.name, k.scopes.join(','), k.envs?.join(',') ?? '*', k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : 'active'].join('\t'));
    }
  } finally {
    await local.close();
  }
}

export async function keysRevoke(id: string, flags: { db?: string }): Promise<void> {
  const local = await openLocal(flags.db);
  try {
    await run(async () => {
      const key = await revokeApiKey(local.deps, SYSTEM, id);
      console.error(`revoked API key ${key.id} "${key.name}"`);
    });
  } finally {
    await local.close();
  }
}

/** Applies pending migrations and exits (the server does it at start too). */
export async function migrate(flags: { db?: string }): Promise<void> {
  const local = await openLocal(flags.db);
  console.error(`database ${local.where} is up to date`);
  await local.close();
}
