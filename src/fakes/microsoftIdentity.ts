// Fake Microsoft identity platform (login.microsoftonline.com v2.0: authorize, token and
// devicecode endpoints) over real HTTPS, for tests and `demo`. Stricter than Microsoft where it
// helps find bugs: every refresh token is usable ONCE (a rotation the bridge failed to save,
// or two refreshes racing on one token, shows at once), every client assertion is verified
// against the registered certificate and its jti is usable once. As Entra ID: a sign-in may
// consent to several resources at once, every token request names scopes of ONE resource
// (AADSTS28000 otherwise), and a refresh token mints tokens for any resource consented to.
// A sign-in with `openid` also gets an RS256-signed id_token naming who signed in, issued as
// Entra ID issues it: `iss` is {authority}/{tenant GUID}/v2.0 whichever tenant alias (domain,
// organizations, common) the request's path named. Error bodies carry AADSTS codes as Entra ID's do.
// One file on purpose (over 400 lines): it is one fake service, read as a whole as the
// behaviour the tests rely on.
import https from 'node:https';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  createHash,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  randomUUID,
  sign,
  verify,
  X509Certificate,
} from 'node:crypto';
import type { TestPki } from './ca.js';

const rnd = (n: number): string => randomBytes(n).toString('base64url');
const DELEGATED = 'https://outlook.office.com/SMTP.Send';
const APP = 'https://outlook.office365.com/.default';
/** Microsoft Graph: the resource (token audience) and the scopes the bridge asks for. */
export const GRAPH_RESOURCE = 'https://graph.microsoft.com';
const GRAPH_APP = `${GRAPH_RESOURCE}/.default`;
/** Delegated scopes that mean "may send": one per resource. */
const SEND_SCOPES = new Set([DELEGATED, `${GRAPH_RESOURCE}/Mail.Send`, `${GRAPH_RESOURCE}/Mail.Send.Shared`]);
/** The resource (audience) a scope URI belongs to: https://graph.microsoft.com/Mail.Send -> https://graph.microsoft.com. */
const resourceOf = (scope: string): string | null =>
  /^https:\/\//.test(scope) ? scope.slice(0, scope.lastIndexOf('/')) : null;

/** What the fake's access tokens carry (an unsigned JWT payload, as Entra ID's tokens are JWTs the resource reads). */
export interface AccessTokenClaims {
  aud: string;
  /** Delegated: space-separated scope names without the resource (Mail.Send). */
  scp?: string;
  /** App-only: application permissions granted with admin consent (Mail.Send). */
  roles?: string[];
  upn?: string;
  appid: string;
  tid: string;
  exp: number;
}
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

interface App {
  /** null: no secret (public client or certificate only). */
  secret: string | null;
  secretExpired: boolean;
  /** "Allow public client flows": delegated grants without client credentials. */
  publicClient: boolean;
  /** Uploaded certificates by SHA-1 thumbprint (base64url, as in the x5t header). */
  certs: Map<string, X509Certificate>;
  /** Mailboxes the app's service principal may send as (Add-MailboxPermission). */
  mailboxes: Set<string>;
  /** Microsoft Graph application permissions with admin consent (roles in app-only Graph tokens). */
  graphRoles: string[];
}

export interface MsTokenRequest {
  at: number;
  grantType: string;
  clientId?: string;
  /** secret | assertion | none */
  clientAuth?: string;
  /** The scope parameter as sent (token requests that have one). */
  scope?: string;
  ok: boolean;
  error?: string;
  /** Device flow: the device code issued (devicecode) or polled (device_code grant), so tests tell attempts apart. */
  deviceCode?: string;
}

/** Who signed in: their sign-in name (UPN: the id_token's preferred_username) and their mailbox's primary address (its email claim). */
interface SignedIn {
  upn: string;
  mail: string;
}

interface PendingCode {
  clientId: string;
  redirectUri: string;
  challenge: string;
  user: SignedIn;
  offline: boolean;
  /** What the user consented to at the sign-in page (possibly several resources). */
  scopes: string[];
}

