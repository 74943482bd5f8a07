import { AsyncLocalStorage } from 'node:async_hooks';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { is, type SQL, sql } from 'drizzle-orm';
import { type BetterSQLite3Database, drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import type { Logger as DrizzleLogger } from 'drizzle-orm/logger';
import { PgTransaction } from 'drizzle-orm/pg-core';
import { dialectOf } from './dialect.ts';
import * as schema from './schema.ts';
import { acquireServerLock, type ServerLock, StorageStartError } from './serverLock.ts';

export { StorageStartError } from './serverLock.ts';

const migrationsFolder = join(dirname(fileURLToPath(import.meta.url)), '../../drizzle/sqlite');

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

/** A drizzle handle or a transaction on it: repository functions work inside either. */
export type Tx = Pick<Db, 'select' | 'insert' | 'update' | 'delete'>;

const PG_ATTEMPTS = 8;

/** Why PostgreSQL refused a transaction for a concurrent one, if it did: run again, it sees what committed. */
function retryable(err: unknown): 'conflict' | 'unique' | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.code === '40001' || e.code === '40P01') return 'conflict';
    if (e.code === '23505') return 'unique';
  }
  return undefined;
}

/** The transaction each connection (SQLite's one, PostgreSQL's pool) runs in the current async context. */
const openTransactions = new AsyncLocalStorage<ReadonlyMap<object, { tx: Tx; open: boolean }>>();
/** Per SQLite connection: the end of the transaction queue (one connection, so one transaction at a time). */
const queues = new WeakMap<object, Promise<void>>();
let savepoints = 0;

/**
 * Runs `work` in one transaction: committed when it resolves, rolled back when it throws.
 * Called inside another transaction on the same store (given its handle, or the root handle
 * from code running inside it), `work` joins it as a savepoint: its own failure undoes only its
 * part, as nested better-sqlite3 transactions did.
 *
 * SQLite has one connection shared by every request, so its transactions queue: `work` starts
 * when the previous one has ended, and must await only the database (a network call inside
 * would hold every writer). A statement outside any transaction (a read, a key's last use, a
 * lease renewal) runs on that connection too, so while one is open it sees that transaction's
 * writes, and a single write becomes part of it.
 */
export async function transaction<T>(db: Tx, work: (tx: Tx) => Promise<T>, options: { readCommitted?: boolean } = {}): Promise<T> {
  const client = (db as Db).$client as object;
  // Timers and callbacks started inside a transaction keep its context after it ended: only an open one is joined.
  const found = openTransactions.getStore()?.get(client);
  const outer = found?.open ? found.tx : undefined;
  const inside = async (tx: Tx) => {
    const entry = { tx, open: true };
    try {
      return await openTransactions.run(new Map(openTransactions.getStore()).set(client, entry), () => work(tx));
    } finally {
      entry.open = false;
    }
  };
  if (dialectOf(db) === 'pg') {
    type PgHandle = { transaction<R>(run: (tx: Tx) => Promise<R>, config?: { isolationLevel: 'repeatable read' | 'read committed' }): Promise<R> };
    // Inside a transaction (given its handle, which has no $client, or found by the root's): a savepoint, not retried alone.
    if (outer || is(db, PgTransaction)) return ((outer ?? db) as unknown as PgHandle).transaction((tx) => inside(tx));
    // Repeatable read: a transaction sees one snapshot, and one that updates a row another
    // committed meanwhile fails and runs again on what committed (a cancel and the engine's
    // verdict on one evaluation, two batches on one APM row). Every read-modify-write here
    // writes the row it read, so that is enough; serializable also failed transactions over
    // mere reads of neighbouring index pages, and under load most checks were never recorded.
    for (let attempt = 1; ; attempt++) {
      try {
        // Read committed for a transaction that orders itself with others through serializeOn():
        // each statement after the lock sees what the previous holder committed (a
        // repeatable-read snapshot would date from before the lock).
        const isolationLevel = options.readCommitted ? 'read committed' : 'repeatable read';
        return await (db as unknown as PgHandle).transaction((tx) => inside(tx), { isolationLevel });
      } catch (err) {
        const reason = retryable(err);
        // A unique key taken meanwhile is tried once more: a body that looks before it inserts
        // (the APM store's rows) then finds the row; one that does not fails as it would alone.
        if (!reason || attempt >= (reason === 'unique' ? 2 : PG_ATTEMPTS)) throw err;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * attempt));
      }
    }
  }
  const sqlite = (db as Db).$client;
  if (outer) {
    const name = `sp${++savepoints}`;
    sqlite.exec(`SAVEPOINT ${name}`);
    try {
      const result = await work(outer);
      sqlite.exec(`RELEASE ${name}`);
      return result;
    } catch (err) {
      if (sqlite.inTransaction) sqlite.exec(`ROLLBACK TO ${name}; RELEASE ${name}`);
      throw err;
    }
  }
  const previous = queues.get(sqlite) ?? Promise.resolve();
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  queues.set(sqlite, done);
  await previous;
  try {
    sqlite.exec('BEGIN IMMEDIATE');
    try {
      const result = await inside(db);
      sqlite.exec('COMMIT');
      return result;
    } catch (err) {
      if (sqlite.inTransaction) sqlite.exec('ROLLBACK');
      throw err;
    }
  } finally {
    if (queues.get(sqlite) === done) queues.delete(sqlite);
    release();
  }
}

