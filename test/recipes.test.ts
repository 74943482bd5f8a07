// The recipes of docs/integrations.md, run as written against a real Tollgate, so the docs
// cannot drift from what works: the GitHub Actions gate step and the generic curl script.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { ADMIN_KEY, CREATE_GATE, driver, skipWithout, sleep, startServer, type TestServer } from './helpers.ts';

const doc = readFileSync(fileURLToPath(new URL('../docs/integrations.md', import.meta.url)), 'utf8');

/** The first fenced block of this language holding `marker`. */
function codeBlock(lang: string, marker: string): string {
  for (const m of doc.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)) {
    if (m[1] === lang && m[2]!.includes(marker)) return m[2]!;
  }
  throw new Error(`docs/integrations.md has no ${lang} block with "${marker}"`);
}

/** Runs a script as a CI runner would; resolves with its exit code (-1 when killed) and output. */
function run(file: string, args: string[], env: Record<string, string>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: !err ? 0 : typeof err.code === 'number' ? err.code : -1, out: stdout + stderr }));
  });
}

describe('integration recipes from docs/integrations.md', () => {
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  let monitor: string;
  /** A directory with `tollgate` on it: what the workflow's install step provides. */
  let bin: string;

  before(async () => {
    s = await startServer();
    d = driver(s);
    monitor = await d.monitor('checkout errors', ['service:checkout', 'env:prod']);
    await d.report(monitor, 'OK');
    const r = await s.gql(CREATE_GATE, {
      input: { service: 'checkout', env: 'prod', rules: [{ name: 'checkout monitors', options: { monitor: { query: 'service:checkout env:prod', duration: 0 } } }] },
    });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    bin = join(s.dir, 'bin');
    mkdirSync(bin);
    symlinkSync(fileURLToPath(new URL('../bin/tollgate.js', import.meta.url)), join(bin, 'tollgate'));
  });
  after(() => s.stop());

  describe('the GitHub Actions workflow', () => {
    const workflow = parse(codeBlock('yaml', 'runs-on: ubuntu-latest'));
    const steps: any[] = Object.values<any>(workflow.jobs)[0].steps;
    const gateStep = steps.find((step) => step.name === 'Deployment gate');

    /** GitHub's `${{ … }}` expressions, for the few contexts the recipe reads. */
    const expand = (text: string, contexts: Record<string, string>) =>
      text.replace(/\$\{\{\s*([\w.]+)\s*\}\}/g, (_m, path: string) => {
        assert.ok(path in contexts, `the recipe reads ${path}, which this test does not provide`);
        return contexts[path]!;
      });

    async function gateStepRun(sha: string) {
      const contexts = { 'github.sha': sha, 'vars.TOLLGATE_URL': s.url, 'secrets.TOLLGATE_API_KEY': await s.createKey(['evaluations:write']) };
      const env: Record<string, string> = { PATH: `${bin}:${process.env.PATH}`, HOME: s.dir };
      for (const [k, v] of Object.entries<string>(gateStep.env ?? {})) env[k] = expand(String(v), contexts);
      // A `run:` step on ubuntu runners: bash with -e and pipefail.
      return run('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', expand(gateStep.run, contexts)], env);
    }

    test('its gate step sits between the canary and the promotion', () => {
      const names = steps.map((step) => step.name);
      assert.ok(gateStep, 'a step named "Deployment gate"');
      assert.ok(names.indexOf('Deploy the canary') < names.indexOf('Deployment gate'));
      assert.ok(names.indexOf('Deployment gate') < names.indexOf('Promote'));
      assert.ok(!steps.some((step) => step['continue-on-error']), 'a failed gate must stop the job');
    });

    test('the gate step exits 0 when the gate passes, with the verdict in the job log', async () => {
      await d.report(monitor, 'OK');
      const { code, out } = await gateStepRun('3f2c9e1');
      assert.equal(code, 0, out);
      assert.match(out, /PASS/);
      const history = await s.gql('{ evaluations(filter: { service: "checkout" }, first: 1) { edges { node { version status } } } }');
      assert.deepEqual(history.data.evaluations.edges[0].node, { version: '3f2c9e1', status: 'PASS' });
    });

    test('the gate step exits 1 when the gate fails, so the promotion does not run', async () => {
      await d.report(monitor, 'ALERT');
      const { code, out } = await gateStepRun('9b7d4aa');
      assert.equal(code, 1, out);
      assert.match(out, /checkout errors/);
    });
  });

  describe('Argo Rollouts and Flagger, with the URLs and settings of the doc', () => {
    /** The doc's placeholders made real: this server for its host, a real key for `tgk_...`. */
    const local = (url: string, key: string) => {
      const u = new URL(url.replace('tgk_...', key));
      return `${s.url}${u.pathname}${u.search}`;
    };

    test('the AnalysisTemplate web metric measures in_progress, then pass; a failing gate meets failureCondition', async () => {
      const template = parse(codeBlock('yaml', 'kind: AnalysisTemplate'));
      const metric = template.spec.metrics[0];
      const web = metric.provider.web;
      const field = /^\{\$\.(\w+)\}$/.exec(web.jsonPath)?.[1];
      const expected = (condition: string) => /^result == "(\w+)"$/.exec(condition)?.[1];
      assert.deepEqual([field, expected(metric.successCondition), expected(metric.failureCondition)], ['status', 'pass', 'fail']);
      const key = await s.createKey(['evaluations:write']);

      /** Argo's loop: measure every interval until a condition holds (the interval shortened here). */
      async function analysis(version: string) {
        const url = local(
          web.url.replace(/\{\{args\.(\w+)\}\}/g, (_m: string, arg: string) => ({ service: 'checkout', env: 'prod', version })[arg]!),
          key,
        );
        const headers = Object.fromEntries(web.headers.map((h: { key: string; value: string }) => [h.key, h.value.replace('tgk_...', key)]));
        for (let i = 0; i < metric.count; i++) {
          const r = await fetch(url, { headers });
          assert.equal(r.status, 200);
          const result = ((await r.json()) as any)[field!];
          if (result === expected(metric.successCondition)) return 'Successful';
          if (result === expected(metric.failureCondition)) return 'Failed';
          await sleep(100);
        }
        return 'Inconclusive';
      }
      await d.report(monitor, 'OK');
      assert.equal(await analysis('argo-1'), 'Successful');
      await d.report(monitor, 'ALERT');
      assert.equal(await analysis('argo-2'), 'Failed');
    });

    test('the Flagger webhook answers 200 on a pass and 412 on a fail, as the analysis expects', async () => {
      const hook = parse(codeBlock('yaml', 'webhooks:')).analysis.webhooks[0];
      const { service, env, identifier } = hook.metadata;
      const podinfo = await d.monitor('podinfo errors', [`service:${service}`]);
      const r = await s.gql(CREATE_GATE, {
        input: { service, env, identifier, rules: [{ name: 'podinfo monitors', options: { monitor: { query: `service:${service}`, duration: 0 } } }] },
      });
      assert.equal(r.errors, undefined, JSON.stringify(r.errors));
      const url = local(hook.url, await s.createKey(['evaluations:write']));
      /** Flagger calls the hook each interval with the canary's name, phase and checksum. */
      async function rollout(checksum: string) {
        let status = 0;
        for (let i = 0; i < 50 && (status === 0 || status === 409); i++) {
          if (status) await sleep(100);
          const res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ name: service, namespace: 'test', phase: 'Progressing', checksum, metadata: hook.metadata }),
          });
          status = res.status;
        }
        return status;
      }
      await d.report(podinfo, 'OK');
      assert.equal(await rollout('rev-1'), 200);
      await d.report(podinfo, 'ALERT');
      assert.equal(await rollout('rev-2'), 412);
    });
  });

  describe('the generic curl script', { skip: skipWithout('curl') }, () => {
    const script = codeBlock('sh', '#!/bin/sh');
    const gate = async (service: string) =>
      run('sh', ['-c', script, 'gate.sh', service, 'prod', '1.2.3'], { PATH: process.env.PATH!, TOLLGATE_URL: s.url, TOLLGATE_API_KEY: ADMIN_KEY });

    test('exits 0 on pass and 1 on fail', async () => {
      await d.report(monitor, 'OK');
      assert.equal((await gate('checkout')).code, 0);
      await d.report(monitor, 'ALERT');
      assert.equal((await gate('checkout')).code, 1);
    });

    test('exits 1 at once when the evaluation cannot start', async () => {
      const { code, out } = await gate('no-such-service');
      assert.equal(code, 1);
      assert.match(out, /did not start/);
    });
  });
});
