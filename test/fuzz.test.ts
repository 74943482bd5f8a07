// Seeded fuzzing of every public HTTP interface against a real server: GraphQL documents built
// from the schema's own fields and arguments (wrong types, nulls, huge strings, deep nesting, bad
// enums, unicode, unknown ids), the REST routes, the gate hooks, the Alertmanager receiver and
// OTLP (JSON mutations and protobuf byte mutations). After every request:
//   - no 5xx and no INTERNAL_SERVER_ERROR, the server still answers /healthz;
//   - an error has the interface's shape (GraphQL errors[].extensions.code, REST and hooks
//     errors[].detail, OTLP {code, message});
//   - a refused request wrote nothing (row counts of every table it could touch are unchanged).
// The seed is printed; TOLLGATE_FUZZ_SEED replays a run, TOLLGATE_FUZZ_RUNS sets the requests per
// surface, TOLLGATE_FUZZ_REPLAY=<surface>:<index> sends only that one request (printed in full).
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';
import root from '@opentelemetry/otlp-transformer/build/esm/generated/root.js';
import {
  type GraphQLArgument,
  GraphQLEnumType,
  type GraphQLField,
  GraphQLInputObjectType,
  type GraphQLInputType,
  GraphQLInterfaceType,
  GraphQLList,
  GraphQLNonNull,
  GraphQLObjectType,
  type GraphQLOutputType,
  GraphQLScalarType,
  GraphQLUnionType,
  getNamedType,
  getNullableType,
} from 'graphql';
import { schema } from '../src/graphql/index.ts';
import { ADMIN_KEY, CREATE_GATE, driver, monitorRule, startServer, type TestServer } from './helpers.ts';

