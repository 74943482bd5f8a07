// Calendar freeze windows: a cron expression read on the wall clock of an explicit IANA time
// zone, each occurrence opening a window of `duration` seconds of elapsed time.
//
// cron-parser reads the expression; the wall clock is ours. cron-parser's own time-zone
// iteration depends on where it starts around a DST change (from one start it skips the
// 02:30 of a spring-forward day, from another it gives it; it may give a fall-back 01:30
// twice; on Lord Howe's 30-minute shift it gives up), so occurrences are found on a zone-less
// wall clock (cron-parser in UTC, where every local time exists once) and each is then placed
// in the zone here:
// - a local time the clocks skip (02:30 on a spring-forward night) starts the window as far
//   after the jump as it was after the last valid minute: 03:30 the new time, as if the
//   clock had not jumped yet (RFC 5545 and Temporal's "compatible" read it the same way);
// - a local time the clocks pass twice (01:30 on a fall-back night) starts it once, the
//   first time;
// - `duration` is elapsed time: a 2-hour window from 00:30 on a fall-back night ends at 01:30
//   the second time (the wall clock shows 1 hour later, 2 hours have passed).
import { CronExpressionParser } from 'cron-parser';

export interface CalendarWindow {
  name?: string;
  /** Five fields (minute hour day-of-month month day-of-week) or an @alias such as @daily. */
  cron: string;
  /** Seconds the window stays open after each occurrence. */
  duration: number;
  /** IANA zone the cron expression is read in, e.g. Europe/Paris. */
  timeZone: string;
}

export interface CalendarFreeze {
  startedAt: Date;
  endsAt: Date;
  /** True when the windows chain on past what was looked at: it ends at endsAt at the earliest. */
  endsAtLeast: boolean;
}

const ALIASES = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly', '@weekdays', '@weekends']);
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
/** More than any zone's clock shift, so a wall-clock search this wide misses no occurrence. */
const SHIFT_MARGIN = 3 * HOUR;
/** Occurrences one look may go through: a dense expression is bounded, never a stall. */
const MAX_STEPS = 500;
/** Calendar days one look may go through: windows last 31 days at most. */
const MAX_DAYS = 100;

/** A cron expression's problem, or null. Minute resolution: freezes need no seconds. */
export function cronProblem(cron: string): string | null {
  const text = cron.trim();
  if (text.startsWith('@')) {
    if (!ALIASES.has(text.toLowerCase())) return `unknown alias ${text} (use ${[...ALIASES].join(', ')})`;
  } else {
    const fields = text.split(/\s+/);
    if (fields.length !== 5) return `has ${fields.length} field(s): give five (minute hour day-of-month month day-of-week), e.g. "0 18 * * FRI"`;
    if (/[Hh]/.test(text.replace(/[A-Za-z]{3}/g, ''))) return 'H (a random value) is not allowed: a freeze must open at a known time';
  }
  try {
    const c = compile(text);
    // An expression no date satisfies (the 30th of February) never opens a window.
    if (!c.expression.hasNext()) return 'matches no date';
  } catch (err) {
    return (err as Error).message.replace(/^Error:\s*/, '');
  }
  return null;
}

