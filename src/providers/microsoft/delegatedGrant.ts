// Microsoft, a user's delegated grant: every answer rotates the refresh token (and the fake
// makes each one usable once), so the rotated token is on disk before the new access token
// is handed out. A delegated transport auto grant also mints Graph tokens from the same
// refresh token (refreshFor); the token cache runs these one at a time with the SMTP ones.
import type { GrantContext, ProviderAccount, Refresher, TokenResponse } from '../provider.js';
import { microsoftRequester } from './appGrant.js';
import { microsoftGraphScopes } from './clouds.js';
import { consentErrorFor } from './errors.js';
import { microsoftRefresh, type MicrosoftOAuth } from './tokens.js';

export function microsoftDelegatedRefresher(
  cfg: ProviderAccount & { name: string },
  o: MicrosoftOAuth,
  ctx: GrantContext,
): Refresher {
  const request = microsoftRequester(cfg, o, ctx);
  /** One refresh for `scopes` (one resource); the rotation is saved before the token is returned. */
  const refresh = async (usedRt: string | undefined, scopes?: string[]): Promise<TokenResponse> => {
    const req = await request();
    if (!usedRt) return ctx.noRefreshToken();
    ctx.log.debug('refreshing access token', { account: ctx.name, ...(scopes ? { resource: 'graph' } : {}) });
    let r;
    try {
      r = await microsoftRefresh(scopes ? { ...req, scopes } : req, usedRt);
    } catch (e) {
      throw consentErrorFor(e, scopes ?? req.scopes ?? []);
    }
    if (r.refresh_token && r.refresh_token !== usedRt) await ctx.rotate(r.refresh_token, undefined);
    return { access_token: r.access_token, expiry_date: ctx.now() + (r.expires_in ?? 3600) * 1000 };
  };
  return {
    refresh: (usedRt) => refresh(usedRt),
    // The Graph token of a transport auto account (the config as it is now: a reload may change it).
    refreshFor: (usedRt, resource) => {
      if (resource !== 'graph') throw new Error(`no ${String(resource)} token for a Microsoft grant`);
      return refresh(usedRt, microsoftGraphScopes(ctx.account()));
    },
  };
}
