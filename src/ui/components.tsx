import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, connection, gql, subscribe } from './api.ts';

/** Icon and word for each status: colour is never the only signal (issue 11, item 9). */
const STATUS: Record<string, { icon: string; label: string; tone: string }> = {
  PASS: { icon: '✓', label: 'PASS', tone: 'pass' },
  FAIL: { icon: '✗', label: 'FAIL', tone: 'fail' },
  IN_PROGRESS: { icon: '◷', label: 'IN PROGRESS', tone: 'progress' },
  CANCELED: { icon: '⊘', label: 'CANCELED', tone: 'muted' },
  OK: { icon: '✓', label: 'OK', tone: 'pass' },
  WARN: { icon: '!', label: 'WARN', tone: 'warn' },
  ALERT: { icon: '✗', label: 'ALERT', tone: 'fail' },
  NO_DATA: { icon: '?', label: 'NO DATA', tone: 'muted' },
};

export function StatusBadge({ status, testid }: { status: string | null | undefined; testid?: string }) {
  const s = STATUS[status ?? ''] ?? { icon: '·', label: status ?? 'NONE', tone: 'muted' };
  return (
    <span class={`badge badge-${s.tone}`} data-testid={testid} data-status={status ?? ''}>
      <span aria-hidden="true" class="badge-icon">
        {s.icon}
      </span>
      {s.label}
    </span>
  );
}

/** Shown beside the real status of a dry-run evaluation or rule that did not pass. */
export function DryRunBadge({ status }: { status: string }) {
  return (
    <span class="badge badge-dry" data-testid="dry-run-badge" title="Dry run: callers were told PASS">
      {status === 'FAIL' ? 'dry run · would have failed' : 'dry run'}
    </span>
  );
}

export function Time({ at }: { at: string | null | undefined }) {
  if (!at) return <span class="muted">—</span>;
  const d = new Date(at);
  return (
    <time dateTime={at} title={d.toISOString()}>
      {d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' })}
    </time>
  );
}

export function formatDuration(seconds: number): string {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function Duration({ from, to }: { from: string; to: string | null | undefined }) {
  const end = to ? new Date(to).getTime() : null;
  if (end === null) return <span class="muted">running</span>;
  return <span>{formatDuration((end - new Date(from).getTime()) / 1000)}</span>;
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  return (
    <p class="error" role="alert">
      <span aria-hidden="true">⚠ </span>
      {message}
    </p>
  );
}

export function Page({ title, children, actions }: { title: ComponentChildren; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="page">
      <header class="page-header">
        <h1 tabIndex={-1} id="page-title">
          {title}
        </h1>
        {actions && <div class="page-actions">{actions}</div>}
      </header>
      {children}
    </section>
  );
}

export interface QueryState<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
  refetch(): Promise<void>;
  setData(update: (old: T | undefined) => T | undefined): void;
}

/**
 * A query that runs again when its variables change and after every reconnection (so a page
 * catches up with what happened while the server or the network was away).
 */
export function useQuery<T>(query: string, variables: Record<string, unknown>, { skip = false } = {}): QueryState<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [loading, setLoading] = useState(!skip);
  const key = JSON.stringify(variables);
  const generation = useRef(0);
  const run = async () => {
    if (skip) return;
    const mine = ++generation.current;
    setLoading(true);
    try {
      const result = await gql<T>(query, variables);
      if (mine !== generation.current) return;
      setData(result);
      setError(undefined);
    } catch (err) {
      if (mine !== generation.current) return;
      setError(err instanceof ApiError ? err : new ApiError([{ message: String(err) }]));
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  };
  useEffect(() => {
    void run();
  }, [query, key, skip]);
  useEffect(() => connection.reconnected.on(() => void run()), [query, key, skip]);
  return { data, error, loading, refetch: run, setData: (u) => setData(u) };
}

/** A subscription for as long as the component shows it, resubscribed when its variables change. */
export function useSubscription<T>(query: string, variables: Record<string, unknown>, onData: (data: T) => void, { skip = false } = {}): ApiError | undefined {
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const handler = useRef(onData);
  handler.current = onData;
  const key = JSON.stringify(variables);
  useEffect(() => {
    if (skip) return;
    setError(undefined);
    const sub = subscribe<T>(query, variables, (d) => handler.current(d), setError);
    return () => sub.dispose();
  }, [query, key, skip]);
  return error;
}

export function CopyLine({ label, text }: { label: string; text: string }) {
  const [copied, setCopied] = useState(false);
  const ref = useRef<HTMLElement>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied(true);
      setTimeout(() => setCopied(false), 2000);
    } catch {
      // Without clipboard access (plain http off localhost) select the text for Ctrl+C.
      const range = document.createRange();
      if (ref.current) range.selectNodeContents(ref.current);
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
    }
  };
  return (
    <div class="copy-line">
      <div class="copy-head">
        <span class="copy-label">{label}</span>
        <button type="button" class="small" onClick={copy} aria-label={`Copy the ${label} command`}>
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
      <pre>
        <code ref={ref}>{text}</code>
      </pre>
    </div>
  );
}

/** A labelled input showing the API's error for its field (matched by `name`, the API's field path). */
export function Field({
  label,
  name,
  errors,
  hint,
  children,
}: {
  label: string;
  name: string;
  errors: Record<string, string>;
  hint?: string;
  children: (props: { id: string; name: string; 'aria-invalid': boolean; 'aria-describedby'?: string }) => ComponentChildren;
}) {
  const id = `f-${name.replace(/[^a-zA-Z0-9]+/g, '-')}`;
  const error = errors[name];
  const described = [error ? `${id}-error` : '', hint ? `${id}-hint` : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field${error ? ' field-invalid' : ''}`}>
      <label for={id}>{label}</label>
      {children({ id, name, 'aria-invalid': !!error, ...(described && { 'aria-describedby': described }) })}
      {hint && (
        <small id={`${id}-hint`} class="hint">
          {hint}
        </small>
      )}
      {error && (
        <small id={`${id}-error`} class="field-error" data-testid={`field-error-${name}`} role="alert">
          <span aria-hidden="true">⚠ </span>
          {error}
        </small>
      )}
    </div>
  );
}