/** A whole number of at least 0 from the environment (a typo must not silently become seed 0 or NaN runs). */
function wholeFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a whole number of at least 0 (got ${JSON.stringify(raw)})`);
  return n;
}
const SEED = wholeFromEnv('TOLLGATE_FUZZ_SEED', Math.floor(Math.random() * 2 ** 31));
const RUNS = wholeFromEnv('TOLLGATE_FUZZ_RUNS', 400);
const REPLAY = process.env.TOLLGATE_FUZZ_REPLAY ? /^(\w+):(\d+)$/.exec(process.env.TOLLGATE_FUZZ_REPLAY) : null;
console.log(`fuzz: seed ${SEED}, ${RUNS} requests per surface (replay with TOLLGATE_FUZZ_SEED=${SEED})`);

// ---- a small seeded PRNG (sfc32), one stream per surface so each replays on its own ----

function prng(seed: number, surface: string) {
  let h = 1779033703 ^ surface.length;
  for (const c of surface) (h = Math.imul(h ^ c.charCodeAt(0), 3432918353)), (h = (h << 13) | (h >>> 19));
  let a = seed >>> 0,
    b = h >>> 0,
    c = 0x9e3779b9,
    d = 0x85ebca6b;
  const next = () => {
    a |= 0;
    b |= 0;
    c |= 0;
    d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  const rng = {
    next,
    int: (n: number) => Math.floor(next() * n),
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
  };
  return rng;
}
type Rng = ReturnType<typeof prng>;

// ---- hostile values ----

const HUGE = 'x'.repeat(100_000);
// biome-ignore format: a table of hostile strings, a few to a line
const STRINGS = [
  '', ' ', 'prod', 'staging', 'checkout', 'default', 'v1.2.3', 'region:us-east-1', 'env:prod', 'env:staging',
  'name:*a*a*a*a*a*a*a*a*a*a*b*', '"unterminated', '(a OR (b AND', 'NOT NOT NOT', 'group:("a:b" OR "c:d")', 'id:', '*',
  'ünïcödé ✓ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🚀', '\u202eevil', 'a\u0000b', '\ud800', '\\', "' OR 1=1 --", '%ZZ', '%E0%A4%A', '../../etc/passwd',
  '<script>alert(1)</script>',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a Log4Shell probe, meant literally
  '${jndi:ldap://x}', '\n\r\t', 'a'.repeat(301), 'b'.repeat(5000), HUGE,
  '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'not-a-uuid', '2026-01-31T12:00:00Z', 'tomorrow',
];
const NUMBERS = [0, -1, 1, 2, 7200, 7201, -7200, 2 ** 31, -(2 ** 31) - 1, 1.5, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 0.0001, 1e-320];

function junk(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 3 ? 4 : 7)) {
    case 0:
      return null;
    case 1:
      return rng.pick(STRINGS);
    case 2:
      return rng.pick(NUMBERS);
    case 3:
      return rng.chance(0.5);
    case 4:
      return Array.from({ length: rng.int(4) }, () => junk(rng, depth + 1));
    case 5:
      return Object.fromEntries(
        Array.from({ length: rng.int(4) }, () => [
          rng.pick(['a', 'name', 'env', 'data', 'type', '__proto__', 'constructor', rng.pick(STRINGS).slice(0, 20)]),
          junk(rng, depth + 1),
        ]),
      );
    default:
      return nested(rng.int(2) === 0 ? 'array' : 'object', 20 + rng.int(200));
  }
}

function nested(kind: 'array' | 'object', depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = kind === 'array' ? [v] : { a: v };
  return v;
}

/** Deep nesting that JSON.parse must survive, as text (too deep for JSON.stringify's stack). */
const deepText = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
const deepObjectText = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);

// ---- HTTP ----

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer | string;
}
interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

function send(base: string, r: Sent, timeoutMs = 20_000): Promise<Received> {
  return new Promise((resolve, reject) => {
    // node frames a GET or DELETE body only with an explicit length (else it would be read as the next request).
    const headers = r.body === undefined ? r.headers : { ...r.headers, 'content-length': String(Buffer.byteLength(r.body)) };
    const req = httpRequest(`${base}${r.path}`, { method: r.method, headers, agent: false });
    // A wall clock, not an idle timeout: a stream's keep-alives would keep an idle one from firing.
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('close', () => clearTimeout(deadline));
    req.on('response', (res) => {
      // A subscription over HTTP answers with a stream that stays open: its status is the answer.
      if (/text\/event-stream|multipart\/mixed/.test(String(res.headers['content-type']))) {
        resolve({ status: res.statusCode!, headers: res.headers, text: '', json: { stream: true } });
        req.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        let json: any;
        try {
          json = /protobuf/.test(String(res.headers['content-type'])) ? protobufStatus(body) : JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(r.body);
  });
}

/**
 * OTLP answers a protobuf request's error with a google.rpc.Status in protobuf: `code` (field 1,
 * varint) and `message` (field 2, string) are all that is read here.
 */
function protobufStatus(body: Buffer): { code?: number; message?: string } {
  const out: { code?: number; message?: string } = {};
  const varint = (at: number): [number, number] => {
    let value = 0;
    for (let shift = 0; at < body.length; shift += 7) {
      const b = body[at++]!;
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return [value, at];
    }
    throw new Error('truncated varint');
  };
  for (let at = 0; at < body.length; ) {
    const [tag, next] = varint(at);
    const field = Math.floor(tag / 8);
    if ((tag & 7) === 0) [out.code, at] = field === 1 ? varint(next) : [out.code, varint(next)[1]];
    else if ((tag & 7) === 2) {
      const [length, start] = varint(next);
      if (field === 2) out.message = body.subarray(start, start + length).toString('utf8');
      at = start + length;
    } else throw new Error(`unexpected wire type ${tag & 7}`);
  }
  return out;
}

const show = (v: Buffer | string | undefined, max = 600) => {
  if (v === undefined) return '';
  const text = typeof v === 'string' ? v : /^[\t\n\r\x20-\x7e]*$/.test(v.toString('latin1')) ? v.toString('latin1') : `base64:${v.toString('base64')}`;
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
};

// ---- counts around each request: a refused request writes nothing ----

function counts(s: TestServer, tables: readonly string[]): Record<string, number> {
  const db = s.app.deps.db.$client;
  const out: Record<string, number> = {};
  for (const t of tables) out[t] = (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
  if (tables.includes('apm_stats')) out['sum(apm_stats.hits)'] = (db.prepare('SELECT coalesce(sum(hits), 0) AS n FROM apm_stats').get() as { n: number }).n;
  return out;
}

// ---- the runner shared by every surface ----

interface Case extends Sent {
  /** What the response must look like when it is an error. */
  shape: 'graphql' | 'rest' | 'otlp' | 'none';
  /** GraphQL: root fields of the operation (a refusal is all of them null). */
  rootFields?: string[];
  /** 4xx statuses that are answers, not errors (Flagger's 409 evaluating, 412 failed), with a verdict body. */
  verdicts?: number[];
}

interface Surface {
  name: string;
  tables: readonly string[];
  generate(rng: Rng, index: number): Case;
}

const isVerdict = (c: Case, r: Received) => Boolean(c.verdicts?.includes(r.status) && typeof r.json?.status === 'string' && typeof r.json?.evaluation_id === 'string');

function errorShapeProblem(c: Case, r: Received): string | null {
  if (isVerdict(c, r)) return null;
  if (c.shape === 'graphql') {
    if (r.status >= 400 && !r.json) return `status ${r.status} without a JSON body: ${show(r.text, 200)}`;
    const errors = r.json?.errors;
    if (errors === undefined) return r.status >= 400 ? `status ${r.status} without errors` : null;
    if (!Array.isArray(errors) || errors.length === 0) return 'errors is not a non-empty array';
    for (const e of errors) {
      if (typeof e?.message !== 'string') return `an error without a message: ${JSON.stringify(e).slice(0, 200)}`;
      const code = e.extensions?.code;
      if (typeof code !== 'string') return `an error without extensions.code: ${JSON.stringify(e).slice(0, 300)}`;
      if (code === 'INTERNAL_SERVER_ERROR') return `INTERNAL_SERVER_ERROR: ${e.message}`;
    }
    return null;
  }
  if (r.status < 400 || c.shape === 'none') return null;
  if (!r.json) return `status ${r.status} without a JSON body: ${show(r.text, 200)}`;
  if (c.shape === 'otlp') return typeof r.json.message === 'string' && r.json.message !== '' ? null : `OTLP error without a message: ${show(r.text, 200)}`;
  const errors = r.json.errors;
  if (!Array.isArray(errors) || errors.length === 0) return `status ${r.status} without errors[]: ${show(r.text, 200)}`;
  for (const e of errors) if (typeof e?.detail !== 'string' || e.detail === '') return `an error without detail: ${JSON.stringify(e).slice(0, 200)}`;
  return null;
}

/**
 * Whether nothing should have been written. GraphQL runs the root fields of a mutation in turn, so
 * with several of them an error in one (which may null the whole `data`) leaves the others
 * done: then only errors before execution (parsing, validation, variables: no path) mean refused.
 */
function refused(c: Case, r: Received): boolean {
  if (isVerdict(c, r)) return false;
  if (r.status >= 400) return true;
  if (c.shape !== 'graphql') return false;
  const errors = r.json?.errors as Array<{ path?: unknown[] }> | undefined;
  if (!errors) return false;
  if (errors.every((e) => !e.path)) return true;
  const data = r.json?.data;
  return c.rootFields?.length === 1 && data?.[c.rootFields[0]!] == null;
}

async function fuzz(s: TestServer, surface: Surface): Promise<void> {
  const rng = prng(SEED, surface.name);
  const only = REPLAY && REPLAY[1] === surface.name ? Number(REPLAY[2]) : null;
  if (REPLAY && only === null) return;
  const failures: string[] = [];
  for (let i = 0; i < RUNS && (only === null || i <= only); i++) {
    const c = surface.generate(rng, i);
    if (only !== null && i !== only) continue;
    if (only !== null) console.log(`replaying ${surface.name}:${i}: ${c.method} ${c.path} ${JSON.stringify(c.headers)}\n${show(c.body, 1e6)}`);
    const problems: string[] = [];
    const before = counts(s, surface.tables);
    let r: Received | undefined;
    try {
      r = await send(s.url, c);
    } catch (err) {
      problems.push(`no response: ${(err as Error).message}`);
    }
    if (r) {
      if (r.status >= 500) problems.push(`status ${r.status}: ${show(r.text, 300)}`);
      const shape = errorShapeProblem(c, r);
      if (shape) problems.push(shape);
      if (refused(c, r)) {
        const after = counts(s, surface.tables);
        const changed = Object.keys(before).filter((t) => before[t] !== after[t]);
        if (changed.length > 0)
          problems.push(
            `refused (${r.status}${r.json?.errors ? `, ${show(JSON.stringify(r.json.errors), 200)}` : ''}) but wrote: ${changed.map((t) => `${t} ${before[t]}→${after[t]}`).join(', ')}`,
          );
      }
    }
    try {
      const health = await send(s.url, { method: 'GET', path: '/healthz', headers: {} }, 10_000);
      if (health.status !== 200) problems.push(`/healthz then answered ${health.status}`);
    } catch (err) {
      problems.push(`/healthz then failed: ${(err as Error).message}`);
    }
    if (problems.length > 0) {
      failures.push(
        `[${surface.name}:${i}] TOLLGATE_FUZZ_SEED=${SEED} TOLLGATE_FUZZ_REPLAY=${surface.name}:${i}\n` +
          `  ${c.method} ${show(c.path, 300)} ${show(JSON.stringify(c.headers), 300)}\n  body: ${show(c.body)}\n  → ${problems.join('\n  → ')}`,
      );
      if (only !== null) console.log(`answer: ${r?.status} ${show(r?.text, 2000)}`);
    }
  }
  if (failures.length > 0) assert.fail(`${failures.length} of ${RUNS} ${surface.name} requests broke an invariant (seed ${SEED}):\n\n${failures.join('\n\n')}`);
}

// ---- the world each surface starts from: real ids to aim at, keys of several kinds ----

interface World {
  gates: string[];
  rules: string[];
  monitors: string[];
  evaluations: string[];
  apiKeys: string[];
  keys: Array<string | null>;
}

async function world(s: TestServer): Promise<World> {
  const d = driver(s);
  const monitors = [await d.monitor('checkout errors', ['service:checkout', 'env:prod']), await d.monitor('cart latency', ['service:cart', 'env:staging'])];
  const gates: string[] = [];
  const rules: string[] = [];
  for (const env of ['prod', 'staging']) {
    const r = await s.gql(CREATE_GATE, { input: { service: 'checkout', env, rules: [monitorRule('errors', { query: `env:${env}` })] } });
    assert.ifError(r.errors?.[0]?.message);
    gates.push(r.data.createGate.id);
    rules.push(r.data.createGate.rules[0].id);
  }
  const e = await d.evaluate({ service: 'checkout', env: 'staging' });
  assert.ifError(e.errors?.[0]?.message);
  const staging = await s.createKey(['gates:read', 'gates:write', 'evaluations:write', 'monitors:write', 'ingest'], ['staging']);
  const reader = await s.createKey(['gates:read']);
  const ingest = await s.createKey(['ingest']);
  const keys = (await s.gql('{ apiKeys { id } }')).data.apiKeys.map((k: { id: string }) => k.id);
  return {
    gates,
    rules,
    monitors,
    evaluations: [e.data.evaluateGate.id],
    apiKeys: keys,
    keys: [ADMIN_KEY, ADMIN_KEY, ADMIN_KEY, staging, reader, ingest, null, 'tg_not-a-real-key', ''],
  };
}

const anId = (rng: Rng, w: World) =>
  rng.pick([
    ...w.gates,
    ...w.rules,
    ...w.monitors,
    ...w.evaluations,
    ...w.apiKeys,
    rng.pick(STRINGS),
    '00000000-0000-4000-8000-000000000000',
    'ZZZZZZZZ-0000-4000-8000-000000000000',
  ]);

function authHeaders(rng: Rng, w: World, style: 'bearer' | 'any' = 'any'): Record<string, string> {
  const key = rng.pick(w.keys);
  if (key === null) return {};
  if (style === 'any' && rng.chance(0.3)) return { 'dd-api-key': key };
  return { authorization: rng.chance(0.05) ? `Basic ${key}` : `Bearer ${key}` };
}

// ---- GraphQL: documents from the schema itself ----

function gqlString(v: string): string {
  return JSON.stringify(v);
}

/** A value for an input type: mostly well-typed, sometimes wrong, null, huge or deep. */
function inputValue(rng: Rng, w: World, type: GraphQLInputType, depth: number): unknown {
  const roll = rng.next();
  if (roll < 0.06) return null;
  if (roll < 0.14) return junk(rng);
  if (type instanceof GraphQLNonNull) return inputValue(rng, w, type.ofType, depth);
  if (type instanceof GraphQLList) {
    if (rng.chance(0.1)) return inputValue(rng, w, type.ofType, depth); // a single value where a list goes
    // Long lists only near the top: a long list inside a long list multiplies (seed 616406662 built
    // a body longer than JSON.stringify can make).
    const n = depth < 2 && rng.chance(0.05) ? 500 + rng.int(2000) : rng.int(4);
    return Array.from({ length: n }, () => inputValue(rng, w, type.ofType, depth + 1));
  }
  if (type instanceof GraphQLEnumType) {
    const names = type.getValues().map((v) => v.name);
    return rng.chance(0.8) ? { enum: rng.pick(names) } : { enum: rng.pick(['admin', 'gates:read', 'UNKNOWN', 'PASSED', names[0]!.toLowerCase()]) };
  }
  if (type instanceof GraphQLInputObjectType) {
    if (depth > 6) return null;
    const out: Record<string, unknown> = {};
    const fields = Object.values(type.getFields());
    const oneOf = (type as { isOneOf?: boolean }).isOneOf;
    const chosen = oneOf ? (rng.chance(0.85) ? [rng.pick(fields)] : fields.filter(() => rng.chance(0.5))) : fields;
    for (const f of chosen) {
      const required = f.type instanceof GraphQLNonNull;
      if (!oneOf && !required && rng.chance(0.5)) continue;
      if (required && rng.chance(0.03)) continue;
      out[f.name] = inputValue(rng, w, f.type, depth + 1);
    }
    if (rng.chance(0.05)) out[rng.pick(['unknownField', 'id', '__typename', 'createdBy'])] = junk(rng);
    return out;
  }
  if (type instanceof GraphQLScalarType) {
    switch (type.name) {
      case 'ID':
        return rng.chance(0.7) ? anId(rng, w) : rng.pick(STRINGS);
      case 'String':
        return rng.chance(0.3) ? rng.pick(['prod', 'staging', 'checkout', 'env:prod', 'service:checkout', 'default']) : rng.pick(STRINGS);
      case 'Int':
        return rng.chance(0.7) ? rng.pick([0, 1, 5, 20, 100, -1, 1000, 2 ** 31 - 1]) : rng.pick(NUMBERS);
      case 'Float':
        return rng.pick(NUMBERS);
      case 'Boolean':
        return rng.chance(0.9) ? rng.chance(0.5) : rng.pick(['true', 0, 1]);
      case 'DateTime':
        return rng.pick(['2026-01-31T12:00:00Z', new Date().toISOString(), '0000-00-00', '', 'tomorrow', '275760-09-13T00:00:00.001Z', 1e15]);
      default:
        return junk(rng);
    }
  }
  return junk(rng);
}

/** As a GraphQL literal (enums as `{enum}` markers become bare names). */
function literal(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return gqlString(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '0';
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(literal).join(', ')}]`;
  const o = v as Record<string, unknown>;
  if (Object.keys(o).length === 1 && typeof o.enum === 'string') return /^[_A-Za-z][_0-9A-Za-z]*$/.test(o.enum) ? o.enum : gqlString(o.enum);
  return `{${Object.entries(o)
    .map(([k, x]) => `${/^[_A-Za-z][_0-9A-Za-z]*$/.test(k) ? k : 'bad'}: ${literal(x)}`)
    .join(', ')}}`;
}

