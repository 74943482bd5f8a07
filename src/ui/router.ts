// Client-side routing over history.pushState: every page's state is its URL (path and query),
// so links can be shared and Back restores the previous filters.
import { useEffect, useState } from 'preact/hooks';

export interface Location {
  path: string;
  params: URLSearchParams;
}

const listeners = new Set<() => void>();
const current = (): Location => ({ path: location.pathname.replace(/\/+$/, '') || '/', params: new URLSearchParams(location.search) });

window.addEventListener('popstate', () => {
  for (const l of listeners) l();
});

export function navigate(to: string, { replace = false } = {}): void {
  if (to === location.pathname + location.search) return;
  history[replace ? 'replaceState' : 'pushState'](null, '', to);
  for (const l of listeners) l();
  if (!replace) window.scrollTo(0, 0);
}

export function useLocation(): Location {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const update = () => setLoc(current());
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return loc;
}

/** A path with these query parameters (empty values left out, repeated keys for lists). */
export function withParams(path: string, params: Record<string, string | string[] | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const value of Array.isArray(v) ? v : [v]) if (value) search.append(k, value);
  }
  const s = search.toString();
  return s ? `${path}?${s}` : path;
}

/** Same-origin links navigate without reloading; modified clicks (new tab…) keep the browser's way. */
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = (event.target as Element | null)?.closest?.('a');
  if (!a || a.target || a.hasAttribute('download')) return;
  const href = a.getAttribute('href');
  if (!href?.startsWith('/') || href.startsWith('//') || href.startsWith('/graphql') || href.startsWith('/assets/')) return;
  event.preventDefault();
  navigate(href);
});
