/**
 * Statements on hot paths are prepared once per connection: building drizzle SQL and preparing
 * it again cost more than running it. A drizzle transaction is a new handle on the same
 * session (the same connection), so statements are kept per session and a transaction reuses
 * those of its database.
 */
const preparedBySession = new WeakMap<object, Map<string, unknown>>();

export function prepared<T>(db: object, name: string, build: () => T): T {
  const owner = (db as { session?: object }).session ?? db;
  let map = preparedBySession.get(owner);
  if (!map) preparedBySession.set(owner, (map = new Map()));
  let stmt = map.get(name) as T | undefined;
  if (!stmt) map.set(name, (stmt = build()));
  return stmt;
}
