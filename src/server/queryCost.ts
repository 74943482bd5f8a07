import type { DocumentNode, ExecutionArgs } from 'graphql';
import { GraphQLError, getNamedType, getNullableType, isCompositeType, isListType } from 'graphql';
import { type ComplexityEstimatorArgs, getComplexity } from 'graphql-query-complexity';
import type { Plugin } from 'graphql-yoga';

/**
 * How much an operation may ask for, counted before it runs: every field selected costs 1 for
 * each time it would be resolved. A list multiplies what it selects by its length: `first` or
 * `last` when given (variables and defaults included), a connection's default page (20) when not,
 * and LIST_ESTIMATE for a list of objects with no such argument (a gate's rules, an evidence's
 * monitors). So `gates(first: 100)` costs 100 × one gate, and nested lists multiply.
 * Documented in docs/architecture.md ("What a query may cost").
 */
export const MAX_QUERY_COST = 1_500_000;
/** Pothos relay's default page size, which a connection without first/last gets. */
const DEFAULT_PAGE = 20;
/** What a list of objects without first/last is assumed to hold. */
const LIST_ESTIMATE = 10;
/**
 * Lists known to hold more than LIST_ESTIMATE with no argument to bound them: a PromQL
 * monitor has a group per series, with no cap; a backtest holds up to 100 deploys, each with
 * up to 50 rules (a configuration's limit).
 */
const LIST_ESTIMATES: Record<string, number> = { 'Monitor.groups': 1000, 'Backtest.deploys': 100, 'BacktestDeploy.rules': 50 };
/**
 * Fields that cost far more than their selection: each runs grouped SQL over up to 30 days of
 * evaluations (hundreds of ms at 100,000), so a handful of aliases of them is the most one
 * request may ask for.
 */
const FIXED_COSTS: Record<string, number> = {
  'Query.evaluationFacets': 200_000,
  'Query.evaluationInsights': 200_000,
  'Query.evaluationStats': 200_000,
};

/**
 * Fields of which only one kind resolves for a given object: a rule evaluation has one type,
 * so only that type's evidence is an object and only a monitor rule has monitor transitions;
 * the other kinds' fields answer null or [] (cost 1). An object selecting them costs its most
 * expensive kind, not the sum of all kinds (which counted a page of 100 evaluations with every
 * field as if each rule were of all five types at once).
 */
const ONE_KIND_OF: Record<string, Record<string, readonly string[]>> = {
  RuleEvaluation: {
    monitor: ['evidence', 'monitorTransitions'],
    faulty_deployment_detection: ['fddEvidence'],
    metric: ['metricEvidence'],
    webhook: ['webhookEvidence'],
    freeze: ['freezeEvidence'],
  },
};

/**
 * The costs of one-kind fields seen since the enclosing object's field was last weighed:
 * getComplexity weighs a field's whole selection (depth first) before the field itself, so
 * when a field returning RuleEvaluation is weighed, these are exactly its selection's.
 */
type Pending = Map<string, Map<string, number>>;

/** What the one-kind fields of `typeName` counted beyond the most expensive kind (0 without any). */
function excessOfKinds(typeName: string, pending: Pending): number {
  const kinds = ONE_KIND_OF[typeName];
  const seen = pending.get(typeName);
  if (!kinds || !seen?.size) return 0;
  pending.delete(typeName);
  let all = 0;
  for (const cost of seen.values()) all += cost;
  let most = 0;
  for (const fields of Object.values(kinds)) {
    // This kind's fields at their cost, every other kind's at 1 (null or empty).
    let kind = 0;
    for (const [name, cost] of seen) kind += fields.includes(name) ? cost : 1;
    most = Math.max(most, kind);
  }
  return all - most;
}

