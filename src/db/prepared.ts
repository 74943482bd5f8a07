/**
 * Statements on hot paths are prepared once per handle: building drizzle SQL and preparing it
 * again cost more than running it. A drizzle transaction is a new handle, so hot writes run
 * their prepared statements on the root handle inside `db.transaction` (same connection).
 */
const preparedByHandle = new WeakMap<object, Map<string, unknown>>();

export function prepared<T>(db: object, name: string, build: () => T): T {
  let map = preparedByHandle.get(db);
  if (!map) preparedByHandle.set(db, (map = new Map()));
  let stmt = map.get(name) as T | undefined;
  if (!stmt) map.set(name, (stmt = build()));
  return stmt;
}
