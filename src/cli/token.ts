// `token import|status|refresh` and `authorize`: thin CLI layers. Everything that reads or
// changes live token state asks the owner of the state directory (the running daemon over
// its control socket, or this process holding the state lock); `authorize` obtains the grant
// here and hands it to that owner. Each returns the process exit code.
import type { Config } from '../config/schema.js';
import { callOwner } from '../control/client.js';
import type { OpResult } from '../control/ops.js';
import { authorize } from '../oauth/authorize.js';
import type { AccountStatus } from '../oauth/service.js';
import { formatRelative } from '../log/format.js';

type Out = NodeJS.WritableStream;

function findAccount(config: Config, account: string, out: Out) {
  const acct = config.accounts.find((a) => a.name === account);
  if (!acct)
    out.write(`error: no account named "${account}" (configured: ${config.accounts.map((a) => a.name).join(', ')})\n`);
  return acct;
}

async function readAll(input: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of input as AsyncIterable<Buffer | string>) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a refresh token from stdin and hands it to the owner; a running daemon answers once the grant is in use. */
export async function tokenImport(
  config: Config,
  account: string,
  input: NodeJS.ReadableStream,
  out: Out,
): Promise<number> {
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
  return said(
    await callOwner(config, 'token.import', { account, refreshToken: token }).then((r) => r.result as OpResult, fail),
    out,
  );
}

function fail(e: unknown): OpResult {
  return { ok: false, message: (e as Error).message };
}

function said(r: OpResult, out: Out): number {
  out.write(r.ok ? `${r.message}\n` : `error: ${r.message}\n`);
  return r.ok ? 0 : 1;
}

/** The daemon's live view when it runs (so it never disagrees with /readyz), else the store. Exit 0 when every account is ok, 1 otherwise, 2 if unreadable. */
export async function tokenStatus(config: Config, opts: { json: boolean }, out: Out): Promise<number> {
  let rows: AccountStatus[];
  try {
    rows = (await callOwner(config, 'token.status')).result as AccountStatus[];
  } catch (e) {
    out.write(`error: ${(e as Error).message}\n`);
    return 2;
  }
  if (opts.json) out.write(JSON.stringify(rows, null, 2) + '\n');
  else out.write(formatStatus(rows, Date.now()));
  return rows.every((r) => r.state === 'ok') ? 0 : 1;
}

function ago(iso: string | null, now: number): string {
  return iso ? formatRelative(Date.parse(iso), now) : '-';
}

export function formatStatus(rows: AccountStatus[], now: number): string {
  const table = [['ACCOUNT', 'EMAIL', 'STATE', 'ACCESS TOKEN EXPIRES', 'LAST REFRESH', 'LAST ERROR']];
  for (const r of rows) {
    const exp = r.accessTokenExpiresAt
      ? Date.parse(r.accessTokenExpiresAt) <= now
        ? 'expired'
        : ago(r.accessTokenExpiresAt, now)
      : '-';
    table.push([r.account, r.email, r.state, exp, ago(r.lastRefreshAt, now), r.lastError ?? '-']);
  }
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  return (
    table.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n'
  );
}

/** Forces a refresh now, in the daemon when it runs. */
export async function tokenRefresh(config: Config, account: string, out: Out): Promise<number> {
  const acct = findAccount(config, account, out);
  if (!acct) return 1;
  return said(await callOwner(config, 'token.refresh', { account }).then((r) => r.result as OpResult, fail), out);
}

export async function authorizeCommand(
  config: Config,
  account: string,
  opts: { manual: boolean; device?: boolean },
  input: NodeJS.ReadableStream,
  out: Out,
): Promise<number> {
  const acct = findAccount(config, account, out);
  if (!acct) return 1;
  let stored: OpResult = { ok: false, message: 'no grant was obtained' };
  try {
    const { email } = await authorize({
      config,
      account,
      manual: opts.manual,
      device: opts.device,
      input,
      output: out,
      save: async (rec) => {
        stored = (
          await callOwner(config, 'token.import', {
            account,
            refreshToken: rec.refreshToken,
            ...(rec.authorizedEmail ? { authorizedEmail: rec.authorizedEmail } : {}),
          })
        ).result as OpResult;
      },
    });
    if (!stored.ok) return said(stored, out);
    out.write(`Authorized account ${account} as ${email}. ${stored.message}\n`);
    return 0;
  } catch (e) {
    out.write(`error: ${(e as Error).message}\n`);
    return 1;
  }
}

/** `reload`: the running daemon re-reads its config (like SIGHUP) and says whether it took it. */
export async function reloadCommand(config: Config, out: Out): Promise<number> {
  return said(await callOwner(config, 'reload').then((r) => r.result as OpResult, fail), out);
}
