import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { eq, getTableColumns, gte, is, isNull, lt, type SQL, sql } from 'drizzle-orm';
import { PgDialect, PgTable, getTableConfig as pgTableConfig } from 'drizzle-orm/pg-core';
import { SQLiteSyncDialect, SQLiteTable, getTableConfig as sqliteTableConfig } from 'drizzle-orm/sqlite-core';
import pg from 'pg';
import { type Db, openDb } from '../src/db/client.ts';
import { expectedPgMigrationCount, openPgDb, storePoolOptions } from '../src/db/pgClient.ts';
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
      // The failed start closes its connection, which releases the lock; the server ends that
      // backend a moment after the client has closed it (CI saw the lock still held once), so
      // the lock is looked for until it is gone. This database's locks only: other suites'
      // servers may hold theirs meanwhile.
      const held = async () =>
        (
          await client.query<{ n: number }>(
            "select count(*)::int as n from pg_locks l join pg_database d on d.oid = l.database where l.locktype = 'advisory' and d.datname = current_database() and l.pid <> pg_backend_pid()",
          )
        ).rows[0]!.n;
      await waitFor('the migration lock to be released', async () => (await held()) === 0, 5_000);
      // And another start can take it at once.
      const { rows } = await client.query<{ taken: boolean }>('select pg_try_advisory_lock(8390043843661231205) as taken');
      assert.equal(rows[0]!.taken, true);
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

