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

/**
 * Running a prepared statement on either store: SQLite's answer at once (better-sqlite3 is
 * synchronous), PostgreSQL's when the server replies. Its `execute` returns the mapped rows.
 */
type Params = Record<string, unknown>;
type Executable = { execute(values?: Params): Promise<unknown> | unknown };
const onSqlite = (stmt: object): boolean => 'get' in stmt;

export async function allRows<R>(stmt: { all(values?: Params): R[] }, values?: Params): Promise<R[]> {
  return onSqlite(stmt) ? stmt.all(values) : ((await (stmt as unknown as Executable).execute(values)) as R[]);
}

export async function firstRow<R>(stmt: { get(values?: Params): R | undefined }, values?: Params): Promise<R | undefined> {
  return onSqlite(stmt) ? stmt.get(values) : ((await (stmt as unknown as Executable).execute(values)) as R[])[0];
}

export async function runStatement(stmt: { run(values?: Params): unknown }, values?: Params): Promise<void> {
  if (onSqlite(stmt)) stmt.run(values);
  else await (stmt as unknown as Executable).execute(values);
}
