// `authorize ACCOUNT`: the OAuth authorization-code flow with PKCE (S256) and a checked
// random state, redirected to a loopback listener on 127.0.0.1:<random port>. With
// --manual the user pastes the final redirect URL instead (headless server over SSH: the
// browser's request to 127.0.0.1 fails on their machine, but the address bar holds the code).
// Where the provider allows it (Microsoft), --device signs in with a device code instead.
// The provider builds the URL and redeems the answer (src/providers/*/signIn.ts); this file
// is the plumbing around it, the identity check, and storing.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { createInterface } from 'node:readline';
import type { Config } from '../config/schema.js';
import { providerFor, tokenIdentity } from '../providers/index.js';
import {
  AuthorizeError,
  checkRedirect,
  type DeviceCode,
  type RedirectFlow,
  type SignInGrant,
} from '../providers/signIn.js';
import { TokenStore, resolveStoreKey, type TokenRecord } from './store.js';

export interface AuthorizeOptions {
  config: Config;
  account: string;
  manual: boolean;
  /** Microsoft: sign in with a device code (RFC 8628) instead of a redirect. */
  device?: boolean;
  /** Sees the device code once issued (tests play the user with it). */
  onDeviceCode?: (code: DeviceCode) => void;
  /** Ends a device sign-in's polling early (the web console's Cancel, the daemon stopping). */
  signal?: AbortSignal;
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream;
  openUrl?: (url: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Give up waiting for the browser after this long (default 10 minutes). */
  timeoutMs?: number;
  /**
   * false (web console, with manual): nothing listens on the redirect port, so the pasted URL
   * is the only way back (the browser is on another machine, or its 127.0.0.1 is not ours).
   */
  listen?: boolean;
  /**
   * Stores the grant: the CLI and the web console hand it to the owner of the state directory
   * (the running daemon's token service, or the CLI's own under the state lock).
   */
  save: (rec: TokenRecord) => Promise<void>;
}

type BeginRedirect = (redirectUri: string, state: string) => Promise<RedirectFlow>;

export async function authorize(opts: AuthorizeOptions): Promise<{ email: string }> {
  const acct = opts.config.accounts.find((a) => a.name === opts.account);
  if (!acct) throw new AuthorizeError(`no account named "${opts.account}" in the config`);
  if (acct.oauth.type === 'app')
    throw new AuthorizeError(
      `account ${acct.name} is app-only (client credentials); it needs no authorize: it signs in with its client secret or certificate`,
    );
  if (acct.oauth.type !== 'user')
    throw new AuthorizeError(
      `account ${acct.name} uses a service account; service accounts do not need authorize (they sign in with keyFile and domain-wide delegation)`,
    );
  const env = opts.env ?? process.env;
  // Open the store first so a wrong key or bad file mode fails before the user consents.
  const store = new TokenStore({
    stateDir: opts.config.stateDir,
    key: resolveStoreKey(opts.config.tokens.encryptionKeyFile, env),
  });
  await store.load();

  const user = { ...acct, oauth: acct.oauth };
  const grant = opts.device
    ? await deviceSignIn(opts, user)
    : await redirectSignIn(opts, acct, (uri, state) => providerFor(acct).signIn.redirect(user, uri, state));
  const now = Date.now();
  const rec: TokenRecord = {
    refreshToken: grant.refreshToken,
    refreshTokenIssuedAt: new Date(now).toISOString(),
    state: 'ok',
    lastRefreshAt: new Date(now).toISOString(),
  };
  if (grant.refreshTokenExpiresAt) rec.refreshTokenExpiresAt = grant.refreshTokenExpiresAt;
  if (grant.accessToken && grant.accessTokenExpiresAt) {
    rec.accessToken = grant.accessToken;
    rec.accessTokenExpiresAt = new Date(grant.accessTokenExpiresAt).toISOString();
    rec.accessTokenFor = tokenIdentity(acct);
  }
  rec.authorizedEmail = grant.email;
  // The one identity check for every re-authorization (CLI and web console): a grant of
  // another user would replace the account's own and send as that user (or be refused by
  // Gmail), so it is refused before anything is stored.
  if (grant.email.toLowerCase() !== acct.email.toLowerCase())
    throw new AuthorizeError(
      `you signed in as ${grant.email}, but account "${acct.name}" sends as ${acct.email}; nothing was stored. Run authorize again and sign in as ${acct.email} (or set the account's email to ${grant.email} if that is the mailbox it should send as)${grant.identityNote ? ` ${grant.identityNote}` : ''}`,
    );
  await opts.save(rec);
  return { email: grant.email };
}

type UserAccount = Config['accounts'][number] & { oauth: { type: 'user' } };

/** The device-code sign-in: the user enters the code elsewhere; we poll until done. */
async function deviceSignIn(opts: AuthorizeOptions, acct: UserAccount): Promise<SignInGrant> {
  const p = providerFor(acct);
  if (!p.signIn.device)
    throw new AuthorizeError(
      `--device is not available for ${p.label} accounts: ${p.signIn.noDevice ?? ''} Use --manual on a machine without a browser.`,
    );
  const device = await p.signIn.device(acct, (ms) => delay(ms, undefined, { signal: opts.signal }));
  const c = device.code;
  opts.output.write(
    `To authorize account "${acct.name}", sign in as ${acct.email}:\n\n  ` +
      (c.message ?? `open ${c.verificationUri} and enter the code ${c.userCode}`) +
      `\n\nWaiting up to ${Math.round(c.expiresInSec / 60)} minutes (polling every ${c.intervalSec} s) ...\n`,
  );
  opts.onDeviceCode?.(c);
  try {
    return await device.poll();
  } catch (e) {
    if (opts.signal?.aborted) throw new AuthorizeError('the device sign-in was cancelled');
    throw e;
  }
}

/**
 * The redirect plumbing both providers share: a random state, the loopback listener on
 * 127.0.0.1 (or --manual paste), one answer, a timeout. The provider builds the URL and
 * turns the redirect's query into a grant.
 */
async function redirectSignIn(
  opts: AuthorizeOptions,
  acct: { name: string; email: string },
  begin: BeginRedirect,
): Promise<SignInGrant> {
  const out = opts.output;
  const loop = opts.listen === false && opts.manual ? await unusedLoopbackPort() : await startLoopback();
  let rl: ReturnType<typeof createInterface> | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const redirectUri = `http://127.0.0.1:${loop.port}/`;
    const state = randomBytes(24).toString('base64url');
    const { url, exchange } = await begin(redirectUri, state);

    out.write(
      `To authorize account "${acct.name}", open this URL in a browser and sign in as ${acct.email}:\n\n  ${url}\n\n`,
    );
    const result = new Promise<URLSearchParams>((resolve, reject) => {
      loop.onRedirect = (q) => {
        try {
          checkRedirect(q, state);
          resolve(q);
          return { ok: true, text: 'Authorization received. You can close this tab and return to the terminal.' };
        } catch (e) {
          reject(e);
          return { ok: false, text: (e as Error).message };
        }
      };
      if (opts.manual) {
        out.write(
          `After you allow access, the browser is sent to ${redirectUri}?state=...&code=... ` +
            `That page may fail to load (nothing listens there on your computer); that is expected.\n` +
            `Copy the whole address from the browser's address bar, paste it here and press Enter:\n`,
        );
        rl = createInterface({ input: opts.input, terminal: false });
        rl.on('line', (line) => {
          const q = parseRedirect(line);
          if (!q) {
            if (line.trim())
              out.write(
                'That does not look like the redirect URL (it should contain code= and state=); paste the full address:\n',
              );
            return;
          }
          try {
            checkRedirect(q, state);
            resolve(q);
          } catch (e) {
            reject(e);
          }
        });
        rl.on('close', () => reject(new AuthorizeError('no redirect URL was pasted (input closed)')));
      } else {
        out.write(
          `Waiting for the browser to come back to ${redirectUri} ...\n(Browser on another machine? Run again with --manual.)\n`,
        );
      }
      const ms = opts.timeoutMs ?? 10 * 60_000;
      timer = setTimeout(
        () => reject(new AuthorizeError(`gave up waiting for the authorization after ${Math.round(ms / 1000)}s`)),
        ms,
      );
    });
    opts.openUrl?.(url);
    return await exchange(await result);
  } finally {
    if (timer) clearTimeout(timer);
    rl?.removeAllListeners('close');
    rl?.close();
    await loop.close();
  }
}