// The column types each SQLite type is mirrored with: ones the SQLite column's encoder and decoder
// work with (the queries run the SQLite tables on PostgreSQL), given the pool's parsers.
const PG_TYPE_OF: Record<string, string[]> = {
  SQLiteText: ['PgText'],
  SQLiteTextJson: ['PgJsonb'],
  // Epoch milliseconds both ways, as SQLite stores them.
  SQLiteTimestamp: ['PgBigInt53'],
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

describe('the SQLite tables queried on PostgreSQL read back as on SQLite', { skip: noPg }, () => {
  const at = new Date('2026-03-04T05:06:07.089Z');
  const later = new Date('2026-03-04T05:16:07.001Z');
  const who = { createdAt: at, createdById: 'u1', createdByName: 'Ann', updatedAt: later, updatedById: 'u2', updatedByName: 'Bob' };
  const gate = { id: '0190a000-0000-7000-8000-000000000001', service: 'api', env: 'prod', identifier: 'default', dryRun: true, onSourceError: 'fail' as const, ...who };
  const liveGate = { ...gate, id: '0190a000-0000-7000-8000-000000000002', identifier: 'live', dryRun: false, onSourceError: 'pass' as const };
  const rule = {
    id: '0190a000-0000-7000-8000-000000000003',
    gateId: gate.id,
    name: 'errors',
    type: 'monitor' as const,
    dryRun: false,
    options: { query: 'tag:a', duration: 60, nested: { list: [1, 'two', null], flag: false }, text: 'quote " and \\ backslash' },
    ...who,
  };
  const evaluation = {
    id: '0190a000-0000-7000-8000-000000000004',
    gateId: gate.id,
    service: 'api',
    env: 'prod',
    identifier: 'default',
    version: 'v1',
    primaryTag: null,
    dryRun: true,
    onSourceError: 'fail' as const,
    status: 'in_progress' as const,
    justInTime: false,
    idempotencyKey: 'deploy-1',
    rerunOf: null,
    triggerEnvs: ['prod', 'staging'],
    triggeredById: 'k1',
    triggeredByName: 'ci',
    startedAt: at,
    decidedAt: null,
    finishedAt: null,
    leaseOwner: 'node-1',
    // Long expired: the lease comparison below finds it.
    leaseExpiresAt: new Date('2001-01-01T00:00:00.000Z'),
    revision: 7,
    overrideStatus: null,
    overrideReason: null,
    overriddenAt: null,
    overriddenById: null,
    overriddenByName: null,
    overrideReplaced: null,
  };
  const finished = {
    ...evaluation,
    id: '0190a000-0000-7000-8000-000000000005',
    gateId: null,
    idempotencyKey: null,
    status: 'pass' as const,
    triggerEnvs: null,
    decidedAt: later,
    finishedAt: later,
    leaseOwner: null,
    // Far ahead: not expired.
    leaseExpiresAt: new Date('2999-01-01T00:00:00.000Z'),
    overrideStatus: 'fail' as const,
    overrideReason: 'by hand',
    overriddenAt: later,
    overriddenById: 'u2',
    overriddenByName: 'Bob',
    overrideReplaced: 'pass' as const,
  };
  const apmKey = { service: 'api', env: 'prod', version: '', resource: 'GET /', primaryTag: '', bucket: at.getTime() };
  const buckets = [
    { ...apmKey, hits: 3_000_000_000, errors: 2, durations: Buffer.from([0, 1, 2, 255]) },
    { ...apmKey, bucket: at.getTime() + sqliteSchema.APM_BUCKET_MS, hits: 5, errors: 0, durations: Buffer.alloc(0) },
  ];

  /** The same writes and reads, through the SQLite table objects, on either store. */
  async function exercise(db: Db) {
    const { gates, rules, evaluations, apmStats, apmErrors } = sqliteSchema;
    await db.insert(gates).values([gate, liveGate]);
    await db.insert(rules).values(rule);
    await db.insert(evaluations).values([evaluation, finished]);
    await db.insert(apmStats).values(buckets);
    // Counted per flush: the second adds to the first, keeping its own message.
    const upsert = (count: number, sampleMessage: string) =>
      db
        .insert(apmErrors)
        .values({ ...apmKey, errorType: 'Timeout', count, sampleMessage })
        .onConflictDoUpdate({
          target: [apmErrors.service, apmErrors.env, apmErrors.version, apmErrors.resource, apmErrors.primaryTag, apmErrors.errorType, apmErrors.bucket],
          set: { count: sql`${apmErrors.count} + excluded.count`, sampleMessage: sql`excluded.sample_message` },
        })
        .returning({ count: apmErrors.count });
    const upserts = [await upsert(2_500_000_000, 'first'), await upsert(3, 'second')];
    const totals = await db
      .select({ n: sql<number>`count(*)`, hits: sql<number>`sum(${apmStats.hits})`, errors: sql<number>`sum(${apmStats.errors})` })
      .from(apmStats)
      .where(eq(apmStats.service, 'api'));
    return {
      gates: await db.select().from(gates).orderBy(gates.id),
      rules: await db.select().from(rules),
      evaluations: await db.select().from(evaluations).orderBy(evaluations.id),
      apmStats: await db.select().from(apmStats).orderBy(apmStats.bucket),
      apmErrors: await db.select().from(apmErrors),
      upserts,
      totals,
      dryRunGates: await db.select({ id: gates.id }).from(gates).where(eq(gates.dryRun, true)),
      liveGates: await db.select({ id: gates.id }).from(gates).where(eq(gates.dryRun, false)),
      expiredLeases: await db.select({ id: evaluations.id }).from(evaluations).where(lt(evaluations.leaseExpiresAt, new Date())),
      startedSince: await db.select({ id: evaluations.id }).from(evaluations).where(gte(evaluations.startedAt, at)),
      everyEnv: await db.select({ id: evaluations.id }).from(evaluations).where(isNull(evaluations.triggerEnvs)),
    };
  }

  test('a gate, a rule, evaluations and APM rows: Dates, booleans, JSON, numbers and Buffers alike', async (t) => {
    const url = await withPgDatabase(t);
    const store = await openPgDb(url);
    // awaited: the same line whether openDb returns the handle or a promise of it.
    const sqlite = await openDb(':memory:');
    try {
      // What the repository code does: the PostgreSQL drizzle handle, given the SQLite tables.
      const fromPg = await exercise(store.db as unknown as Db);
      const fromSqlite = await exercise(sqlite);
      assert.deepStrictEqual(fromPg, fromSqlite);

      // And both are right, not merely alike.
      assert.deepStrictEqual(fromPg.gates, [gate, liveGate]);
      assert.deepStrictEqual(fromPg.rules, [rule]);
      assert.deepStrictEqual(fromPg.evaluations, [evaluation, finished]);
      assert.deepStrictEqual(fromPg.apmStats, buckets);
      assert.ok(Buffer.isBuffer(fromPg.apmStats[0]!.durations));
      assert.deepStrictEqual(fromPg.apmErrors, [{ ...apmKey, errorType: 'Timeout', count: 2_500_000_003, sampleMessage: 'second' }]);
      assert.deepStrictEqual(fromPg.upserts, [[{ count: 2_500_000_000 }], [{ count: 2_500_000_003 }]]);
      assert.deepStrictEqual(fromPg.totals, [{ n: 2, hits: 3_000_000_005, errors: 2 }]);
      assert.deepStrictEqual(fromPg.dryRunGates, [{ id: gate.id }]);
      assert.deepStrictEqual(fromPg.liveGates, [{ id: liveGate.id }]);
      assert.deepStrictEqual(fromPg.expiredLeases, [{ id: evaluation.id }]);
      assert.deepStrictEqual(fromPg.startedSince, [{ id: evaluation.id }, { id: finished.id }]);
      assert.deepStrictEqual(fromPg.everyEnv, [{ id: finished.id }]);

      // The columns hold the types pgSchema.ts declares, not text that happens to read back.
      const { rows } = await store.pool.query(
        "select pg_typeof(created_at)::text as created, pg_typeof(dry_run)::text as dry_run from gates union all select pg_typeof(options)::text, '' from rules",
      );
      assert.deepStrictEqual(rows, [
        { created: 'bigint', dry_run: 'boolean' },
        { created: 'bigint', dry_run: 'boolean' },
        { created: 'jsonb', dry_run: '' },
      ]);
      const stored = await store.pool.query("select (options->'nested'->'list'->>1) as two, created_at from rules");
      assert.deepStrictEqual(stored.rows, [{ two: 'two', created_at: at.getTime() }]);
    } finally {
      sqlite.$client.close();
      await store.close();
    }
  });

  test("the store's parsers are its pool's own: another client in the process still gets node-postgres's", async (t) => {
    const url = await withPgDatabase(t);
    const store = await openPgDb(url);
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    try {
      const query = `select 9007199254740991::int8 as big, 12.5::numeric as dec, '{"a": [1]}'::jsonb as doc, '[2]'::json as arr`;
      assert.deepStrictEqual((await store.pool.query(query)).rows, [{ big: 9007199254740991, dec: 12.5, doc: '{"a": [1]}', arr: '[2]' }]);
      assert.deepStrictEqual((await other.query(query)).rows, [{ big: '9007199254740991', dec: '12.5', doc: { a: [1] }, arr: [2] }]);
      // A pool built with the store's options reads as the store's does.
      const pool = new pg.Pool({ connectionString: url, ...storePoolOptions() });
      try {
        assert.deepStrictEqual((await pool.query(query)).rows, (await store.pool.query(query)).rows);
      } finally {
        await pool.end();
      }
    } finally {
      await other.end();
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
