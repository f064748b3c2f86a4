// Microsoft, app-only (client credentials with a client secret or certificate): no refresh
// token, a new access token per request. The secret or key is read when the account is set up.
import { DEFAULT_TIMEOUT_MS, tokenAgent } from '../http.js';
import {
  AccountConfigError,
  type GrantContext,
  type ProviderAccount,
  type Refresher,
  type TokenResponse,
} from '../provider.js';
import { microsoftScopes } from './clouds.js';
import { microsoftAppToken, microsoftCredentials, type MicrosoftCredentials, type MicrosoftOAuth } from './tokens.js';

/** The token request of a Microsoft account; a secret or key that cannot be read is the account's config error. */
export function microsoftRequester(cfg: ProviderAccount & { name: string }, o: MicrosoftOAuth, ctx: GrantContext) {
  const credentials: Promise<MicrosoftCredentials> = microsoftCredentials(o, cfg.name);
  credentials.catch(() => {}); // reported by the first refresh, as a config error
  return async () => {
    let c: MicrosoftCredentials;
    try {
      c = await credentials;
    } catch (e) {
      throw new AccountConfigError((e as Error).message);
    }
    return {
      oauth: o,
      credentials: c,
      agent: tokenAgent(o.caFile),
      timeoutMs: ctx.http.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      scopes: microsoftScopes(cfg),
    };
  };
}

export function microsoftAppRefresher(
  cfg: ProviderAccount & { name: string },
  o: MicrosoftOAuth,
  ctx: GrantContext,
): Refresher {
  const request = microsoftRequester(cfg, o, ctx);
  return {
    async refresh(): Promise<TokenResponse> {
      const req = await request();
      ctx.log.debug('requesting app-only access token', { account: ctx.name });
      const r = await microsoftAppToken(req);
      return { access_token: r.access_token, expiry_date: ctx.now() + (r.expires_in ?? 3600) * 1000 };
    },
  };
}
