// `tollgate migrate --from sqlite:… --to postgres://…`: a store built through the real server is
// copied by the real CLI, row for row, and the command refuses what would lose or merge data.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getTableName, is } from 'drizzle-orm';
import { drizzle as pgDrizzle } from 'drizzle-orm/node-postgres';
import type { PgTable } from 'drizzle-orm/pg-core';
import { getTableConfig, SQLiteTable } from 'drizzle-orm/sqlite-core';
import pg from 'pg';
import { batchRows, tablesInCopyOrder } from '../src/cli/migrate.ts';
import { openDb } from '../src/db/client.ts';
import { openPgDb } from '../src/db/pgClient.ts';
import * as schema from '../src/db/schema.ts';
import { CREATE_GATE, driver, monitorRule } from './helpers/api.ts';
import { createPgDatabase, skipWithoutPg } from './helpers/pg.ts';
import { startServer } from './helpers/server.ts';
import { runTollgate } from './helpers/tools.ts';
import { sendTraffic } from './traffic.ts';

const noPg = await skipWithoutPg();

const exportedTables = (Object.values(schema) as unknown[]).filter((value): value is SQLiteTable => is(value, SQLiteTable));

type Row = Record<string, unknown>;

/** Rows in an order that does not depend on the store: by content. */
function sorted(rows: Row[]): Row[] {
  const keyed = rows.map((row) => ({ key: JSON.stringify(row), row }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map(({ row }) => row);
}

/** Every row of every table, by table name. */
async function rowsByTable(read: (table: SQLiteTable) => Promise<Row[]>): Promise<Map<string, Row[]>> {
  const out = new Map<string, Row[]>();
  for (const table of exportedTables) out.set(getTableName(table), await read(table));
  return out;
}

async function readSqlite(path: string): Promise<Map<string, Row[]>> {
  const db = openDb(path);
  try {
    return await rowsByTable(async (table) => db.select().from(table).all() as Row[]);
  } finally {
    db.$client.close();
  }
}

/** The target read back through the same SQLite table objects, as the PostgreSQL store reads it. */
async function readPg(url: string): Promise<Map<string, Row[]>> {
  const store = await openPgDb(url);
  try {
    const db = pgDrizzle(store.pool);
    return await rowsByTable(async (table) => (await db.select().from(table as unknown as PgTable)) as Row[]);
  } finally {
    await store.close();
  }
}

async function pgQuery<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

const counts = (rows: Map<string, Row[]>) => Object.fromEntries([...rows].map(([table, r]) => [table, r.length]));

describe('the copy list', () => {
  test('holds every table schema.ts exports, each after the tables its foreign keys point to', () => {
    const order = tablesInCopyOrder();
    assert.deepEqual(order.map(getTableName).sort(), exportedTables.map(getTableName).sort());
    assert.equal(new Set(order).size, order.length);
    for (const [i, table] of order.entries()) {
      for (const fk of getTableConfig(table).foreignKeys) {
        const parent = fk.reference().foreignTable;
        assert.ok(order.indexOf(parent) < i, `${getTableName(parent)} must come before ${getTableName(table)}`);
      }
    }
  });

  test('batches stay within PostgreSQL’s 65535 bind parameters', () => {
    for (const table of tablesInCopyOrder()) {
      const rows = batchRows(table);
      assert.ok(rows >= 1 && rows <= 500);
      assert.ok(rows * getTableConfig(table).columns.length <= 65_535, getTableName(table));
    }
  });
});

describe('tollgate migrate --from: refusals before any copy', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-migrate-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const to = 'postgres://postgres@127.0.0.1:1/never_reached';

  test('a missing source file', async () => {
    const r = await runTollgate(['migrate', '--from', `sqlite:${join(dir, 'missing.db')}`, '--to', to]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /no database at .*missing\.db/);
  });

  test('a file that is not a Tollgate database', async () => {
    const notSqlite = join(dir, 'notes.db');
    writeFileSync(notSqlite, 'not a database at all, just text that is long enough to not be empty');
    const r = await runTollgate(['migrate', '--from', `sqlite:${notSqlite}`, '--to', to]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /cannot read .*notes\.db as a Tollgate database/);
  });

  test('--from without --to, and a --to that is not PostgreSQL', async () => {
    const alone = await runTollgate(['migrate', '--from', `sqlite:${join(dir, 'x.db')}`]);
    assert.equal(alone.code, 2, alone.stderr);
    const mysql = await runTollgate(['migrate', '--from', `sqlite:${join(dir, 'x.db')}`, '--to', 'mysql://root:hunter2@db/x']);
    assert.equal(mysql.code, 2, mysql.stderr);
    assert.match(mysql.stderr, /postgres:\/\//);
    assert.doesNotMatch(mysql.stderr, /hunter2/);
  });
});

describe('tollgate migrate --from sqlite: --to postgres:', { skip: noPg }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-migrate-'));
  const dbPath = join(dir, 'tollgate.db');
  let target: Awaited<ReturnType<typeof createPgDatabase>>;
  let runningId = '';
  let finishedId = '';

  before(async () => {
    target = await createPgDatabase();
    // A store made by a real server: monitors with transitions, gates with rules, a key,
    // spans, an evaluation finished and one still running.
    const s = await startServer({}, { dir });
    try {
      const d = driver(s);
      const monitorId = await d.monitor('checkout errors', ['service:checkout', 'team:web']);
      await d.report(monitorId, 'ALERT', 'region:eu');
      await d.report(monitorId, 'OK', 'region:eu');
      for (const service of ['checkout', 'billing']) {
        const gate = await s.gql(CREATE_GATE, { input: { service, env: 'prod', rules: [monitorRule('monitors', { query: 'service:checkout', duration: 3600 })] } });
        assert.ok(gate.data, JSON.stringify(gate.errors));
      }
      await s.createKey(['gates:read'], ['prod']);
      const running = await d.evaluate({ service: 'checkout', env: 'prod', version: '1.0.0' });
      runningId = running.data.evaluateGate.id;
      const finished = await d.evaluate({ service: 'billing', env: 'prod', version: '2.0.0' });
      finishedId = finished.data.evaluateGate.id;
      const canceled = await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { status finishedAt } }', { id: finishedId });
      assert.equal(canceled.data.cancelEvaluation.status, 'CANCELED');
      await sendTraffic(s, {
        service: 'checkout',
        version: '1.0.0',
        resource: 'GET /cart',
        count: 40,
        errors: 5,
        errorType: 'TimeoutError',
        from: Date.now() - 60_000,
        spreadMs: 30_000,
      });
    } finally {
      await s.stop();
    }
    // As a server killed mid-lease leaves it (a clean stop hands its leases back), and more
    // audit rows than one batch holds.
    const db = openDb(dbPath);
    db.update(schema.evaluations)
      .set({ leaseOwner: 'node-that-died', leaseExpiresAt: new Date(Date.now() + 3_600_000) })
      .run();
    const at = new Date(Date.UTC(2030, 0, 1));
    for (let i = 0; i < 1234; i++) {
      db.insert(schema.auditLog)
        .values({
          id: `audit-${String(i).padStart(5, '0')}`,
          at,
          actorId: 'a',
          actorName: 'someone',
          action: 'test.filler',
          targetType: 'gate',
          targetId: `g${i}`,
          before: null,
          after: { i },
        })
        .run();
    }
    db.$client.close();
  });

  after(async () => {
    await target?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('copies every row of every table; running evaluations lose their lease; a second run is refused and changes nothing', async () => {
    const source = await readSqlite(dbPath);
    assert.equal(source.get('audit_log')!.length > 1234, true);
    assert.ok(source.get('monitor_transitions')!.length >= 2);
    assert.ok(source.get('evaluation_revisions')!.length >= 3, 'the revision log of both evaluations is copied too');
    assert.ok(source.get('apm_stats')!.length >= 1 && source.get('apm_errors')!.length >= 1);

    const r = await runTollgate(['migrate', '--from', `sqlite:${dbPath}`, '--to', target.url]);
    assert.equal(r.code, 0, r.stderr);
    for (const [table, rows] of source) assert.match(r.stdout, new RegExp(`^${table} +${rows.length}$`, 'm'));
    assert.match(r.stdout, /copied \d+ rows of \d+ tables to .* in \d+\.\d s/);

    const copied = await readPg(target.url);
    assert.deepEqual(counts(copied), counts(source));
    // Field by field, every row; the running evaluation's lease is the one change made on purpose.
    const expected = new Map(source);
    expected.set(
      'evaluations',
      source.get('evaluations')!.map((row) => (row.finishedAt === null ? { ...row, leaseOwner: null, leaseExpiresAt: new Date(0) } : row)),
    );
    for (const [table, rows] of expected) assert.deepEqual(sorted(copied.get(table)!), sorted(rows), table);
    const running = copied.get('evaluations')!.find((e) => e.id === runningId)!;
    assert.equal(running.status, 'in_progress');
    assert.equal(running.leaseOwner, null);
    assert.deepEqual(running.leaseExpiresAt, new Date(0));
    const finished = copied.get('evaluations')!.find((e) => e.id === finishedId)!;
    assert.equal(finished.status, 'canceled');
    assert.equal(finished.leaseOwner, 'node-that-died', 'a finished evaluation is copied as it was');
    assert.ok(Buffer.isBuffer(copied.get('apm_stats')![0]!.durations));

    const again = await runTollgate(['migrate', '--from', `sqlite:${dbPath}`, '--to', target.url]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /already holds data/);
    assert.equal(again.stderr.trim().split('\n').length, 1);
    assert.deepEqual(counts(await readPg(target.url)), counts(source));
  });

  test('a source a running server holds is refused, and the target is not touched', async (t) => {
    const held = mkdtempSync(join(tmpdir(), 'tollgate-migrate-held-'));
    const fresh = await createPgDatabase();
    t.after(async () => {
      await fresh.drop();
      rmSync(held, { recursive: true, force: true });
    });
    const s = await startServer({}, { dir: held });
    try {
      const r = await runTollgate(['migrate', '--from', `sqlite:${s.dbPath}`, '--to', fresh.url]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /stop the server first/);
      assert.equal(r.stderr.trim().split('\n').length, 1);
    } finally {
      await s.stop();
    }
    const tables = await pgQuery<{ n: number }>(fresh.url, "select count(*)::int as n from information_schema.tables where table_schema = 'public'");
    assert.equal(tables[0]!.n, 0);
  });

  test('the PostgreSQL migrations create exactly the tables of the copy list', async () => {
    const tables = await pgQuery<{ table_name: string }>(target.url, "select table_name from information_schema.tables where table_schema = 'public'");
    assert.deepEqual(tables.map((r) => r.table_name).sort(), tablesInCopyOrder().map(getTableName).sort());
  });
});
