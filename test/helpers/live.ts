import type { Client, FormattedExecutionResult } from 'graphql-ws';
import type { TestServer } from './server.ts';

type ExecutionResult<T> = FormattedExecutionResult<T, unknown>;

/** Runs one operation over a graphql-ws client and returns its first result. */
export function wsOnce<T = any>(client: Client, query: string, variables?: Record<string, unknown>): Promise<ExecutionResult<T>> {
  return new Promise((resolve, reject) => {
    let done = false;
    const dispose = client.subscribe<T>(
      { query, variables },
      {
        next: (value) => {
          if (!done) {
            done = true;
            resolve(value);
            dispose();
          }
        },
        error: (err) => {
          if (done) return;
          done = true;
          // graphql-ws reports operation errors as an array of GraphQL errors.
          if (Array.isArray(err)) resolve({ errors: err } as ExecutionResult<T>);
          else reject(err);
        },
        complete: () => {
          if (!done) reject(new Error('completed without a result'));
        },
      },
    );
  });
}

/** A queue over a subscription: `next()` waits for the following event. */
export function subscribeQueue<T = any>(client: Client, query: string, variables?: Record<string, unknown>) {
  const values: ExecutionResult<T>[] = [];
  const waiters: Array<(v: ExecutionResult<T>) => void> = [];
  let failure: unknown;
  const dispose = client.subscribe<T>(
    { query, variables },
    {
      next: (value) => {
        const w = waiters.shift();
        if (w) w(value);
        else values.push(value);
      },
      error: (err) => {
        failure = err;
        const w = waiters.shift();
        if (w) w({ errors: Array.isArray(err) ? err : [err] } as ExecutionResult<T>);
      },
      complete: () => {},
    },
  );
  return {
    next(timeoutMs = 5000): Promise<ExecutionResult<T>> {
      const v = values.shift();
      if (v) return Promise.resolve(v);
      if (failure) return Promise.resolve({ errors: Array.isArray(failure) ? failure : [failure] } as ExecutionResult<T>);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no event within ${timeoutMs} ms`)), timeoutMs);
        waiters.push((value) => {
          clearTimeout(timer);
          resolve(value);
        });
      });
    },
    dispose,
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function wsOperations(s: TestServer): Promise<number> {
  const { text } = await s.request('GET', '/metrics');
  return Number(/^tollgate_ws_operations (\S+)$/m.exec(text)?.[1] ?? 0);
}

/**
 * A subscription that is running on the server before this resolves (the server's count of
 * WebSocket operations has grown), so an event published next cannot be missed on a slow machine.
 */
export async function subscribeLive<T = any>(s: TestServer, client: Client, query: string, variables?: Record<string, unknown>) {
  const before = await wsOperations(s);
  const queue = subscribeQueue<T>(client, query, variables);
  for (let i = 0; i < 200 && (await wsOperations(s)) <= before; i++) await sleep(25);
  await sleep(25); // from the operation's start to its listener on the bus
  return queue;
}
