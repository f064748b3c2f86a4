// One account as the token service holds it (the Slot), the errors a refresh can end in,
// and the status and fix hints the CLI and console show. No I/O beyond reading a key file
// for a hint.
import type { AccountConfig } from '../config/schema.js';
import { addSecret, redactString } from '../log/redact.js';
import type { HealthState } from '../types.js';
import { providerFor, tokenIdentity } from '../providers/index.js';
import type { Refresher } from '../providers/provider.js';
import type { TokenRecord } from './store.js';

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
  state: HealthState;
  accessTokenExpiresAt: string | null;
  lastRefreshAt: string | null;
  lastError: string | null;
  refreshTokenIssuedAt: string | null;
  /** Known end of a time-limited grant (refresh_token_expires_in), e.g. an app in "Testing". */
  refreshTokenExpiresAt: string | null;
}

/** The exact command that fixes a dead grant, for log lines and CLI output. */
export function fixHint(account: AccountConfig): string {
  const own = providerFor(account).fixHint(account);
  if (own) return own;
  return `run: xoauth2-bridge authorize ${account.name}   (or pipe a refresh token into: xoauth2-bridge token import ${account.name})`;
}

/** Stored errors predating the redaction of token-endpoint bodies are scrubbed on the way out. */
export function redactOrNull(s: string | undefined): string | null {
  return s ? redactString(s) : null;
}

export interface Slot {
  cfg: AccountConfig;
  /** Our view of the stored record (refresh token, dates, state, last error). */
  rec: TokenRecord;
  state: HealthState;
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
  /** How this account's grant gets a new access token; absent when its config is unusable. */
  refresher?: Refresher;
  configError?: string;
  lapseWarnedAt?: number;
  /** Held by the upstream's verdict (e.g. SMTP AUTH disabled) until the fix is made; re-checked at `until`. */
  hold?: { reason: string; until: number };
  /** The refresh token registered with the redactor. */
  liveRefreshToken?: string;
}

/** The redactor keeps an account's current refresh token and the one before it (still valid for a while after a rotation). */
export function registerRefreshToken(s: Slot, rt: string | undefined): void {
  if (!rt) return;
  const name = s.cfg.name;
  if (s.liveRefreshToken && s.liveRefreshToken !== rt) addSecret(s.liveRefreshToken, { slot: `refresh-prev:${name}` });
  s.liveRefreshToken = rt;
  addSecret(rt, { slot: `refresh:${name}` });
}

/** Takes the stored access token when it belongs to this identity and is newer than ours. */
export function adoptStoredAccessToken(s: Slot, rec: TokenRecord | undefined, now: number): boolean {
  if (!rec?.accessToken || !rec.accessTokenExpiresAt || rec.accessTokenFor !== tokenIdentity(s.cfg)) return false;
  const exp = Date.parse(rec.accessTokenExpiresAt);
  if (!(exp > now) || (s.expiresAt !== undefined && exp <= s.expiresAt)) return false;
  s.accessToken = rec.accessToken;
  s.expiresAt = exp;
  s.obtainedAt = rec.lastRefreshAt ? Date.parse(rec.lastRefreshAt) : undefined;
  s.forced = false;
  s.unproven = false;
  addSecret(rec.accessToken, { slot: `access:${s.cfg.name}`, expiresAt: exp });
  return true;
}
