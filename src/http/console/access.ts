// Who may use the console. Without http.adminPasswordHash: requests from this machine only
// (loopback peer address AND a Host header that is an exact loopback form, so a DNS-rebinding
// page, whose Host is a name the attacker controls, cannot reach it), and only with a session
// opened through a one-time login link. Every local user can reach 127.0.0.1, so the link is
// what tells the service's owner apart: it is minted by the daemon for whoever may use its
// control socket (`xoauth2-bridge console-link`), so the console never grants more than that
// socket does. With a password: a session cookie from the login form or a link, or HTTP basic
// auth. Every POST also needs the session's CSRF token and a same-origin Origin (or Referer).
import type http from 'node:http';
import { isIP } from 'node:net';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { Logins } from '../../listener/logins.js';
import { AuthFailures } from '../../listener/limits.js';
import { PasswordCache, kdfGate } from '../../listener/passwords.js';
import { isLoopback } from '../../config/networks.js';

export const COOKIE = 'xob_session';
const SESSION_IDLE_MS = 8 * 3600e3;
const MAX_SESSIONS = 1000;
/** A login link works once, within this long of being minted. */
export const LINK_TTL_MS = 5 * 60e3;
/** Unused links kept at most (the oldest are dropped first). */
const MAX_LINKS = 100;
const LOGIN_LIMITS = { limit: 5, windowMs: 10 * 60e3, lockoutMs: 15 * 60e3 };
/** The user name the admin password is cached under (basic auth's user name is ignored). */
const ADMIN = 'console admin';

export interface Session {
  id: string;
  csrf: string;
  lastSeen: number;
}

export interface AccessOptions {
  passwordHash: () => string | undefined;
  tls: boolean;
}

export function isLoopbackAddress(addr: string | undefined): boolean {
  return addr !== undefined && isLoopback(addr);
}

/**
 * True when `host` (a Host header, or an origin's host part) is exactly `localhost`, an
 * IPv4 literal inside 127/8, or a bracketed IPv6 loopback literal (`[::1]`), each with an
 * optional numeric port. Names are never matched by prefix: `127.0.0.1.nip.io`,
 * `127.evil.example` and `localhost.evil` are names whose DNS an attacker controls.
 */
export function isExactLoopbackHost(host: string | undefined): boolean {
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.]+))(?::(\d{1,5}))?$/.exec((host ?? '').trim().toLowerCase());
  if (!m) return false;
  if (m[3] !== undefined && (Number(m[3]) < 1 || Number(m[3]) > 65535)) return false;
  if (m[1] !== undefined) return isIP(m[1]) === 6 && isLoopback(m[1]);
  return m[2] === 'localhost' || (isIP(m[2]) === 4 && isLoopback(m[2]));
}

