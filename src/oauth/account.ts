// One account as the token service holds it (the Slot), the errors a refresh can end in,
// and the status and fix hints the CLI and console show. No I/O beyond reading a key file
// for a hint.
import type { AccountConfig } from '../config/schema.js';
import { addSecret, redactString } from '../log/redact.js';
import type { HealthState } from '../types.js';
import { accountIdentity, readServiceAccountKey } from './client.js';
import { scopesFor } from './scopes.js';
import type { TokenRecord } from './store.js';
import type { Refresher } from './grants/refresher.js';

export class NeedsReauthError extends Error {
  constructor(
    readonly account: string,
    reason: string,
  ) {
    super(`account ${account} needs re-authorization: ${reason}`);
    this.name = 'NeedsReauthError';
  }
}

/** A failure on our side (config file, disk), described by its own message. */
export class LocalError extends Error {}
/** A problem with the account's own config (secret file, key file): not the endpoint's fault. */
export class AccountConfigError extends LocalError {}

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
  if (!rec?.accessToken || !rec.accessTokenExpiresAt || rec.accessTokenFor !== accountIdentity(s.cfg)) return false;
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
