import { Component } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { gql } from '../api.ts';
import { DryRunBadge, Duration, ErrorNote, Page, StatusBadge, Time, useQuery, useSubscription } from '../components.tsx';
import { evaluationFilter, LIST_FACETS, RANGES, timeRange, toggled, withParam } from '../filters.ts';
import { navigate, useLocation } from '../router.ts';

const EVALUATION_ROW = `id service env identifier version status reportedStatus dryRun justInTime gateId startedAt finishedAt decidedAt revision
  override { verdict by { name } }
  rules { id name type status reason dryRun }`;

export interface RuleRow {
  id: string;
  name: string;
  type: string;
  status: string;
  reason: string | null;
  dryRun: boolean;
}
export interface EvaluationRow {
  id: string;
  service: string;
  env: string;
  identifier: string;
  version: string | null;
  status: string;
  reportedStatus: string;
  dryRun: boolean;
  justInTime: boolean;
  gateId: string | null;
  startedAt: string;
  finishedAt: string | null;
  decidedAt: string | null;
  revision: number;
  /** A person's verdict in place of the gate's; null when nobody overrode it. */
  override: { verdict: string; by: { name: string } } | null;
  rules: RuleRow[];
}

interface Connection {
  evaluations: { totalCount: number; edges: Array<{ node: EvaluationRow }>; pageInfo: { endCursor: string | null; hasNextPage: boolean } };
}

const LIST = `query Evaluations($filter: EvaluationFilter, $first: Int!, $after: String) {
  evaluations(filter: $filter, first: $first, after: $after) {
    totalCount
    edges { node { ${EVALUATION_ROW} } }
    pageInfo { endCursor hasNextPage }
  }
}`;

const LIVE = `subscription EvaluationEvents($filter: EvaluationFilter) { evaluationEvents(filter: $filter) { ${EVALUATION_ROW} } }`;

const PAGE_SIZE = 50;
/**
 * Rows the live tail may add beyond the pages read: a tab left open on a busy CI otherwise grew by
 * one row per evaluation (each re-rendering them all) for as long as it stayed open.
 */
const MAX_LIVE_ROWS = 500;
/** Facet values taken from listed rows beyond those the API counted (a live row may be newer). */
const FACET_FROM_ROWS = 20;

interface FacetValue {
  value: string;
  count: number;
  label: string | null;
}
type Facets = Record<'service' | 'env' | 'identifier' | 'version' | 'status' | 'dryRun' | 'gate' | 'ruleType' | 'ruleName', FacetValue[]>;
const FACETS = `query EvaluationFacets($filter: EvaluationFilter) {
  evaluationFacets(filter: $filter, top: 20) {
    ${['service', 'env', 'identifier', 'version', 'status', 'dryRun', 'gate', 'ruleType', 'ruleName'].map((f) => `${f} { value count label }`).join(' ')}
  }
}`;
/** How long after subscribing the list is read again, to close the gap before the subscription ran. */
export const CATCH_UP_MS = 1500;
/** Live events change the counts: they are asked again at most this often. */
const FACETS_REFRESH_MS = 5000;

const FIXED_VALUES: Record<string, string[]> = {
  status: ['IN_PROGRESS', 'PASS', 'FAIL', 'CANCELED'],
  ruleType: ['MONITOR', 'FAULTY_DEPLOYMENT_DETECTION', 'WEBHOOK', 'FREEZE'],
};
const VALUE_LABELS: Record<string, string> = {
  IN_PROGRESS: 'In progress',
  PASS: 'Pass',
  FAIL: 'Fail',
  CANCELED: 'Canceled',
  MONITOR: 'Monitor',
  FAULTY_DEPLOYMENT_DETECTION: 'Faulty deployment detection',
  WEBHOOK: 'Webhook',
  FREEZE: 'Freeze',
};

/** Whether an evaluation (as an event carries it) belongs in the list the URL asks for. */
function matches(e: EvaluationRow, filter: Record<string, unknown>): boolean {
  const inList = (field: string, value: string | null) => {
    const list = filter[field] as string[] | undefined;
    return !list || (value !== null && list.includes(value));
  };
  if (!inList('service', e.service) || !inList('env', e.env) || !inList('identifier', e.identifier) || !inList('version', e.version) || !inList('status', e.status)) return false;
  if (filter.dryRun !== undefined && filter.dryRun !== e.dryRun) return false;
  if (filter.overridden !== undefined && filter.overridden !== (e.override !== null)) return false;
  if (!inList('gateIds', e.gateId)) return false;
  const ruleTypes = filter.ruleType as string[] | undefined;
  if (ruleTypes && !e.rules.some((r) => ruleTypes.includes(r.type))) return false;
  const ruleNames = filter.ruleName as string[] | undefined;
  if (ruleNames && !e.rules.some((r) => ruleNames.includes(r.name))) return false;
  if (filter.startedBefore && e.startedAt >= (filter.startedBefore as string)) return false;
  return e.startedAt >= (filter.startedAfter as string);
}

