// The key watch on an in-memory database with node's mocked timers: how soon a revocation made by
// another process (`tollgate keys revoke`, which shares the database but not the event bus) ends
// the streams of the key. No sleeping, no wall clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createApiKey, revokeApiKey } from '../src/domain/apiKeys.ts';
import { createEvents } from '../src/domain/events.ts';
import { createKeyWatch, type KeyEnd } from '../src/domain/keyWatch.ts';
import { type Principal, SYSTEM } from '../src/domain/principal.ts';
import { memoryDb, TestClock, unitDeps } from './helpers/engine.ts';

/** Lets the poll's query and what follows it run (setImmediate is not mocked). */
const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
};

test("a revocation by another process ends the key's streams within 500 ms", async (t) => {
  t.mock.timers.enable({ apis: ['setInterval', 'setTimeout'] });
  const db = memoryDb();
  const deps = unitDeps(db, new TestClock());
  const { key } = await createApiKey(deps, SYSTEM, { name: 'streaming', scopes: ['gates:read'] });
  const principal: Principal = { id: key.id, name: key.name, scopes: new Set(['gates:read']), envs: null };
  const watch = createKeyWatch(db, deps.events, deps.now);
  t.after(() => {
    watch.close();
    db.$client.close();
  });
  const ends: KeyEnd[] = [];
  watch.watch(principal, (end) => ends.push(end));

  // Revoked just after a poll: the worst case is one whole interval.
  t.mock.timers.tick(1);
  await revokeApiKey({ ...deps, events: createEvents() }, SYSTEM, key.id);
  t.mock.timers.tick(498);
  await settle();
  assert.deepEqual(ends, [], 'ended before the poll: something else saw the revocation');
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(ends, [{ reason: 'revoked', message: 'API key "streaming" was revoked' }]);
  assert.equal(watch.size(), 0);
});
