import {
  allMonitors,
  firstTransitionAfter,
  getMonitors,
  groupsOf,
  type MonitorGroupRow,
  type MonitorRow,
  monitorRowsGeneration,
  monitorsGeneration,
  transitionsWithin,
} from '../db/monitors.ts';
import type { Deps } from '../domain/deps.ts';
import { SourceError } from '../domain/errors.ts';
import { type Expr, groupTagsOf, matches, mentions, parseMonitorQuery } from '../domain/monitorQuery.ts';
import {
  envsOf,
  filterMatchingNow,
  groupsByMonitor,
  MAX_RULE_MATCH_STEPS,
  type MonitorStateValue,
  matchable,
  monitorMatches,
  monitorUrl,
  monitorVisibleUnder,
} from '../domain/monitors.ts';
import { describeFailingGroups, type FailingGroupEvidence } from '../domain/ruleEvidence.ts';
import type { MonitorRuleOptions } from '../domain/ruleOptions.ts';
import { type CheckResult, monitorKey, type RuleRunner } from './runner.ts';

/** Datadog's cap: a rule watching more monitors than this fails rather than guess. */
export const MAX_MONITORS = 50;

export interface Selection {
  monitors: MonitorRow[];
  /** The groups each monitor is judged on (all, or those the query or monitorIds name). */
  groups: Map<string, MonitorGroupRow[]>;
}

/**
 * A query too costly to match is its source failing (retried, then onSourceError), never a stall.
 * Only monitors the trigger may see are matched, so neither the cost nor this message depends
 * on another environment's monitors.
 */
const tooCostly = (_count: number) => () =>
  new SourceError(`matching the query against the monitors is too costly (over ${MAX_RULE_MATCH_STEPS} characters to examine): use fewer leading '*' wildcards or exact tags`);

/**
 * Muted monitors are always left out, whatever the query says; so is every monitor outside the
 * trigger's environments (`envs`, null: all), with exactly the rule keys have for monitors: the
 * rule never reaches further than the key that started it. A monitor outside them is as if it
 * did not exist, so a query or monitorIds naming it match nothing of it, and it costs nothing.
 */
async function select(deps: Deps, o: MonitorRuleOptions, expr: Expr | null, envs: readonly string[] | null): Promise<Selection> {
  if (o.monitorIds) {
    const wanted = new Map(o.monitorIds.map((m) => [m.id, m.groups]));
    const monitors = (await getMonitors(deps.db, [...wanted.keys()])).filter((m) => !m.muted && visibleUnder(envs, m));
    const all = groupsByMonitor(
      await groupsOf(
        deps.db,
        monitors.map((m) => m.id),
      ),
    );
    const groups = new Map(
      monitors.map((m) => {
        const names = wanted.get(m.id) ?? [];
        const gs = all.get(m.id) ?? [];
        return [m.id, names.length === 0 ? gs : gs.filter((g) => names.includes(g.group))];
      }),
    );
    return { monitors, groups };
  }
  const candidates = await unmutedMonitors(deps, envs);
  if (!mentions(expr!, 'group') && !mentions(expr!, 'status')) {
    // The common case: the monitor's own attributes decide, so only matches need their groups.
    const monitors = ownAttributeMatches(deps, `${envsKey(envs)}|${o.query!}`, () =>
      filterMatchingNow(candidates, (m) => matches(expr!, matchable(m, []), null), MAX_RULE_MATCH_STEPS, tooCostly(candidates.length)),
    );
    const groups = groupsByMonitor(
      await groupsOf(
        deps.db,
        monitors.map((m) => m.id),
      ),
    );
    return { monitors, groups: new Map(monitors.map((m) => [m.id, groups.get(m.id) ?? []])) };
  }
  const all = groupsByMonitor(
    await groupsOf(
      deps.db,
      candidates.map((m) => m.id),
    ),
  );
  const monitors = filterMatchingNow(candidates, (m) => monitorMatches(expr!, m, all.get(m.id) ?? []), MAX_RULE_MATCH_STEPS, tooCostly(candidates.length));
  const restrict = mentions(expr!, 'group');
  const groups = new Map(
    monitors.map((m) => {
      const gs = all.get(m.id) ?? [];
      if (!restrict) return [m.id, gs];
      const mm = matchable(m, gs);
      return [m.id, gs.filter((g) => matches(expr!, mm, groupTagsOf(g.group)))];
    }),
  );
  return { monitors, groups };
}

