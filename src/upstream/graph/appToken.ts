// App-only Graph tokens for transport auto on a Microsoft account: the token service holds the
// account's SMTP token (resource outlook.office365.com); Graph needs one for its own resource.
// Client credentials are stateless (no refresh token to rotate), so this small cache can ask
// for them itself with the account's secret or certificate.
import type { AccountConfig } from '../../config/schema.js';
import { graphScopes, type MsCloud } from '../../providers/microsoft/clouds.js';
import { classifyMicrosoftError } from '../../providers/microsoft/errors.js';
import {
  microsoftAppToken,
  microsoftCredentials,
  type MicrosoftCredentials,
} from '../../providers/microsoft/tokens.js';
import { DEFAULT_TIMEOUT_MS, tokenAgent } from '../../providers/http.js';
import { addSecret } from '../../log/redact.js';
import { NeedsReauthError } from '../../oauth/service.js';

/** Refresh this long before expiry. */
const SKEW_MS = 5 * 60_000;

export class GraphAppTokens {
  private readonly cache = new Map<string, { token: string; expiresAt: number; key: string }>();
  private readonly creds = new Map<string, Promise<MicrosoftCredentials>>();

  async get(acct: AccountConfig, force = false): Promise<string> {
    const o = acct.oauth;
    // Delegated accounts get their Graph token from the token service (src/upstream/graph/auto.ts).
    if (o.type !== 'app') throw new Error(`account ${acct.name}: app-only Graph tokens need oauth.type app`);
    const key = JSON.stringify([o.clientId, o.tokenUrl, acct.cloud ?? 'global']);
    const c = this.cache.get(acct.name);
    if (!force && c && c.key === key && c.expiresAt - SKEW_MS > Date.now()) return c.token;
    let p = this.creds.get(key);
    if (!p) {
      p = microsoftCredentials(o, `graph-auto:${acct.name}`);
      this.creds.set(key, p);
      p.catch(() => this.creds.delete(key));
    }
    try {
      const r = await microsoftAppToken({
        oauth: o,
        credentials: await p,
        agent: tokenAgent(o.caFile),
        timeoutMs: DEFAULT_TIMEOUT_MS,
        scopes: [graphScopes(acct.cloud).app],
      });
      const expiresAt = Date.now() + (r.expires_in ?? 3600) * 1000;
      addSecret(r.access_token, { slot: `graph-access:${acct.name}`, expiresAt });
      this.cache.set(acct.name, { token: r.access_token, expiresAt, key });
      return r.access_token;
    } catch (e) {
      const m = classifyMicrosoftError(e);
      if (m?.dead) throw new NeedsReauthError(acct.name, m.message);
      throw new Error(m?.message ?? `Graph token for ${acct.name}: ${(e as Error).message}`);
    }
  }
}
