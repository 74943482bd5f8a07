// The explorer (issue 11): served by Tollgate itself, then driven in a real browser (Debian's
// chromium through playwright-core) against a real server, as a user would.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { buildUi, UI_CSP } from '../src/server/ui.ts';
import { type HttpResult, startServer, type TestServer } from './helpers.ts';

/** A GET with these headers, the body decompressed as the browser would. */
async function get(s: TestServer, path: string, headers: Record<string, string> = {}): Promise<HttpResult & { raw: Buffer }> {
  const res = await fetch(`${s.url}${path}`, { headers, redirect: 'manual' });
  // fetch decompresses by itself; the raw size is what the network carried.
  const text = await res.text();
  return { status: res.status, text, json: undefined, headers: Object.fromEntries(res.headers) as any, raw: Buffer.from(text) };
}

describe('serving the explorer', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.stop());

  test('every page route answers the same HTML shell with the CSP, no-cache and an ETag', async () => {
    const pages = ['/', '/evaluations', '/evaluations/0b9c2f4e-5b6a-4c1e-9d2a-2f1e0c3b4a5d', '/gates', '/gates/abc', '/monitors', '/monitors/abc', '/insights'];
    const bodies = new Set<string>();
    for (const path of pages) {
      const res = await get(s, path, { accept: 'text/html' });
      assert.equal(res.status, 200, path);
      assert.match(String(res.headers['content-type']), /^text\/html/, path);
      assert.equal(res.headers['content-security-policy'], UI_CSP, path);
      assert.equal(res.headers['cache-control'], 'no-cache', path);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['referrer-policy'], 'no-referrer');
      assert.ok(res.headers.etag, path);
      bodies.add(res.text);
    }
    assert.equal(bodies.size, 1, 'one shell for every page (routing is client-side)');
    const [html] = [...bodies];
    assert.doesNotMatch(html!, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    assert.doesNotMatch(html!, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or handler');
    assert.doesNotMatch(html!, /https?:\/\//, 'no asset from another origin (air-gapped networks)');
    assert.match(html!, /<script type="module" src="\/assets\/main-[A-Z0-9]+\.js">/);
    assert.match(html!, /<link rel="stylesheet" href="\/assets\/main-[A-Z0-9]+\.css">/);
  });

  test('assets: hashed names, immutable caching, ETag revalidation, brotli and gzip by Accept-Encoding', async () => {
    const html = (await get(s, '/evaluations')).text;
    const js = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!;
    const css = /href="(\/assets\/[^"]+\.css)"/.exec(html)![1]!;
    for (const path of [js, css]) {
      const raw = (encoding: string) =>
        new Promise<{ status: number; headers: Record<string, any>; body: Buffer }>((resolve, reject) => {
          // node:http, so the body arrives as sent (fetch would decompress it).
          import('node:http').then(({ get: httpGet }) =>
            httpGet(`${s.url}${path}`, { headers: { 'accept-encoding': encoding } }, (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c) => chunks.push(c));
              res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
            }).on('error', reject),
          );
        });
      const br = await raw('gzip, deflate, br');
      const gz = await raw('gzip');
      const plain = await raw('identity');
      assert.equal(br.status, 200);
      assert.equal(br.headers['content-encoding'], 'br');
      assert.equal(gz.headers['content-encoding'], 'gzip');
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.deepEqual(brotliDecompressSync(br.body), plain.body);
      assert.deepEqual(gunzipSync(gz.body), plain.body);
      assert.equal(br.headers['cache-control'], 'public, max-age=31536000, immutable');
      assert.equal(br.headers.vary, 'Accept-Encoding');
      const again = await fetch(`${s.url}${path}`, { headers: { 'if-none-match': br.headers.etag } });
      assert.equal(again.status, 304, 'a known ETag is answered 304');
    }
    const shell = await fetch(`${s.url}/evaluations`);
    const revalidated = await fetch(`${s.url}/gates`, { headers: { 'if-none-match': shell.headers.get('etag')! } });
    assert.equal(revalidated.status, 304, 'the shell revalidates by ETag');
    assert.equal((await fetch(`${s.url}/assets/main-NOSUCHHASH.js`)).status, 404);
  });

  test('GraphQL, REST and unknown paths are not the explorer\'s', async () => {
    const gql = await s.gql('{ __typename }');
    assert.equal(gql.data.__typename, 'Query');
    const json = await get(s, '/evaluations', { accept: 'application/json' });
    assert.notEqual(json.headers['content-type']?.toString().startsWith('text/html'), true, 'a JSON client is not sent the page');
    assert.equal((await get(s, '/nowhere', { accept: 'text/html' })).status, 404);
    const post = await fetch(`${s.url}/evaluations`, { method: 'POST', headers: { accept: 'text/html' } });
    assert.notEqual(post.headers.get('content-type')?.startsWith('text/html'), true, 'only GET and HEAD are pages');
  });

  test('first load (HTML shell, script and style) is at most 150 KB compressed', async () => {
    const build = await buildUi();
    const { gzip, brotli } = build.firstLoad('main');
    console.log(`explorer first load: ${(brotli / 1024).toFixed(1)} KB brotli, ${(gzip / 1024).toFixed(1)} KB gzip`);
    assert.ok(gzip <= 150 * 1024, `${gzip} bytes gzip`);
    assert.ok(brotli <= gzip);
  });
});
