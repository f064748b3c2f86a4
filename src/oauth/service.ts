// The token service: the token cache (src/oauth/cache.ts) for every configured account,
// set up from the token store and the config, kept fresh by a cron job (croner), with account
// health and holds for the delivery side and a reload on SIGHUP. An unusable store holds
// every account until it is repaired.
import { Cron } from 'croner';
import type { AccountConfig, Config } from '../config/schema.js';
import { redactString } from '../log/redact.js';
import type { AccountHealth, HealthState, TokenSource } from '../types.js';
import {
  adoptStoredAccessToken,
  fixHint,
  redactOrNull,
  registerRefreshToken,
  type AccountStatus,
  type Slot,
} from './account.js';
import { TokenCache, type TokenServiceOptions } from './cache.js';
import { providerFor } from '../providers/index.js';
import { warnLapsing } from './lapse.js';
import { TokenStore, resolveStoreKey, type StoreData, type TokenRecord } from './store.js';

export { NeedsReauthError, fixHint, type AccountStatus } from './account.js';
export type { TokenServiceOptions } from './cache.js';

// Refresh idle accounts at least this often so refresh tokens never expire from disuse.
const IDLE_REFRESH_MS = 20 * 3600_000;
/** How often an unusable token store is read again. */
const STORE_RETRY_MS = 5_000;

export class TokenService extends TokenCache implements TokenSource, AccountHealth {
  private keyFile: string | null;
  private task?: Cron;
  private scheduleRunning?: Promise<void>;
  /** The store could not even be opened (key file); retried on the next load. */
  private storeOpenError: string | null = null;
  private storeRetry?: NodeJS.Timeout;

  constructor(opts: TokenServiceOptions) {
    super(opts);
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
    for (const acct of this.config.accounts)
      this.slots.set(acct.name, this.storeError ? this.heldSlot(acct) : this.newSlot(acct, data.accounts[acct.name]));
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
    return {
      cfg: acct,
      rec: { state: 'error', lastError: this.storeError ?? undefined },
      state: 'error',
      failures: 0,
      backoffUntil: 0,
    };
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
    const s: Slot = { cfg: acct, rec: rec ? { ...rec } : { state: 'ok' }, state: 'ok', failures: 0, backoffUntil: 0 };
    registerRefreshToken(s, s.rec.refreshToken);
    this.prepare(s);
    adoptStoredAccessToken(s, rec, this.now());
    if (s.configError) {
      s.state = 'error';
      this.log.error(`account ${acct.name}: ${s.configError}`, { account: acct.name });
    } else if (acct.oauth.type === 'user' && !s.rec.refreshToken) {
      s.state = 'needs-reauth';
      this.log.warn(`account ${acct.name} has no refresh token yet; its mail is held. Fix: ${fixHint(acct)}`, {
        account: acct.name,
      });
    } else if (rec?.state === 'needs-reauth') {
      s.state = 'needs-reauth';
      this.log.error(
        `account ${acct.name} needs re-authorization (${rec.lastError ?? 'grant refused'}); its mail is held. Fix: ${fixHint(acct)}`,
        { account: acct.name },
      );
    }
    warnLapsing(s, this.now(), this.log);
    return s;
  }

  /** Builds the grant's refresher now (library client, key, secret), so config mistakes show at start. */
  private prepare(s: Slot): void {
    s.refresher = undefined;
    s.configError = undefined;
    try {
      s.refresher = providerFor(s.cfg).refresher(s.cfg, this.grantContext(s));
    } catch (e) {
      s.configError = (e as Error).message;
    }
  }

  // ---- AccountHealth ----

  state(account: string): HealthState {
    return this.slot(account).state;
  }

  markNeedsReauth(account: string, reason: string): void {
    const s = this.slot(account);
    void this.setNeedsReauth(s, reason, s.rec.refreshToken);
  }

  onChange(listener: (account: string, state: HealthState) => void): void {
    this.health.onChange(listener);
  }

  holdReason(account: string): { reason: string; until: number | null } | null {
    return this.health.holdReason(this.slot(account), this.storeError);
  }

  holdAccount(account: string, reason: string, forMs: number): void {
    this.health.hold(this.slot(account), reason, forMs);
  }

  status(): AccountStatus[] {
    return [...this.slots.values()].map((s) => ({
      account: s.cfg.name,
      email: s.cfg.email,
      state: s.state,
      accessTokenExpiresAt: s.expiresAt !== undefined ? new Date(s.expiresAt).toISOString() : null,
      lastRefreshAt: s.rec.lastRefreshAt ?? null,
      lastError:
        this.storeError ??
        s.configError ??
        redactOrNull(s.rec.lastError) ??
        (s.cfg.oauth.type === 'user' && !s.rec.refreshToken ? 'no refresh token stored' : null),
      refreshTokenIssuedAt: s.rec.refreshTokenIssuedAt ?? null,
      refreshTokenExpiresAt: s.rec.refreshTokenExpiresAt ?? null,
    }));
  }

  /** Stores a new refresh token (import or authorize in this process); the account is ok again. */
  async importRefreshToken(
    account: string,
    refreshToken: string,
    extra: { authorizedEmail?: string } = {},
  ): Promise<void> {
    const s = this.slot(account);
    if (s.cfg.oauth.type !== 'user')
      throw new Error(`account ${account} is a service account; it has no refresh token to import`);
    const rt = refreshToken.trim();
    if (!rt || /\s/.test(rt)) throw new Error('expected one refresh token (no spaces)');
    registerRefreshToken(s, rt);
    const iso = new Date(this.now()).toISOString();
    const rec: TokenRecord = {
      refreshToken: rt,
      refreshTokenIssuedAt: iso,
      state: 'ok',
      ...(extra.authorizedEmail ? { authorizedEmail: extra.authorizedEmail } : {}),
    };
    await this.persist(s, () => ({ ...rec }));
    s.rec = { ...rec };
    s.accessToken = undefined;
    s.expiresAt = undefined;
    s.failures = 0;
    s.backoffUntil = 0;
    this.log.info('refresh token imported', { account });
    this.setState(s, s.configError ? 'error' : 'ok');
  }

  // ---- schedule ----

  startSchedule(): void {
    if (this.task) return;
    const expr = this.config.tokens.refreshCron;
    const log = this.log;
    try {
      // croner, not node-cron: node-cron formats every tick with Intl.DateTimeFormat, which
      // maps ICU's time-zone data (about 6 MB of an idle daemon's RSS). No `name`: croner
      // names are process-wide, and a process may hold two services (tests, a reload).
      this.task = new Cron(
        expr,
        { protect: true, catch: (e) => log.warn('token refresh job failed', { err: e }) },
        () => this.runScheduledRefresh(),
      );
    } catch (e) {
      throw new Error(`tokens.refreshCron: invalid cron expression "${expr}": ${(e as Error).message}`);
    }
  }

  stop(): void {
    clearInterval(this.storeRetry);
    this.storeRetry = undefined;
    const t = this.task;
    this.task = undefined;
    t?.stop();
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
        warnLapsing(s, this.now(), this.log);
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
      } else if (s.state === 'error' || (s.state === 'needs-reauth' && acct.oauth.type !== 'user')) {
        // New settings deserve a fresh try: a key-based grant (service account, app-only) is
        // fixed in the config; a user grant stays dead until re-authorized.
        this.setState(s, 'ok');
      }
    }
    if (this.task && config.tokens.refreshCron !== old.tokens.refreshCron) {
      this.stop();
      this.startSchedule();
    }
  }
}
