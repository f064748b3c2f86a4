// The web console's request handler, mounted by the HTTP endpoint for every path it does
// not serve itself. GET renders a page; POST runs one action and redirects back (303).
import type http from 'node:http';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import { redactString } from '../../log/redact.js';
import { send as sendAs, HTML } from '../respond.js';
import { ConsoleAccess, LINK_TTL_MS, type Session } from './access.js';
import type { AccountView, ConsoleOps } from './ops.js';
import { AttemptCancelled, ConsoleAuthorizations } from './reauth.js';
import {
  accountsPage,
  authorizePage,
  devicePage,
  linkPage,
  loginPage,
  messagePage,
  queuePage,
  type DeviceOffer,
  type PageContext,
} from './pages.js';
import { providerFor } from '../../providers/index.js';

export interface ConsoleOptions {
  config: () => Config;
  ops: ConsoleOps;
  log: Logger;
  tls: boolean;
  /** Open problems a person should act on (firing alerts), shown in the banner. */
  attention?: () => string[];
  env?: NodeJS.ProcessEnv;
}

const MAX_FORM_BYTES = 16 * 1024;
// No scripts at all; forms post only to us; never framed.
const CSP =
  "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export class WebConsole {
  private readonly access: ConsoleAccess;
  readonly authorizations: ConsoleAuthorizations;
  /** One-shot messages shown on the next page of a session (after a POST's redirect). */
  private readonly flashes = new Map<string, { ok: boolean; text: string }>();

  constructor(private readonly opts: ConsoleOptions) {
    this.access = new ConsoleAccess({ passwordHash: () => opts.config().http.adminPasswordHash, tls: opts.tls });
    this.authorizations = new ConsoleAuthorizations({
      config: opts.config,
      log: opts.log,
      env: opts.env,
      storeGrant: (account, rec) => opts.ops.storeGrant(account, rec),
    });
  }

  close(): void {
    this.authorizations.close();
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Referrer-Policy', 'same-origin');
    const refused = this.access.refusal(req);
    if (refused) return send(res, req, 403, messagePage(403, refused));
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
      res.setHeader('Allow', 'GET, HEAD, POST');
      return send(res, req, 405, messagePage(405, 'method not allowed'));
    }
    const form = method === 'POST' ? await readForm(req) : new URLSearchParams();
    if (form === null) return send(res, req, 413, messagePage(413, 'form too large'));

    if (path === '/login') return this.login(req, res, method, form);
    const got = await this.access.session(req);
    if (!got) {
      if (method === 'POST') return send(res, req, 403, messagePage(403, 'not logged in'));
      if (!this.access.passwordRequired) return send(res, req, 401, linkPage());
      return redirect(res, '/login');
    }
    const { session } = got;
    if (got.isNew) res.setHeader('Set-Cookie', this.access.setCookie(session));
    if (method === 'POST') {
      if (!this.access.csrfOk(req, session, form.get('csrf') ?? undefined)) {
        this.opts.log.warn('web console: request refused by the CSRF check', { path, ip: req.socket.remoteAddress });
        return send(res, req, 403, messagePage(403, 'CSRF check failed: reload the page and try again'));
      }
      return this.post(req, res, path, form, session);
    }
    return this.get(req, res, path, session);
  }

  private async login(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    method: string,
    form: URLSearchParams,
  ): Promise<void> {
    const ctx: PageContext = { csrf: null, attention: [], loggedIn: false };
    // GET only: a HEAD (a link checker, a preview) must not use the link up.
    const link = method === 'GET' ? new URL(req.url ?? '/', 'http://console').searchParams.get('link') : null;
    if (link !== null) return this.redeem(req, res, link);
    if (!this.access.passwordRequired) {
      if (await this.access.session(req)) return redirect(res, '/accounts');
      return send(res, req, 401, linkPage());
    }
    if (method !== 'POST') return send(res, req, 200, loginPage(ctx));
    if (!this.access.csrfOk(req, null, undefined)) return send(res, req, 403, messagePage(403, 'CSRF check failed'));
    const r = await this.access.login(req, form.get('password') ?? '');
    if (r !== 'ok') {
      this.opts.log.warn('web console: login failed', { ip: req.socket.remoteAddress, locked: r === 'locked' });
      return send(
        res,
        req,
        r === 'locked' ? 429 : 401,
        loginPage(ctx, r === 'locked' ? 'Too many failed logins; try again later.' : 'Wrong password.'),
      );
    }
    const s = this.access.create();
    this.opts.log.info('web console: login', { ip: req.socket.remoteAddress });
    res.setHeader('Set-Cookie', this.access.setCookie(s));
    return redirect(res, '/accounts');
  }

  /** Opens a session for a one-time link from `console-link` (the token is never logged). */
  private redeem(req: http.IncomingMessage, res: http.ServerResponse, token: string): void {
    if (!this.access.redeem(token)) {
      this.opts.log.warn('web console: login link refused (used already, expired or unknown)', {
        ip: req.socket.remoteAddress,
      });
      return send(
        res,
        req,
        401,
        linkPage('This login link was used already or expired (a link works once, for 5 minutes).'),
      );
    }
    const s = this.access.create();
    this.opts.log.info('web console: login through a one-time link', { ip: req.socket.remoteAddress });
    res.setHeader('Set-Cookie', this.access.setCookie(s));
    return redirect(res, '/');
  }

  /**
   * A one-time login link for the owner (the control socket's `console.link`): the console's
   * address as this machine reaches it, `bound` being the address the endpoint listens on.
   */
  mintLink(
    bound: { host: string; port: number } | null,
    ttlMs = LINK_TTL_MS,
  ): { ok: boolean; message: string; url?: string; expiresAt?: string } {
    if (!bound) return { ok: false, message: 'the web console is off: http.port is 0 (set http.port, e.g. 9465)' };
    const { token, expiresAt } = this.access.mintLink(ttlMs);
    this.opts.log.info('web console: login link issued', { expiresAt: new Date(expiresAt).toISOString() });
    const url = `${this.opts.tls ? 'https' : 'http'}://${linkHost(this.opts.config().http.host)}:${bound.port}/login?link=${token}`;
    return { ok: true, message: url, url, expiresAt: new Date(expiresAt).toISOString() };
  }

  private async ctx(session: Session, accounts?: AccountView[]): Promise<PageContext> {
    const flash = this.flashes.get(session.id);
    this.flashes.delete(session.id);
    const attention = [...(this.opts.attention?.() ?? [])];
    for (const a of accounts ?? (await this.opts.ops.accounts())) {
      const name = a.config.name;
      if (a.status.state === 'ok' || attention.some((l) => l.includes(`account ${name} `))) continue;
      attention.push(
        a.status.state === 'needs-reauth'
          ? `account ${name} needs re-authorization: press its Authorize button (${a.queued} message(s) held)`
          : `account ${name} is failing: ${a.status.lastError ?? 'see the log'}`,
      );
    }
    return { csrf: session.csrf, attention: attention.map(redactString), flash, loggedIn: true };
  }

  private async get(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    path: string,
    session: Session,
  ): Promise<void> {
    const cfg = this.opts.config();
    if (path === '/' || path === '') return redirect(res, '/accounts');
    if (path === '/accounts') {
      const accounts = await this.opts.ops.accounts();
      return send(res, req, 200, accountsPage(await this.ctx(session, accounts), accounts, cfg.alerts.grantExpiryWarn));
    }
    if (path === '/queue')
      return send(
        res,
        req,
        200,
        queuePage(await this.ctx(session), await this.opts.ops.queue(), Boolean(this.opts.ops.hold)),
      );
    const m = /^\/accounts\/([^/]+)\/authorize(\/device)?$/.exec(path);
    if (m) {
      const account = decodeURIComponent(m[1]);
      const acct = cfg.accounts.find((a) => a.name === account);
      const cur = this.authorizations.current(account);
      if (!acct || !cur) return redirect(res, '/accounts');
      const base = `/accounts/${encodeURIComponent(account)}/authorize`;
      if (cur.kind === 'device') {
        if (!m[2]) return redirect(res, `${base}/device`);
        // The page is the status: it refreshes itself while the daemon polls, then shows the outcome once.
        if (cur.settled) this.authorizations.finish(account);
        return send(res, req, 200, devicePage(await this.ctx(session), account, acct.email, cur));
      }
      if (m[2]) return redirect(res, base);
      if (cur.settled) {
        this.authorizations.cancel(account);
        this.flashes.set(
          session.id,
          cur.settled.ok
            ? { ok: true, text: `Account ${account} authorized.` }
            : { ok: false, text: cur.settled.error },
        );
        return redirect(res, '/accounts');
      }
      return send(res, req, 200, authorizePage(await this.ctx(session), acct, cur.url, deviceOffer(acct)));
    }
    return send(res, req, 404, messagePage(404, 'not found'));
  }

  private async post(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    path: string,
    form: URLSearchParams,
    session: Session,
  ): Promise<void> {
    const flash = (ok: boolean, text: string) => this.flashes.set(session.id, { ok, text: redactString(text) });
    if (path === '/logout') {
      this.access.end(session);
      this.flashes.delete(session.id);
      res.setHeader('Set-Cookie', this.access.clearCookie());
      return redirect(res, '/login');
    }
    const auth = /^\/accounts\/([^/]+)\/authorize(\/complete|\/device|\/cancel)?$/.exec(path);
    if (auth) {
      const account = decodeURIComponent(auth[1]);
      const acct = this.opts.config().accounts.find((a) => a.name === account);
      if (!acct) return send(res, req, 404, messagePage(404, `no account named ${account}`));
      if (auth[2] === '/cancel') {
        if (this.authorizations.cancel(account)) {
          this.opts.log.info('web console: authorization cancelled', { account });
          flash(true, `Authorization of ${account} cancelled.`);
        }
        return redirect(res, '/accounts');
      }
      if (auth[2] === '/device') {
        const offer = deviceOffer(acct);
        if (!offer.offered) {
          flash(false, offer.why);
          return redirect(res, '/accounts');
        }
        try {
          await this.authorizations.startDevice(account);
          this.opts.log.info('web console: device sign-in started', { account });
        } catch (e) {
          if (e instanceof AttemptCancelled) return redirect(res, `/accounts/${encodeURIComponent(account)}/authorize`);
          flash(false, `Authorization of ${account} failed: ${(e as Error).message}`);
          return redirect(res, '/accounts');
        }
        return redirect(res, `/accounts/${encodeURIComponent(account)}/authorize/device`);
      }
      if (!auth[2]) {
        try {
          await this.authorizations.start(account);
          this.opts.log.info('web console: authorization started', { account });
        } catch (e) {
          // Replaced by a newer start (a double click) or cancelled: show whatever is current.
          if (e instanceof AttemptCancelled) return redirect(res, `/accounts/${encodeURIComponent(account)}/authorize`);
          flash(false, (e as Error).message);
          return redirect(res, '/accounts');
        }
        return redirect(res, `/accounts/${encodeURIComponent(account)}/authorize`);
      }
      const r = await this.authorizations.complete(account, form.get('redirect') ?? '');
      if (!r.ok) {
        const cur = this.authorizations.current(account);
        // A malformed paste keeps the attempt: show the page again with the problem.
        if (cur?.kind === 'paste' && !cur.settled)
          return send(res, req, 400, authorizePage(await this.ctx(session), acct, cur.url, deviceOffer(acct), r.error));
        flash(false, `Authorization of ${account} failed: ${r.error}`);
        return redirect(res, '/accounts');
      }
      flash(true, `Account ${account} authorized as ${r.email}; its held mail is being sent.`);
      return redirect(res, '/accounts');
    }
    const q = /^\/queue\/([0-9A-Za-z_-]+)\/(retry|delete|hold|release)$/.exec(path);
    if (q) {
      const [, id, what] = q;
      const ops = this.opts.ops;
      const fn =
        what === 'retry' ? ops.retry : what === 'delete' ? ops.remove : what === 'hold' ? ops.hold : ops.release;
      if (!fn) return send(res, req, 404, messagePage(404, `${what} is not available`));
      try {
        const text = await fn(id);
        this.opts.log.info(`web console: queue ${what}`, { id });
        flash(true, text);
      } catch (e) {
        flash(false, (e as Error).message);
      }
      return redirect(res, '/queue');
    }
    return send(res, req, 404, messagePage(404, 'not found'));
  }
}

