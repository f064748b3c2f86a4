// One grant type's way to a new access token, behind the provider-neutral token cache
// (src/oauth/service.ts). A refresher only talks to its token endpoint; the cache decides
// when to call it, persists what it returns and turns its errors into account states.
import type { AccountConfig } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import type { HttpOptions, TokenResponse } from '../client.js';

/** What the cache lends a refresher for one account. */
export interface GrantContext {
  name: string;
  /** The account's config now (a reload may change more than its oauth settings). */
  account: () => AccountConfig;
  log: Logger;
  http: HttpOptions;
  now: () => number;
  /** The refresh token the cache holds now (it may change while a request runs). */
  currentRefreshToken: () => string | undefined;
  /** Persists a rotated refresh token; resolves before the new access token may be used. */
  rotate: (refreshToken: string, expiresInSec: number | undefined) => Promise<void>;
  /** The grant said when its refresh token lapses (a time-limited grant). */
  refreshTokenExpiresIn: (seconds: number) => void;
  /** No refresh token is stored: marks the account needs-reauth and throws NeedsReauthError. */
  noRefreshToken: () => Promise<never>;
}

export interface Refresher {
  /** A new access token; `refreshToken` is the one the cache holds at the start of the refresh. */
  refresh(refreshToken: string | undefined): Promise<TokenResponse>;
}
