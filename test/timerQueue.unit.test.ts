import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TimerQueue } from '../src/engine/timerQueue.ts';

describe('timer queue', () => {
  test('takes every key due at or before now, earliest first, and leaves the rest', () => {
    const q = new TimerQueue();
    q.set('c', 30);
    q.set('a', 10);
    q.set('b', 20);
    q.set('d', 40);
    assert.equal(q.peek(), 10);
    assert.deepEqual(q.takeDue(30), ['a', 'b', 'c']);
    assert.equal(q.size, 1);
    assert.equal(q.peek(), 40);
    assert.deepEqual(q.takeDue(39), []);
    assert.deepEqual(q.takeDue(40), ['d']);
    assert.equal(q.peek(), undefined);
    assert.equal(q.size, 0);
  });

  test('a rescheduled key is due at its new time only, earlier or later', () => {
    const q = new TimerQueue();
    q.set('a', 10);
    q.set('b', 20);
    q.set('a', 50);
    assert.equal(q.size, 2);
    assert.equal(q.peek(), 20, 'the old time of a is gone');
    assert.deepEqual(q.takeDue(49), ['b']);
    q.set('a', 5);
    assert.deepEqual(q.takeDue(5), ['a']);
    assert.deepEqual(q.takeDue(100), [], 'a was taken once, not again at its stale 50');
  });

  test('a deleted key never comes due', () => {
    const q = new TimerQueue();
    q.set('a', 10);
    q.set('b', 20);
    q.delete('a');
    assert.equal(q.size, 1);
    assert.equal(q.peek(), 20);
    assert.deepEqual(q.takeDue(100), ['b']);
  });

  test('agrees with a sorted list over many random sets, reschedules and deletes', () => {
    // A fixed-seed generator: the same sequence on every run.
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const q = new TimerQueue();
    const model = new Map<string, number>();
    let now = 0;
    for (let step = 0; step < 5000; step++) {
      const key = `k${Math.floor(random() * 200)}`;
      const r = random();
      if (r < 0.6) {
        const at = now + Math.floor(random() * 1000);
        q.set(key, at);
        model.set(key, at);
      } else if (r < 0.75) {
        q.delete(key);
        model.delete(key);
      } else {
        now += Math.floor(random() * 100);
        const expected = [...model].filter(([, at]) => at <= now).sort((a, b) => a[1] - b[1]);
        const taken = q.takeDue(now);
        // Keys due at the same instant may come in any order among themselves.
        assert.deepEqual(
          taken.map((k) => model.get(k)),
          expected.map(([, at]) => at),
        );
        assert.deepEqual([...taken].sort(), expected.map(([k]) => k).sort());
        for (const k of taken) model.delete(k);
      }
      assert.equal(q.size, model.size);
      assert.equal(q.peek(), model.size === 0 ? undefined : Math.min(...model.values()));
    }
  });
});
