// The explorer's assets, built in memory by esbuild from src/ui and served from the same port as
// the API: no CDN, no files written, nothing to run besides `npm start` (issue 11, item 1).
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, gzipSync, constants as zlib } from 'node:zlib';
import type { Logger } from '../log.ts';

const UI_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'ui');

/**
 * The bundles the server builds: each entry gives `/assets/<name>-<hash>.js` and, when it imports
 * CSS, `/assets/<name>-<hash>.css`. GraphiQL's entry (src/ui/graphiql/) goes here too.
 */
const UI_ENTRIES: Record<string, string> = {
  main: join(UI_DIR, 'main.tsx'),
};

/** Pages of the explorer: all answered with the same HTML shell, routed on the client. */
const PAGE_ROUTES = [
  /^\/$/,
  /^\/evaluations\/?$/,
  /^\/evaluations\/[^/]+\/?$/,
  /^\/gates\/?$/,
  /^\/gates\/[^/]+\/?$/,
  /^\/monitors\/?$/,
  /^\/monitors\/[^/]+\/?$/,
  /^\/insights\/?$/,
  /^\/freezes\/?$/,
  /^\/backtests\/?$/,
  /^\/backtests\/[^/]+\/?$/,
  /^\/notifications\/?$/,
];

// connect-src 'self' covers the page's own ws:/wss: origin (CSP Level 3); 'ws: wss:' would let an
// injected script carry the key to any host.
export const UI_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self'; " +
  "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/** One file as served: its bytes, precompressed once, and its validator. */
export interface Asset {
  path: string;
  type: string;
  body: Buffer;
  gzip: Buffer;
  brotli: Buffer;
  etag: string;
  /** Hashed assets never change under their name; pages are revalidated every time. */
  immutable: boolean;
}

export interface UiBuild {
  /** By request path: the hashed assets and, under `page:<entry>`, each entry's HTML shell. */
  assets: Map<string, Asset>;
  /** The script and style paths of an entry. */
  entry(name: string): { js: string; css?: string };
  /** Bytes of the HTML shell, script and style of an entry as sent with gzip and with brotli. */
  firstLoad(name: string): { gzip: number; brotli: number };
}

