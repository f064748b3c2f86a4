// `token import|status|refresh` and `authorize`: thin CLI layers over src/oauth/. Each
// returns the process exit code; the commander wiring lives in the CLI entry point.
import type { Config } from '../config/schema.js';
import { notifyDaemon } from '../control/notify.js';
import { nullLogger } from '../log/logger.js';
import { authorize } from '../oauth/authorize.js';
import { NeedsReauthError, TokenService, fixHint, statusFromRecord, type AccountStatus } from '../oauth/service.js';
import { TokenStore, resolveStoreKey } from '../oauth/store.js';

type Out = NodeJS.WritableStream;

function findAccount(config: Config, account: string, out: Out) {
  const acct = config.accounts.find((a) => a.name === account);
  if (!acct) out.write(`error: no account named "${account}" (configured: ${config.accounts.map((a) => a.name).join(', ')})\n`);
  return acct;
}

async function readAll(input: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of input as AsyncIterable<Buffer | string>) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a refresh token from stdin and stores it; a running daemon picks it up within seconds. */
export async function tokenImport(config: Config, account: string, input: NodeJS.ReadableStream, out: Out): Promise<number> {
  const acct = findAccount(config, account, out);
  if (!acct) return 1;
  if (acct.oauth.type !== 'user') {
    out.write(`error: account ${account} uses a service account; there is no refresh token to import\n`);
    return 1;
  }
  const token = (await readAll(input)).trim();
  if (!token) {
    out.write('error: no refresh token on stdin\n');
    return 1;
  }
  try {
    const svc = new TokenService({ config, log: nullLogger });
    await svc.init();
    await svc.importRefreshToken(account, token);
    notifyDaemon(config.stateDir, 'tokens');
  } catch (e) {
    out.write(`error: ${(e as Error).message}\n`);
    return 1;
  }
  out.write(`Stored the refresh token for account ${account}. A running daemon uses it within seconds.\n`);
  return 0;
}

/** Reads the store (no daemon needed). Exit 0 when every account is ok, 1 otherwise, 2 if the store is unreadable. */
export async function tokenStatus(config: Config, opts: { json: boolean }, out: Out): Promise<number> {
  let rows: AccountStatus[];
  try {
    const store = new TokenStore({ stateDir: config.stateDir, key: resolveStoreKey(config.tokens.encryptionKeyFile) });
    const data = await store.load();
    rows = config.accounts.map((a) => statusFromRecord(a, data.accounts[a.name]));
  } catch (e) {
    out.write(`error: ${(e as Error).message}\n`);
    return 2;
  }
  if (opts.json) out.write(JSON.stringify(rows, null, 2) + '\n');
  else out.write(formatStatus(rows, Date.now()));
  return rows.every((r) => r.state === 'ok') ? 0 : 1;
}

function ago(iso: string | null, now: number): string {
  if (!iso) return '-';
  const d = Date.parse(iso) - now;
  const abs = Math.abs(d);
  const s = abs < 120e3 ? `${Math.round(abs / 1e3)}s` : abs < 7200e3 ? `${Math.round(abs / 60e3)}m` : abs < 172800e3 ? `${Math.round(abs / 3600e3)}h` : `${Math.round(abs / 86400e3)}d`;
  return d >= 0 ? `in ${s}` : `${s} ago`;
}

export function formatStatus(rows: AccountStatus[], now: number): string {
  const table = [['ACCOUNT', 'EMAIL', 'STATE', 'ACCESS TOKEN EXPIRES', 'LAST REFRESH', 'LAST ERROR']];
  for (const r of rows) {
    const exp = r.accessTokenExpiresAt ? (Date.parse(r.accessTokenExpiresAt) <= now ? 'expired' : ago(r.accessTokenExpiresAt, now)) : '-';
    table.push([r.account, r.email, r.state, exp, ago(r.lastRefreshAt, now), r.lastError ?? '-']);
  }
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  return table.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

/** Forces a refresh now, persists it and tells a running daemon to pick up the result. */
export async function tokenRefresh(config: Config, account: string, out: Out): Promise<number> {
  const acct = findAccount(config, account, out);
  if (!acct) return 1;
  try {
    const svc = new TokenService({ config, log: nullLogger });
    await svc.init();
    try {
      await svc.refresh(account);
    } finally {
      notifyDaemon(config.stateDir, 'tokens');
    }
    const st = svc.status().find((s) => s.account === account);
    out.write(`Account ${account}: access token refreshed, valid until ${st?.accessTokenExpiresAt ?? '?'}.\n`);
    return 0;
  } catch (e) {
    out.write(`error: ${(e as Error).message}\n`);
    if (e instanceof NeedsReauthError) out.write(`Fix: ${fixHint(acct)}\n`);
    return 1;
  }
}

export async function authorizeCommand(
  config: Config,
  account: string,
  opts: { manual: boolean },
  input: NodeJS.ReadableStream,
  out: Out,
): Promise<number> {
  const acct = findAccount(config, account, out);
  if (!acct) return 1;
  try {
    const { email } = await authorize({ config, account, manual: opts.manual, input, output: out });
    out.write(
      email
        ? `Authorized account ${account} as ${email}. The refresh token is stored; a running daemon uses it within seconds.\n`
        : `Authorized account ${account} (Google did not say which user signed in; it must be ${acct.email}). The refresh token is stored.\n`,
    );
    return 0;
  } catch (e) {
    out.write(`error: ${(e as Error).message}\n`);
    return 1;
  }
}