interface DeviceGrant {
  clientId: string;
  userCode: string;
  expiresAt: number;
  lastPollAt: number;
  approvedAs?: SignedIn;
  declined?: boolean;
  redeemed?: boolean;
  offline: boolean;
  scopes: string[];
}

class AadError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
  ) {
    super(description);
  }
}

/**
 * Events: 'request' (MsTokenRequest) after every answer of the token and devicecode
 * endpoints; 'issued' ({ grantType, refreshToken? }) after a successful one.
 */
export class FakeMicrosoftIdentity extends EventEmitter {
  readonly authorityHost: string;
  readonly requests: MsTokenRequest[] = [];
  accessTokenTtlSec = 3600;
  /** Whom the sign-in page "logs in" as (authorize and device login): their sign-in name (UPN). */
  consentEmail = 'printer@contoso.com';
  /**
   * Users whose sign-in name (UPN) is not their mailbox's address: UPN (lower case) -> primary
   * SMTP address. Everyone else's mailbox is their UPN.
   */
  readonly mailOf = new Map<string, string>();
  /** Claims every id_token carries instead of the real ones (a forged or misrouted answer). */
  forgeIdToken: Record<string, unknown> | undefined;
  /** The directory (tenant) ID: every token's `tid`, and the GUID in the id_token's `iss`. */
  readonly tenantId: string;
  /** The sign-in page answers error=access_denied. */
  denyConsent = false;
  /** Device codes: polling interval and lifetime announced (seconds). */
  deviceIntervalSec = 5;
  deviceCodeTtlSec = 900;
  /** Answer the next N device-code polls with slow_down, as RFC 8628 allows. */
  slowDownNext = 0;
  /** Scopes the consent screen leaves out of the grant (a user unticked them, or no admin consent). */
  readonly withheldScopes = new Set<string>();
  private readonly apps = new Map<string, App>();
  private readonly refreshTokens = new Map<
    string,
    { clientId: string; email: string; scopes?: string[]; user?: SignedIn }
  >();
  private readonly accessTokens = new Map<
    string,
    { email: string | null; appId: string; expiresAt: number; claims: AccessTokenClaims }
  >();
  private readonly codes = new Map<string, PendingCode>();
  private readonly devices = new Map<string, DeviceGrant>();
  private readonly usedJtis = new Set<string>();
  /** The key id_tokens are signed with (published at /{tenant}/discovery/v2.0/keys). */
  private readonly signingKey: { kid: string; privateKey: KeyObject; publicKey: KeyObject };

  private constructor(
    private readonly server: https.Server,
    port: number,
    readonly tenant: string,
  ) {
    super();
    this.authorityHost = `https://127.0.0.1:${port}`;
    this.tenantId = GUID.test(tenant) ? tenant.toLowerCase() : randomUUID();
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    this.signingKey = { kid: rnd(12), privateKey, publicKey };
  }

  /** `tenant`: what the endpoints' paths name (a domain or a GUID); organizations and common work too. */
  static async start(opts: { pki: TestPki; tenant?: string }): Promise<FakeMicrosoftIdentity> {
    const server = https.createServer({ cert: opts.pki.cert, key: opts.pki.key, minVersion: 'TLSv1.2' });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const fake = new FakeMicrosoftIdentity(
      server,
      (server.address() as { port: number }).port,
      opts.tenant ?? 'contoso.com',
    );
    server.on('request', (req: IncomingMessage, res: ServerResponse) => void fake.handle(req, res));
    return fake;
  }

  get tokenUrl(): string {
    return `${this.authorityHost}/${this.tenant}/oauth2/v2.0/token`;
  }

  /** What Entra ID puts in the id_tokens of this tenant: {authority}/{tenant GUID}/v2.0. */
  get issuer(): string {
    return `${this.authorityHost}/${this.tenantId}/v2.0`;
  }

  /** The public key id_tokens are signed with, as a JWK (what the keys endpoint publishes). */
  get signingJwk(): Record<string, unknown> {
    return {
      ...this.signingKey.publicKey.export({ format: 'jwk' }),
      kid: this.signingKey.kid,
      use: 'sig',
      alg: 'RS256',
    };
  }

