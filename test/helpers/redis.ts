import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import type { TestContext } from 'node:test';

/** The Redis the integration tests use (CI starts one there). */
export const REDIS_URL = 'redis://127.0.0.1:6379';

let answering: Promise<boolean> | undefined;

/** Whether something answers PING with PONG at 127.0.0.1:6379; asked once per process. */
function redisAnswers(): Promise<boolean> {
  answering ??= new Promise((resolve) => {
    const socket = connect(6379, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
  return answering;
}

/**
 * Skips the test when no Redis answers at 127.0.0.1:6379, unless TOLLGATE_REQUIRE_INTEGRATION=1
 * (as in CI), where a missing Redis fails it instead, as skipWithout does for programs.
 * Returns true when it skipped: `if (await skipWithoutRedis(t)) return;`.
 */
export async function skipWithoutRedis(t: TestContext): Promise<boolean> {
  if (await redisAnswers()) return false;
  if (process.env.TOLLGATE_REQUIRE_INTEGRATION === '1') throw new Error('TOLLGATE_REQUIRE_INTEGRATION=1 but no Redis answers at 127.0.0.1:6379');
  t.skip('no Redis at 127.0.0.1:6379');
  return true;
}

/** A channel prefix no other test (nor a server on the same Redis) uses; pub/sub leaves no keys to remove. */
export const redisChannelPrefix = () => `tollgate-test:${randomUUID()}`;
