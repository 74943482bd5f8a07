import { useGraphQlJit } from '@envelop/graphql-jit';
import {
  type DocumentNode,
  GraphQLError,
  type GraphQLInputType,
  type GraphQLNamedType,
  type GraphQLSchema,
  getNamedType,
  getOperationAST,
  getVariableValues,
  isInputObjectType,
  isInterfaceType,
  isObjectType,
  isUnionType,
  Kind,
  type Source,
  visit,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';

/** A document is compiled on its second execution: one-off queries never pay the compiler. */
const RUNS_BEFORE_COMPILING = 1;
/**
 * Compilations per second at most, for the whole server: a client sending each of many
 * distinct documents twice cannot keep the compiler (milliseconds per document) busy; past
 * it, documents run on the standard executor and are compiled on a later run.
 */
const MAX_COMPILATIONS_PER_SECOND = 20;

/**
 * Whether an argument of a field reachable from Query takes a @oneOf input (directly or
 * nested). graphql-jit does not enforce @oneOf ("exactly one field") when it coerces inputs,
 * so the compiled path is only for a schema whose queries take none.
 */
export function queriesTakeOneOf(schema: GraphQLSchema): boolean {
  const seenOutput = new Set<string>();
  const seenInput = new Set<string>();
  const inputHasOneOf = (type: GraphQLInputType): boolean => {
    const named = getNamedType(type);
    if (!isInputObjectType(named) || seenInput.has(named.name)) return false;
    seenInput.add(named.name);
    return named.isOneOf || Object.values(named.getFields()).some((f) => inputHasOneOf(f.type));
  };
  const visit = (type: GraphQLNamedType | undefined | null): boolean => {
    if (!type || seenOutput.has(type.name)) return false;
    seenOutput.add(type.name);
    if (isUnionType(type)) return type.getTypes().some(visit);
    if (!isObjectType(type) && !isInterfaceType(type)) return false;
    return Object.values(type.getFields()).some((f) => f.args.some((a) => inputHasOneOf(a.type)) || visit(getNamedType(f.type)));
  };
  return visit(schema.getQueryType());
}

const conditionVariablesOf = new WeakMap<DocumentNode, string[]>();
/** The variables a document passes to @include(if:) or @skip(if:), found once per document. */
function conditionVariables(document: DocumentNode): string[] {
  let names = conditionVariablesOf.get(document);
  if (!names) {
    const found = new Set<string>();
    visit(document, {
      Directive(node) {
        if (node.name.value !== 'include' && node.name.value !== 'skip') return;
        for (const arg of node.arguments ?? []) if (arg.value.kind === Kind.VARIABLE) found.add(arg.value.name.value);
      },
    });
    conditionVariablesOf.set(document, (names = [...found]));
  }
  return names;
}

/**
 * Queries run as JavaScript compiled for their document (graphql-jit) from their second
 * execution on: the same resolvers (authorization included, as the scope-auth plugin wraps
 * them), without the standard executor's per-field interpretation. Mutations and
 * subscriptions, and everything if the schema's queries took a @oneOf input, keep the
 * standard executor. test/cost.test.ts runs a corpus of reads both ways.
 */
export function useCompiledQueries(schema: GraphQLSchema): Plugin {
  if (queriesTakeOneOf(schema)) return {};
  const runs = new WeakMap<DocumentNode, number>();
  const compiled = new WeakSet<DocumentNode>();
  let second = 0;
  let compiledThisSecond = 0;
  const jit = useGraphQlJit(
    {},
    {
      enableIf: ({ document, operationName, variableValues }) => {
        // @envelop/graphql-jit keeps one compiled operation per document, whatever the
        // operationName: documents of several operations keep the standard executor.
        const operations = document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
        const operation = getOperationAST(document, operationName);
        if (operations.length !== 1 || operation?.operation !== 'query') return false;
        // Variables graphql-js refuses are refused by the standard executor, in its words and
        // with its 400 (graphql-jit words them otherwise and answers 200).
        if (operation.variableDefinitions?.length && getVariableValues(schema, operation.variableDefinitions, variableValues ?? {}).errors) return false;
        // A variable given null may reach @include/@skip's Boolean!, which graphql-js refuses and
        // graphql-jit reads as false (the field silently left out).
        if (variableValues && conditionVariables(document).some((name) => (variableValues as Record<string, unknown>)[name] === null)) return false;
        if (compiled.has(document)) return true;
        const seen = runs.get(document) ?? 0;
        if (seen < RUNS_BEFORE_COMPILING) {
          runs.set(document, seen + 1);
          return false;
        }
        const now = Math.floor(Date.now() / 1000);
        if (now !== second) [second, compiledThisSecond] = [now, 0];
        if (compiledThisSecond >= MAX_COMPILATIONS_PER_SECOND) return false;
        compiledThisSecond++;
        compiled.add(document);
        return true;
      },
    },
  ) as Plugin;
  return {
    onExecute(payload) {
      jit.onExecute!(payload as never);
      const source = payload.args.document.loc?.source;
      return {
        onExecuteDone: ({ result, setResult }) => {
          if (!source || !('errors' in result) || !result.errors?.some((e) => !e.nodes && e.locations)) return;
          setResult({ ...result, errors: result.errors.map((e) => (e.nodes || !e.locations ? e : withSourcePositions(e, source))) });
        },
      };
    },
  };
}

/**
 * graphql-jit's errors carry their locations but not the nodes they came from, and yoga
 * rebuilds every error from its nodes or source positions when it serializes: they lost their
 * locations. The same error, located by its positions in the document.
 */
function withSourcePositions(error: GraphQLError, source: Source): GraphQLError {
  const lineStarts = [0];
  for (let i = 0; i < source.body.length; i++) if (source.body[i] === '\n') lineStarts.push(i + 1);
  return new GraphQLError(error.message, {
    source,
    positions: error.locations!.map((l) => (lineStarts[l.line - 1] ?? 0) + l.column - 1),
    path: error.path,
    originalError: error.originalError ?? internalCause(error),
    extensions: error.extensions,
  });
}

/** Errors graphql-js too raises bare (no original error) while executing: the same answer both ways. */
const BARE_IN_GRAPHQL_JS = /^(Cannot return null for non-nullable field|Expected Iterable|Abstract type|Runtime Object type)/;

/**
 * graphql-jit keeps only the message of what a serializer threw (a stored value outside an
 * enum, a scalar that cannot serialize): that is a fault of ours, which graphql-js reports with
 * its cause and maskError hides ('Unexpected error.', INTERNAL_SERVER_ERROR, logged). Bare, it
 * read as a client mistake: BAD_USER_INPUT with the internal message.
 */
function internalCause(error: GraphQLError): Error | undefined {
  if (error.extensions?.code !== undefined || BARE_IN_GRAPHQL_JS.test(error.message)) return undefined;
  return new Error(error.message);
}
