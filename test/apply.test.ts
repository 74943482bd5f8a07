import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runTollgate, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let key: string;
const dir = mkdtempSync(join(tmpdir(), 'tollgate-apply-'));
before(async () => {
  s = await startServer();
  key = await s.createKey(['gates:write']);
});
after(async () => {
  await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function tollgate(args: string[]) {
  return runTollgate([...args, '--url', s.url, '--api-key', key]);
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
      - name: checkout monitors
        monitor: { query: "service:checkout", duration: 600 }
      - name: new version errors
        faultyDeploymentDetection: { duration: 900, excludedResources: ["GET /healthz"] }
  - service: checkout
    env: staging
    dryRun: true
    rules:
      - name: monitors
        monitor: { query: "service:checkout env:staging" }
`;

describe('tollgate apply / export', () => {
  test('creates what the file says, then a second run changes nothing', async () => {
    const path = file('gates.yaml', GATES);
    const plan = await tollgate(['apply', '-f', path, '--dry-run']);
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /\+ gate checkout\/prod\/default with 2 rule\(s\)/);
    assert.match(plan.stdout, /dry run; nothing changed/);
    assert.equal((await s.gql('{ gates(first: 10) { edges { cursor } } }')).data.gates.edges.length, 0);

    const first = await tollgate(['apply', '-f', path]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /2 change\(s\) applied/);
    const second = await tollgate(['apply', '-f', path]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /No changes/);
  });

  test('edits become updates, removed rules deletions, a changed type a recreation; --prune removes gates', async () => {
    const edited = GATES.replace('duration: 600', 'duration: 1200')
      .replace(/ {6}- name: new version errors\n.*\n/, '')
      .replace('      - name: monitors\n        monitor: { query: "service:checkout env:staging" }', '      - name: monitors\n        faultyDeploymentDetection: {}');
    const path = file('edited.yaml', edited.replace(/ {2}- service: checkout\n {4}env: staging[\s\S]*$/, ''));
    const plan = await tollgate(['apply', '-f', path, '--prune', '--dry-run']);
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /~ rule checkout\/prod\/default "checkout monitors"/);
    assert.match(plan.stdout, /- rule checkout\/prod\/default "new version errors"/);
    assert.match(plan.stdout, /- gate checkout\/staging\/default/);

    const typeChange = file('type.yaml', edited);
    const applied = await tollgate(['apply', '-f', typeChange]);
    assert.match(applied.stdout, /± rule checkout\/staging\/default "monitors": type monitor → faulty_deployment_detection/);
    assert.match((await tollgate(['apply', '-f', typeChange])).stdout, /No changes/);

    const exported = await tollgate(['export']);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stdout, /duration: 1200/);
    const roundTrip = file('export.yaml', exported.stdout);
    assert.match((await tollgate(['apply', '-f', roundTrip])).stdout, /No changes/);
  });

  test('a broken file is refused with the line at fault, and nothing changes', async () => {
    const bad = file('bad.yaml', 'gates:\n  - service: checkout\n    env: prod\n    rules:\n      - name: m\n        monitor: { query: "service:a AND", duration: 99999 }\n');
    const r = await tollgate(['apply', '-f', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.yaml:6: gates\[0\]\.rules\[0\]\.monitor\.(query|duration): /);
    const syntax = file('syntax.yaml', 'gates:\n  - service: [unclosed\n');
    const s2 = await tollgate(['apply', '-f', syntax]);
    assert.equal(s2.code, 1);
    assert.match(s2.stderr, /syntax\.yaml:\d+:/);
  });
});
