// The one place that builds google-auth-library clients and talks HTTP to the token
// endpoint, so a library upgrade (11.x needs Node 22) touches only src/oauth/.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { OAuth2Client } from 'google-auth-library';
type Gaxios = OAuth2Client['transporter'];
type GaxiosResponse = Awaited<ReturnType<Gaxios['request']>>;
import type { AccountConfig } from '../config/schema.js';
import { addSecret, redactString } from '../log/redact.js';

/** The only scope Gmail SMTP (XOAUTH2) accepts (scopes.ts chooses per account). */
export { GMAIL_FULL_SCOPE as GMAIL_SCOPE } from './scopes.js';
import { scopesFor } from './scopes.js';

/** Who an access token speaks for: a stored token is only reused for the same identity. */
export function accountIdentity(a: AccountConfig): string {
  // A Microsoft token is for one resource (SMTP or Graph): another transport needs a new one.
  const ms = a.provider === 'microsoft' && a.transport !== 'smtp' ? `:${scopesFor(a).join(' ')}` : '';
  if (a.oauth.type === 'user') return `user:${a.oauth.clientId}:${a.oauth.tokenUrl}${ms}`;
  if (a.oauth.type === 'app') return `app:${a.oauth.clientId}:${a.oauth.tokenUrl}${ms}`;
  // A service account's token carries the scopes it asked for: another transport needs a new one.
  const scopes = a.transport === 'smtp' ? '' : `:${scopesFor(a).join(' ')}`;
  return `sa:${a.oauth.keyFile}:${a.oauth.subject ?? ''}:${a.oauth.tokenUrl}${scopes}`;
}

export type UserOAuth = Extract<AccountConfig['oauth'], { type: 'user' }>;
export type ServiceAccountOAuth = Extract<AccountConfig['oauth'], { type: 'service-account' }>;

export interface HttpOptions {
  /** Per-request timeout; a hung endpoint must not stall delivery forever. */
  timeoutMs?: number;
}

/**
 * Per-attempt timeout of a token request unless the caller sets one (Google answers in well
 * under a second; a timed-out request is not retried, see retryTokenRequest).
 */
export const DEFAULT_TIMEOUT_MS = 10_000;

const agents = new Map<string, https.Agent>();

/**
 * caFile adds trust anchors on top of the system roots (never replaces or disables
 * verification). gaxios 8 uses node-fetch in Node, which honours an https.Agent.
 */
export function tokenAgent(caFile: string | undefined): https.Agent | undefined {
  if (!caFile) return undefined;
  let extra: string;
  try {
    extra = readFileSync(caFile, 'utf8');
  } catch (e) {
    throw new Error(`cannot read oauth.caFile ${caFile}: ${(e as Error).message}`);
  }
  const key = `${caFile}\0${extra}`;
  let agent = agents.get(key);
  if (!agent) {
    agent = new https.Agent({ ca: [...tls.rootCertificates, extra], keepAlive: true, minVersion: 'TLSv1.2' });
    agents.set(key, agent);
  }
  return agent;
}

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

/** A 2xx answer that is not the JSON object OAuth requires (an HTML error page, a cut-off body). */
export class InvalidTokenResponse extends Error {
  constructor(
    readonly status: number,
    readonly contentType: string,
    readonly bytes: number,
  ) {
    super(
      `token endpoint sent invalid JSON in the response (HTTP ${status}, ${contentType || 'no content type'}, ${bytes} bytes)`,
    );
    this.name = 'InvalidTokenResponse';
  }
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
  account: AccountConfig,
  opts: { redirectUri?: string; http?: HttpOptions } = {},
): OAuth2Client {
  const oauth = account.oauth;
  if (oauth.type !== 'user') throw new Error(`account ${account.name} is a service account`);
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
 * The token endpoint's answer as we need it. Errors are GaxiosErrors from the library's
 * transporter, so user and service accounts are classified the same way.
 */
export interface TokenResponse {
  access_token: string;
  expires_in?: number;
  expiry_date?: number;
  refresh_token?: string;
  refresh_token_expires_in?: number;
  id_token?: string;
  scope?: string;
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

export interface ClassifiedError {
  /** The grant is dead (revoked, expired, wrong client): only re-authorization helps. */
  dead: boolean;
  /** OAuth error code (invalid_grant, ...) or network code, when known. */
  code: string | undefined;
  /** A short, secret-free description for logs and `token status`. */
  message: string;
}

const DEAD_GRANT = new Set(['invalid_grant', 'unauthorized_client']);

/**
 * Reduces a token-endpoint failure to what we may log: no config, no request body, and
 * every text the endpoint sent passed through the redactor (a broken endpoint may echo
 * the request with the refresh token and client secret in it). The message names what
 * happened: an OAuth error, an HTTP status, invalid JSON, a timeout, a network error.
 */
export function classifyTokenError(err: unknown, http: HttpOptions = {}): ClassifiedError {
  const c = classifyRaw(err, http);
  return { ...c, message: redactString(c.message).replace(/\s+/g, ' ').trim().slice(0, 400) };
}

function classifyRaw(err: unknown, http: HttpOptions): ClassifiedError {
  const e = err as {
    name?: string;
    message?: string;
    code?: unknown;
    status?: number;
    cause?: unknown;
    response?: { status?: number; data?: unknown; headers?: { get?(k: string): string | null } };
  };
  if (err instanceof InvalidTokenResponse) return { dead: false, code: 'invalid_response', message: err.message };
  const cause = e?.cause as { name?: string; code?: unknown } | undefined;
  if (cause instanceof InvalidTokenResponse) return { dead: false, code: 'invalid_response', message: cause.message };
  const data = e?.response?.data;
  const status = e?.response?.status ?? e?.status;
  if (data && typeof data === 'object' && typeof (data as { error?: unknown }).error === 'string') {
    const d = data as { error: string; error_description?: unknown };
    const desc = typeof d.error_description === 'string' ? `: ${d.error_description}` : '';
    return {
      dead: DEAD_GRANT.has(d.error),
      code: d.error,
      message: `token endpoint ${status ?? ''} ${d.error}${desc}`,
    };
  }
  if (status) {
    // A non-OAuth body (gaxios' errorRedactor already replaced its text): name its type only.
    const type = (e?.response?.headers?.get?.('content-type') ?? '').split(';')[0];
    return {
      dead: false,
      code: String(status),
      message: `token endpoint answered HTTP ${status}${type ? ` (${type}, not an OAuth error)` : ''}`,
    };
  }
  // gaxios aborts the request when its timeout fires; nothing else here aborts one.
  if (
    e?.name === 'TimeoutError' ||
    e?.name === 'AbortError' ||
    cause?.name === 'AbortError' ||
    cause?.name === 'TimeoutError'
  ) {
    const ms = http.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return {
      dead: false,
      code: 'ETIMEDOUT',
      message: `token endpoint timed out after ${ms % 1000 ? ms / 1000 : Math.round(ms / 1000)} s`,
    };
  }
  const code = typeof e?.code === 'string' ? e.code : typeof cause?.code === 'string' ? cause.code : undefined;
  const msg = (e?.message ?? String(err)).split('\n')[0] ?? 'unknown error';
  return {
    dead: false,
    code,
    message: `token endpoint unreachable: ${code && !msg.includes(code) ? code + ' ' : ''}${msg}`,
  };
}
