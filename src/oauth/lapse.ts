// Warnings before a user's grant lapses: a known end (refresh_token_expires_in) or Google's
// 7-day limit for apps in "Testing" publishing status. The one definition of those lifetimes
// (the alerts and the console read them from here).
import type { Logger } from '../log/logger.js';
import { fixHint, type Slot } from './account.js';

const DAY_MS = 86400_000;
// Google revokes refresh tokens of apps in "Testing" publishing status 7 days after issue;
// the warning starts at day 5.
export const TESTING_LIFETIME_MS = 7 * DAY_MS;
export const TESTING_WARN_AFTER_MS = 5 * DAY_MS;

/** Logs, at most once a day per account, that its refresh token is about to lapse. */
export function warnLapsing(s: Slot, t: number, log: Logger): void {
  const rec = s.rec;
  if (s.cfg.oauth.type !== 'user' || !rec.refreshToken || s.state === 'needs-reauth') return;
  if (s.lapseWarnedAt !== undefined && t - s.lapseWarnedAt < DAY_MS) return;
  const name = s.cfg.name;
  if (rec.refreshTokenExpiresAt) {
    const exp = Date.parse(rec.refreshTokenExpiresAt);
    if (exp - t < 2 * DAY_MS) {
      s.lapseWarnedAt = t;
      log.warn(
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
    log.warn(
      `account ${name}: refresh token issued ${rec.refreshTokenIssuedAt}; if the OAuth app is in "Testing" publishing status, Google revokes it 7 days after issue (${lapse}). Move the app to "In production" (see README) to keep tokens valid, or be ready to ${fixHint(s.cfg)}`,
      { account: name },
    );
  }
}