  /** Where the user enters a device code (POST user_code=...&decision=approve|decline). */
  get deviceLoginUrl(): string {
    return `${this.authorityHost}/devicelogin`;
  }

  /**
   * The `oauth` block of an account that signs in here with app `clientId` (registered with
   * registerApp): `credentials` is { clientSecret } or { certificateFile, privateKeyFile }.
   */
  accountOAuth(
    type: 'user' | 'app',
    clientId: string,
    credentials: Record<string, string>,
    caFile: string,
  ): Record<string, unknown> {
    return { type, tenant: this.tenant, authorityHost: this.authorityHost, clientId, ...credentials, caFile };
  }

  registerApp(
    clientId: string,
    secret: string | null,
    opts: { publicClient?: boolean; graphRoles?: string[] } = {},
  ): void {
    this.apps.set(clientId, {
      secret,
      secretExpired: false,
      publicClient: opts.publicClient ?? false,
      certs: new Map(),
      mailboxes: new Set(),
      graphRoles: opts.graphRoles ?? ['Mail.Send'],
    });
  }

  /** Certificates & secrets > Upload certificate (the public part, PEM). */
  uploadCertificate(clientId: string, certPem: string): void {
    const cert = new X509Certificate(certPem);
    this.apps.get(clientId)!.certs.set(createHash('sha1').update(cert.raw).digest('base64url'), cert);
  }

  expireSecret(clientId: string): void {
    this.apps.get(clientId)!.secretExpired = true;
  }

  allowMailbox(clientId: string, mailbox: string): void {
    this.apps.get(clientId)!.mailboxes.add(mailbox.toLowerCase());
  }

  /** `scopes`: what the grant was consented for (default: whatever each refresh asks for). */
  issueRefreshToken(clientId: string, email: string, scopes?: string[], user?: SignedIn): string {
    const rt = `M.C5${rnd(60)}`;
    this.refreshTokens.set(rt, { clientId, email, scopes, ...(user ? { user } : {}) });
    return rt;
  }

  /** The claims of a live access token this fake issued, as a resource server reads them; null when unknown or expired. */
  tokenClaims(token: string): AccessTokenClaims | null {
    const t = this.accessTokens.get(token);
    if (!t || t.expiresAt <= Date.now()) return null;
    return t.claims;
  }

  /** Who an access token speaks for (delegated: the user; app-only: any mailbox the app may use). */
  tokenInfo(token: string): { email: string } | null {
    const t = this.accessTokens.get(token);
    if (!t || t.expiresAt <= Date.now()) return null;
    return t.email ? { email: t.email } : null;
  }

  /** App-only tokens: may this token send as `mailbox`? */
  mayUse(token: string, mailbox: string): boolean {
    const t = this.accessTokens.get(token);
    if (!t || t.expiresAt <= Date.now()) return false;
    if (t.email) return t.email.toLowerCase() === mailbox.toLowerCase();
    return this.apps.get(t.appId)?.mailboxes.has(mailbox.toLowerCase()) ?? false;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    const p = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const u = new URL(req.url ?? '/', 'https://x');
    // The tenant in the path: its domain or GUID, or the multi-tenant aliases.
    const tenant = u.pathname.split('/')[1] ?? '';
    const known = [this.tenant, this.tenantId, 'organizations', 'common'].includes(tenant.toLowerCase());
    const base = `/${tenant}/oauth2/v2.0`;
    if (req.method === 'POST' && u.pathname === '/devicelogin') return this.deviceLogin(p, res);
    if (!known) return this.error(res, 400, 'invalid_request', `AADSTS90002: Tenant '${tenant}' not found.`);
    if (req.method === 'GET' && u.pathname === `/${tenant}/discovery/v2.0/keys`)
      return this.json(res, { keys: [this.signingJwk] });
    if (req.method === 'GET' && u.pathname === `${base}/authorize`) return this.authorizePage(u.searchParams, res);
    if (req.method !== 'POST' || (u.pathname !== `${base}/token` && u.pathname !== `${base}/devicecode`))
      return this.error(res, 400, 'invalid_request', `AADSTS90002: Tenant '${tenant}' not found.`);
    const grantType = u.pathname.endsWith('/devicecode') ? 'devicecode' : (p.get('grant_type') ?? '');
    const rec: MsTokenRequest = {
      at: Date.now(),
      grantType,
      clientId: p.get('client_id') ?? undefined,
      ...(p.has('scope') ? { scope: p.get('scope')! } : {}),
      ok: false,
    };
    this.requests.push(rec);
    try {
      const app = this.clientAuth(p, grantType, rec, u.pathname.replace('/devicecode', '/token'));
      const body = this.grant(p, grantType, app, rec);
      rec.ok = true;
      this.json(res, body);
      this.emit('issued', { grantType, refreshToken: body.refresh_token });
    } catch (e) {
      if (!(e instanceof AadError)) throw e;
      rec.error = `${e.error}: ${e.description.split(':')[0]}`;
      this.error(res, e.status, e.error, e.description);
    }
    this.emit('request', rec);
  }

