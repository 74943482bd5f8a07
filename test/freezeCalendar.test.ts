import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { calendarFreezeAt, canonicalTimeZone, cronProblem } from '../src/domain/freezeCalendar.ts';

/** The window open at `at` as [start, end] ISO strings, or null. */
function openAt(w: { cron: string; duration: number; timeZone: string }, at: string): [string, string] | null {
  const f = calendarFreezeAt(w, new Date(at));
  return f && [f.startedAt.toISOString(), f.endsAt.toISOString()];
}

describe('calendar freeze windows', () => {
  test('a 02:30 window on a spring-forward day opens 02:30 after the jump (03:30 EDT), once', () => {
    // New York, 2024-03-10: 02:00 EST becomes 03:00 EDT; 02:30 does not exist that night.
    const w = { cron: '30 2 * * *', duration: 1800, timeZone: 'America/New_York' };
    assert.equal(openAt(w, '2024-03-10T07:00:00Z'), null, '03:00 EDT: not yet');
    assert.equal(openAt(w, '2024-03-10T07:29:59Z'), null);
    assert.deepEqual(openAt(w, '2024-03-10T07:30:00Z'), ['2024-03-10T07:30:00.000Z', '2024-03-10T08:00:00.000Z']);
    assert.deepEqual(openAt(w, '2024-03-10T07:59:59Z'), ['2024-03-10T07:30:00.000Z', '2024-03-10T08:00:00.000Z']);
    assert.equal(openAt(w, '2024-03-10T08:00:00Z'), null, 'closed after 30 minutes');
    // The days around it keep their own offsets: EST before, EDT after.
    assert.deepEqual(openAt(w, '2024-03-09T07:45:00Z'), ['2024-03-09T07:30:00.000Z', '2024-03-09T08:00:00.000Z']);
    assert.deepEqual(openAt(w, '2024-03-11T06:45:00Z'), ['2024-03-11T06:30:00.000Z', '2024-03-11T07:00:00.000Z']);
  });

  test('a window spanning the fall-back hour lasts its duration of elapsed time', () => {
    // New York, 2024-11-03: 02:00 EDT becomes 01:00 EST; 00:30 EDT + 2 h = 01:30 EST (06:30Z).
    const w = { cron: '30 0 * * *', duration: 7200, timeZone: 'America/New_York' };
    const window = ['2024-11-03T04:30:00.000Z', '2024-11-03T06:30:00.000Z'];
    assert.equal(openAt(w, '2024-11-03T04:29:59Z'), null);
    assert.deepEqual(openAt(w, '2024-11-03T05:15:00Z'), window, '01:15 EDT, the first time');
    assert.deepEqual(openAt(w, '2024-11-03T06:15:00Z'), window, '01:15 EST, the second time: still open');
    assert.equal(openAt(w, '2024-11-03T06:30:00Z'), null);
  });

  test('a time the clocks pass twice opens one window, the first time', () => {
    const w = { cron: '30 1 * * *', duration: 600, timeZone: 'America/New_York' };
    assert.deepEqual(openAt(w, '2024-11-03T05:35:00Z'), ['2024-11-03T05:30:00.000Z', '2024-11-03T05:40:00.000Z'], '01:35 EDT');
    assert.equal(openAt(w, '2024-11-03T06:35:00Z'), null, '01:35 EST opens nothing');
  });

  test('a weekend window across the European spring-forward ends 62 h after it opened', () => {
    // Paris: Friday 18:00 CET (17:00Z) + 62 h = Monday 07:00Z, 09:00 CEST on the wall clock.
    const w = { cron: '0 18 * * FRI', duration: 62 * 3600, timeZone: 'Europe/Paris' };
    assert.equal(openAt(w, '2024-03-29T16:59:59Z'), null);
    assert.deepEqual(openAt(w, '2024-03-31T12:00:00Z'), ['2024-03-29T17:00:00.000Z', '2024-04-01T07:00:00.000Z']);
    assert.equal(openAt(w, '2024-04-01T07:00:00Z'), null);
  });

  test('a 30-minute shift (Lord Howe) and a skipped 02:15 behave the same way', () => {
    // Lord Howe, 2024-10-06: 02:00 becomes 02:30; 02:15 opens at 02:45 (15:45Z).
    const w = { cron: '15 2 * * *', duration: 600, timeZone: 'Australia/Lord_Howe' };
    assert.equal(openAt(w, '2024-10-05T15:30:00Z'), null);
    assert.deepEqual(openAt(w, '2024-10-05T15:50:00Z'), ['2024-10-05T15:45:00.000Z', '2024-10-05T15:55:00.000Z']);
  });

  test('overlapping windows chain; a dense expression is bounded and says so', () => {
    const chain = calendarFreezeAt({ cron: '0 */2 * * *', duration: 3 * 3600, timeZone: 'UTC' }, new Date('2024-01-01T00:30:00Z'))!;
    assert.equal(chain.startedAt.toISOString(), '2024-01-01T00:00:00.000Z');
    assert.equal(chain.endsAtLeast, true, 'every window opens before the last closes: no end in sight');
    const single = calendarFreezeAt({ cron: '0 9 * * 5#3', duration: 3600, timeZone: 'UTC' }, new Date('2024-03-15T09:30:00Z'))!;
    assert.equal(single.endsAt.toISOString(), '2024-03-15T10:00:00.000Z', 'the third Friday');
    assert.equal(single.endsAtLeast, false);
    assert.equal(calendarFreezeAt({ cron: '0 9 * * 5#3', duration: 3600, timeZone: 'UTC' }, new Date('2024-03-08T09:30:00Z')), null, 'the second Friday');
  });

  test('expressions and zones are checked, with the reason', () => {
    assert.match(cronProblem('* * * *')!, /has 4 field\(s\): give five/);
    assert.match(cronProblem('0 0 18 * * 5')!, /has 6 field\(s\)/);
    assert.match(cronProblem('0 25 * * *')!, /got value 25 expected range 0-23/);
    assert.match(cronProblem('H 1 * * *')!, /H \(a random value\) is not allowed/);
    assert.match(cronProblem('@secondly')!, /unknown alias/);
    assert.equal(cronProblem('0 9 * * MON-FRI'), null);
    assert.equal(cronProblem('@weekly'), null);
    assert.equal(canonicalTimeZone('europe/paris'), 'Europe/Paris');
    assert.equal(canonicalTimeZone('+05:00'), null, 'an offset ignores DST: not a zone');
    assert.equal(canonicalTimeZone('Mars/Olympus_Mons'), null);
  });
});
