// Microsoft's delegated sign-in through oauth4webapi: authorization code + PKCE in a browser,
// or the device code (RFC 8628). The sign-in asks for openid profile email too, so the answer's
// id_token names who signed in (src/oauth/authorize.ts refuses another user than the account's).
import * as oauth from 'oauth4webapi';
import { addSecret, redactString } from '../../log/redact.js';
import { DEFAULT_TIMEOUT_MS, tokenAgent } from '../http.js';
import type { ProviderAccount } from '../provider.js';
import {
  AuthorizeError,
  checkRedirect,
  type DeviceFlow,
  missingFrom,
  type RedirectFlow,
  type SignInGrant,
} from '../signIn.js';
import { microsoftGraphScopes, microsoftRedeemScopes, microsoftScopes, microsoftSignInScopes } from './clouds.js';
import { classifyMicrosoftError, consentErrorFor, MicrosoftConsentError } from './errors.js';
import {
  type MicrosoftGrant,
  type MicrosoftIdentity,
  type MicrosoftOAuth,
  type MicrosoftRequest,
  microsoftCodeFlow,
  microsoftCredentials,
  microsoftDeviceFlow,
  microsoftRefresh,
} from './tokens.js';

export type UserAccount = ProviderAccount & { name: string; email: string; oauth: MicrosoftOAuth };

/** The token request of a sign-in; a secret or key that cannot be read is the user's error to fix. */
async function request(acct: UserAccount): Promise<MicrosoftRequest> {
  const o = acct.oauth;
  let credentials;
  try {
    credentials = await microsoftCredentials(o, acct.name);
  } catch (e) {
    throw new AuthorizeError((e as Error).message);
  }
  return {
    oauth: o,
    credentials,
    agent: tokenAgent(o.caFile),
    timeoutMs: DEFAULT_TIMEOUT_MS,
    scopes: microsoftScopes(acct),
    // The sign-in also asks who signs in (OpenID); delegated auto consents to SMTP and Graph,
    // and the code is redeemed for SMTP. Refreshes ask for `scopes` only.
    signInScopes: microsoftSignInScopes(acct),
    redeemScopes: microsoftRedeemScopes(acct),
  };
}

function failed(what: string, e: unknown): AuthorizeError {
  if (e instanceof AuthorizeError) return e;
  const c = classifyMicrosoftError(e);
  if (c) return new AuthorizeError(`${what} failed: ${c.message}`);
  if (e instanceof oauth.AuthorizationResponseError)
    return new AuthorizeError(
      e.error === 'access_denied'
        ? 'access was denied in the browser'
        : `authorization failed: ${e.error} ${e.error_description ?? ''}`.trim(),
    );
  return new AuthorizeError(`${what} failed: ${redactString((e as Error).message)}`);
}

function lacks(missing: string[]): AuthorizeError {
  return new AuthorizeError(
    `the grant lacks ${missing.join(' and ')} (not consented?); grant it in Entra ID (admin consent if required) and run authorize again, nothing was stored`,
  );
}

/**
 * Delegated auto: does the grant also have Graph's consent? The sign-in's answer cannot say:
 * the code is redeemed for SMTP (one resource per token request), so its `scope` lists only
 * SMTP's. What can really be checked is a Graph token: one refresh for the Graph scopes now
 * (AADSTS65001, or an answer without Mail.Send: not consented). The refresh token rotates; the
 * new one is what is stored. Consent withdrawn later shows at the first Graph refresh instead
 * (needs-reauth naming the scope, src/providers/microsoft/delegatedGrant.ts).
 */
async function checkGraphConsent(acct: UserAccount, req: MicrosoftRequest, refreshToken: string): Promise<string> {
  const graph = microsoftGraphScopes(acct);
  let r;
  try {
    r = await microsoftRefresh({ ...req, scopes: graph }, refreshToken);
  } catch (e) {
    if (consentErrorFor(e, graph) instanceof MicrosoftConsentError)
      throw lacks(graph.filter((sc) => sc !== 'offline_access'));
    throw failed('getting a Microsoft Graph token (checking its consent)', e);
  }
  addSecret(r.access_token);
  if (r.refresh_token) addSecret(r.refresh_token);
  const missing = missingFrom(graph, r.scope);
  if (missing.length) throw lacks(missing);
  return r.refresh_token ?? refreshToken;
}

