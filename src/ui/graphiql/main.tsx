/** @jsxImportSource react */
// GraphiQL served by Tollgate itself (GET /graphql in a browser): React and GraphiQL 5 bundled by
// the server on the first visit (src/server/graphiql.ts), no CDN. It uses the explorer's sign-in: the key
// in sessionStorage['tollgate.apiKey'] goes as `Authorization: Bearer` over HTTP and in
// graphql-ws's connectionParams, so subscriptions run with it.
import './csp.ts';
import 'graphiql/style.css';
import './graphiql.css';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { type Client, createClient } from 'graphql-ws';
import { type FormEvent, useEffect, useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { pageConfig } from './page-config.ts';
import { keepTabsAccessible } from './tab-roles.ts';

/** The explorer's sign-in keeps the key here, per tab (src/ui). */
const KEY_STORAGE = 'tollgate.apiKey';
const GRAPHQL_PATH = '/graphql';

const DEFAULT_QUERY = `# Tollgate's GraphQL API, with the key you signed in with.
# Run an operation with Ctrl-Enter (Cmd-Enter); subscriptions run over WebSocket.

query RecentEvaluations {
  evaluations(first: 5) {
    edges { node { id service env version status reportedStatus startedAt evaluationUrl } }
  }
}

subscription LiveEvaluations {
  evaluationEvents { id service env version status reportedStatus }
}
`;

function readKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null; // storage disabled: the key lives only in this page
  }
}

function storeKey(key: string | null): void {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {}
}

/** Asks the server who the key is: its name, or the reason it is refused. */
async function whoIs(key: string): Promise<{ name: string } | { refused: string }> {
  let response: Response;
  try {
    response = await fetch(GRAPHQL_PATH, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ query: '{ viewer { name } }' }),
    });
  } catch {
    return { refused: 'Tollgate could not be reached: check the connection and try again.' };
  }
  const body = (await response.json().catch(() => null)) as { data?: { viewer?: { name: string } }; errors?: Array<{ message: string }> } | null;
  if (response.ok && body?.data?.viewer) return { name: body.data.viewer.name };
  const reason = body?.errors?.[0]?.message ?? `HTTP ${response.status}`;
  return { refused: response.status === 401 ? `This key was refused: ${reason}.` : reason };
}

function SignIn({ onSignedIn, reason }: { onSignedIn: (key: string) => void; reason: string | null }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(reason);
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const trimmed = key.trim();
    if (!trimmed) return setError('Enter an API key.');
    setBusy(true);
    const answer = await whoIs(trimmed);
    setBusy(false);
    if ('refused' in answer) return setError(answer.refused);
    storeKey(trimmed);
    onSignedIn(trimmed);
  };
  return (
    <main className="tg-signin">
      <h1>Tollgate GraphiQL</h1>
      <p>Sign in with a Tollgate API key. It is kept for this browser tab only and shared with the explorer.</p>
      <form onSubmit={submit} noValidate>
        <label htmlFor="tg-api-key">API key</label>
        <input
          id="tg-api-key"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={key}
          onChange={(e) => setKey(e.target.value)}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? 'tg-signin-error' : undefined}
        />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error && (
          <p id="tg-signin-error" role="alert" className="tg-error">
            {error}
          </p>
        )}
      </form>
      <p>
        <a href="/">Back to the explorer</a>
      </p>
    </main>
  );
}

function Playground({ apiKey, onSignOut }: { apiKey: string; onSignOut: (reason?: string) => void }) {
  const [name, setName] = useState<string | null>(null);
  useEffect(() => {
    let current = true;
    // A key kept from earlier may have been revoked or expired since: then back to the sign-in, with why.
    void whoIs(apiKey).then((answer) => current && ('name' in answer ? setName(answer.name) : onSignOut(answer.refused)));
    return () => {
      current = false;
    };
  }, [apiKey]); // eslint-disable-line react-hooks/exhaustive-deps
  const wsClient = useMemo<Client>(() => {
    const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${GRAPHQL_PATH}`;
    // lazy: the socket opens with the first subscription, and closes when none is running.
    return createClient({ url, lazy: true, connectionParams: { authorization: `Bearer ${apiKey}` }, retryAttempts: 3 });
  }, [apiKey]);
  useEffect(() => () => void wsClient.dispose(), [wsClient]);
  const fetcher = useMemo(() => createGraphiQLFetcher({ url: GRAPHQL_PATH, headers: { authorization: `Bearer ${apiKey}` }, wsClient }), [apiKey, wsClient]);
  return (
    <div className="tg-layout">
      <header className="tg-bar">
        <a href="/" className="tg-home">
          Tollgate explorer
        </a>
        <h1 className="tg-title">GraphiQL</h1>
        {!pageConfig.introspection && <span className="tg-note">Introspection is off in production: no schema, documentation or completion; operations still run.</span>}
        <span className="tg-key" data-testid="signed-in-key">
          {name ? `Signed in as ${name}` : 'Signed in'}
        </span>
        <button type="button" onClick={() => onSignOut()}>
          Sign out
        </button>
      </header>
      <main className="tg-graphiql">
        <GraphiQL
          fetcher={fetcher}
          defaultQuery={DEFAULT_QUERY}
          // Without introspection GraphiQL would show the server's refusal on every load.
          {...(pageConfig.introspection ? {} : { schema: null })}
        />
      </main>
    </div>
  );
}

function App() {
  const [apiKey, setApiKey] = useState<string | null>(readKey);
  const [reason, setReason] = useState<string | null>(null);
  // Another tab of the explorer cannot change this tab's sessionStorage, but this tab's explorer
  // can, when the user signs out there and comes back with Back.
  useEffect(() => {
    const onShow = () => setApiKey(readKey());
    window.addEventListener('pageshow', onShow);
    return () => window.removeEventListener('pageshow', onShow);
  }, []);
  if (!apiKey) return <SignIn onSignedIn={setApiKey} reason={reason} />;
  return (
    <Playground
      key={apiKey}
      apiKey={apiKey}
      onSignOut={(why) => {
        storeKey(null);
        setReason(why ?? null);
        setApiKey(null);
      }}
    />
  );
}

const root = document.getElementById('graphiql')!;
keepTabsAccessible(root);
createRoot(root).render(<App />);
