// The state directory's owner lock: the daemon holds it for its lifetime, a CLI command with no
// daemon running holds it while it acts on the files itself. The lock is held by the kernel, so
// it ends with its process (kill -9 included) and two processes can never both hold it: it is a
// listening socket in Linux's abstract unix namespace, named after the directory. bind() of a
// name that is in use fails (EADDRINUSE) atomically, and the kernel frees the name when the
// last descriptor closes. Node has no flock; this needs no native module.
//
// The name is `xoauth2-bridge-lock:DEV:INO:ID`: the directory's device and inode (a copy of the
// directory is another lock) and a random id kept in `stateDir/lock.id` (mode 0600, created
// once), so no other local user can compute the name and squat it to keep the daemon from
// starting. Abstract names live in the network namespace: a daemon and a CLI see each other's
// lock only when they share one (the systemd unit does not set PrivateNetwork; inside a
// container, run the CLI with `podman exec`/`docker exec`).
//
// The holder answers a connection on that name with its owner record (PID, role, since), which
// is how a refused contender names it. `stateDir/lock` keeps the same record as a PID file for
// people and tools; it is informational only: a leftover one means nothing.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { link, mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fsyncDir, safeWrite, tempPathFor, unlinkQuiet, writeAll } from '../fs/safeWrite.js';

export type LockRole = 'daemon' | 'cli';

export interface LockOwner {
  pid: number;
  role: LockRole;
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

/** The informational PID file (the lock itself is the abstract socket). */
export function lockPath(stateDir: string): string {
  return join(stateDir, 'lock');
}

/** The random part of the lock's name. */
export function lockIdPath(stateDir: string): string {
  return join(stateDir, 'lock.id');
}

const ID = /^[0-9a-f]{32}$/;
/** How long a contender waits for the holder to name itself. */
const ASK_TIMEOUT_MS = 5000;

/** The directory's lock id: read, or created once (written and synced in full before it appears). */
async function lockId(stateDir: string, create: boolean): Promise<string | null> {
  const file = lockIdPath(stateDir);
  for (;;) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!create) return null;
      const tmp = tempPathFor(file);
      try {
        const fh = await open(tmp, 'wx', 0o600);
        try {
          await writeAll(fh, Buffer.from(randomBytes(16).toString('hex') + '\n'));
          await fh.sync();
        } finally {
          await fh.close();
        }
        // link() never replaces: when two processes create it at once, one id wins and both read it.
        await link(tmp, file).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
        await fsyncDir(stateDir);
      } finally {
        await unlinkQuiet(tmp).catch(() => {});
      }
      continue;
    }
    const id = text.trim();
    if (!ID.test(id))
      throw new Error(
        `${file} is damaged (expected 32 hex digits); with no xoauth2-bridge daemon or command running on this stateDir, delete it and try again`,
      );
    return id;
  }
}

async function lockName(stateDir: string, create: boolean): Promise<string | null> {
  const id = await lockId(stateDir, create);
  if (!id) return null;
  const st = await stat(stateDir, { bigint: true });
  return `\0xoauth2-bridge-lock:${st.dev}:${st.ino}:${id}`;
}

/** Listens on `name`, or null when another process (or this one) holds it. */
function bind(name: string, me: LockOwner): Promise<{ server: Server; clients: Set<Socket> } | null> {
  return new Promise((resolve, reject) => {
    const clients = new Set<Socket>();
    const server = createServer((s) => {
      clients.add(s);
      s.on('close', () => clients.delete(s));
      s.on('error', () => {});
      s.end(JSON.stringify(me) + '\n');
    });
    server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(null) : reject(e)));
    server.listen(name, () => {
      server.unref(); // never keeps a process alive on its own
      resolve({ server, clients });
    });
  });
}

/** The holder's record, or null when nobody listens (released meanwhile). */
function ask(name: string): Promise<LockOwner | null> {
  return new Promise((resolve, reject) => {
    const s = connect(name);
    let buf = '';
    s.setEncoding('utf8');
    s.setTimeout(ASK_TIMEOUT_MS, () => s.destroy(new Error('the state lock holder did not name itself in time')));
    s.on('data', (c: string) => (buf += c));
    s.on('error', (e: NodeJS.ErrnoException) =>
      e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? resolve(null) : reject(e),
    );
    s.on('end', () => {
      try {
        const o = JSON.parse(buf) as LockOwner;
        if (Number.isInteger(o?.pid) && (o.role === 'daemon' || o.role === 'cli')) return resolve(o);
      } catch {
        /* below */
      }
      reject(new Error('the state lock holder answered something else than its owner record'));
    });
  });
}

/** The process holding the lock, or null when it is free. */
export async function lockOwner(stateDir: string): Promise<LockOwner | null> {
  const name = await lockName(stateDir, false);
  return name ? ask(name) : null;
}

export interface StateLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes the lock, waiting up to `waitMs` for a CLI holder (never for a daemon: a second daemon
 * or a CLI write next to a running daemon is refused at once with StateLockedError).
 */
export async function acquireStateLock(
  stateDir: string,
  role: LockRole,
  opts: { waitMs?: number } = {},
): Promise<StateLock> {
  const file = lockPath(stateDir);
  const me: LockOwner = { pid: process.pid, role, since: new Date().toISOString() };
  const deadline = Date.now() + (opts.waitMs ?? 10_000);
  await mkdir(stateDir, { recursive: true, mode: 0o750 }); // 0750: the group reaches control.sock (README)
  const name = (await lockName(stateDir, true))!;
  for (;;) {
    const held = await bind(name, me);
    if (held) {
      const close = () => {
        for (const c of held.clients) c.destroy();
        return new Promise<void>((r) => held.server.close(() => r()));
      };
      try {
        await safeWrite(file, JSON.stringify(me) + '\n', { fsync: false });
      } catch (e) {
        await close();
        throw e;
      }
      let released = false;
      return {
        file,
        release: async () => {
          if (released) return;
          released = true;
          // Removed while still held, so it is never the next owner's record.
          await unlinkQuiet(file).catch(() => {});
          await close();
        },
      };
    }
    const owner = await ask(name);
    if (!owner) continue; // released between our bind and our question
    if (owner.role === 'daemon' || Date.now() >= deadline) throw new StateLockedError(owner, file);
    await new Promise((r) => setTimeout(r, 50));
  }
}
