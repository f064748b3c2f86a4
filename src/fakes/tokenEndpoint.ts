// Fake Google OAuth 2.0 endpoint (token + consent) over real HTTPS, for tests and `demo`.
// Error bodies and status codes mirror what oauth2.googleapis.com answers, so the app's
// classification (invalid_grant -> needs-reauth, 5xx -> retry) is exercised for real.
// One file on purpose (over 400 lines): it is one fake service, read as a whole as the
// behaviour the tests rely on.
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, verify, type KeyObject } from 'node:crypto';
import type { TestPki } from './ca.js';

export const GMAIL_SCOPE = 'https://mail.google.com/';
/** The Gmail API's send-only scope (transport gmail-api). */
export const GMAIL_SEND_SCOPE = 'https://www.googleapis.com/auth/gmail.send';
const GMAIL_SCOPES = new Set([GMAIL_SCOPE, GMAIL_SEND_SCOPE]);
const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** Scopes the consent stand-in accepts besides the Gmail one (for id_token/email). */
const EXTRA_SCOPES = new Set(['openid', 'email', 'profile', 'https://www.googleapis.com/auth/userinfo.email']);
const MAX_BODY = 64 * 1024;
const CODE_TTL_MS = 10 * 60 * 1000;

/**
 * Scripted failures. `echo500`: a broken backend that echoes the request form (refresh token,
 * client secret) in a text/plain 500 body; `truncated`: a 200 whose JSON body (with an
 * access token) is cut off mid-way; `notJson`: a 200 with an HTML error page.
 */
export type TokenFailureKind =
  | 'http500'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'hang'
  | 'echo500'
  | 'echo500json'
  | 'truncated'
  | 'notJson'
  | 'reset';

export interface TokenRequestRecord {
  at: number;
  grantType: string;
  clientId?: string;
  ok: boolean;
  error?: string;
  /** Impersonated user (JWT grant). */
  sub?: string;
  scope?: string;
  /** Whom the issued access token is for (when ok). */
  email?: string;
}

export interface AuthRequestRecord {
  at: number;
  clientId?: string;
  redirectUri?: string;
  scope?: string;
  ok: boolean;
  error?: string;
}

interface RefreshGrant {
  clientId: string;
  email: string;
  issuedAt: Date;
  revoked: boolean;
  /** What the user consented to; every access token from this grant carries it. */
  scope: string;
  /** Set when rotated away: still accepted until then (Google keeps old tokens alive a while). */
  validUntil?: number;
}

interface PendingCode {
  clientId: string;
  redirectUri: string;
  codeChallenge: string;
  email: string;
  scope: string;
  offline: boolean;
  expiresAt: number;
}

interface ServiceAccount {
  publicKey: KeyObject;
  keyId: string;
  subjects: Set<string>;
}

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description?: string,
  ) {
    super(error);
  }
}

const rnd = (n: number): string => randomBytes(n).toString('base64url');
const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

export class FakeTokenEndpoint {
  readonly url: string;
  readonly authUrl: string;
  accessTokenTtlSec: number;
  /** Google's access tokens start with ya29.; tests of literal (registered-secret) redaction use a shape no pattern knows. */
  accessTokenPrefix = 'ya29.';
  rotateRefreshTokens = false;
  /** How long a rotated-away refresh token keeps working. */
  rotationGraceMs = 5 * 60 * 1000;
  /** Account the consent stand-in "logs in" as. */
  consentEmail = 'user@example.com';
  /** When true the consent stand-in redirects with error=access_denied. */
  denyConsent = false;
  /** Scopes the user "unticks" on the consent screen (Google's granular consent): left out of the grant. */
  readonly uncheckedScopes = new Set<string>();
  readonly requests: TokenRequestRecord[] = [];
  readonly authRequests: AuthRequestRecord[] = [];