/**
 * Inside a transaction: waits until every other transaction that called this with `key` has
 * ended, and holds its place until this one ends. On PostgreSQL a transaction-scoped advisory
 * lock (open it with `readCommitted`, so what the others committed is seen after the wait);
 * SQLite's transactions already run one at a time. Take it as late as possible: the others wait
 * for everything after it.
 */
export async function serializeOn(tx: Tx, key: string): Promise<void> {
  if (dialectOf(tx) !== 'pg') return;
  await (tx as unknown as { execute(q: SQL): Promise<unknown> }).execute(sql`select pg_advisory_xact_lock(hashtext(${key}))`);
}

/** Keyset page over UUIDv7 ids: `after`/`before` are ids, `inverted` reads backwards. */
export interface KeysetPage {
  after?: string;
  before?: string;
  limit: number;
  inverted: boolean;
}

export interface OpenDbOptions {
  /** Called with every SQL statement drizzle runs (tests count them). */
  onQuery?: (sql: string, params: unknown[]) => void;
  /**
   * SQLite's `synchronous` in WAL mode. `normal` (the default): a commit is in the operating
   * system's hands before it returns, so an acknowledged write survives a crash or kill -9 of
   * the process; a power loss or kernel crash may lose the writes since the last checkpoint,
   * never corrupt the file. `full`: an fsync per commit also survives power loss, at ~2 ms of
   * blocked event loop per write on a common disk (docs/architecture.md has the figures).
   */
  synchronous?: 'normal' | 'full';
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
  sqlite.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const logger: DrizzleLogger | undefined = options.onQuery ? { logQuery: (query, params) => options.onQuery!(query, params) } : undefined;
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
function checkReady(db: Db, expected: number): { ok: boolean; detail: string } {
  try {
    const row = db.$client.prepare('select count(*) as n from __drizzle_migrations').get() as { n: number };
    if (row.n < expected) return { ok: false, detail: `${row.n} of ${expected} migrations applied` };
    return { ok: true, detail: `${row.n} migrations applied` };
  } catch (err) {
    return { ok: false, detail: `database unreachable: ${(err as Error).message}` };
  }
}

/** What a log line needs; the server passes its pino logger. */
interface StorageLog {
  error(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** The database a server runs on: held for this process alone, and watched while it runs. */
export interface ServerStorage {
  db: Db;
  /** For /readyz: migrations applied, files in place and writable, and a write that succeeds. */
  ready(): { ok: boolean; detail: string };
  /** Closes the database, then releases the file to the next server. */
  close(): void;
}

/**
 * Opens the database for a server: refuses (StorageStartError, `serve` exits 2) a file or
 * directory it cannot write and a file another server holds, then watches the files under
 * the running server (see watchStorage).
 */
export function openServerDb(path: string, options: OpenDbOptions & { log: StorageLog; expectedMigrations: number }): ServerStorage {
  if (path === ':memory:') {
    const db = openDb(path, options);
    return { db, ready: () => checkReady(db, options.expectedMigrations), close: () => db.$client.close() };
  }
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (err) {
    throw new StorageStartError(
      `cannot create the directory ${dirname(path)} for the database (${(err as NodeJS.ErrnoException).code}): create it, or use another file (--db or TOLLGATE_DB)`,
    );
  }
  const unwritable = writeProblem(path);
  if (unwritable) throw new StorageStartError(`${unwritable}: Tollgate must write it. Fix the permissions, or use another file (--db or TOLLGATE_DB).`);
  const lock = acquireServerLock(path);
  let db: Db | undefined;
  try {
    db = openDb(path, options);
    // Permissions say nothing about a read-only mount, or to root: a write does.
    const failed = probeWrite(db);
    if (failed) throw new StorageStartError(`the database file ${path} cannot be written (${failed})`);
  } catch (err) {
    if (db?.$client.open) db.$client.close();
    lock.release();
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('SQLITE_')) throw new StorageStartError(`cannot use the database file ${path} (${code}: ${(err as Error).message})`);
    throw err;
  }
  const watch = watchStorage(db, path, options.log, lock);
  return {
    db,
    ready() {
      const migrations = checkReady(db, options.expectedMigrations);
      if (!migrations.ok) return migrations;
      const storage = watch.status();
      return { ok: storage.ok, detail: `${migrations.detail}; ${storage.detail}` };
    },
    close() {
      watch.stop();
      if (db.$client.open) db.$client.close();
      lock.release();
    },
  };
}

/** Why Tollgate could not write the database's directory or files, naming the path; undefined if it can. */
function writeProblem(path: string): string | undefined {
  const dir = dirname(path);
  try {
    // SQLite creates and removes the -wal and -shm files beside the database.
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    return `the directory ${dir} holding the database is not writable (${(err as NodeJS.ErrnoException).code})`;
  }
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      if (existsSync(file)) accessSync(file, constants.R_OK | constants.W_OK);
    } catch (err) {
      return `the database file ${file} is read-only (${(err as NodeJS.ErrnoException).code})`;
    }
  }
  return undefined;
}

