// The token store: one file, stateDir/tokens.json, mode 0600. Writes go through the safe-write
// module (temp + fsync + rename + dir fsync) with the previous version kept as
// tokens.json.bak. Only the owner of the state directory writes it (the daemon, or a CLI
// command holding the state lock, see src/control/stateLock.ts); within the process every
// write is a serialised read-modify-write of the freshest file.
// Optional AES-256-GCM at rest; a file we cannot decrypt is never overwritten. With a key, no
// plaintext copy is left behind: the owner seals a plaintext store and backup at start
// (sealAtRest), and a write never keeps a plaintext version as the backup.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { open, readFile, readdir, unlink, link, copyFile, mkdir, stat, chmod } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { HealthState } from '../types.js';
import type { Logger } from '../log/logger.js';
import { safeWrite, unlinkQuiet } from '../fs/safeWrite.js';

export interface TokenRecord {
  /** Absent for service accounts (they sign a fresh assertion each time). */
  refreshToken?: string;
  refreshTokenIssuedAt?: string;
  /** Set when the token response said when the refresh token lapses (Testing apps, time-limited grants). */
  refreshTokenExpiresAt?: string;
  accessToken?: string;
  accessTokenExpiresAt?: string;
  /** Which identity (client / service account + subject) the access token belongs to. */
  accessTokenFor?: string;
  lastRefreshAt?: string;
  lastError?: string;
  state: HealthState;
  authorizedEmail?: string;
}

export interface StoreData {
  accounts: Record<string, TokenRecord>;
}

export const STORE_FILE = 'tokens.json';
const FORMAT = 'xoauth2-bridge-tokens';
const AAD = Buffer.from(`${FORMAT} v1`);

export class TokenStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenStoreError';
  }
}

export interface StoreKey {
  key: Buffer;
  /** Where the key came from, named in errors. */
  source: string;
}

/**
 * The at-rest key: tokens.encryptionKeyFile, else $CREDENTIALS_DIRECTORY/token-key
 * (systemd LoadCredential), else none. Accepts 32 raw bytes, 64 hex chars or base64 text.
 */
