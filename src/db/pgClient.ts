import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger as DrizzleLogger } from 'drizzle-orm/logger';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import pg from 'pg';
import * as schema from './pgSchema.ts';

const migrationsFolder = join(dirname(fileURLToPath(import.meta.url)), '../../drizzle/pg');

/**
 * The key of the session-level advisory lock one Tollgate holds while it migrates a database:
 * instances started together migrate once, the others wait, then find nothing to do. Any
 * constant will do as long as it never changes ("tollgate" in ASCII).
 */
const MIGRATION_LOCK_KEY = '8390043843661231205';

export type PgDb = NodePgDatabase<typeof schema> & { $client: pg.Pool };

/**
 * The parsers that differ from node-postgres's, by type oid (text format). The queries run the
 * SQLite table objects (pgSchema.ts), whose decoders expect what better-sqlite3 gives: numbers
 * for integers (int8 comes as a string otherwise; epoch ms and counts stay far below 2^53) and
 * JSON as text, which they parse themselves.
 */
const STORE_PARSERS: Partial<Record<number, (text: string) => unknown>> = {
  20: Number, // int8: timestamps, buckets, counts, count(*)
  1700: Number, // numeric: sum() of int8
  114: (text) => text, // json
  3802: (text) => text, // jsonb
};

/** The store's parsers in front of another set (node-postgres's by default). */
function storeTypes(fallback: pg.CustomTypesConfig = pg.types): pg.CustomTypesConfig {
  const getTypeParser = (oid: number, format?: string) => ((format ?? 'text') === 'text' && STORE_PARSERS[oid]) || fallback.getTypeParser(oid, format as 'text');
  return { getTypeParser: getTypeParser as pg.CustomTypesConfig['getTypeParser'] };
}

/** The parsers a pool of the store uses (for Pool's `types`); never set globally, other pools may share the process. */
const PG_TYPES = storeTypes();

/**
 * drizzle gives each of its queries parsers of its own (timestamps left as text) that fall back
 * to node-postgres's global ones, not the pool's: this client puts the store's in front of them.
 */
class StoreClient extends pg.Client {
  // biome-ignore lint/suspicious/noExplicitAny: the same arguments as every overload of pg.Client#query
  override query(...args: any[]): any {
    const config = args[0];
    if (config && typeof config === 'object' && config.types && typeof config.submit !== 'function') args[0] = { ...config, types: storeTypes(config.types) };
    return Reflect.apply(super.query, this, args);
  }
}

/** Options for a pg.Pool whose rows read as the SQLite table objects expect. */
export function storePoolOptions(): Pick<pg.PoolConfig, 'types' | 'Client'> {
  return { types: PG_TYPES, Client: StoreClient };
}

/** What a log line needs; the server passes its pino logger. */
interface PgLog {
  error(obj: object, msg: string): void;
}

export interface OpenPgDbOptions {
  /** Called with every SQL statement drizzle runs (tests count them). */
  onQuery?: (sql: string, params: unknown[]) => void;
  /** Connections the pool may open; node-postgres's default (10) when absent. */
  poolSize?: number;
  /** Where a connection's failure outside a query (PostgreSQL restarted, a network cut) is told. */
  log?: PgLog;
  /**
   * As TOLLGATE_DB_SYNCHRONOUS for SQLite. `normal` (the default): a commit returns once
   * PostgreSQL has it in its log buffers (synchronous_commit off): a crash of PostgreSQL or
   * Tollgate loses nothing acknowledged, a power loss may lose the last fraction of a second,
   * never corrupts. `full`: every commit waits for its fsync (a few ms each on common disks).
   */
  synchronous?: 'normal' | 'full';
}

export interface PgStore {
  db: PgDb;
  pool: pg.Pool;
  /** For /readyz: the database answers and every shipped migration is applied. */
  ready(): Promise<{ ok: boolean; detail: string }>;
  close(): Promise<void>;
}

/**
 * Connects to PostgreSQL (DATABASE_URL) and applies pending migrations under an advisory lock,
 * then hands out the pool through drizzle. Queries use the SQLite table objects (src/db/schema.ts)
 * on it: the pool's parsers make their values read back as from SQLite.
 */
export async function openPgDb(url: string, options: OpenPgDbOptions = {}): Promise<PgStore> {
  // A server must not wait forever on a database it cannot reach: it fails to start instead.
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize,
    connectionTimeoutMillis: 10_000,
    // A half-open connection (a network partition) must fail its query, not hold a check forever.
    keepAlive: true,
    query_timeout: 60_000,
    options: options.synchronous === 'full' ? undefined : '-c synchronous_commit=off',
    ...storePoolOptions(),
  });
  // An idle connection dropped by the server (a restart, an admin's terminate) emits 'error' on
  // the pool; unhandled, that would end the process. The pool discards the client and opens a new one when needed.
  pool.on('error', (err) => options.log?.error({ err }, 'a PostgreSQL connection failed while idle; the pool replaces it'));
  try {
    await migrateLocked(pool, options.log);
  } catch (err) {
    await pool.end();
    throw err;
  }
  const logger: DrizzleLogger | undefined = options.onQuery ? { logQuery: (query, params) => options.onQuery!(query, params) } : undefined;
  const db = drizzle(pool, { schema, logger }) as PgDb;
  const expected = expectedPgMigrationCount();
  return { db, pool, ready: async () => checkPgReady(pool, expected), close: () => pool.end() };
}

/** Runs drizzle's migrator on one connection that holds the migration lock for the whole run. */
async function migrateLocked(pool: pg.Pool, log: PgLog | undefined): Promise<void> {
  const client = await pool.connect();
  // A checked-out client is not the pool's to watch: its failures between queries are ours.
  const onError = (err: Error) => log?.error({ err }, 'the PostgreSQL connection migrating the database failed');
  client.on('error', onError);
  let broken: Error | undefined;
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    await migrate(drizzle(client, { schema }), { migrationsFolder });
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
  } catch (err) {
    // The connection is closed rather than returned, which releases the lock whatever step failed.
    broken = err as Error;
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/** Number of migrations shipped with this build. */
export function expectedPgMigrationCount(): number {
  const journal = JSON.parse(readFileSync(join(migrationsFolder, 'meta/_journal.json'), 'utf8')) as { entries: unknown[] };
  return journal.entries.length;
}

/** Where drizzle's PostgreSQL migrator records applied migrations (its default schema and table). */
const MIGRATIONS_TABLE = 'drizzle.__drizzle_migrations';

async function checkPgReady(pool: pg.Pool, expected: number): Promise<{ ok: boolean; detail: string }> {
  try {
    const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from ${MIGRATIONS_TABLE}`);
    const n = rows[0]!.n;
    if (n < expected) return { ok: false, detail: `${n} of ${expected} migrations applied` };
    return { ok: true, detail: `${n} migrations applied` };
  } catch (err) {
    return { ok: false, detail: `database unreachable: ${(err as Error).message}` };
  }
}
