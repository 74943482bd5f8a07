// The storage suites again, each test server on a throwaway PostgreSQL database
// (TOLLGATE_TEST_STORE=pg): one repository, two stores, the same answers. Locally without
// PostgreSQL this says so and passes; in CI (TOLLGATE_REQUIRE_INTEGRATION=1) it fails.
import { spawnSync } from 'node:child_process';
import { pgAvailable } from './helpers/pg.ts';

/**
 * Suites that exercise storage through a server, each repository module at least once; the
 * statistical suites (fdd, fddPrimaryTags), backtests, metric rules and leaks also pass on
 * PostgreSQL (`TOLLGATE_TEST_STORE=pg node --import tsx --test test/<suite>.test.ts`) but are
 * left out of CI's second pass to keep the whole run well under 30 minutes.
 */
const SUITES = [
  'gates',
  'evaluations',
  'keys',
  'auth',
  'rest',
  'restHistory',
  'hooks',
  'live',
  'monitorRule',
  'overrides',
  'freezeRule',
  'webhookRule',
  'otlp',
  'explorerApi',
  'housekeeping',
  'rateLimit',
  'notifications',
];

if (!(await pgAvailable())) {
  if (process.env.TOLLGATE_REQUIRE_INTEGRATION === '1') {
    console.error('PostgreSQL does not answer at 127.0.0.1:5432, and TOLLGATE_REQUIRE_INTEGRATION=1 requires it');
    process.exit(1);
  }
  console.log('# skipped: the storage suites on PostgreSQL (no server at 127.0.0.1:5432)');
  process.exit(0);
}
const files = SUITES.map((name) => `test/${name}.test.ts`);
const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', ...files], { stdio: 'inherit', env: { ...process.env, TOLLGATE_TEST_STORE: 'pg' } });
process.exit(run.status ?? 1);
