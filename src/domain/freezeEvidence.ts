// What a freeze rule records (src/engine/freezeRule.ts): each freeze it found, with when it
// ends, and the sentence that names them. Incident freezes name monitors, so each carries the
// monitor's environments and a reader sees only those of its own (see ruleEvidence.ts).

export type FreezeKind = 'calendar' | 'ad_hoc' | 'incident';

export type FreezeEntry = {
  kind: FreezeKind;
  /** Calendar: its name, else its cron; ad hoc: its reason; incident: the monitor's name. */
  name: string;
  startedAt: string | null;
  /** null: until lifted (ad hoc) or until the monitor recovers (incident). */
  endsAt: string | null;
  /** Calendar windows that chain on past what was computed: ends at endsAt at the earliest. */
  endsAtLeast?: boolean;
  cron?: string;
  timeZone?: string;
  freezeId?: string;
  /** The key that set an ad-hoc freeze. */
  setBy?: string;
  /** An ad-hoc freeze of one service; null for every service of the environment. */
  service?: string | null;
  monitorId?: string;
  group?: string;
  url?: string;
  /** An incident monitor's environments when the check ran. */
  envs?: string[];
};

export type FreezeEvidence = {
  /** Freezes in force at the latest check. */
  active: FreezeEntry[];
  /** Freezes found at an earlier check that are over now. */
  waitedFor: FreezeEntry[];
};

/** Entries of one freeze across checks share a key. */
export const freezeKeyOf = (f: FreezeEntry) =>
  f.kind === 'calendar' ? `calendar:${f.cron}:${f.timeZone}:${f.startedAt}` : f.kind === 'ad_hoc' ? `ad_hoc:${f.freezeId}` : `incident:${f.monitorId}:${f.group}`;

function describeFreeze(f: FreezeEntry): string {
  switch (f.kind) {
    case 'calendar':
      return `calendar window "${f.name}" (${f.cron}, ${f.timeZone}) until ${f.endsAtLeast ? 'at least ' : ''}${f.endsAt}`;
    case 'ad_hoc':
      return `freeze "${f.name}" set by ${f.setBy ?? 'unknown'}${f.endsAt ? ` until ${f.endsAt}` : ' until lifted'}`;
    case 'incident':
      return `incident: monitor "${f.name}"${f.group && f.group !== '*' ? ` (${f.group})` : ''} ALERT since ${f.startedAt}`;
  }
}

/** "calendar window "weekend" (…) until …; freeze "release train" set by ops until lifted and 2 more" */
export function describeFreezes(entries: readonly FreezeEntry[]): string {
  const first = entries.slice(0, 3).map(describeFreeze).join('; ');
  return entries.length > 3 ? `${first} and ${entries.length - 3} more` : first;
}
