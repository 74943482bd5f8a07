// GraphiQL from Tollgate's own assets (issue 11, item 1): GraphiQL 5 and React, bundled with
// esbuild in memory the first time a browser opens /graphql, served hashed and precompressed
// from /assets/graphiql/. No CDN, so it works on an air-gapped network.
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { brotliCompress, gzip, constants as zlib } from 'node:zlib';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { type Asset, sendAsset } from './ui.ts';

const ENTRY = join(dirname(fileURLToPath(import.meta.url)), '..', 'ui', 'graphiql', 'main.tsx');
const GRAPHIQL_ASSETS = '/assets/graphiql/';

/** Monaco's workers by the label Monaco asks for (MonacoEnvironment.getWorker in src/ui/graphiql/csp.ts). */
const WORKERS: Record<string, string> = {
  editor: 'monaco-editor/esm/vs/editor/editor.worker.js',
  json: 'monaco-editor/esm/vs/language/json/json.worker.js',
  graphql: 'monaco-graphql/esm/graphql.worker.js',
};

/**
 * The explorer's policy (src/server/ui.ts) with what GraphiQL needs and nothing more:
 * - <style> elements need this response's nonce (style-src-elem): Monaco writes its theme into
 *   them and Radix its scroll lock; src/ui/graphiql/csp.ts puts the nonce on every <style> the
 *   page creates, so injected markup still cannot bring a stylesheet.
 * - style attributes are allowed (style-src-attr 'unsafe-inline'): Monaco renders its lines as
 *   HTML strings with style="…", which no nonce can cover. An attribute styles only its own
 *   element: no selectors, so nothing to read other elements' values with.
 * - font-src data:: GraphiQL's stylesheet carries its fonts (and Monaco's icons) inline.
 * - worker-src 'self': Monaco's workers are Tollgate's own hashed scripts (no blob:).
 * Script stays 'self' only: no inline script, no eval.
 */
function graphiqlCsp(nonce: string): string {
  return (
    `default-src 'self'; script-src 'self'; style-src 'self' 'nonce-${nonce}'; style-src-elem 'self' 'nonce-${nonce}'; ` +
    "style-src-attr 'unsafe-inline'; connect-src 'self'; " +
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self'; object-src 'none'; base-uri 'none'; " +
    "frame-ancestors 'none'; form-action 'self'"
  );
}

export interface GraphiqlBuild {
  assets: Map<string, Asset>;
  script: string;
  style: string;
  workers: Record<string, string>;
  /** Bytes of every file, as built and as sent with brotli: what a first visit costs at most. */
  size: { raw: number; brotli: number; gzip: number };
  /** What the page loads before it is usable: its script, its stylesheet and their static imports. */
  firstLoad: { raw: number; brotli: number; gzip: number };
  buildMs: number;
}

const brotli = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

/**
 * Compressed off the event loop (zlib's thread pool): the bundle is megabytes and brotli's best
 * quality takes about a second per megabyte; quality 9 is within 5% of it at a twentieth of the cost.
 */
