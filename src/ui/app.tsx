import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, type ConnectionState, connect, connection, session } from './api.ts';
import { BacktestPage, BacktestsPage } from './pages/backtests.tsx';
import { EvaluationPage } from './pages/evaluation.tsx';
import { EvaluationsPage } from './pages/evaluations.tsx';
import { FreezesPage } from './pages/freezes.tsx';
import { GatePage, GatesPage } from './pages/gates.tsx';
import { InsightsPage } from './pages/insights.tsx';
import { MonitorPage, MonitorsPage } from './pages/monitors.tsx';
import { NotificationsPage } from './pages/notifications.tsx';
import { useLocation } from './router.ts';
import { type Viewer, viewer } from './viewer.ts';

function SignIn({ message, onSignedIn }: { message: string | null; onSignedIn: (key: string, who: Viewer) => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(message);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const candidate = key.trim();
    if (!candidate) return setError('Enter an API key.');
    setBusy(true);
    try {
      onSignedIn(candidate, await viewer(candidate));
    } catch (err) {
      const e = err instanceof ApiError ? err : null;
      setError(
        e?.code === 'UNAUTHENTICATED'
          ? `This API key was refused: ${e.message}.`
          : e?.code === 'NETWORK'
            ? 'Tollgate cannot be reached. Check the address and try again.'
            : `Signing in failed: ${e?.message ?? String(err)}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin" id="main">
      <form onSubmit={submit} class="signin-form" aria-labelledby="signin-title">
        <h1 id="signin-title">Tollgate</h1>
        <p class="muted">Sign in with an API key. It is kept in this tab only and forgotten when the tab closes.</p>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
          aria-invalid={!!error}
          aria-describedby={error ? 'signin-error' : undefined}
          // biome-ignore lint/a11y/noAutofocus: the sign-in page asks for one thing, the key; focus starts there
          autoFocus
        />
        {error && (
          <p id="signin-error" class="error" role="alert" data-testid="signin-error">
            <span aria-hidden="true">⚠ </span>
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function ConnectionBanner() {
  const [state, setState] = useState<ConnectionState>(connection.state);
  const [caughtUp, setCaughtUp] = useState(false);
  useEffect(() => connection.changed.on(setState), []);
  useEffect(
    () =>
      connection.reconnected.on(() => {
        setCaughtUp(true);
        setTimeout(() => setCaughtUp(false), 4000);
      }),
    [],
  );
  if (state === 'offline')
    return (
      <div class="banner banner-offline" role="status" data-testid="connection-banner" data-state="offline">
        <span aria-hidden="true">⚠ </span>
        Connection to Tollgate lost. Reconnecting… What you see may be out of date.
      </div>
    );
  if (caughtUp)
    return (
      <div class="banner banner-online" role="status" data-testid="connection-banner" data-state="online">
        <span aria-hidden="true">✓ </span>
        Reconnected: this page was refreshed.
      </div>
    );
  return null;
}

const NAV = [
  ['/evaluations', 'Evaluations'],
  ['/insights', 'Insights'],
  ['/gates', 'Gates'],
  ['/monitors', 'Monitors'],
  ['/freezes', 'Freezes'],
  ['/notifications', 'Notifications'],
] as const;

/** An id from the path; null for a malformed %-escape (decodeURIComponent would throw mid-render). */
function pathId(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

function route(path: string, who: Viewer) {
  let m: RegExpExecArray | null;
  let id: string | null = null;
  if (path === '/' || path === '/evaluations') return <EvaluationsPage />;
  if ((m = /^\/evaluations\/([^/]+)$/.exec(path)) && (id = pathId(m[1]!)) !== null) return <EvaluationPage key={m[1]} id={id} who={who} />;
  if (path === '/insights') return <InsightsPage />;
  if (path === '/gates') return <GatesPage who={who} />;
  if ((m = /^\/gates\/([^/]+)$/.exec(path)) && (id = pathId(m[1]!)) !== null) return <GatePage key={m[1]} id={id} who={who} />;
  if (path === '/monitors') return <MonitorsPage />;
  if (path === '/freezes') return <FreezesPage who={who} />;
  if (path === '/backtests') return <BacktestsPage />;
  if ((m = /^\/backtests\/([^/]+)$/.exec(path)) && (id = pathId(m[1]!)) !== null) return <BacktestPage key={m[1]} id={id} who={who} />;
  if (path === '/notifications') return <NotificationsPage who={who} />;
  if ((m = /^\/monitors\/([^/]+)$/.exec(path)) && (id = pathId(m[1]!)) !== null) return <MonitorPage key={m[1]} id={id} />;
  return (
    <section class="page">
      <h1 tabIndex={-1} id="page-title">
        Not found
      </h1>
      <p>
        There is no page here. <a href="/evaluations">See the evaluations</a>.
      </p>
    </section>
  );
}

export function App() {
  const [who, setWho] = useState<Viewer | null>(null);
  const [checking, setChecking] = useState(!!session.key());
  const [refusal, setRefusal] = useState<string | null>(null);
  const loc = useLocation();

  useEffect(
    () =>
      connection.refused.on((reason) => {
        session.clear();
        setWho(null);
        setRefusal(`Signed out: ${reason}.`);
      }),
    [],
  );
  // A tab reloaded while signed in: check the kept key once.
  useEffect(() => {
    const key = session.key();
    if (!key) return;
    viewer(key)
      .then((v) => {
        setWho(v);
        connect();
      })
      .catch((err) => {
        if (err instanceof ApiError && err.code === 'NETWORK') {
          // Offline: show the pages anyway; they catch up when the server is back.
          setWho({ name: 'this key', scopes: null, envs: null });
          connect();
        } else session.clear();
      })
      .finally(() => setChecking(false));
  }, []);
  // After a navigation (not on first load, where the skip link comes first), focus moves to the
  // new page's heading, so keyboard and screen-reader users know where they are.
  const shownPath = useRef<string | null>(null);
  useEffect(() => {
    if (!who) return;
    if (shownPath.current !== null && shownPath.current !== loc.path) document.getElementById('page-title')?.focus({ preventScroll: true });
    shownPath.current = loc.path;
  }, [loc.path, who]);

  if (checking) return <p class="loading">Loading…</p>;
  if (!who)
    return (
      <SignIn
        message={refusal}
        onSignedIn={(key, v) => {
          session.set(key);
          connect();
          setRefusal(null);
          setWho(v);
        }}
      />
    );

  const section = `/${loc.path.split('/')[1] ?? ''}`;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/evaluations">
          Tollgate
        </a>
        <nav aria-label="Sections">
          <ul>
            {NAV.map(([href, label]) => (
              <li key={href}>
                <a href={href} aria-current={section === href || (href === '/evaluations' && section === '/') ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
            <li>
              {/* biome-ignore lint/security/noBlankTarget: rel=opener on purpose: a new tab gets a copy of this tab's sessionStorage (the key) only with
                  an opener, and target=_blank implies noopener. Same origin, so the opener grants nothing new. */}
              <a href="/graphql" target="_blank" rel="opener">
                GraphiQL
              </a>
            </li>
          </ul>
        </nav>
        <div class="who">
          <span class="muted" data-testid="signed-in-as">
            {who.name}
            {who.envs ? ` · ${who.envs.join(', ')}` : ''}
          </span>
          <button
            type="button"
            class="small secondary"
            onClick={() => {
              session.clear();
              setWho(null);
              setRefusal(null);
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <ConnectionBanner />
      <main id="main">{route(loc.path, who)}</main>
    </>
  );
}
