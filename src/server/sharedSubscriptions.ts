// One execution per event for every WebSocket subscriber of the same operation with the same
// visibility (issue 12, item 1). Subscribers are grouped by (document, operationName, variables,
// what their key may see); the group runs the subscription once, as a principal holding exactly
// that visibility, serializes each result once and writes it to every member's socket under the
// member's own operation id. Per member and event: a readiness check and a socket write.
import { createHash, randomUUID } from 'node:crypto';
import type { ExecutionResult, GraphQLSchema } from 'graphql';
import { isAsyncIterable } from 'graphql-yoga';
import type { Counter, Gauge } from 'prom-client';
import type { WebSocket } from 'ws';
import { MAX_PENDING_EVENTS, SlowSubscriberError } from '../domain/events.ts';
import type { KeyWatch } from '../domain/keyWatch.ts';
import { hasScope, type Principal, SCOPES } from '../domain/principal.ts';
import type { Logger } from '../log.ts';

/**
 * Whether the Subscription field's stream starts with the current state (then every change), as
 * the field declares it in its extensions (STARTS_WITH_STATE, src/graphql/builder.ts): a member
 * that joins a running group of such a field is first sent the newest result the group has sent,
 * which is that state as of the last change written, and then every later one, as a stream of
 * its own would. Read from the schema, so a new field cannot be left out of a list kept here.
 */
export function startsWithState(schema: GraphQLSchema, rootField: string): boolean {
  return schema.getSubscriptionType()?.getFields()[rootField]?.extensions.startsWithState === true;
}

/** The id under which every group's stream runs: no key has it, so no revocation ends a group. */
const GROUP_PRINCIPAL_ID = 'shared-subscription';

/**
 * Stands for the member's key name in a group's results (error messages name the key): each
 * member reads its own. Random per process, so no stored text can spell it.
 */
const NAME_TOKEN = `tollgate-key-name-${randomUUID()}`;

/** What decides what a key may see: its effective scopes and its environments, not which key it is. */
function visibilityOf(principal: Principal): { key: string; scopes: Set<(typeof SCOPES)[number]>; envs: readonly string[] | null } {
  const scopes = SCOPES.filter((s) => hasScope(principal, s));
  const envs = principal.envs === null ? null : [...new Set(principal.envs)].sort();
  return { key: JSON.stringify([scopes, envs]), scopes: new Set(scopes), envs };
}

interface Member {
  socket: WebSocket;
  /** `{"id":<id>,"type":"next","payload":`: the shared payload and `}` complete the message. */
  prefix: string;
  /** The key's name as it reads inside a JSON string. */
  nameJson: string;
  group: Group;
  /** Settles the one pending next() graphql-ws waits on: the member's stream ends. */
  settle?: (end: { done: true } | Error) => void;
  /** How the member's stream ended, once it has. */
  outcome?: { done: true } | Error;
}

/** A result serialized once for every member; `named` when it holds NAME_TOKEN (seen once, not per member). */
interface Payload {
  json: string;
  named: boolean;
}

interface Group {
  key: string;
  members: Set<Member>;
  /** The running stream, once started; null when it could not start (members run their own). */
  started: Promise<AsyncIterator<ExecutionResult> | null>;
  iterator?: AsyncIterator<ExecutionResult>;
  /** The newest payload sent, for a state subscription's late joiners. */
  last?: Payload;
  replaysLast: boolean;
  ended: boolean;
}

export interface ShareTicket {
  /** The group's key: hash of the operation and the visibility. */
  key: string;
  /** The operation's root field starts its stream with the current state: see startsWithState. */
  startsWithState: boolean;
  principal: Principal;
  socket: WebSocket;
  id: string;
  /** Starts the group's stream as the given principal (the operation through yoga's pipeline). */
  start: (groupPrincipal: Principal) => Promise<unknown>;
}

export interface SharedSubscriptionMetrics {
  /** Groups running now. */
  groups: Gauge;
  /** Results executed by groups (one per event per group, however many members). */
  executions: Counter;
}

