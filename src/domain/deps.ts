import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Db } from '../db/client.ts';
import type { Events } from './events.ts';

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
}
