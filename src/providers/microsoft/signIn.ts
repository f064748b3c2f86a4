// Microsoft's delegated sign-in through oauth4webapi: authorization code + PKCE in a browser,
// or the device code (RFC 8628). Microsoft's answers name no user (see README "Microsoft 365").
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
import { microsoftGraphScopes, microsoftScopes, microsoftSignInScopes } from './clouds.js';
import { classifyMicrosoftError, consentErrorFor, MicrosoftConsentError } from './errors.js';
import {
  type MicrosoftGrant,
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
    // Delegated auto: the sign-in consents to SMTP and Graph; the code is redeemed for SMTP.
    ...(acct.transport === 'auto' ? { signInScopes: microsoftSignInScopes(acct) } : {}),
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

async function toGrant(acct: UserAccount, req: MicrosoftRequest, g: MicrosoftGrant): Promise<SignInGrant> {
  addSecret(g.refreshToken);
  addSecret(g.accessToken);
  // As for Google: a grant without what the transport needs cannot send; store nothing.
  const missing = missingFrom(microsoftScopes(acct), g.scope);
  if (missing.length) throw lacks(missing);
  const refreshToken = req.signInScopes ? await checkGraphConsent(acct, req, g.refreshToken) : g.refreshToken;
  return {
    refreshToken,
    accessToken: g.accessToken,
    accessTokenExpiresAt: Date.now() + (g.expiresInSec ?? 3600) * 1000,
    email: null,
  };
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