/**
 * Selections as of the current monitor generation (any write to monitors or their groups
 * starts a new one), shared by every rule with the same options: thousands of rules woken by
 * one transition select once, not once each. Selections are read-only once made.
 */
interface SelectionCache {
  generation: number;
  byKey: Map<string, Selection>;
}
const selectionCaches = new WeakMap<object, SelectionCache>();
/** Distinct selections (and query matches) kept per generation; beyond this the cache starts over. */
const MAX_CACHED_SELECTIONS = 1000;

function currentCache(deps: Deps): SelectionCache {
  const generation = monitorsGeneration();
  let cache = selectionCaches.get(deps.db);
  if (!cache || cache.generation !== generation) selectionCaches.set(deps.db, (cache = { generation, byKey: new Map() }));
  return cache;
}

/**
 * What depends on the monitors' own rows only, kept across transitions: a state change then
 * costs a look at the matched monitors' groups, not a read of every monitor.
 */
interface RowsCache {
  generation: number;
  /** Unmuted monitors visible under each set of trigger environments (envsKey). */
  unmuted: Map<string, MonitorRow[]>;
  /** Monitors a query matches on their own attributes (no group: or status: term). */
  matched: Map<string, MonitorRow[]>;
}
const rowsCaches = new WeakMap<object, RowsCache>();

function currentRows(deps: Deps): RowsCache {
  const generation = monitorRowsGeneration();
  let cache = rowsCaches.get(deps.db);
  if (!cache || cache.generation !== generation) rowsCaches.set(deps.db, (cache = { generation, unmuted: new Map(), matched: new Map() }));
  return cache;
}

const envsKey = (envs: readonly string[] | null) => (envs === null ? '*' : JSON.stringify([...envs].sort()));
const visibleUnder = (envs: readonly string[] | null, m: MonitorRow) => envs === null || monitorVisibleUnder(envs, envsOf(m.tags));

async function unmutedMonitors(deps: Deps, envs: readonly string[] | null): Promise<MonitorRow[]> {
  const cache = currentRows(deps);
  const key = envsKey(envs);
  let rows = cache.unmuted.get(key);
  if (!rows) {
    const all = cache.unmuted.get('*') ?? (await allMonitors(deps.db)).filter((m) => !m.muted);
    cache.unmuted.set('*', all);
    rows = envs === null ? all : all.filter((m) => visibleUnder(envs, m));
    if (cache.unmuted.size >= MAX_CACHED_SELECTIONS) cache.unmuted.clear();
    cache.unmuted.set(key, rows);
  }
  return rows;
}

function ownAttributeMatches(deps: Deps, query: string, match: () => MonitorRow[]): MonitorRow[] {
  let monitors = currentRows(deps).matched.get(query);
  if (!monitors) {
    monitors = match();
    const cache = currentRows(deps);
    if (cache.matched.size >= MAX_CACHED_SELECTIONS) cache.matched.clear();
    cache.matched.set(query, monitors);
  }
  return monitors;
}

/** Shared by every rule with the same options and the same trigger environments. */
async function cachedSelect(deps: Deps, o: MonitorRuleOptions, envs: readonly string[] | null): Promise<Selection> {
  const cache = currentCache(deps);
  const key = `${envsKey(envs)}|${o.monitorIds ? `ids:${JSON.stringify(o.monitorIds)}` : `query:${o.query}`}`;
  let sel = cache.byKey.get(key);
  if (!sel) {
    sel = await select(deps, o, o.query ? parseMonitorQuery(o.query) : null, envs);
    // select() may have started the cache over (it reads through it); store in the current one.
    const now = currentCache(deps);
    if (now.byKey.size >= MAX_CACHED_SELECTIONS) now.byKey.clear();
    now.byKey.set(key, sel);
  }
  return sel;
}

