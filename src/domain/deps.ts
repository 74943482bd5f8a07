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
}