export function createSharedSubscriptions({ log, keyWatch, metrics }: { log: Logger; keyWatch: KeyWatch; metrics: SharedSubscriptionMetrics }) {
  const groups = new Map<string, Group>();

  function groupKey(query: string, operationName: string | null | undefined, variables: unknown, principal: Principal): string {
    // Variables in another key order make another group: never a wrong one.
    return createHash('sha256')
      .update(query)
      .update('\0')
      .update(operationName ?? '')
      .update('\0')
      .update(JSON.stringify(variables ?? {}))
      .update('\0')
      .update(visibilityOf(principal).key)
      .digest('base64');
  }

  /** The result as graphql-ws writes it in a `next` payload. */
  function serialize(result: ExecutionResult): Payload {
    const { errors, ...rest } = result;
    const json = JSON.stringify(errors ? { ...rest, errors: errors.map((e) => e.toJSON()) } : rest);
    return { json, named: json.includes(NAME_TOKEN) };
  }

  function write(member: Member, payload: Payload): void {
    const socket = member.socket;
    // Closing (revoked key, a limit, the client leaving): nothing more is written to it.
    if (socket.readyState !== socket.OPEN) return;
    const message = `${member.prefix}${payload.named ? payload.json.replaceAll(NAME_TOKEN, member.nameJson) : payload.json}}`;
    // More than MAX_PENDING_EVENTS messages of this size waiting in the socket's buffer (past what
    // the kernel took): this member is cut off alone, the group goes on without waiting for it.
    if (socket.bufferedAmount > MAX_PENDING_EVENTS * message.length) return endMember(member, new SlowSubscriberError());
    socket.send(message);
  }

  function endMember(member: Member, end: { done: true } | Error): void {
    if (member.outcome) return;
    member.outcome = end;
    leave(member);
    member.settle?.(end);
  }

  function leave(member: Member): void {
    const group = member.group;
    if (!group.members.delete(member) || group.members.size > 0 || group.ended) return;
    // The last member left: the group's stream stops (its listeners go with it).
    endGroup(group);
    void group.iterator?.return?.().catch(() => {});
  }

  function endGroup(group: Group): void {
    if (group.ended) return;
    group.ended = true;
    if (groups.get(group.key) === group) groups.delete(group.key);
    metrics.groups.dec();
  }

  async function pump(group: Group, iterator: AsyncIterator<ExecutionResult>): Promise<void> {
    let failure: Error | undefined;
    try {
      for (let next = await iterator.next(); !next.done && !group.ended; next = await iterator.next()) {
        metrics.executions.inc();
        const payload = serialize(next.value);
        if (group.replaysLast) group.last = payload;
        for (const member of group.members) write(member, payload);
      }
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
      if (!(err instanceof SlowSubscriberError)) log.error({ err }, 'a shared subscription failed');
    }
    endGroup(group);
    for (const member of [...group.members]) endMember(member, failure ?? { done: true });
  }

  function startGroup(key: string, ticket: ShareTicket): Group {
    const { scopes, envs } = visibilityOf(ticket.principal);
    const principal: Principal = { id: GROUP_PRINCIPAL_ID, name: NAME_TOKEN, scopes, envs, expiresAt: null };
    const group: Group = { key, members: new Set(), replaysLast: ticket.startsWithState, ended: false, started: null! };
    groups.set(key, group);
    metrics.groups.inc();
    group.started = ticket.start(principal).then(
      (result) => {
        if (isAsyncIterable(result)) {
          const iterator = (result as AsyncIterable<ExecutionResult>)[Symbol.asyncIterator]();
          // Ended while starting: nothing may keep listening.
          if (group.ended) {
            void iterator.return?.().catch(() => {});
            return null;
          }
          group.iterator = iterator;
          void pump(group, iterator);
          return iterator;
        }
        // Refused (not found, forbidden...): each member asks again as itself, for its own answer.
        endGroup(group);
        return null;
      },
      (err) => {
        log.warn({ err }, 'a shared subscription could not start; its subscribers run their own');
        endGroup(group);
        return null;
      },
    );
    return group;
  }

  return {
    /** The ticket's group key, for an operation of this principal. */
    keyOf: groupKey,
    join,

    /** Groups running now (tests and metrics). */
    size: () => groups.size,
  };

  /**
   * Joins (or starts) the ticket's group: an iterator for graphql-ws that yields nothing (the
   * group writes to the socket) and ends with the member's stream; or null when the operation
   * is to run unshared (the group could not start, the key has just expired).
   */
  async function join(ticket: ShareTicket): Promise<AsyncGenerator<never, void, unknown> | null> {
    if (keyWatch.ended(ticket.principal)) return null;
    let group = groups.get(ticket.key);
    if (!group || group.ended) group = startGroup(ticket.key, ticket);
    const member: Member = {
      socket: ticket.socket,
      prefix: `{"id":${JSON.stringify(ticket.id)},"type":"next","payload":`,
      nameJson: JSON.stringify(ticket.principal.name).slice(1, -1),
      group,
    };
    group.members.add(member);
    if (group.last !== undefined) write(member, group.last);
    if (!(await group.started)) {
      group.members.delete(member);
      return null;
    }
    // Between the start and here the group may have ended (its stream finished): a fresh one.
    if (group.ended && !member.outcome) {
      group.members.delete(member);
      return join(ticket);
    }
    const ended = new Promise<{ done: true } | Error>((resolve) => {
      if (member.outcome) resolve(member.outcome);
      else member.settle = resolve;
    });
    const iterator: AsyncGenerator<never, void, unknown> = {
      async next() {
        const end = await ended;
        if (end instanceof Error) throw end;
        return { done: true, value: undefined };
      },
      async return() {
        endMember(member, { done: true });
        return { done: true, value: undefined };
      },
      async throw(err: unknown) {
        endMember(member, { done: true });
        throw err;
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    } as AsyncGenerator<never, void, unknown>;
    return iterator;
  }
}
