// The evaluation filter is one definition (src/db/evaluationFilter.ts): the SQL of the queries
// and the predicate of the live streams. These tests hold the two to the same answers.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDb } from '../src/db/client.ts';
import { type EvaluationFilter, FILTER_FIELDS, type FilterSubject, filterMatches } from '../src/db/evaluationFilter.ts';
import { countEvaluations, type EvaluationRow, listEvaluations, ruleEvaluationsOf } from '../src/db/evaluations.ts';
import { insertGate } from '../src/db/gates.ts';
import { evaluations, ruleEvaluations } from '../src/db/schema.ts';
import { newId } from '../src/domain/ids.ts';
import { driver, jitMonitor, sleep, startServer, subscribeLive, type TestServer } from './helpers.ts';

/** A small deterministic generator (mulberry32): the same seeded set and filters every run. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('one evaluation filter: the SQL of queries and the predicate of live events agree', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-filter-'));
  const db = openDb(join(dir, 'filter.db'));
  after(() => {
    db.$client.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const next = random(20240613);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(next() * values.length)]!;
  const BASE = Date.UTC(2026, 0, 10, 12);
  const MINUTE = 60_000;
  const stamp = { createdAt: new Date(BASE), createdById: 'test', createdByName: 'test', updatedAt: new Date(BASE), updatedById: 'test', updatedByName: 'test' };
  const gateIds: string[] = [];
  for (const service of ['api', 'web', 'batch']) {
    gateIds.push((await insertGate(db, { id: newId(), service, env: 'prod', identifier: 'default', dryRun: false, onSourceError: 'fail', ...stamp })).id);
  }
  const STATUSES = ['in_progress', 'pass', 'fail', 'canceled'] as const;
  const RULE_TYPES = ['monitor', 'faulty_deployment_detection'] as const;

  // 160 evaluations over every value each field can take (null versions and gates included),
  // starting on 20 distinct minutes, so time bounds fall on, between and beside start times.
  for (let i = 0; i < 160; i++) {
    const id = newId();
    const startedAt = new Date(BASE + (i % 20) * MINUTE);
    db.insert(evaluations)
      .values({
        id,
        gateId: pick([...gateIds, null]),
        service: pick(['api', 'web', 'batch']),
        env: pick(['prod', 'staging', 'dev']),
        identifier: pick(['default', 'pre-deploy']),
        version: pick(['v1', 'v2', null]),
        dryRun: next() < 0.5,
        onSourceError: 'fail',
        status: pick(STATUSES),
        ...(next() < 0.25 && {
          overrideStatus: pick(['pass', 'fail'] as const),
          overrideReason: 'accepted',
          overriddenAt: startedAt,
          overriddenById: 'test',
          overriddenByName: 'test',
        }),
        justInTime: false,
        triggeredById: 'test',
        triggeredByName: 'test',
        startedAt,
      })
      .run();
    const count = 1 + Math.floor(next() * 3);
    db.insert(ruleEvaluations)
      .values(
        Array.from({ length: count }, (_, position) => ({
          id: newId(),
          evaluationId: id,
          position,
          name: pick(['latency', 'errors', 'canary']),
          type: pick(RULE_TYPES),
          dryRun: false,
          options: {},
          status: pick(STATUSES),
          startedAt,
          windowStartsAt: startedAt,
          windowEndsAt: new Date(startedAt.getTime() + 10 * MINUTE),
        })),
      )
      .run();
  }
  const rows: EvaluationRow[] = await listEvaluations(db, {}, { limit: 1000, inverted: false });
  const rules = await ruleEvaluationsOf(
    db,
    rows.map((e) => e.id),
  );
  // As live events carry them: each evaluation read back with its rules.
  const subjects: FilterSubject[] = rows.map((evaluation) => ({ evaluation, rules: rules.filter((r) => r.evaluationId === evaluation.id) }));
  const unknownId = newId();
  const at = (minutes: number, ms = 0) => new Date(BASE + minutes * MINUTE + ms);

  /** Values of each field to try: empty lists, absent values, several values, edges of time ranges. */
  const SAMPLES: { [K in keyof EvaluationFilter]-?: Array<EvaluationFilter[K]> } = {
    service: [[], ['api'], ['api', 'web'], ['nope']],
    env: [[], ['prod'], ['staging', 'dev'], ['nope']],
    identifier: [[], ['default'], ['pre-deploy'], ['default', 'pre-deploy']],
    version: [[], ['v1'], ['v1', 'v2'], ['nope']],
    status: [[], ['in_progress'], ['pass', 'fail'], [...STATUSES]],
    overridden: [undefined, true, false],
    dryRun: [undefined, true, false],
    gateId: [undefined, gateIds[0], gateIds[2], unknownId],
    gateIds: [[], [gateIds[0]!], [gateIds[1]!, gateIds[2]!], [unknownId]],
    ruleType: [[], ['monitor'], ['faulty_deployment_detection'], [...RULE_TYPES]],
    ruleName: [[], ['latency'], ['errors', 'canary'], ['nope']],
    startedAfter: [undefined, at(0), at(7), at(7, 1), at(6, MINUTE - 1), at(-60), at(60)],
    startedBefore: [undefined, at(0), at(7), at(7, 1), at(6, MINUTE - 1), at(-60), at(60)],
    envs: [null, [], ['prod'], ['prod', 'dev']],
    evaluationIds: [[], [rows[0]!.id], rows.slice(10, 40).map((e) => e.id), [unknownId]],
  };

  async function agree(filter: EvaluationFilter): Promise<string[]> {
    const bySql = (await listEvaluations(db, filter, { limit: 1000, inverted: false })).map((e) => e.id);
    const inMemory = subjects.filter((s) => filterMatches(filter, s)).map((s) => s.evaluation.id);
    const described = JSON.stringify(filter);
    assert.deepEqual(bySql, inMemory, `SQL and predicate disagree on ${described}`);
    assert.equal(await countEvaluations(db, filter), inMemory.length, `the count disagrees on ${described}`);
    return inMemory;
  }

  test('every field of the filter has samples here', () => {
    assert.deepEqual(Object.keys(SAMPLES).sort(), [...FILTER_FIELDS].sort());
  });

  test('each field alone, on each of its samples', async () => {
    for (const field of FILTER_FIELDS) {
      let narrows = false;
      for (const value of SAMPLES[field]) {
        const selected = await agree({ [field]: value });
        if (selected.length > 0 && selected.length < rows.length) narrows = true;
      }
      // The samples must also be able to tell the two apart: some select part of the set, not all or none.
      assert.ok(narrows, `no sample of ${field} selects part of the seeded set`);
    }
  });

  test('bounds on what a caller may see hold even when empty: no environments, no evaluations', async () => {
    assert.deepEqual(await agree({ envs: [] }), []);
    assert.deepEqual(await agree({ evaluationIds: [] }), []);
    assert.equal((await agree({ envs: null })).length, rows.length);
  });

  test('fields together: 400 seeded combinations of two to six fields', async () => {
    let nonEmpty = 0;
    for (let i = 0; i < 400; i++) {
      const fields = [...FILTER_FIELDS].sort(() => next() - 0.5).slice(0, 2 + Math.floor(next() * 5));
      const filter: Record<string, unknown> = {};
      for (const field of fields) filter[field] = pick(SAMPLES[field] as unknown[]);
      if ((await agree(filter as EvaluationFilter)).length > 0) nonEmpty++;
    }
    assert.ok(nonEmpty > 50, `only ${nonEmpty} combinations selected anything`);
  });
});

