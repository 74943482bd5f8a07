// The gate filter is one definition (src/db/gateFilter.ts): the SQL of gate lists and counts
// (inline and prepared) and the predicate of the gateEvents stream. These tests hold them to
// the same answers, field by field and in combinations.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { openDb } from '../src/db/client.ts';
import { GATE_FILTER_FIELDS, type GateFilter, gateMatches } from '../src/db/gateFilter.ts';
import { countGates, type GateRow, insertGate, listGateIds } from '../src/db/gates.ts';
import { newId } from '../src/domain/ids.ts';

describe('one gate filter: list, count and live predicate agree', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-gatefilter-'));
  const db = openDb(join(dir, 'gates.db'));
  after(() => {
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const at = new Date(Date.UTC(2026, 0, 10));
  const stamp = { createdAt: at, createdById: 'test', createdByName: 'test', updatedAt: at, updatedById: 'test', updatedByName: 'test' };
  // Every combination of three services, three envs, two identifiers and both dry-run values.
  const rows: GateRow[] = [];
  for (const service of ['api', 'web', 'batch'])
    for (const env of ['prod', 'staging', 'dev'])
      for (const identifier of ['default', 'pre-deploy'])
        for (const dryRun of [false, true])
          rows.push(await insertGate(db, { id: newId(), service, env, identifier: dryRun ? `${identifier}-dry` : identifier, dryRun, onSourceError: 'fail', ...stamp }));
  rows.sort((a, b) => (a.id < b.id ? -1 : 1));

  const SAMPLES: { [K in keyof GateFilter]-?: Array<GateFilter[K]> } = {
    serviceIn: [[], ['api'], ['api', 'web'], ['nope']],
    envIn: [[], ['prod'], ['staging', 'dev'], ['nope']],
    identifierIn: [[], ['default'], ['default', 'pre-deploy-dry'], ['nope']],
    service: [undefined, 'api', 'nope'],
    env: [undefined, 'staging', 'nope'],
    identifier: [undefined, 'pre-deploy', 'default-dry'],
    dryRun: [undefined, true, false],
    envs: [null, [], ['prod'], ['prod', 'dev']],
  };

  async function agree(filter: GateFilter): Promise<string[]> {
    const described = JSON.stringify(filter);
    const inMemory = rows.filter((g) => gateMatches(g, filter)).map((g) => g.id);
    assert.deepEqual(await listGateIds(db, filter, { limit: 1000, inverted: false }), inMemory, `the list disagrees on ${described}`);
    assert.deepEqual(await listGateIds(db, filter, { limit: 1000, inverted: true }), [...inMemory].reverse(), `the inverted list disagrees on ${described}`);
    assert.equal(await countGates(db, filter), inMemory.length, `the count disagrees on ${described}`);
    return inMemory;
  }

  test('every field of the filter has samples here', () => {
    assert.deepEqual(Object.keys(SAMPLES).sort(), [...GATE_FILTER_FIELDS].sort());
  });

  test('each field alone, on each of its samples, and the samples narrow the set', async () => {
    for (const field of GATE_FILTER_FIELDS) {
      let narrows = false;
      for (const value of SAMPLES[field]) {
        const selected = await agree({ [field]: value });
        if (selected.length > 0 && selected.length < rows.length) narrows = true;
      }
      assert.ok(narrows, `no sample of ${field} selects part of the gates`);
    }
  });

  test('a bound on what the caller may see holds even when empty', async () => {
    assert.deepEqual(await agree({ envs: [] }), []);
    assert.deepEqual(await agree({ envs: [], serviceIn: ['api'] }), []);
  });

  test('combinations of fields, and pages of the prepared statement', async () => {
    let seed = 7;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 200; i++) {
      const filter: GateFilter = {};
      for (const field of GATE_FILTER_FIELDS) {
        if (next() < 0.4) {
          const samples = SAMPLES[field];
          Object.assign(filter, { [field]: samples[Math.floor(next() * samples.length)] });
        }
      }
      const all = await agree(filter);
      // Walk the same selection a page of 3 at a time, forwards.
      const walked: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await listGateIds(db, filter, { limit: 3, inverted: false, after: cursor });
        walked.push(...page);
        if (page.length < 3) break;
        cursor = page.at(-1);
      }
      assert.deepEqual(walked, all, `paging disagrees on ${JSON.stringify(filter)}`);
    }
  });
});
