// Microsoft, a user's delegated grant: every answer rotates the refresh token (and the fake
// makes each one usable once), so the rotated token is on disk before the new access token
// is handed out.
import type { GrantContext, ProviderAccount, Refresher, TokenResponse } from '../provider.js';
import { microsoftRequester } from './appGrant.js';
import { microsoftRefresh, type MicrosoftOAuth } from './tokens.js';

export function microsoftDelegatedRefresher(
  cfg: ProviderAccount & { name: string },
  o: MicrosoftOAuth,
  ctx: GrantContext,
): Refresher {
  const request = microsoftRequester(cfg, o, ctx);
  return {
    async refresh(usedRt): Promise<TokenResponse> {
      const req = await request();
      if (!usedRt) return ctx.noRefreshToken();
      ctx.log.debug('refreshing access token', { account: ctx.name });
      const r = await microsoftRefresh(req, usedRt);
      if (r.refresh_token && r.refresh_token !== usedRt) await ctx.rotate(r.refresh_token, undefined);
      return { access_token: r.access_token, expiry_date: ctx.now() + (r.expires_in ?? 3600) * 1000 };
    },
  };
}
