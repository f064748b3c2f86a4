// What every provider's interactive sign-in shares: the grant it yields (nothing is stored
// until the caller has checked it), the error meant for the user, and the checks of the
// browser's redirect back to us. The plumbing around it (loopback listener, paste, device
// instructions, storing) is src/oauth/authorize.ts.

/** A sign-in that failed, with a message for the user (never a secret). */
export class AuthorizeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthorizeError';
  }
}

/** What a sign-in obtained, before it is stored. */
export interface SignInGrant {
  refreshToken: string;
  refreshTokenExpiresAt?: string;
  accessToken?: string;
  accessTokenExpiresAt?: number;
  /** Who signed in (the caller refuses another user than the account's); a sign-in that names nobody is refused by the provider. */
  email: string;
  /** Appended to that refusal: how the provider named the user (Microsoft: email and sign-in name). */
  identityNote?: string;
}

/** A browser sign-in: where to send the user, and how to redeem the redirect back to us. */
export interface RedirectFlow {
  url: string;
  exchange(q: URLSearchParams): Promise<SignInGrant>;
}

/** A device-code sign-in (RFC 8628): the code for the user, and the polling until done. */
export interface DeviceFlow {
  code: DeviceCode;
  poll(): Promise<SignInGrant>;
}

export interface DeviceCode {
  userCode: string;
  verificationUri: string;
  /** The provider's own sentence for the user ("To sign in, use a web browser to open ..."). */
  message: string | undefined;
  expiresInSec: number;
  intervalSec: number;
}

/** The redirect belongs to this attempt and carries a code; returns the code. */
export function checkRedirect(q: URLSearchParams, state: string): string {
  // State first: an error= from someone else's redirect is as untrusted as a code.
  if (q.get('state') !== state)
    throw new AuthorizeError(
      'state mismatch: this redirect does not belong to this authorization attempt; rejected. Run authorize again.',
    );
  const err = q.get('error');
  if (err)
    throw new AuthorizeError(
      err === 'access_denied' ? 'access was denied in the browser' : `authorization failed: ${err}`,
    );
  const code = q.get('code');
  if (!code) throw new AuthorizeError('the redirect carries no authorization code');
  return code;
}

/** The id_token came straight from the token endpoint over verified TLS, so its payload is trusted as-is. */
export function emailFromIdToken(idToken: string | null | undefined): string | null {
  if (!idToken) return null;
  try {
    const payload = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      email?: unknown;
    };
    return typeof payload.email === 'string' ? payload.email : null;
  } catch {
    return null;
  }
}

/**
 * The scopes of `needed` that a grant's answer (its space-separated `scope`) lacks.
 * offline_access is not checked here (a missing refresh token is its own error); an answer
 * without a scope list says nothing, so nothing is missing.
 */
export function missingFrom(needed: string[], granted: string | undefined | null): string[] {
  if (typeof granted !== 'string') return [];
  const have = new Set(granted.split(/\s+/).filter(Boolean));
  return needed.filter((sc) => sc !== 'offline_access' && !have.has(sc));
}
