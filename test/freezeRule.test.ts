import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { driver, startServer, type TestServer } from './helpers.ts';

let s: TestServer;
let d: ReturnType<typeof driver>;
before(async () => {
  s = await startServer();
  d = driver(s);
});
after(() => s.stop());

const FREEZE_FIELDS = `id status reportedStatus rules { name type status reason
  options { ... on FreezeRuleOptions { calendars { name cron duration timeZone } adHoc incidentQuery duration } }
  freezeEvidence { freezes { active kind name startedAt endsAt endsAtLeast cron timeZone freezeId setBy service monitorId group url } } }`;

const FREEZE = 'id env service reason startsAt endsAt active endedAt endedBy endReason createdBy';

async function must(server: TestServer, query: string, variables?: Record<string, unknown>, key?: string) {
  const r = await server.gql(query, variables, key);
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data;
}

const createFreeze = (server: TestServer, input: Record<string, unknown>, key?: string) =>
  server.gql(`mutation($i: CreateFreezeInput!) { createFreeze(input: $i) { ${FREEZE} } }`, { i: input }, key);
const endFreeze = (server: TestServer, id: string, key?: string, reason?: string) =>
  server.gql(`mutation($id: ID!, $reason: String) { endFreeze(id: $id, reason: $reason) { ${FREEZE} } }`, { id, reason }, key);

/** Starts a just-in-time evaluation with one freeze rule; returns its id. */
async function start(server: TestServer, options: Record<string, unknown>, input: Record<string, unknown> = {}) {
  const r = await server.gql('mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id } }', {
    i: { service: 'checkout', env: 'prod', configuration: { rules: [{ name: 'freeze', options: { freeze: options } }] }, ...input },
  });
  assert.equal(r.errors, undefined, JSON.stringify(r.errors));
  return r.data.evaluateGate.id as string;
}

/** The evaluation, each rule's freezes split as the evidence records them: in force, and waited for. */
async function read(server: TestServer, id: string, key?: string) {
  const e = (await must(server, `query($id: ID!) { evaluation(id: $id) { ${FREEZE_FIELDS} } }`, { id }, key)).evaluation;
  for (const r of e.rules) {
    const all = r.freezeEvidence?.freezes ?? [];
    r.active = all.filter((f: any) => f.active);
    r.waitedFor = all.filter((f: any) => !f.active);
  }
  return e;
}

/** Waits until the rule has been checked once and is waiting (its reason says it is frozen). */
async function frozen(server: TestServer, id: string) {
  for (let i = 0; i < 200; i++) {
    const e = await read(server, id);
    if (/^Frozen/.test(e.rules[0].reason ?? '')) return e;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`evaluation ${id} never reported a freeze`);
}

