import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runTollgate, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let key: string;
const dir = mkdtempSync(join(tmpdir(), 'tollgate-apply-types-'));
before(async () => {
  s = await startServer({ webhookAllowedHosts: [{ host: 'hooks.example.com', wildcard: false, port: null }], secretKey: randomBytes(32) });
  key = await s.createKey(['gates:write']);
});
after(async () => {
  await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function tollgate(args: string[], env: Record<string, string> = {}) {
  return runTollgate([...args, '--url', s.url, '--api-key', key], env);
}

function file(name: string, text: string) {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const GATES = `gates:
  - service: checkout
    env: prod
    rules:
      - name: load test
        webhook:
          url: https://hooks.example.com/load-test
          headers: [{ name: Authorization, valueFromEnv: HOOK_TOKEN }]
          mode: poll
          interval: 30
          duration: 300
      - name: release calendar
        freeze:
          calendars: [{ name: weekend, cron: "0 18 * * FRI", duration: 223200, timeZone: Europe/Paris }]
          incidentQuery: "service:checkout"
          duration: 900
`;

describe('tollgate apply: webhook and freeze rules', () => {
  test('applies both types, reads header values from the environment, and a second run changes nothing', async () => {
    const path = file('gates.yaml', GATES);
    const first = await tollgate(['apply', '-f', path], { HOOK_TOKEN: 'Bearer from-env' });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /\+ gate checkout\/prod\/default with 2 rule\(s\)/);
    const second = await tollgate(['apply', '-f', path], { HOOK_TOKEN: 'Bearer from-env' });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /No changes/);

    const edited = file('edited.yaml', GATES.replace('interval: 30', 'interval: 60'));
    const third = await tollgate(['apply', '-f', edited], { HOOK_TOKEN: 'Bearer from-env' });
    assert.match(third.stdout, /~ rule checkout\/prod\/default "load test"/);

    const exported = await tollgate(['export']);
    assert.equal(exported.code, 0, exported.stderr);
    assert.doesNotMatch(exported.stdout, /from-env|tgs1\./, 'no secret in the export');
    assert.match(exported.stdout, /timeZone: Europe\/Paris/);
    // The export names headers without values: applying it keeps the stored ones.
    assert.match((await tollgate(['apply', '-f', file('export.yaml', exported.stdout)])).stdout, /No changes/);
  });

  test('a missing environment variable and bad options name the line', async () => {
    const missing = await tollgate(['apply', '-f', file('missing.yaml', GATES.replace('checkout', 'other'))], {});
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /missing\.yaml:8: valueFromEnv: HOOK_TOKEN is not set in the environment/);
    const bad = await tollgate(['apply', '-f', file('bad.yaml', GATES.replace('timeZone: Europe/Paris', 'timeZone: Europe/Atlantis'))], { HOOK_TOKEN: 'x' });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /bad\.yaml:14: gates\[0\]\.rules\[1\]\.freeze\.calendars\[0\]\.timeZone: timeZone "Europe\/Atlantis" is not an IANA time zone/);
  });
});
