// Faulty deployment detection with two primary tags configured (region and zone): a request
// carries both, stored together as "region:eu,zone:a". The rule tests each tag value, and an
// evaluation narrowed to a primary tag reads the same stored tags the same way.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { countsByResource } from '../src/db/apm.ts';
import { driver, sleep, startServer, type TestServer } from './helpers.ts';
import { sendTraffic } from './traffic.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
let ingestKey: string;
before(async () => {
  s = await startServer({
    primaryTags: [
      { tag: 'region', attribute: 'cloud.region' },
      { tag: 'zone', attribute: 'cloud.availability_zone' },
    ],
  });
  d = driver(s);
  ingestKey = await s.createKey(['ingest']);
});
after(() => s.stop());

async function fdd(service: string, extra: { primaryTag?: string }, options: Record<string, unknown>) {
  const r = await d.evaluate({ service, env: 'prod', version: 'v2', ...extra, configuration: { rules: [{ name: 'fdd', options: { faultyDeploymentDetection: options } }] } });
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data.evaluateGate;
}

/**
 * v1 and v2 side by side in two regions × two zones; v2 fails 30% of its requests in region eu, 1% elsewhere.
 * Every span of a batch carries the same millisecond and each zone's v1 arrives before its v2, so a
 * check that runs between two batches (the rule decides early) already sees the exact rates.
 */
async function regressedInEu(service: string, from: number) {
  for (const region of ['eu', 'us']) {
    for (const zone of ['a', 'b']) {
      const attributes = { 'cloud.region': region, 'cloud.availability_zone': zone };
      const common = { service, resource: 'GET /cart', errorType: 'TimeoutError', from, spreadMs: 1, attributes };
      await sendTraffic(s, { ...common, version: 'v1', count: 2000, errors: 20 }, ingestKey);
      await sendTraffic(s, { ...common, version: 'v2', count: 400, errors: region === 'eu' ? 120 : 4 }, ingestKey);
    }
  }
}

async function evidenceOf(id: string) {
  const r = await s.gql('query($id: ID!) { evaluation(id: $id) { rules { evidenceJson } } }', { id });
  return r.data.evaluation.rules[0].evidenceJson;
}

describe('two primary tags', () => {
  test('each primary-tag value is a test of its own, not each combination of them', async () => {
    const ev = await fdd('pt-values', {}, { duration: 600 });
    const from = Date.parse(ev.startedAt);
    await sleep(from + 1000 - Date.now());
    await regressedInEu('pt-values', from);
    const failed = (await d.follow(ev.id)).find((e) => e.status === 'FAIL');
    assert.ok(failed, 'failed before the window ended');
    const names = (await evidenceOf(ev.id)).faultyResources.filter((f: any) => f.scope === 'primary_tag').map((f: any) => f.name);
    assert.ok(names.includes('region:eu'), `region:eu is blamed: ${JSON.stringify(names)}`);
    assert.ok(!names.includes('region:us'), `region:us is not: ${JSON.stringify(names)}`);
    assert.deepEqual(
      names.filter((n: string) => n.includes(',')),
      [],
      'no test is a combination of tags',
    );
  });

  test('an evaluation narrowed to primary tags reads every request carrying them', async () => {
    // Both stored forms: one tag of the two, and the two as a request carries them.
    for (const primaryTag of ['region:eu', 'region:eu,zone:a']) {
      const service = `pt-narrow-${primaryTag.length}`;
      const ev = await fdd(service, { primaryTag }, { duration: 1, onInsufficientData: 'PASS' });
      await regressedInEu(service, Date.parse(ev.startedAt));
      const final = (await d.follow(ev.id, 20_000)).at(-1);
      assert.equal(final.status, 'FAIL', `${primaryTag}: ${final.rules[0].reason}`);
      assert.match(final.rules[0].reason, /error rate of .* rose from 1\.00% \(baseline\) to 30\.00%/, primaryTag);
    }
  });

  test('a value holding a comma or spaces stays one value, as an evaluation can name it', async () => {
    await sendTraffic(
      s,
      {
        service: 'pt-comma',
        version: 'v1',
        resource: 'GET /cart',
        count: 1,
        from: Date.now(),
        spreadMs: 1,
        attributes: { 'cloud.region': 'eu', 'cloud.availability_zone': 'a, b' },
      },
      ingestKey,
    );
    const rows = await countsByResource(s.app.deps.db, { service: 'pt-comma', env: 'prod', from: 0, to: Date.now() + 60_000 });
    assert.deepEqual(
      rows.map((r) => r.primaryTag),
      ['region:eu,zone:a_b'],
    );
  });
});