/** The zone's canonical name ("europe/paris" → "Europe/Paris"), or null when it is not an IANA zone. */
export function canonicalTimeZone(zone: string): string | null {
  // Offsets (+05:00) are not zones: they ignore DST, which is the point of naming a zone.
  if (!/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/.test(zone)) return null;
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

/**
 * The window open at `at`, if any: when the occurrence that opened it started and when it
 * ends. Bounded work whatever the expression: at most MAX_DAYS days and MAX_STEPS occurrences.
 */
export function calendarFreezeAt(w: CalendarWindow, at: Date): CalendarFreeze | null {
  const c = compile(w.cron);
  const zone = w.timeZone;
  const t = at.getTime();
  const d = w.duration * 1000;
  const wallT = wallClock(zone, t);
  // The latest occurrence at or before t, walking back on the wall clock from a little past t's.
  let latest: number | null = null;
  let latestWall = 0;
  let steps = 0;
  search: for (let day = floorDay(wallT + SHIFT_MARGIN), days = 0; day >= floorDay(wallT - SHIFT_MARGIN - d) && days < MAX_DAYS; day -= DAY, days++) {
    const walls = occurrencesOn(c, day);
    const near = walls.length > 0 ? offsetsNear(zone, day + DAY / 2) : null;
    for (let i = walls.length - 1; i >= 0; i--) {
      const wall = walls[i]!;
      if (wall > wallT + SHIFT_MARGIN) continue;
      // Past the margin, no earlier wall time can land later than what was found, nor open a window still open at t.
      if ((latest !== null && wall < latestWall - SHIFT_MARGIN) || wall < wallT - SHIFT_MARGIN - d || ++steps > MAX_STEPS) break search;
      const start = instantOf(zone, wall, near!);
      if (start <= t && (latest === null || start > latest)) {
        latest = start;
        latestWall = wall;
      }
    }
  }
  if (latest === null || latest + d <= t) return null;
  // Windows that open before this one closes extend it.
  let end = latest + d;
  let endWall = wallClock(zone, end);
  steps = 0;
  for (let day = floorDay(latestWall - SHIFT_MARGIN), days = 0; day <= endWall + SHIFT_MARGIN; day += DAY, days++) {
    if (days >= MAX_DAYS) return { startedAt: new Date(latest), endsAt: new Date(end), endsAtLeast: true };
    const walls = occurrencesOn(c, day);
    const near = walls.length > 0 ? offsetsNear(zone, day + DAY / 2) : null;
    for (const wall of walls) {
      if (wall < latestWall - SHIFT_MARGIN) continue;
      if (wall > endWall + SHIFT_MARGIN) break;
      if (++steps > MAX_STEPS) return { startedAt: new Date(latest), endsAt: new Date(end), endsAtLeast: true };
      const start = instantOf(zone, wall, near!);
      if (start > latest && start < end && start + d > end) {
        end = start + d;
        // Near enough for the stopping test, whose margin exceeds any clock shift.
        endWall = end + near![0];
      }
    }
  }
  return { startedAt: new Date(latest), endsAt: new Date(end), endsAtLeast: false };
}

// ---- the expression on a zone-less wall clock ----

interface Compiled {
  /** The expression read in UTC, where every local time exists once: it judges days. */
  expression: ReturnType<typeof CronExpressionParser.parse>;
  /** Minutes of the day it fires at on a matching day, ascending. */
  times: number[];
}

const compiled = new Map<string, Compiled>();
const MAX_COMPILED = 1000;

function compile(cron: string): Compiled {
  const text = cron.trim();
  let c = compiled.get(text);
  if (!c) {
    const expression = CronExpressionParser.parse(text.startsWith('@') ? text.toLowerCase() : `0 ${text}`, { tz: 'UTC', currentDate: new Date(0) });
    const hours = [...expression.fields.hour.values].map(Number).sort((a, b) => a - b);
    const minutes = [...expression.fields.minute.values].map(Number).sort((a, b) => a - b);
    c = { expression, times: hours.flatMap((h) => minutes.map((m) => h * 60 + m)) };
    if (compiled.size >= MAX_COMPILED) compiled.clear();
    compiled.set(text, c);
  }
  return c;
}

const floorDay = (wall: number) => Math.floor(wall / DAY) * DAY;

/** The wall-clock times (as UTC epoch ms) the expression fires at on a local day; none when the day does not match. */
function occurrencesOn(c: Compiled, day: number): number[] {
  // Hour and minute are taken from the expression's own lists, so this asks about the day alone.
  if (!c.expression.includesDate(new Date(day + c.times[0]! * MINUTE))) return [];
  return c.times.map((m) => day + m * MINUTE);
}

// ---- wall clocks of a zone ----

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The local date and time of an instant in a zone, as the epoch ms of the same fields in UTC. */
function wallClock(zone: string, t: number): number {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(zone, f);
  }
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(new Date(t))) if (part.type !== 'literal') p[part.type] = Number(part.value);
  return Date.UTC(p.year!, p.month! - 1, p.day!, p.hour! % 24, p.minute!, p.second!) + (t - Math.floor(t / 1000) * 1000);
}

/**
 * The zone's offsets (ms) a day either side of a wall time: equal when no clock change is near.
 * A zone changes its offset at most once in two days.
 */
const offsetsNear = (zone: string, wall: number): readonly [number, number] => [wallClock(zone, wall - DAY) - (wall - DAY), wallClock(zone, wall + DAY) - (wall + DAY)];

/**
 * The instant a local date and time names in a zone: the earlier of two when the clocks pass it
 * twice, and for a time the clocks skip, the same distance past the jump as before it.
 */
function instantOf(zone: string, wall: number, near = offsetsNear(zone, wall)): number {
  const [before, after] = near;
  if (before === after) return wall - before;
  const valid = [wall - before, wall - after].filter((t) => wallClock(zone, t) === wall).sort((a, b) => a - b);
  return valid[0] ?? wall - before;
}