/** As a JSON variable value (enum markers become their names). */
function jsonValue(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(jsonValue);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (Object.keys(o).length === 1 && typeof o.enum === 'string') return o.enum;
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, jsonValue(x)]));
  }
  return v;
}

function selection(rng: Rng, type: GraphQLOutputType, depth: number, maxDepth: number): string {
  const named = getNamedType(type);
  if (named instanceof GraphQLScalarType || named instanceof GraphQLEnumType) return '';
  if (named instanceof GraphQLUnionType || named instanceof GraphQLInterfaceType) {
    const possible = schema.getPossibleTypes(named);
    return `{ __typename ${possible
      .filter(() => rng.chance(0.5))
      .map((t) => `... on ${t.name} ${selection(rng, t, depth, maxDepth) || '{ __typename }'}`)
      .join(' ')} }`;
  }
  const obj = named as GraphQLObjectType;
  const fields = Object.values(obj.getFields());
  const picked: string[] = [];
  const leaves = fields.filter(
    (f) => !(getNamedType(f.type) instanceof GraphQLObjectType || getNamedType(f.type) instanceof GraphQLInterfaceType || getNamedType(f.type) instanceof GraphQLUnionType),
  );
  const branches = fields.filter((f) => !leaves.includes(f));
  for (let k = 0, n = 1 + rng.int(4); k < n && leaves.length > 0; k++) picked.push(rng.pick(leaves).name);
  if (depth < maxDepth && branches.length > 0) {
    for (let k = 0, n = depth > 3 ? 1 : rng.int(3); k < n; k++) {
      const f = rng.pick(branches);
      const args = f.args.filter((a) => a.type instanceof GraphQLNonNull);
      if (args.length > 0) continue;
      const sub = selection(rng, f.type, depth + 1, maxDepth);
      if (sub) picked.push(`${f.name} ${sub}`);
    }
  }
  if (picked.length === 0) picked.push('__typename');
  return `{ ${[...new Set(picked)].join(' ')} }`;
}

