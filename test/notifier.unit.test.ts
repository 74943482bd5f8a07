// The outbox claim on an in-memory database: how many rows of one channel a sender may hold.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { claimDue, insertChannel, insertOutbox } from '../src/db/notifications.ts';
import { memoryDb, T0 } from './helpers/engine.ts';

test('a channel with one send under way gets one more claimed, not perChannel more', () => {
  const db = memoryDb();
  const now = new Date(T0);
  const who = { createdAt: now, createdById: 'k', createdByName: 'k', updatedAt: now, updatedById: 'k', updatedByName: 'k' };
  insertChannel(db, { id: 'c1', name: 'slow', type: 'slack', url: 'https://hooks.example.com/x', secret: null, envs: ['prod'], ...who });
  const row = (i: number) => ({
    id: `r${i}`,
    eventKey: `k${i}`,
    event: 'fail',
    channelId: 'c1',
    env: 'prod',
    payload: {},
    status: 'pending' as const,
    nextAttemptAt: now,
    createdAt: now,
  });
  insertOutbox(db, [row(1), row(2), row(3)]);
  // r1 is being sent (one in flight); r2 and r3 fall due.
  assert.equal(claimDue(db, 'n', now, 30_000, 1, 2, new Map()).length, 1);
  assert.equal(claimDue(db, 'n', now, 30_000, 16, 2, new Map([['c1', 1]])).length, 1, 'two in flight at most');
  assert.equal(claimDue(db, 'n', now, 30_000, 16, 2, new Map([['c1', 2]])).length, 0);
});
