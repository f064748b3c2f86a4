// Microsoft identity platform (Entra ID) tokens for Exchange Online SMTP and Graph, through
// oauth4webapi: an OpenID-certified, dependency-free OAuth 2.0 client that hands us every
// token response as it came (so each rotated refresh token is ours to persist before the
// new access token is used; MSAL keeps refresh tokens inside its own cache instead).
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import * as oauth from 'oauth4webapi';
import { addSecret } from '../../log/redact.js';
import type { DeviceCode } from '../signIn.js';
import { MS_APP_SCOPE, MS_DELEGATED_SCOPES, microsoftIssuer } from './clouds.js';

export interface MicrosoftOAuth {
  type: 'user' | 'app';
  clientId: string;
  tenant?: string;
  authorityHost?: string;
  tokenUrl: string;
  /** Delegated sign-in (authorize): the v2.0 authorize endpoint. */
  authUrl?: string;
  clientSecret?: string;
  clientSecretFile?: string;
  certificateFile?: string;
  privateKeyFile?: string;
  caFile?: string;
}

export interface MicrosoftTokens {
  access_token: string;
  expires_in?: number;
  refresh_token?: string;
  /** The scopes granted, as the token endpoint listed them (those of the one resource asked for). */
  scope?: string;
}

/** How the app proves who it is: a secret, or a certificate's key signing a client assertion. */
export interface MicrosoftCredentials {
  auth: oauth.ClientAuth;
}

function readFile(key: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read oauth.${key} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Reads the secret or certificate now, so config mistakes show at start. */
export async function microsoftCredentials(o: MicrosoftOAuth, slot: string): Promise<MicrosoftCredentials> {
  if (o.certificateFile && o.privateKeyFile) {
    const cert = new X509Certificate(readFile('certificateFile', o.certificateFile));
    const pem = readFile('privateKeyFile', o.privateKeyFile);
    addSecret(pem, { slot: `ms-key:${slot}` });
    const keyObject = createPrivateKey(pem);
    const key = await crypto.subtle.importKey(
      'pkcs8',
      keyObject.export({ type: 'pkcs8', format: 'der' }),
      { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      false,
      ['sign'],
    );
    // Entra ID finds the certificate by its thumbprint in the assertion header.
    const x5t = createHash('sha1').update(cert.raw).digest('base64url');
    const x5tS256 = createHash('sha256').update(cert.raw).digest('base64url');
    return {
      auth: oauth.PrivateKeyJwt(
        { key },
        {
          [oauth.modifyAssertion]: (header, payload) => {
            header.x5t = x5t;
            header['x5t#S256'] = x5tS256;
            // oauth4webapi sets aud to the issuer; Entra ID wants the token endpoint (AADSTS700023 otherwise).
            payload.aud = o.tokenUrl;
          },
        },
      ),
    };
  }
  let secret = o.clientSecret;
  if (!secret && o.clientSecretFile) secret = readFile('clientSecretFile', o.clientSecretFile).trim();
  // Delegated without a secret: a public client ("Mobile and desktop applications" registration).
  if (!secret && o.type === 'user') return { auth: oauth.None() };
  if (!secret) throw new Error('no client secret configured (oauth.clientSecret or oauth.clientSecretFile)');
  addSecret(secret, { slot: `client-secret:${o.clientId}` });
  return { auth: oauth.ClientSecretPost(secret) };
}

/** fetch over node:https so oauth.caFile adds trust anchors (verification stays on) and a timeout applies. */
function httpsFetch(agent: https.Agent | undefined, timeoutMs: number): typeof fetch {
  return ((input: string | URL | Request, init?: RequestInit) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(typeof input === 'string' || input instanceof URL ? input.toString() : input.url);
      const headers: Record<string, string> = {};
      new Headers(init?.headers).forEach((v, k) => {
        headers[k] = v;
      });
      const req = https.request(
        url,
        { method: init?.method ?? 'GET', headers, agent, minVersion: 'TLSv1.2', timeout: timeoutMs },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const h = new Headers();
            for (const [k, v] of Object.entries(res.headers))
              if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v);
            resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0, headers: h }));
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => {
        const e = new Error(`timed out after ${timeoutMs / 1000} s`);
        e.name = 'TimeoutError';
        req.destroy(e);
      });
      req.on('error', reject);
      req.end(init?.body === undefined || init.body === null ? undefined : String(init.body));
    })) as typeof fetch;
}

export interface MicrosoftRequest {
  oauth: MicrosoftOAuth;
  /** What to ask for, from scopesFor(account) (src/providers/index.ts); default: SMTP's. */
  scopes?: readonly string[];
  /** What a sign-in consents to, when more than `scopes` (OpenID, several resources); token requests ask for `scopes`. */
  signInScopes?: readonly string[];
  /** The authorization code's redemption, when more than `scopes`: one resource plus the OpenID scopes. */
  redeemScopes?: readonly string[];
  credentials: MicrosoftCredentials;
  agent?: https.Agent;
  timeoutMs: number;
}