/**
 * Who signed in, by the id_token's email (the mailbox's primary SMTP address) or
 * preferred_username (the sign-in name, UPN): either may be the account's email. Another
 * user's address is returned for src/oauth/authorize.ts to refuse, with a note naming both.
 */
function signedInAs(acct: UserAccount, id: MicrosoftIdentity | undefined): { email: string; note?: string } {
  if (!id)
    throw new AuthorizeError(
      'Microsoft returned no id_token naming the signed-in user (openid profile email were asked for); nothing was stored. Run authorize again.',
    );
  const names = [id.email, id.preferredUsername].filter((n): n is string => n !== undefined);
  if (!names.length)
    throw new AuthorizeError(
      "Microsoft's id_token names no user (neither email nor preferred_username: were the email and profile permissions removed from the app registration?); nothing was stored. Run authorize again.",
    );
  const same = names.find((n) => n.toLowerCase() === acct.email.toLowerCase());
  if (same) return { email: same };
  return {
    email: names[0],
    note: `(Microsoft named the user: email ${id.email ?? '(none)'}, preferred_username ${id.preferredUsername ?? '(none)'}; the account's email must be one of them, normally the mailbox's primary SMTP address.)`,
  };
}

async function toGrant(acct: UserAccount, req: MicrosoftRequest, g: MicrosoftGrant): Promise<SignInGrant> {
  addSecret(g.refreshToken);
  addSecret(g.accessToken);
  // As for Google: a grant without what the transport needs cannot send; store nothing.
  const missing = missingFrom(microsoftScopes(acct), g.scope);
  if (missing.length) throw lacks(missing);
  const who = signedInAs(acct, g.identity);
  const grant = {
    accessToken: g.accessToken,
    accessTokenExpiresAt: Date.now() + (g.expiresInSec ?? 3600) * 1000,
    email: who.email,
    ...(who.note ? { identityNote: who.note } : {}),
  };
  // Another user's grant is refused as it is (src/oauth/authorize.ts); no Graph check for it.
  if (who.note || acct.transport !== 'auto') return { ...grant, refreshToken: g.refreshToken };
  return { ...grant, refreshToken: await checkGraphConsent(acct, req, g.refreshToken) };
}

export async function microsoftRedirect(acct: UserAccount, redirectUri: string, state: string): Promise<RedirectFlow> {
  const req = await request(acct);
  const flow = await microsoftCodeFlow(req, { redirectUri, state, loginHint: acct.email });
  return {
    url: flow.url,
    async exchange(q) {
      checkRedirect(q, state);
      try {
        return await toGrant(acct, req, await flow.exchange(q));
      } catch (e) {
        throw failed('exchanging the authorization code', e);
      }
    },
  };
}

export async function microsoftDevice(acct: UserAccount, sleep: (ms: number) => Promise<void>): Promise<DeviceFlow> {
  const req = await request(acct);
  let device: Awaited<ReturnType<typeof microsoftDeviceFlow>>;
  try {
    device = await microsoftDeviceFlow(req, sleep);
  } catch (e) {
    throw failed('starting the device sign-in', e);
  }
  return {
    code: device.code,
    async poll() {
      try {
        return await toGrant(acct, req, await device.poll());
      } catch (e) {
        if (
          e instanceof oauth.ResponseBodyError &&
          (e.error === 'expired_token' || e.error === 'authorization_pending')
        )
          throw new AuthorizeError(
            'the device code expired before the sign-in was completed; run authorize --device again',
          );
        if (
          e instanceof oauth.ResponseBodyError &&
          (e.error === 'authorization_declined' || e.error === 'access_denied')
        )
          throw new AuthorizeError('the sign-in was declined');
        throw failed('the device sign-in', e);
      }
    },
  };
}
