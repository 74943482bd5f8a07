import { useEffect, useRef, useState } from 'preact/hooks';
import { connection } from '../api.ts';
import { ErrorNote, Page, StatusBadge, Time, useQuery, useSubscription } from '../components.tsx';
import { toggled, withParam } from '../filters.ts';
import { navigate, useLocation } from '../router.ts';
import { CATCH_UP_MS } from './evaluations.tsx';

interface MonitorRow {
  id: string;
  name: string;
  type: string;
  state: string | null;
  muted: boolean;
  priority: number | null;
  tags: string[];
  sourceErrors: number;
  updatedAt: string;
  groups: Array<{ group: string; state: string }>;
}
interface Transition {
  at: string;
  from: string | null;
  to: string;
  group: string;
  message: string | null;
}
interface StateChange extends Transition {
  monitor: { id: string; state: string | null; groups: Array<{ group: string; state: string; since: string; lastReportedAt: string; message: string | null }> };
}

const STATES = ['ALERT', 'WARN', 'NO_DATA', 'OK'];
const TYPES = ['EXTERNAL', 'PROMETHEUS', 'APM'];
const ROW = 'id name type state muted priority tags sourceErrors updatedAt groups { group state }';
const LIST = `query Monitors($query: String, $filter: MonitorFilter, $first: Int!, $after: String) {
  monitors(query: $query, filter: $filter, first: $first, after: $after) { totalCount edges { node { ${ROW} } } pageInfo { endCursor hasNextPage } }
}`;
const CHANGE = 'at from to group message monitor { id state groups { group state since lastReportedAt message } }';
const CHANGES = `subscription MonitorStateChanged($query: String) { monitorStateChanged(query: $query) { ${CHANGE} } }`;
/** Monitors whose latest change the list keeps at most. */
const MAX_HEARD = 1000;
const ONE_MONITOR_CHANGES = `subscription OneMonitorStateChanged($id: ID!) { monitorStateChanged(monitorId: $id) { ${CHANGE} } }`;

/**
 * A change made between a page's query and the start of its subscription reaches neither: the
 * page reads again once the subscription has surely started (and again after a reconnection,
 * when the subscriptions start over). Events received since subscribing are kept and win over
 * what a read returns, since every change after the subscription started arrives as one, in order;
 * a reconnection forgets them (`forget`): changes made while the socket was down never arrived.
 */
function useCatchUp(refetch: () => void, key: string, forget: () => void): void {
  const again = useRef(refetch);
  again.current = refetch;
  const reset = useRef(forget);
  reset.current = forget;
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const later = () => {
      clearTimeout(timer);
      timer = setTimeout(() => again.current(), CATCH_UP_MS);
    };
    later();
    const off = connection.reconnected.on(() => {
      reset.current();
      later();
    });
    return () => {
      clearTimeout(timer);
      off();
    };
  }, [key]);
}

