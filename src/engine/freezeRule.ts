// The freeze rule: fails while a freeze applies to the evaluation's service and environment.
// Freezes come from the rule's calendar windows, from ad-hoc freezes set through the API
// (createFreeze / endFreeze), and, with an incidentQuery, from any matching monitor in ALERT.
// `duration` is how long the rule waits for the freezes to end: it passes at the first check
// that finds none, and fails when the wait is over and one still applies (at once with
// duration 0, or when a calendar window is known to outlast the wait: nobody can lift it).
// Lifting a freeze or a monitor's recovery wakes the rule at once; a planned end, by timer.

import type { EvaluationRow } from '../db/evaluations.ts';
import { activeFreezesFor } from '../db/freezes.ts';
import type { Deps } from '../domain/deps.ts';
import { SourceError } from '../domain/errors.ts';
import { calendarFreezeAt } from '../domain/freezeCalendar.ts';
import { describeFreezes, type FreezeEntry, type FreezeEvidence, freezeKeyOf } from '../domain/freezeEvidence.ts';
import { envsOf, monitorUrl } from '../domain/monitors.ts';
import type { FreezeRuleOptions } from '../domain/ruleOptions.ts';
import { monitorRunner, selectByQuery } from './monitorRule.ts';
import { type CheckResult, freezeKey, type RuleRunner } from './runner.ts';

/** Incident groups named in the evidence at most; the rule's verdict needs one. */
const MAX_INCIDENT_ENTRIES = 20;
/** Freezes remembered as waited for, at most. */
const MAX_WAITED = 20;

type FreezeState = {
  /** Every freeze found at some check, by freezeKeyOf. */
  seen: FreezeEntry[];
};

const iso = (d: Date) => d.toISOString();

/** The freezes in force at `now` for this evaluation. */
async function activeFreezes(deps: Deps, o: FreezeRuleOptions, e: EvaluationRow, now: Date): Promise<FreezeEntry[]> {
  const out: FreezeEntry[] = [];
  for (const w of o.calendars) {
    const open = calendarFreezeAt(w, now);
    if (open) {
      out.push({
        kind: 'calendar',
        name: w.name ?? w.cron,
        cron: w.cron,
        timeZone: w.timeZone,
        startedAt: iso(open.startedAt),
        endsAt: iso(open.endsAt),
        ...(open.endsAtLeast && { endsAtLeast: true }),
      });
    }
  }
  if (o.adHoc) {
    for (const f of await activeFreezesFor(deps.db, e.env, e.service, now)) {
      out.push({ kind: 'ad_hoc', name: f.reason, freezeId: f.id, setBy: f.createdByName, service: f.service, startedAt: iso(f.startsAt), endsAt: f.endsAt ? iso(f.endsAt) : null });
    }
  }
  if (o.incidentQuery) out.push(...(await incidents(deps, o.incidentQuery, e)));
  return out;
}

/** Groups in ALERT among the monitors the query matches, as the trigger may see them. */
async function incidents(deps: Deps, query: string, e: EvaluationRow): Promise<FreezeEntry[]> {
  const sel = await selectByQuery(deps, query, e.triggerEnvs ?? null);
  // A monitor whose own source fails cannot say there is no incident: retried, then the policy.
  const broken = sel.monitors.find((m) => m.sourceErrors > 0);
  if (broken) throw new SourceError(`monitor "${broken.name}" of the incident query: ${broken.lastSourceError ?? 'its data source is failing'}`);
  const out: FreezeEntry[] = [];
  for (const m of sel.monitors) {
    for (const g of sel.groups.get(m.id) ?? []) {
      if (g.state !== 'alert' || out.length >= MAX_INCIDENT_ENTRIES) continue;
      out.push({ kind: 'incident', name: m.name, monitorId: m.id, group: g.group, startedAt: iso(g.since), endsAt: null, url: monitorUrl(deps, m.id), envs: envsOf(m.tags) });
    }
  }
  return out;
}

/** The earliest known end among the freezes: when to look again without an event. */
function earliestEnd(active: readonly FreezeEntry[]): Date | null {
  const ends = active.flatMap((f) => (f.endsAt ? [Date.parse(f.endsAt)] : []));
  return ends.length > 0 ? new Date(Math.min(...ends)) : null;
}

export const freezeRunner: RuleRunner = {
  type: 'freeze',

  plan(options, start) {
    const o = options as FreezeRuleOptions;
    return { windowStartsAt: start, windowEndsAt: new Date(start.getTime() + o.duration * 1000), nextCheckAt: start };
  },

  async check(deps, { rule, evaluation, now }): Promise<CheckResult> {
    const o = rule.options as FreezeRuleOptions;
    const active = await activeFreezes(deps, o, evaluation, now);
    const before = ((rule.state as FreezeState | null)?.seen ?? []).filter((f) => !active.some((a) => freezeKeyOf(a) === freezeKeyOf(f)));
    const state: FreezeState = { seen: [...before, ...active].slice(-MAX_WAITED) };
    const evidence: FreezeEvidence = { active, waitedFor: before };
    if (active.length === 0) {
      const waited = before.length > 0 ? ` (it waited for ${describeFreezes(before)}, over now)` : '';
      return { status: 'pass', reason: `No freeze applies at ${iso(now)}${waited}.`, evidence, state };
    }
    const frozen = `Frozen: ${describeFreezes(active)}`;
    const shown = { evidence, state };
    if (now >= rule.windowEndsAt) {
      const waited = o.duration > 0 ? `; the rule waited until ${iso(rule.windowEndsAt)}` : '';
      return { status: 'fail', reason: `${frozen}${waited}.`, ...shown };
    }
    // A calendar window nobody can lift that outlasts the wait: the answer is known now.
    const outlasting = active.find((f) => f.kind === 'calendar' && f.endsAt !== null && Date.parse(f.endsAt) >= rule.windowEndsAt.getTime());
    if (outlasting) return { status: 'fail', reason: `${frozen}, past the end of the rule's wait at ${iso(rule.windowEndsAt)}.`, ...shown };
    const end = earliestEnd(active);
    const next = end && end < rule.windowEndsAt ? end : rule.windowEndsAt;
    return { status: 'in_progress', reason: `${frozen}; waiting until ${iso(rule.windowEndsAt)} for it to end.`, ...shown, nextCheckAt: next };
  },

  watch(options, evaluation) {
    const o = options as FreezeRuleOptions;
    const key = freezeKey(evaluation.env);
    if (!o.incidentQuery) return { keys: o.adHoc ? [key] : [] };
    // Both a freeze of the environment and a transition of a matching monitor may end a freeze.
    const monitors = monitorRunner.watch!({ query: o.incidentQuery }, evaluation);
    if ('keys' in monitors) return monitors;
    return {
      shareKey: `freeze:${evaluation.env}|${o.adHoc}|${monitors.shareKey}`,
      matches: (event) => (event.kind === 'freeze.changed' ? o.adHoc && event.env === evaluation.env : monitors.matches(event)),
    };
  },
};