export function EvaluationStatusCell({ e }: { e: Pick<EvaluationRow, 'status' | 'dryRun' | 'override'> }) {
  return (
    <span class="status-cell">
      <StatusBadge status={e.status} testid="evaluation-status" />
      {e.override && (
        <span
          class="badge badge-override"
          data-testid="override-badge"
          data-verdict={e.override.verdict}
          title={`Overridden by ${e.override.by.name}: callers are told ${e.override.verdict}`}
        >
          overridden · {e.override.verdict}
        </span>
      )}
      {e.dryRun && e.status !== 'PASS' && e.status !== 'IN_PROGRESS' && <DryRunBadge status={e.status} />}
      {e.dryRun && (e.status === 'PASS' || e.status === 'IN_PROGRESS') && (
        <span class="badge badge-dry" data-testid="dry-run-badge">
          dry run
        </span>
      )}
    </span>
  );
}

function FailingRules({ rules }: { rules: RuleRow[] }) {
  const failing = rules.filter((r) => r.status === 'FAIL');
  if (failing.length === 0) return <span class="muted">—</span>;
  return (
    <ul class="failing-rules">
      {failing.map((r) => (
        <li key={r.id} data-testid="failing-rule">
          <strong>{r.name}</strong>
          {r.dryRun && <span class="muted"> (dry run)</span>}
          {r.reason && <span class="reason">: {r.reason}</span>}
        </li>
      ))}
    </ul>
  );
}

/**
 * One row, drawn again only when its evaluation changed: a live event re-renders the list, and
 * diffing every row of a long one per event left a busy tail behind by tens of seconds.
 */
class Row extends Component<{ e: EvaluationRow }> {
  override shouldComponentUpdate(next: { e: EvaluationRow }) {
    return next.e !== this.props.e;
  }
  override render({ e }: { e: EvaluationRow }) {
    return (
      <tr data-testid="evaluation-row" data-id={e.id} data-status={e.status}>
        <td>
          <a href={`/evaluations/${e.id}`}>
            <Time at={e.startedAt} />
            <span class="visually-hidden">
              {' '}
              evaluation of {e.service} in {e.env}
            </span>
          </a>
        </td>
        <td>
          <Time at={e.finishedAt} />
        </td>
        <td>
          <Duration from={e.startedAt} to={e.finishedAt} />
        </td>
        <td data-testid="cell-service">{e.service}</td>
        <td data-testid="cell-env">{e.env}</td>
        <td>{e.identifier}</td>
        <td>{e.version ?? <span class="muted">—</span>}</td>
        <td>
          <EvaluationStatusCell e={e} />
        </td>
        <td>
          <FailingRules rules={e.rules} />
        </td>
      </tr>
    );
  }
}

/** A yes/no filter as radio buttons (Any, yes, no), kept in the URL as `param`. */
function YesNoFacet({ param, id, legend, yes, no, params }: { param: string; id: string; legend: string; yes: string; no: string; params: URLSearchParams }) {
  const current = params.get(param) ?? '';
  return (
    <fieldset class="facet" data-testid={`facet-${param}`}>
      <legend>{legend}</legend>
      {[
        ['', 'Any'],
        ['true', yes],
        ['false', no],
      ].map(([value, label]) => (
        <div class="check" key={value}>
          <input
            type="radio"
            name={param}
            id={`${id}-${value || 'any'}`}
            checked={current === value}
            onChange={() => navigate(`/evaluations?${withParam(params, param, value!).toString()}`)}
          />
          <label for={`${id}-${value || 'any'}`}>{label}</label>
        </div>
      ))}
    </fieldset>
  );
}

