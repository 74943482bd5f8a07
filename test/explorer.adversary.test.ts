// The explorer (issue 11) as an adversary and a demanding new user would try it: hostile
// headers, hostile names, broken URLs and a WebSocket that never answers. Each test failed
// before the fix that came with it.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { chooseEncoding } from '../src/server/ui.ts';
import { startServer, type TestServer } from './helpers.ts';

/** A raw GET (node:http: no decompression, any header as given). */
function rawGet(s: TestServer, path: string, headers: Record<string, string>) {
  return new Promise<{ status: number; headers: Record<string, any>; body: Buffer }>((resolve, reject) => {
    request(`${s.url}${path}`, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    })
      .on('error', reject)
      .end();
  });
}

describe('serving the explorer to hostile clients', () => {
  let s: TestServer;
  let js: string;
  before(async () => {
    s = await startServer();
    js = /src="(\/assets\/[^"]+\.js)"/.exec(await (await fetch(`${s.url}/evaluations`)).text())![1]!;
  });
  after(() => s.stop());

  test('Accept-Encoding is read per coding: q=0 refuses, * accepts, case and spaces do not matter', () => {
    assert.equal(chooseEncoding('gzip, deflate, br'), 'br');
    assert.equal(chooseEncoding('br;q=0, gzip'), 'gzip');
    assert.equal(chooseEncoding('BR ; Q=0.000 , GZip;q=0.5'), 'gzip');
    assert.equal(chooseEncoding('gzip;q=0.0'), null);
    assert.equal(chooseEncoding('identity'), null);
    assert.equal(chooseEncoding(''), null);
    assert.equal(chooseEncoding('*'), 'br');
    assert.equal(chooseEncoding('*;q=0, gzip'), 'gzip');
    assert.equal(chooseEncoding('br;q=0.001'), 'br');
    assert.equal(chooseEncoding('x-br, gzipx'), null, 'a coding is a whole token');
  });

  test('a 16 KB Accept-Encoding crafted to backtrack costs no more than an ordinary one', async () => {
    // Before: one regular expression per coding backtracked quadratically over runs of spaces,
    // ~130 ms of the event loop per request, before any authentication. A generous margin.
    const hostile = 'br' + ' '.repeat(15_000) + 'x';
    const started = performance.now();
    for (let i = 0; i < 30; i++) {
      const res = await rawGet(s, js, { 'accept-encoding': hostile });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-encoding'], undefined);
    }
    const ms = performance.now() - started;
    assert.ok(ms < 1500, `30 requests took ${Math.round(ms)} ms`);
  });

  test('each encoding has its own ETag, and any of them revalidates; If-None-Match: * is a match', async () => {
    const br = await rawGet(s, js, { 'accept-encoding': 'br' });
    const gz = await rawGet(s, js, { 'accept-encoding': 'gzip' });
    const plain = await rawGet(s, js, {});
    const tags = new Set([br.headers.etag, gz.headers.etag, plain.headers.etag]);
    // A cache keeping the br and gzip bodies under one strong tag could hand one for the other.
    assert.equal(tags.size, 3, `one ETag per encoding: ${[...tags].join(' ')}`);
    for (const tag of tags) {
      for (const encoding of ['br', 'gzip', 'identity']) {
        const again = await rawGet(s, js, { 'accept-encoding': encoding, 'if-none-match': tag });
        assert.equal(again.status, 304, `${tag} with ${encoding}`);
        assert.equal(again.body.length, 0);
      }
    }
    assert.equal((await rawGet(s, js, { 'if-none-match': '*' })).status, 304);
    assert.equal((await rawGet(s, js, { 'if-none-match': '"nope"' })).status, 200);
  });
});
