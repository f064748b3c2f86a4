// The one way this program replaces a file durably: write a temp file beside it, fsync it,
// rename it over the target, fsync the directory. The spool, the token store, generated
// certificates and the rate-limit state all use it, so they share one crash guarantee: after
// a crash the target holds either the old or the new content, never a mix or nothing.
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface SafeWriteOptions {
  /** File mode of the new file (default 0600). */
  mode?: number;
  /** false skips every fsync: measurement only (bench), never a config key. */
  fsync?: boolean;
  /**
   * How to make the rename durable: default a plain directory fsync; the spool passes its
   * shared (group-committed) one; false when the caller syncs the directory itself later.
   */
  syncDir?: ((dir: string) => Promise<void>) | false;
  /** Runs after the temp file is durable and before the rename (the token store keeps a backup here). */
  beforeRename?: () => Promise<void>;
}

/** `NAME.PID.RANDOM.tmp` beside `dest` (stem without extension): start-up clean-ups remove `*.tmp`. */
export function tempPathFor(dest: string): string {
  const stem = basename(dest).replace(/\.[^.]*$/, '');
  return join(dirname(dest), `${stem}.${process.pid}.${randomBytes(3).toString('hex')}.tmp`);
}

export async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

export async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces `dest` with `data` (temp + fsync + rename + directory fsync). Leaves no temp file on failure. */
export async function safeWrite(dest: string, data: string | Buffer, opts: SafeWriteOptions = {}): Promise<void> {
  const sync = opts.fsync !== false;
  const tmp = tempPathFor(dest);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o600);
  try {
    try {
      await writeAll(fh, typeof data === 'string' ? Buffer.from(data) : data);
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
    await opts.beforeRename?.();
    await rename(tmp, dest);
  } catch (e) {
    await unlinkQuiet(tmp).catch(() => {});
    throw e;
  }
  if (!sync || opts.syncDir === false) return;
  await (opts.syncDir ?? fsyncDir)(dirname(dest));
}
