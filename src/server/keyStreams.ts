import { Repeater } from '@repeaterjs/repeater';
import { type ExecutionResult, GraphQLError } from 'graphql';
import { isAsyncIterable, type Plugin } from 'graphql-yoga';
import type { KeyEnd, KeyWatch } from '../domain/keyWatch.ts';
import type { Principal } from '../domain/principal.ts';
import type { Context } from '../graphql/context.ts';

/** What a client reads when its key ends an operation or a stream. */
const keyEndedError = (end: KeyEnd) => new GraphQLError(end.message, { extensions: { code: 'UNAUTHENTICATED', reason: end.reason } });

/**
 * The stream, until the key that opened it is revoked or expires: then one last result saying
 * why, and the end. Returning it (a client leaving) stops the watch and returns the source.
 */
function untilKeyEnds<T>(source: AsyncIterable<T>, keyWatch: KeyWatch, principal: Principal): AsyncIterableIterator<T | ExecutionResult> {
  return new Repeater<T | ExecutionResult>(async (push, stop) => {
    const iterator = source[Symbol.asyncIterator]();
    const unwatch = keyWatch.watch(principal, (end) => {
      void push({ errors: [keyEndedError(end)] });
      stop();
    });
    void (async () => {
      try {
        for (let next = await iterator.next(); !next.done; next = await iterator.next()) await push(next.value);
        stop();
      } catch (err) {
        stop(err);
      }
    })();
    await stop;
    unwatch();
    // Ends the source's own listeners; a pending next() then resolves done and the pump above stops.
    await iterator.return?.().catch(() => {});
  });
}

/**
 * Every operation of a key that has expired is refused, and every stream an operation returns
 * (subscriptions over SSE and over WebSocket alike, as both run through yoga's pipeline) ends
 * when its key is revoked or expires.
 */
export function endStreamsWithTheirKey(keyWatch: KeyWatch): Plugin<Context> {
  const refuseEnded = (context: Context, setResult: (r: ExecutionResult) => void) => {
    const end = context.principal && keyWatch.ended(context.principal);
    if (end) setResult({ errors: [keyEndedError(end)] });
  };
  const bound = <R>(context: Context, result: R) => (isAsyncIterable(result) && context.principal ? untilKeyEnds(result, keyWatch, context.principal) : undefined);
  return {
    onExecute: ({ args, setResultAndStopExecution }) => {
      refuseEnded(args.contextValue, setResultAndStopExecution);
      return {
        onExecuteDone: ({ result, setResult }) => {
          const wrapped = bound(args.contextValue, result);
          if (wrapped) setResult(wrapped as typeof result);
        },
      };
    },
    onSubscribe: ({ args, setResultAndStopExecution }) => {
      refuseEnded(args.contextValue, setResultAndStopExecution);
      return {
        onSubscribeResult: ({ result, setResult }) => {
          const wrapped = bound(args.contextValue, result);
          if (wrapped) setResult(wrapped as typeof result);
        },
      };
    },
  };
}