function server(o: MicrosoftOAuth): oauth.AuthorizationServer {
  const devicecode = o.tokenUrl.replace(/\/token$/, '/devicecode');
  return {
    issuer: new URL(o.tokenUrl).origin,
    token_endpoint: o.tokenUrl,
    authorization_endpoint: o.authUrl,
    device_authorization_endpoint: devicecode,
  };
}

/** Who signed in, as the answer's id_token (checked: iss, aud, exp, tid) names them. */
export interface MicrosoftIdentity {
  email?: string;
  preferredUsername?: string;
}

/** A delegated grant as the token endpoint gave it (authorization code or device code). */
export interface MicrosoftGrant {
  refreshToken: string;
  accessToken: string;
  expiresInSec: number | undefined;
  /** The scopes granted, as the token endpoint listed them (checked against what the transport needs). */
  scope?: string;
  /** The id_token's names of the user; undefined when the answer had no id_token. */
  identity?: MicrosoftIdentity;
}

function grantOf(body: oauth.TokenEndpointResponse): MicrosoftGrant {
  if (!body.refresh_token)
    throw new Error('Microsoft returned no refresh token (the scope offline_access was not granted)');
  const id = oauth.getValidatedIdTokenClaims(body);
  const str = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : undefined);
  return {
    refreshToken: body.refresh_token,
    accessToken: body.access_token,
    expiresInSec: body.expires_in,
    scope: body.scope,
    ...(id ? { identity: { email: str(id.email), preferredUsername: str(id.preferred_username) } } : {}),
  };
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The authorization server to process a sign-in's token answer against. oauth4webapi checks an
 * id_token's iss against `as.issuer`, but Entra ID's is {issuer host}/{tenant GUID}/v2.0: the
 * GUID of the user's tenant even when the path named a domain, organizations or common, so it is
 * not known before the answer. So the answer's tid is read first, the issuer it must come with
 * is computed from the configured authority (src/providers/microsoft/clouds.ts), and oauth4webapi
 * then checks iss, aud, exp and the alg against it. (That is what oauth4webapi's undocumented
 * _expectedIssuer hook does for openid-client; a plain `as` keeps to the public API.) A tenant
 * configured as a GUID pins tid.
 */
async function signInServer(o: MicrosoftOAuth, as: oauth.AuthorizationServer, res: Response) {
  if (res.status !== 200) return as;
  let idToken: unknown;
  try {
    idToken = ((await res.clone().json()) as { id_token?: unknown }).id_token;
  } catch {
    return as; // not JSON: oauth4webapi says so
  }
  if (typeof idToken !== 'string') return as;
  addSecret(idToken); // a signed statement of who signed in: kept out of logs like the tokens
  let tid: unknown;
  try {
    tid = (JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { tid?: unknown }).tid;
  } catch {
    tid = undefined;
  }
  if (typeof tid !== 'string' || !GUID.test(tid))
    throw new Error("Microsoft's id_token names no tenant (tid); it cannot be checked, so nothing was stored");
  const tenant = o.tenant ?? decodeURIComponent(new URL(o.tokenUrl).pathname.split('/')[1] ?? '');
  if (GUID.test(tenant) && tid.toLowerCase() !== tenant.toLowerCase())
    throw new Error(
      `Microsoft's id_token is from tenant ${tid}, not the configured tenant ${tenant} (oauth.tenant); nothing was stored`,
    );
  return { ...as, issuer: microsoftIssuer(o.tokenUrl, tid) };
}

/** oauth4webapi's refusal of an id_token's issuer, in words naming both (neither is a secret). */
function issuerRefused(e: unknown, as: oauth.AuthorizationServer): unknown {
  if (
    e instanceof oauth.OperationProcessingError &&
    e.code === oauth.JWT_CLAIM_COMPARISON &&
    (e.cause as { claim?: unknown } | undefined)?.claim === 'iss'
  ) {
    const iss = (e.cause as { claims?: { iss?: unknown } }).claims?.iss;
    return new Error(
      `Microsoft's id_token was issued by ${String(iss)}, not ${as.issuer} (the configured cloud and tenant); nothing was stored`,
    );
  }
  return e;
}

/** A sign-in's token answer (code or device code) with its id_token checked against the right issuer. */
async function processSignIn(
  o: MicrosoftOAuth,
  as: oauth.AuthorizationServer,
  res: Response,
  process: (as: oauth.AuthorizationServer) => Promise<oauth.TokenEndpointResponse>,
): Promise<MicrosoftGrant> {
  const checked = await signInServer(o, as, res);
  let body;
  try {
    body = await process(checked);
  } catch (e) {
    throw issuerRefused(e, checked);
  }
  return grantOf(body);
}

function delegatedScopes(r: MicrosoftRequest): string {
  return (r.scopes ?? MS_DELEGATED_SCOPES).join(' ');
}

/** A sign-in's consent may span resources; a token request's scope may not (AADSTS28000). */
function consentScopes(r: MicrosoftRequest): string {
  return r.signInScopes ? r.signInScopes.join(' ') : delegatedScopes(r);
}