function gqlCase(rng: Rng, w: World): Case {
  const headers = { 'content-type': 'application/json', ...authHeaders(rng, w, 'bearer') };
  const transport = rng.next();
  // Malformed envelopes: not JSON, wrong types, batches, GET.
  if (transport < 0.1) {
    const body = rng.pick([
      '',
      'null',
      '[]',
      '{',
      '"query"',
      '{"query": 1}',
      '{"query": null}',
      '{"query": "{ gates { totalCount } }", "variables": "x"}',
      '{"query": "{ gates { totalCount } }", "variables": [1]}',
      '[{"query": "{ __typename }"}, {"query": "{ __typename }"}]',
      `{"query": "${'{ a '.repeat(3000)}"}`,
      deepText(50_000),
      '{"query": "query { __typename }", "operationName": 5}',
      '{"query": "subscription { gateEvents { kind } }"}',
    ]);
    const ct = rng.pick(['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/graphql-response+json', 'multipart/form-data; boundary=x']);
    return { method: rng.pick(['POST', 'POST', 'PUT', 'PATCH']), path: '/graphql', headers: { ...headers, 'content-type': ct }, body, shape: 'graphql' };
  }
  const opType = rng.chance(0.5) ? 'mutation' : 'query';
  const rootType = opType === 'mutation' ? schema.getMutationType()! : schema.getQueryType()!;
  const rootFields = Object.values(rootType.getFields());
  const fieldCount = rng.chance(0.85) ? 1 : 2 + rng.int(3);
  const useVariables = rng.chance(0.5);
  const varDefs: string[] = [];
  const variables: Record<string, unknown> = {};
  const maxDepth = rng.chance(0.1) ? 14 : 3;
  const parts: string[] = [];
  const aliases: string[] = [];
  for (let k = 0; k < fieldCount; k++) {
    const field: GraphQLField<unknown, unknown> = rng.pick(rootFields);
    const alias = `f${k}`;
    aliases.push(alias);
    const args: string[] = [];
    const argList: GraphQLArgument[] = [...field.args];
    for (const arg of argList) {
      if (!(arg.type instanceof GraphQLNonNull) && rng.chance(0.5)) continue;
      if (arg.type instanceof GraphQLNonNull && rng.chance(0.03)) continue;
      const value = inputValue(rng, w, arg.type, 0);
      if (useVariables) {
        const name = `v${k}_${arg.name}`;
        // Sometimes the variable is declared with a looser or wrong type.
        const declared = rng.chance(0.9) ? String(arg.type) : rng.pick(['String', 'Int', 'ID!', 'JSON', '[String!]!', String(getNullableType(arg.type))]);
        varDefs.push(`$${name}: ${declared}`);
        if (!rng.chance(0.03)) variables[name] = jsonValue(value);
        args.push(`${arg.name}: $${name}`);
      } else args.push(`${arg.name}: ${literal(value)}`);
    }
    if (rng.chance(0.03)) args.push(`unknownArg: ${literal(junk(rng))}`);
    const sub = selection(rng, field.type, 0, maxDepth);
    parts.push(`${alias}: ${field.name}${args.length ? `(${args.join(', ')})` : ''} ${sub}`);
  }
  let query = `${opType} Fuzz${varDefs.length ? `(${varDefs.join(', ')})` : ''} { ${parts.join(' ')} }`;
  // Syntax damage now and then.
  if (rng.chance(0.05)) {
    const at = rng.int(query.length);
    query = rng.chance(0.5) ? query.slice(0, at) : query.slice(0, at) + rng.pick(['{', '}', '(', '$', '"', '...', '@include(if: true)', '\u0000', '#']) + query.slice(at);
  }
  const body = JSON.stringify({ query, variables, ...(rng.chance(0.05) && { operationName: rng.pick(['Fuzz', 'Other', '']) }) });
  return { method: 'POST', path: '/graphql', headers, body, shape: 'graphql', rootFields: aliases };
}

