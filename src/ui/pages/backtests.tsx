import { useState } from 'preact/hooks';
import { ApiError, gql } from '../api.ts';
import { DryRunBadge, ErrorNote, Field, formatDuration, Page, StatusBadge, Time, useQuery, useSubscription } from '../components.tsx';
import { navigate } from '../router.ts';
import { can, type Viewer } from '../viewer.ts';

// Backtests: a gate's rules replayed over the deploys found in the stored telemetry. Started from
// a gate's page; this page follows one live (backtestProgress) and shows what each deploy would
// have got, the flagged ones first in the eye: a FAIL row, and whether a rollback followed.

const BACKTEST = `id gateId service env from to status error revision createdBy createdAt finishedAt progress { done total }
  skippedRules { name type why }
  summary { deploys failed passed undecided failedThenRolledBack truncated }
  deploys { version firstSeenAt verdict realVerdict decidingRule decidedAt timeToVerdictSeconds reason rollback { at versions } }`;

interface Deploy {
  version: string;
  firstSeenAt: string;
  verdict: 'PASS' | 'FAIL' | 'UNDECIDED';
  realVerdict: 'PASS' | 'FAIL' | 'UNDECIDED';
  decidingRule: string | null;
  decidedAt: string | null;
  timeToVerdictSeconds: number | null;
  reason: string;
  rollback: { at: string; versions: string[] } | null;
}

interface Backtest {
  id: string;
  gateId: string | null;
  service: string;
  env: string;
  from: string;
  to: string;
  status: 'RUNNING' | 'DONE' | 'CANCELED' | 'FAILED';
  error: string | null;
  revision: number;
  createdBy: string;
  createdAt: string;
  finishedAt: string | null;
  progress: { done: number; total: number };
  skippedRules: Array<{ name: string; type: string; why: string }>;
  summary: { deploys: number; failed: number; passed: number; undecided: number; failedThenRolledBack: number; truncated: boolean } | null;
  deploys: Deploy[];
}

const asError = (err: unknown) => (err instanceof ApiError ? err : new ApiError([{ message: String(err) }]));