  private readonly clients = new Map<string, string>();
  private readonly refreshTokens = new Map<string, RefreshGrant>();
  private readonly accessTokens = new Map<string, { email: string; expiresAt: number; scope: string }>();
  private readonly codes = new Map<string, PendingCode>();
  private readonly serviceAccounts = new Map<string, ServiceAccount>();
  private readonly failures: TokenFailureKind[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly hanging = new Set<ServerResponse>();
  private isDown = false;

  private constructor(
    private readonly server: https.Server,
    port: number,
    ttl: number,
  ) {
    this.url = `https://127.0.0.1:${port}/token`;
    this.authUrl = `https://127.0.0.1:${port}/auth`;
    this.accessTokenTtlSec = ttl;
  }

  static async start(opts: { pki: TestPki; accessTokenTtlSec?: number }): Promise<FakeTokenEndpoint> {
    const server = https.createServer({ cert: opts.pki.cert, key: opts.pki.key, minVersion: 'TLSv1.2' });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const port = (server.address() as { port: number }).port;
    const fake = new FakeTokenEndpoint(server, port, opts.accessTokenTtlSec ?? 3600);
    fake.attach();
    return fake;
  }

  private attach(): void {
    // 'connection' sees the raw TCP socket before TLS, so down() can refuse it outright.
    this.server.on('connection', (socket: Socket) => {
      if (this.isDown) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    this.server.on('tlsClientError', () => {
      /* clients that reject our cert are expected in tests */
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => {
        if (res.headersSent) return;
        if (err instanceof OAuthError)
          this.sendJson(res, err.status, { error: err.error, error_description: err.description });
        else this.sendJson(res, 500, { error: 'internal_failure', error_description: 'Backend Error' });
      });
    });
  }

  registerClient(clientId: string, clientSecret: string): void {
    this.clients.set(clientId, clientSecret);
  }

  /** `scope`: space-separated, what the grant was consented with (default: the full Gmail scope). */
  addRefreshToken(
    refreshToken: string,
    grant: { clientId: string; email: string; issuedAt?: Date; scope?: string },
  ): void {
    this.refreshTokens.set(refreshToken, {
      clientId: grant.clientId,
      email: grant.email,
      issuedAt: grant.issuedAt ?? new Date(),
      revoked: false,
      scope: grant.scope ?? GMAIL_SCOPE,
    });
  }

  /** Refresh tokens currently valid for an email (newest last), e.g. to find one issued via /auth. */
  refreshTokensFor(email: string): string[] {
    const now = Date.now();
    return [...this.refreshTokens.entries()]
      .filter(([, g]) => !g.revoked && (g.validUntil === undefined || g.validUntil > now))
      .filter(([, g]) => g.email.toLowerCase() === email.toLowerCase())
      .map(([t]) => t);
  }

  createServiceAccount(clientEmail: string): { keyJson: string } {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyId = randomBytes(20).toString('hex');
    this.serviceAccounts.set(clientEmail, { publicKey, keyId, subjects: new Set() });
    const clientId = String(100000000000000000000n + BigInt(`0x${randomBytes(8).toString('hex')}`));
    const keyJson = JSON.stringify(
      {
        type: 'service_account',
        project_id: 'fake-project',
        private_key_id: keyId,
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        client_email: clientEmail,
        client_id: clientId,
        auth_uri: this.authUrl,
        token_uri: this.url,
        auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
        client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(clientEmail)}`,
        universe_domain: 'googleapis.com',
      },
      null,
      2,
    );
    return { keyJson };
  }

  allowSubject(clientEmail: string, subject: string): void {
    const sa = this.serviceAccounts.get(clientEmail);
    if (!sa) throw new Error(`unknown service account ${clientEmail}`);
    sa.subjects.add(subject.toLowerCase());
  }

  revoke(refreshToken: string): void {
    const g = this.refreshTokens.get(refreshToken);
    if (g) g.revoked = true;
  }

  failNext(count: number, kind: TokenFailureKind): void {
    for (let i = 0; i < count; i++) this.failures.push(kind);
  }

  down(flag: boolean): void {
    this.isDown = flag;
    if (flag) {
      for (const s of this.sockets) s.destroy();
      this.sockets.clear();
      this.hanging.clear();
    }
  }

  /** What a resource server (fake Gmail, fake Gmail API) learns about a bearer token. */
  tokenInfo(accessToken: string): { email: string; expiresAt: number; scope: string } | null {
    const t = this.accessTokens.get(accessToken);
    if (!t || t.expiresAt <= Date.now()) return null;
    return { ...t };
  }

  expireAccessTokens(): void {
    this.accessTokens.clear();
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.hanging.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    await closed;
  }

  // ---- HTTP handling ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'https://127.0.0.1');
    if (u.pathname === '/auth' && req.method === 'GET') return this.handleAuth(u, res);
    if (u.pathname === '/token') {
      if (req.method !== 'POST')
        return this.sendJson(res, 405, { error: 'invalid_request', error_description: 'POST required' });
      const params = await readForm(req);
      return this.handleToken(params, res);
    }
    this.sendJson(res, 404, { error: 'not_found' });
  }

  private handleAuth(u: URL, res: ServerResponse): void {
    const q = u.searchParams;
    const rec: AuthRequestRecord = {
      at: Date.now(),
      clientId: q.get('client_id') ?? undefined,
      redirectUri: q.get('redirect_uri') ?? undefined,
      scope: q.get('scope') ?? undefined,
      ok: false,
    };
    this.authRequests.push(rec);
    const page = (status: number, error: string): void => {
      rec.error = error;
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<html><body><h1>Error ${status}: ${error}</h1></body></html>`);
    };
    for (const p of [
      'client_id',
      'redirect_uri',
      'response_type',
      'scope',
      'state',
      'code_challenge',
      'code_challenge_method',
    ]) {
      if (!q.get(p)) return page(400, `invalid_request: missing ${p}`);
    }
    const clientId = q.get('client_id')!;
    const redirectUri = q.get('redirect_uri')!;
    const scope = q.get('scope')!;
    if (!this.clients.has(clientId)) return page(401, 'invalid_client');
    if (q.get('response_type') !== 'code') return page(400, 'unsupported_response_type');
    if (q.get('code_challenge_method') !== 'S256')
      return page(400, 'invalid_request: code_challenge_method must be S256');
    const scopes = scope.split(/\s+/).filter(Boolean);
    if (!scopes.some((s) => GMAIL_SCOPES.has(s)) || scopes.some((s) => !GMAIL_SCOPES.has(s) && !EXTRA_SCOPES.has(s))) {
      return page(400, 'invalid_scope');
    }
    let target: URL;
    try {
      target = new URL(redirectUri);
    } catch {
      return page(400, 'redirect_uri_mismatch');
    }
    const state = q.get('state')!;
    if (this.denyConsent) {
      target.searchParams.set('error', 'access_denied');
      target.searchParams.set('state', state);
      rec.error = 'access_denied';
    } else {
      const code = `4/${rnd(32)}`;
      this.codes.set(code, {
        clientId,
        redirectUri,
        codeChallenge: q.get('code_challenge')!,
        email: this.consentEmail,
        scope: scopes.filter((sc) => !this.uncheckedScopes.has(sc)).join(' '),
        offline: q.get('access_type') === 'offline',
        expiresAt: Date.now() + CODE_TTL_MS,
      });
      target.searchParams.set('state', state);
      target.searchParams.set('code', code);
      target.searchParams.set('scope', scopes.join(' '));
      rec.ok = true;
    }
    res.writeHead(302, { Location: target.toString() });
    res.end();
  }

  private handleToken(p: URLSearchParams, res: ServerResponse, rawBody = p.toString()): void {
    const grantType = p.get('grant_type') ?? '';
    const rec: TokenRequestRecord = { at: Date.now(), grantType, ok: false };
    const clientId = p.get('client_id');
    if (clientId) rec.clientId = clientId;
    this.requests.push(rec);

    const failure = this.failures.shift();
    if (failure) {
      rec.error = `scripted:${failure}`;
      switch (failure) {
        case 'hang':
          // Never answer: the client's own timeout has to fire.
          this.hanging.add(res);
          res.on('close', () => this.hanging.delete(res));
          return;
        case 'reset':
          // The connection dies without an answer (a proxy or the endpoint restarting).
          res.socket?.destroy();
          return;
        case 'http500':
          return this.sendJson(res, 500, { error: 'internal_failure', error_description: 'Backend Error' });
        case 'echo500':
          return this.sendText(res, 500, 'text/plain; charset=utf-8', `backend failed for request: ${rawBody}`);
        case 'echo500json':
          return this.sendJson(res, 500, {
            error: 'internal_failure',
            error_description: `backend failed for request: ${rawBody}`,
          });
        case 'truncated': {
          const full = JSON.stringify({
            ...this.issueAccessToken(this.consentEmail, GMAIL_SCOPE),
            scope: GMAIL_SCOPE,
            refresh_token: `1//${rnd(40)}`,
          });
          return this.sendText(
            res,
            200,
            'application/json; charset=utf-8',
            full.slice(0, full.indexOf('"expires_in"') - 10),
          );
        }
        case 'notJson':
          return this.sendText(res, 200, 'text/html; charset=utf-8', '<html><body>502 Bad Gateway</body></html>');
        case 'invalid_grant':
          return this.sendJson(res, 400, {
            error: 'invalid_grant',
            error_description: 'Token has been expired or revoked.',
          });
        case 'unauthorized_client':
          return this.sendJson(res, 401, {
            error: 'unauthorized_client',
            error_description:
              'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.',
          });
      }
    }

    try {
      let body: Record<string, unknown>;
      if (grantType === 'refresh_token') body = this.refreshGrant(p, rec);
      else if (grantType === 'authorization_code') body = this.codeGrant(p, rec);
      else if (grantType === JWT_BEARER) body = this.jwtGrant(p, rec);
      else if (!grantType) throw new OAuthError(400, 'invalid_request', 'Missing required parameter: grant_type');
      else throw new OAuthError(400, 'unsupported_grant_type', 'Invalid grant_type: ' + grantType);
      rec.ok = true;
      this.sendJson(res, 200, body);
    } catch (err) {
      if (!(err instanceof OAuthError)) throw err;
      rec.error = err.error;
      const body: Record<string, string> = { error: err.error };
      if (err.description) body.error_description = err.description;
      this.sendJson(res, err.status, body);
    }
  }

  private checkClient(p: URLSearchParams): string {
    const id = p.get('client_id');
    const secret = p.get('client_secret');
    if (!id || !this.clients.has(id)) throw new OAuthError(401, 'invalid_client', 'The OAuth client was not found.');
    if (secret !== this.clients.get(id)) throw new OAuthError(401, 'invalid_client', 'Unauthorized');
    return id;
  }

  private issueAccessToken(
    email: string,
    scope: string,
  ): { access_token: string; expires_in: number; token_type: 'Bearer' } {
    const token = `${this.accessTokenPrefix}${rnd(48)}`;
    this.accessTokens.set(token, { email, scope, expiresAt: Date.now() + this.accessTokenTtlSec * 1000 });
    return { access_token: token, expires_in: this.accessTokenTtlSec, token_type: 'Bearer' };
  }

  private newRefreshToken(clientId: string, email: string, scope: string): string {
    const token = `1//${rnd(48)}`;
    this.refreshTokens.set(token, { clientId, email, scope, issuedAt: new Date(), revoked: false });
    return token;
  }

  private refreshGrant(p: URLSearchParams, rec: TokenRequestRecord): Record<string, unknown> {
    const clientId = this.checkClient(p);
    const rt = p.get('refresh_token');
    if (!rt) throw new OAuthError(400, 'invalid_request', 'Missing required parameter: refresh_token');
    const g = this.refreshTokens.get(rt);
    const usable = g && !g.revoked && (g.validUntil === undefined || g.validUntil > Date.now());
    if (!g || !usable) throw new OAuthError(400, 'invalid_grant', 'Token has been expired or revoked.');
    if (g.clientId !== clientId) throw new OAuthError(400, 'invalid_grant', 'Unauthorized');
    rec.scope = g.scope;
    rec.email = g.email;
    const body: Record<string, unknown> = { ...this.issueAccessToken(g.email, g.scope), scope: g.scope };
    if (this.rotateRefreshTokens) {
      body.refresh_token = this.newRefreshToken(clientId, g.email, g.scope);
      if (g.validUntil === undefined) g.validUntil = Date.now() + this.rotationGraceMs;
    }
    return body;
  }

  private codeGrant(p: URLSearchParams, rec: TokenRequestRecord): Record<string, unknown> {
    const clientId = this.checkClient(p);
    const code = p.get('code') ?? '';
    const pending = this.codes.get(code);
    if (!pending || pending.expiresAt <= Date.now()) throw new OAuthError(400, 'invalid_grant', 'Malformed auth code.');
    // A code is single use, whatever the outcome (as at Google).
    this.codes.delete(code);
    if (pending.clientId !== clientId) throw new OAuthError(400, 'invalid_grant', 'Unauthorized');
    if (p.get('redirect_uri') !== pending.redirectUri)
      throw new OAuthError(400, 'redirect_uri_mismatch', 'Bad Request');
    const verifier = p.get('code_verifier');
    if (!verifier) throw new OAuthError(400, 'invalid_grant', 'Missing code verifier.');
    if (createHash('sha256').update(verifier).digest('base64url') !== pending.codeChallenge) {
      throw new OAuthError(400, 'invalid_grant', 'Invalid code verifier.');
    }
    rec.scope = pending.scope;
    rec.email = pending.email;
    const body: Record<string, unknown> = {
      ...this.issueAccessToken(pending.email, pending.scope),
      scope: pending.scope,
    };
    // Like Google: a refresh token only for offline access.
    if (pending.offline) body.refresh_token = this.newRefreshToken(clientId, pending.email, pending.scope);
    // Like Google: an id_token only when openid was asked for.
    if (pending.scope.split(' ').includes('openid')) body.id_token = this.idToken(clientId, pending.email);
    return body;
  }

  /** A JWT-shaped id_token with a real-looking payload; its signature is not verifiable. */
  private idToken(clientId: string, email: string): string {
    const iat = Math.floor(Date.now() / 1000);
    const sub = String(BigInt(`0x${createHash('sha256').update(email).digest('hex').slice(0, 16)}`));
    const header = { alg: 'RS256', kid: 'fake', typ: 'JWT' };
    const payload = {
      iss: 'https://accounts.google.com',
      azp: clientId,
      aud: clientId,
      sub,
      email,
      email_verified: true,
      iat,
      exp: iat + 3600,
    };
    return `${b64url(header)}.${b64url(payload)}.${rnd(64)}`;
  }

  private jwtGrant(p: URLSearchParams, rec: TokenRequestRecord): Record<string, unknown> {
    const assertion = p.get('assertion') ?? '';
    const parts = assertion.split('.');
    if (parts.length !== 3) throw new OAuthError(400, 'invalid_grant', 'Invalid JWT: malformed assertion.');
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    } catch {
      throw new OAuthError(400, 'invalid_grant', 'Invalid JWT: malformed assertion.');
    }
    const iss = typeof claims.iss === 'string' ? claims.iss : '';
    const sub = typeof claims.sub === 'string' ? claims.sub : undefined;
    const scope = typeof claims.scope === 'string' ? claims.scope : '';
    rec.clientId = iss || undefined;
    if (sub) rec.sub = sub;
    if (scope) rec.scope = scope;
    const sa = this.serviceAccounts.get(iss);
    if (!sa) throw new OAuthError(400, 'invalid_grant', 'Invalid grant: account not found');
    if (header.alg !== 'RS256') throw new OAuthError(400, 'invalid_grant', 'Invalid JWT Signature.');
    if (header.kid !== undefined && header.kid !== sa.keyId)
      throw new OAuthError(400, 'invalid_grant', 'Invalid JWT Signature.');
    const signed = verify(
      'RSA-SHA256',
      Buffer.from(`${parts[0]}.${parts[1]}`),
      sa.publicKey,
      Buffer.from(parts[2], 'base64url'),
    );
    if (!signed) throw new OAuthError(400, 'invalid_grant', 'Invalid JWT Signature.');
    if (claims.aud !== this.url && claims.aud !== GOOGLE_TOKEN_URL) {
      throw new OAuthError(400, 'invalid_grant', 'Invalid JWT: Failed audience check.');
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.exp !== 'number' || claims.exp <= now || claims.exp > now + 3600 + 300) {
      throw new OAuthError(
        400,
        'invalid_grant',
        'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.',
      );
    }
    const unauthorized = new OAuthError(
      401,
      'unauthorized_client',
      'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.',
    );
    // Domain-wide delegation grants the Gmail scopes the admin listed; the fake grants both.
    if (!scope.split(/\s+/).some((s) => GMAIL_SCOPES.has(s))) throw unauthorized;
    if (sub && !sa.subjects.has(sub.toLowerCase())) throw unauthorized;
    const email = sub ?? iss;
    rec.email = email;
    return this.issueAccessToken(email, scope);
  }

  private sendJson(res: ServerResponse, status: number, body: unknown): void {
    this.sendText(res, status, 'application/json; charset=utf-8', JSON.stringify(body));
  }

  private sendText(res: ServerResponse, status: number, type: string, text: string): void {
    res.writeHead(status, {
      'Content-Type': type,
      'Cache-Control': 'no-cache, no-store, max-age=0, must-revalidate',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }
}

/** Reads a form (or JSON, which Google also accepts) request body. */
async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new OAuthError(413, 'invalid_request', 'Request too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] ?? '').includes('application/json')) {
    try {
      const obj = JSON.parse(text) as Record<string, unknown>;
      return new URLSearchParams(Object.entries(obj).map(([k, v]) => [k, String(v)]));
    } catch {
      return new URLSearchParams();
    }
  }
  return new URLSearchParams(text);
}