// ---- REST ----

const PREFIX = ['/api/v2', '/api/unstable'];
const BAD_SEGMENTS = ['%E0%A4%A', '%', '%ZZ', '%C0%AF', '%FF', '%00', '%2F', '..', '%25', 'x'.repeat(3000), '%F0%9F%9A%80', '%ED%A0%80'];

function segment(rng: Rng, w: World): string {
  const r = rng.next();
  if (r < 0.5) return rng.pick([...w.gates, ...w.rules, ...w.evaluations]);
  if (r < 0.8) return rng.pick(BAD_SEGMENTS);
  return encodeURIComponent(
    rng
      .pick(STRINGS)
      .slice(0, 200)
      .replace(/[\ud800-\udfff]/g, '?'),
  );
}

function queryString(rng: Rng): string {
  const params: string[] = [];
  for (let k = 0, n = rng.int(4); k < n; k++) {
    const name = rng.pick([
      'page[size]',
      'page[cursor]',
      'filter[env]',
      'filter[service]',
      'filter[from]',
      'filter[to]',
      'filter[status]',
      'filter[dry_run]',
      'filter[gate_id]',
      'filter[evaluation_id]',
      'filter[gate_evaluation_id]',
      'filter[type]',
      'unknown',
      '%ZZ',
    ]);
    const value = rng.pick([
      '-1',
      '0',
      '1',
      '100',
      '101',
      '1000',
      '1001',
      '1e9',
      '99999999999999999999',
      'NaN',
      '1.5',
      '',
      'abc',
      '%ZZ',
      '%E0%A4%A',
      'prod,staging',
      '2026-01-01T00:00:00Z',
      '0',
      encodeURIComponent(HUGE.slice(0, 4000)),
    ]);
    params.push(`${name.replace('[', '%5B').replace(']', '%5D')}=${value}`);
  }
  return params.length ? `?${params.join('&')}` : '';
}

