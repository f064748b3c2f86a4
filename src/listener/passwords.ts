// Local user passwords: scrypt hashes in PHC string format, a timing-safe check, and an
// in-memory cache of successful checks so a device that opens a connection per page does
// not pay the KDF every time.
//
// Format: $scrypt$ln=15,r=8,p=1$<salt>$<hash>  (salt 16 bytes, hash 32 bytes, base64
// without padding as in the PHC string format). ln=15,r=8 costs 32 MiB and roughly
// 50-150 ms per check on a small server: expensive for an attacker, invisible for a
// printer once the cache is warm.
import { scrypt as scryptCb, randomBytes, timingSafeEqual, createHmac, type ScryptOptions } from 'node:crypto';
import { parsePhc, isValidPasswordHash } from '../config/phc.js';

export const SCRYPT_DEFAULTS = { ln: 15, r: 8, p: 1, saltBytes: 16, hashBytes: 32 } as const;

/** KDF invocations since start; tests use it to prove the cache skips the KDF. */
export const kdfStats = { calls: 0 };

function scrypt(
  password: string,
  salt: Buffer,
  keylen: number,
  o: { ln: number; r: number; p: number },
): Promise<Buffer> {
  const N = 2 ** o.ln;
  // Node refuses to run when 128*N*r exceeds maxmem (32 MiB by default, exactly our cost).
  const opts: ScryptOptions = { N, r: o.r, p: o.p, maxmem: 2 * 128 * N * o.r + 1024 * 1024 };
  kdfStats.calls++;
  return new Promise((resolve, reject) =>
    scryptCb(password.normalize('NFC'), salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');

export interface ScryptCost {
  ln: number;
  r: number;
  p: number;
}

/** `cost` is for the fakes and tests only (see FAKE_SCRYPT_COST); users' hashes get the defaults. */
export async function hashPassword(password: string, cost: ScryptCost = SCRYPT_DEFAULTS): Promise<string> {
  const { saltBytes, hashBytes } = SCRYPT_DEFAULTS;
  const { ln, r, p } = cost;
  const salt = randomBytes(saltBytes);
  const hash = await scrypt(password, salt, hashBytes, { ln, r, p });
  return `$scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(hash)}`;
}

/** True when `password` matches the PHC string; a malformed hash never matches. */
export async function verifyPassword(password: string, phc: string): Promise<boolean> {
  const parsed = parsePhc(phc);
  if (!parsed) return false;
  const got = await scrypt(password, parsed.salt, parsed.hash.length, parsed);
  return timingSafeEqual(got, parsed.hash);
}

/**
 * A hash nobody can match (random salt and random "hash"), with the default cost: checking
 * a password for an unknown user against it costs exactly as much as a wrong password for a
 * known one, so response time does not tell whether a user exists.
 */
const DUMMY_HASH = `$scrypt$ln=${SCRYPT_DEFAULTS.ln},r=${SCRYPT_DEFAULTS.r},p=${SCRYPT_DEFAULTS.p}$${b64(randomBytes(16))}$${b64(randomBytes(32))}`;

export interface PasswordCacheOptions {
  maxEntries?: number;
  ttlMs?: number;
  now?: () => number;
}

/**
 * Successful checks, keyed by HMAC(per-process random key, username NUL password): the
 * plaintext is never kept, and a memory dump does not give an offline-guessable value
 * without the key. Each entry remembers the hash it was verified against, so a changed
 * hash invalidates it even before the reload clears the cache.
 */
export class PasswordCache {
  private readonly key = randomBytes(32);
  private readonly entries = new Map<string, { phc: string; expires: number }>();
  private readonly maxEntries: number;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: PasswordCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 1000;
    this.ttlMs = opts.ttlMs ?? 15 * 60e3;
    this.now = opts.now ?? Date.now;
  }

  /** The keyed hash of a username and password (also names a check in flight). */
  id(username: string, password: string): string {
    // Length-prefixed so ("a\0b", "c") and ("a", "b\0c") cannot collide.
    const user = Buffer.from(username, 'utf8');
    return createHmac('sha256', this.key)
      .update(`${user.length}:`)
      .update(user)
      .update('\0')
      .update(password, 'utf8')
      .digest('base64');
  }

  has(username: string, password: string, phc: string): boolean {
    const k = this.id(username, password);
    const e = this.entries.get(k);
    if (!e) return false;
    if (e.expires <= this.now() || e.phc !== phc) {
      this.entries.delete(k);
      return false;
    }
    return true;
  }

  add(username: string, password: string, phc: string): void {
    const k = this.id(username, password);
    this.entries.delete(k);
    this.entries.set(k, { phc, expires: this.now() + this.ttlMs });
    // Map iterates in insertion order: the first key is the oldest entry.
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * Checks a login. `phc` is the user's hash, or undefined for an unknown user (then the
 * dummy hash is verified so both cases cost the same). Only successes are cached.
 */
export async function checkPassword(
  cache: PasswordCache,
  username: string,
  password: string,
  phc: string | undefined,
): Promise<boolean> {
  if (phc !== undefined && cache.has(username, password, phc)) return true;
  const usable = phc !== undefined && isValidPasswordHash(phc);
  const ok = await verifyPassword(password, usable ? phc : DUMMY_HASH);
  if (!ok || !usable) return false;
  cache.add(username, password, phc);
  return true;
}

// ---- KDF gate ----------------------------------------------------------------------------

/** A queued check dropped because its client got locked out meanwhile. */
export class KdfCancelled extends Error {
  constructor() {
    super('password check cancelled: client locked out');
  }
}

interface Waiter {
  start: () => void;
  cancel: () => void;
}

/**
 * Bounds concurrent password KDFs process-wide. scrypt runs on libuv's threadpool, which the
 * spool's fs calls share: unbounded, a burst of wrong-password logins delays every fsync
 * behind it. Fair between clients: each client key has at most one KDF in flight, waiting
 * clients are served round-robin (one flooding address waits behind its own queue, not in
 * front of everyone else's).
 */
export class KdfGate {
  /** Bench-only: no bound and no queue (the "before" of the bench). Never a config key. */
  bypass = false;
  private running = 0;
  /** Client key -> waiting checks, in round-robin order (served keys move to the back). */
  private readonly queues = new Map<string, Waiter[]>();
  private readonly active = new Set<string>();
  /** KDF runs started through the gate, and runs refused before the KDF. */
  readonly stats = { runs: 0 };

  constructor(public concurrency = 2) {}

  /** Checks waiting for a slot. */
  get queued(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  get inFlight(): number {
    return this.running;
  }

  /** Checks of `key` in flight or waiting. */
  pending(key: string): number {
    if (this.bypass) return 0;
    return (this.active.has(key) ? 1 : 0) + (this.queues.get(key)?.length ?? 0);
  }

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    if (this.bypass) {
      this.stats.runs++;
      return fn();
    }
    return new Promise<T>((resolve, reject) => {
      const start = () => {
        this.running++;
        this.active.add(key);
        this.stats.runs++;
        fn()
          .then(resolve, reject)
          .finally(() => {
            this.running--;
            this.active.delete(key);
            this.pump();
          });
      };
      const q = this.queues.get(key);
      if (q) q.push({ start, cancel: () => reject(new KdfCancelled()) });
      else this.queues.set(key, [{ start, cancel: () => reject(new KdfCancelled()) }]);
      this.pump();
    });
  }

  /** Drops every waiting check of `key` (it was locked out): they fail with KdfCancelled. */
  cancel(key: string): void {
    const q = this.queues.get(key);
    if (!q) return;
    this.queues.delete(key);
    for (const w of q) w.cancel();
  }

  private pump(): void {
    while (this.running < this.concurrency) {
      let next: string | undefined;
      for (const key of this.queues.keys()) {
        if (!this.active.has(key)) {
          next = key;
          break;
        }
      }
      if (next === undefined) return;
      const q = this.queues.get(next)!;
      const w = q.shift()!;
      this.queues.delete(next); // back of the round-robin order
      if (q.length) this.queues.set(next, q);
      w.start();
    }
  }
}

/** The process-wide gate (scrypt's memory and the threadpool are per process). */
export const kdfGate = new KdfGate();

// ---- `xoauth2-bridge hash-password` ---------------------------------------------------

const MAX_PASSWORD_BYTES = 4096;

/** First line of a non-interactive input (`echo pw | xoauth2-bridge hash-password`). */
function readFirstLine(input: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err?: Error) => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.pause?.();
      if (err) return reject(err);
      const nl = buf.indexOf(0x0a);
      resolve((nl >= 0 ? buf.subarray(0, nl) : buf).toString('utf8').replace(/\r$/, ''));
    };
    const onData = (chunk: Buffer | string) => {
      buf = Buffer.concat([buf, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)]);
      if (buf.includes(0x0a)) done();
      else if (buf.length > MAX_PASSWORD_BYTES) done(new Error(`password longer than ${MAX_PASSWORD_BYTES} bytes`));
    };
    const onEnd = () => done();
    const onError = (e: Error) => done(e);
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('error', onError);
    input.resume?.();
  });
}

