// The one place that builds google-auth-library clients and talks HTTP to the token
// endpoint, so a library upgrade (11.x needs Node 22) touches only src/oauth/.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { OAuth2Client } from 'google-auth-library';
import type { AccountConfig } from '../config/schema.js';
import { addSecret } from '../log/redact.js';

/** The only scope Gmail SMTP (XOAUTH2) accepts. */
export const GMAIL_SCOPE = 'https://mail.google.com/';

/** Who an access token speaks for: a stored token is only reused for the same identity. */
export function accountIdentity(a: AccountConfig): string {
  return a.oauth.type === 'user'
    ? `user:${a.oauth.clientId}:${a.oauth.tokenUrl}`
    : `sa:${a.oauth.keyFile}:${a.oauth.subject ?? ''}:${a.oauth.tokenUrl}`;
}

export type UserOAuth = Extract<AccountConfig['oauth'], { type: 'user' }>;
export type ServiceAccountOAuth = Extract<AccountConfig['oauth'], { type: 'service-account' }>;

export interface HttpOptions {
  /** Per-request timeout; a hung endpoint must not stall delivery forever. */
  timeoutMs?: number;
}

const agents = new Map<string, https.Agent>();

/**
 * caFile adds trust anchors on top of the system roots (never replaces or disables
 * verification). gaxios 7 uses node-fetch in Node, which honours an https.Agent.
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
  addSecret(secret);
  return secret;
}

export function transporterOptions(caFile: string | undefined, http: HttpOptions = {}) {
  return {
    agent: tokenAgent(caFile),
    timeout: http.timeoutMs ?? 20_000,
    // The library retries POSTs on 5xx/429/no response; keep that short: our own backoff
    // (service.ts) handles longer outages without hammering the endpoint.
    retryConfig: { retry: 2, noResponseRetries: 1, retryDelay: 200 },
  };
}

export function createUserClient(account: AccountConfig, opts: { redirectUri?: string; http?: HttpOptions } = {}): OAuth2Client {
  const oauth = account.oauth;
  if (oauth.type !== 'user') throw new Error(`account ${account.name} is a service account`);
  const clientSecret = readClientSecret(oauth);
  return new OAuth2Client({
    clientId: oauth.clientId,
    clientSecret,
    redirectUri: opts.redirectUri,
    endpoints: { oauth2TokenUrl: oauth.tokenUrl, oauth2AuthBaseUrl: oauth.authUrl },
    transporterOptions: transporterOptions(oauth.caFile, opts.http),
  });
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
    throw new Error(`service-account keyFile ${keyFile} lacks client_email or private_key (expected a Google JSON key)`);
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
): Promise<TokenResponse> {
  const { createSign } = await import('node:crypto');
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = { alg: 'RS256', typ: 'JWT', ...(key.private_key_id ? { kid: key.private_key_id } : {}) };
  const claims = {
    iss: key.client_email,
    ...(oauth.subject ? { sub: oauth.subject } : {}),
    scope: GMAIL_SCOPE,
    aud: oauth.tokenUrl,
    iat: nowSec,
    exp: nowSec + 3600,
  };
  const signingInput = `${b64(header)}.${b64(claims)}`;
  const signature = createSign('RSA-SHA256').update(signingInput).sign(key.private_key).toString('base64url');
  const assertion = `${signingInput}.${signature}`;
  addSecret(assertion);
  // A bare OAuth2Client only as a carrier for the library's configured HTTP transporter.
  const carrier = new OAuth2Client({ transporterOptions: transporterOptions(oauth.caFile, http) });
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

/** Reduces a token-endpoint failure to what we may log: no config, no request body. */
export function classifyTokenError(err: unknown): ClassifiedError {
  const e = err as { message?: string; code?: unknown; status?: number; response?: { status?: number; data?: unknown } };
  const data = e?.response?.data as { error?: unknown; error_description?: unknown } | undefined;
  const status = e?.response?.status ?? e?.status;
  if (data && typeof data === 'object' && typeof data.error === 'string') {
    const desc = typeof data.error_description === 'string' ? `: ${data.error_description}` : '';
    return { dead: DEAD_GRANT.has(data.error), code: data.error, message: `token endpoint ${status ?? ''} ${data.error}${desc}`.replace(/\s+/g, ' ') };
  }
  if (status) return { dead: false, code: String(status), message: `token endpoint answered HTTP ${status}` };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const msg = (e?.message ?? String(err)).split('\n')[0] ?? 'unknown error';
  return { dead: false, code, message: `token endpoint unreachable: ${code ? code + ' ' : ''}${msg}`.slice(0, 300) };
}
