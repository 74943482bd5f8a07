// `tollgate override <evaluation-id> --verdict pass|fail --reason "…"`: a person's verdict in
// place of the gate's, from a terminal (the same overrideEvaluation the explorer calls).
// Exit 0 when overridden; 1 with the server's reason (scope, environment, input) otherwise.

export interface OverrideFlags {
  verdict: string;
  reason: string;
  url: string;
  apiKey?: string;
}

const MUTATION = `mutation($id: ID!, $verdict: OverrideVerdict!, $reason: String!) {
  overrideEvaluation(id: $id, verdict: $verdict, reason: $reason) { reportedStatus evaluationUrl override { verdict by { name } replaced } }
}`;

export async function override(id: string, flags: OverrideFlags): Promise<number> {
  const key = flags.apiKey ?? process.env.TOLLGATE_API_KEY;
  if (!key) {
    console.error('Error: an API key with evaluations:override is needed (--api-key or TOLLGATE_API_KEY)');
    return 1;
  }
  const verdict = flags.verdict.toUpperCase();
  if (verdict !== 'PASS' && verdict !== 'FAIL') {
    console.error(`Error: --verdict must be pass or fail, not ${flags.verdict}`);
    return 1;
  }
  const base = flags.url.replace(/\/+$/, '');
  let res: Response;
  try {
    res = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ query: MUTATION, variables: { id, verdict, reason: flags.reason } }),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (err) {
    console.error(`Error: cannot reach Tollgate at ${base}: ${(err as Error).message}`);
    return 1;
  }
  const body = (await res.json().catch(() => null)) as {
    data?: { overrideEvaluation: { reportedStatus: string; evaluationUrl: string; override: { verdict: string; by: { name: string }; replaced: string } } } | null;
    errors?: Array<{ message: string; extensions?: { field?: string } }>;
  } | null;
  const error = body?.errors?.[0];
  if (error || !body?.data?.overrideEvaluation) {
    const field = error?.extensions?.field;
    console.error(`Error: ${field && !error.message.startsWith(field) ? `${field}: ` : ''}${error?.message ?? `Tollgate answered ${res.status}`}`);
    return 1;
  }
  const e = body.data.overrideEvaluation;
  console.log(`Overridden to ${e.override.verdict} by ${e.override.by.name} (the gate said ${e.override.replaced}): callers are now told ${e.reportedStatus}.`);
  console.log(`Details: ${e.evaluationUrl}`);
  return 0;
}
