// `tollgate migrate --from sqlite:<file> --to postgres://…`: moves a SQLite store to PostgreSQL.
// Rows are read and written through the same table objects (src/db/schema.ts): drizzle renders
// them for PostgreSQL and their column codecs apply on both sides, so nothing here converts a
// column by hand.

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import Database from 'better-sqlite3';
import { getTableName, gt, is, sql } from 'drizzle-orm';
import { drizzle as pgDrizzle } from 'drizzle-orm/node-postgres';
import type { PgTable } from 'drizzle-orm/pg-core';
import { getTableConfig, SQLiteTable } from 'drizzle-orm/sqlite-core';
import { expectedMigrationCount, openDb } from '../db/client.ts';
import { openPgDb, type PgStore } from '../db/pgClient.ts';
import * as schema from '../db/schema.ts';
import { acquireServerLock, type ServerLock, StorageStartError } from '../db/serverLock.ts';
import { withoutPassword } from '../log.ts';

/** Rows per multi-row insert, unless the table's columns would pass PostgreSQL's bind limit. */
const BATCH_ROWS = 500;
/** PostgreSQL's limit on the parameters of one statement. */
const MAX_BIND_PARAMETERS = 65_535;

/** A reason to stop before copying anything: printed on one line, exit 2. */
class Refusal extends Error {}

/**
 * Every table of the SQLite schema, each after the tables its foreign keys point to, so rows
 * can be inserted in this order. Derived from the schema module: a new table is copied too.
 */
export function tablesInCopyOrder(): SQLiteTable[] {
  const tables = (Object.values(schema) as unknown[]).filter((value): value is SQLiteTable => is(value, SQLiteTable));
  const ordered: SQLiteTable[] = [];
  const visit = (table: SQLiteTable, path: SQLiteTable[]) => {
    if (ordered.includes(table)) return;
    if (path.includes(table)) throw new Error(`foreign keys form a cycle through ${getTableName(table)}`);
    for (const fk of getTableConfig(table).foreignKeys) {
      const parent = fk.reference().foreignTable;
      if (parent !== table) visit(parent, [...path, table]);
    }
    ordered.push(table);
  };
  for (const table of tables) visit(table, []);
  return ordered;
}

/** Rows per insert for this table: at most BATCH_ROWS, and within the bind limit. */
export function batchRows(table: SQLiteTable): number {
  const columns = getTableConfig(table).columns.length;
  return Math.max(1, Math.min(BATCH_ROWS, Math.floor(MAX_BIND_PARAMETERS / columns)));
}