/** Reads one line from a terminal in raw mode, echoing nothing. null on Ctrl-C / Ctrl-D. */
function promptHidden(
  input: NodeJS.ReadableStream,
  prompt: string,
  promptOut: NodeJS.WritableStream,
): Promise<string | null> {
  promptOut.write(prompt);
  const tty = input as NodeJS.ReadStream;
  const raw = typeof tty.setRawMode === 'function';
  if (raw) tty.setRawMode(true);
  return new Promise((resolve) => {
    let value = '';
    const finish = (v: string | null) => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      if (raw) tty.setRawMode(false);
      input.pause?.();
      promptOut.write('\n');
      resolve(v);
    };
    const onData = (chunk: Buffer | string) => {
      for (const ch of chunk.toString()) {
        if (ch === '\r' || ch === '\n') return finish(value);
        if (ch === '\u0003') return finish(null); // Ctrl-C
        if (ch === '\u0004') {
          if (!value) return finish(null); // Ctrl-D on an empty line
          continue;
        }
        if (ch === '\u007f' || ch === '\b') value = Array.from(value).slice(0, -1).join('');
        else if (ch === '\u0015')
          value = ''; // Ctrl-U
        else if (ch >= ' ') value += ch;
      }
    };
    const onEnd = () => finish(value || null);
    input.on('data', onData);
    input.on('end', onEnd);
    input.resume?.();
  });
}

/**
 * `hash-password`: reads a password (first line of stdin, or a no-echo prompt asked twice
 * on a terminal) and prints its PHC hash. Returns the exit code.
 */
export async function hashPasswordCommand(
  input: NodeJS.ReadableStream,
  out: NodeJS.WritableStream,
  isTTY: boolean,
  errOut: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  let password: string | null;
  if (isTTY) {
    password = await promptHidden(input, 'Password: ', errOut);
    if (password === null) return 130;
    const again = await promptHidden(input, 'Repeat password: ', errOut);
    if (again === null) return 130;
    if (again !== password) {
      errOut.write('hash-password: the passwords do not match\n');
      return 1;
    }
  } else {
    try {
      password = await readFirstLine(input);
    } catch (e) {
      errOut.write(`hash-password: ${(e as Error).message}\n`);
      return 1;
    }
  }
  if (!password) {
    errOut.write('hash-password: empty password refused\n');
    return 1;
  }
  out.write((await hashPassword(password)) + '\n');
  return 0;
}
