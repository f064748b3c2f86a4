// The durable queue, one queue file per message in stateDir/spool (Postfix writes one queue
// file per message too): ID.msg holds the bytes the client sent, then the envelope as JSON,
// then a footer naming the envelope's length. The footer is written last; the file and the
// directory are fsynced (at once, usually one journal commit) before the 250. A queue file
// without a valid footer is an unacknowledged leftover and `init` deletes it; one whose bytes
// do not match the envelope's size and SHA-256 is quarantined in corrupt/.
// The queue file is never rewritten. What changes after the 250 (attempts, recipients'
// status, state) goes to ID.json beside it (safe write: temp + fsync + rename + directory
// fsync), which then supersedes the envelope inside the queue file. Moves between spool/,
// failed/ and corrupt/ are decided by one atomic ID.json write (its `state`) before any file
// moves, so `init` can always finish a half-done move.
// ID.json is written only after the 250, so an ID.json whose message file is gone is an
// acknowledged message whose data was lost: it stays queued and the worker fails it with
// reason data-lost (one error line, a metric, a notice). remove() first renames ID.json to
// ID.removed, so the tail of a removal is never mistaken for lost data.
// Spools of earlier versions (ID.eml = the message alone + ID.json) are read as they are.
// The format is spool/queueFile.ts, ids spool/ids.ts, directory fsyncs spool/dirSync.ts. This
// class stays one file over 400 lines on purpose: it is the one writer of the queue, and its
// methods share the ordering rules (what is durable before what), the group-commit fsyncs and
// the in-memory copies; split, those rules would be spread over several files.
import { open, readdir, readFile, rename, mkdir, access, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { MessageSource, Recipient, SpooledEnvelope } from '../types.js';
import type { Logger } from '../log/logger.js';
import { safeWrite, unlinkQuiet, writeAll } from '../fs/safeWrite.js';
import { openMessage } from './message.js';
import { newChecksum } from './checksum.js';
import { checkSpoolDir } from './dirs.js';
import { DirSync } from './dirSync.js';
import { isQueueId, newQueueId } from './ids.js';
import {
  footer,
  idsIn,
  MESSAGE_EXTS,
  messageFileName,
  migrateEnvelope,
  type QueueFileRead,
  readQueueFileAt,
  renameAll,
} from './queueFile.js';

export { openMessage, readMessage } from './message.js';

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
export interface FailedEnvelope extends SpooledEnvelope {
  state: 'failed';
  failReason: string;
  failedAt: string;
}

/** An envelope that could not be read (e.g. truncated JSON), kept with its message in spool/corrupt/. */
export interface CorruptEntry {
  id: string;
  state: 'corrupt';
  /** The envelope file as it lies in spool/corrupt/. */
  file: string;
  error: string;
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
  constructor(
    readonly size: number,
    readonly maxBytes: number,
  ) {
    super(`message size ${size} exceeds the limit of ${maxBytes} bytes`);
    this.name = 'SpoolSizeError';
  }
}

export interface SpoolOptions {
  /** Measurement only (bench): false skips every fsync. Never a config key. */
  fsync?: boolean;
  /** Called once per envelope moved to corrupt/ (metrics). */
  onCorrupt?: (id: string) => void;
}

export interface ReceiveOptions {
  /** Stop storing past this many bytes but keep reading the source to its end, then reject with SpoolSizeError. */
  maxBytes?: number;
  /** Bytes written before the source's (the listener's Received: header), given the queue id; counted in the size. */
  prefix?: (id: string) => string;
}

/**
 * Small messages just received stay in memory (at most this many bytes in all) until
 * delivered, so the worker sends them without opening and reading the file again.
 */
const RECENT_MAX_BYTES = 4 * 1024 * 1024;
/**
 * Largest message kept there. A message larger than one write batch is copied aside as it is
 * written; beyond this it is read back from its file. 256 KB: a 100 KB message read back cost
 * seven thread-pool jobs (access, open, four reads, close) on the delivery side, which fell
 * behind acceptance at 16 and 64 clients (`npm run bench -- --only 8`).
 */
const RECENT_MAX_MESSAGE = 256 * 1024;
/**
 * The receive batch grows from FIRST_BATCH to at most WRITE_BATCH. 64 KB, not 256 KB: with
 * 20 concurrent 20 MB messages the peak RSS was 154-156 MB at 256 KB and 137-143 MB at 64 KB
 * (`npm run bench -- --only 3`, three runs each), at the same MB/s; 32 KB gained nothing more.
 */
const WRITE_BATCH = 64 * 1024;
const FIRST_BATCH = 16 * 1024;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

export class Spool {
  readonly dir: string;
  readonly failedDir: string;
  readonly corruptDir: string;
  private readonly fsync: boolean;
  private readonly onCorrupt?: (id: string) => void;
  /** Directory fsyncs, shared by concurrent callers. */
  private readonly dirs: DirSync;
  /** Messages received by this process (oldest first), bytes kept while they fit RECENT_MAX_BYTES. */
  private readonly recent = new Map<string, Buffer>();
  private recentBytes = 0;
  /** Received by this process and never given an ID.json: remove() has no envelope file to delete. */
  private readonly noStateFile = new Set<string>();

  constructor(
    readonly stateDir: string,
    private readonly log: Logger,
    opts: SpoolOptions = {},
  ) {
    this.dir = join(stateDir, 'spool');
    this.failedDir = join(this.dir, 'failed');
    this.corruptDir = join(this.dir, 'corrupt');
    this.fsync = opts.fsync !== false;
    this.dirs = new DirSync(this.fsync);
    this.onCorrupt = opts.onCorrupt;
  }

  /** The message of a queued envelope (a version-3 queue file, or an older spool's ID.eml). */
  message(env: SpooledEnvelope): MessageSource {
    const bytes = this.recent.get(env.id);
    return {
      path: join(this.dir, messageFileName(env)),
      size: env.size,
      ...(bytes && bytes.length === env.size ? { bytes } : {}),
    };
  }

  /** The message of an envelope in failed/. */
  failedMessage(env: SpooledEnvelope): MessageSource {
    return { path: join(this.failedDir, messageFileName(env)), size: env.size };
  }

  envelopePath(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  queueFilePath(id: string): string {
    return join(this.dir, `${id}.msg`);
  }

  /**
   * Creates the folders, removes what unacknowledged writes left behind and finishes moves
   * to or from failed/ that a crash interrupted (the envelope's state says which way).
   */
  async init(): Promise<void> {
    // Real directories of ours, or no start (dirs.ts); spool/ first, so nothing follows a link.
    await checkSpoolDir(this.dir);
    await checkSpoolDir(this.failedDir);
    // corrupt/ is created on first use: most spools never need it.
    await checkSpoolDir(this.corruptDir, { create: false });
    const failedNames = new Set(await readdir(this.failedDir));
    // A retry of a failed message that a crash interrupted: its failed/ envelope already says queued.
    for (const name of failedNames) {
      const m = /^([0-9A-Za-z_-]+)\.json$/.exec(name);
      if (!m) continue;
      const env = await this.readEnvelope(join(this.failedDir, name), this.failedDir);
      if (env && env.state !== 'failed') {
        this.log.warn('spool: finishing the interrupted re-queue of a failed message', { id: m[1] });
        await this.finishMove(m[1], this.failedDir, this.dir);
      }
    }
    const names = new Set(await readdir(this.dir));
    let removed = 0;
    let finished = 0;
    for (const name of names) {
      const m = /^([0-9A-Za-z_-]+)\.(eml|json|msg|removed)$/.exec(name);
      if (name.endsWith('.tmp')) {
        await unlinkQuiet(join(this.dir, name));
        removed++;
        continue;
      }
      if (!m) continue;
      const [, id, ext] = m;
      if (ext === 'removed' || names.has(`${id}.removed`)) {
        // The tail of a delivered message's remove(): its ID.json was already renamed away.
        await unlinkQuiet(join(this.dir, name));
        finished++;
        continue;
      }
      if (ext !== 'json' && !names.has(`${id}.json`)) {
        if (failedNames.has(`${id}.json`)) {
          // fail() renamed the envelope into failed/ and the crash lost the message's rename.
          this.log.warn('spool: finishing the interrupted move to failed/', { id });
          await this.finishMove(id, this.dir, this.failedDir);
          continue;
        }
        if (ext === 'eml') {
          // Older spool: never acknowledged (crash before the envelope), or the tail of a remove().
          await unlinkQuiet(join(this.dir, name));
          removed++;
          continue;
        }
        const q = await this.readQueueFile(id, { verify: true });
        if (q.kind === 'incomplete') {
          // No footer: the crash came before the fsync that precedes the 250.
          await unlinkQuiet(join(this.dir, name));
          removed++;
        } else if (q.kind === 'corrupt') {
          await this.moveCorrupt(this.dir, id, new Error(q.error), join(this.dir, name));
        }
      } else if (ext === 'json') {
        const env = await this.readEnvelope(join(this.dir, name), this.dir);
        if (env?.state === 'failed') {
          // fail() committed (the envelope says failed) but did not finish moving the files.
          this.log.warn('spool: finishing the interrupted move to failed/', { id });
          await this.finishMove(id, this.dir, this.failedDir);
        } else if (env && !names.has(messageFileName(env)) && failedNames.has(`${id}.json`)) {
          // failLost() wrote the failed/ envelope (after the notice was queued); finish it.
          this.log.warn('spool: finishing the interrupted move of a data-lost message to failed/', { id });
          await unlinkQuiet(join(this.dir, name));
          finished++;
        }
        // An ID.json whose message file is gone otherwise stays: an acknowledged message whose
        // data was lost, which the delivery worker reports and fails (data-lost) when it starts.
      }
    }
    for (const name of await readdir(this.failedDir)) {
      if (name.endsWith('.tmp')) await unlinkQuiet(join(this.failedDir, name));
    }
    if (removed || finished) await this.syncDir(this.dir);
    if (removed) this.log.info('spool: removed leftovers of unacknowledged writes', { files: removed });
    if (finished) this.log.info('spool: finished interrupted removals', { files: finished });
  }

  /**
   * Streams a message into the spool and resolves once it is durable (the 250 may be sent).
   * Source errors reject with the source's error; storage errors with SpoolWriteError. In
   * both cases no file is left behind.
   */
  async receive(
    source: AsyncIterable<Buffer | string> | Iterable<Buffer> | NodeJS.ReadableStream,
    meta: NewMessage,
    opts: ReceiveOptions = {},
  ): Promise<SpooledEnvelope> {
    const id = newQueueId();
    const file = this.queueFilePath(id);
    let fh: FileHandle | undefined;
    let writeErr: unknown;
    let size = 0;
    let over = false;
    let committed = false;
    let created = false;
    try {
      try {
        fh = await open(file, 'wx', 0o600);
        created = true;
      } catch (e) {
        writeErr = e;
      }
      const sum = newChecksum();
      // Chunks are copied into one batch buffer: few large writes, no per-message growth,
      // and a source that reuses its buffers cannot change what we already accepted. It
      // starts small and doubles up to WRITE_BATCH: a fresh full-size buffer per 10 KB message
      // cost more in GC (external memory) than all the rest of a receive.
      let batch = Buffer.allocUnsafe(FIRST_BATCH);
      let used = 0;
      let flushed = 0;
      // Copies of the flushed batches while the message may still be kept in memory.
      let kept: Buffer[] | null = [];
      const flush = async () => {
        const n = used;
        used = 0;
        flushed += n;
        if (kept && flushed <= RECENT_MAX_MESSAGE) kept.push(Buffer.from(batch.subarray(0, n)));
        else kept = null;
        if (!fh || writeErr || !n) return;
        try {
          await writeAll(fh, batch.subarray(0, n));
        } catch (e) {
          writeErr = e;
        }
      };
      const put = async (buf: Buffer) => {
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
      };
      const input = opts.prefix
        ? withPrefix(opts.prefix(id), source as AsyncIterable<Buffer | string>)
        : (source as AsyncIterable<Buffer | string>);
      for await (const chunk of input) {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        size += buf.length;
        if (opts.maxBytes !== undefined && size > opts.maxBytes) over = true;
        // After a failure keep reading to the end so the SMTP dialogue stays in step.
        if (writeErr || over) continue;
        sum.update(buf);
        await put(buf);
      }
      if (over) throw new SpoolSizeError(size, opts.maxBytes!);
      const now = new Date().toISOString();
      const env: SpooledEnvelope = {
        version: 3,
        id,
        user: meta.user,
        account: meta.account,
        mailFrom: meta.mailFrom,
        rcptTo: [...meta.rcptTo],
        rcpts: meta.rcptTo.map((address): Recipient => ({ address, status: 'pending' })),
        state: 'queued',
        reason: null,
        size,
        ...sum.fields(),
        clientIp: meta.clientIp,
        bodyType: meta.bodyType,
        smtputf8: meta.smtputf8,
        receivedAt: now,
        attempts: 0,
        nextAttemptAt: now,
        ...(meta.isBounce ? { isBounce: true } : {}),
      };
      // The message stays in memory for delivery: nothing flushed yet, it is the start of the
      // batch (kept only if the envelope after it does not flush the batch, which reuses it);
      // or up to RECENT_MAX_MESSAGE, the copies of its flushed batches and the rest.
      let inMemory: Buffer | undefined;
      if (!writeErr && flushed === 0 && used === size) inMemory = batch.subarray(0, size);
      else if (!writeErr && kept && size <= RECENT_MAX_MESSAGE && flushed + used === size)
        inMemory = Buffer.concat([...kept, batch.subarray(0, used)], size);
      kept = null;
      if (!writeErr) {
        const batchWasMessage = flushed === 0;
        const trailer = Buffer.from(JSON.stringify(env));
        await put(Buffer.concat([trailer, footer(trailer.length)]));
        // A flush reuses the batch, which then no longer holds the message.
        if (batchWasMessage && flushed) inMemory = undefined;
        await flush();
      }
      if (writeErr) throw new SpoolWriteError(`spool write failed: ${errText(writeErr)}`, { cause: writeErr });
      try {
        // The commit point: the footer is in the file, and the file and its name are durable.
        // The name was created (open) before the directory fsync starts, so the two fsyncs may
        // run at once and usually share one journal commit; the 250 waits for both.
        const handle = fh!;
        fh = undefined;
        const fileDurable = (this.fsync ? handle.sync() : Promise.resolve()).finally(() => handle.close());
        const nameDurable = this.syncDir(this.dir);
        await Promise.allSettled([fileDurable, nameDurable]);
        await fileDurable;
        await nameDurable;
      } catch (e) {
        throw new SpoolWriteError(`spool write failed: ${errText(e)}`, { cause: e });
      }
      committed = true;
      this.noStateFile.add(id);
      if (inMemory) this.keepRecent(id, inMemory);
      return env;
    } finally {
      if (!committed) {
        await fh?.close().catch(() => {});
        // Best effort: whatever is left is also removed by init() at the next start.
        if (created) await unlinkQuiet(file).catch(() => {});
      }
    }
  }

  /** Every queued envelope, oldest id first. Unreadable envelopes are moved to corrupt/ (see readEnvelope). */
  async list(): Promise<SpooledEnvelope[]> {
    return this.readEnvelopes(this.dir);
  }

  async listFailed(): Promise<FailedEnvelope[]> {
    return (await this.readEnvelopes(this.failedDir)) as FailedEnvelope[];
  }

  /** Envelopes in corrupt/ (what `queue list` shows with state corrupt). */
  async listCorrupt(): Promise<CorruptEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.corruptDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: CorruptEntry[] = [];
    for (const id of idsIn(names)) {
      const json = join(this.corruptDir, `${id}.json`);
      let file = json;
      let error = 'unreadable envelope';
      if (names.includes(`${id}.json`)) {
        try {
          JSON.parse(await readFile(json, 'utf8'));
          error = 'not a valid envelope';
        } catch (e) {
          error = (e as Error).message;
        }
      } else {
        file = join(this.corruptDir, `${id}.msg`);
        const q = await readQueueFileAt(file, { verify: true });
        error =
          q.kind === 'corrupt'
            ? q.error
            : q.kind === 'incomplete'
              ? 'queue file without its footer'
              : 'queue file damaged';
      }
      out.push({ id, state: 'corrupt', file, error });
    }
    return out;
  }

  async get(id: string): Promise<SpooledEnvelope | null> {
    if (!isQueueId(id)) return null;
    return (await this.readEnvelope(this.envelopePath(id), this.dir)) ?? (await this.queuedFromFile(id));
  }

  async getFailed(id: string): Promise<FailedEnvelope | null> {
    if (!isQueueId(id)) return null;
    return (await this.readEnvelope(join(this.failedDir, `${id}.json`), this.failedDir)) as FailedEnvelope | null;
  }

  /**
   * Atomically writes a queued message's new state (ID.json). Returns false (and writes
   * nothing) when the message is no longer queued.
   */
  async update(env: SpooledEnvelope): Promise<boolean> {
    if (!isQueueId(env.id)) throw new Error(`invalid queue id ${JSON.stringify(env.id)}`);
    if (!(await exists(this.message(env).path))) return false;
    this.noStateFile.delete(env.id);
    await this.writeEnvelope(this.envelopePath(env.id), env);
    return true;
  }

  /**
   * Drops a message after its final delivery. The queue file goes first (it alone would be
   * a queued message again); a crash before the rest leaves only files init() removes.
   * Older spools: envelope first, the orphaned message file is removed by init().
   */
  async remove(id: string): Promise<void> {
    if (!isQueueId(id)) return;
    this.dropRecent(id);
    const marker = join(this.dir, `${id}.removed`);
    let renamed = false;
    if (!this.noStateFile.delete(id)) {
      // ID.json alone after a crash would mean lost data (see init): rename it first, durably.
      try {
        await rename(this.envelopePath(id), marker);
        await this.syncDir(this.dir);
        renamed = true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    let olderSpool = false;
    try {
      await unlink(this.queueFilePath(id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      olderSpool = true;
    }
    if (renamed) await unlinkQuiet(marker);
    if (olderSpool) await unlinkQuiet(join(this.dir, `${id}.eml`));
    await this.syncDir(this.dir);
  }

  /** Whether a queued message's data is still on disk. */
  async hasMessage(env: SpooledEnvelope): Promise<boolean> {
    return exists(this.message(env).path);
  }

  /**
   * An acknowledged message whose data is gone (the caller notified the sender first): its
   * envelope goes to failed/ (written first, so init() can finish the move after a crash).
   */
  async failLost(env: FailedEnvelope): Promise<void> {
    if (!isQueueId(env.id)) return;
    this.dropRecent(env.id);
    this.noStateFile.delete(env.id);
    await this.writeEnvelope(join(this.failedDir, `${env.id}.json`), env);
    await unlinkQuiet(this.envelopePath(env.id));
    await this.syncDir(this.dir);
  }

  /**
   * Moves a message to failed/. One atomic step decides it: the queued envelope is written
   * with state 'failed' (safe write). Only then are the files renamed into failed/; init()
   * finishes that after a crash, so a failed message is never retried (or bounced) again.
   */
  async fail(env: SpooledEnvelope, reason: string): Promise<FailedEnvelope | null> {
    if (!isQueueId(env.id) || !(await exists(this.message(env).path))) return null;
    const failed: FailedEnvelope = {
      ...env,
      state: 'failed',
      reason: null,
      failReason: reason,
      failedAt: new Date().toISOString(),
    };
    this.dropRecent(env.id);
    this.noStateFile.delete(env.id);
    await this.writeEnvelope(this.envelopePath(env.id), failed);
    await this.finishMove(env.id, this.dir, this.failedDir);
    return failed;
  }

  /**
   * `queue retry` of a failed message: the reverse move, decided the same way (the failed/
   * envelope is rewritten with its new state first).
   */
  async requeueFailed(env: SpooledEnvelope): Promise<boolean> {
    if (!isQueueId(env.id) || !(await exists(this.failedMessage(env).path))) return false;
    const { failReason: _r, failedAt: _a, ...rest } = env;
    const queued: SpooledEnvelope = { ...rest };
    await this.writeEnvelope(join(this.failedDir, `${env.id}.json`), queued);
    await this.finishMove(env.id, this.failedDir, this.dir);
    return true;
  }

  /** Deletes a message from failed/ (`queue delete` of a failed id). */
  async removeFailed(id: string): Promise<void> {
    if (!isQueueId(id)) return;
    await unlinkQuiet(join(this.failedDir, `${id}.json`));
    for (const ext of MESSAGE_EXTS) await unlinkQuiet(join(this.failedDir, `${id}.${ext}`));
    await this.syncDir(this.failedDir);
  }

  /** Deletes a corrupt envelope and its message (`queue delete` of a corrupt id). */
  async removeCorrupt(id: string): Promise<boolean> {
    if (!isQueueId(id)) return false;
    const files = ['json', ...MESSAGE_EXTS].map((ext) => join(this.corruptDir, `${id}.${ext}`));
    if (!(await exists(files[0])) && !(await exists(files[1]))) return false;
    for (const f of files) await unlinkQuiet(f);
    await this.syncDir(this.corruptDir);
    return true;
  }

  private keepRecent(id: string, bytes: Buffer): void {
    this.recent.set(id, bytes);
    this.recentBytes += bytes.length;
    for (const [old, b] of this.recent) {
      if (this.recentBytes <= RECENT_MAX_BYTES) break;
      this.recent.delete(old);
      this.recentBytes -= b.length;
    }
  }

  private dropRecent(id: string): void {
    const b = this.recent.get(id);
    if (!b) return;
    this.recent.delete(id);
    this.recentBytes -= b.length;
  }

  /** Renames the message file(s) then ID.json from one folder to the other (each step idempotent), then makes both durable. */
  private async finishMove(id: string, from: string, to: string): Promise<void> {
    await renameAll(id, from, to);
    await this.syncDir(to);
    await this.syncDir(from);
  }

  /** An envelope that cannot be read goes to corrupt/ with its message: one error line, counted, shown by `queue list`. */
  private async moveCorrupt(dir: string, id: string, err: unknown, file = join(dir, `${id}.json`)): Promise<void> {
    try {
      await mkdir(this.corruptDir, { recursive: true, mode: 0o700 });
      await renameAll(id, dir, this.corruptDir);
      await this.syncDir(this.corruptDir);
      await this.syncDir(dir);
    } catch (e) {
      this.log.error('unreadable spool envelope could not be moved to corrupt/', { file, err: e });
      return;
    }
    this.log.error(
      `corrupt spool envelope ${file} moved to ${this.corruptDir} with its message; inspect it, then \`queue delete ${id}\``,
      {
        id,
        file,
        err,
      },
    );
    this.onCorrupt?.(id);
  }

  private writeEnvelope(dest: string, env: SpooledEnvelope): Promise<void> {
    return safeWrite(dest, JSON.stringify(env, null, 2) + '\n', {
      mode: 0o600,
      fsync: this.fsync,
      syncDir: (d) => this.syncDir(d),
    });
  }

  /** Makes every directory change done before the call durable (group commit, spool/dirSync.ts). */
  private syncDir(dir: string): Promise<void> {
    return this.dirs.sync(dir);
  }

  /** Closes the directories held open for fsyncs (daemon stop); the spool reopens them if used again. */
  close(): Promise<void> {
    return this.dirs.close();
  }

  private async readEnvelopes(dir: string): Promise<SpooledEnvelope[]> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const have = new Set(names);
    const out: SpooledEnvelope[] = [];
    for (const id of idsIn(names)) {
      const env = have.has(`${id}.json`)
        ? await this.readEnvelope(join(dir, `${id}.json`), dir)
        : dir === this.dir && have.has(`${id}.msg`)
          ? await this.queuedFromFile(id)
          : null;
      if (env) out.push(env);
    }
    return out;
  }

  /** A queued message that has no ID.json yet: the envelope in its queue file (null while it is still being received). */
  private async queuedFromFile(id: string): Promise<SpooledEnvelope | null> {
    const q = await this.readQueueFile(id, { verify: false });
    if (q.kind === 'ok') return q.env;
    if (q.kind === 'corrupt') await this.moveCorrupt(this.dir, id, new Error(q.error), this.queueFilePath(id));
    return null;
  }

  private readQueueFile(id: string, opts: { verify: boolean }): Promise<QueueFileRead | { kind: 'missing' }> {
    return readQueueFileAt(this.queueFilePath(id), opts);
  }

  /** Reads (and migrates) one envelope; an unparseable one is moved to corrupt/ and null returned. */
  private async readEnvelope(path: string, dir: string): Promise<SpooledEnvelope | null> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      return migrateEnvelope(JSON.parse(text), dir === this.failedDir);
    } catch (e) {
      await this.moveCorrupt(dir, path.slice(dir.length + 1, -5), e);
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