/** The host part of an Origin (or Referer) when it is an exact loopback form over http(s), else null. */
function loopbackOrigin(value: string): string | null {
  const m = /^(https?):\/\/([^/?#]+)(?:[/?#].*)?$/i.exec(value.trim());
  return m && isExactLoopbackHost(m[2]) ? `${m[1].toLowerCase()}://${m[2].toLowerCase()}` : null;
}

const digest = (token: string): string => createHash('sha256').update(token).digest('base64');

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function cookies(req: http.IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  return out;
}

export class ConsoleAccess {
  private readonly sessions = new Map<string, Session>();
  /** Unused login links: SHA-256 of the token -> expiry (the token itself is never kept). */
  private readonly links = new Map<string, number>();
  /** The SMTP listener's login rule and its process-wide KDF gate: charge before the KDF,
   * refund on success, one check in flight per client (see src/listener/logins.ts). */
  private readonly logins = new Logins(new AuthFailures(), new PasswordCache(), kdfGate, 'console ');

  constructor(private readonly opts: AccessOptions) {}

  get passwordRequired(): boolean {
    return this.opts.passwordHash() !== undefined;
  }

  /** Why this peer may not even see the login page, or null. */
  refusal(req: http.IncomingMessage): string | null {
    if (this.passwordRequired) return null;
    if (!isLoopbackAddress(req.socket.remoteAddress) || !isExactLoopbackHost(req.headers.host))
      return 'The console answers on this machine only (http://127.0.0.1). To use it from elsewhere set http.adminPasswordHash (and TLS).';
    return null;
  }

  /** The caller's session: from the cookie, or (with a password) from valid basic auth. */
  async session(req: http.IncomingMessage): Promise<{ session: Session; isNew: boolean } | null> {
    const now = Date.now();
    const id = cookies(req).get(COOKIE);
    const s = id ? this.sessions.get(id) : undefined;
    if (s && now - s.lastSeen < SESSION_IDLE_MS) {
      s.lastSeen = now;
      return { session: s, isNew: false };
    }
    if (s) this.sessions.delete(s.id);
    if (!this.passwordRequired) return null; // only a login link opens a session
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (basic) {
      const text = Buffer.from(basic[1], 'base64').toString('utf8');
      const pw = text.slice(text.indexOf(':') + 1);
      if ((await this.login(req, pw)) === 'ok') return { session: this.create(), isNew: true };
    }
    return null;
  }

  /** Checks the admin password (locked out per client address after LOGIN_LIMITS failures). */
  async login(req: http.IncomingMessage, password: string): Promise<'ok' | 'bad' | 'locked'> {
    const ip = req.socket.remoteAddress ?? '?';
    return (await this.logins.check(ip, ADMIN, password, this.opts.passwordHash(), LOGIN_LIMITS)).result;
  }

  /** A new one-time login token, valid for `ttlMs`. */
  mintLink(ttlMs = LINK_TTL_MS): { token: string; expiresAt: number } {
    const token = randomBytes(32).toString('base64url');
    const expiresAt = Date.now() + ttlMs;
    this.sweepLinks();
    while (this.links.size >= MAX_LINKS) this.links.delete(this.links.keys().next().value as string);
    this.links.set(digest(token), expiresAt);
    return { token, expiresAt };
  }

  /** Uses up a login token: true once, for a token minted here and not expired. */
  redeem(token: string): boolean {
    const k = digest(token);
    const expiresAt = this.links.get(k);
    this.links.delete(k);
    this.sweepLinks();
    return expiresAt !== undefined && expiresAt > Date.now();
  }

  private sweepLinks(): void {
    const now = Date.now();
    for (const [k, exp] of this.links) if (exp <= now) this.links.delete(k);
  }

  create(): Session {
    const s: Session = {
      id: randomBytes(32).toString('base64url'),
      csrf: randomBytes(32).toString('base64url'),
      lastSeen: Date.now(),
    };
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value as string);
    this.sessions.set(s.id, s);
    return s;
  }

  end(s: Session): void {
    this.sessions.delete(s.id);
  }

  setCookie(s: Session): string {
    return `${COOKIE}=${s.id}; Path=/; HttpOnly; SameSite=Strict${this.opts.tls ? '; Secure' : ''}`;
  }

  clearCookie(): string {
    return `${COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${this.opts.tls ? '; Secure' : ''}`;
  }

  /** CSRF: the form's token matches the session's and the request comes from our own pages. */
  csrfOk(req: http.IncomingMessage, s: Session | null, token: string | undefined): boolean {
    if (!this.sameOrigin(req)) return false;
    if (s === null) return true; // the login form: no session yet, origin checked
    return typeof token === 'string' && safeEqual(token, s.csrf);
  }

  private sameOrigin(req: http.IncomingMessage): boolean {
    const self = `${this.opts.tls ? 'https' : 'http'}://${(req.headers.host ?? '').trim().toLowerCase()}`;
    // Without a password the origin must also be an exact loopback form (the Host was checked
    // by refusal(); this keeps the rule true for the Origin on its own).
    const check = (origin: string): boolean =>
      this.passwordRequired ? origin.toLowerCase() === self : loopbackOrigin(origin) === self;
    const origin = req.headers.origin;
    if (origin) return check(origin);
    const referer = req.headers.referer;
    if (!referer) return false;
    try {
      return check(new URL(referer).origin);
    } catch {
      return false;
    }
  }
}
