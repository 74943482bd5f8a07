import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ADMIN_KEY, EVALUATION_FIELDS, jitMonitor, sleep } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-crash-'));
// A failed assertion must not leave a server behind: a live child keeps the test process (and CI) waiting.
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** A real `tollgate serve` process on the test's database; resolves once it listens. */
async function serve() {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', TOLLGATE_DB: join(dir, 'crash.db'), TOLLGATE_BOOTSTRAP_KEY: ADMIN_KEY, TOLLGATE_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  // Start-up takes seconds on a loaded machine (tsx compiles the tree): wait for the line or the exit.
  for (let i = 0; i < 1200 && child.exitCode === null && !/listening on (http:\/\/\S+)/.test(stderr); i++) await sleep(50);
  const url = /listening on (http:\/\/\S+)/.exec(stderr)?.[1];
  assert.ok(url, `tollgate serve did not start (exit code ${child.exitCode}): ${stderr}`);
  const gql = async (query: string, variables?: Record<string, unknown>) => {
    const res = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await res.json()) as { data?: any; errors?: unknown };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };
  return { child, gql };
}

test('kill -9 in the middle of windows loses nothing: after a restart every evaluation ends with the same verdict', async () => {
  const first = await serve();
  const monitor = async (name: string) =>
    (await first.gql('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', { i: { name, type: 'EXTERNAL', tags: [`crash:${name}`] } })).createMonitor.id;
  const report = (id: string, state: string) =>
    first.gql('mutation($id: ID!, $s: MonitorState!) { reportMonitorState(input: { monitorId: $id, state: $s }) { id } }', { id, s: state });
  const flaky = await monitor('flaky');
  const steady = await monitor('steady');
  await report(flaky, 'OK');
  await report(steady, 'OK');

  const evaluate = async (name: string, rules: unknown[]) =>
    (
      await first.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { ${EVALUATION_FIELDS} } }`, {
        i: { service: name, env: 'prod', configuration: { rules } },
      })
    ).evaluateGate;

  // Windows of a few seconds that the crash interrupts.
  const alerted = await evaluate('alerted', [jitMonitor('flaky', { query: 'crash:flaky', duration: 4 })]);
  const quiet = await evaluate('quiet', [jitMonitor('steady', { query: 'crash:steady', duration: 3 })]);
  const warming = await evaluate('warming', [jitMonitor('steady later', { query: 'crash:steady', warmup: 2, duration: 2 })]);
  const mixed = await evaluate('mixed', [jitMonitor('steady', { query: 'crash:steady', duration: 3 }), jitMonitor('flaky, dry run', { query: 'crash:flaky', duration: 3 }, true)]);
  await sleep(300);
  await report(flaky, 'ALERT');
  await report(flaky, 'OK');
  await sleep(200);

  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));

  const second = await serve();
  try {
    const finals = new Map<string, any>();
    for (let i = 0; i < 200 && finals.size < 4; i++) {
      for (const ev of [alerted, quiet, warming, mixed]) {
        const now = (await second.gql(`query($id: ID!) { evaluation(id: $id) { ${EVALUATION_FIELDS} } }`, { id: ev.id })).evaluation;
        if (now.finishedAt) finals.set(ev.service, now);
      }
      await sleep(100);
    }
    assert.equal(finals.size, 4, 'every evaluation finished after the restart');
    assert.equal(finals.get('alerted').status, 'FAIL', 'the ALERT before the crash still fails its window');
    assert.equal(finals.get('quiet').status, 'PASS');
    assert.equal(finals.get('warming').status, 'PASS');
    const mixedFinal = finals.get('mixed');
    assert.deepEqual(
      mixedFinal.rules.map((r: any) => [r.status, r.dryRun]),
      [
        ['PASS', false],
        ['FAIL', true],
      ],
    );
    assert.equal(mixedFinal.status, 'PASS');
    // Nothing was passed early: each pass came at or after its window's end.
    for (const name of ['quiet', 'warming']) {
      const f = finals.get(name);
      assert.ok(new Date(f.decidedAt) >= new Date(f.rules[0].windowEndsAt), `${name} decided at ${f.decidedAt}, window ends ${f.rules[0].windowEndsAt}`);
    }
  } finally {
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  }
});
