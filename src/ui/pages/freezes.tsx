import { useState } from 'preact/hooks';
import { ApiError, gql } from '../api.ts';
import { ErrorNote, Field, Page, Time, useQuery } from '../components.tsx';
import { navigate, useLocation, withParams } from '../router.ts';
import { can, type Viewer } from '../viewer.ts';

// Ad-hoc freezes: while one is in force, freeze rules of its environment (and service) fail.
// Set and lifted here through createFreeze / endFreeze; a key sees only its environments'.

const FREEZE = 'id env service reason startsAt endsAt active endedAt endedBy endReason createdAt createdBy';
const FREEZES = `query Freezes($filter: FreezeFilter) { freezes(filter: $filter, first: 100) { ${FREEZE} } }`;

interface Freeze {
  id: string;
  env: string;
  service: string | null;
  reason: string;
  startsAt: string;
  endsAt: string | null;
  active: boolean;
  endedAt: string | null;
  endedBy: string | null;
  endReason: string | null;
  createdAt: string;
  createdBy: string;
}

const asError = (err: unknown) => (err instanceof ApiError ? err : new ApiError([{ message: String(err) }]));

function NewFreeze({ onCreated }: { onCreated: () => void }) {
  const [env, setEnv] = useState('');
  const [service, setService] = useState('');
  const [reason, setReason] = useState('');
  const [endsAt, setEndsAt] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setErrors({});
    setGeneral(null);
    // datetime-local is the browser's local time; the API takes an instant.
    const ends = endsAt ? new Date(endsAt) : null;
    if (ends && Number.isNaN(ends.getTime())) return setErrors({ 'input.endsAt': 'endsAt must be a date and time' });
    setBusy(true);
    try {
      await gql(`mutation CreateFreeze($input: CreateFreezeInput!) { createFreeze(input: $input) { id } }`, {
        input: { env, reason, ...(service && { service }), ...(ends && { endsAt: ends.toISOString() }) },
      });
      setReason('');
      setEndsAt('');
      onCreated();
    } catch (err) {
      const fields = asError(err).fieldErrors();
      setErrors(fields);
      if (!Object.keys(fields).some((f) => ['input.env', 'input.service', 'input.reason', 'input.endsAt'].includes(f))) setGeneral(asError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={submit} aria-labelledby="new-freeze-title" noValidate>
      <h2 id="new-freeze-title">New freeze</h2>
      <div class="form-grid">
        <Field label="Env" name="input.env" errors={errors}>
          {(p) => <input {...p} value={env} onInput={(e) => setEnv((e.target as HTMLInputElement).value)} />}
        </Field>
        <Field label="Service" name="input.service" errors={errors} hint="empty: every service of the env">
          {(p) => <input {...p} value={service} onInput={(e) => setService((e.target as HTMLInputElement).value)} />}
        </Field>
        <Field label="Reason" name="input.reason" errors={errors} hint="shown in the evidence of every rule it fails">
          {(p) => <input {...p} value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />}
        </Field>
        <Field label="Ends at" name="input.endsAt" errors={errors} hint="empty: until lifted">
          {(p) => <input {...p} type="datetime-local" value={endsAt} onInput={(e) => setEndsAt((e.target as HTMLInputElement).value)} />}
        </Field>
      </div>
      <ErrorNote error={general} />
      <div class="form-actions">
        <button type="submit" disabled={busy}>
          Freeze deploys
        </button>
      </div>
    </form>
  );
}

export function FreezesPage({ who }: { who: Viewer }) {
  const { params } = useLocation();
  const all = params.get('all') === '1';
  const q = useQuery<{ freezes: Freeze[] }>(FREEZES, { filter: all ? {} : { active: true } });
  const [error, setError] = useState<ApiError | null>(null);
  const writer = can(who, 'GATES_WRITE');
  const lift = async (f: Freeze) => {
    setError(null);
    try {
      await gql(`mutation EndFreeze($id: ID!) { endFreeze(id: $id) { id } }`, { id: f.id });
      void q.refetch();
    } catch (err) {
      setError(asError(err));
    }
  };
  const freezes = q.data?.freezes ?? [];
  return (
    <Page
      title="Freezes"
      actions={
        <button type="button" class="secondary" onClick={() => navigate(withParams('/freezes', { all: all ? null : '1' }))}>
          {all ? 'Only those in force' : 'Show ended and planned too'}
        </button>
      }
    >
      <p class="muted small">While a freeze is in force, freeze rules of its environment fail (or wait, up to their duration, for it to end).</p>
      <ErrorNote error={q.error ?? error} />
      <table data-testid="freezes">
        <caption class="visually-hidden">Freezes</caption>
        <thead>
          <tr>
            <th scope="col">Env</th>
            <th scope="col">Service</th>
            <th scope="col">Reason</th>
            <th scope="col">From</th>
            <th scope="col">Until</th>
            <th scope="col">Set by</th>
            {writer && <th scope="col">Action</th>}
          </tr>
        </thead>
        <tbody>
          {freezes.map((f) => (
            <tr key={f.id} data-testid="freeze-row" data-active={String(f.active)}>
              <td>{f.env}</td>
              <td>{f.service ?? <span class="muted">all</span>}</td>
              <td>{f.reason}</td>
              <td>
                <Time at={f.startsAt} />
              </td>
              <td>
                {f.endedAt ? (
                  <>
                    lifted <Time at={f.endedAt} /> by {f.endedBy}
                  </>
                ) : f.endsAt ? (
                  <Time at={f.endsAt} />
                ) : (
                  'lifted'
                )}
              </td>
              <td>{f.createdBy}</td>
              {writer && (
                <td>
                  {!f.endedAt && (!f.endsAt || new Date(f.endsAt) > new Date()) && (
                    <button type="button" class="small secondary" onClick={() => lift(f)} aria-label={`Lift the freeze of ${f.env}: ${f.reason}`}>
                      {f.active ? 'Lift' : 'Cancel'}
                    </button>
                  )}
                </td>
              )}
            </tr>
          ))}
          {!q.loading && freezes.length === 0 && (
            <tr>
              <td colSpan={writer ? 7 : 6} class="muted">
                {all ? 'No freeze.' : 'No freeze in force: deploys are not frozen.'}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      {writer && <NewFreeze onCreated={() => void q.refetch()} />}
    </Page>
  );
}