function Facet({
  param,
  label,
  values,
  counts,
  params,
  labels,
}: {
  param: string;
  label: string;
  values: string[];
  counts: Map<string, number> | undefined;
  params: URLSearchParams;
  labels?: Record<string, string>;
}) {
  const selected = params.getAll(param);
  const all = [...new Set([...values, ...selected])];
  return (
    <fieldset class="facet" data-testid={`facet-${param}`}>
      <legend>{label}</legend>
      {all.length === 0 && <p class="muted small">No values in range</p>}
      {all.map((value, i) => {
        // By position: values differing only in punctuation ("error rate", "error_rate") must not share an id.
        const id = `facet-${param}-${i}`;
        return (
          <div class="check" key={value}>
            <input
              type="checkbox"
              id={id}
              checked={selected.includes(value)}
              onChange={() => navigate(`/evaluations?${toggled(params, param, value).toString()}`)}
              aria-describedby={counts?.has(value) ? `${id}-count` : undefined}
            />
            {/* Own properties only: a service may be named "constructor" or "toString". */}
            <label for={id}>
              {(labels && Object.hasOwn(labels, value) ? labels[value] : undefined) ?? (Object.hasOwn(VALUE_LABELS, value) ? VALUE_LABELS[value] : undefined) ?? value}
            </label>
            {counts?.has(value) && (
              <span class="count" id={`${id}-count`} title="evaluations with the other filters applied">
                {counts.get(value)}
              </span>
            )}
          </div>
        );
      })}
    </fieldset>
  );
}

function TimeRangePicker({ params, error }: { params: URLSearchParams; error?: { field: string; message: string } | undefined }) {
  const range = params.get('range') ?? '1d';
  const [from, setFrom] = useState(params.get('from') ?? '');
  const [to, setTo] = useState(params.get('to') ?? '');
  useEffect(() => {
    setFrom(params.get('from') ?? '');
    setTo(params.get('to') ?? '');
  }, [params.toString()]);
  return (
    <fieldset class="facet range">
      <legend>Time range</legend>
      <label for="range">Started in</label>
      <select id="range" value={range} onChange={(e) => navigate(`/evaluations?${withParam(params, 'range', (e.target as HTMLSelectElement).value).toString()}`)}>
        {RANGES.map(([k, l]) => (
          <option key={k} value={k}>
            {l}
          </option>
        ))}
      </select>
      {range === 'custom' && (
        <form
          class="custom-range"
          onSubmit={(e) => {
            e.preventDefault();
            navigate(`/evaluations?${withParam(withParam(params, 'from', from), 'to', to).toString()}`);
          }}
        >
          <label for="range-from">From</label>
          <input
            id="range-from"
            type="datetime-local"
            value={from}
            onInput={(e) => setFrom((e.target as HTMLInputElement).value)}
            aria-invalid={error?.field === 'from'}
            aria-describedby={error?.field === 'from' ? 'range-error' : undefined}
          />
          <label for="range-to">To (empty: now)</label>
          <input
            id="range-to"
            type="datetime-local"
            value={to}
            onInput={(e) => setTo((e.target as HTMLInputElement).value)}
            aria-invalid={error?.field === 'to'}
            aria-describedby={error?.field === 'to' ? 'range-error' : undefined}
          />
          {error && (
            <small id="range-error" class="field-error" role="alert">
              <span aria-hidden="true">⚠ </span>
              {error.message}
            </small>
          )}
          <button type="submit" class="small">
            Apply
          </button>
        </form>
      )}
    </fieldset>
  );
}

