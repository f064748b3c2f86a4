// The provider-neutral token cache: per-account access tokens handed out until close to
// expiry, one refresh in flight per account (single-flight keyed on the token the upstream
// rejected), refresh-token rotation persisted before the new access token is used, and dead
// grants (invalid_grant) turned into a quiet `needs-reauth` state instead of a retry storm.
// A grant with a second resource (Microsoft delegated auto: SMTP and Graph) gets that one's
// token from the same refresh token, through the same rotation and one request at a time.
// How a grant gets a token is its provider's refresher's business (src/providers/); setting accounts
// up, the schedule and reloads are the TokenService's (src/oauth/service.ts).
// Over 400 lines on purpose: every path that spends an account's refresh token (refresh,
// forced refresh, a rejection, a second resource) must pass the same single-flight, rotation
// and state rules, and they read best side by side.
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { addSecret, redactString } from '../log/redact.js';
import type { HealthState, TokenResource } from '../types.js';
import { providerFor, tokenIdentity } from '../providers/index.js';
import {
  AccountConfigError,
  type GrantContext,
  type HttpOptions,
  LocalError,
  type TokenResponse,
} from '../providers/provider.js';
import { NeedsReauthError, fixHint, registerRefreshToken, type Slot } from './account.js';
import { HealthBook } from './health.js';
import type { StoreData, TokenRecord, TokenStore } from './store.js';

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
const BACKOFF_BASE_MS = 5_000;
const BACKOFF_MAX_MS = 5 * 60_000;

/** An account's token for a second resource of its grant (TokenSource `resource`). */
interface ResourceToken {
  /** The grant's identity when it was issued: another client or tenant drops it. */
  key: string;
  token?: string;
  expiresAt?: number;
  obtainedAt?: number;
  forced?: boolean;
  inflight?: Promise<string>;
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

export class TokenCache {
  protected config: Config;
  protected readonly log: Logger;
  protected readonly metrics?: { tokenRefresh(account: string, ok: boolean): void };
  protected readonly env: NodeJS.ProcessEnv;
  protected readonly now: () => number;
  protected readonly http: HttpOptions;
  protected readonly slots = new Map<string, Slot>();
  protected readonly health: HealthBook;
  protected store!: TokenStore;
  protected lastData: StoreData = { accounts: {} };
  /** Why the token store cannot be used (mode, damage, key); while set, every account is held and nothing is written. */
  protected storeError: string | null = null;
  /** Second-resource tokens by `account\nresource`. */
  private readonly resourceTokens = new Map<string, ResourceToken>();
  /** Per account, the last request that spends its refresh token (see spend). */
  private readonly spending = new WeakMap<Slot, Promise<unknown>>();

