// Google, a service account with domain-wide delegation: each access token comes from a
// freshly signed JWT assertion (no refresh token). The key is read when the account is set up.
import { addSecret } from '../../log/redact.js';
import type { GrantContext, ProviderAccount, Refresher, TokenResponse } from '../provider.js';
import { readServiceAccountKey, type ServiceAccountOAuth, serviceAccountToken } from './client.js';
import { googleScopes } from './scopes.js';

/** Throws when the key file cannot be read (reported as the account's config error). */
export function googleServiceAccountRefresher(
  cfg: ProviderAccount & { oauth: ServiceAccountOAuth },
  ctx: GrantContext,
): Refresher {
  const key = readServiceAccountKey(cfg.oauth.keyFile);
  addSecret(key.private_key, { slot: `sa-key:${cfg.name}` });
  return {
    async refresh(): Promise<TokenResponse> {
      ctx.log.debug('requesting service-account access token', { account: ctx.name });
      const res = await serviceAccountToken(
        cfg.oauth,
        key,
        Math.floor(Date.now() / 1000),
        ctx.http,
        googleScopes(ctx.account()),
      );
      if (!res?.access_token) throw new Error('token endpoint returned no access_token');
      return { access_token: res.access_token, expiry_date: ctx.now() + (res.expires_in ?? 3600) * 1000 };
    },
  };
}
