// `npm run bench`: every benchmark, one after the other (they must not share the CPU).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const all = [
  'gates-throughput.ts',
  'evaluation-latency.ts',
  'idle-evaluations.ts',
  'otlp-ingest.ts',
  'otlp-large.ts',
  'abuse.ts',
  'watchers.ts',
  'explorer.ts',
  'fanout.ts',
  'backtest.ts',
  'fdd-check.ts',
  'cluster.ts',
];
let failed = false;
for (const file of only.length > 0 ? all.filter((f) => only.some((o) => f.includes(o))) : all) {
  console.log(`\n== ${file}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, file)], { stdio: 'inherit' });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
