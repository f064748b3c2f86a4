// Which refresher an account's grant uses: the one place the token cache meets providers and
// oauth types. Throws when the account's own files (key, secret) make it unusable.
import type { AccountConfig } from '../../config/schema.js';
import { googleServiceAccountRefresher } from './googleServiceAccount.js';
import { googleUserRefresher } from './googleUser.js';
import { microsoftAppRefresher } from './microsoftApp.js';
import { microsoftDelegatedRefresher } from './microsoftDelegated.js';
import type { GrantContext, Refresher } from './refresher.js';

/** undefined: no grant of this provider has this oauth type (refreshes fail with a config error). */
export function refresherFor(cfg: AccountConfig, ctx: GrantContext): Refresher | undefined {
  const o = cfg.oauth;
  if (cfg.provider === 'microsoft' && o.type !== 'service-account')
    return o.type === 'app' ? microsoftAppRefresher(cfg, o, ctx) : microsoftDelegatedRefresher(cfg, o, ctx);
  if (o.type === 'user') return googleUserRefresher(cfg, ctx);
  if (o.type === 'service-account') return googleServiceAccountRefresher({ ...cfg, oauth: o }, ctx);
  return undefined;
}