describe('evaluationEvents over graphql-ws', () => {
  let s: TestServer;
  let d: ReturnType<typeof driver>;
  before(async () => {
    s = await startServer();
    d = driver(s);
  });
  after(() => s.stop());

  /** The events of one subscription up to (and with) the first that `last` accepts. */
  async function until(sub: Awaited<ReturnType<typeof subscribeLive>>, last: (e: any) => boolean): Promise<any[]> {
    const seen: any[] = [];
    for (;;) {
      const next = await sub.next();
      assert.equal(next.errors, undefined, JSON.stringify(next.errors));
      seen.push((next.data as any).evaluationEvents);
      if (last(seen.at(-1))) return seen;
    }
  }

  test('startedAfter and startedBefore select live events as they select queries', async () => {
    const monitor = await d.monitor('filter-window ok', ['filter:window']);
    await d.report(monitor, 'OK');
    // A rule that watches for an hour: the evaluations change only when canceled.
    const input = { service: 'filter-window', env: 'prod', configuration: { rules: [jitMonitor('m', { query: 'filter:window', duration: 3600 })] } };
    const started = await d.evaluate(input);
    assert.equal(started.errors, undefined, JSON.stringify(started.errors));
    const older = started.data.evaluateGate;
    const split = new Date(new Date(older.startedAt).getTime() + 1).toISOString();
    while (Date.now() <= new Date(split).getTime()) await sleep(2); // the next evaluation starts at or after `split`

    const client = s.ws();
    const query = 'subscription($f: EvaluationFilter) { evaluationEvents(filter: $f) { id status } }';
    const beforeSplit = await subscribeLive(s, client, query, { f: { service: ['filter-window'], startedBefore: split } });
    const afterSplit = await subscribeLive(s, client, query, { f: { service: ['filter-window'], startedAfter: split } });

    const newer = (await d.evaluate(input)).data.evaluateGate;
    await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id: older.id });
    await s.gql('mutation($id: ID!) { cancelEvaluation(id: $id) { id } }', { id: newer.id });

    const olderEvents = await until(beforeSplit, (e) => e.id === older.id && e.status === 'CANCELED');
    assert.deepEqual(new Set(olderEvents.map((e) => e.id)), new Set([older.id]), 'startedBefore: only the evaluation started before the split');
    const newerEvents = await until(afterSplit, (e) => e.id === newer.id && e.status === 'CANCELED');
    assert.deepEqual(new Set(newerEvents.map((e) => e.id)), new Set([newer.id]), 'startedAfter: only the evaluation started at or after the split');

    // The query with the same filters answers the same evaluations.
    const listed = async (f: Record<string, unknown>) =>
      (await s.gql('query($f: EvaluationFilter) { evaluations(filter: $f, first: 10) { edges { node { id } } } }', { f })).data.evaluations.edges.map((e: any) => e.node.id);
    assert.deepEqual(await listed({ service: ['filter-window'], startedBefore: split }), [older.id]);
    assert.deepEqual(await listed({ service: ['filter-window'], startedAfter: split }), [newer.id]);
    beforeSplit.dispose();
    afterSplit.dispose();
  });
});
