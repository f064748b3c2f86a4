// `authorize ACCOUNT`: the OAuth authorization-code flow with PKCE (S256) and a checked
// random state, redirected to a loopback listener on 127.0.0.1:<random port>. With
// --manual the user pastes the final redirect URL instead (headless server over SSH: the
// browser's request to 127.0.0.1 fails on their machine, but the address bar holds the code).
// Microsoft accounts may also sign in with the device code (--device); Google refuses the
// Gmail scope in the device flow.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { createInterface } from 'node:readline';
import { CodeChallengeMethod } from 'google-auth-library';
import type { Config } from '../config/schema.js';
import * as oauth from 'oauth4webapi';
import { classifyMicrosoftError } from '../providers/microsoft/errors.js';
import {
  type DeviceCode,
  type MicrosoftGrant,
  type MicrosoftRequest,
  microsoftCodeFlow,
  microsoftCredentials,
  microsoftDeviceFlow,
} from '../providers/microsoft/tokens.js';
import { createUserClient } from '../providers/google/client.js';
import { DEFAULT_TIMEOUT_MS, classifyTokenError, tokenAgent } from '../providers/http.js';
import {
  missingScopes,
  providerFor,
  type ProviderId,
  scopesFor,
  signInScopesFor,
  tokenIdentity,
} from '../providers/index.js';
import { addSecret, redactString } from '../log/redact.js';
import { TokenStore, resolveStoreKey, type TokenRecord } from './store.js';

export interface AuthorizeOptions {
  config: Config;
  account: string;
  manual: boolean;
  /** Microsoft: sign in with a device code (RFC 8628) instead of a redirect. */
  device?: boolean;
  /** Sees the device code once issued (tests play the user with it). */
  onDeviceCode?: (code: DeviceCode) => void;
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

export class AuthorizeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthorizeError';
  }
}

/** What a sign-in obtained, before it is stored. */
interface Grant {
  refreshToken: string;
  refreshTokenExpiresAt?: string;
  accessToken?: string;
  accessTokenExpiresAt?: number;
  email: string | null;
}

/** A provider's redirect sign-in: the URL to open and how the redirect's query becomes a grant. */
type BeginRedirect = (
  redirectUri: string,
  state: string,
) => Promise<{ url: string; exchange(q: URLSearchParams): Promise<Grant> }>;

export async function authorize(opts: AuthorizeOptions): Promise<{ email: string | null }> {
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
  const device = providerFor(acct).deviceSignIn;
  if (opts.device && device !== true)
    throw new AuthorizeError(`--device is not available for ${providerFor(acct).label} accounts: ${device}`);
  const env = opts.env ?? process.env;
  // Open the store first so a wrong key or bad file mode fails before the user consents.
  const store = new TokenStore({
    stateDir: opts.config.stateDir,
    key: resolveStoreKey(opts.config.tokens.encryptionKeyFile, env),
  });
  await store.load();

  const grant = await SIGN_IN[acct.provider](opts, { ...acct, oauth: acct.oauth });
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
  if (grant.email) rec.authorizedEmail = grant.email;
  // The one identity check for every re-authorization (CLI and web console): a grant of
  // another user would replace the account's own and send as that user (or be refused by
  // Gmail), so it is refused before anything is stored.
  if (grant.email && grant.email.toLowerCase() !== acct.email.toLowerCase())
    throw new AuthorizeError(
      `you signed in as ${grant.email}, but account "${acct.name}" sends as ${acct.email}; nothing was stored. Run authorize again and sign in as ${acct.email} (or set the account's email to ${grant.email} if that is the mailbox it should send as)`,
    );
  await opts.save(rec);
  return { email: grant.email };
}

type UserAccount = Config['accounts'][number] & { oauth: { type: 'user' } };

/** Each provider's interactive sign-in (a new provider adds its line; the type checker asks for it). */
const SIGN_IN: Record<ProviderId, (opts: AuthorizeOptions, acct: UserAccount) => Promise<Grant>> = {
  google: (opts, acct) => redirectSignIn(opts, acct, googleRedirect(acct)),
  microsoft: (opts, acct) => microsoftSignIn(opts, acct),
};

function googleRedirect(acct: UserAccount): BeginRedirect {
  return async (redirectUri, state) => {
    const client = createUserClient(acct, { redirectUri });
    const { codeVerifier, codeChallenge } = await client.generateCodeVerifierAsync();
    addSecret(codeVerifier);
    const url = client.generateAuthUrl({
      access_type: 'offline',
      prompt: 'consent',
      scope: signInScopesFor(acct),
      state,
      code_challenge: codeChallenge!,
      code_challenge_method: CodeChallengeMethod.S256,
      login_hint: acct.email,
    });
    return {
      url,
      async exchange(q) {
        const code = checkRedirect(q, state);
        addSecret(code);
        let tokens;
        try {
          tokens = (await client.getToken({ code, codeVerifier, redirect_uri: redirectUri })).tokens;
        } catch (e) {
          throw new AuthorizeError(`exchanging the authorization code failed: ${classifyTokenError(e).message}`);
        }
        const raw = tokens as typeof tokens & { refresh_token_expires_in?: number };
        if (!tokens.refresh_token)
          throw new AuthorizeError(
            'Google returned no refresh token. Remove the app at https://myaccount.google.com/permissions and run authorize again.',
          );
        addSecret(tokens.refresh_token);
        if (tokens.access_token) addSecret(tokens.access_token);
        // Google's consent screen lets the user untick a scope; such a grant cannot send.
        const missing = missingScopes(acct, tokens.scope);
        if (missing.length)
          throw new AuthorizeError(
            `the grant lacks ${missing.join(' and ')} (unticked on the consent screen?); run authorize again and allow sending email, nothing was stored`,
          );
        const email = emailFromIdToken(tokens.id_token);
        // Asked for with openid + email: without it nobody can tell whose mailbox this grant opens.
        if (!email)
          throw new AuthorizeError(
            'Google returned no id_token naming the signed-in user (openid email were asked for); nothing was stored. Run authorize again.',
          );
        const g: Grant = { refreshToken: tokens.refresh_token, email };
        if (raw.refresh_token_expires_in)
          g.refreshTokenExpiresAt = new Date(Date.now() + raw.refresh_token_expires_in * 1000).toISOString();
        if (tokens.access_token && tokens.expiry_date) {
          g.accessToken = tokens.access_token;
          g.accessTokenExpiresAt = tokens.expiry_date;
        }
        return g;
      },
    };
  };
}