function asset(path: string, type: string, body: Buffer, immutable: boolean): Asset {
  return {
    path,
    type,
    body,
    gzip: gzipSync(body, { level: 9 }),
    brotli: brotliCompressSync(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11, [zlib.BROTLI_PARAM_SIZE_HINT]: body.length } }),
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
    immutable,
  };
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** The HTML shell of an entry: no inline script or style, so the CSP needs no exception. */
function shell(title: string, files: { js: string; css?: string }): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)}</title><link rel="icon" href="data:,">` +
    (files.css ? `<link rel="stylesheet" href="${files.css}">` : '') +
    `<script type="module" src="${files.js}"></script></head>` +
    `<body><div id="app"><noscript>The Tollgate explorer needs JavaScript.</noscript></div></body></html>`
  );
}

/** Bundles every entry with esbuild's JS API, in memory (a few hundred ms), minified, hashed and compressed. */
export async function buildUi(entries: Record<string, string> = UI_ENTRIES): Promise<UiBuild> {
  // Loaded on demand: a server that never serves a page never loads the bundler.
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: entries,
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['chrome100', 'firefox100', 'safari15'],
    platform: 'browser',
    jsx: 'automatic',
    jsxImportSource: 'preact',
    define: { 'process.env.NODE_ENV': '"production"' },
    legalComments: 'none',
    outdir: '/assets',
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    metafile: true,
    write: false,
    logLevel: 'silent',
  });
  const assets = new Map<string, Asset>();
  for (const file of result.outputFiles) {
    const type = file.path.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8';
    assets.set(file.path, asset(file.path, type, Buffer.from(file.contents), true));
  }
  // Entry outputs are named `<entry>-<hash>` (entryNames), which is how they are told apart.
  const entryFiles = new Map<string, { js: string; css?: string }>();
  for (const [path, output] of Object.entries(result.metafile.outputs)) {
    if (!output.entryPoint || !path.endsWith('.js')) continue;
    const js = `/assets/${path.slice(path.lastIndexOf('/') + 1)}`;
    const name = js.slice('/assets/'.length, js.lastIndexOf('-'));
    const css = output.cssBundle ? `/assets/${output.cssBundle.slice(output.cssBundle.lastIndexOf('/') + 1)}` : undefined;
    entryFiles.set(name, { js, ...(css && { css }) });
  }
  for (const [name, files] of entryFiles) {
    assets.set(`page:${name}`, asset(`page:${name}`, 'text/html; charset=utf-8', Buffer.from(shell('Tollgate', files)), false));
  }
  const entry = (name: string) => {
    const files = entryFiles.get(name);
    if (!files) throw new Error(`no UI entry named ${name}`);
    return files;
  };
  return {
    assets,
    entry,
    firstLoad(name) {
      const files = entry(name);
      const parts = [assets.get(`page:${name}`)!, assets.get(files.js)!, ...(files.css ? [assets.get(files.css)!] : [])];
      return { gzip: parts.reduce((n, a) => n + a.gzip.length, 0), brotli: parts.reduce((n, a) => n + a.brotli.length, 0) };
    },
  };
}

// One build per process: every server in it serves the same sources.
let building: Promise<UiBuild> | undefined;
function uiBuild(): Promise<UiBuild> {
  building ??= buildUi().catch((err) => {
    building = undefined; // a later request tries again (e.g. after a source file is fixed)
    throw err;
  });
  return building;
}

/** Security headers every HTML page of Tollgate carries. */
function setPageHeaders(res: ServerResponse): void {
  res.setHeader('Content-Security-Policy', UI_CSP);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Frame-Options', 'DENY');
}

/**
 * The coding to send for this Accept-Encoding: brotli, then gzip, then none. Each coding is read
 * on its own (split at commas and semicolons): q=0 refuses it, `*` stands for any other. No
 * regular expression over the whole header, whose backtracking a crafted 16 KB header made cost
 * ~130 ms of the event loop per request, before any authentication.
 */
export function chooseEncoding(header: string): 'br' | 'gzip' | null {
  const weights = new Map<string, number>();
  for (const part of header.split(',')) {
    const [name = '', ...params] = part.split(';');
    const coding = name.trim().toLowerCase();
    if (!coding) continue;
    let q = 1;
    for (const param of params) {
      const [key = '', value = ''] = param.split('=');
      if (key.trim().toLowerCase() === 'q') q = Number(value.trim()) || 0;
    }
    weights.set(coding, q);
  }
  const accepts = (coding: string) => (weights.get(coding) ?? weights.get('*') ?? 0) > 0;
  return accepts('br') ? 'br' : accepts('gzip') ? 'gzip' : null;
}

/**
 * Sends one asset, honouring If-None-Match and Accept-Encoding. Each encoding has its own ETag
 * (`"<hash>-br"`, `"<hash>-gzip"`, `"<hash>"`): a cache holding the brotli and gzip bodies must not
 * take one for the other; any of them revalidates, since they carry the same content.
 */
export function sendAsset(req: IncomingMessage, res: ServerResponse, file: Asset): void {
  const encoding = chooseEncoding(String(req.headers['accept-encoding'] ?? ''));
  const body = encoding === 'br' ? file.brotli : encoding === 'gzip' ? file.gzip : file.body;
  res.setHeader('Content-Type', file.type);
  const tagOf = (coding: string | null) => (coding ? `${file.etag.slice(0, -1)}-${coding}"` : file.etag);
  res.setHeader('ETag', tagOf(encoding));
  res.setHeader('Vary', 'Accept-Encoding');
  res.setHeader('Cache-Control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
  if (file.type.startsWith('text/html')) setPageHeaders(res);
  else res.setHeader('X-Content-Type-Options', 'nosniff');
  const match = req.headers['if-none-match'];
  const tags = new Set(['*', tagOf(null), tagOf('br'), tagOf('gzip')]);
  const known = (tag: string) => tags.has(tag.replace(/^W\//, ''));
  if (match?.split(',').some((tag) => known(tag.trim()))) {
    res.statusCode = 304;
    res.end();
    return;
  }
  if (encoding) res.setHeader('Content-Encoding', encoding);
  res.setHeader('Content-Length', body.length);
  res.statusCode = 200;
  res.end(req.method === 'HEAD' ? undefined : body);
}

/**
 * The explorer's handler: `handles` says whether a request is the UI's (GET or HEAD of a page or
 * an asset; a page only when the client did not ask for JSON), `serve` answers it.
 */
export function createUi(log: Logger) {
  return {
    handles(req: IncomingMessage, url: URL): boolean {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      if (url.pathname.startsWith('/assets/')) return true;
      const accept = String(req.headers.accept ?? '');
      if (/application\/(graphql-response\+)?json/.test(accept) && !accept.includes('text/html')) return false;
      return PAGE_ROUTES.some((route) => route.test(url.pathname));
    },
    async serve(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
      let build: UiBuild;
      try {
        build = await uiBuild();
      } catch (err) {
        log.error({ err }, 'building the explorer failed');
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('The explorer could not be built; see the server log.');
        return;
      }
      const file = url.pathname.startsWith('/assets/') ? build.assets.get(url.pathname) : build.assets.get('page:main');
      if (!file) {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff' }).end('Not found');
        return;
      }
      sendAsset(req, res, file);
    },
  };
}
