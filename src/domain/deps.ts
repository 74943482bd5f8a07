import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Db } from '../db/client.ts';
import type { RuleType } from '../db/schema.ts';
import type { Events } from './events.ts';

/** Where a rule's window lies from the moment it starts. */
export interface RuleWindow {
  /** The start plus the warmup: before it, the rule only waits. */
  windowStartsAt: Date;
  windowEndsAt: Date;
  /** The first check. */
  nextCheckAt: Date;
}

/** What domain functions need from the outside world, passed explicitly. */
export interface Deps {
  db: Db;
  events: Events;
  log: Logger;
  config: Config;
  now: () => Date;
  /** Where users reach this Tollgate, for links in answers (TOLLGATE_PUBLIC_URL, else the listen address). */
  baseUrl: () => string;
  /** This process's name in evaluation leases (TOLLGATE_NODE_ID, else the host name). */
  nodeId: string;
  /**
   * The window a rule of `type` started at `start` runs over, as the engine's runner for the
   * type plans it; undefined for a type this version cannot evaluate. Handed down by whoever
   * builds Deps (the engine's `planWindow`): the domain does not import the engine.
   */
  planWindow: (type: RuleType, options: Record<string, unknown>, start: Date) => RuleWindow | undefined;
}