/** datetime-local's value for an instant, in the browser's time zone. */
function localInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** On a gate's page: start a backtest over a window (the last day by default), and the gate's past ones. */
export function GateBacktests({ gateId, who }: { gateId: string; who: Viewer }) {
  const [from, setFrom] = useState(() => localInput(new Date(Date.now() - 86_400_000)));
  const [to, setTo] = useState(() => localInput(new Date()));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const past = useQuery<{ backtests: Array<Pick<Backtest, 'id' | 'status' | 'from' | 'to' | 'createdAt' | 'summary' | 'progress'>> }>(
    `query GateBacktests($gateId: ID!) { backtests(gateId: $gateId, first: 5) { id status from to createdAt progress { done total } summary { deploys failed } } }`,
    { gateId },
  );
  const start = async (e: Event) => {
    e.preventDefault();
    setErrors({});
    setGeneral(null);
    const f = new Date(from);
    const t = new Date(to);
    if (Number.isNaN(f.getTime())) return setErrors({ 'input.from': 'from must be a date and time' });
    if (Number.isNaN(t.getTime())) return setErrors({ 'input.to': 'to must be a date and time' });
    setBusy(true);
    try {
      const d = await gql<{ backtestGate: { id: string } }>(`mutation BacktestGate($input: BacktestGateInput!) { backtestGate(input: $input) { id } }`, {
        input: { gateId, from: f.toISOString(), to: t.toISOString() },
      });
      navigate(`/backtests/${d.backtestGate.id}`);
    } catch (err) {
      const fields = asError(err).fieldErrors();
      setErrors(fields);
      if (!Object.keys(fields).some((k) => k === 'input.from' || k === 'input.to')) setGeneral(asError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="gate-backtests-title">
      <h2 id="gate-backtests-title">Backtest</h2>
      <p class="small muted">How would this gate have judged the deploys already made? Its rules are replayed on each version that first appeared in the window.</p>
      {can(who, 'EVALUATIONS_WRITE') && (
        <form class="card" onSubmit={start} aria-labelledby="gate-backtests-title" noValidate data-testid="backtest-form">
          <div class="form-grid">
            <Field label="From" name="input.from" errors={errors}>
              {(p) => <input {...p} type="datetime-local" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />}
            </Field>
            <Field label="To" name="input.to" errors={errors} hint="at most 7 days after from">
              {(p) => <input {...p} type="datetime-local" value={to} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />}
            </Field>
          </div>
          <ErrorNote error={general} />
          <div class="form-actions">
            <button type="submit" disabled={busy}>
              Backtest on past deploys
            </button>
          </div>
        </form>
      )}
      <ul class="plain" data-testid="gate-backtests">
        {(past.data?.backtests ?? []).map((b) => (
          <li key={b.id}>
            <a href={`/backtests/${b.id}`}>
              <Time at={b.createdAt} />
            </a>{' '}
            <span class="muted small">
              {b.status.toLowerCase()} · {b.summary ? `${b.summary.failed} of ${b.summary.deploys} deploys would have failed` : `${b.progress.done}/${b.progress.total} deploys`}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Summary({ b }: { b: Backtest }) {
  if (b.status === 'RUNNING') {
    const { done, total } = b.progress;
    return (
      <p data-testid="backtest-progress">
        <label for="backtest-progress-bar">{total === 0 ? 'Finding the deploys…' : `Replayed ${done} of ${total} deploys`}</label>{' '}
        <progress id="backtest-progress-bar" max={Math.max(total, 1)} value={done} />
      </p>
    );
  }
  if (!b.summary) return <ErrorNote error={b.error ?? `Backtest ${b.status.toLowerCase()}.`} />;
  const s = b.summary;
  return (
    <p class="notice" data-testid="backtest-summary">
      {s.failed} of {s.deploys} deploys would have failed
      {s.failed > 0 && `; ${s.failedThenRolledBack} of them were followed by a rollback-looking event`}.{s.undecided > 0 && ` ${s.undecided} undecided.`}
      {s.truncated && ' Only the first 100 deploys of the window were replayed.'}
    </p>
  );
}

export function BacktestPage({ id, who }: { id: string; who: Viewer }) {
  const q = useQuery<{ backtest: Backtest | null }>(`query Backtest($id: ID!) { backtest(id: $id) { ${BACKTEST} } }`, { id });
  const [live, setLive] = useState<Backtest | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const fetched = q.data?.backtest ?? null;
  const b = live && live.id === id && live.revision >= (fetched?.revision ?? -1) ? live : fetched;
  const liveError = useSubscription<{ backtestProgress: Backtest }>(
    `subscription BacktestProgress($id: ID!) { backtestProgress(id: $id) { ${BACKTEST} } }`,
    { id },
    (d) => setLive(d.backtestProgress),
    { skip: fetched?.status !== 'RUNNING' },
  );
  if (q.loading && !b) return <Page title="Backtest">Loading…</Page>;
  if (!b)
    return (
      <Page title="Backtest not found">
        <ErrorNote error={q.error} />
        {!q.error && <p>No backtest {id} that this key may see.</p>}
      </Page>
    );
  const cancel = async () => {
    setError(null);
    try {
      const d = await gql<{ cancelBacktest: Backtest }>(`mutation CancelBacktest($id: ID!) { cancelBacktest(id: $id) { ${BACKTEST} } }`, { id });
      setLive(d.cancelBacktest);
    } catch (err) {
      setError(asError(err));
    }
  };
  return (
    <Page
      title={
        <>
          Backtest{' '}
          <span class="muted">
            {b.service} / {b.env}
          </span>
        </>
      }
      actions={
        b.status === 'RUNNING' &&
        can(who, 'EVALUATIONS_WRITE') && (
          <button type="button" class="secondary" onClick={cancel}>
            Cancel
          </button>
        )
      }
    >
      <ErrorNote error={error ?? liveError} />
      <p class="small muted">
        Deploys first seen from <Time at={b.from} /> to <Time at={b.to} />; started by {b.createdBy} <Time at={b.createdAt} />.{' '}
        {b.gateId && <a href={`/gates/${b.gateId}`}>The gate</a>} · status <span data-testid="backtest-status">{b.status}</span>
      </p>
      <Summary b={b} />
      {b.skippedRules.length > 0 && (
        <section aria-labelledby="backtest-skipped-title">
          <h2 id="backtest-skipped-title">Rules left out</h2>
          <ul class="plain" data-testid="backtest-skipped">
            {b.skippedRules.map((r) => (
              <li key={r.name}>
                <strong>{r.name}</strong> <span class="muted small">({r.type.toLowerCase()})</span>: {r.why}
              </li>
            ))}
          </ul>
        </section>
      )}
      <div class="table-wrap">
        <table data-testid="backtest-deploys">
          <caption>Deploys, in the order they appeared</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">First seen</th>
              <th scope="col">Verdict</th>
              <th scope="col">Deciding rule</th>
              <th scope="col">Time to verdict</th>
              <th scope="col">Rolled back?</th>
              <th scope="col">Why</th>
            </tr>
          </thead>
          <tbody>
            {b.deploys.map((d) => (
              <tr
                key={`${d.version}@${d.firstSeenAt}`}
                data-testid="backtest-deploy"
                data-version={d.version}
                data-verdict={d.realVerdict}
                class={d.realVerdict === 'FAIL' ? 'rule-fail' : undefined}
              >
                <th scope="row">{d.version}</th>
                <td>
                  <Time at={d.firstSeenAt} />
                </td>
                <td>
                  {d.realVerdict === 'UNDECIDED' ? <span class="muted">undecided</span> : <StatusBadge status={d.realVerdict} />}
                  {d.verdict !== d.realVerdict && <DryRunBadge status={d.realVerdict} />}
                </td>
                <td>{d.decidingRule ?? <span class="muted">—</span>}</td>
                <td>{d.timeToVerdictSeconds === null ? <span class="muted">—</span> : formatDuration(d.timeToVerdictSeconds)}</td>
                <td>{d.rollback ? `yes, to ${d.rollback.versions.join(', ')}` : <span class="muted">no</span>}</td>
                <td class="small">{d.reason}</td>
              </tr>
            ))}
            {b.deploys.length === 0 && (
              <tr>
                <td colSpan={7} class="muted">
                  {b.status === 'RUNNING' ? 'None replayed yet.' : 'No version first appeared in this window.'}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </Page>
  );
}

/** Every backtest the key may see, newest first. */
export function BacktestsPage() {
  const q = useQuery<{ backtests: Array<Pick<Backtest, 'id' | 'service' | 'env' | 'status' | 'createdAt' | 'summary'>> }>(
    `query Backtests { backtests(first: 50) { id service env status createdAt summary { deploys failed passed undecided failedThenRolledBack truncated } } }`,
    {},
  );
  return (
    <Page title="Backtests">
      <p class="small muted">Start one from a gate's page.</p>
      <ErrorNote error={q.error} />
      <ul class="plain" data-testid="backtests">
        {(q.data?.backtests ?? []).map((b) => (
          <li key={b.id}>
            <a href={`/backtests/${b.id}`}>
              {b.service} / {b.env}
            </a>{' '}
            <Time at={b.createdAt} />{' '}
            <span class="muted small">
              {b.status.toLowerCase()}
              {b.summary && ` · ${b.summary.failed} of ${b.summary.deploys} deploys would have failed`}
            </span>
          </li>
        ))}
        {q.data?.backtests.length === 0 && <li class="muted">No backtest yet.</li>}
      </ul>
    </Page>
  );
}
