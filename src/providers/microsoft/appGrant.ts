// Microsoft, app-only (client credentials with a client secret or certificate): no refresh
// token, a new access token per request. The secret or key is read when the account is set up.
// A transport auto account also asks, with the same credentials, for Graph's token (refreshFor).
import { DEFAULT_TIMEOUT_MS, tokenAgent } from '../http.js';
import {
  AccountConfigError,
  type GrantContext,
  type ProviderAccount,
  type Refresher,
  type TokenResponse,
} from '../provider.js';
import { graphScopes, microsoftScopes, type MsCloud } from './clouds.js';
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
  /** One client-credentials request, for `scopes` (one resource's .default) or the account's own. */
  const token = async (scopes?: string[]): Promise<TokenResponse> => {
    const req = await request();
    ctx.log.debug('requesting app-only access token', { account: ctx.name, ...(scopes ? { resource: 'graph' } : {}) });
    const r = await microsoftAppToken(scopes ? { ...req, scopes } : req);
    return { access_token: r.access_token, expiry_date: ctx.now() + (r.expires_in ?? 3600) * 1000 };
  };
  return {
    refresh: () => token(),
    // The Graph token of a transport auto account: the same secret or certificate, for the
    // Graph of the account's cloud (the config as it is now: a reload may change it).
    refreshFor: async (_refreshToken, resource) => {
      if (resource !== 'graph') throw new Error(`no ${String(resource)} token for a Microsoft grant`);
      return token([graphScopes(ctx.account().cloud as MsCloud | undefined).app]);
    },
  };
}
