import type { Db, OpenDbOptions } from './client.ts';
import { expectedMigrationCount, openServerDb } from './client.ts';
import { openPgDb } from './pgClient.ts';
import { StorageStartError } from './serverLock.ts';

/** What a log line needs; the server passes its pino logger. */
interface StoreLog {
  error(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** The database a server runs on, whichever it is: the layers above see only `db`. */
export interface Store {
  db: Db;
  dialect: 'sqlite' | 'pg';
  /** For /readyz: migrations applied and the database writable (SQLite) or answering (PostgreSQL). */
  ready(): Promise<{ ok: boolean; detail: string }>;
  close(): Promise<void>;
}

/**
 * PostgreSQL when `postgresUrl` is given (several instances share it), else the SQLite file,
 * held for this process alone. Migrations are applied before it returns.
 */
export async function openStore(where: { postgresUrl?: string; dbPath: string }, options: Pick<OpenDbOptions, 'onQuery' | 'synchronous'> & { log: StoreLog }): Promise<Store> {
  if (where.postgresUrl) {
    let pg: Awaited<ReturnType<typeof openPgDb>>;
    try {
      pg = await openPgDb(where.postgresUrl, { onQuery: options.onQuery, log: options.log, synchronous: options.synchronous });
    } catch (err) {
      const e = err as { code?: string; message: string };
      throw new StorageStartError(`DATABASE_URL: cannot use PostgreSQL at ${serverOf(where.postgresUrl)} (${e.code ? `${e.code}: ` : ''}${e.message})`);
    }
    // The repository code is written against the SQLite handle's API, which drizzle's PostgreSQL one shares (src/db/dialect.ts).
    return { db: pg.db as unknown as Db, dialect: 'pg', ready: pg.ready, close: pg.close };
  }
  const sqlite = openServerDb(where.dbPath, { ...options, expectedMigrations: expectedMigrationCount() });
  return { db: sqlite.db, dialect: 'sqlite', ready: async () => sqlite.ready(), close: async () => sqlite.close() };
}

/** Host, port and database of a PostgreSQL URL: what an error may name (never the password). */
function serverOf(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return 'the configured URL (it does not parse)';
  }
}
