import { startServer } from './helpers.ts';
const s = await startServer({ mode: 'production' });
for (let i = 0; i < 20; i++) await s.gql('mutation($input: CreateGateInput!) { createGate(input: $input) { id } }', { input: { service: `b${i}`, env: 'prod', rules: [1,2,3,4,5].map(r => ({ name: `r${r}`, options: { monitor: { query: 'a' } } })) } });
const h = { 'content-type': 'application/json', authorization: 'Bearer test-admin-key-0123456789abcdefghij' };
async function time(label: string, query: string, n = 600) {
  const body = JSON.stringify({ query });
  const f = () => fetch(s.graphqlUrl, { method: 'POST', headers: h, body }).then(r => r.text());
  for (let i = 0; i < 100; i++) await f();
  const cpu0 = process.cpuUsage(); const t = performance.now(); for (let i = 0; i < n; i++) await f(); const ms = (performance.now() - t) / n;
  const cpu = process.cpuUsage(cpu0); console.log(label.padEnd(12), ms.toFixed(3), 'ms wall', ((cpu.user + cpu.system) / 1000 / n).toFixed(3), 'ms cpu');
}
const which = process.argv[2] ?? 'all';
await time('typename', '{ __typename }');
await time('gates svc', '{ gates(first: 20) { edges { node { service } } } }');
await time('gates full', '{ gates(first: 20) { edges { node { service env identifier rules { name dryRun } } } } }');
await s.stop();
