import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { getTableColumns, is, type SQL } from 'drizzle-orm';
import { PgDialect, PgTable, getTableConfig as pgTableConfig } from 'drizzle-orm/pg-core';
import { SQLiteSyncDialect, SQLiteTable, getTableConfig as sqliteTableConfig } from 'drizzle-orm/sqlite-core';
import pg from 'pg';
import { openDb } from '../src/db/client.ts';
import { expectedPgMigrationCount, openPgDb } from '../src/db/pgClient.ts';
import * as pgSchema from '../src/db/pgSchema.ts';
import * as sqliteSchema from '../src/db/schema.ts';
import { createPgDatabase, skipWithoutPg, withPgDatabase } from './helpers/pg.ts';
import { waitFor } from './helpers/tools.ts';

const noPg = await skipWithoutPg();

async function appliedMigrations(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>('select count(*)::int as n from drizzle.__drizzle_migrations');
    return rows[0]!.n;
  } finally {
    await client.end();
  }
}

describe('PostgreSQL migrations', { skip: noPg }, () => {
  test('a fresh database gets every shipped migration, and is ready', async (t) => {
    const url = await withPgDatabase(t);
    const store = await openPgDb(url);
    try {
      assert.ok(expectedPgMigrationCount() >= 1);
      assert.equal(await appliedMigrations(url), expectedPgMigrationCount());
      assert.deepEqual(await store.ready(), { ok: true, detail: `${expectedPgMigrationCount()} migrations applied` });
    } finally {
      await store.close();
    }
  });

  test('instances started at once migrate once; the lock is released', async (t) => {
    const url = await withPgDatabase(t);
    const stores = await Promise.all([1, 2, 3, 4].map(() => openPgDb(url, { poolSize: 2 })));
    try {
      assert.equal(await appliedMigrations(url), expectedPgMigrationCount());
      const { rows } = await stores[0]!.pool.query<{ n: number }>(
        "select count(*)::int as n from pg_locks l join pg_database d on d.oid = l.database where l.locktype = 'advisory' and d.datname = current_database()",
      );
      assert.equal(rows[0]!.n, 0);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('a second start finds nothing to do', async (t) => {
    const url = await withPgDatabase(t);
    await (await openPgDb(url)).close();
    // Applying a migration again would fail (its tables exist) or add a row.
    await (await openPgDb(url)).close();
    assert.equal(await appliedMigrations(url), expectedPgMigrationCount());
  });

  test('a migration that fails rejects the start and leaves no lock held', async (t) => {
    const url = await withPgDatabase(t);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query('create table gates (id text)');
      await assert.rejects(openPgDb(url), (err: Error) => /already exists/.test(String(err.cause)));
      const { rows } = await client.query<{ n: number }>("select count(*)::int as n from pg_locks where locktype = 'advisory' and pid <> pg_backend_pid()");
      assert.equal(rows[0]!.n, 0);
    } finally {
      await client.end();
    }
  });

  test('an idle connection killed by the server is logged, not fatal, and replaced', async (t) => {
    const url = await withPgDatabase(t);
    const errors: unknown[] = [];
    const store = await openPgDb(url, { log: { error: (obj) => errors.push(obj) } });
    try {
      await store.pool.query('select 1');
      assert.equal(store.pool.idleCount >= 1, true);
      const dbName = new URL(url).pathname.slice(1);
      const killer = new pg.Client({ connectionString: url });
      await killer.connect();
      await killer.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [dbName]);
      await killer.end();
      await waitFor('the pool to report the dropped connection', async () => errors.length > 0, 10_000);
      const { rows } = await store.pool.query<{ one: number }>('select 1 as one');
      assert.equal(rows[0]!.one, 1);
    } finally {
      await store.close();
    }
  });
});

test('the PostgreSQL migrations match pgSchema.ts (run npm run db:generate)', () => {
  const out = mkdtempSync(join(tmpdir(), 'tollgate-pg-migrations-'));
  try {
    cpSync('drizzle/pg', out, { recursive: true });
    const before = readdirSync(out).sort();
    // drizzle-kit prefixes --out with "./", so it must be relative.
    const log = execFileSync('npx', ['drizzle-kit', 'generate', '--dialect=postgresql', '--schema=./src/db/pgSchema.ts', `--out=${relative(process.cwd(), out)}`], {
      encoding: 'utf8',
      stdio: 'pipe',
    });
    assert.match(log, /No schema changes|Your SQL migration file/, log);
    assert.deepEqual(readdirSync(out).sort(), before, 'pgSchema.ts changed without a migration: run npm run db:generate');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

// The column types each SQLite type is mirrored with: the same JS values either side.
const PG_TYPE_OF: Record<string, string[]> = {
  SQLiteText: ['PgText'],
  SQLiteTextJson: ['PgJsonb'],
  SQLiteTimestamp: ['PgTimestamp'],
  SQLiteBoolean: ['PgBoolean'],
  SQLiteInteger: ['PgInteger', 'PgBigInt53'],
  SQLiteReal: ['PgDoublePrecision'],
  SQLiteBlobBuffer: ['PgCustomColumn'],
};

describe('pgSchema.ts mirrors schema.ts', () => {
  test('the modules export the same names', () => {
    assert.deepEqual(Object.keys(pgSchema).sort(), Object.keys(sqliteSchema).sort());
  });

  const tables = Object.entries(sqliteSchema).filter(([, v]) => is(v, SQLiteTable)) as Array<[string, SQLiteTable]>;
  const pgExports: Record<string, unknown> = { ...pgSchema };

  test('every table is there', () => {
    assert.ok(tables.length >= 16);
    for (const [name] of tables) assert.ok(is(pgExports[name], PgTable), `${name} is not a PostgreSQL table`);
  });

  for (const [name, sqliteTable] of tables) {
    test(`${name}: the same columns, keys and indexes`, () => {
      const s = sqliteTableConfig(sqliteTable);
      const p = pgTableConfig(pgExports[name] as PgTable);
      assert.equal(p.name, s.name);
      const columns = <C extends { name: string; notNull: boolean; primary: boolean; hasDefault: boolean; default: unknown; enumValues?: string[] }>(cs: C[]) =>
        cs.map((c) => ({ name: c.name, notNull: c.notNull, primary: c.primary, hasDefault: c.hasDefault, default: c.default, enumValues: c.enumValues }));
      assert.deepEqual(columns(p.columns), columns(s.columns));
      for (const [i, sc] of s.columns.entries()) {
        const pc = p.columns[i]!;
        assert.ok(PG_TYPE_OF[sc.columnType]?.includes(pc.columnType), `${s.name}.${sc.name}: ${sc.columnType} mirrored as ${pc.columnType}`);
      }
      assert.deepEqual(Object.keys(getTableColumns(pgExports[name] as PgTable)), Object.keys(getTableColumns(sqliteTable)), 'the same JS keys');
      // A partial index's condition as SQL text: both dialects quote names alike, so equal text is the same condition.
      const indexes = (list: Array<{ config: { name?: string; unique: boolean; where?: SQL; columns: unknown[] } }>, dialect: { sqlToQuery(s: SQL): { sql: string } }) =>
        list.map((i) => ({
          name: i.config.name,
          unique: i.config.unique,
          where: i.config.where && dialect.sqlToQuery(i.config.where).sql,
          columns: i.config.columns.map((c) => (c as { name: string }).name),
        }));
      assert.deepEqual(indexes(p.indexes, new PgDialect()), indexes(s.indexes, new SQLiteSyncDialect()));
      const pks = (ks: Array<{ columns: Array<{ name: string }> }>) => ks.map((k) => k.columns.map((c) => c.name));
      assert.deepEqual(pks(p.primaryKeys), pks(s.primaryKeys));
      const fks = (ks: Array<{ onDelete?: string; reference: () => { columns: Array<{ name: string }>; foreignColumns: Array<{ name: string }> } }>) =>
        ks
          .map((k) => {
            const r = k.reference();
            return { columns: r.columns.map((c) => c.name), foreign: r.foreignColumns.map((c) => `${tableName(c)}.${c.name}`), onDelete: k.onDelete };
          })
          .sort((a, b) => a.columns.join().localeCompare(b.columns.join()));
      assert.deepEqual(fks(p.foreignKeys), fks(s.foreignKeys));
    });
  }
});

function tableName(column: { name: string }): string {
  const table = (column as unknown as { table: SQLiteTable | PgTable }).table;
  return is(table, PgTable) ? pgTableConfig(table).name : sqliteTableConfig(table as SQLiteTable).name;
}

describe('rows read back the same from either store', { skip: noPg }, () => {
  test('a gate, a rule and an APM bucket: Dates, booleans, JSON, numbers and Buffers alike', async (t) => {
    const url = await withPgDatabase(t);
    const store = await openPgDb(url);
    // awaited: the same line whether openDb returns the handle or a promise of it.
    const sqlite = await openDb(':memory:');
    try {
      const at = new Date('2026-03-04T05:06:07.089Z');
      const who = { createdAt: at, createdById: 'u1', createdByName: 'Ann', updatedAt: at, updatedById: 'u1', updatedByName: 'Ann' };
      const gate = { id: '0190a000-0000-7000-8000-000000000001', service: 'api', env: 'prod', identifier: 'default', dryRun: true, onSourceError: 'fail' as const, ...who };
      const rule = {
        id: '0190a000-0000-7000-8000-000000000002',
        gateId: gate.id,
        name: 'errors',
        type: 'monitor' as const,
        dryRun: false,
        options: { query: 'tag:a', duration: 60, nested: { list: [1, 'two', null], flag: false } },
        ...who,
      };
      const bucket = {
        service: 'api',
        env: 'prod',
        version: '',
        resource: 'GET /',
        primaryTag: '',
        bucket: at.getTime(),
        hits: 3_000_000_000,
        errors: 2,
        durations: Buffer.from([0, 1, 2, 255]),
      };
      await store.db.insert(pgSchema.gates).values(gate);
      await store.db.insert(pgSchema.rules).values(rule);
      await store.db.insert(pgSchema.apmStats).values(bucket);
      await sqlite.insert(sqliteSchema.gates).values(gate);
      await sqlite.insert(sqliteSchema.rules).values(rule);
      await sqlite.insert(sqliteSchema.apmStats).values(bucket);

      const fromPg = {
        gates: await store.db.select().from(pgSchema.gates),
        rules: await store.db.select().from(pgSchema.rules),
        apm: await store.db.select().from(pgSchema.apmStats),
      };
      const fromSqlite = {
        gates: await sqlite.select().from(sqliteSchema.gates),
        rules: await sqlite.select().from(sqliteSchema.rules),
        apm: await sqlite.select().from(sqliteSchema.apmStats),
      };
      assert.deepStrictEqual(fromPg, fromSqlite);
      assert.deepStrictEqual(fromPg.gates, [gate]);
      assert.deepStrictEqual(fromPg.rules, [rule]);
      assert.ok(fromPg.gates[0]!.createdAt instanceof Date);
      assert.equal(typeof fromPg.apm[0]!.bucket, 'number');
      assert.ok(Buffer.isBuffer(fromPg.apm[0]!.durations));
    } finally {
      sqlite.$client.close();
      await store.close();
    }
  });
});

// createPgDatabase is what withPgDatabase uses; here it is checked that drop() removes the database.
test('a test database is dropped, even with a connection open', { skip: noPg }, async () => {
  const { url, drop } = await createPgDatabase();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  client.on('error', () => {});
  await drop();
  const name = new URL(url).pathname.slice(1);
  const probe = new pg.Client({ connectionString: url.replace(`/${name}`, '/postgres') });
  await probe.connect();
  try {
    const { rows } = await probe.query('select 1 from pg_database where datname = $1', [name]);
    assert.equal(rows.length, 0);
  } finally {
    await probe.end();
  }
});