  private grant(
    p: URLSearchParams,
    grantType: string,
    app: App,
    rec: MsTokenRequest,
  ): Record<string, unknown> & { refresh_token?: string } {
    const clientId = rec.clientId!;
    if (grantType === 'refresh_token') {
      const rt = p.get('refresh_token') ?? '';
      const g = this.refreshTokens.get(rt);
      if (!g || g.clientId !== clientId)
        throw new AadError(
          400,
          'invalid_grant',
          'AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.',
        );
      const asked = this.checkDelegatedScope(p);
      if (g.scopes) this.checkConsent(clientId, asked, g.scopes);
      // Usable once: the old refresh token dies with this answer. The new one carries the whole
      // consent (every resource), whichever resource this token was for.
      this.refreshTokens.delete(rt);
      return this.delegated(g.user ?? { upn: g.email, mail: g.email }, clientId, true, asked, g.scopes, asked);
    }
    if (grantType === 'authorization_code') {
      const code = p.get('code') ?? '';
      const c = this.codes.get(code);
      this.codes.delete(code); // single use, whatever the outcome
      if (!c || c.clientId !== clientId)
        throw new AadError(
          400,
          'invalid_grant',
          'AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.',
        );
      if (p.get('redirect_uri') !== c.redirectUri)
        throw new AadError(
          400,
          'invalid_grant',
          'AADSTS50011: The redirect URI specified in the request does not match the redirect URI used in the authorization request.',
        );
      const verifier = p.get('code_verifier') ?? '';
      if (createHash('sha256').update(verifier).digest('base64url') !== c.challenge)
        throw new AadError(
          400,
          'invalid_grant',
          'AADSTS50148: The code_verifier provided does not match the code_challenge supplied in the authorization request for PKCE.',
        );
      // The redemption names one resource's scopes (default: the first resource asked for at
      // sign-in); the refresh token carries everything consented to.
      const asked = p.has('scope') ? this.checkDelegatedScope(p) : firstResource(c.scopes);
      this.checkConsent(clientId, asked, c.scopes);
      return this.delegated(c.user, clientId, c.offline, asked, this.consented(c.scopes), c.scopes);
    }
    if (grantType === 'devicecode') {
      // Like the sign-in page, the device sign-in may consent to several resources.
      const scopes = (p.get('scope') ?? '').split(' ');
      const problem = sendScopeProblem(scopes);
      if (problem) throw new AadError(400, 'invalid_scope', problem);
      const deviceCode = rnd(48);
      rec.deviceCode = deviceCode;
      const userCode = randomBytes(5).toString('hex').toUpperCase().slice(0, 9);
      this.devices.set(deviceCode, {
        clientId,
        userCode,
        expiresAt: Date.now() + this.deviceCodeTtlSec * 1000,
        lastPollAt: 0,
        offline: scopes.includes('offline_access'),
        scopes,
      });
      const verification_uri = this.deviceLoginUrl;
      return {
        device_code: deviceCode,
        user_code: userCode,
        verification_uri,
        expires_in: this.deviceCodeTtlSec,
        interval: this.deviceIntervalSec,
        message: `To sign in, use a web browser to open the page ${verification_uri} and enter the code ${userCode} to authenticate.`,
      };
    }
    if (grantType === DEVICE_GRANT) {
      rec.deviceCode = p.get('device_code') ?? '';
      const d = this.devices.get(rec.deviceCode);
      if (!d || d.clientId !== clientId || d.redeemed)
        throw new AadError(400, 'invalid_grant', 'AADSTS70000: The provided device code is invalid.');
      const now = Date.now();
      const tooSoon = d.lastPollAt && now - d.lastPollAt < this.deviceIntervalSec * 1000 - 50;
      d.lastPollAt = now;
      if (now >= d.expiresAt) throw new AadError(400, 'expired_token', 'AADSTS70019: Verification code expired.');
      if (tooSoon || this.slowDownNext > 0) {
        if (!tooSoon) this.slowDownNext--;
        throw new AadError(400, 'slow_down', 'AADSTS70016: The client is polling too often; slow down.');
      }
      if (d.declined) throw new AadError(400, 'authorization_declined', 'AADSTS70000: The user declined the sign-in.');
      if (!d.approvedAs)
        throw new AadError(
          400,
          'authorization_pending',
          'AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.',
        );
      d.redeemed = true;
      // The token is for the first resource asked for; the refresh token serves every one.
      return this.delegated(
        d.approvedAs,
        clientId,
        d.offline,
        firstResource(d.scopes),
        this.consented(d.scopes),
        d.scopes,
      );
    }
    if (grantType === 'client_credentials') {
      if (p.get('scope') !== APP && p.get('scope') !== GRAPH_APP)
        throw new AadError(
          400,
          'invalid_scope',
          `AADSTS1002012: The provided value for scope ${p.get('scope')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.`,
        );
      if (app.publicClient && !p.get('client_secret') && !p.get('client_assertion'))
        throw new AadError(
          401,
          'invalid_client',
          "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
      const graph = p.get('scope') === GRAPH_APP;
      return {
        token_type: 'Bearer',
        ...this.access(null, clientId, graph ? GRAPH_RESOURCE : 'https://outlook.office365.com', {
          roles: graph ? app.graphRoles : ['SMTP.SendAsApp'],
        }),
      };
    }
    throw new AadError(
      400,
      'unsupported_grant_type',
      `AADSTS70003: The app requested an unsupported grant type '${grantType}'.`,
    );
  }

  private checkDelegatedScope(p: URLSearchParams): string[] {
    const scopes = (p.get('scope') ?? '').split(' ');
    const problem = delegatedScopeProblem(scopes);
    if (problem) throw new AadError(400, 'invalid_scope', problem);
    return scopes;
  }

  /** What a consent screen grants of `scopes`: all but the withheld ones. */
  private consented(scopes: string[]): string[] {
    return scopes.filter((sc) => sc !== 'offline_access' && !this.withheldScopes.has(sc));
  }

  /** A token request may only ask for what was consented to (Entra ID: AADSTS65001). */
  private checkConsent(clientId: string, asked: string[], consent: string[]): void {
    if (asked.some((sc) => sc !== 'offline_access' && !consent.includes(sc)))
      throw new AadError(
        400,
        'invalid_grant',
        `AADSTS65001: The user or administrator has not consented to use the application with ID '${clientId}'. Send an interactive authorization request for this user and resource.`,
      );
  }

  /**
   * A delegated token for the scopes asked (one resource), minus any the consent screen
   * withheld; its refresh token carries `consent` (default: what this token got). `signIn`:
   * the scopes the user signed in with (or the refresh asked for); with openid, an id_token.
   */
  private delegated(
    user: SignedIn,
    clientId: string,
    offline: boolean,
    asked: string[],
    consent: string[] | undefined,
    signIn: string[],
  ): Record<string, unknown> & { refresh_token?: string } {
    const granted = asked.filter((sc) => sc !== 'offline_access' && !this.withheldScopes.has(sc));
    const aud = resourceOf(asked.find((sc) => SEND_SCOPES.has(sc))!)!;
    // The access token is the resource's: its scp names only that resource's scopes.
    const scp = granted
      .filter((sc) => resourceOf(sc) !== null)
      .map((sc) => sc.slice(sc.lastIndexOf('/') + 1))
      .join(' ');
    const idToken = this.idToken(user, clientId, this.consented(signIn));
    const email = user.mail;
    return {
      token_type: 'Bearer',
      scope: `${granted.join(' ')}${offline ? ' offline_access' : ''}`.trim(),
      ...this.access(email, clientId, aud, { scp }),
      ...(idToken ? { id_token: idToken } : {}),
      ...(offline ? { refresh_token: this.issueRefreshToken(clientId, email, consent ?? granted, user) } : {}),
    };
  }

  /**
   * The id_token of a sign-in that consented to openid, as Entra ID's v2.0 endpoint writes it:
   * RS256, iss with the tenant's GUID, preferred_username with profile, email with email.
   */
  private idToken(user: SignedIn, clientId: string, consented: string[]): string | undefined {
    if (!consented.includes('openid')) return undefined;
    const now = Math.floor(Date.now() / 1000);
    const oid = uuidOf(`oid:${this.tenantId}:${user.upn.toLowerCase()}`);
    const claims: Record<string, unknown> = {
      ver: '2.0',
      iss: this.issuer,
      aud: clientId,
      sub: createHash('sha256').update(`${clientId}:${oid}`).digest('base64url').slice(0, 43),
      iat: now,
      nbf: now,
      exp: now + 3600,
      tid: this.tenantId,
      oid,
      ...(consented.includes('profile') ? { preferred_username: user.upn, name: user.upn.split('@')[0] } : {}),
      ...(consented.includes('email') ? { email: user.mail } : {}),
      ...this.forgeIdToken,
    };
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${b64({ typ: 'JWT', alg: 'RS256', kid: this.signingKey.kid })}.${b64(claims)}`;
    return `${input}.${sign('RSA-SHA256', Buffer.from(input), this.signingKey.privateKey).toString('base64url')}`;
  }

  /** Who the sign-in page and the device login sign in as. */
  private signedIn(): SignedIn {
    const upn = this.consentEmail;
    return { upn, mail: this.mailOf.get(upn.toLowerCase()) ?? upn };
  }

  /** Who the client is: a secret, a certificate-signed assertion, or nothing (public clients, delegated grants only). */
  private clientAuth(p: URLSearchParams, grantType: string, rec: MsTokenRequest, tokenUrl: string): App {
    const clientId = p.get('client_id') ?? '';
    const app = this.apps.get(clientId);
    if (!app)
      throw new AadError(
        400,
        'unauthorized_client',
        `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${this.tenant}'.`,
      );
    const assertion = p.get('client_assertion');
    const secret = p.get('client_secret');
    if (assertion) {
      rec.clientAuth = 'assertion';
      if (p.get('client_assertion_type') !== ASSERTION_TYPE)
        throw new AadError(401, 'invalid_client', `AADSTS700025: client_assertion_type must be ${ASSERTION_TYPE}.`);
      this.verifyAssertion(app, clientId, assertion, `${this.authorityHost}${tokenUrl}`);
      return app;
    }
    if (secret !== null) {
      rec.clientAuth = 'secret';
      if (secret !== app.secret)
        throw new AadError(
          401,
          'invalid_client',
          'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.',
        );
      if (app.secretExpired)
        throw new AadError(
          401,
          'invalid_client',
          `AADSTS7000222: The provided client secret keys for app '${clientId}' are expired.`,
        );
      return app;
    }
    rec.clientAuth = 'none';
    if (!app.publicClient || grantType === 'client_credentials')
      throw new AadError(
        401,
        'invalid_client',
        "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
      );
    return app;
  }

