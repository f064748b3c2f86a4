// Per-client-IP bookkeeping: failed AUTH attempts with a lockout (brute-force brake), and
// open connections (so one device or attacker cannot take every slot).
import { clientKey } from '../config/networks.js';

export interface AuthLimits {
  /** Failures within `windowMs` that trigger a lockout. */
  limit: number;
  windowMs: number;
  lockoutMs: number;
}

/** Unlocked entries kept (a distributed flood ages out the oldest of these, never a lockout). */
export const MAX_TRACKED = 10_000;

/**
 * Failed logins per client key (IPv4 address or IPv6 /64, see `clientKey`). Locked keys
 * live in their own map and leave it only when their lockout ends: no flood of other
 * addresses can push a lockout out. Memory is bounded on the unlocked side (oldest first);
 * a locked entry costs an attacker `limit` failures, and expired ones are swept.
 */
export class AuthFailures {
  /** Unlocked keys with recent failures, oldest activity first (Map keeps insertion order). */
  private readonly recent = new Map<string, number[]>();
  private readonly locked = new Map<string, number>();
  private sweepAt = 1024;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxTracked = MAX_TRACKED,
  ) {}

  /** Milliseconds of lockout left for `ip` (0 = not locked). */
  lockedFor(ip: string): number {
    const key = clientKey(ip);
    const until = this.locked.get(key);
    if (until === undefined) return 0;
    const left = until - this.now();
    if (left > 0) return left;
    this.locked.delete(key); // cool-down over: start from a clean slate
    return 0;
  }

  /** Records a failure; returns true when this failure started a lockout. */
  fail(ip: string, limits: AuthLimits): boolean {
    const t = this.now();
    const key = clientKey(ip);
    if (this.lockedFor(ip) > 0) return false;
    const failures = (this.recent.get(key) ?? []).filter((f) => f > t - limits.windowMs);
    failures.push(t);
    this.recent.delete(key); // re-inserted below as the newest
    if (failures.length >= limits.limit) {
      this.locked.set(key, t + limits.lockoutMs);
      this.sweep(t);
      return true;
    }
    this.recent.set(key, failures);
    while (this.recent.size > this.maxTracked) this.recent.delete(this.recent.keys().next().value as string);
    return false;
  }

  /** Takes back the newest failure of `ip` (one charged before a check that then succeeded). */
  refund(ip: string): void {
    this.recent.get(clientKey(ip))?.pop();
  }

  failures(ip: string): number {
    return this.recent.get(clientKey(ip))?.length ?? 0;
  }

  /** Entry counts, for tests and metrics. */
  get size(): { tracked: number; locked: number } {
    return { tracked: this.recent.size, locked: this.locked.size };
  }

  // Amortised: a full pass only each time the locked map has doubled since the last one.
  private sweep(t: number): void {
    if (this.locked.size < this.sweepAt) return;
    for (const [key, until] of this.locked) if (until <= t) this.locked.delete(key);
    this.sweepAt = Math.max(1024, 2 * this.locked.size);
  }
}

export class ConnectionCounter {
  private readonly open = new Map<string, number>();

  /** Counts a new connection unless `ip` already has `max`; false = refuse it. */
  acquire(ip: string, max: number): boolean {
    const n = this.open.get(ip) ?? 0;
    if (n >= max) return false;
    this.open.set(ip, n + 1);
    return true;
  }

  release(ip: string): void {
    const n = (this.open.get(ip) ?? 0) - 1;
    if (n > 0) this.open.set(ip, n);
    else this.open.delete(ip);
  }

  count(ip: string): number {
    return this.open.get(ip) ?? 0;
  }
}

/**
 * Keeps `reserved` of a listener's `maxClients` slots for peers in `trustedNetworks` and
 * for sessions that have authenticated: every other session, until it authenticates, is in
 * the unauthenticated share (`maxClients - reserved`). When that share is full, a new
 * connection closes the oldest unauthenticated session instead of being refused, so idle
 * or slow connections, even spread over many addresses under the per-IP cap (or from
 * loopback), cannot keep a client that is about to log in out for a whole preAuthTimeout.
 */
export class SlotShare {
  /** Unauthenticated sessions outside trustedNetworks, oldest first (Map keeps insertion order), with how to close each. */
  private readonly waiting = new Map<string, () => void>();

  /**
   * Admits session `id`. Trusted peers are not counted; others take a slot of the
   * unauthenticated `share`, evicting (calling `close` of) the oldest holder when it is full.
   * Returns the evicted session's id, or null.
   */
  admit(id: string, trusted: boolean, share: number, close: () => void): string | null {
    if (trusted) return null;
    const evicted = this.waiting.size >= share ? this.evictOldest() : null;
    this.waiting.set(id, close);
    return evicted;
  }

  /** Closes the oldest unauthenticated session (when every slot is taken); returns its id, or null if there is none. */
  evictOldest(): string | null {
    const oldest = this.waiting.entries().next().value;
    if (!oldest) return null;
    this.waiting.delete(oldest[0]);
    oldest[1]();
    return oldest[0];
  }

  /** Session `id` authenticated: it now lives on the reserve and is never evicted. */
  authenticated(id: string): void {
    this.waiting.delete(id);
  }

  release(id: string): void {
    this.waiting.delete(id);
  }

  get unauthenticatedCount(): number {
    return this.waiting.size;
  }
}

/** The bits of a session the pre-auth deadline looks at. */
interface PreAuthConn {
  session: { user?: unknown; transaction: number; envelope: { mailFrom: unknown } };
  send(code: number, data?: string): void;
  close(): void;
  _closing: boolean;
  _closed: boolean;
}

/**
 * A client must authenticate or start a mail transaction within `ms` of connecting, or it
 * gets 421 and is closed (Postfix's smtpd is as strict with idle pre-auth sessions);
 * afterwards only socketTimeout applies. 0 = off. Returns the cancel function the caller
 * runs when the connection ends: smtp-server's connection object emits no 'close', and a
 * pending timer would keep the connection (and its socket) alive for the whole `ms`.
 */
export function preAuthDeadline(conn: PreAuthConn, ms: number, onTimeout: () => void): () => void {
  if (!ms) return () => {};
  const timer = setTimeout(() => {
    const s = conn.session;
    if (conn._closing || conn._closed) return; // already on its way out: not a timeout
    if (s.user || s.envelope?.mailFrom || s.transaction > 1) return;
    onTimeout();
    conn.send(421, '4.4.2 Timeout before authentication, closing connection');
    conn.close();
  }, ms);
  timer.unref();
  return () => clearTimeout(timer);
}
