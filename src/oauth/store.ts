// The token store: one file, stateDir/tokens.json, mode 0600. Writes go through the safe-write
// module (temp + fsync + rename + dir fsync) with the previous version kept as
// tokens.json.bak. Only the owner of the state directory writes it (the daemon, or a CLI
// command holding the state lock, see src/control/stateLock.ts); within the process every
// write is a serialised read-modify-write of the freshest file.
// Optional AES-256-GCM at rest; a file we cannot decrypt is never overwritten.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { open, readFile, unlink, link, copyFile, mkdir, stat, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import type { AccountState } from '../types.js';
import { safeWrite } from '../fs/safeWrite.js';

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
      const data = await this.load();
      fn(data);
      await safeWrite(this.file, this.encode(data), { mode: 0o600, beforeRename: () => this.keepBackup() });
      return data;
    };
    const prev = chains.get(this.file) ?? Promise.resolve();
    const p = prev.then(run, run);
    const settled = p.catch(() => {});
    chains.set(this.file, settled);
    void settled.then(() => {
      if (chains.get(this.file) === settled) chains.delete(this.file);
    });
    return p;
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
}
