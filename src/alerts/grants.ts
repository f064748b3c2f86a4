// When a grant is likely to stop working, from what the token store knows. Shared by the
// alert monitor and the console so both say the same thing.
import type { AccountConfig } from '../config/schema.js';
import type { AccountStatus } from '../oauth/service.js';
import { providerFor } from '../providers/index.js';

export interface GrantRisk {
  /** warn: a person should act before `at`; info: worth showing, nothing to do yet. */
  level: 'none' | 'info' | 'warn';
  text: string;
  at?: string;
}

export function grantRisk(acct: AccountConfig, st: AccountStatus, now: number, warnAheadMs: number): GrantRisk {
  if (acct.oauth.type !== 'user') return { level: 'none', text: 'no refresh token (signs in with its own key)' };
  if (st.state === 'needs-reauth') return { level: 'warn', text: 'grant refused: authorize again' };
  if (!st.refreshTokenIssuedAt && !st.refreshTokenExpiresAt) return { level: 'none', text: 'unknown' };
  if (st.refreshTokenExpiresAt) {
    const exp = Date.parse(st.refreshTokenExpiresAt);
    return exp - now <= warnAheadMs
      ? { level: 'warn', text: `time-limited grant expires ${st.refreshTokenExpiresAt}`, at: st.refreshTokenExpiresAt }
      : {
          level: 'info',
          text: `time-limited grant, expires ${st.refreshTokenExpiresAt}`,
          at: st.refreshTokenExpiresAt,
        };
  }
  const provider = providerFor(acct);
  // Unused grants lapse (Google after 6 months, Microsoft after 90 days).
  const idleLimit = provider.idleGrantLifetimeMs;
  const lastUse = Date.parse(st.lastRefreshAt ?? st.refreshTokenIssuedAt!);
  if (now - lastUse >= idleLimit - warnAheadMs) {
    const at = new Date(lastUse + idleLimit).toISOString();
    return { level: 'warn', text: `unused since ${new Date(lastUse).toISOString()}; unused grants lapse at ${at}`, at };
  }
  const limit = provider.grantAgeLimit;
  if (limit && st.refreshTokenIssuedAt) {
    const issued = Date.parse(st.refreshTokenIssuedAt);
    const age = now - issued;
    const at = new Date(issued + limit.lifetimeMs).toISOString();
    if (age >= limit.warnAfterMs && age < limit.lifetimeMs)
      return { level: 'warn', text: `if ${limit.when}, ${provider.label} revokes this grant at ${at}`, at };
    if (age < limit.warnAfterMs) return { level: 'info', text: `revoked at ${at} if ${limit.when}`, at };
  }
  return { level: 'none', text: 'no known expiry' };
}