function restBody(rng: Rng, kind: 'gate' | 'rule' | 'evaluation'): string | Buffer | undefined {
  const r = rng.next();
  if (r < 0.15)
    return rng.pick([
      '',
      'null',
      '[]',
      '{',
      '42',
      '"text"',
      '{"data": null}',
      '{"data": []}',
      '{"data": {"attributes": null}}',
      deepText(20_000),
      '\uFEFF{}',
      Buffer.from([0xff, 0xfe, 0x00]) as unknown as string,
    ]);
  const attrs: Record<string, unknown> =
    kind === 'gate'
      ? { service: 'checkout', env: rng.pick(['prod', 'staging', 'qa']), identifier: rng.pick(['default', 'canary', '']), dry_run: rng.chance(0.5) }
      : kind === 'rule'
        ? {
            name: `r${rng.int(1000)}`,
            type: rng.pick(['monitor', 'faulty_deployment_detection', 'bogus']),
            dry_run: false,
            options: rng.chance(0.5) ? { query: 'env:staging', duration: rng.pick([0, 60, -1, 99999]) } : { duration: 60, alpha: rng.pick([0.01, 2, -1]) },
          }
        : {
            service: 'checkout',
            env: rng.pick(['prod', 'staging']),
            version: 'v1',
            ...(rng.chance(0.5) && { configuration: { rules: [{ type: 'monitor', name: 'm', options: { query: rng.pick(STRINGS).slice(0, 300) } }] } }),
          };
  // Damage: wrong types, nulls, unknown fields, huge values.
  for (let k = 0, n = rng.int(4); k < n; k++) {
    const key = rng.pick([...Object.keys(attrs), 'unknown_field', 'primary_tag', 'idempotency_key', 'on_source_error', 'configuration']);
    attrs[key] = junk(rng);
  }
  return JSON.stringify({ data: { type: rng.pick(['deployment_gate', 'deployment_rule', 'x']), attributes: attrs } });
}

function restCase(rng: Rng, w: World): Case {
  const prefix = rng.pick(PREFIX);
  const shapes: Array<() => [string, string, 'gate' | 'rule' | 'evaluation']> = [
    () => [rng.pick(['GET', 'POST']), `${prefix}/deployment_gates`, 'gate'],
    () => [rng.pick(['GET', 'PUT', 'DELETE', 'PATCH']), `${prefix}/deployment_gates/${segment(rng, w)}`, 'gate'],
    () => [rng.pick(['GET', 'POST']), `${prefix}/deployment_gates/${segment(rng, w)}/rules`, 'rule'],
    () => [rng.pick(['GET', 'PUT', 'DELETE']), `${prefix}/deployment_gates/${segment(rng, w)}/rules/${segment(rng, w)}`, 'rule'],
    () => ['POST', `${prefix}/deployments/gates/evaluation`, 'evaluation'],
    () => ['GET', `${prefix}/deployments/gates/evaluation/${segment(rng, w)}`, 'evaluation'],
    () => ['GET', `${prefix}/deployment_gates/evaluations`, 'evaluation'],
    () => ['GET', `${prefix}/deployment_gates/evaluations/rules`, 'evaluation'],
    () => [rng.pick(['GET', 'POST']), `/api/${segment(rng, w)}`, 'gate'],
  ];
  const [method, path, kind] = rng.pick(shapes)();
  const body = method === 'POST' || method === 'PUT' || rng.chance(0.05) ? restBody(rng, kind) : undefined;
  const headers = { 'content-type': rng.chance(0.9) ? 'application/json' : rng.pick(['text/plain', 'application/xml', '']), ...authHeaders(rng, w) };
  // `/api/..` is `/` once resolved: not the REST API's to answer.
  const shape = new URL(path, 'http://x').pathname.startsWith('/api/') ? 'rest' : 'none';
  return { method, path: path + queryString(rng), headers, body, shape };
}

// ---- the hooks ----

function hookCase(rng: Rng, w: World): Case {
  const hook = rng.pick(['/hooks/flagger', '/hooks/gate']);
  const key = rng.pick(w.keys);
  const params: string[] = [];
  if (key !== null && rng.chance(0.5)) params.push(`key=${encodeURIComponent(key)}`);
  for (const [name, values] of Object.entries({
    service: ['checkout', '', '%ZZ', 'x'.repeat(2000)],
    env: ['prod', 'staging', '', '%E0%A4%A'],
    identifier: ['default', 'canary'],
    version: ['v1', 'v2', ''],
    run: ['1', '%FF'],
    primary_tag: ['region:eu', ''],
  })) {
    if (rng.chance(0.4)) params.push(`${name}=${rng.pick(values)}`);
  }
  const method = rng.pick(['GET', 'POST', 'POST', 'PUT']);
  let body: string | undefined;
  if (method !== 'GET') {
    const r = rng.next();
    if (r < 0.4)
      body = rng.pick([
        'null',
        '[]',
        '42',
        '"x"',
        'true',
        '{',
        '',
        deepText(30_000),
        deepObjectText(5000),
        '{"metadata": null}',
        '{"metadata": 5}',
        '{"metadata": []}',
        '{"checksum": {}}',
      ]);
    else {
      const flagger: Record<string, unknown> = {
        name: 'podinfo',
        namespace: 'test',
        phase: 'Progressing',
        checksum: rng.pick(['abc', 1, null, {}]),
        metadata: { service: 'checkout', env: rng.pick(['prod', 'staging']), version: rng.pick(['v1', 'v2']) },
      };
      for (let k = 0, n = rng.int(4); k < n; k++) {
        const metadata = flagger.metadata;
        const target = rng.chance(0.5) || !metadata || typeof metadata !== 'object' || Array.isArray(metadata) ? flagger : (metadata as Record<string, unknown>);
        target[rng.pick(['service', 'env', 'identifier', 'version', 'run', 'primary_tag', 'name', 'namespace', 'metadata', '__proto__'])] = junk(rng);
      }
      body = JSON.stringify(flagger);
    }
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(key !== null && rng.chance(0.5) ? { authorization: `Bearer ${key}` } : {}) };
  return { method, path: `${hook}${params.length ? `?${params.join('&')}` : ''}`, headers, body, shape: 'rest', verdicts: hook === '/hooks/flagger' ? [409, 412] : [] };
}

