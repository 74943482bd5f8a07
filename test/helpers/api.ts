import type { TestServer } from './server.ts';

export const GATE_FIELDS = `id service env identifier dryRun onSourceError createdBy updatedBy createdAt updatedAt
  rules { id name type dryRun options { __typename
    ... on MonitorRuleOptions { query monitorIds { id groups } duration warmup failOnNoData failOnNoGroupsFound }
    ... on FddRuleOptions { duration excludedResources allowedResources alpha minRelativeIncrease newErrorTypes onInsufficientData } } }`;

export const CREATE_GATE = `mutation($input: CreateGateInput!) { createGate(input: $input) { ${GATE_FIELDS} } }`;

export const monitorRule = (name: string, options: Record<string, unknown> = {}) => ({
  name,
  options: { monitor: { query: 'service:checkout', ...options } },
});

export const fddRule = (name: string, options: Record<string, unknown> = {}) => ({
  name,
  options: { faultyDeploymentDetection: { ...options } },
});

export const EVALUATION_FIELDS = `id gateId service env identifier version primaryTag dryRun justInTime status reportedStatus
  startedAt decidedAt finishedAt evaluationUrl rerunOf revision
  rules { id ruleId name type dryRun status reason startedAt windowStartsAt windowEndsAt finishedAt
    evidence { matchedMonitors { id name groups } failingGroups { monitorId monitorName group state since url } } }`;

/** Monitors, states and evaluations through the public API, as a user would drive them. */
export function driver(s: TestServer) {
  const must = async (query: string, variables?: Record<string, unknown>) => {
    const r = await s.gql(query, variables);
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data;
  };
  return {
    async monitor(name: string, tags: string[], extra: Record<string, unknown> = {}): Promise<string> {
      const d = await must('mutation($i: CreateMonitorInput!) { createMonitor(input: $i) { id } }', { i: { name, type: 'EXTERNAL', tags, ...extra } });
      return d.createMonitor.id;
    },
    async report(monitorId: string, state: 'OK' | 'WARN' | 'ALERT' | 'NO_DATA', group?: string) {
      await must('mutation($i: ReportMonitorStateInput!) { reportMonitorState(input: $i) { id } }', { i: { monitorId, state, group } });
    },
    async evaluate(input: Record<string, unknown>) {
      return s.gql(`mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { ${EVALUATION_FIELDS} } }`, { i: input });
    },
    async get(id: string) {
      return (await must(`query($id: ID!) { evaluation(id: $id) { ${EVALUATION_FIELDS} } }`, { id })).evaluation;
    },
    /** Every snapshot a graphql-ws subscriber sees until the evaluation finishes. */
    async follow(id: string, timeoutMs = 15_000): Promise<any[]> {
      const client = s.ws();
      const seen: any[] = [];
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`evaluation ${id} did not finish within ${timeoutMs} ms: ${JSON.stringify(seen.at(-1))}`)), timeoutMs);
          client.subscribe<any>(
            { query: `subscription($id: ID!) { evaluationUpdated(id: $id) { ${EVALUATION_FIELDS} } }`, variables: { id } },
            {
              next: (v) => {
                if (v.errors) return reject(new Error(JSON.stringify(v.errors)));
                seen.push(v.data!.evaluationUpdated);
              },
              error: (e) => reject(e instanceof Error ? e : new Error(JSON.stringify(e))),
              complete: () => {
                clearTimeout(timer);
                resolve();
              },
            },
          );
        });
      } finally {
        await client.dispose();
      }
      return seen;
    },
  };
}

export const jitMonitor = (name: string, options: Record<string, unknown>, dryRun = false) => ({ name, dryRun, options: { monitor: options } });
