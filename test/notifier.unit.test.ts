// The outbox claim on an in-memory database: how many rows of one channel a sender may hold.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from 'drizzle-orm';
import { claimCandidates, claimDue, insertChannel, insertOutbox, nextDueAt } from '../src/db/notifications.ts';
import { memoryDb, T0 } from './helpers/engine.ts';

test('a channel with one send under way gets one more claimed, not perChannel more', async () => {
  const db = memoryDb();
  const now = new Date(T0);
  const who = { createdAt: now, createdById: 'k', createdByName: 'k', updatedAt: now, updatedById: 'k', updatedByName: 'k' };
  await insertChannel(db, { id: 'c1', name: 'slow', type: 'slack', url: 'https://hooks.example.com/x', secret: null, envs: ['prod'], ...who });
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
  await insertOutbox(db, [row(1), row(2), row(3)]);
  // r1 is being sent (one in flight); r2 and r3 fall due.
  assert.equal((await claimDue(db, 'n', now, 30_000, 1, 2, new Map())).length, 1);
  assert.equal((await claimDue(db, 'n', now, 30_000, 16, 2, new Map([['c1', 1]]))).length, 1, 'two in flight at most');
  assert.equal((await claimDue(db, 'n', now, 30_000, 16, 2, new Map([['c1', 2]]))).length, 0);
});

test('a claim reads a few due rows of each channel through an index, never every due row (a flood of thousands drains without a sort of all of them per send)', () => {
  const db = memoryDb();
  const plan = db.all<{ detail: string }>(sql`explain query plan ${claimCandidates(new Date(T0), 2)}`).map((r) => r.detail);
  // The outbox is read as y (a channel's first due rows) and x (those rows by id), nothing else.
  const reads = plan.filter((d) => /^(SCAN|SEARCH) (notification_outbox|x|y)\b/.test(d));
  assert.ok(reads.length > 0, plan.join('\n'));
  for (const d of reads) assert.match(d, /^SEARCH (y .*\(channel_id=\? AND status=\?|x .*\(id=\?\)$)/, plan.join('\n'));
});

test('the next due time is the earliest pending attempt or running-out claim', async () => {
  const db = memoryDb();
  const now = new Date(T0);
  const who = { createdAt: now, createdById: 'k', createdByName: 'k', updatedAt: now, updatedById: 'k', updatedByName: 'k' };
  await insertChannel(db, { id: 'c1', name: 'c', type: 'slack', url: 'https://hooks.example.com/x', secret: null, envs: ['prod'], ...who });
  assert.equal(await nextDueAt(db), null);
  const row = (i: number, at: number) => ({
    id: `r${i}`,
    eventKey: `k${i}`,
    event: 'fail',
    channelId: 'c1',
    env: 'prod',
    payload: {},
    status: 'pending' as const,
    nextAttemptAt: new Date(at),
    createdAt: now,
  });
  await insertOutbox(db, [row(1, T0 + 5000), row(2, T0 + 1000)]);
  assert.equal((await nextDueAt(db))?.getTime(), T0 + 1000);
  await claimDue(db, 'n', new Date(T0 + 1000), 500, 1, 2, new Map());
  assert.equal((await nextDueAt(db))?.getTime(), T0 + 1500, 'the claim of r2 runs out before r1 is due');
});