/** The device-code sign-in is the provider's to offer (Microsoft does; Google refuses the Gmail scope in it). */
function deviceOffer(acct: Config['accounts'][number]): DeviceOffer {
  const p = providerFor(acct);
  if (acct.oauth.type !== 'user') return { offered: false, why: `account ${acct.name} needs no sign-in` };
  if (p.signIn.device) return { offered: true };
  return {
    offered: false,
    why: `Sign in with a code is not offered for ${p.label} accounts: ${p.signIn.noDevice ?? ''} Use the address above and paste where it lands.`,
  };
}

/**
 * The host to put in a login link. Without a password the console answers only exact loopback
 * names, so a wildcard or loopback bind is reached as a loopback literal (through `ssh -L` from
 * elsewhere); a named or LAN host (password mode, TLS) as configured.
 */
function linkHost(host: string): string {
  if (host === '' || host === '0.0.0.0' || host === '::' || host === '::ffff:0.0.0.0') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

function readForm(req: http.IncomingMessage): Promise<URLSearchParams | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n <= MAX_FORM_BYTES) chunks.push(c);
    });
    req.on('end', () =>
      resolve(n > MAX_FORM_BYTES ? null : new URLSearchParams(Buffer.concat(chunks).toString('utf8'))),
    );
    req.on('error', reject);
  });
}

function redirect(res: http.ServerResponse, to: string): void {
  res.statusCode = 303;
  res.setHeader('Location', to);
  res.setHeader('Cache-Control', 'no-store');
  res.end();
}

function send(res: http.ServerResponse, req: http.IncomingMessage, status: number, body: string): void {
  sendAs(res, req, status, body, HTML);
}
