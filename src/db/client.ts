import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { type BetterSQLite3Database, drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import type { Logger as DrizzleLogger } from 'drizzle-orm/logger';
import * as schema from './schema.ts';

export const migrationsFolder = join(dirname(fileURLToPath(import.meta.url)), '../../drizzle/sqlite');

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

export interface OpenDbOptions {
  /** Called with every SQL statement drizzle runs (tests count them). */
  onQuery?: (sql: string, params: unknown[]) => void;
}

/**
 * Opens the SQLite file with the settings a server needs: WAL so readers never block the
 * writer, a busy timeout so a second process waits instead of failing, foreign keys on
 * (SQLite leaves them off by default), then applies pending migrations.
 */
export function openDb(path: string, options: OpenDbOptions = {}): Db {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Database(path);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const logger: DrizzleLogger | undefined = options.onQuery
    ? { logQuery: (query, params) => options.onQuery!(query, params) }
    : undefined;
  const db = drizzle(sqlite, { schema, logger }) as Db;
  migrate(db, { migrationsFolder });
  return db;
}

/** Number of migrations shipped with this build. */
export function expectedMigrationCount(): number {
  const journal = JSON.parse(readFileSync(join(migrationsFolder, 'meta/_journal.json'), 'utf8')) as {
    entries: unknown[];
  };
  return journal.entries.length;
}

/** For /readyz: the database answers and every shipped migration is applied. */
export function checkReady(db: Db, expected: number): { ok: boolean; detail: string } {
  try {
    const row = db.$client.prepare('select count(*) as n from __drizzle_migrations').get() as { n: number };
    if (row.n < expected) return { ok: false, detail: `${row.n} of ${expected} migrations applied` };
    return { ok: true, detail: `${row.n} migrations applied` };
  } catch (err) {
    return { ok: false, detail: `database unreachable: ${(err as Error).message}` };
  }
}