describe('freeze rule', () => {
  test('an ad-hoc freeze lifted mid-window: the running evaluation passes after the lift, at once', async () => {
    const set = await createFreeze(s, { env: 'prod', reason: 'release train 42' });
    assert.equal(set.errors, undefined, JSON.stringify(set.errors));
    const freeze = set.data.createFreeze;
    assert.equal(freeze.active, true);
    assert.equal(freeze.createdBy, 'bootstrap');
    // Ten minutes to wait: only the lift's event can end it within the follow below.
    const id = await start(s, { duration: 600 });
    const waiting = await frozen(s, id);
    assert.equal(waiting.status, 'IN_PROGRESS');
    assert.match(waiting.rules[0].reason, /^Frozen: freeze "release train 42" set by bootstrap until lifted; waiting until .* for it to end\.$/);
    assert.deepEqual(
      waiting.rules[0].active.map((f: any) => [f.kind, f.freezeId, f.name, f.endsAt]),
      [['AD_HOC', freeze.id, 'release train 42', null]],
    );

    const lifted = await endFreeze(s, freeze.id, undefined, 'train left');
    assert.equal(lifted.errors, undefined, JSON.stringify(lifted.errors));
    assert.deepEqual([lifted.data.endFreeze.active, lifted.data.endFreeze.endedBy, lifted.data.endFreeze.endReason], [false, 'bootstrap', 'train left']);
    const events = await d.follow(id, 10_000);
    const final = await read(s, id);
    assert.equal(final.status, 'PASS', JSON.stringify(events.at(-1)));
    assert.match(final.rules[0].reason, /^No freeze applies at .* \(it waited for freeze "release train 42" set by bootstrap until lifted, over now\)\.$/);
    assert.deepEqual(
      final.rules[0].waitedFor.map((f: any) => f.freezeId),
      [freeze.id],
    );
    // Both changes are in the audit log, by the key that made them.
    const rows = await s.sql("select action, actor_name from audit_log where target_type = 'freeze' and target_id = ? order by at", freeze.id);
    assert.deepEqual(rows, [
      { action: 'freeze.created', actor_name: 'bootstrap' },
      { action: 'freeze.ended', actor_name: 'bootstrap' },
    ]);
    assert.match((await endFreeze(s, freeze.id)).errors![0]!.message, /already ended at/);
  });

  test('a freeze with a planned end lets a waiting rule pass at that end; one outlasting the wait fails it at the end', async () => {
    const soon = new Date(Date.now() + 2000).toISOString();
    const set = await createFreeze(s, { env: 'planned', service: 'checkout', reason: 'db migration', endsAt: soon });
    assert.equal(set.errors, undefined, JSON.stringify(set.errors));
    const id = await start(s, { duration: 60 }, { env: 'planned' });
    await d.follow(id, 15_000);
    const passed = await read(s, id);
    assert.equal(passed.status, 'PASS');
    assert.deepEqual(
      passed.rules[0].waitedFor.map((f: any) => f.name),
      ['db migration'],
    );

    await createFreeze(s, { env: 'planned2', reason: 'quarter end' });
    const once = await start(s, {}, { env: 'planned2' });
    await d.follow(once);
    const failed = await read(s, once);
    assert.equal(failed.status, 'FAIL', 'duration 0: checked once');
    assert.match(failed.rules[0].reason, /^Frozen: freeze "quarter end" set by bootstrap until lifted\.$/);
    // Another service's freeze does not apply.
    await createFreeze(s, { env: 'planned3', service: 'payments', reason: 'payments only' });
    const other = await start(s, {}, { env: 'planned3' });
    await d.follow(other);
    assert.equal((await read(s, other)).status, 'PASS');
  });

  test('an incident freeze follows a monitor: ALERT holds the rule, recovery releases it', async () => {
    const monitor = await d.monitor('checkout 5xx', ['incident:freeze-test', 'env:prod']);
    await d.report(monitor, 'ALERT', 'region:eu');
    const id = await start(s, { adHoc: false, incidentQuery: 'incident:freeze-test', duration: 600 });
    const waiting = await frozen(s, id);
    assert.match(waiting.rules[0].reason, /^Frozen: incident: monitor "checkout 5xx" \(region:eu\) ALERT since /);
    const [entry] = waiting.rules[0].active;
    assert.deepEqual([entry.kind, entry.monitorId, entry.group, entry.endsAt], ['INCIDENT', monitor, 'region:eu', null]);
    assert.match(entry.url, new RegExp(`/monitors/${monitor}$`));
    await d.report(monitor, 'OK', 'region:eu');
    await d.follow(id, 10_000);
    const final = await read(s, id);
    assert.equal(final.status, 'PASS');
    assert.deepEqual(
      final.rules[0].waitedFor.map((f: any) => [f.kind, f.monitorId]),
      [['INCIDENT', monitor]],
    );
  });

  test('a staging-limited key can neither see nor lift a prod freeze, nor set one', async () => {
    const prod = (await createFreeze(s, { env: 'prod', reason: 'prod only' })).data.createFreeze;
    const staging = (await createFreeze(s, { env: 'staging', reason: 'staging too' })).data.createFreeze;
    const key = await s.createKey(['gates:write'], ['staging']);
    const listed = await must(s, `query { freezes(first: 100) { id env } }`, {}, key);
    assert.ok(listed.freezes.some((f: any) => f.id === staging.id));
    assert.ok(
      listed.freezes.every((f: any) => f.env === 'staging'),
      JSON.stringify(listed),
    );
    assert.equal((await must(s, `query($id: ID!) { freeze(id: $id) { id } }`, { id: prod.id }, key)).freeze, null);
    const lift = await endFreeze(s, prod.id, key);
    const missing = await endFreeze(s, '0190b3c4-0000-7000-8000-000000000000', key);
    assert.equal(lift.errors?.[0]?.extensions?.code, 'NOT_FOUND');
    assert.equal(
      lift.errors![0]!.message.replace(prod.id, '<id>'),
      missing.errors![0]!.message.replace('0190b3c4-0000-7000-8000-000000000000', '<id>'),
      'the same answer as for a freeze that does not exist',
    );
    const set = await createFreeze(s, { env: 'prod', reason: 'nope' }, key);
    assert.equal(set.errors?.[0]?.extensions?.code, 'FORBIDDEN');
    assert.equal((await must(s, `query($id: ID!) { freeze(id: $id) { active } }`, { id: prod.id })).freeze.active, true, 'still in force');
    assert.equal((await endFreeze(s, staging.id, key)).errors, undefined, 'its own env it may lift');
    await endFreeze(s, prod.id);
  });

  test('an incident entry about a monitor the reader cannot see leaves the evidence and the reason', async () => {
    const monitor = await d.monitor('staging db', ['incident:cross-env', 'env:staging']);
    await d.report(monitor, 'ALERT');
    const id = await start(s, { adHoc: false, incidentQuery: 'incident:cross-env' });
    await d.follow(id);
    const admin = await read(s, id);
    assert.equal(admin.status, 'FAIL');
    assert.match(admin.rules[0].reason, /monitor "staging db"/);
    const prodReader = await s.createKey(['gates:read'], ['prod']);
    const limited = await read(s, id, prodReader);
    assert.equal(limited.status, 'FAIL', 'the verdict stays');
    assert.doesNotMatch(JSON.stringify(limited), /staging db|incident:cross-env\b.*ALERT/);
    assert.deepEqual(limited.rules[0].active, []);
    assert.match(limited.rules[0].reason, /^The rule failed; monitors outside your environments are not shown\.$/);
  });

  test('bad options are refused naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ calendars: [{ cron: '0 18 * * FRI', duration: 3600, timeZone: 'Mars/Olympus_Mons' }] }, 'calendars[0].timeZone', /timeZone "Mars\/Olympus_Mons" is not an IANA time zone/],
      [{ calendars: [{ cron: '0 18 * *', duration: 3600, timeZone: 'UTC' }] }, 'calendars[0].cron', /cron "0 18 \* \*" has 4 field\(s\)/],
      [{ calendars: [{ cron: '0 18 * * FRI', duration: 10, timeZone: 'UTC' }] }, 'calendars[0].duration', /between 60 seconds and 31 days/],
      [{ adHoc: false }, 'adHoc', /needs something to follow/],
      [{ incidentQuery: 'service:(' }, 'incidentQuery', /invalid monitor query/],
      [{ duration: 9000 }, 'duration', /between 0 and 7200/],
    ];
    for (const [options, field, message] of cases) {
      const r = await d.evaluate({ service: 'checkout', env: 'prod', configuration: { rules: [{ name: 'freeze', options: { freeze: options } }] } });
      assert.equal(r.errors?.[0]?.extensions?.field, `input.configuration.rules[0].options.freeze.${field}`, JSON.stringify(r.errors));
      assert.match(r.errors![0]!.message, message);
    }
  });

  test('REST takes type "freeze" and "webhook" rules in snake_case and reads them back so', async () => {
    const gate = await s.request('POST', '/api/v2/deployment_gates', { body: { data: { type: 'deployment_gate', attributes: { service: 'rest-freeze', env: 'prod' } } } });
    const gateId = gate.json.data.id;
    const created = await s.request('POST', `/api/v2/deployment_gates/${gateId}/rules`, {
      body: {
        data: {
          type: 'deployment_rule',
          attributes: {
            name: 'weekend',
            type: 'freeze',
            options: { calendars: [{ name: 'weekend', cron: '0 18 * * FRI', duration: 223200, time_zone: 'europe/paris' }], ad_hoc: false },
          },
        },
      },
    });
    assert.equal(created.status, 200, created.text);
    assert.deepEqual(created.json.data.attributes.options, {
      calendars: [{ name: 'weekend', cron: '0 18 * * FRI', duration: 223200, time_zone: 'Europe/Paris' }],
      ad_hoc: false,
      duration: 0,
    });
    const bad = await s.request('POST', `/api/v2/deployment_gates/${gateId}/rules`, {
      body: {
        data: { type: 'deployment_rule', attributes: { name: 'x', type: 'freeze', options: { calendars: [{ cron: '0 18 * * FRI', duration: 3600, time_zone: 'Nowhere' }] } } },
      },
    });
    assert.equal(bad.status, 400);
    // The wire's own names, in the path and in the message.
    assert.match(bad.json.errors[0].detail, /^options\.calendars\[0\]\.time_zone: time_zone "Nowhere" is not an IANA time zone/);
    const missing = await s.request('POST', `/api/v2/deployment_gates/${gateId}/rules`, {
      body: { data: { type: 'deployment_rule', attributes: { name: 'x', type: 'freeze', options: { calendars: [{ cron: '0 18 * * FRI', duration: 3600 }] } } } },
    });
    assert.match(missing.json.errors[0].detail, /^options\.calendars\[0\]\.time_zone: time_zone is required/);
    const unknown = await s.request('POST', `/api/v2/deployment_gates/${gateId}/rules`, {
      body: { data: { type: 'deployment_rule', attributes: { name: 'x', type: 'metrics', options: {} } } },
    });
    assert.match(unknown.json.errors[0].detail, /invalid rule type: metrics \(must be monitor, faulty_deployment_detection, metric, webhook or freeze\)/);
  });
});