  /** What Entra ID checks in a certificate credential (RFC 7523 client assertion). */
  private verifyAssertion(app: App, clientId: string, jwt: string, tokenUrl: string): void {
    const parts = jwt.split('.');
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      if (parts.length !== 3) throw new Error('parts');
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')) as Record<string, unknown>;
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new AadError(401, 'invalid_client', 'AADSTS50027: JWT token is invalid or malformed.');
    }
    const x5t = typeof header.x5t === 'string' ? header.x5t : '';
    const cert = app.certs.get(x5t);
    if (!cert)
      throw new AadError(
        401,
        'invalid_client',
        `AADSTS700027: Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '${Buffer.from(x5t, 'base64url').toString('hex').toUpperCase()}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${clientId}'.]`,
      );
    if (
      header['x5t#S256'] !== undefined &&
      header['x5t#S256'] !== createHash('sha256').update(cert.raw).digest('base64url')
    )
      throw new AadError(
        401,
        'invalid_client',
        'AADSTS700027: Client assertion failed signature validation. [Reason - x5t#S256 does not match the certificate.]',
      );
    const signed =
      header.alg === 'RS256' &&
      verify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), cert.publicKey, Buffer.from(parts[2], 'base64url'));
    if (!signed)
      throw new AadError(
        401,
        'invalid_client',
        'AADSTS700027: Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value.]',
      );
    if (claims.aud !== tokenUrl)
      throw new AadError(
        401,
        'invalid_client',
        `AADSTS700023: Client assertion audience claim does not match Realm issuer. Review the documentation at https://aka.ms/certCreds.`,
      );
    if (claims.iss !== clientId || claims.sub !== clientId)
      throw new AadError(
        401,
        'invalid_client',
        `AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://aka.ms/certCreds.`,
      );
    const now = Math.floor(Date.now() / 1000);
    if (
      typeof claims.exp !== 'number' ||
      claims.exp <= now ||
      (typeof claims.nbf === 'number' && claims.nbf > now + 300)
    )
      throw new AadError(401, 'invalid_client', 'AADSTS700024: Client assertion is not within its valid time range.');
    if (new Date(cert.validTo).getTime() <= Date.now())
      throw new AadError(
        401,
        'invalid_client',
        'AADSTS700027: Client assertion contains an invalid signature. [Reason - The key used is expired.]',
      );
    const jti = typeof claims.jti === 'string' ? claims.jti : '';
    if (!jti || this.usedJtis.has(jti))
      throw new AadError(
        401,
        'invalid_client',
        'AADSTS50027: JWT token is invalid or malformed (jti missing or already used).',
      );
    this.usedJtis.add(jti);
  }

  /** The sign-in page: checks the request like Entra ID, "signs in" as consentEmail, redirects back. */
  private authorizePage(q: URLSearchParams, res: ServerResponse): void {
    const page = (status: number, text: string) => {
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<html><body><h1>Sign in</h1><p>${text.replace(/[<>&]/g, '')}</p></body></html>`);
    };
    const clientId = q.get('client_id') ?? '';
    if (!this.apps.has(clientId))
      return page(
        400,
        `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${this.tenant}'.`,
      );
    const redirectUri = q.get('redirect_uri') ?? '';
    let target: URL;
    try {
      target = new URL(redirectUri);
    } catch {
      return page(
        400,
        'AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.',
      );
    }
    // Registered: http://127.0.0.1 and http://localhost, any port (loopback, RFC 8252).
    if (target.protocol !== 'http:' || !['127.0.0.1', 'localhost'].includes(target.hostname))
      return page(
        400,
        'AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.',
      );
    const state = q.get('state');
    const back = (params: Record<string, string>) => {
      for (const [k, v] of Object.entries(params)) target.searchParams.set(k, v);
      if (state !== null) target.searchParams.set('state', state);
      res.writeHead(302, { Location: target.toString() });
      res.end();
    };
    const scopes = (q.get('scope') ?? '').split(' ');
    if (q.get('response_type') !== 'code')
      return back({
        error: 'unsupported_response_type',
        error_description: 'AADSTS700054: response_type must be code.',
      });
    // The sign-in may consent to several resources at once (MSAL's extraScopesToConsent).
    const problem = sendScopeProblem(scopes);
    if (problem) return back({ error: 'invalid_scope', error_description: problem });
    if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge'))
      return back({
        error: 'invalid_request',
        error_description: 'AADSTS501491: Invalid code_challenge_method or missing code_challenge.',
      });
    if (this.denyConsent)
      return back({
        error: 'access_denied',
        error_description: 'AADSTS65004: User declined to consent to access the app.',
      });
    const code = `1.AQ${rnd(60)}`;
    this.codes.set(code, {
      clientId,
      redirectUri,
      challenge: q.get('code_challenge')!,
      user: this.signedIn(),
      offline: scopes.includes('offline_access'),
      scopes,
    });
    back({ code, session_state: randomUUID() });
  }

  /** The user at microsoft.com/devicelogin: enters the code and approves (or declines). */
  private deviceLogin(p: URLSearchParams, res: ServerResponse): void {
    const code = (p.get('user_code') ?? '').toUpperCase();
    const d = [...this.devices.values()].find((x) => x.userCode === code && !x.redeemed);
    if (!d || d.expiresAt <= Date.now())
      return this.error(res, 400, 'invalid_grant', 'AADSTS70000: The code you entered is not valid or has expired.');
    if (p.get('decision') === 'decline') d.declined = true;
    else d.approvedAs = this.signedIn();
    this.json(res, { ok: true });
  }

  /** An unsigned JWT whose payload names the audience and scp/roles (what Graph reads), plus a random part, registered here. */
  private access(
    email: string | null,
    appId: string,
    aud: string,
    grant: { scp?: string; roles?: string[] },
  ): { access_token: string; expires_in: number; ext_expires_in: number } {
    const expiresAt = Date.now() + this.accessTokenTtlSec * 1000;
    const claims: AccessTokenClaims = {
      aud,
      ...grant,
      ...(email ? { upn: email } : {}),
      appid: appId,
      tid: this.tenantId,
      exp: Math.floor(expiresAt / 1000),
    };
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const token = `${b64({ typ: 'JWT', alg: 'none' })}.${b64(claims)}.${rnd(30)}`;
    this.accessTokens.set(token, { email, appId, expiresAt, claims });
    return { access_token: token, expires_in: this.accessTokenTtlSec, ext_expires_in: this.accessTokenTtlSec };
  }

  private error(res: ServerResponse, status: number, error: string, desc: string): void {
    const now = new Date().toISOString().replace('T', ' ').slice(0, 19);
    this.json(
      res,
      {
        error,
        error_description: `${desc}\r\nTrace ID: ${randomUUID()}\r\nCorrelation ID: ${randomUUID()}\r\nTimestamp: ${now}Z`,
        error_codes: [Number(/AADSTS(\d+)/.exec(desc)?.[1] ?? 0)],
        timestamp: `${now}Z`,
      },
      status,
    );
  }

  private json(res: ServerResponse, body: unknown, status = 200): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(text);
  }
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A stable GUID-shaped id derived from `seed` (a user's object ID). */
function uuidOf(seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** A sign-in's scope list (authorize, devicecode) must hold a send scope; several resources are fine. */
function sendScopeProblem(scopes: string[]): string | null {
  if (!scopes.some((sc) => SEND_SCOPES.has(sc)))
    return `AADSTS70011: The provided value for the input parameter 'scope' is not valid.`;
  return null;
}

/** The scopes of the first resource in a sign-in's list (plus offline_access): what its first token is for. */
function firstResource(scopes: string[]): string[] {
  const first = resourceOf(scopes.find((sc) => SEND_SCOPES.has(sc))!);
  return scopes.filter((sc) => sc === 'offline_access' || resourceOf(sc) === first);
}

/** Entra ID's checks of a token request's scope list: a send scope, and one resource per token (AADSTS28000). */
function delegatedScopeProblem(scopes: string[]): string | null {
  const send = sendScopeProblem(scopes);
  if (send) return send;
  const resources = new Set(scopes.map(resourceOf).filter((r): r is string => r !== null));
  if (resources.size > 1)
    return `AADSTS28000: Provided value for the input parameter scope is not valid because it contains more than one resource. Scope ${scopes.join(' ')} is not valid.`;
  return null;
}