export function resolveStoreKey(
  encryptionKeyFile: string | null,
  env: NodeJS.ProcessEnv = process.env,
): StoreKey | null {
  let file: string | null = encryptionKeyFile;
  let source: string;
  if (file) {
    source = `tokens.encryptionKeyFile (${file})`;
    let st;
    try {
      st = statSync(file);
    } catch (e) {
      throw new TokenStoreError(
        `cannot read token encryption key from ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    if (st.mode & 0o077)
      throw new TokenStoreError(
        `token encryption key ${file} is accessible by group/others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`,
      );
  } else if (env.CREDENTIALS_DIRECTORY) {
    const cand = join(env.CREDENTIALS_DIRECTORY, 'token-key');
    try {
      statSync(cand);
    } catch {
      return null;
    }
    file = cand;
    source = `$CREDENTIALS_DIRECTORY/token-key (${cand})`;
  } else {
    return null;
  }
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    throw new TokenStoreError(
      `cannot read token encryption key from ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  return { key: parseKey(raw, source), source };
}

function parseKey(raw: Buffer, source: string): Buffer {
  if (raw.length === 32) return raw;
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    const b = Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
    if (b.length === 32) return b;
  }
  throw new TokenStoreError(
    `token encryption key from ${source} is not 32 bytes (expected 32 raw bytes, 64 hex characters or base64 of 32 bytes; e.g. \`openssl rand -hex 32\`)`,
  );
}

interface PlainFile {
  format: typeof FORMAT;
  version: 1;
  accounts: Record<string, TokenRecord>;
}
interface SealedFile {
  format: typeof FORMAT;
  version: 1;
  encryption: 'aes-256-gcm';
  iv: string;
  tag: string;
  data: string;
}

export interface TokenStoreOptions {
  stateDir: string;
  key: StoreKey | null;
}

/** Per store file: the last write queued, so two TokenStore objects in one process never interleave. */
const chains = new Map<string, Promise<unknown>>();

export class TokenStore {
  readonly file: string;

  constructor(private readonly opts: TokenStoreOptions) {
    this.file = join(opts.stateDir, STORE_FILE);
  }

  get encrypted(): boolean {
    return this.opts.key !== null;
  }

  /** Reads the store; a missing file is an empty store. Throws clear errors (mode, key, corruption). */
  async load(): Promise<StoreData> {
    return (await this.read()).data;
  }

  /** The store and how it is on disk: absent, plaintext or sealed. */
  private async read(): Promise<{ data: StoreData; onDisk: 'absent' | 'plaintext' | 'sealed' }> {
    let st;
    try {
      st = await stat(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { data: { accounts: {} }, onDisk: 'absent' };
      throw e;
    }
    if (st.mode & 0o077)
      throw new TokenStoreError(
        `token store ${this.file} is accessible by group/others (mode ${(st.mode & 0o777).toString(8)}); refusing to use it. Fix: chmod 600 ${this.file}`,
      );
    const text = await readFile(this.file, 'utf8');
    return this.decode(text);
  }

  private decode(text: string, file = this.file): { data: StoreData; onDisk: 'plaintext' | 'sealed' } {
    let parsed: Partial<PlainFile & SealedFile>;
    try {
      parsed = JSON.parse(text) as Partial<PlainFile & SealedFile>;
    } catch {
      throw new TokenStoreError(
        `token store ${file} is not valid JSON (damaged?); the previous version is in ${this.file}.bak`,
      );
    }
    if (parsed.format !== FORMAT) throw new TokenStoreError(`${file} is not an xoauth2-bridge token store`);
    if (parsed.encryption === undefined) {
      // A plaintext store while a key is configured is read as-is; sealAtRest or the next write seals it.
      return { data: { accounts: parsed.accounts ?? {} }, onDisk: 'plaintext' };
    }
    if (parsed.encryption !== 'aes-256-gcm')
      throw new TokenStoreError(`${this.file}: unknown encryption ${String(parsed.encryption)}`);
    const k = this.opts.key;
    if (!k)
      throw new TokenStoreError(
        `token store ${this.file} is encrypted but no key is configured (set tokens.encryptionKeyFile or provide $CREDENTIALS_DIRECTORY/token-key); the file was left untouched`,
      );
    try {
      const d = createDecipheriv('aes-256-gcm', k.key, Buffer.from(parsed.iv ?? '', 'base64'));
      d.setAAD(AAD);
      d.setAuthTag(Buffer.from(parsed.tag ?? '', 'base64'));
      const plain = Buffer.concat([d.update(Buffer.from(parsed.data ?? '', 'base64')), d.final()]);
      return { data: { accounts: (JSON.parse(plain.toString('utf8')) as PlainFile).accounts ?? {} }, onDisk: 'sealed' };
    } catch {
      throw new TokenStoreError(
        `cannot decrypt token store ${file} with the key from ${k.source} (wrong key?); the file was left untouched`,
      );
    }
  }

  private encode(data: StoreData): string {
    const k = this.opts.key;
    if (!k)
      return (
        JSON.stringify({ format: FORMAT, version: 1, accounts: data.accounts } satisfies PlainFile, null, 2) + '\n'
      );
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', k.key, iv);
    c.setAAD(AAD);
    const enc = Buffer.concat([c.update(JSON.stringify({ accounts: data.accounts }), 'utf8'), c.final()]);
    const sealed: SealedFile = {
      format: FORMAT,
      version: 1,
      encryption: 'aes-256-gcm',
      iv: iv.toString('base64'),
      tag: c.getAuthTag().toString('base64'),
      data: enc.toString('base64'),
    };
    return JSON.stringify(sealed) + '\n';
  }

  /**
   * Read-modify-write under the lock: `fn` mutates the freshest data from disk. Returns
   * the data as written. If the file cannot be read (wrong key, bad mode), nothing is written.
   */
  update(fn: (data: StoreData) => void): Promise<StoreData> {
    const run = async () => {
      await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
      const { data, onDisk } = await this.read();
      // With a key, a plaintext version is kept as the backup only in its sealed form.
      const sealedPrevious = this.opts.key && onDisk === 'plaintext' ? this.encode(data) : null;
      fn(data);
      await safeWrite(this.file, this.encode(data), {
        mode: 0o600,
        beforeRename: () => this.keepBackup(sealedPrevious),
      });
      return data;
    };
    return this.serialised(run);
  }

  /** Runs `run` after every earlier write of this file in this process has settled. */
  private serialised<T>(run: () => Promise<T>): Promise<T> {
    const prev = chains.get(this.file) ?? Promise.resolve();
    const p = prev.then(run, run);
    const settled = p.catch(() => {});
    chains.set(this.file, settled);
    void settled.then(() => {
      if (chains.get(this.file) === settled) chains.delete(this.file);
    });
    return p;
  }

  /**
   * Seals what a key-less writer (e.g. `token import` run without the unit's credential) left
   * in plaintext: the store, its backup, and temp files of an interrupted write. Call as the
   * owner of the state directory, after a successful load. Logs one info line when it sealed
   * something, and claims encryption at rest only when that is what is on disk; a failure is
   * logged as an error (the store stays usable) and never claimed.
   */
  async sealAtRest(log: Logger): Promise<void> {
    if (!this.opts.key) return;
    try {
      const done = await this.serialised(() => this.seal());
      if (done.length) log.info(`token store sealed at rest (AES-256-GCM): ${done.join('; ')}`, { file: this.file });
      else if (await this.exists(this.file))
        log.info('token store encrypted at rest (AES-256-GCM)', { file: this.file });
      else log.info('token store will be encrypted at rest (AES-256-GCM) when first written', { file: this.file });
    } catch (e) {
      log.error(`token store is not encrypted at rest: sealing the plaintext store failed: ${(e as Error).message}`, {
        file: this.file,
      });
    }
  }

  /** What was sealed or removed, one phrase per file (`NAME was plaintext, sealed`). */
  private async seal(): Promise<string[]> {
    const done: string[] = [];
    const bak = this.file + '.bak';
    // The backup first: a crash in between leaves a sealed backup beside a plaintext store, which the next start seals.
    const bakText = await readFile(bak, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    if (bakText !== null) {
      let decoded: { data: StoreData; onDisk: string } | null = null;
      try {
        decoded = this.decode(bakText, bak);
      } catch {
        // Unreadable with our key: sealed with another one stays; anything else may hold a token in clear.
        if (/"encryption"\s*:/.test(bakText)) decoded = { data: { accounts: {} }, onDisk: 'sealed' };
      }
      if (!decoded) {
        await unlink(bak);
        done.push(`${basename(bak)} was not a sealed store, removed`);
      } else if (decoded.onDisk === 'plaintext') {
        await safeWrite(bak, this.encode(decoded.data), { mode: 0o600 });
        done.push(`${basename(bak)} was plaintext, sealed`);
      }
    }
    const { data, onDisk } = await this.read();
    if (onDisk === 'plaintext') {
      await safeWrite(this.file, this.encode(data), { mode: 0o600 });
      done.push(`${basename(this.file)} was plaintext, sealed`);
    }
    // Temp files of a write interrupted by a crash (safeWrite's NAME.PID.RANDOM.tmp): the
    // chain above means none of ours is in flight, and the state lock that no other process's is.
    const stem = basename(this.file).replace(/\.[^.]*$/, '');
    for (const name of await readdir(this.opts.stateDir)) {
      if (!name.startsWith(`${stem}.`) || !name.endsWith('.tmp')) continue;
      await unlinkQuiet(join(this.opts.stateDir, name));
      done.push(`${name} (an interrupted write) removed`);
    }
    return done;
  }

  private exists(file: string): Promise<boolean> {
    return stat(file).then(
      () => true,
      () => false,
    );
  }

  /**
   * tokens.json.bak = the version about to be replaced (a hard link keeps it without copying);
   * `sealed`: that version's sealed encoding, written instead when the file on disk is plaintext.
   */
  private async keepBackup(sealed: string | null): Promise<void> {
    const bak = this.file + '.bak';
    if (!(await this.exists(this.file))) return;
    if (sealed !== null) {
      await safeWrite(bak, sealed, { mode: 0o600 });
      return;
    }
    await unlink(bak).catch(() => {});
    try {
      await link(this.file, bak);
    } catch {
      await copyFile(this.file, bak);
      await chmod(bak, 0o600);
      const fh = await open(bak, 'r+');
      await fh.sync().finally(() => fh.close());
    }
  }
}
