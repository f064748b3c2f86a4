// The durable queue: one message file (ID.eml, the bytes the client sent) and one envelope
// (ID.json) per message in stateDir/spool. The envelope is the commit point: it is written
// (temp + fsync + rename, then a directory fsync) only after the message file is fsynced, so
// a message file without an envelope is an unacknowledged leftover and `init` deletes it.
import { open, readdir, readFile, rename, unlink, mkdir, link, access, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Envelope } from '../types.js';
import type { Logger } from '../log/logger.js';

export interface NewMessage {
  user: string | null;
  account: string;
  mailFrom: string;
  rcptTo: string[];
  clientIp: string;
  bodyType: '7bit' | '8bitmime';
  smtputf8: boolean;
  isBounce?: boolean;
}

/** An envelope in failed/: the queued envelope plus why and when it failed. */
export interface FailedEnvelope extends Envelope {
  failReason: string;
  failedAt: string;
}

/** The spool could not store the message (disk full, I/O error): the listener answers 452 4.3.1. */
export class SpoolWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpoolWriteError';
  }
}

/** The message went over `maxBytes` (the source was drained, nothing kept): the listener answers 552 5.3.4. */
export class SpoolSizeError extends Error {
  constructor(readonly size: number, readonly maxBytes: number) {
    super(`message size ${size} exceeds the limit of ${maxBytes} bytes`);
    this.name = 'SpoolSizeError';
  }
}

export interface SpoolOptions {
  /** Measurement only (bench): false skips every fsync. Never a config key. */
  fsync?: boolean;
}

export interface ReceiveOptions {
  /** Stop storing past this many bytes but keep reading the source to its end, then reject with SpoolSizeError. */
  maxBytes?: number;
  /** Bytes written before the source's (the listener's Received: header), given the queue id; counted in the size. */
  prefix?: (id: string) => string;
}

const ID_RE = /^[0-9A-Za-z_-]{1,64}$/;
const WRITE_BATCH = 256 * 1024;
const FIRST_BATCH = 16 * 1024;

let lastMs = 0;
let seq = 0;

/**
 * Queue ids sort by arrival (base36 milliseconds, then a per-process sequence) and end in
 * random characters so two processes writing the same spool cannot collide. Uppercase
 * base36 only: safe in file names, logs and shells.
 */
export function newQueueId(now = Date.now()): string {
  if (now === lastMs) seq = (seq + 1) % 1296;
  else {
    lastMs = now;
    seq = 0;
  }
  const rand = randomBytes(4).readUInt32BE(0).toString(36).padStart(7, '0').slice(-5);
  return (now.toString(36).padStart(9, '0') + seq.toString(36).padStart(2, '0') + rand).toUpperCase();
}

export function isQueueId(id: string): boolean {
  return ID_RE.test(id);
}

async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

export class Spool {
  readonly dir: string;
  readonly failedDir: string;
  private readonly fsync: boolean;
  /** Per directory: the fsync in progress and the one queued behind it (see syncDir). */
  private readonly dirSyncs = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();

  constructor(
    readonly stateDir: string,
    private readonly log: Logger,
    opts: SpoolOptions = {},
  ) {
    this.dir = join(stateDir, 'spool');
    this.failedDir = join(this.dir, 'failed');
    this.fsync = opts.fsync !== false;
  }

  messagePath(id: string): string {
    return join(this.dir, `${id}.eml`);
  }

  envelopePath(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  /** Creates the folders and removes what unacknowledged writes left behind. */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await mkdir(this.failedDir, { recursive: true, mode: 0o700 });
    const names = new Set(await readdir(this.dir));
    let removed = 0;
    for (const name of names) {
      const m = /^([0-9A-Za-z_-]+)\.(eml|json)$/.exec(name);
      if (name.endsWith('.tmp')) {
        await unlinkQuiet(join(this.dir, name));
        removed++;
      } else if (m && m[2] === 'eml' && !names.has(`${m[1]}.json`)) {
        // Never acknowledged (crash before the envelope), or the tail of a remove()/fail().
        await unlinkQuiet(join(this.dir, name));
        removed++;
      } else if (m && m[2] === 'json' && !names.has(`${m[1]}.eml`)) {
        const id = m[1];
        this.log.error('spooled envelope without its message file, moved to failed/', { id });
        await this.moveOrphanEnvelope(id);
      }
    }
    for (const name of await readdir(this.failedDir)) {
      if (name.endsWith('.tmp')) await unlinkQuiet(join(this.failedDir, name));
    }
    if (removed) {
      await this.syncDir(this.dir);
      this.log.info('spool: removed leftovers of unacknowledged writes', { files: removed });
    }
  }

