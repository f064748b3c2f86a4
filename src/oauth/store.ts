// The token store: one file, stateDir/tokens.json, mode 0600. Writes are atomic (temp +
// fsync + rename + dir fsync) with the previous version kept as tokens.json.bak, and
// serialised across processes by a lock file so `token import` in the CLI and a refresh in
// the daemon never drop each other's change (every write re-reads the file first).
// Optional AES-256-GCM at rest; a file we cannot decrypt is never overwritten.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { open, readFile, rename, unlink, link, copyFile, mkdir, stat, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import type { AccountState } from '../types.js';

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
  state: AccountState;
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
export function resolveStoreKey(encryptionKeyFile: string | null, env: NodeJS.ProcessEnv = process.env): StoreKey | null {
  let file: string | null = encryptionKeyFile;
  let source: string;
  if (file) {
    source = `tokens.encryptionKeyFile (${file})`;
    let st;
    try {
      st = statSync(file);
    } catch (e) {
      throw new TokenStoreError(`cannot read token encryption key from ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (st.mode & 0o077)
      throw new TokenStoreError(`token encryption key ${file} is accessible by group/others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
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
    throw new TokenStoreError(`cannot read token encryption key from ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
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
  /** How long to wait for another process holding the lock. */
  lockTimeoutMs?: number;
}

export class TokenStore {
  readonly file: string;
  private readonly lockFile: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: TokenStoreOptions) {
    this.file = join(opts.stateDir, STORE_FILE);
    this.lockFile = this.file + '.lock';
  }

  get encrypted(): boolean {
    return this.opts.key !== null;
  }

  /** Reads the store; a missing file is an empty store. Throws clear errors (mode, key, corruption). */
  async load(): Promise<StoreData> {
    let st;
    try {
      st = await stat(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { accounts: {} };
      throw e;
    }
    if (st.mode & 0o077)
      throw new TokenStoreError(
        `token store ${this.file} is accessible by group/others (mode ${(st.mode & 0o777).toString(8)}); refusing to use it. Fix: chmod 600 ${this.file}`,
      );
    const text = await readFile(this.file, 'utf8');
    return this.decode(text);
  }

  private decode(text: string): StoreData {
    let parsed: Partial<PlainFile & SealedFile>;
    try {
      parsed = JSON.parse(text) as Partial<PlainFile & SealedFile>;
    } catch {
      throw new TokenStoreError(`token store ${this.file} is not valid JSON (damaged?); the previous version is in ${this.file}.bak`);
    }
    if (parsed.format !== FORMAT) throw new TokenStoreError(`${this.file} is not an xoauth2-bridge token store`);
    if (parsed.encryption === undefined) {
      // A plaintext store while a key is configured is read as-is and encrypted on the next write.
      return { accounts: parsed.accounts ?? {} };
    }
    if (parsed.encryption !== 'aes-256-gcm') throw new TokenStoreError(`${this.file}: unknown encryption ${String(parsed.encryption)}`);
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
      return { accounts: (JSON.parse(plain.toString('utf8')) as PlainFile).accounts ?? {} };
    } catch {
      throw new TokenStoreError(
        `cannot decrypt token store ${this.file} with the key from ${k.source} (wrong key?); the file was left untouched`,
      );
    }
  }

  private encode(data: StoreData): string {
    const k = this.opts.key;
    if (!k) return JSON.stringify({ format: FORMAT, version: 1, accounts: data.accounts } satisfies PlainFile, null, 2) + '\n';
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
      const release = await this.lock();
      try {
        const data = await this.load();
        fn(data);
        await this.write(data);
        return data;
      } finally {
        await release();
      }
    };
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => {});
    return p;
  }

  private async write(data: StoreData): Promise<void> {
    const tmp = `${this.file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(this.encode(data));
      await fh.sync();
    } catch (e) {
      await fh.close();
      await unlink(tmp).catch(() => {});
      throw e;
    }
    await fh.close();
    await this.keepBackup();
    await rename(tmp, this.file);
    await chmod(this.file, 0o600);
    await fsyncDir(this.opts.stateDir);
  }

  /** tokens.json.bak = the version about to be replaced (a hard link keeps it without copying). */
  private async keepBackup(): Promise<void> {
    const bak = this.file + '.bak';
    try {
      await stat(this.file);
    } catch {
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

  /** Exclusive lock file shared with other processes; a lock left by a dead process is taken over. */
  private async lock(): Promise<() => Promise<void>> {
    const deadline = Date.now() + (this.opts.lockTimeoutMs ?? 10_000);
    for (;;) {
      try {
        const fh = await open(this.lockFile, 'wx', 0o600);
        await fh.writeFile(String(process.pid));
        await fh.close();
        return () => unlink(this.lockFile).catch(() => {});
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      if (await this.staleLock()) {
        await unlink(this.lockFile).catch(() => {});
        continue;
      }
      if (Date.now() > deadline) throw new TokenStoreError(`token store is locked by another process (${this.lockFile}); try again`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  private async staleLock(): Promise<boolean> {
    try {
      const pid = Number((await readFile(this.lockFile, 'utf8')).trim());
      if (!Number.isInteger(pid) || pid <= 0) return (await stat(this.lockFile)).mtimeMs < Date.now() - 30_000;
      if (pid === process.pid) return false;
      try {
        process.kill(pid, 0);
        return false;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === 'ESRCH';
      }
    } catch {
      return false;
    }
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
