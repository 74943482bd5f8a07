// Operability as a new user meets it: what the server logs (lifecycle at info, client mistakes
// quiet, authentication failures at warn, never a secret) and how the CLI answers mistakes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../src/log.ts';
import { ADMIN_KEY, CREATE_GATE, driver, jitMonitor, monitorRule, startServer, type TestServer, wsOnce } from './helpers.ts';

const ROOT = resolve(import.meta.dirname, '..');
/** The installed entry point, so the CLI runs from any directory as a user runs it. */
const BIN = join(ROOT, 'bin/tollgate.js');

interface LogLine {
  level: number;
  msg: string;
  [field: string]: any;
}

/** A logger made the way the server makes it, writing into memory. */
function captureLogs(level = 'trace') {
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      raw.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const log = createLogger(level, sink);
  return { log, raw, lines: () => raw.map((l) => JSON.parse(l) as LogLine) };
}

const INFO = 30;
const WARN = 40;
const ERROR = 50;

describe('server logs', () => {
  let s: TestServer;
  const logs = captureLogs();
  const secrets: string[] = [ADMIN_KEY];
  const find = (msg: string, where: (l: LogLine) => boolean = () => true) => logs.lines().filter((l) => l.msg === msg && where(l));

  before(async () => {
    s = await startServer({ logLevel: 'trace' }, { log: logs.log });
  });
  after(() => s.stop());

  test('gate and rule changes are logged at info with ids and the actor', async () => {
    const created = await s.gql(CREATE_GATE, { input: { service: 'logsvc', env: 'prod', rules: [monitorRule('first')] } });
    const gate = created.data.createGate;
    await s.gql('mutation($id: ID!) { updateGate(id: $id, input: { dryRun: true }) { id } }', { id: gate.id });
    const rule = await s.gql('mutation($g: ID!, $i: RuleInput!) { createRule(gateId: $g, input: $i) { id } }', { g: gate.id, i: monitorRule('second') });
    const ruleId = rule.data.createRule.id;
    await s.gql('mutation($id: ID!) { updateRule(id: $id, input: { dryRun: true }) { id } }', { id: ruleId });
    await s.gql('mutation($id: ID!) { deleteRule(id: $id) }', { id: ruleId });
    await s.gql('mutation($id: ID!) { deleteGate(id: $id) }', { id: gate.id });

    const actor = (l: LogLine) => l.actorName === 'bootstrap' && typeof l.actorId === 'string';
    for (const msg of ['gate created', 'gate updated', 'gate deleted']) {
      const [line] = find(msg, (l) => l.gateId === gate.id);
      assert.ok(line, `no "${msg}" line for ${gate.id}`);
      assert.equal(line.level, INFO);
      assert.ok(actor(line), JSON.stringify(line));
    }
    assert.equal(find('gate created', (l) => l.gateId === gate.id)[0]!.env, 'prod');
    for (const msg of ['rule created', 'rule updated', 'rule deleted']) {
      const [line] = find(msg, (l) => l.ruleId === ruleId && l.gateId === gate.id);
      assert.ok(line, `no "${msg}" line for rule ${ruleId}`);
      assert.equal(line.level, INFO);
      assert.ok(actor(line), JSON.stringify(line));
    }
  });

  test('API keys created and revoked are logged with id and prefix, never the secret', async () => {
    const r = await s.gql('mutation { createApiKey(input: { name: "ci-logs", scopes: [INGEST, EVALUATIONS_WRITE] }) { secret key { id prefix } } }');
    const { secret, key: apiKey } = r.data.createApiKey;
    secrets.push(secret);
    await s.gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: apiKey.id });
    const [created] = find('API key created', (l) => l.keyId === apiKey.id);
    assert.ok(created, 'no "API key created" line');
    assert.equal(created.level, INFO);
    assert.equal(created.prefix, apiKey.prefix);
    assert.equal(created.actorName, 'bootstrap');
    const [revoked] = find('API key revoked', (l) => l.keyId === apiKey.id);
    assert.ok(revoked, 'no "API key revoked" line');
    assert.equal(revoked.level, INFO);
  });

  test('monitors created and deleted are logged', async () => {
    const d = driver(s);
    const id = await d.monitor('log monitor', ['logs:yes']);
    await s.gql('mutation($id: ID!) { deleteMonitor(id: $id) }', { id });
    assert.equal(find('monitor created', (l) => l.monitorId === id)[0]?.level, INFO);
    assert.equal(find('monitor deleted', (l) => l.monitorId === id)[0]?.level, INFO);
  });

  test('an evaluation logs when it starts, when it is decided (by which rule, how fast) and when it finishes', async () => {
    const d = driver(s);
    await d.report(await d.monitor('log bad', ['logs:bad']), 'ALERT');
    const r = await d.evaluate({ service: 'logsvc', env: 'prod', version: 'v7', configuration: { rules: [jitMonitor('watch bad', { query: 'logs:bad' })] } });
    const id = r.data.evaluateGate.id;
    await d.follow(id);

    const [started] = find('evaluation started', (l) => l.evaluationId === id);
    assert.ok(started, 'no "evaluation started" line');
    assert.equal(started.level, INFO);
    assert.deepEqual(
      [started.service, started.env, started.identifier, started.version, started.gateId, started.justInTime, started.rules, started.triggeredByName],
      ['logsvc', 'prod', 'default', 'v7', null, true, 1, 'bootstrap'],
    );
    assert.equal(typeof started.triggeredById, 'string');

    const [decided] = find('evaluation decided', (l) => l.evaluationId === id);
    assert.ok(decided, 'no "evaluation decided" line');
    assert.equal(decided.level, INFO);
    assert.equal(decided.status, 'fail');
    assert.equal(decided.reportedStatus, 'fail');
    assert.equal(decided.decidingRule, 'watch bad');
    assert.equal(typeof decided.ms, 'number');

    const [finished] = find('evaluation finished', (l) => l.evaluationId === id);
    assert.ok(finished, 'no "evaluation finished" line');
    assert.equal(finished.level, INFO);
    assert.equal(finished.reportedStatus, 'fail');
    assert.equal(typeof finished.ms, 'number');
  });

  test('authentication failures are warnings with the key prefix and the client address, never the key', async () => {
    const wrong = 'tgk_NotARealKeyButLongEnoughToBeOne0123456789';
    secrets.push(wrong);
    assert.equal((await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, wrong)).status, 401);
    assert.equal((await s.request('GET', '/api/v2/deployments/gates/evaluation/00000000-0000-4000-8000-000000000000', { key: wrong })).status, 401);
    const hookWrong = 'tgk_HookKeyInTheQueryString0123456789abcdefgh';
    secrets.push(hookWrong);
    assert.equal((await s.request('POST', `/hooks/alertmanager?key=${hookWrong}`, { body: { alerts: [] }, key: null })).status, 401);
    const ws = await wsOnce(s.ws(wrong), '{ gates(first: 1) { edges { cursor } } }').catch((e) => e);
    assert.ok(ws, 'the WebSocket was refused');

    const failures = logs.lines().filter((l) => l.msg === 'authentication failed');
    assert.equal(failures.length, 4, `expected one line per refused request, got ${JSON.stringify(failures)}`);
    for (const line of failures) {
      assert.equal(line.level, WARN);
      assert.match(line.client ?? '', /127\.0\.0\.1/);
      assert.equal(typeof line.reason, 'string');
    }
    const prefixes = failures.map((l) => l.keyPrefix);
    assert.ok(prefixes.includes(wrong.slice(0, 10)), JSON.stringify(prefixes));
    assert.ok(prefixes.includes(hookWrong.slice(0, 10)), JSON.stringify(prefixes));
    // A short wrong "key" is never logged whole either.
    assert.equal((await s.gql('{ gates(first: 1) { edges { cursor } } }', undefined, 'hunter2')).status, 401);
    const short = logs
      .lines()
      .filter((l) => l.msg === 'authentication failed')
      .at(-1)!;
    assert.ok(!String(short.keyPrefix ?? '').includes('hunter2'), JSON.stringify(short));
  });

  test('clients’ mistakes are not errors and carry no stack trace', async () => {
    const before = logs.raw.length;
    const staging = await s.createKey(['gates:read', 'gates:write'], ['staging']);
    secrets.push(staging);
    const bad = await wsOnce(s.ws(), 'subscription { evaluationUpdated(id: "nope") { id } }');
    assert.equal(bad.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    const missing = await wsOnce(s.ws(), 'subscription($id: ID!) { evaluationUpdated(id: $id) { id } }', { id: '00000000-0000-4000-8000-000000000000' });
    assert.equal(missing.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    const forbidden = await s.gql(CREATE_GATE, { input: { service: 'logsvc', env: 'prod', rules: [monitorRule('x')] } }, staging);
    assert.equal(forbidden.errors?.[0]?.extensions?.code, 'FORBIDDEN');
    const invalid = await s.gql(CREATE_GATE, { input: { service: '', env: 'prod', rules: [monitorRule('x')] } });
    assert.equal(invalid.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.equal((await s.request('GET', '/api/v2/deployments/gates/evaluation/00000000-0000-4000-8000-000000000000')).status, 404);

    const during = logs.raw.slice(before).map((l) => JSON.parse(l) as LogLine);
    const loud = during.filter((l) => l.level >= ERROR);
    assert.deepEqual(loud, [], 'client mistakes logged as errors');
    assert.deepEqual(
      during.filter((l) => JSON.stringify(l).includes('"stack"')),
      [],
      'client mistakes logged with a stack',
    );
    // Still visible to an operator who asks for it.
    assert.ok(
      during.some((l) => l.msg === 'operation refused' && l.code === 'NOT_FOUND' && l.level < WARN),
      'the refusal is logged below warn',
    );
  });

  test('an unexpected error is logged at error with its stack', async () => {
    s.app.deps.db.$client.exec('alter table gates rename to gates_gone');
    try {
      const r = await s.gql('{ gates(first: 1) { edges { cursor } } }');
      assert.equal(r.errors?.[0]?.extensions?.code, 'INTERNAL_SERVER_ERROR');
    } finally {
      s.app.deps.db.$client.exec('alter table gates_gone rename to gates');
    }
    const errors = logs.lines().filter((l) => l.level === ERROR);
    assert.equal(errors.length, 1, JSON.stringify(errors));
    assert.match(errors[0]!.err?.stack ?? '', /no such table: gates/);
  });

  test('no secret appears anywhere in the logs', () => {
    const text = logs.raw.join('\n');
    assert.ok(logs.raw.length > 20, 'the session logged');
    for (const secret of secrets) assert.ok(!text.includes(secret), `secret ${secret.slice(0, 8)}… appears in the logs`);
  });
});

test('a data source that fails leaves a warning for the operator, not an error with a stack', async () => {
  const logs = captureLogs('info');
  const s = await startServer({ prometheusUrl: await closedPortUrl(), monitorIntervalMs: 100, sourceErrorLimit: 1 }, { log: logs.log });
  try {
    const created = await s.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', {
      i: { name: 'down ratio', type: 'PROMETHEUS', query: 'up == 0', critical: 1, tags: ['logs:down'] },
    });
    const id = created.data.createMonitor.id;
    // Until the first evaluation round has failed, the rule would see no data rather than a failing source.
    for (let i = 0; i < 200; i++) {
      const m = await s.gql('query($id: ID!) { monitor(id: $id) { sourceErrors } }', { id });
      if (m.data.monitor.sourceErrors > 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const d = driver(s);
    const r = await d.evaluate({ service: 'logsvc', env: 'prod', configuration: { rules: [jitMonitor('down', { query: 'logs:down' })] } });
    await d.follow(r.data.evaluateGate.id);
    const [warning] = logs.lines().filter((l) => l.msg === 'rule check could not read its data source');
    assert.ok(warning, 'no warning for the failing source');
    assert.equal(warning.level, WARN);
    assert.match(warning.problem, /Prometheus at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
    assert.equal(warning.evaluationId, r.data.evaluateGate.id);
    assert.deepEqual(
      logs.lines().filter((l) => l.level >= ERROR),
      [],
    );
  } finally {
    await s.stop();
  }
});

test('the logger redacts credentials wherever a log call might carry them', () => {
  const { log, raw } = captureLogs('info');
  log.info(
    {
      req: { headers: { authorization: 'Bearer tgk_redact1', 'dd-api-key': 'tgk_redact2' }, query: { key: 'tgk_redact3' } },
      headers: { authorization: 'Bearer tgk_redact4' },
      connectionParams: { authorization: 'Bearer tgk_redact5' },
      secret: 'tgk_redact6',
      key: 'tgk_redact7',
      apiKey: { secret: 'tgk_redact8' },
    },
    'carrying credentials',
  );
  assert.equal(raw.length, 1);
  assert.doesNotMatch(raw[0]!, /tgk_redact/, raw[0]);
});

// ---- the CLI ----

/** A URL on a port nothing listens on (fetch refuses some well-known ports outright, such as 9). */
async function closedPortUrl(): Promise<string> {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(closed.address() as { port: number }).port}`;
  await new Promise((r) => closed.close(r));
  return url;
}

const work = mkdtempSync(join(tmpdir(), 'tollgate-ops-'));
after(() => rmSync(work, { recursive: true, force: true }));

function tollgate(args: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
    const env = { ...process.env, ...options.env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd ?? ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => done({ code, stdout, stderr }));
  });
}

describe('tollgate CLI', () => {
  test('--version prints the package version; evaluate --version stays the deployed version', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    const r = await tollgate(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), pkg.version);
    // The subcommand's own --version is not swallowed by the program's.
    const e = await tollgate([
      'evaluate',
      '--service',
      'a',
      '--env',
      'prod',
      '--version',
      'v9',
      '--url',
      'http://127.0.0.1:9',
      '--api-key',
      'k',
      '--timeout',
      '1',
      '--fail-on-error',
    ]);
    assert.match(e.stdout, /version v9/, e.stdout + e.stderr);
  });

  test('a mistyped flag is named (with a suggestion) before any required one is missed', async () => {
    const r = await tollgate(['evaluate', '--servce', 'checkout', '--env', 'prod']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown option '--servce'/);
    assert.match(r.stderr, /Did you mean --service\?/);
    const keys = await tollgate(['keys', 'create', '--nme', 'ci', '--scope', 'admin', '--db', join(work, 'x.db')]);
    assert.match(keys.stderr, /unknown option '--nme'/);
    // A truly missing required flag is still reported.
    const missing = await tollgate(['keys', 'create', '--scope', 'admin', '--db', join(work, 'x.db')]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /required option '--name <name>' not specified/);
  });

  test('keys and migrate refuse a database that does not exist unless --db names it', async () => {
    const elsewhere = join(work, 'elsewhere');
    mkdirSync(elsewhere);
    for (const args of [['keys', 'create', '--name', 'ci', '--scope', 'admin'], ['keys', 'list'], ['keys', 'revoke', '00000000-0000-4000-8000-000000000000'], ['migrate']]) {
      const r = await tollgate(args, { cwd: elsewhere, env: { TOLLGATE_DB: undefined } });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${join(elsewhere, 'data', 'tollgate.db').replace(/[.\\/]/g, '\\$&')}`), r.stderr);
      assert.match(r.stderr, /--db/);
      assert.equal(r.stdout, '');
      assert.ok(!existsSync(join(elsewhere, 'data')), `${args.join(' ')} created a database`);
    }
    const explicit = join(work, 'fresh.db');
    const created = await tollgate(['keys', 'create', '--name', 'ci', '--scope', 'admin', '--db', explicit]);
    assert.equal(created.code, 0, created.stderr);
    assert.ok(existsSync(explicit));
  });

  test('scopes are accepted as gates:read and as GATES_READ', async () => {
    const db = join(work, 'scopes.db');
    const r = await tollgate(['keys', 'create', '--name', 'both', '--scope', 'GATES_READ', '--scope', 'evaluations:write', '--scope', 'Monitors_Write', '--db', db]);
    assert.equal(r.code, 0, r.stderr);
    const listed = await tollgate(['keys', 'list', '--db', db]);
    assert.match(listed.stdout, /both\tgates:read,evaluations:write,monitors:write\t/);
    const bad = await tollgate(['keys', 'create', '--name', 'x', '--scope', 'GATES_READING', '--db', db]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /GATES_READING/);
  });

  test('a busy port is one clear line and exit 2, not a stack trace', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await tollgate(['serve'], { env: { PORT: String(port), HOST: '127.0.0.1', TOLLGATE_DB: join(work, 'busy.db'), TOLLGATE_LOG_LEVEL: 'silent' } });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`port ${port} is already in use \\(127\\.0\\.0\\.1:${port}\\); set PORT or --port`));
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      blocker.close();
    }
  });

  test('a YAML syntax error names the file, line and column in a sentence', async () => {
    const file = join(work, 'broken.yaml');
    writeFileSync(file, 'gates:\n  - service: checkout\n    env: prod\n    env: staging\n');
    const r = await tollgate(['apply', '-f', file, '--api-key', 'k', '--url', 'http://127.0.0.1:9']);
    assert.equal(r.code, 1);
    const first = r.stderr.split('\n')[0]!;
    assert.equal(first, `tollgate: ${file}:4:5: Map keys must be unique.`);
    const tabs = join(work, 'tabs.yaml');
    writeFileSync(tabs, 'gates:\n\t- service: a\n');
    const t = await tollgate(['apply', '-f', tabs, '--api-key', 'k', '--url', 'http://127.0.0.1:9']);
    assert.match(t.stderr.split('\n')[0]!, new RegExp(`^tollgate: ${tabs.replace(/[.\\/]/g, '\\$&')}:2:1: Tabs are not allowed as indentation\\.$`));
    // The problem's line is a sentence; the file's own lines follow it as they are.
    for (const out of [r.stderr, t.stderr]) assert.doesNotMatch(out.split('\n')[0]!, /:\s*$/, 'a dangling colon');
    assert.match(r.stderr, /\n {6}env: staging\n {6}\^/, 'the line at fault is shown with a caret');
  });

  test('evaluate against an unreachable Tollgate warns on stderr at once and at the end, and still passes', async () => {
    const url = await closedPortUrl();
    const r = await tollgate(['evaluate', '--service', 'a', '--env', 'prod', '--timeout', '2', '--url', url, '--api-key', 'k']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith(`WARNING: Tollgate at ${url} is unreachable (ECONNREFUSED)`));
    assert.equal(warnings.length, 2, r.stderr);
    assert.match(warnings[0]!, /without --fail-on-error this run will pass/);
    assert.match(warnings[1]!, /passing without a verdict/);
    const strict = await tollgate(['evaluate', '--service', 'a', '--env', 'prod', '--timeout', '2', '--url', url, '--api-key', 'k', '--fail-on-error']);
    assert.equal(strict.code, 1);
    assert.ok(strict.stderr.includes(`WARNING: Tollgate at ${url} is unreachable (ECONNREFUSED); this run will fail`), strict.stderr);
  });
});