/** Accepts the full redirect URL, or just its query string. */
export function parseRedirect(text: string): URLSearchParams | null {
  const t = text.trim();
  if (!t) return null;
  let q: URLSearchParams;
  try {
    q = new URL(t).searchParams;
  } catch {
    q = new URLSearchParams(t.startsWith('?') ? t.slice(1) : t);
  }
  return q.get('code') || q.get('error') ? q : null;
}

interface Loopback {
  port: number;
  onRedirect?: (q: URLSearchParams) => { ok: boolean; text: string };
  close(): Promise<void>;
}

/** A loopback port that was free a moment ago, for a redirect URI nobody answers. */
async function unusedLoopbackPort(): Promise<Loopback> {
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return { port, close: async () => {} };
}

async function startLoopback(): Promise<Loopback> {
  const loop: Loopback = { port: 0, close: async () => {} };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const q = u.pathname === '/' ? parseRedirect(u.search) : null;
    if (!q || !loop.onRedirect) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    const handler = loop.onRedirect;
    loop.onRedirect = undefined; // one answer per authorization attempt
    const r = handler(q);
    res.writeHead(r.ok ? 200 : 400, {
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'close',
    });
    res.end(page(r.ok, r.text));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  loop.port = (server.address() as { port: number }).port;
  loop.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
      // Let the result page finish sending before dropping what is left.
      setTimeout(() => server.closeAllConnections(), 200).unref();
    });
  return loop;
}

function page(ok: boolean, text: string): string {
  const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const title = ok ? 'xoauth2-bridge: authorized' : 'xoauth2-bridge: authorization failed';
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body style="font-family:sans-serif;max-width:40em;margin:3em auto"><h1>${ok ? '&#10003; Authorized' : '&#10007; Authorization failed'}</h1><p>${esc(text)}</p></body></html>\n`;
}
