// The token service: per-account access tokens for the upstream, kept fresh by a node-cron
// job, with one refresh in flight per account, refresh-token rotation persisted before the
// new access token is used, and dead grants (invalid_grant) turned into a quiet
// `needs-reauth` state instead of a retry storm.
import cron, { type ScheduledTask } from 'node-cron';
import type { OAuth2Client } from 'google-auth-library';
import type { AccountConfig, Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { addSecret, redactString } from '../log/redact.js';
import type { AccountHealth, AccountState, TokenSource } from '../types.js';
import {
  accountIdentity,
  classifyTokenError,
  createUserClient,
  readServiceAccountKey,
  serviceAccountToken,
  tokenAgent,
  DEFAULT_TIMEOUT_MS,
  type HttpOptions,
  type ServiceAccountKey,
  type TokenResponse,
} from './client.js';
import { classifyMicrosoftError, microsoftAppToken, microsoftCredentials, microsoftRefresh, type MicrosoftCredentials, type MicrosoftOAuth } from '../providers/microsoft.js';
import { TokenStore, resolveStoreKey, type StoreData, type TokenRecord } from './store.js';
import { scopesFor } from './scopes.js';

export class NeedsReauthError extends Error {
  constructor(
    readonly account: string,
    reason: string,
  ) {
    super(`account ${account} needs re-authorization: ${reason}`);
    this.name = 'NeedsReauthError';
  }
}

export interface AccountStatus {
  account: string;
  email: string;
  state: AccountState;
  accessTokenExpiresAt: string | null;
  lastRefreshAt: string | null;
  lastError: string | null;
  refreshTokenIssuedAt: string | null;
  /** Known end of a time-limited grant (refresh_token_expires_in), e.g. an app in "Testing". */
  refreshTokenExpiresAt: string | null;
}

/** The exact command that fixes a dead grant, for log lines and CLI output. */
export function fixHint(account: AccountConfig): string {
  if (account.oauth.type === 'app')
    return `check the app registration in Entra ID (client secret or certificate, SMTP.SendAsApp with admin consent, the Exchange service principal and its mailbox permission: see README "Microsoft 365"), then run: xoauth2-bridge token refresh ${account.name}`;
  if (account.oauth.type === 'service-account') {
    // The Admin console's domain-wide delegation takes the key's numeric client ID, not its email.
    let clientId: string | undefined;
    try {
      clientId = readServiceAccountKey(account.oauth.keyFile).client_id;
    } catch {
      /* an unreadable key file is its own error; the hint still names scope and subject */
    }
    return `check the key file and the domain-wide delegation of the service account (Google Admin console > Security > API controls > Domain-wide delegation: ${clientId ? `client ID ${clientId}` : "the key file's client_id"}, scope ${scopesFor(account).join(' ')}${account.oauth.subject ? `, subject ${account.oauth.subject}` : ''}), then run: xoauth2-bridge token refresh ${account.name}`;
  }
  return `run: xoauth2-bridge authorize ${account.name}   (or pipe a refresh token into: xoauth2-bridge token import ${account.name})`;
}

/** Stored errors predating the redaction of token-endpoint bodies are scrubbed on the way out. */
function redactOrNull(s: string | undefined): string | null {
  return s ? redactString(s) : null;
}

/** Status as `token status` shows it, from a stored record (works without the daemon). */
export function statusFromRecord(account: AccountConfig, rec: TokenRecord | undefined): AccountStatus {
  const noToken = account.oauth.type === 'user' && !rec?.refreshToken;
  return {
    account: account.name,
    email: account.email,
    state: noToken ? 'needs-reauth' : (rec?.state ?? 'ok'),
    accessTokenExpiresAt: rec?.accessTokenExpiresAt ?? null,
    lastRefreshAt: rec?.lastRefreshAt ?? null,
    lastError: noToken ? (redactOrNull(rec?.lastError) ?? 'no refresh token stored') : redactOrNull(rec?.lastError),
    refreshTokenIssuedAt: rec?.refreshTokenIssuedAt ?? null,
    refreshTokenExpiresAt: rec?.refreshTokenExpiresAt ?? null,
  };
}

// A cached access token is handed out until this close to expiry (the upstream needs a
// little time to use it; a tenth of the lifetime for short-lived tokens); the cron job
// refreshes much earlier (tokens.refreshAhead).
const EXPIRY_SKEW_MS = 60_000;
function skew(s: { expiresAt?: number; obtainedAt?: number }): number {
  if (s.expiresAt === undefined || s.obtainedAt === undefined) return EXPIRY_SKEW_MS;
  return Math.min(EXPIRY_SKEW_MS, (s.expiresAt - s.obtainedAt) / 10);
}
// The upstream rejected a token. A caller that names the rejected token (the SMTP upstream)
// is answered by the service alone: a newer token if there is one, else the refresh in
// flight, else one new refresh; a token that answered a rejection and is refused before it
// ever worked means the grant is dead (see replaceRejected). A caller that cannot name it
// (`force`) gets a new token whatever its age, and one that answered a rejection less than
// FORCED_SHARE_MS ago is shared with it instead of starting another request.
const FORCED_SHARE_MS = 5_000;
// Refresh idle accounts at least this often so refresh tokens never expire from disuse.
const IDLE_REFRESH_MS = 20 * 3600_000;
const BACKOFF_BASE_MS = 5_000;
/** How often an unusable token store is read again. */
const STORE_RETRY_MS = 5_000;
const BACKOFF_MAX_MS = 5 * 60_000;
const DAY_MS = 86400_000;
// Google revokes refresh tokens of apps in "Testing" publishing status 7 days after issue.
const TESTING_LIFETIME_MS = 7 * DAY_MS;
const TESTING_WARN_AFTER_MS = 5 * DAY_MS;

/** A failure on our side (config file, disk), described by its own message. */
class LocalError extends Error {}
/** A problem with the account's own config (secret file, key file): not the endpoint's fault. */
class AccountConfigError extends LocalError {}

interface Slot {
  cfg: AccountConfig;
  /** Our view of the stored record (refresh token, dates, state, last error). */
  rec: TokenRecord;
  state: AccountState;
  accessToken?: string;
  expiresAt?: number;
  obtainedAt?: number;
  /** The current access token came from a forced refresh (an upstream rejection). */
  forced?: boolean;
  /** The current access token answered a rejection and has not worked upstream yet: if it is refused too, the grant is dead. */
  unproven?: boolean;
  inflight?: Promise<string>;
  failures: number;
  backoffUntil: number;
  client?: OAuth2Client;
  /** Microsoft accounts: the client secret or certificate key, read when the account is set up. */
  msCredentials?: Promise<MicrosoftCredentials>;
  saKey?: ServiceAccountKey;
  configError?: string;
  /** Persisting a rotated refresh token, started from the library's 'tokens' event. */
  pendingRotation?: Promise<void>;
  /** JSON of the stored record as we last read or wrote it: a difference means another process changed it. */
  seen: string;
  lapseWarnedAt?: number;
  /** Held by the upstream's verdict (e.g. SMTP AUTH disabled) until the fix is made; re-checked at `until`. */
  hold?: { reason: string; until: number };
  /** The refresh token registered with the redactor. */
  liveRefreshToken?: string;
}

export interface TokenServiceOptions {
  config: Config;
  log: Logger;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
  /** HTTP timeout for the token endpoint (tests use a short one). */
  http?: HttpOptions;
  /** Refresh counters (implemented by src/metrics). */
  metrics?: { tokenRefresh(account: string, ok: boolean): void };
}

export class TokenService implements TokenSource, AccountHealth {
  private config: Config;
  private readonly log: Logger;
  private readonly metrics?: { tokenRefresh(account: string, ok: boolean): void };
  private readonly env: NodeJS.ProcessEnv;
  private readonly now: () => number;
  private readonly http: HttpOptions;
  private store: TokenStore;
  private keyFile: string | null;
  private readonly slots = new Map<string, Slot>();
  private readonly listeners: ((account: string, state: AccountState) => void)[] = [];
  private task?: ScheduledTask;
  private scheduleRunning?: Promise<void>;
  private lastData: StoreData = { accounts: {} };
  /** Why the token store cannot be used (mode, damage, key); while set, every account is held and nothing is written. */
  private storeError: string | null = null;
  /** The store could not even be opened (key file); retried on the next load. */
  private storeOpenError: string | null = null;
  private storeRetry?: NodeJS.Timeout;

  constructor(opts: TokenServiceOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'tokens' });
    this.env = opts.env ?? process.env;
    this.now = opts.now ?? Date.now;
    this.http = opts.http ?? {};
    this.metrics = opts.metrics;
    this.keyFile = opts.config.tokens.encryptionKeyFile;
    this.store = this.openStore();
  }

  private openStore(): TokenStore {
    try {
      this.storeOpenError = null;
      return new TokenStore({ stateDir: this.config.stateDir, key: resolveStoreKey(this.keyFile, this.env) });
    } catch (e) {
      this.storeOpenError = (e as Error).message;
      // Only for its path: nothing is read or written while storeOpenError is set.
      return new TokenStore({ stateDir: this.config.stateDir, key: null });
    }
  }

  private async loadStore(): Promise<StoreData> {
    if (this.storeOpenError) this.store = this.openStore();
    if (this.storeOpenError) throw new Error(this.storeOpenError);
    return this.store.load();
  }

  get storeFile(): string {
    return this.store.file;
  }

  /**
   * Loads the store and sets up every account. An unusable store (group-readable, damaged,
   * wrong key) does not stop the daemon: mail is still accepted and spooled, every account
   * is held with the store's message, and the store is checked again until it is repaired.
   */
  async init(): Promise<void> {
    let data: StoreData = { accounts: {} };
    try {
      data = await this.loadStore();
    } catch (e) {
      this.storeError = redactString((e as Error).message);
    }
    this.lastData = data;
    if (this.store.encrypted && !this.storeError) await this.store.sealAtRest(this.log);
    for (const acct of this.config.accounts) this.slots.set(acct.name, this.storeError ? this.heldSlot(acct) : this.newSlot(acct, data.accounts[acct.name]));
    if (this.storeError) {
      this.log.error(
        `token store unusable: ${this.storeError}. Mail is still accepted and spooled; every account's mail is held until the store is repaired (checked every ${STORE_RETRY_MS / 1000} s)`,
        { file: this.store.file },
      );
      this.storeRetry = setInterval(() => void this.retryStore(), STORE_RETRY_MS);
      this.storeRetry.unref();
    }
  }

  /** An account while the store is unusable: nothing known, held with the store's message. */
  private heldSlot(acct: AccountConfig): Slot {
    return { cfg: acct, rec: { state: 'error', lastError: this.storeError ?? undefined }, state: 'error', failures: 0, backoffUntil: 0, seen: '' };
  }

  /** Tries the unusable store again; once it loads, every account starts from what it holds. */
  private async retryStore(): Promise<void> {
    if (!this.storeError) return;
    let data: StoreData;
    try {
      data = await this.loadStore();
    } catch (e) {
      const msg = redactString((e as Error).message);
      if (msg !== this.storeError) {
        this.storeError = msg;
        for (const s of this.slots.values()) s.rec.lastError = msg;
        this.log.error(`token store still unusable: ${msg}`, { file: this.store.file });
      }
      return;
    }
    this.storeError = null;
    clearInterval(this.storeRetry);
    this.storeRetry = undefined;
    this.lastData = data;
    this.log.info('token store readable again; accounts resume', { file: this.store.file });
    for (const acct of this.config.accounts) {
      const fresh = this.newSlot(acct, data.accounts[acct.name]);
      const target = fresh.state;
      fresh.state = 'error';
      this.slots.set(acct.name, fresh);
      this.setState(fresh, target);
    }
  }

  private newSlot(acct: AccountConfig, rec: TokenRecord | undefined): Slot {
    const s: Slot = { cfg: acct, rec: rec ? { ...rec } : { state: 'ok' }, state: 'ok', failures: 0, backoffUntil: 0, seen: JSON.stringify(rec ?? null) };
    this.registerRefreshToken(s, s.rec.refreshToken);
    this.prepare(s);
    this.adoptStoredAccessToken(s, rec);
    if (s.configError) {
      s.state = 'error';
      this.log.error(`account ${acct.name}: ${s.configError}`, { account: acct.name });
    } else if (acct.oauth.type === 'user' && !s.rec.refreshToken) {
      s.state = 'needs-reauth';
      this.log.warn(`account ${acct.name} has no refresh token yet; its mail is held. Fix: ${fixHint(acct)}`, { account: acct.name });
    } else if (rec?.state === 'needs-reauth') {
      s.state = 'needs-reauth';
      this.log.error(
        `account ${acct.name} needs re-authorization (${rec.lastError ?? 'grant refused'}); its mail is held. Fix: ${fixHint(acct)}`,
        { account: acct.name },
      );
    }
    this.warnLapsing(s);
    return s;
  }

  /** Builds the library client / reads the key now, so config mistakes show at start. */
  private prepare(s: Slot): void {
    s.client = undefined;
    s.saKey = undefined;
    s.msCredentials = undefined;
    s.configError = undefined;
    try {
      if (s.cfg.provider === 'microsoft' && s.cfg.oauth.type !== 'service-account') {
        const p = microsoftCredentials(s.cfg.oauth, s.cfg.name);
        p.catch(() => {}); // reported by the first refresh, as a config error
        s.msCredentials = p;
      } else if (s.cfg.oauth.type === 'user') {
        const client = createUserClient(s.cfg, { http: this.http });
        // Rotation: the library emits the raw response (with the new refresh token) and then
        // keeps the old one in its credentials; we persist the new one before using the access token.
        client.on('tokens', (t: { refresh_token?: string | null; refresh_token_expires_in?: number }) => {
          if (t.refresh_token && t.refresh_token !== s.rec.refreshToken) {
            const p = this.persistRotation(s, t.refresh_token, t.refresh_token_expires_in);
            p.catch(() => {});
            s.pendingRotation = p;
          } else if (t.refresh_token_expires_in) {
            // A time-limited grant (e.g. app in "Testing"): remember when it lapses, for the warning.
            s.rec.refreshTokenExpiresAt = new Date(this.now() + t.refresh_token_expires_in * 1000).toISOString();
          }
        });
        s.client = client;
      } else if (s.cfg.oauth.type === 'service-account') {
        s.saKey = readServiceAccountKey(s.cfg.oauth.keyFile);
        addSecret(s.saKey.private_key, { slot: `sa-key:${s.cfg.name}` });
      }
    } catch (e) {
      s.configError = (e as Error).message;
    }
  }

  private adoptStoredAccessToken(s: Slot, rec: TokenRecord | undefined): boolean {
    if (!rec?.accessToken || !rec.accessTokenExpiresAt || rec.accessTokenFor !== accountIdentity(s.cfg)) return false;
    const exp = Date.parse(rec.accessTokenExpiresAt);
    if (!(exp > this.now()) || (s.expiresAt !== undefined && exp <= s.expiresAt)) return false;
    s.accessToken = rec.accessToken;
    s.expiresAt = exp;
    s.obtainedAt = rec.lastRefreshAt ? Date.parse(rec.lastRefreshAt) : undefined;
    s.forced = false;
    s.unproven = false;
    addSecret(rec.accessToken, { slot: `access:${s.cfg.name}`, expiresAt: exp });
    return true;
  }

  /** The redactor keeps an account's current refresh token and the one before it (still valid for a while after a rotation). */
  private registerRefreshToken(s: Slot, rt: string | undefined): void {
    if (!rt) return;
    const name = s.cfg.name;
    if (s.liveRefreshToken && s.liveRefreshToken !== rt) addSecret(s.liveRefreshToken, { slot: `refresh-prev:${name}` });
    s.liveRefreshToken = rt;
    addSecret(rt, { slot: `refresh:${name}` });
  }

  private slot(account: string): Slot {
    const s = this.slots.get(account);
    if (!s) throw new Error(`unknown account "${account}"`);
    return s;
  }

  // ---- TokenSource ----

  async getAccessToken(account: string, opts: { force?: boolean; rejected?: string } = {}): Promise<string> {
    const s = this.slot(account);
    if (this.storeError) throw new Error(`account ${account}: token store unusable: ${this.storeError}`);
    if (s.state === 'needs-reauth') throw new NeedsReauthError(account, s.rec.lastError ?? 'grant refused');
    if (opts.rejected !== undefined) return this.replaceRejected(s, opts.rejected);
    const t = this.now();
    const valid = s.accessToken !== undefined && s.expiresAt !== undefined && s.expiresAt > t;
    if (!opts.force && valid && s.expiresAt! - t > skew(s)) return s.accessToken!;
    if (s.inflight) return s.inflight;
    if (opts.force && valid && s.forced && s.obtainedAt !== undefined && t - s.obtainedAt < FORCED_SHARE_MS) return s.accessToken!;
    if (t < s.backoffUntil) {
      // The endpoint failed recently: keep using a still-valid token rather than hammering it.
      if (!opts.force && valid) return s.accessToken!;
      throw new Error(`account ${account}: ${s.rec.lastError ?? 'token refresh failing'}; next attempt in ${Math.ceil((s.backoffUntil - t) / 1000)}s`);
    }
    return this.startRefresh(s, opts.force === true);
  }

  /**
   * The one owner of "the upstream refused this token" (single-flight keyed on the rejected
   * token): every connection that saw `rejected` refused gets the same answer, and a
   * rejection leads to at most one token request.
   * - a refresh is in flight: join it (its token is newer than any handed out so far; the
   *   current one may be the very token whose rejection started it);
   * - a newer valid token exists: it is the answer (someone already replaced `rejected`);
   * - `rejected` itself answered a rejection and never worked: the grant is dead (NeedsReauthError);
   * - otherwise one forced refresh, whatever the age of `rejected` (a revoked token can be seconds old).
   */
  private replaceRejected(s: Slot, rejected: string): Promise<string> {
    const name = s.cfg.name;
    const t = this.now();
    const valid = s.accessToken !== undefined && s.expiresAt !== undefined && s.expiresAt > t;
    if (s.inflight) return s.inflight;
    if (valid && s.accessToken !== rejected) return Promise.resolve(s.accessToken!);
    if (valid && s.unproven) return Promise.reject(new NeedsReauthError(name, 'the upstream refused a freshly refreshed access token too'));
    if (t < s.backoffUntil)
      return Promise.reject(new Error(`account ${name}: ${s.rec.lastError ?? 'token refresh failing'}; next attempt in ${Math.ceil((s.backoffUntil - t) / 1000)}s`));
    this.log.info('the upstream refused the access token; getting a new one', { account: name });
    return this.startRefresh(s, true);
  }

  /** The upstream accepted `token` (an AUTH succeeded with it): a later rejection of it is a new revocation, not a dead grant. */
  tokenWorked(account: string, token: string): void {
    const s = this.slots.get(account);
    if (s && s.accessToken === token) s.unproven = false;
  }

  /** Forced refresh now (CLI `token refresh`); ignores backoff and tries even a needs-reauth account once. */
  async refresh(account: string): Promise<void> {
    const s = this.slot(account);
    s.hold = undefined; // the operator says it is fixed: try again
    if (this.storeError) throw new Error(`account ${account}: token store unusable: ${this.storeError}`);
    if (s.inflight) {
      await s.inflight;
      return;
    }
    await this.startRefresh(s);
  }

  private startRefresh(s: Slot, forced = false): Promise<string> {
    const p = this.doRefresh(s, forced).finally(() => {
      if (s.inflight === p) s.inflight = undefined;
    });
    s.inflight = p;
    return p;
  }

  private async doRefresh(s: Slot, forced: boolean): Promise<string> {
    const name = s.cfg.name;
    const usedRt = s.rec.refreshToken;
    let tokens: TokenResponse;
    try {
      if (s.configError) throw new AccountConfigError(s.configError);
      if (s.msCredentials && s.cfg.oauth.type !== 'service-account') {
        tokens = await this.microsoftRefresh(s, s.cfg.oauth, usedRt);
      } else if (s.cfg.oauth.type === 'user') {
        if (!usedRt) {
          await this.setNeedsReauth(s, 'no refresh token stored', undefined);
          throw new NeedsReauthError(name, 'no refresh token stored');
        }
        const client = s.client!;
        client.setCredentials({ refresh_token: usedRt });
        this.log.debug('refreshing access token', { account: name });
        const r = await client.refreshAccessToken();
        const rotation = s.pendingRotation;
        s.pendingRotation = undefined;
        if (rotation) await rotation;
        const c = r.credentials;
        if (!c.access_token) throw new Error('token endpoint returned no access_token');
        // The library stamps expiry with the real clock; keep it relative to ours.
        const expiresAt = c.expiry_date ? this.now() + (c.expiry_date - Date.now()) : this.now() + 3600_000;
        tokens = { access_token: c.access_token, expiry_date: expiresAt };
      } else if (s.cfg.oauth.type === 'service-account') {
        this.log.debug('requesting service-account access token', { account: name });
        const res = await serviceAccountToken(s.cfg.oauth, s.saKey!, Math.floor(Date.now() / 1000), this.http, scopesFor(s.cfg));
        if (!res?.access_token) throw new Error('token endpoint returned no access_token');
        tokens = { access_token: res.access_token, expiry_date: this.now() + (res.expires_in ?? 3600) * 1000 };
      } else {
        throw new AccountConfigError(`oauth.type ${s.cfg.oauth.type} is not supported for provider ${s.cfg.provider}`);
      }
    } catch (err) {
      throw await this.refreshFailed(s, err, usedRt);
    }
    return this.refreshSucceeded(s, tokens.access_token, tokens.expiry_date!, forced);
  }

  /**
   * Microsoft: delegated refresh (every answer rotates the refresh token, and the fake makes
   * each one usable once) or app-only client credentials. A rotated refresh token is on
   * disk before the new access token is handed out.
   */
  private async microsoftRefresh(s: Slot, o: MicrosoftOAuth, usedRt: string | undefined): Promise<TokenResponse> {
    const name = s.cfg.name;
    let credentials: MicrosoftCredentials;
    try {
      credentials = await s.msCredentials!;
    } catch (e) {
      throw new AccountConfigError((e as Error).message);
    }
    const req = { oauth: o, credentials, agent: tokenAgent(o.caFile), timeoutMs: this.http.timeoutMs ?? DEFAULT_TIMEOUT_MS, scopes: scopesFor(s.cfg) };
    if (o.type === 'app') {
      this.log.debug('requesting app-only access token', { account: name });
      const r = await microsoftAppToken(req);
      return { access_token: r.access_token, expiry_date: this.now() + (r.expires_in ?? 3600) * 1000 };
    }
    if (!usedRt) {
      await this.setNeedsReauth(s, 'no refresh token stored', undefined);
      throw new NeedsReauthError(name, 'no refresh token stored');
    }
    this.log.debug('refreshing access token', { account: name });
    const r = await microsoftRefresh(req, usedRt);
    if (r.refresh_token && r.refresh_token !== usedRt) await this.persistRotation(s, r.refresh_token, undefined);
    return { access_token: r.access_token, expiry_date: this.now() + (r.expires_in ?? 3600) * 1000 };
  }

  private async refreshSucceeded(s: Slot, accessToken: string, expiresAt: number, forced: boolean): Promise<string> {
    const name = s.cfg.name;
    const t = this.now();
    addSecret(accessToken, { slot: `access:${name}`, expiresAt });
    s.accessToken = accessToken;
    s.expiresAt = expiresAt;
    s.obtainedAt = t;
    s.forced = forced;
    s.unproven = forced;
    s.failures = 0;
    s.backoffUntil = 0;
    const iso = new Date(t).toISOString();
    const expIso = new Date(expiresAt).toISOString();
    const accessTokenFor = accountIdentity(s.cfg);
    s.rec = { ...s.rec, accessToken, accessTokenExpiresAt: expIso, accessTokenFor, lastRefreshAt: iso, lastError: undefined, state: 'ok' };
    try {
      await this.persist(s, (r) => {
        const next: TokenRecord = { ...(r ?? { state: 'ok' }), accessToken, accessTokenExpiresAt: expIso, accessTokenFor, lastRefreshAt: iso };
        if (!r || r.refreshToken === s.rec.refreshToken) {
          next.state = 'ok';
          delete next.lastError;
          if (s.rec.refreshTokenExpiresAt) next.refreshTokenExpiresAt = s.rec.refreshTokenExpiresAt;
        }
        return next;
      });
    } catch (e) {
      this.log.warn(`account ${name}: could not save refresh status to the token store`, { account: name, err: e });
    }
    this.log.info('access token refreshed', { account: name, expiresAt: expIso });
    this.metrics?.tokenRefresh(name, true);
    this.setState(s, 'ok');
    return accessToken;
  }

  private async refreshFailed(s: Slot, err: unknown, usedRt: string | undefined): Promise<Error> {
    const name = s.cfg.name;
    if (err instanceof NeedsReauthError) return err;
    this.metrics?.tokenRefresh(name, false);
    if (err instanceof AccountConfigError) {
      s.rec.lastError = err.message;
      this.setState(s, 'error');
      return new Error(`account ${name}: ${err.message}`);
    }
    const c = err instanceof LocalError ? { dead: false, code: undefined, message: redactString(err.message) } : (classifyMicrosoftError(err) ?? classifyTokenError(err, this.http));
    if (c.dead) {
      if (usedRt !== undefined && s.rec.refreshToken !== usedRt && s.rec.refreshToken) {
        // A new refresh token arrived (token import) while this one was being refused.
        return new Error(`account ${name}: refresh token was replaced during a refresh; try again`);
      }
      await this.setNeedsReauth(s, c.message, usedRt);
      return new NeedsReauthError(name, c.message);
    }
    const t = this.now();
    s.failures++;
    const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (s.failures - 1));
    s.backoffUntil = t + wait;
    s.rec.lastError = c.message;
    const stillValid = s.accessToken !== undefined && s.expiresAt !== undefined && s.expiresAt > t;
    const level = c.code === 'invalid_client' ? 'error' : 'warn';
    this.log[level](`account ${name}: access token refresh failed; retrying in ${Math.round(wait / 1000)}s`, {
      account: name,
      error: c.message,
      failures: s.failures,
      ...(stillValid ? { currentTokenValidUntil: new Date(s.expiresAt!).toISOString() } : {}),
    });
    if (!stillValid) this.setState(s, 'error');
    try {
      await this.persist(s, (r) => {
        if (!r) return r;
        return { ...r, lastError: c.message, ...(stillValid || r.state === 'needs-reauth' ? {} : { state: 'error' as const }) };
      });
    } catch {
      /* status bookkeeping only */
    }
    return new Error(`account ${name}: ${c.message}`);
  }

  /** Persist a rotated refresh token; runs before the new access token is handed out. */
  private async persistRotation(s: Slot, newRt: string, expiresInSec: number | undefined): Promise<void> {
    this.registerRefreshToken(s, newRt);
    const oldRt = s.rec.refreshToken;
    const iso = new Date(this.now()).toISOString();
    const rtExp = expiresInSec ? new Date(this.now() + expiresInSec * 1000).toISOString() : undefined;
    // In memory first: the old token may already be invalid, so a failed write must not lose the new one.
    s.rec = { ...s.rec, refreshToken: newRt, refreshTokenIssuedAt: iso, refreshTokenExpiresAt: rtExp };
    try {
      await this.persist(s, (r) => {
        if (r?.refreshToken && r.refreshToken !== oldRt && r.refreshToken !== newRt) return r; // someone imported a newer grant
        return { ...(r ?? { state: 'ok' }), refreshToken: newRt, refreshTokenIssuedAt: iso, refreshTokenExpiresAt: rtExp };
      });
      this.log.info('refresh token rotated and saved', { account: s.cfg.name });
    } catch (e) {
      this.log.error(`account ${s.cfg.name}: could not save the rotated refresh token; will retry on the next refresh`, { account: s.cfg.name, err: e });
      throw new LocalError(`could not save the rotated refresh token: ${(e as Error).message}`);
    }
  }

  /** Read-modify-write of one account's stored record; `fn` returning undefined leaves it absent. */
  private async persist(s: Slot, fn: (r: TokenRecord | undefined) => TokenRecord | undefined): Promise<void> {
    const name = s.cfg.name;
    // Never overwrite a store we could not read: the operator repairs it (or restores the .bak).
    if (this.storeError) throw new LocalError(`token store unusable: ${this.storeError}`);
    const data = await this.store.update((d) => {
      const next = fn(d.accounts[name]);
      if (next) {
        for (const k of Object.keys(next) as (keyof TokenRecord)[]) if (next[k] === undefined) delete next[k];
        d.accounts[name] = next;
      } else delete d.accounts[name];
    });
    this.lastData = data;
    s.seen = JSON.stringify(data.accounts[name] ?? null);
  }

  private setNeedsReauth(s: Slot, reason: string, usedRt: string | undefined): Promise<void> {
    const name = s.cfg.name;
    s.accessToken = undefined;
    s.expiresAt = undefined;
    s.rec = { ...s.rec, state: 'needs-reauth', lastError: reason, accessToken: undefined, accessTokenExpiresAt: undefined };
    if (s.state !== 'needs-reauth') {
      // The one loud line: what happened, that mail is safe, and the exact fix.
      this.log.error(`account ${name} needs re-authorization: ${reason.replace(/\.$/, '')}. Its mail is held (not bounced). Fix: ${fixHint(s.cfg)}`, {
        account: name,
        reason,
      });
    }
    this.setState(s, 'needs-reauth');
    return this.persist(s, (r) => {
      if (usedRt !== undefined && r?.refreshToken !== undefined && r.refreshToken !== usedRt) return r;
      return { ...(r ?? {}), state: 'needs-reauth', lastError: reason, accessToken: undefined, accessTokenExpiresAt: undefined, accessTokenFor: undefined };
    }).catch((e: unknown) => this.log.warn(`account ${name}: could not save needs-reauth state`, { account: name, err: e }));
  }

  private setState(s: Slot, state: AccountState): void {
    if (s.state === state) return;
    s.state = state;
    if (state === 'ok') s.rec.lastError = undefined;
    for (const l of this.listeners) {
      try {
        l(s.cfg.name, state);
      } catch (e) {
        this.log.error('account state listener failed', { account: s.cfg.name, err: e });
      }
    }
  }

  // ---- AccountHealth ----

  state(account: string): AccountState {
    return this.slot(account).state;
  }

  markNeedsReauth(account: string, reason: string): void {
    const s = this.slot(account);
    void this.setNeedsReauth(s, reason, s.rec.refreshToken);
  }

  onChange(listener: (account: string, state: AccountState) => void): void {
    this.listeners.push(listener);
  }

  holdReason(account: string): { reason: string; until: number | null } | null {
    const s = this.slot(account);
    if (this.storeError) return { reason: `token store unusable: ${this.storeError}`, until: null };
    if (s.hold && s.hold.until > this.now()) return { ...s.hold };
    return null;
  }

  holdAccount(account: string, reason: string, forMs: number): void {
    const s = this.slot(account);
    const text = reason.replace(/ACCOUNT\b/g, account);
    if (s.hold?.reason !== text) this.log.error(`account ${account} is held: ${text}`, { account });
    s.hold = { reason: text, until: this.now() + forMs };
  }

  status(): AccountStatus[] {
    return [...this.slots.values()].map((s) => ({
      account: s.cfg.name,
      email: s.cfg.email,
      state: s.state,
      accessTokenExpiresAt: s.expiresAt !== undefined ? new Date(s.expiresAt).toISOString() : null,
      lastRefreshAt: s.rec.lastRefreshAt ?? null,
      lastError: this.storeError ?? s.configError ?? redactOrNull(s.rec.lastError) ?? (s.cfg.oauth.type === 'user' && !s.rec.refreshToken ? 'no refresh token stored' : null),
      refreshTokenIssuedAt: s.rec.refreshTokenIssuedAt ?? null,
      refreshTokenExpiresAt: s.rec.refreshTokenExpiresAt ?? null,
    }));
  }

  /** Stores a new refresh token (import or authorize in this process); the account is ok again. */
  async importRefreshToken(account: string, refreshToken: string, extra: { authorizedEmail?: string } = {}): Promise<void> {
    const s = this.slot(account);
    if (s.cfg.oauth.type !== 'user') throw new Error(`account ${account} is a service account; it has no refresh token to import`);
    const rt = refreshToken.trim();
    if (!rt || /\s/.test(rt)) throw new Error('expected one refresh token (no spaces)');
    this.registerRefreshToken(s, rt);
    const iso = new Date(this.now()).toISOString();
    const rec: TokenRecord = { refreshToken: rt, refreshTokenIssuedAt: iso, state: 'ok', ...(extra.authorizedEmail ? { authorizedEmail: extra.authorizedEmail } : {}) };
    await this.persist(s, () => ({ ...rec }));
    s.rec = { ...rec };
    s.accessToken = undefined;
    s.expiresAt = undefined;
    s.failures = 0;
    s.backoffUntil = 0;
    this.log.info('refresh token imported', { account });
    this.setState(s, s.configError ? 'error' : 'ok');
  }

  /**
   * Picks up changes another process made to the store (`token import`, `authorize`,
   * `token refresh`); accounts that became healthy fire onChange(account, 'ok').
   */
  async reloadStore(): Promise<void> {
    if (this.storeError) return this.retryStore();
    const data = await this.store.load();
    this.lastData = data;
    for (const s of this.slots.values()) {
      const disk = data.accounts[s.cfg.name];
      const json = JSON.stringify(disk ?? null);
      if (json === s.seen) continue;
      s.seen = json;
      if (!disk) continue;
      const grantChanged = disk.refreshToken !== s.rec.refreshToken;
      if (grantChanged) {
        this.registerRefreshToken(s, disk.refreshToken);
        s.accessToken = undefined;
        s.expiresAt = undefined;
        s.failures = 0;
        s.backoffUntil = 0;
        this.log.info('new refresh token picked up from the token store', { account: s.cfg.name });
      }
      s.rec = { ...disk };
      const adopted = this.adoptStoredAccessToken(s, disk);
      if (adopted) {
        s.failures = 0;
        s.backoffUntil = 0;
      }
      let next: AccountState = s.state;
      if (disk.state === 'needs-reauth') next = 'needs-reauth';
      else if (disk.state === 'ok' || grantChanged) next = s.configError ? 'error' : 'ok';
      if (next === 'needs-reauth' && s.state !== 'needs-reauth') {
        s.accessToken = undefined;
        s.expiresAt = undefined;
      }
      this.setState(s, next);
    }
  }

  // ---- schedule ----

  startSchedule(): void {
    if (this.task) return;
    const expr = this.config.tokens.refreshCron;
    if (!cron.validate(expr)) throw new Error(`tokens.refreshCron: invalid cron expression "${expr}"`);
    const log = this.log;
    this.task = cron.schedule(expr, () => this.runScheduledRefresh(), {
      name: 'token-refresh',
      noOverlap: true,
      logger: {
        info: (m: string) => log.debug(`node-cron: ${m}`),
        warn: (m: string) => log.debug(`node-cron: ${m}`),
        error: (m: string | Error, e?: Error) => log.warn(`node-cron: ${String(m)}`, e ? { err: e } : undefined),
        debug: () => {},
      },
    });
  }

  stop(): void {
    clearInterval(this.storeRetry);
    this.storeRetry = undefined;
    const t = this.task;
    this.task = undefined;
    if (t) void Promise.resolve(t.destroy()).catch(() => {});
  }

  /**
   * One pass of the refresh job: accounts whose access token expires within refreshAhead,
   * or that were idle for ~20 h (keeps refresh tokens alive). Passes never overlap.
   */
  runScheduledRefresh(): Promise<void> {
    if (this.scheduleRunning) return this.scheduleRunning;
    const run = async () => {
      const t = this.now();
      const ahead = this.config.tokens.refreshAhead;
      const due: Slot[] = [];
      for (const s of this.slots.values()) {
        this.warnLapsing(s);
        if (this.storeError || s.state === 'needs-reauth' || s.configError || t < s.backoffUntil) continue;
        const expiring = s.expiresAt === undefined || s.expiresAt - t <= ahead;
        const last = s.rec.lastRefreshAt ? Date.parse(s.rec.lastRefreshAt) : 0;
        const idle = s.cfg.oauth.type === 'user' && t - last > IDLE_REFRESH_MS;
        if (expiring || idle) due.push(s);
      }
      await Promise.allSettled(due.map((s) => s.inflight ?? this.startRefresh(s)));
    };
    const p = run().finally(() => {
      this.scheduleRunning = undefined;
    });
    this.scheduleRunning = p;
    return p;
  }

  private warnLapsing(s: Slot): void {
    const rec = s.rec;
    if (s.cfg.oauth.type !== 'user' || !rec.refreshToken || s.state === 'needs-reauth') return;
    const t = this.now();
    if (s.lapseWarnedAt !== undefined && t - s.lapseWarnedAt < DAY_MS) return;
    const name = s.cfg.name;
    if (rec.refreshTokenExpiresAt) {
      const exp = Date.parse(rec.refreshTokenExpiresAt);
      if (exp - t < 2 * DAY_MS) {
        s.lapseWarnedAt = t;
        this.log.warn(
          `account ${name}: its refresh token expires at ${rec.refreshTokenExpiresAt} (a time-limited grant, e.g. an OAuth app in "Testing" status). Move the app to "In production" (see README), then ${fixHint(s.cfg)}`,
          { account: name },
        );
      }
      return;
    }
    if (!rec.refreshTokenIssuedAt) return;
    const age = t - Date.parse(rec.refreshTokenIssuedAt);
    if (age >= TESTING_WARN_AFTER_MS && age < TESTING_LIFETIME_MS) {
      s.lapseWarnedAt = t;
      const lapse = new Date(Date.parse(rec.refreshTokenIssuedAt) + TESTING_LIFETIME_MS).toISOString();
      this.log.warn(
        `account ${name}: refresh token issued ${rec.refreshTokenIssuedAt}; if the OAuth app is in "Testing" publishing status, Google revokes it 7 days after issue (${lapse}). Move the app to "In production" (see README) to keep tokens valid, or be ready to ${fixHint(s.cfg)}`,
        { account: name },
      );
    }
  }

  /** SIGHUP: new account list / oauth settings / schedule. */
  reload(config: Config): void {
    const old = this.config;
    this.config = config;
    if (config.tokens.encryptionKeyFile !== this.keyFile || config.stateDir !== old.stateDir) {
      this.keyFile = config.tokens.encryptionKeyFile;
      this.store = this.openStore();
    }
    const names = new Set(config.accounts.map((a) => a.name));
    for (const name of [...this.slots.keys()]) if (!names.has(name)) this.slots.delete(name);
    for (const acct of config.accounts) {
      const s = this.slots.get(acct.name);
      if (!s) {
        this.slots.set(acct.name, this.newSlot(acct, this.lastData.accounts[acct.name]));
        continue;
      }
      const changed = JSON.stringify(s.cfg.oauth) !== JSON.stringify(acct.oauth);
      s.cfg = acct;
      if (!changed) continue;
      this.prepare(s);
      s.accessToken = undefined;
      s.expiresAt = undefined;
      s.failures = 0;
      s.backoffUntil = 0;
      if (s.configError) {
        s.rec.lastError = s.configError;
        this.setState(s, 'error');
      } else if (s.state === 'error' || (s.state === 'needs-reauth' && acct.oauth.type === 'service-account')) {
        // New settings deserve a fresh try; a user grant stays dead until re-authorized.
        this.setState(s, 'ok');
      }
    }
    if (this.task && config.tokens.refreshCron !== old.tokens.refreshCron) {
      this.stop();
      this.startSchedule();
    }
  }
}