describe('freezes over REST', () => {
  test("set, list, read and lift a freeze; another environment's is not found; errors in wire names", async () => {
    const ends = new Date(Date.now() + 3_600_000).toISOString();
    const created = await s.request('POST', '/api/v2/deployment_freezes', {
      body: { data: { type: 'deployment_freeze', attributes: { env: 'rest-prod', service: 'checkout', reason: 'black friday', ends_at: ends } } },
    });
    assert.equal(created.status, 200, created.text);
    const id = created.json.data.id;
    assert.deepEqual(
      [
        created.json.data.type,
        created.json.data.attributes.env,
        created.json.data.attributes.service,
        created.json.data.attributes.ends_at,
        created.json.data.attributes.active,
        created.json.data.attributes.created_by.name,
      ],
      ['deployment_freeze', 'rest-prod', 'checkout', ends, true, 'bootstrap'],
    );
    const listed = await s.request('GET', '/api/v2/deployment_freezes?filter[env]=rest-prod&filter[active]=true');
    assert.deepEqual(
      listed.json.data.map((f: any) => f.id),
      [id],
    );
    const stagingKey = await s.createKey(['gates:write'], ['rest-staging']);
    assert.equal((await s.request('GET', `/api/v2/deployment_freezes/${id}`, { key: stagingKey })).status, 404);
    assert.equal((await s.request('POST', `/api/v2/deployment_freezes/${id}/end`, { key: stagingKey })).status, 404);
    assert.deepEqual((await s.request('GET', '/api/v2/deployment_freezes?filter[env]=rest-prod', { key: stagingKey })).json.data, []);
    const bad = await s.request('POST', '/api/v2/deployment_freezes', { body: { data: { attributes: { env: 'rest-prod', reason: 'x', ends_at: 'soon' } } } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.errors[0].detail, /^ends_at: ends_at must be an RFC 3339 date/);
    const lifted = await s.request('POST', `/api/v2/deployment_freezes/${id}/end`, { body: { data: { attributes: { reason: 'sale over' } } } });
    assert.equal(lifted.status, 200, lifted.text);
    assert.deepEqual([lifted.json.data.attributes.active, lifted.json.data.attributes.end_reason, lifted.json.data.attributes.ended_by.name], [false, 'sale over', 'bootstrap']);
    assert.equal((await s.request('POST', `/api/v2/deployment_freezes/${id}/end`)).status, 400, 'already ended: a conflict');
    assert.deepEqual((await s.request('GET', '/api/v2/deployment_freezes?filter[env]=rest-prod&filter[active]=true')).json.data, []);
    assert.deepEqual(
      (await s.request('GET', '/api/v2/deployment_freezes?filter[env]=rest-prod&filter[active]=false')).json.data.map((f: any) => f.id),
      [id],
    );
  });
});

describe('freeze rule, calendar windows on the server clock', () => {
  // A server whose clock runs from a chosen instant: the engine and the rule read it through deps.now().
  let clocked: TestServer;
  let offset = 0;
  before(async () => {
    clocked = await startServer({}, { now: () => new Date(Date.now() + offset) });
  });
  after(() => clocked.stop());
  const at = (iso: string) => (offset = Date.parse(iso) - Date.now());

  async function verdict(calendar: Record<string, unknown>) {
    const id = await start(clocked, { adHoc: false, calendars: [calendar] });
    await driver(clocked).follow(id);
    return read(clocked, id);
  }

  test('a window spanning the fall-back hour: frozen the second 01:15, clear once its two hours have passed', async () => {
    const window = { name: 'nightly batch', cron: '30 0 * * *', duration: 7200, timeZone: 'America/New_York' };
    at('2024-11-03T06:15:00Z'); // 01:15 EST, the second 01:15 of the night
    const frozenThen = await verdict(window);
    assert.equal(frozenThen.status, 'FAIL');
    assert.match(frozenThen.rules[0].reason, /^Frozen: calendar window "nightly batch" \(30 0 \* \* \*, America\/New_York\) until 2024-11-03T06:30:00\.000Z\.$/);
    assert.deepEqual(
      frozenThen.rules[0].active.map((f: any) => [f.kind, f.startedAt, f.endsAt]),
      [['CALENDAR', '2024-11-03T04:30:00.000Z', '2024-11-03T06:30:00.000Z']],
    );
    at('2024-11-03T06:31:00Z');
    assert.equal((await verdict(window)).status, 'PASS');
  });

  test('a 02:30 window on a spring-forward day opens at 03:30 EDT', async () => {
    const window = { cron: '30 2 * * *', duration: 1800, timeZone: 'America/New_York' };
    at('2024-03-10T07:10:00Z'); // 03:10 EDT: the clocks have jumped, 02:30 has not come
    assert.equal((await verdict(window)).status, 'PASS');
    at('2024-03-10T07:35:00Z'); // 03:35 EDT
    const then = await verdict(window);
    assert.equal(then.status, 'FAIL');
    assert.equal(then.rules[0].active[0].endsAt, '2024-03-10T08:00:00.000Z');
  });

  test('a calendar window known to outlast the wait fails at once', async () => {
    at('2024-03-29T18:00:00Z'); // Friday 19:00 in Paris
    const id = await start(clocked, { adHoc: false, duration: 600, calendars: [{ name: 'weekend', cron: '0 18 * * FRI', duration: 62 * 3600, timeZone: 'Europe/Paris' }] });
    await driver(clocked).follow(id);
    const e = await read(clocked, id);
    assert.equal(e.status, 'FAIL');
    assert.match(e.rules[0].reason, /until 2024-04-01T07:00:00\.000Z, past the end of the rule's wait at 2024-03-29T18:10:00/);
  });
});