  /**
   * Streams a message into the spool and resolves once it is durable (the 250 may be sent).
   * Source errors reject with the source's error; storage errors with SpoolWriteError. In
   * both cases no file is left behind.
   */
  async receive(source: AsyncIterable<Buffer | string> | Iterable<Buffer> | NodeJS.ReadableStream, meta: NewMessage, opts: ReceiveOptions = {}): Promise<Envelope> {
    const id = newQueueId();
    const eml = this.messagePath(id);
    const json = this.envelopePath(id);
    const tmp = this.tempPath(this.dir, id);
    let fh: FileHandle | undefined;
    let writeErr: unknown;
    let size = 0;
    let over = false;
    let committed = false;
    let created = false;
    try {
      try {
        fh = await open(eml, 'wx', 0o600);
        created = true;
      } catch (e) {
        writeErr = e;
      }
      // Chunks are copied into one batch buffer: few large writes, no per-message growth,
      // and a source that reuses its buffers cannot change what we already accepted. It
      // starts small and doubles up to WRITE_BATCH: a fresh 256 KB buffer per 10 KB message
      // cost more in GC (external memory) than all the rest of a receive.
      let batch = Buffer.allocUnsafe(FIRST_BATCH);
      let used = 0;
      const flush = async () => {
        const n = used;
        used = 0;
        if (!fh || writeErr || !n) return;
        try {
          await writeAll(fh, batch.subarray(0, n));
        } catch (e) {
          writeErr = e;
        }
      };
      const input = opts.prefix ? withPrefix(opts.prefix(id), source as AsyncIterable<Buffer | string>) : (source as AsyncIterable<Buffer | string>);
      for await (const chunk of input) {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        size += buf.length;
        if (opts.maxBytes !== undefined && size > opts.maxBytes) over = true;
        // After a failure keep reading to the end so the SMTP dialogue stays in step.
        if (writeErr || over) continue;
        for (let off = 0; off < buf.length; ) {
          if (used === batch.length && batch.length < WRITE_BATCH) {
            const bigger = Buffer.allocUnsafe(Math.min(WRITE_BATCH, batch.length * 2));
            batch.copy(bigger, 0, 0, used);
            batch = bigger;
          }
          const n = buf.copy(batch, used, off);
          used += n;
          off += n;
          if (used === WRITE_BATCH) await flush();
        }
      }
      await flush();
      if (writeErr) throw new SpoolWriteError(`spool write failed: ${errText(writeErr)}`, { cause: writeErr });
      if (over) throw new SpoolSizeError(size, opts.maxBytes!);
      const now = new Date().toISOString();
      const env: Envelope = {
        id,
        user: meta.user,
        account: meta.account,
        mailFrom: meta.mailFrom,
        rcptTo: [...meta.rcptTo],
        delivered: [],
        size,
        clientIp: meta.clientIp,
        bodyType: meta.bodyType,
        smtputf8: meta.smtputf8,
        receivedAt: now,
        attempts: 0,
        nextAttemptAt: now,
        ...(meta.isBounce ? { isBounce: true } : {}),
      };
      try {
        if (this.fsync) await fh!.sync();
        await fh!.close();
        fh = undefined;
        await this.writeJsonAtomic(tmp, json, env);
        await this.syncDir(this.dir);
      } catch (e) {
        throw new SpoolWriteError(`spool write failed: ${errText(e)}`, { cause: e });
      }
      committed = true;
      return env;
    } finally {
      if (!committed) {
        await fh?.close().catch(() => {});
        // Best effort: whatever is left is also removed by init() at the next start.
        if (created) for (const p of [json, tmp, eml]) await unlinkQuiet(p).catch(() => {});
      }
    }
  }

  /** Every queued envelope, oldest id first. Unreadable envelopes are logged and skipped. */
  async list(): Promise<Envelope[]> {
    return this.readEnvelopes(this.dir);
  }

  async listFailed(): Promise<FailedEnvelope[]> {
    return (await this.readEnvelopes(this.failedDir)) as FailedEnvelope[];
  }

  async get(id: string): Promise<Envelope | null> {
    if (!isQueueId(id)) return null;
    return this.readEnvelope(this.envelopePath(id));
  }

  async getFailed(id: string): Promise<FailedEnvelope | null> {
    if (!isQueueId(id)) return null;
    return (await this.readEnvelope(join(this.failedDir, `${id}.json`))) as FailedEnvelope | null;
  }

  failedMessagePath(id: string): string {
    return join(this.failedDir, `${id}.eml`);
  }

  /**
   * Atomically rewrites a queued envelope. Returns false (and writes nothing) when the
   * message is no longer queued, e.g. `queue delete` removed it while it was being sent.
   */
  async update(env: Envelope): Promise<boolean> {
    if (!isQueueId(env.id)) throw new Error(`invalid queue id ${JSON.stringify(env.id)}`);
    if (!(await exists(this.messagePath(env.id)))) return false;
    await this.writeJsonAtomic(this.tempPath(this.dir, env.id), this.envelopePath(env.id), env);
    await this.syncDir(this.dir);
    return true;
  }