function alertmanagerCase(rng: Rng, w: World): Case {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...authHeaders(rng, w, 'bearer') };
  const r = rng.next();
  let body: string | Buffer;
  if (r < 0.25)
    body = rng.pick([
      'null',
      '[]',
      '42',
      '"x"',
      '{',
      '',
      '{"version": "4"}',
      '{"version": "4", "alerts": null}',
      '{"version": "4", "alerts": {}}',
      '{"version": 4, "alerts": []}',
      deepText(30_000),
      deepObjectText(3000),
    ]);
  else {
    const alerts = Array.from({ length: rng.chance(0.05) ? 200 + rng.int(800) : 1 + rng.int(4) }, (_, k) => {
      const labels: Record<string, unknown> = {
        alertname: rng.chance(0.9) ? `Fuzz${rng.int(20)}` : rng.pick(STRINGS),
        env: rng.pick(['prod', 'staging', 'qa', '']),
        instance: `i-${k}`,
      };
      // Oversized and wrong-typed labels.
      if (rng.chance(0.1)) labels[rng.pick(['alertname', 'env', 'extra', 'a'.repeat(500)])] = rng.pick([HUGE, 'x'.repeat(301), 'y'.repeat(70_000)]);
      if (rng.chance(0.1)) labels[rng.pick(['alertname', 'env', 'severity'])] = junk(rng);
      const alert: Record<string, unknown> = {
        status: rng.pick(['firing', 'firing', 'resolved', 'pending']),
        labels,
        annotations: { summary: rng.pick(STRINGS) },
        startsAt: new Date().toISOString(),
        fingerprint: String(rng.int(1e6)),
      };
      if (rng.chance(0.05)) alert[rng.pick(['labels', 'annotations', 'status', 'startsAt'])] = junk(rng);
      return alert;
    });
    const payload: Record<string, unknown> = {
      version: rng.chance(0.95) ? '4' : rng.pick(['3', 4, null]),
      status: 'firing',
      receiver: 'tollgate',
      groupLabels: {},
      commonLabels: {},
      alerts,
    };
    body = JSON.stringify(payload);
  }
  if (rng.chance(0.1)) {
    headers['content-encoding'] = rng.pick(['gzip', 'deflate', 'br', 'gzip, gzip']);
    body = rng.chance(0.7) && headers['content-encoding'] === 'gzip' ? gzipSync(body) : Buffer.from(body);
  }
  return { method: rng.chance(0.95) ? 'POST' : rng.pick(['GET', 'PUT']), path: '/hooks/alertmanager', headers, body, shape: 'rest' };
}

// ---- OTLP ----

const TraceRequest = (root as any).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

function validTraceRequest(rng: Rng) {
  const now = BigInt(Date.now()) * 1_000_000n;
  const spans = Array.from({ length: 1 + rng.int(5) }, (_, i) => ({
    traceId: 'ab'.repeat(16),
    spanId: 'cd'.repeat(8),
    name: `GET /r${i}`,
    kind: rng.pick([1, 2, 3, 5]),
    startTimeUnixNano: String(now - 5_000_000n),
    endTimeUnixNano: String(now),
    attributes: [
      { key: 'http.route', value: { stringValue: `/r${i}` } },
      { key: 'http.request.method', value: { stringValue: 'GET' } },
      { key: 'http.response.status_code', value: { intValue: rng.pick([200, 500]) } },
    ],
    events: rng.chance(0.3) ? [{ name: 'exception', timeUnixNano: String(now), attributes: [{ key: 'exception.type', value: { stringValue: 'Boom' } }] }] : [],
    status: { code: rng.pick([0, 1, 2]) },
  }));
  return {
    resourceSpans: [
      {
        resource: {
          attributes: [
            { key: 'service.name', value: { stringValue: 'checkout' } },
            { key: 'deployment.environment.name', value: { stringValue: rng.pick(['prod', 'staging']) } },
            { key: 'service.version', value: { stringValue: 'v1' } },
          ],
        },
        scopeSpans: [{ scope: { name: 'fuzz' }, spans }],
      },
    ],
  };
}

function protobufOf(json: ReturnType<typeof validTraceRequest>): Buffer {
  const withBytes = {
    resourceSpans: json.resourceSpans.map((rs) => ({
      ...rs,
      scopeSpans: rs.scopeSpans.map((ss) => ({ ...ss, spans: ss.spans.map((sp) => ({ ...sp, traceId: Buffer.from(sp.traceId, 'hex'), spanId: Buffer.from(sp.spanId, 'hex') })) })),
    })),
  };
  return Buffer.from(TraceRequest.encode(TraceRequest.fromObject(withBytes)).finish());
}

/** Replaces a random node of a JSON tree with junk, or drops it. */
function mutateJson(rng: Rng, value: unknown, depth = 0): unknown {
  if (rng.chance(0.15 + depth * 0.05)) return rng.chance(0.2) ? undefined : junk(rng);
  if (Array.isArray(value)) {
    const out = value.map((v) => (rng.chance(0.5) ? mutateJson(rng, v, depth + 1) : v));
    if (rng.chance(0.05)) return Array.from({ length: 3000 }, () => out[0] ?? null);
    return out;
  }
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rng.chance(0.5) ? mutateJson(rng, v, depth + 1) : v]));
  return value;
}

function mutateBytes(rng: Rng, bytes: Buffer): Buffer {
  let b = Buffer.from(bytes);
  for (let k = 0, n = 1 + rng.int(4); k < n; k++) {
    const at = rng.int(Math.max(1, b.length));
    switch (rng.int(5)) {
      case 0:
        b[at] = b[at]! ^ (1 << rng.int(8));
        break;
      case 1:
        b = Buffer.concat([b.subarray(0, at), Buffer.from([rng.int(256)]), b.subarray(at)]);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
        break;
      case 3:
        b = b.subarray(0, at);
        break;
      default:
        b[at] = rng.pick([0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a]);
    }
  }
  return b;
}

