// Servers for benchmarks, each run in its own process so the load generator does not share
// their event loop: `bare` is a plain graphql-yoga `{ hello }`, `tollgate` the real server.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSchema, createYoga } from 'graphql-yoga';
import { loadConfig } from '../../src/config.ts';
import { buildApp } from '../../src/server/app.ts';

const kind = process.argv[2];
if (kind === 'bare') {
  const yoga = createYoga({
    schema: createSchema({ typeDefs: 'type Query { hello: String! }', resolvers: { Query: { hello: () => 'world' } } }),
    logging: false,
    landingPage: false,
  });
  const server = createServer(yoga);
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })));
} else if (kind === 'tollgate') {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-bench-'));
  // Settings from the environment (TOLLGATE_RESPONSE_CACHE_TTL_MS=0 measures without the cache;
  // TOLLGATE_BENCH_DB: a database the benchmark filled beforehand).
  const config = {
    ...loadConfig(process.env),
    port: 0,
    host: '127.0.0.1',
    dbPath: process.env.TOLLGATE_BENCH_DB ?? join(dir, 'bench.db'),
    logLevel: 'warn' as const,
    mode: 'production' as const,
  };
  const app = await buildApp(config);
  const { port } = await app.listen();
  console.log(JSON.stringify({ port }));
  process.once('SIGTERM', async () => {
    await app.stop();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
} else if (kind === 'otlp-decode') {
  // The baseline for ingestion: the same HTTP path, decoding and mapping only, no store.
  const { decodeTraceRequest, encodingOf, mapSpans } = await import('../../src/sources/otlp.ts');
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const encoding = encodingOf(req.headers['content-type'] ?? null)!;
    const mapped = mapSpans(decodeTraceRequest(Buffer.concat(chunks), encoding), {
      primaryTags: [{ tag: 'region', attribute: 'cloud.region' }],
      earliest: Date.now() - 7 * 86_400_000,
      latest: Date.now() + 600_000,
    });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ spans: mapped.spans.length }));
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })));
} else {
  console.error('usage: servers.ts bare|tollgate|otlp-decode');
  process.exit(2);
}

// Exit normally on a signal so `--cpu-prof` can write its profile.
if (kind !== 'tollgate') process.once('SIGTERM', () => process.exit(0));