export function MonitorsPage() {
  const { params } = useLocation();
  const query = params.get('q') ?? '';
  const states = params.getAll('state');
  const types = params.getAll('type');
  const after = params.get('after');
  const filter = { ...(states.length && { states }), ...(types.length && { types }) };
  const q = useQuery<{ monitors: { totalCount: number; edges: Array<{ node: MonitorRow }>; pageInfo: { endCursor: string | null; hasNextPage: boolean } } }>(LIST, {
    query: query || null,
    filter,
    first: 50,
    after,
  });
  const [text, setText] = useState(query);
  useEffect(() => setText(query), [query]);
  // Live: a listed monitor's state and groups change in place, from its newest event since subscribing.
  const [latest, setLatest] = useState<ReadonlyMap<string, StateChange>>(new Map());
  useEffect(() => setLatest(new Map()), [query]);
  useSubscription<{ monitorStateChanged: StateChange }>(CHANGES, { query: query || null }, ({ monitorStateChanged: c }) => {
    if (latest.size >= MAX_HEARD && !latest.has(c.monitor.id)) {
      // A long-open page of a busy fleet: forget what was heard and read the page again instead.
      setLatest(new Map());
      q.refetch();
      return;
    }
    setLatest((old) => new Map(old).set(c.monitor.id, c));
  });
  useCatchUp(q.refetch, query, () => setLatest(new Map()));
  const rows = (q.data?.monitors.edges.map((e) => e.node) ?? []).map((m) => {
    const c = latest.get(m.id);
    return c ? { ...m, state: c.monitor.state, groups: c.monitor.groups } : m;
  });
  const go = (next: URLSearchParams) => navigate(`/monitors${next.toString() ? `?${next.toString()}` : ''}`);
  return (
    <Page title="Monitors">
      <div class="explorer">
        <aside class="facets" aria-label="Filters">
          {/* biome-ignore lint/a11y/useSemanticElements: a form is the search landmark; a <search> wrapper would add a box to lay out for nothing */}
          <form
            class="facet range"
            role="search"
            onSubmit={(e) => {
              e.preventDefault();
              go(withParam(withParam(params, 'after', null), 'q', text.trim()));
            }}
          >
            <label for="monitor-query">Search</label>
            <input id="monitor-query" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} placeholder="service:checkout status:alert" />
            <button type="submit" class="small">
              Search
            </button>
          </form>
          <fieldset class="facet" data-testid="facet-state">
            <legend>State</legend>
            {STATES.map((s) => (
              <div class="check" key={s}>
                <input type="checkbox" id={`state-${s}`} checked={states.includes(s)} onChange={() => go(toggled(withParam(params, 'after', null), 'state', s))} />
                <label for={`state-${s}`}>
                  <StatusBadge status={s} />
                </label>
              </div>
            ))}
          </fieldset>
          <fieldset class="facet" data-testid="facet-type">
            <legend>Type</legend>
            {TYPES.map((t) => (
              <div class="check" key={t}>
                <input type="checkbox" id={`type-${t}`} checked={types.includes(t)} onChange={() => go(toggled(withParam(params, 'after', null), 'type', t))} />
                <label for={`type-${t}`}>{t.toLowerCase()}</label>
              </div>
            ))}
          </fieldset>
        </aside>
        <div class="results">
          <ErrorNote error={q.error} />
          <p class="summary" aria-live="polite">
            {q.data ? `${q.data.monitors.totalCount} monitor${q.data.monitors.totalCount === 1 ? '' : 's'}` : q.error ? '' : 'Loading…'}
          </p>
          <div class="table-wrap">
            <table data-testid="monitors-table">
              <caption class="visually-hidden">Monitors</caption>
              <thead>
                <tr>
                  <th scope="col">Monitor</th>
                  <th scope="col">State</th>
                  <th scope="col">Groups</th>
                  <th scope="col">Type</th>
                  <th scope="col">Tags</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((m) => {
                  const bad = m.groups.filter((g) => g.state !== 'OK').length;
                  return (
                    <tr key={m.id} data-testid="monitor-row" data-id={m.id} data-state={m.state ?? ''}>
                      <td>
                        <a href={`/monitors/${m.id}`}>{m.name}</a>
                        {m.muted && <span class="muted small"> (muted)</span>}
                      </td>
                      <td>{m.state ? <StatusBadge status={m.state} testid="monitor-state" /> : <span class="muted">no report yet</span>}</td>
                      <td>
                        {m.groups.length}
                        {bad > 0 && <span class="small"> ({bad} not OK)</span>}
                      </td>
                      <td>{m.type.toLowerCase()}</td>
                      <td class="small">{m.tags.join(', ')}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          {q.data?.monitors.pageInfo.hasNextPage && (
            <p>
              <a href={`/monitors?${withParam(params, 'after', q.data.monitors.pageInfo.endCursor).toString()}`}>Next monitors</a>
            </p>
          )}
        </div>
      </div>
    </Page>
  );
}

interface Monitor extends MonitorRow {
  query: string;
  comparator: string;
  critical: number | null;
  warning: number | null;
  noDataTimeframe: number | null;
  lastSourceError: string | null;
  importedFromRule: string | null;
  groups: Array<{ group: string; state: string; since: string; lastReportedAt: string; message: string | null }>;
  transitions: Transition[];
}

export function MonitorPage({ id }: { id: string }) {
  const q = useQuery<{ monitor: Monitor | null }>(
    `query Monitor($id: ID!) { monitor(id: $id) { ${ROW} query comparator critical warning noDataTimeframe lastSourceError importedFromRule
      groups { group state since lastReportedAt message } transitions(last: 100) { at from to group message } } }`,
    { id },
  );
  // Changes since subscribing, oldest first: they win over what a read returned (see useCatchUp).
  const [events, setEvents] = useState<StateChange[]>([]);
  useEffect(() => setEvents([]), [id]);
  const m = q.data?.monitor;
  useSubscription<{ monitorStateChanged: StateChange }>(ONE_MONITOR_CHANGES, { id }, ({ monitorStateChanged: c }) => {
    if (c.monitor.id === id) setEvents((old) => [...old.slice(-99), c]);
  });
  useCatchUp(q.refetch, id, () => setEvents([]));
  if (q.loading && !q.data) return <Page title="Monitor">Loading…</Page>;
  if (!m)
    return (
      <Page title="Monitor not found">
        <ErrorNote error={q.error} />
        <p>No monitor {id} that this key may see.</p>
        <a href="/monitors">All monitors</a>
      </Page>
    );
  const last = events.at(-1);
  const state = last ? last.monitor.state : m.state;
  const groups = last ? last.monitor.groups : m.groups;
  const same = (a: Transition, b: Transition) => a.at === b.at && a.group === b.group && a.to === b.to;
  const heard = events.filter((c) => !m.transitions.some((t) => same(t, c))).map(({ at, from, to, group, message }) => ({ at, from, to, group, message }));
  const transitions = [...heard.reverse(), ...m.transitions];
  return (
    <Page
      title={
        <>
          {m.name} {state ? <StatusBadge status={state} testid="monitor-state" /> : null}
        </>
      }
    >
      <section class="card">
        <dl class="facts">
          <dt>Type</dt>
          <dd>{m.type.toLowerCase()}</dd>
          {m.query && (
            <>
              <dt>Query</dt>
              <dd>
                <code>{m.query}</code>
              </dd>
            </>
          )}
          {(m.critical !== null || m.warning !== null) && (
            <>
              <dt>Thresholds</dt>
              <dd>
                {m.comparator === 'ABOVE' ? '≥' : '≤'} {m.critical ?? '—'} alert, {m.warning ?? '—'} warn
              </dd>
            </>
          )}
          <dt>Tags</dt>
          <dd>{m.tags.join(', ') || '—'}</dd>
          <dt>Muted</dt>
          <dd>{m.muted ? 'yes: monitor rules ignore it' : 'no'}</dd>
          {m.sourceErrors > 0 && (
            <>
              <dt>Source errors</dt>
              <dd>
                {m.sourceErrors} in a row{m.lastSourceError ? `: ${m.lastSourceError}` : ''}
              </dd>
            </>
          )}
        </dl>
      </section>
      <section aria-labelledby="groups-title">
        <h2 id="groups-title">Groups</h2>
        <div class="table-wrap">
          <table data-testid="groups-table">
            <thead>
              <tr>
                <th scope="col">Group</th>
                <th scope="col">State</th>
                <th scope="col">Since</th>
                <th scope="col">Last report</th>
                <th scope="col">Message</th>
              </tr>
            </thead>
            <tbody>
              {groups.map((g) => (
                <tr key={g.group} data-testid="group-row" data-group={g.group}>
                  <td>{g.group}</td>
                  <td>
                    <StatusBadge status={g.state} />
                  </td>
                  <td>
                    <Time at={g.since} />
                  </td>
                  <td>
                    <Time at={g.lastReportedAt} />
                  </td>
                  <td class="small">{g.message ?? ''}</td>
                </tr>
              ))}
              {groups.length === 0 && (
                <tr>
                  <td colSpan={5} class="muted">
                    No group has reported yet.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      </section>
      <section aria-labelledby="transitions-title">
        <h2 id="transitions-title">Transitions</h2>
        <ol class="timeline" reversed data-testid="transitions">
          {transitions.map((t, i) => (
            <li key={`${t.at}-${t.group}-${i}`} data-testid="transition">
              <Time at={t.at} /> {t.group}: {t.from ? <StatusBadge status={t.from} /> : 'new'} → <StatusBadge status={t.to} />
              {t.message && <span class="small muted"> {t.message}</span>}
            </li>
          ))}
          {transitions.length === 0 && <li class="muted">No transition yet.</li>}
        </ol>
      </section>
    </Page>
  );
}
