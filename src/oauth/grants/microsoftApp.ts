// Microsoft, app-only (client credentials with a client secret or certificate): no refresh
// token, a new access token per request. The secret or key is read when the account is set up.
import type { AccountConfig } from '../../config/schema.js';
import {
  microsoftAppToken,
  microsoftCredentials,
  type MicrosoftCredentials,
  type MicrosoftOAuth,
} from '../../providers/microsoft.js';
import { AccountConfigError } from '../account.js';
import { tokenAgent, DEFAULT_TIMEOUT_MS, type TokenResponse } from '../client.js';
import type { GrantContext, Refresher } from './refresher.js';
import { scopesFor } from '../scopes.js';

/** The token request of a Microsoft account; a secret or key that cannot be read is the account's config error. */
export function microsoftRequester(cfg: AccountConfig, o: MicrosoftOAuth, ctx: GrantContext) {
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
      scopes: scopesFor(cfg),
    };
  };
}

export function microsoftAppRefresher(cfg: AccountConfig, o: MicrosoftOAuth, ctx: GrantContext): Refresher {
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
