// Warnings before a user's grant lapses: a known end (refresh_token_expires_in) or a limit
// its provider puts on a grant's age (Google: 7 days for apps in "Testing" publishing status).
import type { Logger } from '../log/logger.js';
import { providerFor } from '../providers/index.js';
import { fixHint, type Slot } from './account.js';

const DAY_MS = 86400_000;

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
  const limit = providerFor(s.cfg).grantAgeLimit;
  if (!rec.refreshTokenIssuedAt || !limit) return;
  const age = t - Date.parse(rec.refreshTokenIssuedAt);
  if (age >= limit.warnAfterMs && age < limit.lifetimeMs) {
    s.lapseWarnedAt = t;
    const lapse = new Date(Date.parse(rec.refreshTokenIssuedAt) + limit.lifetimeMs).toISOString();
    const days = Math.round(limit.lifetimeMs / DAY_MS);
    log.warn(
      `account ${name}: refresh token issued ${rec.refreshTokenIssuedAt}; if ${limit.when}, ${providerFor(s.cfg).label} revokes it ${days} days after issue (${lapse}). ${limit.advice}, or be ready to ${fixHint(s.cfg)}`,
      { account: name },
    );
  }
}
