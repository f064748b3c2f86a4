// Fake Microsoft identity platform (login.microsoftonline.com v2.0 token endpoint) over real
// HTTPS, for tests and `demo`. Stricter than Microsoft where it helps find bugs: every
// refresh token is usable ONCE (a rotation the bridge failed to save shows at once).
// Error bodies carry AADSTS codes as Entra ID's do.
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import type { TestPki } from './ca.js';

const rnd = (n: number): string => randomBytes(n).toString('base64url');
const DELEGATED = 'https://outlook.office.com/SMTP.Send';
const APP = 'https://outlook.office365.com/.default';

interface App {
  secret: string;
  secretExpired: boolean;
  /** Mailboxes the app's service principal may send as (Add-MailboxPermission). */
  mailboxes: Set<string>;
}

export interface MsTokenRequest {
  grantType: string;
  clientId?: string;
  ok: boolean;
  error?: string;
}

export class FakeMicrosoftIdentity {
  readonly authorityHost: string;
  readonly requests: MsTokenRequest[] = [];
  accessTokenTtlSec = 3600;
  private readonly apps = new Map<string, App>();
  private readonly refreshTokens = new Map<string, { clientId: string; email: string }>();
  private readonly accessTokens = new Map<string, { email: string | null; appId: string; expiresAt: number }>();

  private constructor(
    private readonly server: https.Server,
    port: number,
    readonly tenant: string,
  ) {
    this.authorityHost = `https://127.0.0.1:${port}`;
  }

  static async start(opts: { pki: TestPki; tenant?: string }): Promise<FakeMicrosoftIdentity> {
    const server = https.createServer({ cert: opts.pki.cert, key: opts.pki.key, minVersion: 'TLSv1.2' });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const fake = new FakeMicrosoftIdentity(server, (server.address() as { port: number }).port, opts.tenant ?? 'contoso.com');
    server.on('request', (req: IncomingMessage, res: ServerResponse) => void fake.handle(req, res));
    return fake;
  }

  get tokenUrl(): string {
    return `${this.authorityHost}/${this.tenant}/oauth2/v2.0/token`;
  }

  registerApp(clientId: string, secret: string): void {
    this.apps.set(clientId, { secret, secretExpired: false, mailboxes: new Set() });
  }

  expireSecret(clientId: string): void {
    this.apps.get(clientId)!.secretExpired = true;
  }

  allowMailbox(clientId: string, mailbox: string): void {
    this.apps.get(clientId)!.mailboxes.add(mailbox.toLowerCase());
  }

  issueRefreshToken(clientId: string, email: string): string {
    const rt = `M.C5${rnd(60)}`;
    this.refreshTokens.set(rt, { clientId, email });
    return rt;
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
    if (req.method !== 'POST' || u.pathname !== `/${this.tenant}/oauth2/v2.0/token`) {
      return this.error(res, 400, 'invalid_request', `AADSTS90002: Tenant '${u.pathname.split('/')[1]}' not found.`);
    }
    const grantType = p.get('grant_type') ?? '';
    const rec: MsTokenRequest = { grantType, clientId: p.get('client_id') ?? undefined, ok: false };
    this.requests.push(rec);
    const fail = (status: number, error: string, desc: string) => {
      rec.error = `${error}: ${desc.split(':')[0]}`;
      this.error(res, status, error, desc);
    };
    const app = this.apps.get(p.get('client_id') ?? '');
    if (!app) return fail(400, 'unauthorized_client', `AADSTS700016: Application with identifier '${p.get('client_id')}' was not found in the directory '${this.tenant}'.`);
    if (p.get('client_secret') !== app.secret) return fail(401, 'invalid_client', 'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.');
    if (app.secretExpired) return fail(401, 'invalid_client', `AADSTS7000222: The provided client secret keys for app '${p.get('client_id')}' are expired.`);
    if (grantType === 'refresh_token') {
      const rt = p.get('refresh_token') ?? '';
      const g = this.refreshTokens.get(rt);
      if (!g || g.clientId !== p.get('client_id'))
        return fail(400, 'invalid_grant', 'AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.');
      const scopes = (p.get('scope') ?? '').split(' ');
      if (!scopes.includes(DELEGATED)) return fail(400, 'invalid_scope', `AADSTS70011: The provided value for the input parameter 'scope' is not valid.`);
      // Usable once: the old refresh token dies with this answer.
      this.refreshTokens.delete(rt);
      rec.ok = true;
      return this.json(res, { token_type: 'Bearer', scope: `${DELEGATED}`, ...this.access(g.email, g.clientId), refresh_token: this.issueRefreshToken(g.clientId, g.email) });
    }
    if (grantType === 'client_credentials') {
      if (p.get('scope') !== APP) return fail(400, 'invalid_scope', `AADSTS1002012: The provided value for scope ${p.get('scope')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.`);
      rec.ok = true;
      return this.json(res, { token_type: 'Bearer', ...this.access(null, p.get('client_id')!) });
    }
    return fail(400, 'unsupported_grant_type', `AADSTS70003: The app requested an unsupported grant type '${grantType}'.`);
  }

  private access(email: string | null, appId: string): { access_token: string; expires_in: number; ext_expires_in: number } {
    const token = `eyJ0eXAiOiJKV1Qi.${rnd(40)}.${rnd(30)}`;
    this.accessTokens.set(token, { email, appId, expiresAt: Date.now() + this.accessTokenTtlSec * 1000 });
    return { access_token: token, expires_in: this.accessTokenTtlSec, ext_expires_in: this.accessTokenTtlSec };
  }

  private error(res: ServerResponse, status: number, error: string, desc: string): void {
    const now = new Date().toISOString().replace('T', ' ').slice(0, 19);
    this.json(res, { error, error_description: `${desc}\r\nTrace ID: ${randomUUID()}\r\nCorrelation ID: ${randomUUID()}\r\nTimestamp: ${now}Z`, error_codes: [Number(/AADSTS(\d+)/.exec(desc)?.[1] ?? 0)], timestamp: `${now}Z` }, status);
  }

  private json(res: ServerResponse, body: unknown, status = 200): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(text);
  }
}