async function asset(path: string, type: string, body: Buffer): Promise<Asset> {
  const [br, gz] = await Promise.all([brotli(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: 9, [zlib.BROTLI_PARAM_SIZE_HINT]: body.length } }), gzipAsync(body, { level: 9 })]);
  return { path, type, body, brotli: br, gzip: gz, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`, immutable: true };
}

const typeOf = (path: string) => (path.endsWith('.css') ? 'text/css; charset=utf-8' : path.endsWith('.js') ? 'text/javascript; charset=utf-8' : 'application/octet-stream');

async function buildGraphiql(): Promise<GraphiqlBuild> {
  const started = performance.now();
  const esbuild = await import('esbuild');
  const common = {
    bundle: true,
    minify: true,
    platform: 'browser' as const,
    target: ['chrome100', 'firefox100', 'safari15'],
    define: { 'process.env.NODE_ENV': '"production"' },
    legalComments: 'none' as const,
    outdir: GRAPHIQL_ASSETS.slice(0, -1),
    entryNames: '[name]-[hash]',
    metafile: true as const,
    write: false as const,
    logLevel: 'silent' as const,
  };
  const [page, workers] = await Promise.all([
    esbuild.build({
      ...common,
      entryPoints: { graphiql: ENTRY },
      format: 'esm',
      // Monaco, prettier and the language service load when the editor first needs them.
      splitting: true,
      chunkNames: 'chunk-[hash]',
      assetNames: '[name]-[hash]',
      jsx: 'automatic',
      jsxImportSource: 'react',
      plugins: [
        {
          // graphiql/style.css already holds Monaco's styles; its modules' own CSS imports would
          // only repeat them in stylesheets of lazy chunks that nothing loads.
          name: 'monaco-css-from-graphiql',
          setup(build) {
            build.onResolve({ filter: /\.css$/ }, (args) => (args.importer.includes('/monaco-editor/') ? { path: args.path, namespace: 'empty-css' } : undefined));
            build.onLoad({ filter: /.*/, namespace: 'empty-css' }, () => ({ contents: '', loader: 'css' }));
          },
        },
      ],
    }),
    // Classic worker scripts, one file each: `new Worker(url)` from the same origin.
    esbuild.build({ ...common, entryPoints: Object.fromEntries(Object.entries(WORKERS).map(([label, path]) => [`${label}.worker`, path])), format: 'iife' }),
  ]);
  const files = [...page.outputFiles, ...workers.outputFiles].filter((file) => file.contents.length > 0);
  const assets = new Map<string, Asset>();
  for (const built of await Promise.all(files.map((file) => asset(file.path, typeOf(file.path), Buffer.from(file.contents))))) {
    assets.set(built.path, built);
  }
  // The metafile names outputs relative to the working directory; they are served by file name.
  const url = (output: string) => `${GRAPHIQL_ASSETS}${output.slice(output.lastIndexOf('/') + 1)}`;
  const outputs = page.metafile.outputs;
  const entry = Object.entries(outputs).find(([path, output]) => path.endsWith('.js') && output.entryPoint?.endsWith('src/ui/graphiql/main.tsx'));
  if (!entry?.[1].cssBundle) throw new Error('the GraphiQL bundle has no entry script or stylesheet');
  const script = url(entry[0]);
  const style = url(entry[1].cssBundle);
  const workerUrls: Record<string, string> = {};
  for (const [path, output] of Object.entries(workers.metafile.outputs)) {
    const label = Object.keys(WORKERS).find((l) => output.entryPoint?.endsWith(WORKERS[l]!));
    if (label) workerUrls[label] = url(path);
  }
  const sum = (list: Asset[]) => ({
    raw: list.reduce((n, a) => n + a.body.length, 0),
    brotli: list.reduce((n, a) => n + a.brotli.length, 0),
    gzip: list.reduce((n, a) => n + a.gzip.length, 0),
  });
  // The entry's static imports are fetched before it runs; dynamic ones (Monaco…) right after.
  const firstFiles = new Set([script, style]);
  for (const imported of outputs[entry[0]]!.imports) if (imported.kind === 'import-statement') firstFiles.add(url(imported.path));
  return {
    assets,
    script,
    style,
    workers: workerUrls,
    size: sum([...assets.values()]),
    firstLoad: sum([...firstFiles].map((path) => assets.get(path)).filter((a): a is Asset => !!a)),
    buildMs: Math.round(performance.now() - started),
  };
}

// One build per process: every server in it serves the same sources.
let building: Promise<GraphiqlBuild> | undefined;
function graphiqlBuild(): Promise<GraphiqlBuild> {
  building ??= buildGraphiql().catch((err) => {
    building = undefined; // the next page view tries again
    throw err;
  });
  return building;
}

/** `<` escaped so that no value can close the data block. */
const jsonForHtml = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

function graphiqlPage(build: GraphiqlBuild, nonce: string, introspection: boolean): string {
  return (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">' +
    '<title>GraphiQL · Tollgate</title><link rel="icon" href="data:,">' +
    `<link rel="stylesheet" href="${build.style}">` +
    // A JSON data block is not script: the CSP lets it be, and the page reads it.
    `<script type="application/json" id="tollgate-graphiql">${jsonForHtml({ styleNonce: nonce, workers: build.workers, introspection })}</script>` +
    `<script type="module" src="${build.script}"></script></head>` +
    '<body><div id="graphiql"><noscript>GraphiQL needs JavaScript.</noscript></div></body></html>'
  );
}

/**
 * Whether GraphiQL is served: in development; in production only with TOLLGATE_GRAPHIQL=on
 * (introspection stays off there, so GraphiQL runs operations without a schema to complete from).
 */
function graphiqlEnabled(config: Pick<Config, 'mode' | 'graphiql'>): boolean {
  return config.graphiql ?? config.mode !== 'production';
}

export function createGraphiql(config: Pick<Config, 'mode' | 'graphiql'>, log: Logger) {
  const enabled = graphiqlEnabled(config);
  const introspection = config.mode !== 'production';
  return {
    /** GET or HEAD of /graphql by a browser (it accepts text/html), or of one of GraphiQL's assets. Cheap: GraphQL's hot path asks. */
    handles(req: IncomingMessage, path: string): boolean {
      if (!enabled || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
      if (path.startsWith(GRAPHIQL_ASSETS)) return true;
      if (path !== '/graphql' && !path.startsWith('/graphql?')) return false;
      return String(req.headers.accept ?? '').includes('text/html');
    },
    async serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
      let build: GraphiqlBuild;
      try {
        const first = !building;
        build = await graphiqlBuild();
        if (first) log.info({ ms: build.buildMs, files: build.assets.size, bytes: build.size.raw, brotliBytes: build.size.brotli }, 'GraphiQL built');
      } catch (err) {
        log.error({ err }, 'building GraphiQL failed');
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('GraphiQL could not be built; see the server log.');
        return;
      }
      if (path.startsWith(GRAPHIQL_ASSETS)) {
        const file = build.assets.get(path.split('?', 1)[0]!);
        if (file) return sendAsset(req, res, file);
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff' }).end('Not found');
        return;
      }
      // A fresh nonce per response, so the page itself is never cached.
      const nonce = randomBytes(18).toString('base64');
      const body = Buffer.from(graphiqlPage(build, nonce, introspection));
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8',
        'Content-Length': body.length,
        'Cache-Control': 'no-store',
        'Content-Security-Policy': graphiqlCsp(nonce),
        'X-Content-Type-Options': 'nosniff',
        'Referrer-Policy': 'no-referrer',
        'X-Frame-Options': 'DENY',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
  };
}
