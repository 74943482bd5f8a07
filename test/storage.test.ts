import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { printedSchema, schemaFile } from '../src/graphql/print-schema.ts';
import { CREATE_GATE, monitorRule, startServer } from './helpers.ts';

test('data survives a restart on the same file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-restart-'));
  try {
    const first = await startServer({}, { dir });
    const created = await first.gql(CREATE_GATE, { input: { service: 'persist', env: 'prod', dryRun: true, rules: [monitorRule('m', { duration: 60 })] } });
    const key = await first.createKey(['gates:read']);
    await first.stop();

    const second = await startServer({}, { dir });
    const read = await second.gql('{ gateByKey(service: "persist", env: "prod") { id dryRun rules { name options { ... on MonitorRuleOptions { duration } } } } }', undefined, key);
    assert.deepEqual(read.data.gateByKey, {
      id: created.data.createGate.id,
      dryRun: true,
      rules: [{ name: 'm', options: { duration: 60 } }],
    });
    await second.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('gates(first: 20) with 5 rules each runs as many SQL statements as first: 2', async () => {
  const s = await startServer();
  try {
    for (let i = 0; i < 20; i++) {
      await s.gql(CREATE_GATE, { input: { service: `n1-${i}`, env: 'prod', rules: [1, 2, 3, 4, 5].map((r) => monitorRule(`r${r}`)) } });
    }
    const count = async (first: number) => {
      s.queries.length = 0;
      const r = await s.gql('query($n: Int) { gates(first: $n) { edges { node { service env identifier rules { name dryRun gate { id } } } } } }', { n: first });
      assert.equal(r.data.gates.edges.length, first);
      assert.ok(r.data.gates.edges.every((e: any) => e.node.rules.length === 5));
      return s.queries.length;
    };
    await count(1); // warms the key's authentication cache, so both counts compare reads alone
    const few = await count(2);
    const many = await count(20);
    assert.equal(many, few, `first:20 ran ${many} statements, first:2 ran ${few}`);
    assert.ok(few <= 4, `expected a handful of statements, got ${few}: ${s.queries.join('\n')}`);
  } finally {
    await s.stop();
  }
});

test('schema/schema.graphql is current (run npm run schema:print)', () => {
  assert.equal(readFileSync(schemaFile, 'utf8'), printedSchema(), 'schema/schema.graphql is stale: run npm run schema:print');
});

test('drizzle migrations match the table definitions (run npm run db:generate)', () => {
  const out = mkdtempSync(join(tmpdir(), 'tollgate-migrations-'));
  try {
    cpSync('drizzle/sqlite', out, { recursive: true });
    const before = readdirSync(out).sort();
    // drizzle-kit prefixes --out with "./", so it must be relative.
    const log = execFileSync('npx', ['drizzle-kit', 'generate', '--dialect=sqlite', '--schema=./src/db/schema.ts', `--out=${relative(process.cwd(), out)}`], {
      encoding: 'utf8',
      stdio: 'pipe',
    });
    assert.match(log, /No schema changes|Your SQL migration file/, log);
    const after = readdirSync(out).sort();
    assert.deepEqual(after, before, 'the tables changed without a migration: run npm run db:generate');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