/** Rewrites the header's user_version with its own value: the cheapest real write. The failure, or undefined. */
function probeWrite(db: Db): string | undefined {
  try {
    const version = Number(db.$client.pragma('user_version', { simple: true }));
    db.$client.pragma(`user_version = ${version}`);
    return undefined;
  } catch (err) {
    return `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`;
  }
}

/** Identity of a file (device and inode), or null when it is gone. */
function identity(file: string): string | null {
  try {
    const s = statSync(file);
    return `${s.dev}:${s.ino}`;
  } catch {
    return null;
  }
}

/**
 * Watches the files under a running server, every second and on every /readyz:
 * - made read-only: writes are refused (`query_only`, so every transport answers UNAVAILABLE)
 *   until the file is writable again;
 * - the -wal or -shm deleted or replaced: the connection would go on writing to a file no
 *   restart reads, losing every write it acknowledges. Everything the log holds is copied into
 *   the database file at once (a checkpoint through the descriptor still open), then writes
 *   are refused until a restart, which finds every acknowledged write in place;
 * - the database file deleted or replaced: writes are refused until a restart.
 * /readyz is 503 while any of these holds, or while a probe write fails (disk full, I/O error).
 */
function watchStorage(db: Db, path: string, log: StorageLog, lock: ServerLock, intervalMs = 1000) {
  const companions = [`${path}-wal`, `${path}-shm`];
  const dbIdentity = identity(path);
  const companionIdentities = companions.map(identity);
  let broken: string | undefined;
  let readOnly: string | undefined;
  let probe: { at: number; failure?: string } | undefined;

  const setQueryOnly = (on: boolean) => {
    try {
      db.$client.pragma(`query_only = ${on ? 'ON' : 'OFF'}`);
    } catch (err) {
      log.error({ err }, 'could not switch the database to read-only');
    }
  };

  const breakDown = (reason: string, saveLog: boolean) => {
    let saved = '';
    if (saveLog) {
      try {
        const [result] = db.$client.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>;
        saved = result?.busy
          ? '; another connection kept part of the log from being copied into the database file'
          : '; every write acknowledged until now was copied into the database file';
      } catch (err) {
        saved = `; copying the log into the database file failed (${(err as Error).message})`;
      }
    }
    setQueryOnly(true);
    broken = `${reason}${saved}. Writes are refused: restart Tollgate`;
    log.error({ db: path }, broken);
  };

  const look = () => {
    if (broken || !db.$client.open) return;
    const now = identity(path);
    if (now !== dbIdentity) return breakDown(`the database file ${path} was ${now ? 'replaced' : 'deleted'} under the running server`, false);
    // A second server could now take a new lock and write the same file beside this one.
    if (!lock.intact()) return breakDown(`the lock file ${lock.path} was deleted or replaced under the running server, so another server may open this database`, true);
    for (const [i, file] of companions.entries()) {
      const was = companionIdentities[i];
      if (was && identity(file) !== was) return breakDown(`${file} was deleted or replaced under the running server`, true);
    }
    const problem = writeProblem(path);
    if (problem === readOnly) return;
    readOnly = problem;
    setQueryOnly(problem !== undefined);
    if (problem) log.error({ db: path }, `${problem}: writes are refused until it is writable again`);
    else log.info({ db: path }, 'the database is writable again: writes resume');
  };

  const timer = setInterval(() => {
    try {
      look();
    } catch (err) {
      log.error({ err }, 'could not look at the database files');
    }
  }, intervalMs);
  timer.unref();

  return {
    status(): { ok: boolean; detail: string } {
      look();
      if (broken) return { ok: false, detail: broken };
      if (readOnly) return { ok: false, detail: `${readOnly}: writes are refused until it is writable again` };
      // At most one probe write a second, however often /readyz is asked.
      const at = Date.now();
      if (!probe || at - probe.at >= 1000) probe = { at, failure: probeWrite(db) };
      if (probe.failure) return { ok: false, detail: `the database file ${path} cannot be written (${probe.failure})` };
      return { ok: true, detail: 'storage writable' };
    },
    stop: () => clearInterval(timer),
  };
}
