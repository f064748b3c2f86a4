// Google, a user's grant: the refresh token (from `authorize` or `token import`) is exchanged
// by google-auth-library; a rotated refresh token is persisted before the access token is used.
import type { GrantContext, ProviderAccount, Refresher, TokenResponse } from '../provider.js';
import { createUserClient } from './client.js';

export function googleUserRefresher(cfg: ProviderAccount, ctx: GrantContext): Refresher {
  const client = createUserClient(cfg, { http: ctx.http });
  /** Persisting a rotated refresh token, started from the library's 'tokens' event. */
  let pendingRotation: Promise<void> | undefined;
  // Rotation: the library emits the raw response (with the new refresh token) and then
  // keeps the old one in its credentials; we persist the new one before using the access token.
  client.on('tokens', (t: { refresh_token?: string | null; refresh_token_expires_in?: number }) => {
    if (t.refresh_token && t.refresh_token !== ctx.currentRefreshToken()) {
      const p = ctx.rotate(t.refresh_token, t.refresh_token_expires_in);
      p.catch(() => {});
      pendingRotation = p;
    } else if (t.refresh_token_expires_in) {
      // A time-limited grant (e.g. app in "Testing"): remember when it lapses, for the warning.
      ctx.refreshTokenExpiresIn(t.refresh_token_expires_in);
    }
  });
  return {
    async refresh(usedRt): Promise<TokenResponse> {
      if (!usedRt) return ctx.noRefreshToken();
      client.setCredentials({ refresh_token: usedRt });
      ctx.log.debug('refreshing access token', { account: ctx.name });
      const r = await client.refreshAccessToken();
      const rotation = pendingRotation;
      pendingRotation = undefined;
      if (rotation) await rotation;
      const c = r.credentials;
      if (!c.access_token) throw new Error('token endpoint returned no access_token');
      // The library stamps expiry with the real clock; keep it relative to ours.
      const expiresAt = c.expiry_date ? ctx.now() + (c.expiry_date - Date.now()) : ctx.now() + 3600_000;
      return { access_token: c.access_token, expiry_date: expiresAt };
    },
  };
}