  constructor(opts: TokenServiceOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'tokens' });
    this.env = opts.env ?? process.env;
    this.now = opts.now ?? Date.now;
    this.http = opts.http ?? {};
    this.metrics = opts.metrics;
    this.health = new HealthBook(this.log, this.now);
  }

  protected slot(account: string): Slot {
    const s = this.slots.get(account);
    if (!s) throw new Error(`unknown account "${account}"`);
    return s;
  }

  // ---- TokenSource ----

  async getAccessToken(
    account: string,
    opts: { force?: boolean; rejected?: string; resource?: TokenResource } = {},
  ): Promise<string> {
    const s = this.slot(account);
    if (this.storeError) throw new Error(`account ${account}: token store unusable: ${this.storeError}`);
    if (s.state === 'needs-reauth') throw new NeedsReauthError(account, s.rec.lastError ?? 'grant refused');
    if (opts.resource !== undefined)
      return this.resourceToken(s, opts.resource, opts.force === true || opts.rejected !== undefined);
    if (opts.rejected !== undefined) return this.replaceRejected(s, opts.rejected);
    const t = this.now();
    const valid = s.accessToken !== undefined && s.expiresAt !== undefined && s.expiresAt > t;
    if (!opts.force && valid && s.expiresAt! - t > skew(s)) return s.accessToken!;
    if (s.inflight) return s.inflight;
    if (opts.force && valid && s.forced && s.obtainedAt !== undefined && t - s.obtainedAt < FORCED_SHARE_MS)
      return s.accessToken!;
    if (t < s.backoffUntil) {
      // The endpoint failed recently: keep using a still-valid token rather than hammering it.
      if (!opts.force && valid) return s.accessToken!;
      throw new Error(
        `account ${account}: ${s.rec.lastError ?? 'token refresh failing'}; next attempt in ${Math.ceil((s.backoffUntil - t) / 1000)}s`,
      );
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
    if (valid && s.unproven)
      return Promise.reject(new NeedsReauthError(name, 'the upstream refused a freshly refreshed access token too'));
    if (t < s.backoffUntil)
      return Promise.reject(
        new Error(
          `account ${name}: ${s.rec.lastError ?? 'token refresh failing'}; next attempt in ${Math.ceil((s.backoffUntil - t) / 1000)}s`,
        ),
      );
    this.log.info('the upstream refused the access token; getting a new one', { account: name });
    return this.startRefresh(s, true);
  }

  /**
   * A token for a second resource of the account's grant: cached until close to expiry, one
   * refresh in flight per resource, a forced one shared for FORCED_SHARE_MS, and the account's
   * backoff respected. It spends the account's refresh token like any refresh (spend).
   */
  private resourceToken(s: Slot, resource: TokenResource, force: boolean): Promise<string> {
    const name = s.cfg.name;
    const id = `${name}\n${resource}`;
    const key = tokenIdentity(s.cfg);
    let r = this.resourceTokens.get(id);
    if (!r || r.key !== key) {
      r = { key };
      this.resourceTokens.set(id, r);
    }
    const t = this.now();
    const valid = r.token !== undefined && r.expiresAt !== undefined && r.expiresAt > t;
    if (!force && valid && r.expiresAt! - t > skew(r)) return Promise.resolve(r.token!);
    if (r.inflight) return r.inflight;
    if (force && valid && r.forced && r.obtainedAt !== undefined && t - r.obtainedAt < FORCED_SHARE_MS)
      return Promise.resolve(r.token!);
    if (t < s.backoffUntil) {
      if (!force && valid) return Promise.resolve(r.token!);
      return Promise.reject(
        new Error(
          `account ${name}: ${s.rec.lastError ?? 'token refresh failing'}; next attempt in ${Math.ceil((s.backoffUntil - t) / 1000)}s`,
        ),
      );
    }
    const slot = r;
    const p = this.spend(s, () => this.refreshResource(s, slot, resource, force)).finally(() => {
      if (slot.inflight === p) slot.inflight = undefined;
    });
    slot.inflight = p;
    return p;
  }

  private async refreshResource(s: Slot, r: ResourceToken, resource: TokenResource, forced: boolean): Promise<string> {
    const name = s.cfg.name;
    const usedRt = s.rec.refreshToken;
    let tokens: TokenResponse;
    try {
      if (s.configError) throw new AccountConfigError(s.configError);
      if (!s.refresher?.refreshFor)
        throw new AccountConfigError(
          `oauth.type ${s.cfg.oauth.type} of provider ${s.cfg.provider} has no ${resource} token (transport ${s.cfg.transport})`,
        );
      tokens = await s.refresher.refreshFor(usedRt, resource);
    } catch (err) {
      throw await this.refreshFailed(s, err, usedRt);
    }
    const t = this.now();
    const expiresAt = tokens.expiry_date!;
    addSecret(tokens.access_token, { slot: `access-${resource}:${name}`, expiresAt });
    Object.assign(r, { token: tokens.access_token, expiresAt, obtainedAt: t, forced });
    s.failures = 0;
    s.backoffUntil = 0;
    this.log.info('access token refreshed', { account: name, resource, expiresAt: new Date(expiresAt).toISOString() });
    this.metrics?.tokenRefresh(name, true);
    return tokens.access_token;
  }

  /**
   * Runs `fn`, one request that spends the account's refresh token, after the account's
   * previous one has finished: with two resources (SMTP and Graph) two refreshes may be wanted
   * at once, and Microsoft rotates the refresh token on every answer (the fake makes each
   * usable once), so each must send the token the one before it saved. One that was waiting
   * while the one before it found the grant dead does not ask again (nor undo needs-reauth).
   */
  private spend<T>(s: Slot, fn: () => Promise<T>): Promise<T> {
    const wasDead = s.state === 'needs-reauth'; // `token refresh` tries a dead grant once on purpose
    const run = (this.spending.get(s) ?? Promise.resolve()).then(() => {
      if (!wasDead && s.state === 'needs-reauth')
        throw new NeedsReauthError(s.cfg.name, s.rec.lastError ?? 'grant refused');
      return fn();
    });
    this.spending.set(
      s,
      run.catch(() => undefined),
    );
    return run;
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

  protected startRefresh(s: Slot, forced = false): Promise<string> {
    const p = this.doRefresh(s, forced).finally(() => {
      if (s.inflight === p) s.inflight = undefined;
    });
    s.inflight = p;
    return p;
  }

  private doRefresh(s: Slot, forced: boolean): Promise<string> {
    return this.spend(s, () => this.refreshOnce(s, forced));
  }

  private async refreshOnce(s: Slot, forced: boolean): Promise<string> {
    const usedRt = s.rec.refreshToken;
    let tokens: TokenResponse;
    try {
      if (s.configError) throw new AccountConfigError(s.configError);
      if (!s.refresher)
        throw new AccountConfigError(`oauth.type ${s.cfg.oauth.type} is not supported for provider ${s.cfg.provider}`);
      tokens = await s.refresher.refresh(usedRt);
    } catch (err) {
      throw await this.refreshFailed(s, err, usedRt);
    }
    return this.refreshSucceeded(s, tokens.access_token, tokens.expiry_date!, forced);
  }

  /** What a refresher may do to its account: persist a rotation, note a lapse, give up for want of a refresh token. */
  protected grantContext(s: Slot): GrantContext {
    return {
      name: s.cfg.name,
      account: () => s.cfg,
      log: this.log,
      http: this.http,
      now: this.now,
      currentRefreshToken: () => s.rec.refreshToken,
      rotate: (rt, expiresInSec) => this.persistRotation(s, rt, expiresInSec),
      refreshTokenExpiresIn: (sec) => {
        s.rec.refreshTokenExpiresAt = new Date(this.now() + sec * 1000).toISOString();
      },
      noRefreshToken: async () => {
        await this.setNeedsReauth(s, 'no refresh token stored', undefined);
        throw new NeedsReauthError(s.cfg.name, 'no refresh token stored');
      },
    };
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
    const accessTokenFor = tokenIdentity(s.cfg);
    s.rec = {
      ...s.rec,
      accessToken,
      accessTokenExpiresAt: expIso,
      accessTokenFor,
      lastRefreshAt: iso,
      lastError: undefined,
      state: 'ok',
    };
    try {
      await this.persist(s, (r) => {
        const next: TokenRecord = {
          ...(r ?? { state: 'ok' }),
          accessToken,
          accessTokenExpiresAt: expIso,
          accessTokenFor,
          lastRefreshAt: iso,
        };
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
    const c =
      err instanceof LocalError
        ? { dead: false, code: undefined, message: redactString(err.message) }
        : providerFor(s.cfg).classifyTokenError(err, this.http);
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
        return {
          ...r,
          lastError: c.message,
          ...(stillValid || r.state === 'needs-reauth' ? {} : { state: 'error' as const }),
        };
      });
    } catch {
      /* status bookkeeping only */
    }
    return new Error(`account ${name}: ${c.message}`);
  }

  /** Persist a rotated refresh token; runs before the new access token is handed out. */
  private async persistRotation(s: Slot, newRt: string, expiresInSec: number | undefined): Promise<void> {
    registerRefreshToken(s, newRt);
    const oldRt = s.rec.refreshToken;
    const iso = new Date(this.now()).toISOString();
    const rtExp = expiresInSec ? new Date(this.now() + expiresInSec * 1000).toISOString() : undefined;
    // In memory first: the old token may already be invalid, so a failed write must not lose the new one.
    s.rec = { ...s.rec, refreshToken: newRt, refreshTokenIssuedAt: iso, refreshTokenExpiresAt: rtExp };
    try {
      await this.persist(s, (r) => {
        if (r?.refreshToken && r.refreshToken !== oldRt && r.refreshToken !== newRt) return r; // someone imported a newer grant
        return {
          ...(r ?? { state: 'ok' }),
          refreshToken: newRt,
          refreshTokenIssuedAt: iso,
          refreshTokenExpiresAt: rtExp,
        };
      });
      this.log.info('refresh token rotated and saved', { account: s.cfg.name });
    } catch (e) {
      this.log.error(
        `account ${s.cfg.name}: could not save the rotated refresh token; will retry on the next refresh`,
        { account: s.cfg.name, err: e },
      );
      throw new LocalError(`could not save the rotated refresh token: ${(e as Error).message}`);
    }
  }

  /** Read-modify-write of one account's stored record; `fn` returning undefined leaves it absent. */
  protected async persist(s: Slot, fn: (r: TokenRecord | undefined) => TokenRecord | undefined): Promise<void> {
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
  }

  protected setNeedsReauth(s: Slot, reason: string, usedRt: string | undefined): Promise<void> {
    const name = s.cfg.name;
    s.accessToken = undefined;
    s.expiresAt = undefined;
    s.rec = {
      ...s.rec,
      state: 'needs-reauth',
      lastError: reason,
      accessToken: undefined,
      accessTokenExpiresAt: undefined,
    };
    if (s.state !== 'needs-reauth') {
      // The one loud line: what happened, that mail is safe, and the exact fix.
      this.log.error(
        `account ${name} needs re-authorization: ${reason.replace(/\.$/, '')}. Its mail is held (not bounced). Fix: ${fixHint(s.cfg)}`,
        {
          account: name,
          reason,
        },
      );
    }
    this.setState(s, 'needs-reauth');
    return this.persist(s, (r) => {
      if (usedRt !== undefined && r?.refreshToken !== undefined && r.refreshToken !== usedRt) return r;
      return {
        ...(r ?? {}),
        state: 'needs-reauth',
        lastError: reason,
        accessToken: undefined,
        accessTokenExpiresAt: undefined,
        accessTokenFor: undefined,
      };
    }).catch((e: unknown) =>
      this.log.warn(`account ${name}: could not save needs-reauth state`, { account: name, err: e }),
    );
  }

  protected setState(s: Slot, state: HealthState): void {
    this.health.set(s, state);
  }
}