export function EvaluationsPage() {
  const { params } = useLocation();
  const search = params.toString();
  // The range is fixed when the filters change, so paging and the live tail agree on it.
  const range = useMemo(() => timeRange(params), [search]);
  const filter = useMemo(() => evaluationFilter(params, range), [search, range]);
  const list = useQuery<Connection>(LIST, { filter, first: PAGE_SIZE });
  const facets = useQuery<{ evaluationFacets: Facets }>(FACETS, { filter }, { skip: !!range.error });
  const facetsNow = useRef(facets);
  facetsNow.current = facets; // the timer refetches the filter shown then, not the one it was set under
  const facetsTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => () => void (facetsTimer.current && clearTimeout(facetsTimer.current)), []);
  const refreshFacetsSoon = () => {
    facetsTimer.current ??= setTimeout(() => {
      facetsTimer.current = null;
      void facetsNow.current.refetch();
    }, FACETS_REFRESH_MS);
  };
  const [rows, setRows] = useState<EvaluationRow[]>([]);
  const [cursor, setCursor] = useState<{ endCursor: string | null; hasNextPage: boolean }>({ endCursor: null, hasNextPage: false });
  const [total, setTotal] = useState<number | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [moreError, setMoreError] = useState<unknown>(null);
  const paused = params.get('paused') === '1';
  const [missed, setMissed] = useState(0);
  // Events for ids already listed keep a list consistent between refetches.
  const known = useRef(new Map<string, number>());
  // How many rows the list may hold: the pages read, plus MAX_LIVE_ROWS for the live tail.
  const maxRows = useRef(MAX_LIVE_ROWS);
  const [trimmed, setTrimmed] = useState(false);

  useEffect(() => {
    if (!list.data) return;
    const page = list.data.evaluations;
    setRows(page.edges.map((e) => e.node));
    known.current = new Map(page.edges.map((e) => [e.node.id, e.node.revision]));
    setCursor(page.pageInfo);
    setTotal(page.totalCount);
    setMissed(0);
    maxRows.current = MAX_LIVE_ROWS;
    setTrimmed(false);
  }, [list.data]);

  // Past the limit the oldest rows go; 'Load older' would then skip them, so it gives way to a reread.
  useEffect(() => {
    if (rows.length <= maxRows.current) return;
    for (const r of rows.slice(maxRows.current)) known.current.delete(r.id);
    setRows(rows.slice(0, maxRows.current));
    setTrimmed(true);
  }, [rows]);

  const live = !range.startedBefore;
  const liveError = useSubscription<{ evaluationEvents: EvaluationRow }>(
    LIVE,
    { filter: { ...filter, startedAfter: undefined, startedBefore: undefined } },
    ({ evaluationEvents: e }) => {
      const seen = known.current.get(e.id);
      if (seen !== undefined && seen >= e.revision) return;
      if (paused) {
        if (seen === undefined && matches(e, filter)) setMissed((n) => n + 1);
        return;
      }
      if (!matches(e, filter) && seen === undefined) return;
      known.current.set(e.id, e.revision);
      refreshFacetsSoon();
      setRows((old) => {
        const at = old.findIndex((r) => r.id === e.id);
        if (at >= 0) return old.map((r, i) => (i === at ? e : r));
        setTotal((t) => (t === null ? t : t + 1));
        return [e, ...old];
      });
    },
    { skip: !live },
  );

  // An evaluation started between the list's query and the subscription's start on the server
  // would be missed by both: once the subscription has had time to start, the newest page is read
  // again and what it holds that the list lacks is merged in.
  const pausedNow = useRef(paused);
  pausedNow.current = paused;
  // The filter shown now: an answer to a read made under another one (slow network) is dropped.
  const searchNow = useRef(search);
  searchNow.current = search;
  useEffect(() => {
    if (!live) return;
    const timer = setTimeout(async () => {
      try {
        const d = await gql<Connection>(LIST, { filter, first: PAGE_SIZE });
        if (pausedNow.current || searchNow.current !== search) return;
        const fresh = d.evaluations.edges.map((e) => e.node).filter((n) => (known.current.get(n.id) ?? -1) < n.revision);
        if (fresh.length === 0) return;
        for (const n of fresh) known.current.set(n.id, n.revision);
        setRows((old) => {
          const byId = new Map(fresh.map((n) => [n.id, n]));
          const updated = old.map((r) => byId.get(r.id) ?? r);
          const added = fresh.filter((n) => !old.some((r) => r.id === n.id));
          return [...added, ...updated].sort((x, y) => (x.startedAt < y.startedAt ? 1 : x.startedAt > y.startedAt ? -1 : 0));
        });
      } catch {
        // The list and its error note stay as they are; a reconnection refetches everything.
      }
    }, CATCH_UP_MS);
    return () => clearTimeout(timer);
  }, [search, live]);

  const loadMore = async () => {
    setLoadingMore(true);
    setMoreError(null);
    try {
      const d = await gql<Connection>(LIST, { filter, first: PAGE_SIZE, after: cursor.endCursor });
      if (searchNow.current !== search) return;
      const fresh = d.evaluations.edges.map((e) => e.node).filter((n) => !known.current.has(n.id));
      for (const n of fresh) known.current.set(n.id, n.revision);
      maxRows.current = Math.max(maxRows.current, rows.length + fresh.length + MAX_LIVE_ROWS);
      setRows((old) => [...old, ...fresh]);
      setCursor(d.evaluations.pageInfo);
    } catch (err) {
      setMoreError(err);
    } finally {
      setLoadingMore(false);
    }
  };

  // Facet values: the API's (with counts, most first), then any other value a listed evaluation has
  // (a live one may be newer than the counts), and the fixed enums.
  const api = facets.data?.evaluationFacets;
  const countsOf = (param: string) => (api ? new Map((api[param as keyof Facets] ?? []).map((v) => [v.value, v.count])) : undefined);
  const seen = (param: string, pick: (r: EvaluationRow) => string | null | string[]) => {
    const fromApi = (api?.[param as keyof Facets] ?? []).map((v) => v.value);
    // At most FACET_FROM_ROWS more from the rows: a live tail of 500 versions is not a facet.
    return [...new Set([...fromApi, ...[...new Set(rows.flatMap((r) => pick(r) ?? []))].sort().slice(0, FACET_FROM_ROWS)])];
  };
  const gateLabels: Record<string, string> = Object.fromEntries(rows.filter((r) => r.gateId).map((r) => [r.gateId!, `${r.service} / ${r.env} / ${r.identifier}`]));
  for (const g of api?.gate ?? []) if (g.label) gateLabels[g.value] = g.label.replaceAll('/', ' / ');
  const facetValues: Record<string, string[]> = {
    service: seen('service', (r) => r.service),
    env: seen('env', (r) => r.env),
    identifier: seen('identifier', (r) => r.identifier),
    version: seen('version', (r) => r.version),
    status: FIXED_VALUES.status!,
    ruleType: FIXED_VALUES.ruleType!,
    ruleName: seen('ruleName', (r) => r.rules.map((x) => x.name)),
    gate: seen('gate', (r) => r.gateId),
  };
  const activeFilters = [...params.keys()].filter((k) => k !== 'paused').length > 0;

  return (
    <Page
      title="Evaluations"
      actions={
        live && (
          <div class="live" data-testid="live-indicator" data-state={paused ? 'paused' : 'live'}>
            <span class={`dot ${paused ? 'dot-paused' : 'dot-live'}`} aria-hidden="true" />
            <span>{paused ? 'Paused' : 'Live'}</span>
            <button
              type="button"
              class="small secondary"
              aria-pressed={paused}
              onClick={() => navigate(`/evaluations?${withParam(params, 'paused', paused ? null : '1').toString()}`, { replace: true })}
            >
              {paused ? 'Resume' : 'Pause'}
            </button>
          </div>
        )
      }
    >
      <div class="explorer">
        <aside class="facets" aria-label="Filters">
          <TimeRangePicker params={params} error={range.error} />
          {LIST_FACETS.map(([param, label]) => (
            <Facet
              key={param}
              param={param}
              label={label}
              values={facetValues[param] ?? []}
              counts={countsOf(param)}
              params={params}
              labels={param === 'gate' ? gateLabels : undefined}
            />
          ))}
          <YesNoFacet param="dryRun" id="dry" legend="Gate dry run" yes="Dry run" no="Not dry run" params={params} />
          <YesNoFacet param="overridden" id="overridden" legend="Overridden" yes="Overridden" no="Not overridden" params={params} />
          {activeFilters && (
            <a class="clear" href="/evaluations">
              Clear all filters
            </a>
          )}
        </aside>
        <div class="results">
          <p class="summary" aria-live="polite" data-testid="evaluations-summary">
            {list.loading && !list.data
              ? 'Loading…'
              : total !== null
                ? `${total} evaluation${total === 1 ? '' : 's'}${rows.length < total ? `, newest ${rows.length} shown` : ''}`
                : ''}
          </p>
          {paused && missed > 0 && (
            <p class="notice" role="status">
              {missed} new evaluation{missed === 1 ? '' : 's'} while paused.{' '}
              <button type="button" class="link" onClick={() => navigate(`/evaluations?${withParam(params, 'paused', null).toString()}`, { replace: true })}>
                Resume
              </button>
            </p>
          )}
          <ErrorNote error={list.error} />
          <ErrorNote error={liveError && `Live updates stopped: ${liveError.message}`} />
          <div class="table-wrap">
            <table class="evaluations" data-testid="evaluations-table">
              <caption class="visually-hidden">Evaluations, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Started</th>
                  <th scope="col">Finished</th>
                  <th scope="col">Duration</th>
                  <th scope="col">Service</th>
                  <th scope="col">Env</th>
                  <th scope="col">Identifier</th>
                  <th scope="col">Version</th>
                  <th scope="col">Status</th>
                  <th scope="col">Failing rules</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((e) => (
                  <Row key={e.id} e={e} />
                ))}
              </tbody>
            </table>
          </div>
          {!list.loading && rows.length === 0 && !list.error && <p class="empty">No evaluation matches these filters in this time range.</p>}
          <ErrorNote error={moreError} />
          {trimmed && (
            <p class="notice" role="status">
              Only the newest {maxRows.current} evaluations are kept while the list is live.{' '}
              <button type="button" class="link" onClick={() => void list.refetch()}>
                Read the list again
              </button>{' '}
              to page through older ones.
            </p>
          )}
          {cursor.hasNextPage && !trimmed && (
            <button type="button" class="secondary" onClick={loadMore} disabled={loadingMore}>
              {loadingMore ? 'Loading…' : 'Load older evaluations'}
            </button>
          )}
        </div>
      </div>
    </Page>
  );
}
