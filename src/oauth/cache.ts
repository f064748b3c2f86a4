// The provider-neutral token cache: per-account access tokens handed out until close to
// expiry, one refresh in flight per account (single-flight keyed on the token the upstream
// rejected), refresh-token rotation persisted before the new access token is used, and dead
// grants (invalid_grant) turned into a quiet `needs-reauth` state instead of a retry storm.
// A grant with a second resource (Microsoft transport auto: SMTP and Graph) gets that one's
// token through the same rules: delegated from the same refresh token, through the same
// rotation and one request at a time; app-only by its own client-credentials request.
// How a grant gets a token is its provider's refresher's business (src/providers/); setting accounts
// up, the schedule and reloads are the TokenService's (src/oauth/service.ts).
// Over 400 lines on purpose: every path that spends an account's refresh token (refresh,
// forced refresh, a rejection, a second resource) must pass the same single-flight, rotation
// and state rules, and they read best side by side. The hand-out rules are one copy (handOut)
// for the account's own token and a second resource's.
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

/**
 * One cached access token and the refresh that replaces it: the account's own (the Slot
 * itself) or its token for a second resource (ResourceToken). Both follow handOut's rules.
 */
interface Held {
  accessToken?: string;
  expiresAt?: number;
  obtainedAt?: number;
  /** It came from a forced refresh: later forced callers share it for FORCED_SHARE_MS. */
  forced?: boolean;
  inflight?: Promise<string>;
}

/** An account's token for a second resource of its grant (TokenSource `resource`). */
interface ResourceToken extends Held {
  /** The identity it was issued for (client, tenant, cloud, scopes): another one drops it. */
  key: string;
}

function isValid(h: Held, t: number): boolean {
  return h.accessToken !== undefined && h.expiresAt !== undefined && h.expiresAt > t;
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
    const resource = opts.resource;
    if (resource === undefined) {
      if (opts.rejected !== undefined) return this.replaceRejected(s, opts.rejected);
      const force = opts.force === true;
      return this.handOut(s, s, force, () => this.refreshOnce(s, force));
    }
    // A second resource's caller that names a rejected token is answered as a forced one.
    const force = opts.force === true || opts.rejected !== undefined;
    const r = this.resourceToken(s, resource);
    return this.handOut(s, r, force, () => this.refreshResource(s, r, resource, force));
  }

  /**
   * The cache rules, one copy for the account's own token and every second resource's: a
   * valid token not close to expiry is the answer (unless forced); a refresh in flight is
   * joined; a forced caller shares a token forced less than FORCED_SHARE_MS ago; while the
   * endpoint is failing (the account's backoff) a still-valid token is used rather than
   * hammering it, else the caller is told when the next try is; otherwise one `refresh`, in
   * turn with the account's other token requests (spend: a rotating refresh token).
   */
  private handOut(s: Slot, h: Held, force: boolean, refresh: () => Promise<string>): Promise<string> {
    const t = this.now();
    const valid = isValid(h, t);
    if (!force && valid && h.expiresAt! - t > skew(h)) return Promise.resolve(h.accessToken!);
    if (h.inflight) return h.inflight;
    if (force && valid && h.forced && h.obtainedAt !== undefined && t - h.obtainedAt < FORCED_SHARE_MS)
      return Promise.resolve(h.accessToken!);
    if (t < s.backoffUntil) {
      if (!force && valid) return Promise.resolve(h.accessToken!);
      return Promise.reject(this.backingOff(s, t));
    }
    return this.fly(h, () => this.spend(s, refresh));
  }

  /** Runs `run` as `h`'s one refresh in flight: callers join it until it settles. */
  private fly(h: Held, run: () => Promise<string>): Promise<string> {
    const p = run().finally(() => {
      if (h.inflight === p) h.inflight = undefined;
    });
    h.inflight = p;
    return p;
  }

  private backingOff(s: Slot, t: number): Error {
    return new Error(
      `account ${s.cfg.name}: ${s.rec.lastError ?? 'token refresh failing'}; next attempt in ${Math.ceil((s.backoffUntil - t) / 1000)}s`,
    );
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
    const valid = isValid(s, t);
    if (s.inflight) return s.inflight;
    if (valid && s.accessToken !== rejected) return Promise.resolve(s.accessToken!);
    if (valid && s.unproven)
      return Promise.reject(new NeedsReauthError(name, 'the upstream refused a freshly refreshed access token too'));
    if (t < s.backoffUntil) return Promise.reject(this.backingOff(s, t));
    this.log.info('the upstream refused the access token; getting a new one', { account: name });
    return this.startRefresh(s, true);
  }

  /** The account's cached token for `resource`, dropped when the identity it was issued for changed. */
  private resourceToken(s: Slot, resource: TokenResource): ResourceToken {
    const id = `${s.cfg.name}\n${resource}`;
    // The identity of the token the resource's own transport would use (Microsoft 'graph':
    // client, tenant, the cloud's Graph and the scopes), so a reload that changes any drops it.
    const key = tokenIdentity({ ...s.cfg, transport: resource });
    let r = this.resourceTokens.get(id);
    if (!r || r.key !== key) {
      r = { key };
      this.resourceTokens.set(id, r);
    }
    return r;
  }

  private async refreshResource(s: Slot, r: ResourceToken, resource: TokenResource, forced: boolean): Promise<string> {
    const name = s.cfg.name;
    const tokens = await this.request(s, resource);
    const expiresAt = tokens.expiry_date!;
    this.keep(s, r, tokens.access_token, expiresAt, forced, `access-${resource}:${name}`);
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

  /** A refresh of the account's own token, whatever the cache holds (refresh, a rejection, the schedule). */
  protected startRefresh(s: Slot, forced = false): Promise<string> {
    return this.fly(s, () => this.spend(s, () => this.refreshOnce(s, forced)));
  }

  private async refreshOnce(s: Slot, forced: boolean): Promise<string> {
    const tokens = await this.request(s);
    return this.refreshSucceeded(s, tokens.access_token, tokens.expiry_date!, forced);
  }

  /** One token request of the account's grant, for its own token or `resource`'s; a failure is recorded (refreshFailed). */
  private async request(s: Slot, resource?: TokenResource): Promise<TokenResponse> {
    const usedRt = s.rec.refreshToken;
    const cfg = s.cfg;
    try {
      if (s.configError) throw new AccountConfigError(s.configError);
      if (resource === undefined) {
        if (!s.refresher)
          throw new AccountConfigError(`oauth.type ${cfg.oauth.type} is not supported for provider ${cfg.provider}`);
        return await s.refresher.refresh(usedRt);
      }
      if (!s.refresher?.refreshFor)
        throw new AccountConfigError(
          `oauth.type ${cfg.oauth.type} of provider ${cfg.provider} has no ${resource} token (transport ${cfg.transport})`,
        );
      return await s.refresher.refreshFor(usedRt, resource);
    } catch (err) {
      throw await this.refreshFailed(s, err, usedRt);
    }
  }

  /** A request succeeded: `h` holds the new token (the redactor's `slot` too) and the account's backoff ends. */
  private keep(s: Slot, h: Held, accessToken: string, expiresAt: number, forced: boolean, slot: string): void {
    addSecret(accessToken, { slot, expiresAt });
    Object.assign(h, { accessToken, expiresAt, obtainedAt: this.now(), forced });
    s.failures = 0;
    s.backoffUntil = 0;
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
    this.keep(s, s, accessToken, expiresAt, forced, `access:${name}`);
    s.unproven = forced;
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
    const stillValid = isValid(s, t);
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
