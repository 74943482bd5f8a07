import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type MatchableMonitor, MonitorQueryError, matches, normalizeGroup, parseMonitorQuery } from '../src/domain/monitorQuery.ts';

const monitor = (over: Partial<MatchableMonitor> = {}): MatchableMonitor => ({
  id: '0190a000-0000-7000-8000-000000000001',
  name: 'Checkout error rate',
  type: 'external',
  tags: ['service:transaction-backend', 'env:prod', 'team:payment', 'use_deployment_gates'],
  query: 'sum:trace.http.request.errors{service:transaction-backend,env:prod} by {region}',
  muted: false,
  priority: 2,
  status: 'ok',
  ...over,
});

const m = (q: string, mon = monitor(), group: string[] | null = null) => matches(parseMonitorQuery(q), mon, group);

describe('monitor query parser: the Datadog documentation examples', () => {
  test('static tag, scope and group filters', () => {
    assert.equal(m('service:transaction-backend'), true);
    assert.equal(m('service:other'), false);
    assert.equal(m('scope:"service:transaction-backend"'), true);
    assert.equal(m('scope:"service:other"'), false);
    assert.equal(m('group:"service:transaction-backend"', monitor(), ['service:transaction-backend']), true);
    assert.equal(m('group:"service:transaction-backend"', monitor(), ['service:x']), false);
    assert.equal(m('group:"service:transaction-backend"'), false, 'a group term needs a group');
  });

  test('env:prod (service:x OR group:"service:x" OR scope:"service:x")', () => {
    const q = 'env:prod (service:transaction-backend OR group:"service:transaction-backend" OR scope:"service:transaction-backend")';
    assert.deepEqual(parseMonitorQuery(q).kind, 'and');
    assert.equal(m(q), true);
    assert.equal(m(q, monitor({ tags: ['env:prod'], query: '' }), ['service:transaction-backend']), true);
    assert.equal(m(q, monitor({ tags: ['env:prod'], query: '' })), false);
    assert.equal(m(q, monitor({ tags: ['env:staging', 'service:transaction-backend'] })), false);
  });

  test('tag:"use_deployment_gates" team:payment', () => {
    assert.equal(m('tag:"use_deployment_gates" team:payment'), true);
    assert.equal(m('tag:"use_deployment_gates" team:frontend'), false);
    assert.equal(m('tag:"use_deployment_gates" team:payment', monitor({ tags: ['team:payment'] })), false);
  });

  test('tag:"use_deployment_gates" AND (NOT group:("team:frontend"))', () => {
    const q = 'tag:"use_deployment_gates" AND (NOT group:("team:frontend"))';
    assert.equal(m(q, monitor(), ['team:payment']), true);
    assert.equal(m(q, monitor(), ['team:frontend']), false);
    assert.equal(m(q), true, 'the monitor as a whole is not in a frontend group');
  });

  test('group:("a:b" OR "c:d") lists', () => {
    const q = 'group:("region:us-east-1" OR "region:eu-west-1")';
    assert.equal(m(q, monitor(), ['region:eu-west-1', 'host:a']), true);
    assert.equal(m(q, monitor(), ['region:ap-south-1']), false);
  });
});

describe('monitor query parser: the rest of the grammar', () => {
  test('id, type, priority, muted, status, name and free text', () => {
    assert.equal(m(`id:${monitor().id}`), true);
    assert.equal(m('type:external'), true);
    assert.equal(m('type:apm'), false);
    assert.equal(m('priority:p2'), true);
    assert.equal(m('priority:2'), true);
    assert.equal(m('priority:1'), false);
    assert.equal(m('muted:false'), true);
    assert.equal(m('muted:true'), false);
    assert.equal(m('status:alert', monitor({ status: 'alert' })), true);
    assert.equal(m('status:"no data"', monitor({ status: 'no_data' })), true);
    assert.equal(m('status:ok'), true);
    assert.equal(m('checkout'), true);
    assert.equal(m('"error rate"'), true);
    assert.equal(m('latency'), false);
    assert.equal(m('name:Checkout*'), true);
  });

  test('wildcards, negation with a leading minus, OR, parentheses and implicit AND', () => {
    assert.equal(m('service:transaction-*'), true);
    assert.equal(m('service:*-backend env:prod'), true);
    assert.equal(m('-env:prod'), false);
    assert.equal(m('-env:staging service:transaction-backend'), true);
    assert.equal(m('env:staging OR team:payment'), true);
    assert.equal(m('(env:staging OR env:dev) team:payment'), false);
    assert.equal(m('NOT (env:staging OR env:dev)'), true);
    assert.equal(m('a-b'), false, 'a dash inside a word does not negate');
  });

  test('a bare key matches any value of it', () => {
    assert.equal(m('tag:team'), true);
    assert.equal(m('tag:owner'), false);
  });

  test('groups are normalized: sorted, trimmed, "*" for none', () => {
    assert.equal(normalizeGroup(' region:b , host:a '), 'host:a,region:b');
    assert.equal(normalizeGroup(undefined), '*');
    assert.equal(normalizeGroup(''), '*');
  });
});

describe('malformed queries are refused with their position', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty query at column 1/],
    ['service:', /missing value after 'service:' at column 9/],
    ['(service:a', /missing '\)' for '\(' opened at column 1/],
    ['service:a)', /unmatched '\)' at column 10/],
    ['service:"abc', /unterminated quoted value at column 9/],
    ['service:a AND', /expected a term after 'AND' at column 14/],
    ['OR service:a', /'OR' needs a term on each side at column 1/],
    ['service:a OR OR b', /expected a term after 'OR' at column 14/],
    ['()', /empty parentheses at column 2/],
    [':a', /':' without a key before it at column 1/],
    ['NOT', /expected a term after 'NOT' at column 4/],
    ['group:()', /empty value list for 'group' at column 7/],
  ];
  for (const [q, message] of cases) {
    test(JSON.stringify(q), () => {
      assert.throws(
        () => parseMonitorQuery(q),
        (err: unknown) => {
          assert.ok(err instanceof MonitorQueryError, String(err));
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }
});

describe('wildcards', () => {
  test('match like globs, case-insensitively', async () => {
    const { like } = await import('../src/domain/monitorQuery.ts');
    assert.equal(like('Checkout-API', 'check*api'), true);
    assert.equal(like('checkout', '*'), true);
    assert.equal(like('checkout', 'c*k*t'), true);
    assert.equal(like('checkout', 'c*t*t'), false);
    assert.equal(like('checkout', 'c*z'), false);
    assert.equal(like('', '*'), true);
    assert.equal(like('abc', 'a**c'), true);
  });

  test('many stars against a long name stay linear (a backtracking regex took seconds)', async () => {
    const { like } = await import('../src/domain/monitorQuery.ts');
    const name = 'a'.repeat(5000);
    // Not a timing assertion: a regex here would not return within the test's lifetime.
    assert.equal(like(name, `${'*a'.repeat(200)}*zz`), false);
    assert.equal(m('name:*******zz', monitor({ name: 'x'.repeat(55) })), false);
  });
});