/** Microsoft delegated sign-in through oauth4webapi: code + PKCE in a browser, or the device code. */
async function microsoftSignIn(opts: AuthorizeOptions, acct: UserAccount): Promise<Grant> {
  const o = acct.oauth;
  let credentials;
  try {
    credentials = await microsoftCredentials(o, acct.name);
  } catch (e) {
    throw new AuthorizeError((e as Error).message);
  }
  const req: MicrosoftRequest = {
    oauth: o,
    credentials,
    agent: tokenAgent(o.caFile),
    timeoutMs: DEFAULT_TIMEOUT_MS,
    scopes: scopesFor(acct),
  };
  const failed = (what: string, e: unknown): AuthorizeError => {
    if (e instanceof AuthorizeError) return e;
    const c = classifyMicrosoftError(e);
    if (c) return new AuthorizeError(`${what} failed: ${c.message}`);
    if (e instanceof oauth.AuthorizationResponseError)
      return new AuthorizeError(
        e.error === 'access_denied'
          ? 'access was denied in the browser'
          : `authorization failed: ${e.error} ${e.error_description ?? ''}`.trim(),
      );
    return new AuthorizeError(`${what} failed: ${redactString((e as Error).message)}`);
  };
  const toGrant = (g: MicrosoftGrant): Grant => {
    addSecret(g.refreshToken);
    addSecret(g.accessToken);
    // As for Google: a grant without what the transport needs cannot send; store nothing.
    const missing = missingScopes(acct, g.scope);
    if (missing.length)
      throw new AuthorizeError(
        `the grant lacks ${missing.join(' and ')} (not consented?); grant it in Entra ID (admin consent if required) and run authorize again, nothing was stored`,
      );
    return {
      refreshToken: g.refreshToken,
      accessToken: g.accessToken,
      accessTokenExpiresAt: Date.now() + (g.expiresInSec ?? 3600) * 1000,
      email: null,
    };
  };
  if (!opts.device)
    return redirectSignIn(opts, acct, async (redirectUri, state) => {
      const flow = await microsoftCodeFlow(req, { redirectUri, state, loginHint: acct.email });
      return {
        url: flow.url,
        async exchange(q) {
          checkRedirect(q, state);
          try {
            return toGrant(await flow.exchange(q));
          } catch (e) {
            throw failed('exchanging the authorization code', e);
          }
        },
      };
    });
  let device;
  try {
    device = await microsoftDeviceFlow(req, (ms) => delay(ms));
  } catch (e) {
    throw failed('starting the device sign-in', e);
  }
  const c = device.code;
  opts.output.write(
    `To authorize account "${acct.name}", sign in as ${acct.email}:\n\n  ` +
      (c.message ?? `open ${c.verificationUri} and enter the code ${c.userCode}`) +
      `\n\nWaiting up to ${Math.round(c.expiresInSec / 60)} minutes (polling every ${c.intervalSec} s) ...\n`,
  );
  opts.onDeviceCode?.(c);
  try {
    return toGrant(await device.poll());
  } catch (e) {
    if (e instanceof oauth.ResponseBodyError && (e.error === 'expired_token' || e.error === 'authorization_pending'))
      throw new AuthorizeError(
        'the device code expired before the sign-in was completed; run authorize --device again',
      );
    if (e instanceof oauth.ResponseBodyError && (e.error === 'authorization_declined' || e.error === 'access_denied'))
      throw new AuthorizeError('the sign-in was declined');
    throw failed('the device sign-in', e);
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
): Promise<Grant> {
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

function checkRedirect(q: URLSearchParams, state: string): string {
  // State first: an error= from someone else's redirect is as untrusted as a code.
  if (q.get('state') !== state)
    throw new AuthorizeError(
      'state mismatch: this redirect does not belong to this authorization attempt; rejected. Run authorize again.',
    );
  const err = q.get('error');
  if (err)
    throw new AuthorizeError(
      err === 'access_denied' ? 'access was denied in the browser' : `authorization failed: ${err}`,
    );
  const code = q.get('code');
  if (!code) throw new AuthorizeError('the redirect carries no authorization code');
  return code;
}

/** The id_token came straight from the token endpoint over verified TLS, so its payload is trusted as-is. */
function emailFromIdToken(idToken: string | null | undefined): string | null {
  if (!idToken) return null;
  try {
    const payload = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      email?: unknown;
    };
    return typeof payload.email === 'string' ? payload.email : null;
  } catch {
    return null;
  }
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
