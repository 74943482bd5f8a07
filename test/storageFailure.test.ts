// Which errors mean "the storage failed" (answered UNAVAILABLE, counted against no rule), from
// the drivers' own errors rather than hand-made ones.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { storageFailure } from '../src/domain/errors.ts';
import { skipWithoutPg } from './helpers/pg.ts';

test('a PostgreSQL pool whose connections all stay busy fails as the storage, not as a bug', { skip: await skipWithoutPg() }, async () => {
  const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres', max: 1, connectionTimeoutMillis: 100 });
  const held = await pool.connect();
  try {
    const err = await pool.query('select 1').then(
      () => assert.fail('the query should have waited for the busy connection and timed out'),
      (e: unknown) => e,
    );
    const failure = storageFailure(err);
    assert.ok(failure, `recognised: ${String(err)}`);
    assert.match(failure.message, /every database connection stayed busy/);
    assert.equal(storageFailure(new Error('timeout exceeded')), undefined, 'another message is not a storage failure');
  } finally {
    held.release();
    await pool.end();
  }
});
