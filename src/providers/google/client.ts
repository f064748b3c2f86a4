// The one place that builds google-auth-library clients and talks HTTP to Google's token
// endpoint, so a library upgrade (11.x needs Node 22) touches only src/providers/google/.
import { readFileSync } from 'node:fs';
import type https from 'node:https';
import { OAuth2Client } from 'google-auth-library';
type Gaxios = OAuth2Client['transporter'];
type GaxiosResponse = Awaited<ReturnType<Gaxios['request']>>;
import { addSecret } from '../../log/redact.js';
import { DEFAULT_TIMEOUT_MS, InvalidTokenResponse, tokenAgent } from '../http.js';
import type { HttpOptions, ProviderAccount, ProviderOAuth, TokenResponse } from '../provider.js';

export type UserOAuth = ProviderOAuth & { type: 'user'; clientId: string; tokenUrl: string; authUrl: string };
export type ServiceAccountOAuth = ProviderOAuth & { type: 'service-account'; keyFile: string; tokenUrl: string };

export function readClientSecret(oauth: UserOAuth): string {
  let secret = oauth.clientSecret;
  if (!secret && oauth.clientSecretFile) {
    try {
      secret = readFileSync(oauth.clientSecretFile, 'utf8').trim();
    } catch (e) {
      throw new Error(`cannot read oauth.clientSecretFile ${oauth.clientSecretFile}: ${(e as Error).message}`);
    }
  }
  if (!secret) throw new Error('no client secret configured (oauth.clientSecret or oauth.clientSecretFile)');
  addSecret(secret, { slot: `client-secret:${oauth.clientId}` });
  return secret;
}

/**
 * gaxios hands a body it cannot parse on as a string and google-auth-library then fails
 * with a TypeError quoting the body (with the access token in it). This public response
 * interceptor turns that into a clear error before the library sees it.
 */
export function rejectNonJson(transporter: Gaxios): void {
  transporter.interceptors.response.add({
    resolved: async (res: GaxiosResponse) => {
      if (res.data === null || typeof res.data !== 'object') {
        const text = typeof res.data === 'string' ? res.data : '';
        throw new InvalidTokenResponse(res.status, res.headers?.get?.('content-type') ?? '', Buffer.byteLength(text));
      }
      return res;
    },
  });
}

/**
 * Retry policy of a token request (gaxios 8 would also retry a timed-out POST): a hung
 * endpoint costs one timeout, then our own backoff (service.ts) takes over, so a refresh
 * never stalls delivery for several timeouts and a single-use authorization code is not
 * POSTed twice. A connection that dies without an answer is retried once, 408/429/5xx twice.
 */
export function retryTokenRequest(err: {
  code?: unknown;
  response?: { status: number };
  config?: { retryConfig?: { currentRetryAttempt?: number } };
}): boolean {
  if (err.code === 'TimeoutError') return false;
  const attempt = err.config?.retryConfig?.currentRetryAttempt ?? 0;
  if (!err.response) return attempt < 1;
  const s = err.response.status;
  return (s === 408 || s === 429 || s >= 500) && attempt < 2;
}

export function transporterOptions(caFile: string | undefined, http: HttpOptions = {}) {
  return {
    agent: tokenAgent(caFile),
    timeout: http.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    retryConfig: { retry: 2, noResponseRetries: 1, retryDelay: 200, shouldRetry: retryTokenRequest },
  };
}

/**
 * The library's HTTP transporter (gaxios) for a Google API such as Gmail's: callers add the
 * Authorization header with a token from the token service, which owns every token.
 */
export function googleApiTransporter(agent: https.Agent | undefined): Gaxios {
  return new OAuth2Client({ transporterOptions: { agent } }).transporter;
}

export function createUserClient(
  account: ProviderAccount,
  opts: { redirectUri?: string; http?: HttpOptions } = {},
): OAuth2Client {
  const oauth = account.oauth as UserOAuth;
  if (oauth?.type !== 'user') throw new Error(`account ${account.name} is a service account`);
  const clientSecret = readClientSecret(oauth);
  const client = new OAuth2Client({
    clientId: oauth.clientId,
    clientSecret,
    redirectUri: opts.redirectUri,
    endpoints: { oauth2TokenUrl: oauth.tokenUrl, oauth2AuthBaseUrl: oauth.authUrl },
    transporterOptions: transporterOptions(oauth.caFile, opts.http),
  });
  rejectNonJson(client.transporter);
  return client;
}

/** A Google service-account JSON key, the parts we use. */
export interface ServiceAccountKey {
  client_email: string;
  private_key: string;
  private_key_id?: string;
  client_id?: string;
}

export function readServiceAccountKey(keyFile: string): ServiceAccountKey {
  let json: Partial<ServiceAccountKey>;
  try {
    json = JSON.parse(readFileSync(keyFile, 'utf8')) as Partial<ServiceAccountKey>;
  } catch (e) {
    throw new Error(`cannot read service-account keyFile ${keyFile}: ${(e as Error).message.replace(/\s+/g, ' ')}`);
  }
  if (typeof json.client_email !== 'string' || typeof json.private_key !== 'string')
    throw new Error(
      `service-account keyFile ${keyFile} lacks client_email or private_key (expected a Google JSON key)`,
    );
  return json as ServiceAccountKey;
}

/**
 * Service accounts: google-auth-library 10's JWT client (gtoken) hard-codes both the POST
 * URL and the `aud` claim to Google's endpoint, so we sign the RS256 assertion ourselves
 * and POST it through the library's transporter (same agent, timeout and retry policy).
 */
export async function serviceAccountToken(
  oauth: ServiceAccountOAuth,
  key: ServiceAccountKey,
  nowSec: number,
  http: HttpOptions = {},
  /** From scopesFor(account): domain-wide delegation must grant exactly these. */
  scopes: string[],
): Promise<TokenResponse> {
  const { createSign } = await import('node:crypto');
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = { alg: 'RS256', typ: 'JWT', ...(key.private_key_id ? { kid: key.private_key_id } : {}) };
  const claims = {
    iss: key.client_email,
    ...(oauth.subject ? { sub: oauth.subject } : {}),
    scope: scopes.join(' '),
    aud: oauth.tokenUrl,
    iat: nowSec,
    exp: nowSec + 3600,
  };
  const signingInput = `${b64(header)}.${b64(claims)}`;
  const signature = createSign('RSA-SHA256').update(signingInput).sign(key.private_key).toString('base64url');
  const assertion = `${signingInput}.${signature}`;
  addSecret(assertion, {
    slot: `assertion:${key.client_email}:${oauth.subject ?? ''}`,
    expiresAt: (nowSec + 3600) * 1000 + 60_000,
  });
  // A bare OAuth2Client only as a carrier for the library's configured HTTP transporter.
  const carrier = new OAuth2Client({ transporterOptions: transporterOptions(oauth.caFile, http) });
  rejectNonJson(carrier.transporter);
  const res = await carrier.transporter.request<TokenResponse>({
    method: 'POST',
    url: oauth.tokenUrl,
    data: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }),
    responseType: 'json',
    retryConfig: { httpMethodsToRetry: ['POST'] },
  });
  return res.data;
}
