import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * Which browser origins may call Tollgate, over HTTP (CORS) and WebSocket alike, from one list
 * (TOLLGATE_ALLOWED_ORIGINS). Without a list only the server's own origin (its Host, or
 * TOLLGATE_PUBLIC_URL behind a proxy) is allowed: the explorer is served from there, and a page
 * elsewhere has no business reading a gate that may sit on a private network. `*` allows any.
 * Clients that send no Origin (CLIs, CI, orchestrators) are not browsers and are not concerned.
 */
export function createOriginPolicy(allowed: readonly string[] | null, publicUrl?: string) {
  const any = allowed?.includes('*') ?? false;
  const listed = new Set(allowed ?? []);
  let publicOrigin: string | undefined;
  try {
    publicOrigin = publicUrl ? new URL(publicUrl).origin : undefined;
  } catch {}

  function allows(origin: string, host: string | undefined): boolean {
    if (any || listed.has(origin) || origin === publicOrigin) return true;
    try {
      return host !== undefined && new URL(origin).host === host.toLowerCase();
    } catch {
      return false; // "null" (sandboxed frames, file:) and other unparseable origins
    }
  }

  return {
    any,
    allows,

    /**
     * Adds CORS headers for an allowed origin, and answers a preflight itself. Never sends
     * Access-Control-Allow-Credentials: keys travel in headers, not cookies, so no request needs
     * the browser's ambient credentials. Returns true when the response was sent.
     */
    cors(req: IncomingMessage, res: ServerResponse): boolean {
      const origin = req.headers.origin;
      if (!origin) return false;
      // Answers differ by origin, so caches must keep them apart.
      res.setHeader('Vary', 'Origin');
      const ok = allows(origin, req.headers.host);
      if (ok) {
        res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
        res.setHeader('Access-Control-Expose-Headers', 'Retry-After, WWW-Authenticate');
      }
      if (req.method !== 'OPTIONS' || !req.headers['access-control-request-method']) return false;
      if (!ok) {
        res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`origin ${origin.slice(0, 200)} is not allowed: list it in TOLLGATE_ALLOWED_ORIGINS`);
        return true;
      }
      const requested = req.headers['access-control-request-headers'];
      res.writeHead(204, {
        'Access-Control-Allow-Methods': 'GET, POST, PUT, PATCH, DELETE',
        'Access-Control-Allow-Headers':
          requested && requested.length <= 1000 && /^[\w-]+(\s*,\s*[\w-]+)*$/.test(requested)
            ? requested
            : 'authorization, content-type, content-encoding, dd-api-key, dd-application-key, accept',
        'Access-Control-Max-Age': '600',
      });
      res.end();
      return true;
    },
  };
}

export type OriginPolicy = ReturnType<typeof createOriginPolicy>;
