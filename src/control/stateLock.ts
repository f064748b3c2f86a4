// The state directory's owner lock (stateDir/lock): the daemon holds it for its lifetime, a CLI
// command with no daemon running holds it while it acts on the files itself. Node has no
// flock, so it is a PID file: created atomically with its content (written to a temp file,
// then hard-linked into place, so it is never seen empty) and judged by its owner's liveness
// (`kill(pid, 0)` plus the process start time, so a reused PID does not count). A lock whose
// owner is gone is taken over at once.
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempPathFor, unlinkQuiet } from '../fs/safeWrite.js';

export type LockRole = 'daemon' | 'cli';

export interface LockOwner {
  pid: number;
  role: LockRole;
  /** /proc/PID/stat start time (clock ticks since boot), when the system has /proc. */
  procStart?: string;
  since: string;
}

export class StateLockedError extends Error {
  constructor(
    readonly owner: LockOwner,
    readonly file: string,
  ) {
    super(
      owner.role === 'daemon'
        ? `another xoauth2-bridge daemon (PID ${owner.pid}) owns the state directory (${file}); stop it first`
        : `the state directory is locked by xoauth2-bridge PID ${owner.pid} (a CLI command, since ${owner.since}); try again when it has finished`,
    );
    this.name = 'StateLockedError';
  }
}

export function lockPath(stateDir: string): string {
  return join(stateDir, 'lock');
}

function procStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime), counted after the command name, which may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Locks this process holds, by file: a stale file naming our own PID (a restarted container's PID 1) is not ours. */
const held = new Set<string>();

/** The owner named in the lock file if it is alive; null when the lock is free or stale. */
export async function lockOwner(stateDir: string): Promise<LockOwner | null> {
  const file = lockPath(stateDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return liveOwner(file, text);
}

function liveOwner(file: string, text: string): LockOwner | null {
  let o: LockOwner;
  try {
    o = JSON.parse(text) as LockOwner;
  } catch {
    return null; // empty or garbage: nobody owns it (never written that way by us)
  }
  if (!Number.isInteger(o?.pid) || o.pid <= 0) return null;
  if (o.pid === process.pid) return held.has(file) ? o : null;
  try {
    process.kill(o.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return null;
  }
  const now = procStart(o.pid);
  if (o.procStart && now && now !== o.procStart) return null; // the PID was reused
  return o;
}

export interface StateLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes the lock, waiting up to `waitMs` for a CLI holder (never for a daemon: a second daemon
 * or a CLI write next to a running daemon is refused at once with StateLockedError).
 */
export async function acquireStateLock(stateDir: string, role: LockRole, opts: { waitMs?: number } = {}): Promise<StateLock> {
  const file = lockPath(stateDir);
  const me: LockOwner = { pid: process.pid, role, procStart: procStart(process.pid), since: new Date().toISOString() };
  const deadline = Date.now() + (opts.waitMs ?? 10_000);
  const tmp = tempPathFor(file);
  try {
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    // Written in full before it becomes the lock: a full disk fails here, leaving no lock behind.
    await writeFile(tmp, JSON.stringify(me) + '\n', { mode: 0o600 });
    for (;;) {
      try {
        await link(tmp, file);
        held.add(file);
        return {
          file,
          release: async () => {
            held.delete(file);
            try {
              const o = JSON.parse(await readFile(file, 'utf8')) as LockOwner;
              if (o.pid === me.pid && o.since === me.since) await unlinkQuiet(file);
            } catch {
              /* already gone */
            }
          },
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      let text = '';
      try {
        text = await readFile(file, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      const owner = liveOwner(file, text);
      if (!owner) {
        // Nobody owns it: take it over at once (only if it is still the file we judged).
        const again = await readFile(file, 'utf8').catch(() => null);
        if (again === text) await unlink(file).catch(() => {});
        continue;
      }
      if (owner.role === 'daemon' || Date.now() >= deadline) throw new StateLockedError(owner, file);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await unlinkQuiet(tmp).catch(() => {});
  }
}
