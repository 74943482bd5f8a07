// The explorer's only door to Tollgate: the public GraphQL API, over fetch for queries and
// mutations and over graphql-ws for subscriptions, with the signed-in key on both.
import { type Client, createClient } from 'graphql-ws';

const KEY_STORAGE = 'tollgate.apiKey';

export interface GqlError {
  message: string;
  path?: Array<string | number>;
  extensions?: { code?: string; field?: string; issues?: Array<{ field: string; message: string }>; [k: string]: unknown };
}

/** A GraphQL error answer (or a transport failure, code NETWORK) as one throwable value. */
export class ApiError extends Error {
  constructor(
    readonly errors: GqlError[],
    readonly status = 200,
  ) {
    super(errors.map((e) => e.message).join('; '));
  }
  get code(): string | undefined {
    return this.errors[0]?.extensions?.code;
  }
  /** The message for each input field the API named (extensions.field and extensions.issues). */
  fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.errors) {
      for (const issue of e.extensions?.issues ?? []) out[issue.field] ??= issue.message;
      const field = e.extensions?.field;
      if (field) out[field] ??= e.message.replace(`${field}: `, '');
    }
    return out;
  }
}

export type ConnectionState = 'online' | 'offline';
type Listener<T> = (value: T) => void;

function emitter<T>() {
  const listeners = new Set<Listener<T>>();
  return {
    on(l: Listener<T>) {
      listeners.add(l);
      return () => void listeners.delete(l);
    },
    emit(v: T) {
      for (const l of [...listeners]) l(v);
    },
  };
}

/** Connection state, reconnections (pages refetch on them) and sign-outs forced by the server. */
export const connection = {
  state: 'online' as ConnectionState,
  changed: emitter<ConnectionState>(),
  /** After an outage: whatever was shown may be stale. */
  reconnected: emitter<void>(),
  /** The server refused the key (revoked, expired, invalid): the reason to show on the sign-in page. */
  refused: emitter<string>(),
};

function setState(next: ConnectionState) {
  if (connection.state === next) return;
  const wasOffline = connection.state === 'offline';
  connection.state = next;
  connection.changed.emit(next);
  if (wasOffline && next === 'online') connection.reconnected.emit();
}

export const session = {
  key(): string | null {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  set(key: string) {
    sessionStorage.setItem(KEY_STORAGE, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_STORAGE);
    closeSocket();
  },
};

const GRAPHQL_URL = '/graphql';

/**
 * One query or mutation over HTTP. Throws ApiError: code NETWORK when the server cannot be
 * reached (the page says so and retries when it is back), UNAUTHENTICATED when the key is refused.
 */
export async function gql<T = any>(query: string, variables?: Record<string, unknown>, key = session.key()): Promise<T> {
  let res: Response;
  try {
    res = await fetch(GRAPHQL_URL, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    setState('offline');
    probeUntilOnline();
    throw new ApiError([{ message: 'Tollgate cannot be reached', extensions: { code: 'NETWORK' } }], 0);
  }
  let body: { data?: T; errors?: GqlError[] };
  try {
    body = await res.json();
  } catch {
    if (res.status >= 502) {
      setState('offline');
      probeUntilOnline();
    }
    throw new ApiError([{ message: `Tollgate answered ${res.status} ${res.statusText}`, extensions: { code: res.status >= 500 ? 'NETWORK' : 'BAD_RESPONSE' } }], res.status);
  }
  if (connection.state === 'offline' && !socket) setState('online');
  if (body.errors?.length) {
    const error = new ApiError(body.errors, res.status);
    if (error.code === 'UNAUTHENTICATED' && key === session.key()) connection.refused.emit(error.message);
    throw error;
  }
  return body.data as T;
}

let probing = false;
/** Without a socket to tell, polls until the server answers again. */
function probeUntilOnline() {
  if (probing || socket) return;
  probing = true;
  const attempt = async () => {
    try {
      await fetch('/healthz', { cache: 'no-store' });
      probing = false;
      setState('online');
    } catch {
      setTimeout(attempt, 1000);
    }
  };
  setTimeout(attempt, 500);
}

let socket: Client | null = null;
let socketKey: string | null = null;

function closeSocket() {
  const closing = socket;
  // Forgotten first: its own 'closed' event must not mark the connection as lost.
  socket = null;
  socketKey = null;
  void closing?.dispose();
  if (connection.state === 'offline') setState('online');
}

/** Close codes after which retrying with the same key cannot help. */
const REFUSED = new Set([4401, 4403]);

/**
 * How long a socket may take to open and be acknowledged. Past it, the banner says live updates
 * are down (a socket whose upgrade hangs has no timeout of its own), and an opened socket that
 * is never acknowledged (a proxy holding frames) is closed and tried again.
 */
const CONNECT_TIMEOUT_MS = 10_000;

function ws(): Client {
  const key = session.key();
  if (socket && socketKey === key) return socket;
  closeSocket();
  socketKey = key;
  let connecting: ReturnType<typeof setTimeout> | undefined;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${GRAPHQL_URL}`;
  const client = createClient({
    url,
    connectionParams: () => ({ authorization: `Bearer ${session.key() ?? ''}` }),
    // One socket per tab while signed in, so an outage shows even on pages without a live view.
    lazy: false,
    keepAlive: 10_000,
    connectionAckWaitTimeout: CONNECT_TIMEOUT_MS,
    retryAttempts: Infinity,
    // Quick first retries (a restart takes a second or two), then every 3 s at most.
    retryWait: (retries) => new Promise((r) => setTimeout(r, Math.min(3000, 250 * 2 ** retries) * (0.8 + Math.random() * 0.4))),
    shouldRetry: (event) => {
      const close = event as { code?: number; reason?: string };
      if (typeof close.code === 'number' && REFUSED.has(close.code)) {
        connection.refused.emit((close.reason || 'the API key was refused').replace(/^Forbidden: /, ''));
        return false;
      }
      return true;
    },
    on: {
      connecting: () => {
        clearTimeout(connecting);
        connecting = setTimeout(() => client === socket && setState('offline'), CONNECT_TIMEOUT_MS);
      },
      connected: () => {
        clearTimeout(connecting);
        setState('online');
      },
      closed: (event) => {
        clearTimeout(connecting);
        const code = (event as { code?: number }).code;
        if (client === socket && !(code !== undefined && REFUSED.has(code))) setState('offline');
      },
    },
  });
  socket = client;
  return client;
}

/** Opens the tab's socket now (after sign-in), so the connection banner is right on every page. */
export function connect(): void {
  ws();
}

export interface Subscription {
  dispose(): void;
}

/**
 * A subscription that survives outages: graphql-ws resubscribes after reconnecting; events sent
 * while the socket was down are lost, which is why pages also refetch on `connection.reconnected`.
 */
export function subscribe<T = any>(query: string, variables: Record<string, unknown>, onData: (data: T) => void, onError?: (e: ApiError) => void): Subscription {
  const dispose = ws().subscribe<T>(
    { query, variables },
    {
      next: (result) => {
        if (result.errors?.length) onError?.(new ApiError(result.errors as GqlError[]));
        else if (result.data) onData(result.data as T);
      },
      error: (err) => {
        if (Array.isArray(err)) onError?.(new ApiError(err as GqlError[]));
      },
      complete: () => {},
    },
  );
  return { dispose };
}