/**
 * The monitors and groups a search query selects for a trigger, exactly as a monitor rule
 * selects them (muted ones out, only what the trigger may see), from the same shared cache.
 */
export const selectByQuery = async (deps: Deps, query: string, envs: readonly string[] | null): Promise<Selection> => cachedSelect(deps, { query } as MonitorRuleOptions, envs);

/** As the evidence records it; `envs` is what a reader must be able to see to be shown the group. */
type FailingGroup = FailingGroupEvidence & { envs: string[] };

const iso = (d: Date) => d.toISOString();

/**
 * Every group that was in a failing state at any instant of [from, to]: its state at `from`
 * (read back through the transitions after it) and every state it entered up to `to`. Only the
 * window's transitions are read, and for a group with none in it that changed since (its `since`
 * is later), its first one after: a window days back (a backtest) does not read days of history.
 */
async function failingGroups(deps: Deps, sel: Selection, from: Date, to: Date, bad: (s: MonitorStateValue) => boolean): Promise<FailingGroup[]> {
  const transitions = await transitionsWithin(
    deps.db,
    sel.monitors.map((m) => m.id),
    from,
    to,
  );
  // Grouped once: filtering the window's transitions per group was groups × transitions.
  const byGroup = new Map<string, typeof transitions>();
  for (const t of transitions) {
    const key = `${t.monitorId}\u0000${t.group}`;
    const list = byGroup.get(key);
    if (list) list.push(t);
    else byGroup.set(key, [t]);
  }
  const failing: FailingGroup[] = [];
  for (const m of sel.monitors) {
    for (const g of sel.groups.get(m.id) ?? []) {
      let after = byGroup.get(`${m.id}\u0000${g.group}`) ?? [];
      if (after.length === 0 && g.since > to) {
        const next = await firstTransitionAfter(deps.db, m.id, g.group, to);
        if (next) after = [next];
      }
      // The state at `from`: the first later transition's origin, or the current state.
      const atFrom = after.length > 0 ? after[0]!.from : g.state;
      // Since when: the group's own record when nothing changed after `from`, else the window's start.
      const atFromSince = after.length > 0 ? from : g.since;
      let hit: { state: MonitorStateValue; since: Date } | null = atFrom && bad(atFrom) ? { state: atFrom, since: atFromSince } : null;
      for (const t of after) {
        if (hit || t.at > to) break;
        if (bad(t.to)) hit = { state: t.to, since: t.at };
      }
      if (hit) {
        failing.push({ monitorId: m.id, monitorName: m.name, group: g.group, state: hit.state, since: iso(hit.since), url: monitorUrl(deps, m.id), envs: envsOf(m.tags) });
      }
    }
  }
  return failing;
}

