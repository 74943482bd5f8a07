// Gates as code: `tollgate apply -f gates.yaml` makes the server's gates match the file
// (idempotent; rules matched by name; --dry-run prints the plan; --prune deletes gates the
// file no longer has), and `tollgate export` writes the server's gates as such a file.
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { LineCounter, parseDocument, stringify, type YAMLError } from 'yaml';
import { z } from 'zod';
import { fieldPath } from '../domain/errors.ts';
import { createGateInputSchema } from '../domain/gates.ts';

export interface ServerFlags {
  url: string;
  apiKey?: string;
}

/**
 * A file rule names its options by type at the top: `monitor: {…}`, `faultyDeploymentDetection: {…}`,
 * `metric: {…}`, `webhook: {…}` or `freeze: {…}`.
 */
const fileSchema = z.object({
  gates: z.array(z.record(z.string(), z.unknown()), { message: 'gates must be a list' }),
});

type Desired = z.output<typeof createGateInputSchema>;

interface ExistingRule {
  id: string;
  name: string;
  dryRun: boolean;
  type: GraphqlRuleType;
  options: Record<string, unknown>;
}
interface ExistingGate {
  id: string;
  service: string;
  env: string;
  identifier: string;
  dryRun: boolean;
  onSourceError: 'FAIL' | 'PASS';
  rules: ExistingRule[];
}

class ApplyError extends Error {}

/** Each rule type: its GraphQL enum value and the key naming its options in a file (and in RuleOptionsInput). */
const TYPES = {
  monitor: { graphql: 'MONITOR', key: 'monitor' },
  faulty_deployment_detection: { graphql: 'FAULTY_DEPLOYMENT_DETECTION', key: 'faultyDeploymentDetection' },
  metric: { graphql: 'METRIC', key: 'metric' },
  webhook: { graphql: 'WEBHOOK', key: 'webhook' },
  freeze: { graphql: 'FREEZE', key: 'freeze' },
} as const;
type GraphqlRuleType = (typeof TYPES)[keyof typeof TYPES]['graphql'];
/** Options whose values are GraphQL enums: upper case in GraphQL, lower case in files. */
const ENUM_OPTIONS = new Set(['onInsufficientData', 'metric', 'mode']);