function otlpCase(rng: Rng, w: World): Case {
  const key = rng.pick(w.keys);
  const headers: Record<string, string> = key !== null && rng.chance(0.95) ? { authorization: `Bearer ${key}` } : {};
  const valid = validTraceRequest(rng);
  let body: Buffer;
  let contentType: string;
  const r = rng.next();
  if (r < 0.35) {
    contentType = 'application/json';
    body = Buffer.from(JSON.stringify(mutateJson(rng, valid)) ?? 'null');
  } else if (r < 0.8) {
    contentType = rng.pick(['application/x-protobuf', 'application/protobuf']);
    body = mutateBytes(rng, protobufOf(valid));
  } else if (r < 0.9) {
    contentType = rng.pick(['application/json', 'application/x-protobuf']);
    body = Buffer.from(
      rng.pick([
        '',
        'null',
        '[]',
        '{"resourceSpans": 5}',
        '{"resourceSpans": [null]}',
        '{"resourceSpans": [{"scopeSpans": [{"spans": [null, 1, "x"]}]}]}',
        deepText(30_000),
        '\u0000\u0001\u0002',
      ]),
    );
  } else {
    contentType = rng.pick(['text/plain', '', 'application/json; charset=utf-16', 'application/grpc', 'multipart/form-data']);
    body = Buffer.from(JSON.stringify(valid));
  }
  if (rng.chance(0.2)) {
    const enc = rng.pick(['gzip', 'gzip', 'deflate', 'br', 'identity', 'GZIP', 'x-gzip']);
    headers['content-encoding'] = enc;
    const how = rng.int(3);
    body = how === 0 ? gzipSync(body) : how === 1 ? deflateSync(body) : rng.chance(0.5) ? mutateBytes(rng, gzipSync(body)) : Buffer.from('garbage that is not gzip');
  }
  if (contentType) headers['content-type'] = contentType;
  return { method: rng.chance(0.97) ? 'POST' : 'GET', path: '/v1/traces', headers, body, shape: 'otlp' };
}

// ---- the suite ----

const CONFIG_TABLES = ['gates', 'rules', 'evaluations', 'rule_evaluations', 'api_keys', 'audit_log', 'monitors'] as const;
const MONITOR_TABLES = [...CONFIG_TABLES, 'monitor_groups', 'monitor_transitions'] as const;
const APM_TABLES = ['apm_stats', 'apm_errors'] as const;

const surfaces: Array<{ name: string; tables: readonly string[]; generate: (rng: Rng, w: World) => Case }> = [
  { name: 'graphql', tables: CONFIG_TABLES, generate: gqlCase },
  { name: 'rest', tables: CONFIG_TABLES, generate: restCase },
  { name: 'hooks', tables: CONFIG_TABLES, generate: hookCase },
  { name: 'alertmanager', tables: MONITOR_TABLES, generate: alertmanagerCase },
  { name: 'otlp', tables: APM_TABLES, generate: otlpCase },
];

describe(`fuzz (seed ${SEED})`, () => {
  for (const surface of surfaces) {
    describe(surface.name, () => {
      let s: TestServer;
      let w: World;
      before(async () => {
        // Production mode, as deployed: no suggestions, no introspection.
        s = await startServer({ mode: 'production' });
        w = await world(s);
      });
      after(() => s.stop());
      test(`${RUNS} hostile requests: no 5xx, the error shape, no partial write, still healthy`, { skip: Boolean(REPLAY && REPLAY[1] !== surface.name) }, async () => {
        await fuzz(s, { name: surface.name, tables: surface.tables, generate: (rng) => surface.generate(rng, w) });
      });
    });
  }
});

// What the fuzzer found that no item of issue 9 covered, pinned down one by one.
describe('GraphQL errors the fuzzer found without a code', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ mode: 'production' });
  });
  after(() => s.stop());

  test('a variable of the wrong type or a missing one: BAD_USER_INPUT', async () => {
    const wrong = await s.gql('query($id: ID!) { evaluation(id: $id) { id } }', { id: null });
    assert.equal(wrong.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(wrong));
    const missing = await s.gql('query($id: ID!) { evaluation(id: $id) { id } }', {});
    assert.equal(missing.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(missing));
    const badEnum = await s.gql('query($f: EvaluationFilter) { evaluations(filter: $f) { edges { cursor } } }', { f: { status: ['PASSED'] } });
    assert.equal(badEnum.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(badEnum));
  });

  test('a cursor that is not one: BAD_USER_INPUT', async () => {
    const r = await s.gql('{ monitors(after: "NOT NOT NOT") { edges { cursor } } }');
    assert.equal(r.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(r));
  });

  test('a query over the cost limit: a code', async () => {
    // Lists multiply (test/cost.test.ts): 15 × 100 monitors × 500 transitions each.
    const r = await s.gql(
      `{ ${Array.from({ length: 15 }, (_, i) => `a${i}: monitors(first: 100) { edges { node { groups { group } transitions(last: 500) { at from to group message } } } }`).join(' ')} }`,
    );
    assert.ok(r.errors?.length, JSON.stringify(r));
    assert.equal(r.errors![0]!.extensions?.code, 'QUERY_TOO_COSTLY', JSON.stringify(r));
  });

  test('an unsupported Content-Type: 415 with a JSON error saying what to send', async () => {
    const res = await send(s.url, { method: 'POST', path: '/graphql', headers: { 'content-type': 'text/plain', authorization: `Bearer ${ADMIN_KEY}` }, body: '{ __typename }' });
    assert.equal(res.status, 415);
    assert.equal(res.json?.errors?.[0]?.extensions?.code, 'BAD_REQUEST', res.text);
    assert.match(res.json.errors[0].message, /text\/plain.*application\/json/);
  });
});