export const monitorRunner: RuleRunner = {
  type: 'monitor',

  plan(options, start) {
    const o = options as MonitorRuleOptions;
    const windowStartsAt = new Date(start.getTime() + o.warmup * 1000);
    return { windowStartsAt, windowEndsAt: new Date(windowStartsAt.getTime() + o.duration * 1000), nextCheckAt: windowStartsAt };
  },

  async check(deps, { rule, evaluation, now }): Promise<CheckResult> {
    const o = rule.options as MonitorRuleOptions;
    if (now < rule.windowStartsAt) {
      return { status: 'in_progress', reason: `Warming up until ${iso(rule.windowStartsAt)}.`, nextCheckAt: rule.windowStartsAt };
    }
    const sel = await cachedSelect(deps, o, evaluation.triggerEnvs ?? null);
    const what = o.query ? `the query \`${o.query}\`` : `the monitor ids ${o.monitorIds!.map((m) => m.id).join(', ')}`;
    // A monitor whose own source is failing cannot vouch for its groups: retry, then policy.
    const broken = sel.monitors.find((m) => m.sourceErrors > 0);
    // Beyond MAX_MONITORS the rule fails for the count alone: listing 40,000 matches in every
    // check's evidence would cost more than the check. The list keeps every monitor a reason
    // can name (the broken one).
    const listed = sel.monitors.length <= MAX_MONITORS ? sel.monitors : [...new Set([...sel.monitors.slice(0, MAX_MONITORS), ...(broken ? [broken] : [])])];
    const evidence = {
      // Each entry carries its monitor's environments, so readers see only their own.
      matchedMonitors: listed.map((m) => ({ id: m.id, name: m.name, groups: (sel.groups.get(m.id) ?? []).length, envs: envsOf(m.tags) })),
      failingGroups: [] as FailingGroup[],
    };
    // The evidence goes with the error: it names the monitor, and readers are shown its part only.
    if (broken) throw new SourceError(`monitor "${broken.name}": ${broken.lastSourceError ?? 'its data source is failing'}`, evidence);
    if (sel.monitors.length === 0) {
      return { status: 'fail', reason: `No unmuted monitor matches ${what}.`, evidence };
    }
    if (sel.monitors.length > MAX_MONITORS) {
      return { status: 'fail', reason: `${sel.monitors.length} monitors match ${what}; a monitor rule watches at most ${MAX_MONITORS}.`, evidence };
    }
    const groupCount = [...sel.groups.values()].reduce((n, g) => n + g.length, 0);
    if (groupCount === 0 && o.failOnNoGroupsFound) {
      return { status: 'fail', reason: `The ${sel.monitors.length} matched monitor(s) have no groups with data, and failOnNoGroupsFound is set.`, evidence };
    }
    // Every recorded transition inside the window counts, even one stamped later than this
    // check's clock (checks run a little after the event that woke them, on another clock
    // reading): once recorded, it has happened.
    const until = rule.windowEndsAt;
    const bad = (s: MonitorStateValue) => s === 'alert' || (s === 'no_data' && o.failOnNoData);
    const failing = await failingGroups(deps, sel, rule.windowStartsAt, until, bad);
    if (failing.length > 0) {
      return { status: 'fail', reason: `${describeFailingGroups(failing)}.`, evidence: { ...evidence, failingGroups: failing } };
    }
    const scope = `${sel.monitors.length} monitor(s), ${groupCount} group(s)`;
    if (now >= rule.windowEndsAt) {
      const span = o.duration === 0 ? `at ${iso(rule.windowStartsAt)}` : `from ${iso(rule.windowStartsAt)} to ${iso(rule.windowEndsAt)}`;
      return { status: 'pass', reason: `All ${scope} were OK or WARN ${span}.`, evidence };
    }
    // Transitions wake the rule at once; the timer is only for the window's end.
    return { status: 'in_progress', reason: `Watching ${scope} until ${iso(rule.windowEndsAt)}.`, evidence, nextCheckAt: rule.windowEndsAt };
  },

  watch(options) {
    const o = options as MonitorRuleOptions;
    if (o.monitorIds) return { keys: o.monitorIds.map((m) => monitorKey(m.id)) };
    const expr = parseMonitorQuery(o.query!);
    // A cheap candidate test; the check decides. A status term depends on the monitor's
    // other groups, so then every transition is a candidate.
    const anyTransition = mentions(expr, 'status');
    return {
      shareKey: `monitor-query:${o.query}`,
      matches: (event) => {
        if (event.kind !== 'monitor.transition') return false;
        if (anyTransition) return true;
        const mm = matchable(event.monitor, []);
        return matches(expr, mm, null) || matches(expr, mm, groupTagsOf(event.group));
      },
    };
  },
};