  /** Drops a message after its final delivery. Envelope first: a crash in between leaves an orphan init() removes. */
  async remove(id: string): Promise<void> {
    if (!isQueueId(id)) return;
    await unlinkQuiet(this.envelopePath(id));
    await unlinkQuiet(this.messagePath(id));
    await this.syncDir(this.dir);
  }

  /**
   * Moves a message to failed/ with the reason. The failed copy is complete (hard link +
   * envelope) before the queued envelope goes, so a crash at any point keeps the message
   * either queued or failed, never neither.
   */
  async fail(id: string, reason: string): Promise<void> {
    const env = await this.get(id);
    if (!env) return;
    const failed: FailedEnvelope = { ...env, failReason: reason, failedAt: new Date().toISOString() };
    const target = this.failedMessagePath(id);
    await unlinkQuiet(target);
    await link(this.messagePath(id), target);
    await this.writeJsonAtomic(this.tempPath(this.failedDir, id), join(this.failedDir, `${id}.json`), failed);
    await this.syncDir(this.failedDir);
    await this.remove(id);
  }

  /** Deletes a message from failed/ (`queue delete` of a failed id). */
  async removeFailed(id: string): Promise<void> {
    if (!isQueueId(id)) return;
    await unlinkQuiet(join(this.failedDir, `${id}.json`));
    await unlinkQuiet(this.failedMessagePath(id));
    await this.syncDir(this.failedDir);
  }

  private async moveOrphanEnvelope(id: string): Promise<void> {
    const env = await this.readEnvelope(this.envelopePath(id));
    if (env) {
      const failed: FailedEnvelope = { ...env, failReason: 'message file missing from the spool', failedAt: new Date().toISOString() };
      await this.writeJsonAtomic(this.tempPath(this.failedDir, id), join(this.failedDir, `${id}.json`), failed);
      await this.syncDir(this.failedDir);
    }
    await unlinkQuiet(this.envelopePath(id));
  }

  private tempPath(dir: string, id: string): string {
    return join(dir, `${id}.${process.pid}.${randomBytes(3).toString('hex')}.tmp`);
  }

  private async writeJsonAtomic(tmp: string, dest: string, value: unknown): Promise<void> {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await writeAll(fh, Buffer.from(JSON.stringify(value, null, 2) + '\n'));
      if (this.fsync) await fh.sync();
    } catch (e) {
      await fh.close().catch(() => {});
      await unlinkQuiet(tmp).catch(() => {});
      throw e;
    }
    await fh.close();
    try {
      await rename(tmp, dest);
    } catch (e) {
      await unlinkQuiet(tmp).catch(() => {});
      throw e;
    }
  }

  /**
   * Makes every directory change done before the call durable. Concurrent callers share
   * fsyncs (group commit): a caller joins the next fsync that has not started yet, never one
   * already running (it may have begun before the caller's rename/unlink). Under load this
   * is one or two directory fsyncs at a time instead of one per message.
   */
  private syncDir(dir: string): Promise<void> {
    if (!this.fsync) return Promise.resolve();
    let st = this.dirSyncs.get(dir);
    if (!st) this.dirSyncs.set(dir, (st = { running: null, next: null }));
    const state = st;
    const start = (): Promise<void> => {
      const p: Promise<void> = this.fsyncDir(dir).finally(() => {
        if (state.running === p) state.running = null;
      });
      state.running = p;
      return p;
    };
    if (!state.running) return start();
    state.next ??= state.running
      .catch(() => {})
      .then(() => {
        state.next = null;
        return start();
      });
    return state.next;
  }

  private async fsyncDir(dir: string): Promise<void> {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private async readEnvelopes(dir: string): Promise<Envelope[]> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: Envelope[] = [];
    for (const name of names.filter((n) => n.endsWith('.json') && isQueueId(n.slice(0, -5))).sort()) {
      const env = await this.readEnvelope(join(dir, name));
      if (env) out.push(env);
    }
    return out;
  }

  private async readEnvelope(path: string): Promise<Envelope | null> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      const env = JSON.parse(text) as Envelope;
      if (!env || typeof env.id !== 'string' || !Array.isArray(env.rcptTo)) throw new Error('not an envelope');
      env.delivered ??= [];
      return env;
    } catch (e) {
      this.log.error('unreadable spool envelope skipped', { file: path, err: e });
      return null;
    }
  }
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err?.code ? `${err.code}: ${err.message}` : String(err?.message ?? e);
}

async function* withPrefix(prefix: string, source: AsyncIterable<Buffer | string>): AsyncIterable<Buffer | string> {
  yield Buffer.from(prefix, 'latin1');
  yield* source;
}