function client(flags: ServerFlags) {
  const key = flags.apiKey ?? process.env.TOLLGATE_API_KEY;
  if (!key) throw new ApplyError('an API key is required: --api-key or TOLLGATE_API_KEY');
  return async <T = any>(query: string, variables?: Record<string, unknown>): Promise<T> => {
    let res: Response;
    try {
      res = await fetch(`${flags.url.replace(/\/+$/, '')}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ query, variables }),
      });
    } catch (err) {
      throw new ApplyError(`cannot reach Tollgate at ${flags.url}: ${(err as Error & { cause?: { code?: string } }).cause?.code ?? (err as Error).message}`);
    }
    const body = (await res.json()) as { data?: T; errors?: Array<{ message: string }> };
    if (body.errors?.length) throw new ApplyError(body.errors.map((e) => e.message).join('; '));
    return body.data as T;
  };
}

const OPTIONS = `options { __typename
  ... on MonitorRuleOptions { query monitorIds { id groups } duration warmup failOnNoData failOnNoGroupsFound }
  ... on FddRuleOptions { duration excludedResources allowedResources alpha minRelativeIncrease newErrorTypes onInsufficientData }
  ... on MetricRuleOptions { query baselineQuery apm { metric resource window minRequests } bound margin duration warmup interval failureLimit consecutiveSuccessLimit failOnNoData }
  ... on WebhookRuleOptions { url headers { name } timeout retries mode interval duration }
  ... on FreezeRuleOptions { calendars { name cron duration timeZone } adHoc incidentQuery duration } }`;

async function existingGates(gql: ReturnType<typeof client>): Promise<ExistingGate[]> {
  const all: ExistingGate[] = [];
  let after: string | null = null;
  for (;;) {
    const page: any = await gql(
      `query($after: String) { gates(first: 50, after: $after) { edges { node { id service env identifier dryRun onSourceError rules { id name dryRun type ${OPTIONS} } } } pageInfo { hasNextPage endCursor } } }`,
      { after },
    );
    all.push(...page.gates.edges.map((e: any) => e.node));
    if (!page.gates.pageInfo.hasNextPage) return all;
    after = page.gates.pageInfo.endCursor;
  }
}

/**
 * Options as the file would write them: nulls dropped (at every level), enums in lower case,
 * a once webhook's interval and duration (0 on the server) left out, header values left out
 * (the server never shows them, so only header names can be compared: a changed value alone
 * is not seen as a change).
 */
function comparable(options: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const once = typeof options.mode === 'string' && options.mode.toLowerCase() === 'once';
  for (const [name, v] of Object.entries(options)) {
    if (name === '__typename' || v === null || v === undefined) continue;
    if (once && (name === 'interval' || name === 'duration')) continue;
    if (ENUM_OPTIONS.has(name) && typeof v === 'string') out[name] = v.toLowerCase();
    else if (name === 'headers' && Array.isArray(v)) out[name] = v.map((h: { name: string }) => ({ name: h.name }));
    else if (Array.isArray(v)) out[name] = v.map((x) => (x && typeof x === 'object' ? comparable(x as Record<string, unknown>) : x));
    else if (typeof v === 'object') out[name] = comparable(v as Record<string, unknown>);
    else out[name] = v;
  }
  return out;
}

/**
 * `valueFromEnv: NAME` in a webhook header reads the value from the environment, so the file
 * holds no secret. `where` names the line of a missing variable.
 */
function secretsFromEnv(
  rule: Record<string, unknown>,
  env: Record<string, string | undefined>,
  where: (path: PropertyKey[]) => string,
  path: PropertyKey[],
): Record<string, unknown> {
  const webhook = rule.webhook as { headers?: unknown } | undefined;
  if (!webhook || typeof webhook !== 'object' || !Array.isArray(webhook.headers)) return rule;
  const headers = webhook.headers.map((h: unknown, j: number) => {
    if (!h || typeof h !== 'object' || !('valueFromEnv' in h)) return h;
    const { valueFromEnv, ...rest } = h as { valueFromEnv: unknown };
    const value = typeof valueFromEnv === 'string' ? env[valueFromEnv] : undefined;
    if (value === undefined)
      throw new ApplyError(
        `${where([...path, 'webhook', 'headers', j, 'valueFromEnv'])}: valueFromEnv: ${typeof valueFromEnv === 'string' ? `${valueFromEnv} is not set in the environment` : 'must name an environment variable'}`,
      );
    return { ...rest, value };
  });
  return { ...rule, webhook: { ...webhook, headers } };
}

/**
 * `gates.yaml:4:5: Map keys must be unique.` and the lines around it with a caret: yaml's
 * own message ends in "at line 4, column 5:" before its excerpt, which read as a dangling colon.
 */
function yamlProblem(path: string, error: YAMLError): string {
  const [first = '', ...rest] = error.message.split('\n');
  const sentence = first.replace(/ at line \d+, column \d+:?\s*$/, '').replace(/[.:]?\s*$/, '.');
  const at = error.linePos?.[0];
  const excerpt = rest.filter((l) => l.trim() !== '').map((l) => `  ${l}`);
  return [`${path}${at ? `:${at.line}:${at.col}` : ''}: ${sentence}`, ...excerpt].join('\n');
}

/** Reads and validates the file; every problem names its line. */
export function readGatesFile(path: string, env: Record<string, string | undefined> = process.env): Desired[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ApplyError(`cannot read ${path}: ${(err as Error).message}`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true });
  if (doc.errors.length > 0) throw new ApplyError(yamlProblem(path, doc.errors[0]!));
  const where = (segments: readonly PropertyKey[]) => {
    for (let n = segments.length; n >= 0; n--) {
      const node = doc.getIn(segments.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
      if (node?.range) return `${path}:${lines.linePos(node.range[0]).line}`;
    }
    return path;
  };
  let json: unknown;
  try {
    json = doc.toJS();
  } catch (err) {
    // yaml refuses aliases that expand without bound (a "billion laughs" file) by throwing.
    throw new ApplyError(`${path}: ${(err as Error).message}`);
  }
  const file = fileSchema.safeParse(json);
  if (!file.success) throw new ApplyError(`${where(file.error.issues[0]!.path)}: ${file.error.issues[0]!.message}`);
  const seen = new Set<string>();
  return file.data.gates.map((raw, i) => {
    const rules = Array.isArray(raw.rules)
      ? raw.rules.map((r: Record<string, unknown>, j: number) => {
          const { name, dryRun, ...typed } = r ?? {};
          return { name, dryRun, options: secretsFromEnv(typed, env, where, ['gates', i, 'rules', j]) };
        })
      : raw.rules;
    const parsed = createGateInputSchema.safeParse({ ...raw, rules });
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      // Rule options sit one level up in the file (`monitor:` beside `name:`).
      const path = issue.path.filter((p, j) => !(p === 'options' && issue.path[j - 2] === 'rules'));
      throw new ApplyError(`${where(['gates', i, ...path])}: ${fieldPath(path, `gates[${i}]`)}: ${issue.message}`);
    }
    const key = `${parsed.data.service}/${parsed.data.env}/${parsed.data.identifier}`;
    if (seen.has(key)) throw new ApplyError(`${where(['gates', i])}: gate ${key} appears twice`);
    seen.add(key);
    return parsed.data;
  });
}

const typeName = (t: keyof typeof TYPES) => TYPES[t].graphql;

/** Enum options in upper case, as GraphQL takes them (a metric's apm.metric one level down). */
function upperEnums(options: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(options)) {
    if (ENUM_OPTIONS.has(name) && typeof v === 'string') out[name] = v.toUpperCase();
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) out[name] = upperEnums(v as Record<string, unknown>);
    else out[name] = v;
  }
  return out;
}

/** The rule's options as RuleOptionsInput takes them. */
const optionsInput = (r: Desired['rules'][number]) => ({ [TYPES[r.options.type].key]: upperEnums(r.options.options as Record<string, unknown>) });

/** Runs a command; its expected failures print one line and exit 1. */
async function reporting(run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof ApplyError) {
      console.error(`tollgate: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

export async function apply(flags: ServerFlags & { file: string; dryRun?: boolean; prune?: boolean }): Promise<number> {
  return reporting(async () => {
    const desired = readGatesFile(flags.file);
    const gql = client(flags);
    const existing = await existingGates(gql);
    const plan: Array<{ line: string; run: () => Promise<unknown> }> = [];
    const keyOf = (g: { service: string; env: string; identifier: string }) => `${g.service}/${g.env}/${g.identifier}`;
    const byKey = new Map(existing.map((g) => [keyOf(g), g]));

    for (const want of desired) {
      const have = byKey.get(keyOf(want));
      if (!have) {
        plan.push({
          line: `+ gate ${keyOf(want)} with ${want.rules.length} rule(s)`,
          run: async () =>
            gql('mutation($i: CreateGateInput!) { createGate(input: $i) { id } }', {
              i: { ...want, onSourceError: want.onSourceError.toUpperCase(), rules: want.rules.map((r) => ({ name: r.name, dryRun: r.dryRun, options: optionsInput(r) })) },
            }),
        });
        continue;
      }
      if (have.dryRun !== want.dryRun || have.onSourceError !== want.onSourceError.toUpperCase()) {
        plan.push({
          line: `~ gate ${keyOf(want)}: dryRun ${have.dryRun} → ${want.dryRun}, onSourceError ${have.onSourceError.toLowerCase()} → ${want.onSourceError}`,
          run: async () =>
            gql('mutation($id: ID!, $i: UpdateGateInput!) { updateGate(id: $id, input: $i) { id } }', {
              id: have.id,
              i: { dryRun: want.dryRun, onSourceError: want.onSourceError.toUpperCase() },
            }),
        });
      }
      const rules = new Map(have.rules.map((r) => [r.name, r]));
      for (const r of want.rules) {
        const old = rules.get(r.name);
        rules.delete(r.name);
        const add = async () =>
          gql('mutation($g: ID!, $i: RuleInput!) { createRule(gateId: $g, input: $i) { id } }', { g: have.id, i: { name: r.name, dryRun: r.dryRun, options: optionsInput(r) } });
        if (!old) {
          plan.push({ line: `+ rule ${keyOf(want)} "${r.name}"`, run: add });
        } else if (old.type !== typeName(r.options.type)) {
          plan.push({
            line: `± rule ${keyOf(want)} "${r.name}": type ${old.type.toLowerCase()} → ${r.options.type} (recreated)`,
            run: async () => (await gql('mutation($id: ID!) { deleteRule(id: $id) }', { id: old.id }), await add()),
          });
        } else if (old.dryRun !== r.dryRun || !isDeepStrictEqual(comparable(old.options), comparable(r.options.options))) {
          plan.push({
            line: `~ rule ${keyOf(want)} "${r.name}"`,
            run: async () =>
              gql('mutation($id: ID!, $i: UpdateRuleInput!) { updateRule(id: $id, input: $i) { id } }', { id: old.id, i: { dryRun: r.dryRun, options: optionsInput(r) } }),
          });
        }
      }
      for (const extra of rules.values())
        plan.push({ line: `- rule ${keyOf(want)} "${extra.name}"`, run: async () => gql('mutation($id: ID!) { deleteRule(id: $id) }', { id: extra.id }) });
    }
    const wanted = new Set(desired.map(keyOf));
    for (const g of existing.filter((g) => !wanted.has(keyOf(g)))) {
      if (flags.prune) plan.push({ line: `- gate ${keyOf(g)}`, run: async () => gql('mutation($id: ID!) { deleteGate(id: $id) }', { id: g.id }) });
    }

    if (plan.length === 0) {
      console.log('No changes: the server matches the file.');
      return 0;
    }
    for (const step of plan) {
      console.log(step.line);
      if (!flags.dryRun) await step.run();
    }
    console.log(flags.dryRun ? `${plan.length} change(s) planned (dry run; nothing changed).` : `${plan.length} change(s) applied.`);
    return 0;
  });
}

export async function exportGates(flags: ServerFlags): Promise<number> {
  return reporting(async () => {
    const gates = await existingGates(client(flags));
    const out = {
      gates: gates.map((g) => ({
        service: g.service,
        env: g.env,
        identifier: g.identifier,
        dryRun: g.dryRun,
        onSourceError: g.onSourceError.toLowerCase(),
        rules: g.rules.map((r) => ({ name: r.name, dryRun: r.dryRun, [Object.values(TYPES).find((t) => t.graphql === r.type)!.key]: comparable(r.options) })),
      })),
    };
    process.stdout.write(stringify(out));
    return 0;
  });
}