/**
 * Authorization code + PKCE (S256) sign-in: `url` is where the browser goes; `exchange` takes
 * the redirect's query (state checked by the library) and redeems the code with the verifier.
 */
export async function microsoftCodeFlow(
  r: MicrosoftRequest,
  p: { redirectUri: string; state: string; loginHint?: string },
): Promise<{ url: string; exchange(q: URLSearchParams): Promise<MicrosoftGrant> }> {
  const as = server(r.oauth);
  const client: oauth.Client = { client_id: r.oauth.clientId };
  const verifier = oauth.generateRandomCodeVerifier();
  addSecret(verifier);
  const url = new URL(as.authorization_endpoint!);
  url.search = new URLSearchParams({
    client_id: r.oauth.clientId,
    response_type: 'code',
    redirect_uri: p.redirectUri,
    response_mode: 'query',
    scope: consentScopes(r),
    state: p.state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...(p.loginHint ? { login_hint: p.loginHint } : {}),
  }).toString();
  return {
    url: url.toString(),
    async exchange(q) {
      const params = oauth.validateAuthResponse(as, client, q, p.state);
      addSecret(params.get('code') ?? '');
      const res = await oauth.authorizationCodeGrantRequest(
        as,
        client,
        r.credentials.auth,
        params,
        p.redirectUri,
        verifier,
        {
          additionalParameters: { scope: (r.redeemScopes ?? r.scopes ?? MS_DELEGATED_SCOPES).join(' ') },
          [oauth.customFetch]: httpsFetch(r.agent, r.timeoutMs),
        },
      );
      return processSignIn(r.oauth, as, res, (checked) => oauth.processAuthorizationCodeResponse(checked, client, res));
    },
  };
}

/**
 * Device authorization grant (RFC 8628): `start` gets the user code; `poll` asks the token
 * endpoint every `interval` seconds (5 more after each slow_down) until the user has signed in,
 * the code expired, or the user declined.
 */
export async function microsoftDeviceFlow(
  r: MicrosoftRequest,
  sleep: (ms: number) => Promise<void>,
): Promise<{ code: DeviceCode; poll(): Promise<MicrosoftGrant> }> {
  const as = server(r.oauth);
  const client: oauth.Client = { client_id: r.oauth.clientId };
  const fetchOpt = { [oauth.customFetch]: httpsFetch(r.agent, r.timeoutMs) };
  const d = await oauth.processDeviceAuthorizationResponse(
    as,
    client,
    await oauth.deviceAuthorizationRequest(as, client, r.credentials.auth, { scope: consentScopes(r) }, fetchOpt),
  );
  addSecret(d.device_code);
  const code: DeviceCode = {
    userCode: d.user_code,
    verificationUri: d.verification_uri,
    message: typeof d.message === 'string' ? d.message : undefined,
    expiresInSec: d.expires_in,
    intervalSec: d.interval ?? 5,
  };
  return {
    code,
    async poll() {
      let interval = code.intervalSec;
      const deadline = Date.now() + code.expiresInSec * 1000;
      for (;;) {
        await sleep(interval * 1000);
        try {
          const res = await oauth.deviceCodeGrantRequest(as, client, r.credentials.auth, d.device_code, fetchOpt);
          return await processSignIn(r.oauth, as, res, (checked) =>
            oauth.processDeviceCodeResponse(checked, client, res),
          );
        } catch (e) {
          if (!(e instanceof oauth.ResponseBodyError)) throw e;
          if (e.error === 'authorization_pending' && Date.now() < deadline) continue;
          if (e.error === 'slow_down') {
            interval += 5;
            continue;
          }
          throw e;
        }
      }
    },
  };
}

/** Delegated: refresh_token grant. Microsoft answers with a new refresh token every time. */
export async function microsoftRefresh(r: MicrosoftRequest, refreshToken: string): Promise<MicrosoftTokens> {
  const client: oauth.Client = { client_id: r.oauth.clientId };
  const res = await oauth.refreshTokenGrantRequest(server(r.oauth), client, r.credentials.auth, refreshToken, {
    additionalParameters: { scope: delegatedScopes(r) },
    [oauth.customFetch]: httpsFetch(r.agent, r.timeoutMs),
  });
  const body = await oauth.processRefreshTokenResponse(server(r.oauth), client, res);
  return {
    access_token: body.access_token,
    expires_in: body.expires_in,
    refresh_token: body.refresh_token,
    scope: body.scope,
  };
}

/** App-only: client_credentials grant for Exchange Online's .default scope. */
export async function microsoftAppToken(r: MicrosoftRequest): Promise<MicrosoftTokens> {
  const client: oauth.Client = { client_id: r.oauth.clientId };
  const res = await oauth.clientCredentialsGrantRequest(
    server(r.oauth),
    client,
    r.credentials.auth,
    { scope: r.scopes?.[0] ?? MS_APP_SCOPE },
    {
      [oauth.customFetch]: httpsFetch(r.agent, r.timeoutMs),
    },
  );
  const body = await oauth.processClientCredentialsResponse(server(r.oauth), client, res);
  return { access_token: body.access_token, expires_in: body.expires_in };
}