function costOfField({ field, type, args, childComplexity: selected, context }: ComplexityEstimatorArgs): number {
  // Introspection is answered from the schema in memory, bounded by depth and tokens; in
  // production it is off. GraphiQL's own introspection query must never be refused.
  if (field.name === '__schema' || field.name === '__type') return 0;
  const pending = (context as { pending: Pending }).pending;
  const childComplexity = selected - excessOfKinds(getNamedType(field.type).name, pending);
  const coordinate = `${type.name}.${field.name}`;
  const fixed = FIXED_COSTS[coordinate];
  if (fixed !== undefined) return fixed + childComplexity;
  const returned = getNullableType(field.type);
  const isConnection = getNamedType(field.type).name.endsWith('Connection');
  let items = 1;
  if (typeof args.first === 'number') items = args.first;
  else if (typeof args.last === 'number') items = args.last;
  else if (isConnection) items = DEFAULT_PAGE;
  // A connection's edges are its page, already counted at the connection.
  else if (isListType(returned) && isCompositeType(getNamedType(returned)) && !type.name.endsWith('Connection')) items = LIST_ESTIMATES[coordinate] ?? LIST_ESTIMATE;
  const cost = 1 + Math.max(0, items) * childComplexity;
  const kinds = ONE_KIND_OF[type.name];
  if (kinds && Object.values(kinds).some((fields) => fields.includes(field.name))) {
    // Aliases of one field add up (each resolves); kinds are compared once the object is weighed.
    const seen = pending.get(type.name) ?? new Map<string, number>();
    seen.set(field.name, (seen.get(field.name) ?? 0) + cost);
    pending.set(type.name, seen);
  }
  return cost;
}

/** The cost of an operation as the limit weighs it (throws what getComplexity throws). */
export function estimateCost(args: Pick<ExecutionArgs, 'schema' | 'document' | 'variableValues' | 'operationName'>): number {
  return getComplexity({
    schema: args.schema,
    query: args.document,
    variables: (args.variableValues ?? {}) as Record<string, unknown>,
    operationName: args.operationName ?? undefined,
    estimators: [costOfField],
    context: { pending: new Map() },
  });
}

/** The refusal, with what it cost and what it may cost: HTTP 400, and the same error over WebSocket. */
function tooCostly(cost: number | undefined, maxCost: number): GraphQLError {
  const found = cost === undefined ? 'too many fields to count' : `estimated cost ${cost}`;
  return new GraphQLError(
    `query too costly: ${found}, above the limit of ${maxCost}. Each field costs 1 per item it is resolved for; lists multiply by first/last (${DEFAULT_PAGE} for a connection without them, ${LIST_ESTIMATE} for other lists of objects): ask for smaller pages or fewer nested lists`,
    { extensions: { code: 'QUERY_TOO_COSTLY', ...(cost !== undefined && { cost }), maxCost, http: { status: 400 } } },
  );
}

/**
 * The operation's cost, or undefined when it cannot be computed because the variables are
 * wrong (execution then refuses them with its own error, before any resolver runs).
 * Throws the refusal when the document has more nodes than can be counted.
 */
function operationCost(args: ExecutionArgs, maxCost: number): number | undefined {
  try {
    return estimateCost(args);
  } catch (err) {
    if (err instanceof GraphQLError && /maximum allowed number of nodes/.test(err.message)) throw tooCostly(undefined, maxCost);
    return undefined;
  }
}

/**
 * Refuses an operation whose cost is above maxCost, before it runs, over HTTP and WebSocket
 * alike (both run through the same execute and subscribe). Variables are part of the cost
 * (`first: $n`), so it runs at execution rather than in validation, whose results yoga caches
 * per document. Costs are remembered per document and variables: a repeated read pays once.
 */
export function useQueryCostLimit(maxCost = MAX_QUERY_COST): Plugin {
  const costs = new WeakMap<DocumentNode, Map<string, number | undefined>>();
  const check = (args: ExecutionArgs): GraphQLError | undefined => {
    let byVariables = costs.get(args.document);
    if (!byVariables) costs.set(args.document, (byVariables = new Map()));
    const key = `${args.operationName ?? ''}|${JSON.stringify(args.variableValues ?? {})}`;
    let cost: number | undefined;
    if (byVariables.has(key)) cost = byVariables.get(key);
    else {
      try {
        cost = operationCost(args, maxCost);
      } catch (refusal) {
        return refusal as GraphQLError;
      }
      // Bounded: a client varying its variables must not grow the map without end.
      if (byVariables.size >= 100) byVariables.clear();
      byVariables.set(key, cost);
    }
    return cost !== undefined && cost > maxCost ? tooCostly(cost, maxCost) : undefined;
  };
  return {
    onExecute: ({ args, setResultAndStopExecution }) => {
      const refusal = check(args);
      if (refusal) setResultAndStopExecution({ errors: [refusal] });
    },
    onSubscribe: ({ args, setResultAndStopExecution }) => {
      const refusal = check(args);
      if (refusal) setResultAndStopExecution({ errors: [refusal] });
    },
  };
}
