// The revision feed (src/domain/revisionFeed.ts) on a real store: what one instance delivers to
// its listeners when Redis repeats, reorders or loses events of other instances. The end-to-end
// cases (two instances, Redis cut) are in redisEvents.test.ts.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { revisionsBetween } from '../src/db/evaluationRevisions.ts';
import { loadSnapshot, recordRuleUpdate } from '../src/domain/evaluations.ts';
import type { EvaluationSnapshot } from '../src/domain/events.ts';
import { createRevisionFeed } from '../src/domain/revisionFeed.ts';
import { createLogger } from '../src/log.ts';
import { driver, jitMonitor, startServer } from './helpers.ts';

/** A server, one evaluation on it with `revisions` revisions (a long window, checks recorded by hand), and each revision as published. */
async function evaluationWith(t: TestContext, revisions: number) {
  const s = await startServer();
  t.after(() => s.stop());
  const d = driver(s);
  const monitor = await d.monitor('feed', ['feed:unit']);
  await d.report(monitor, 'OK');
  return {
    s,
    async create() {
      const r = await d.evaluate({ service: 'feed', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'feed:unit', duration: 600 })] } });
      const id: string = r.data.evaluateGate.id;
      const ruleId = (await loadSnapshot(s.app.deps, id))!.rules[0]!.id;
      for (let i = 2; i <= revisions; i++) {
        assert.ok(await recordRuleUpdate(s.app.deps, ruleId, { status: 'in_progress', reason: `check ${i}`, nextCheckAt: new Date(Date.now() + 60_000), consecutiveErrors: 0 }));
      }
      const all = await revisionsBetween(s.app.deps.db, id, 0, revisions + 1);
      assert.deepEqual(
        all.map((x) => x.evaluation.revision),
        Array.from({ length: revisions }, (_, i) => i + 1),
      );
      return all;
    },
  };
}

/** A feed on the server's store and what it delivered, as revision numbers. */
function feedOn(s: Awaited<ReturnType<typeof startServer>>) {
  const delivered: number[] = [];
  const feed = createRevisionFeed(s.app.deps.db, createLogger('silent'), (snap: EvaluationSnapshot) => delivered.push(snap.evaluation.revision));
  return { feed, delivered };
}

describe('the revision feed', () => {
  it('delivers each revision once and in order, reading from the log those an event skipped', async (t) => {
    const { s, create } = await evaluationWith(t, 6);
    // Started before the evaluation: it would have heard every revision of it.
    const { feed, delivered } = feedOn(s);
    const revs = await create();
    const at = (n: number) => revs[n - 1]!;
    // The third arrives first (the first two were lost, or are late): the first two are read from the log.
    feed.offer(at(3));
    await feed.idle();
    assert.deepEqual(delivered, [1, 2, 3]);
    // Late and repeated ones are dropped; the fifth brings the fourth with it.
    for (const n of [1, 2, 3, 5, 4, 5, 6, 6]) feed.offer(at(n));
    await feed.idle();
    assert.deepEqual(delivered, [1, 2, 3, 4, 5, 6]);
  });

  it('after a loss, delivers from the log what was written since and not delivered yet, before what arrives next', async (t) => {
    const { s, create } = await evaluationWith(t, 4);
    const { feed, delivered } = feedOn(s);
    const since = new Date();
    const revs = await create();
    feed.offer(revs[0]!);
    assert.deepEqual(delivered, [1], 'in order and nothing to read: delivered at once');
    // Redis came back: 2 to 4 were lost. The fourth, arriving while they are read, waits behind them.
    feed.replay(since);
    feed.offer(revs[3]!);
    feed.replay(since); // a second announcement of the same loss repeats nothing
    await feed.idle();
    assert.deepEqual(delivered, [1, 2, 3, 4]);
  });

  it('takes an evaluation that began before it from the first revision it hears', async (t) => {
    const { s, create } = await evaluationWith(t, 3);
    const revs = await create();
    const { feed, delivered } = feedOn(s);
    feed.offer(revs[2]!);
    feed.offer(revs[1]!);
    await feed.idle();
    assert.deepEqual(delivered, [3]);
  });
});
