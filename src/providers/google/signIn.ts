// Google's browser sign-in: authorization code + PKCE through google-auth-library, asking for
// the transport's scopes plus `openid email` so the answer names who signed in.
import { CodeChallengeMethod } from 'google-auth-library';
import { addSecret } from '../../log/redact.js';
import { classifyTokenError } from '../http.js';
import type { ProviderAccount } from '../provider.js';
import {
  AuthorizeError,
  checkRedirect,
  emailFromIdToken,
  missingFrom,
  type RedirectFlow,
  type SignInGrant,
} from '../signIn.js';
import { createUserClient, type UserOAuth } from './client.js';
import { GOOGLE_IDENTITY_SCOPES, googleScopes } from './scopes.js';

type UserAccount = ProviderAccount & { name: string; email: string; oauth: UserOAuth };

export async function googleRedirect(acct: UserAccount, redirectUri: string, state: string): Promise<RedirectFlow> {
  {
    const client = createUserClient(acct, { redirectUri });
    const { codeVerifier, codeChallenge } = await client.generateCodeVerifierAsync();
    addSecret(codeVerifier);
    const url = client.generateAuthUrl({
      access_type: 'offline',
      prompt: 'consent',
      scope: [...googleScopes(acct), ...GOOGLE_IDENTITY_SCOPES],
      state,
      code_challenge: codeChallenge!,
      code_challenge_method: CodeChallengeMethod.S256,
      login_hint: acct.email,
    });
    return {
      url,
      async exchange(q) {
        const code = checkRedirect(q, state);
        addSecret(code);
        let tokens;
        try {
          tokens = (await client.getToken({ code, codeVerifier, redirect_uri: redirectUri })).tokens;
        } catch (e) {
          throw new AuthorizeError(`exchanging the authorization code failed: ${classifyTokenError(e).message}`);
        }
        const raw = tokens as typeof tokens & { refresh_token_expires_in?: number };
        if (!tokens.refresh_token)
          throw new AuthorizeError(
            'Google returned no refresh token. Remove the app at https://myaccount.google.com/permissions and run authorize again.',
          );
        addSecret(tokens.refresh_token);
        if (tokens.access_token) addSecret(tokens.access_token);
        // Google's consent screen lets the user untick a scope; such a grant cannot send.
        const missing = missingFrom(googleScopes(acct), tokens.scope);
        if (missing.length)
          throw new AuthorizeError(
            `the grant lacks ${missing.join(' and ')} (unticked on the consent screen?); run authorize again and allow sending email, nothing was stored`,
          );
        const email = emailFromIdToken(tokens.id_token);
        // Asked for with openid + email: without it nobody can tell whose mailbox this grant opens.
        if (!email)
          throw new AuthorizeError(
            'Google returned no id_token naming the signed-in user (openid email were asked for); nothing was stored. Run authorize again.',
          );
        const g: SignInGrant = { refreshToken: tokens.refresh_token, email };
        if (raw.refresh_token_expires_in)
          g.refreshTokenExpiresAt = new Date(Date.now() + raw.refresh_token_expires_in * 1000).toISOString();
        if (tokens.access_token && tokens.expiry_date) {
          g.accessToken = tokens.access_token;
          g.accessTokenExpiresAt = tokens.expiry_date;
        }
        return g;
      },
    };
  }
}