function sourcePath(from: string): string {
  if (!from.startsWith('sqlite:')) throw new Refusal(`--from ${from}: name the SQLite file as sqlite:<path>`);
  const path = from.slice('sqlite:'.length).replace(/^\/\//, '');
  if (!path) throw new Refusal('--from sqlite:<path>: the path is empty');
  return path;
}

/** Refuses a file that is not a Tollgate database of a version this build knows. */
function checkTollgateDatabase(path: string): void {
  if (!existsSync(path)) throw new Refusal(`no database at ${resolve(path)} (--from)`);
  let file: Database.Database | undefined;
  try {
    file = new Database(path, { readonly: true, fileMustExist: true });
    const has = (name: string) => file!.prepare("select 1 from sqlite_master where type = 'table' and name = ?").get(name) !== undefined;
    if (!has('__drizzle_migrations') || !has('gates')) throw new Refusal(`${resolve(path)} is not a Tollgate database (--from)`);
    const applied = (file.prepare('select count(*) as n from __drizzle_migrations').get() as { n: number }).n;
    if (applied > expectedMigrationCount())
      throw new Refusal(`${resolve(path)} was written by a newer Tollgate (${applied} migrations, this one knows ${expectedMigrationCount()}): migrate with that version`);
  } catch (err) {
    if (err instanceof Refusal) throw err;
    throw new Refusal(`cannot read ${resolve(path)} as a Tollgate database (${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message})`);
  } finally {
    file?.close();
  }
}

function lockSource(path: string): ServerLock {
  try {
    return acquireServerLock(path);
  } catch (err) {
    if (!(err instanceof StorageStartError)) throw err;
    if (err.message.startsWith('another Tollgate server'))
      throw new Refusal(
        `a Tollgate server is using ${resolve(path)}: stop the server first (writes it made after the copy would be lost). ${err.message.replace(/ Stop it first.*$/, '')}`,
      );
    throw new Refusal(err.message);
  }
}

/**
 * What a row must say on the new store. An unfinished evaluation's lease (and an outbox row's
 * delivery claim) belonged to a process of the old store: they are cleared so that the first
 * instance on the new store takes the work over at once instead of after the lease.
 */
function forNewStore(table: SQLiteTable, row: Record<string, unknown>): Record<string, unknown> {
  if (table === schema.evaluations && row.finishedAt === null) return { ...row, leaseOwner: null, leaseExpiresAt: new Date(0) };
  if (table === schema.notificationOutbox && row.status === 'delivering') return { ...row, claimedBy: null, claimExpiresAt: new Date(0) };
  // Its process was stopped (the copy refuses a file a server holds): the first instance fails it.
  if (table === schema.backtests && row.status === 'running') return { ...row, leaseExpiresAt: new Date(0) };
  return row;
}

interface CopyResult {
  counts: Array<{ table: string; rows: number }>;
  ms: number;
}

/**
 * Copies every table of the SQLite file into the PostgreSQL database (migrated first), in one
 * PostgreSQL transaction read from one SQLite snapshot. Refuses a file a server holds and a
 * target that holds anything.
 */
async function copyStore(from: string, to: string): Promise<CopyResult> {
  const started = performance.now();
  const path = sourcePath(from);
  if (!/^postgres(ql)?:\/\//.test(to)) throw new Refusal(`--to ${withoutPassword(to)}: name the PostgreSQL database as postgres://…`);
  checkTollgateDatabase(path);
  // Held for the whole copy: no server may start writing the file under it.
  const lock = lockSource(path);
  let source: ReturnType<typeof openDb> | undefined;
  let target: PgStore | undefined;
  try {
    // Pending migrations of the source are applied first, as the server would at start.
    source = openDb(path);
    try {
      target = await openPgDb(to);
    } catch (err) {
      throw new Refusal(`cannot use the PostgreSQL database ${withoutPassword(to)} (--to): ${(err as Error).message}`);
    }
    const tables = tablesInCopyOrder();
    const sqlite = source;
    const counts: CopyResult['counts'] = [];
    // One snapshot of the file: every table read as it stood at the first read.
    sqlite.$client.exec('BEGIN');
    try {
      await pgDrizzle(target.pool).transaction(async (tx) => {
        for (const table of tables) {
          const held = await tx.execute(sql`select 1 from ${table} limit 1`);
          if (held.rows.length > 0)
            throw new Refusal(
              `the PostgreSQL database ${withoutPassword(to)} already holds data (table ${getTableName(table)}): migrate only into an empty database, before any Tollgate has run on it`,
            );
        }
        for (const table of tables) {
          const batch = batchRows(table);
          let rows = 0;
          // Pages by rowid (every table has one), so each page costs its own rows only.
          let after = -1;
          for (;;) {
            const page = sqlite.select({ row: table, rowid: sql<number>`rowid` }).from(table).where(gt(sql`rowid`, after)).orderBy(sql`rowid`).limit(batch).all() as Array<{
              row: Record<string, unknown>;
              rowid: number;
            }>;
            if (page.length === 0) break;
            await tx.insert(table as unknown as PgTable).values(page.map((p) => forNewStore(table, p.row)));
            rows += page.length;
            after = page[page.length - 1]!.rowid;
            if (page.length < batch) break;
          }
          counts.push({ table: getTableName(table), rows });
        }
      });
    } finally {
      sqlite.$client.exec('COMMIT');
    }
    // Fresh statistics for the planner, rather than waiting for autovacuum (which would also do).
    await target.pool.query('analyze').catch((err: Error) => console.error(`tollgate: copied, but analyze failed (${err.message}); autovacuum will gather the statistics`));
    return { counts, ms: Math.round(performance.now() - started) };
  } finally {
    await target?.close();
    source?.$client.close();
    lock.release();
  }
}

/** The CLI action: prints per-table counts and the time taken; exit 2 on a refusal. */
export async function migrateStore(flags: { from?: string; to?: string }): Promise<number> {
  if (!flags.from || !flags.to) {
    console.error('tollgate: migrate --from sqlite:<path> and --to postgres://… go together');
    return 2;
  }
  try {
    const { counts, ms } = await copyStore(flags.from, flags.to);
    const width = Math.max(...counts.map((c) => c.table.length));
    for (const { table, rows } of counts) console.log(`${table.padEnd(width)}  ${rows}`);
    const total = counts.reduce((sum, c) => sum + c.rows, 0);
    console.log(`copied ${total} rows of ${counts.length} tables to ${withoutPassword(flags.to)} in ${(ms / 1000).toFixed(1)} s`);
    return 0;
  } catch (err) {
    if (err instanceof Refusal) {
      console.error(`tollgate: ${err.message}`);
      return 2;
    }
    // One transaction: a copy that failed half way left nothing behind.
    console.error(`tollgate: the copy failed and was rolled back, the target is as it was: ${(err as Error).message}`);
    return 1;
  }
}
