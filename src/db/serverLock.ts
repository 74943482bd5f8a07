// One Tollgate server per SQLite file. Two servers on one file both drive the same
// evaluations, lose writes to `database is locked`, and neither sees the other's events.
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';

/** A database a server must not start on; `tollgate serve` prints the message and exits 2. */
export class StorageStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageStartError';
  }
}

export interface ServerLock {
  readonly path: string;
  /**
   * False once the lock file was deleted or replaced (someone clearing a "stale" lock): a
   * second server may then lock a new file and open the same database.
   */
  intact(): boolean;
  release(): void;
}

const NOTE_MARK = 'tollgate-lock-holder:';

/** Lock files this process holds: another acquire here must not even open them (see below). */
const heldHere = new Map<string, string>();

/**
 * Takes `<db>.lock` for the life of this process, or throws a StorageStartError naming the
 * holder. The lock is SQLite's own (a POSIX lock, `locking_mode=EXCLUSIVE` after a write),
 * which the kernel drops when its process dies: kill -9 leaves no stale lock, and no pid has
 * to be checked. The lock file is never deleted: a server that deleted it on exit could leave
 * a starting one locking an unlinked file while a third creates a new one.
 *
 * Only servers take it: `tollgate keys` and `tollgate migrate` work on the file beside a
 * running server (short transactions, behind the busy timeout).
 */
export function acquireServerLock(dbPath: string, now = new Date()): ServerLock {
  // The file's real path: two spellings of one file (a symlink to it or to its directory, ..)
  // are one lock, as SQLite follows symlinks to the same file and -wal.
  const path = `${realFilePath(dbPath)}.lock`;
  const holder = heldHere.get(path);
  // Not opened again in this process: closing any descriptor of a file drops every POSIX lock
  // the process holds on it, so even reading the holder's note would release the lock.
  if (holder) throw new StorageStartError(refusal(dbPath, path, holder));
  let lock: Database.Database;
  try {
    lock = new Database(path, { timeout: 0 });
  } catch (err) {
    throw new StorageStartError(`cannot open the lock file ${path} beside the database: ${(err as Error).message}`);
  }
  try {
    lock.pragma('locking_mode = EXCLUSIVE');
    // A previous holder's note is zeroed when replaced, so the byte scan below finds only the current one.
    lock.pragma('secure_delete = ON');
    lock.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    lock.close();
    const code = (err as { code?: string }).code;
    if (code === 'SQLITE_BUSY') throw new StorageStartError(refusal(dbPath, path, noteOf(path)));
    throw new StorageStartError(`cannot lock ${path} (${code ?? 'error'}: ${(err as Error).message}); if it is damaged, remove it while no Tollgate server runs`);
  }
  const note = `pid ${process.pid} on ${hostname()}, started ${now.toISOString()}`;
  try {
    lock.exec('CREATE TABLE IF NOT EXISTS holder (note TEXT NOT NULL)');
    lock.exec('DELETE FROM holder');
    lock.prepare('INSERT INTO holder (note) VALUES (?)').run(`${NOTE_MARK}${note}\n`);
    // In EXCLUSIVE locking mode the lock outlives the commit, until the connection closes.
    lock.exec('COMMIT');
  } catch (err) {
    lock.close();
    throw new StorageStartError(`cannot write the lock file ${path} (${(err as Error).message}); if it is damaged, remove it while no Tollgate server runs`);
  }
  heldHere.set(path, note);
  const held = fileIdentity(path);
  return {
    path,
    intact: () => lock.open && fileIdentity(path) === held,
    release() {
      if (!lock.open) return;
      lock.close();
      heldHere.delete(path);
    },
  };
}

function fileIdentity(path: string): string | null {
  try {
    const s = statSync(path);
    return `${s.dev}:${s.ino}`;
  } catch {
    return null;
  }
}

/** The database file's real path, or, before it exists, its real directory's and its name. */
function realFilePath(dbPath: string): string {
  try {
    return realpathSync(resolve(dbPath));
  } catch {
    return join(realpathSync(dirname(resolve(dbPath))), basename(dbPath));
  }
}

function refusal(dbPath: string, lockPath: string, holder: string | undefined): string {
  return (
    `another Tollgate server (${holder ?? 'pid unknown'}) is using the database ${resolve(dbPath)}: it holds ${lockPath}. ` +
    'Stop it first, or start this one on another file (--db or TOLLGATE_DB).'
  );
}

/**
 * The holder's note, read from the file's bytes: SQLite cannot read a database another process
 * holds exclusively, but the lock is advisory and the committed note sits in the file as text.
 */
function noteOf(lockPath: string): string | undefined {
  try {
    const text = readFileSync(lockPath).toString('latin1');
    const at = text.lastIndexOf(NOTE_MARK);
    if (at < 0) return undefined;
    const note = /^(pid \d+ on [^\n\0]{1,300})\n/.exec(text.slice(at + NOTE_MARK.length))?.[1];
    return note;
  } catch {
    return undefined;
  }
}
