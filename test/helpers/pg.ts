import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import pg from 'pg';

/** The test server's maintenance database; TOLLGATE_TEST_PG_URL points elsewhere (another host, a password). */
const ADMIN_URL = process.env.TOLLGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 2000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

let available: Promise<boolean> | undefined;

/** Whether the test PostgreSQL answers (asked once per process). */
export function pgAvailable(): Promise<boolean> {
  available ??= admin((c) => c.query('select 1')).then(
    () => true,
    () => false,
  );
  return available;
}

/**
 * Tests that need PostgreSQL skip without it, unless TOLLGATE_REQUIRE_INTEGRATION=1 (as in CI),
 * where its absence fails them instead. A skip reason or false, like skipWithout:
 * `const noPg = await skipWithoutPg(); describe('…', { skip: noPg }, …)`.
 */
export async function skipWithoutPg(): Promise<string | false> {
  if (await pgAvailable()) return false;
  if (process.env.TOLLGATE_REQUIRE_INTEGRATION === '1') throw new Error(`TOLLGATE_REQUIRE_INTEGRATION=1 but PostgreSQL does not answer at ${ADMIN_URL}`);
  return `PostgreSQL does not answer at ${ADMIN_URL}`;
}

/** A fresh, empty database of its own: its URL, and drop() to remove it (whoever is still connected). */
export async function createPgDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `tollgate_t_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => admin(async (c) => void (await c.query(`drop database if exists ${name} with (force)`))),
  };
}

/** A fresh database dropped when the test ends: its URL. */
export async function withPgDatabase(t: TestContext): Promise<string> {
  const { url, drop } = await createPgDatabase();
  t.after(drop);
  return url;
}
