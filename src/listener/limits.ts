// Per-client-IP bookkeeping: failed AUTH attempts with a lockout (brute-force brake), and
// open connections (so one device or attacker cannot take every slot).
import { clientKey } from './networks.js';

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
 * Keeps `reserved` of a listener's `maxClients` slots for trusted networks and loopback:
 * idle connections from elsewhere, even spread over many addresses under the per-IP cap,
 * cannot take the slots a LAN printer needs.
 */
export class SlotShare {
  private readonly untrusted = new Set<string>();

  /** Admits session `id`; false = refuse it (the untrusted share is full). */
  admit(id: string, trusted: boolean, maxClients: number, reserved: number): boolean {
    if (trusted) return true;
    if (this.untrusted.size >= maxClients - reserved) return false;
    this.untrusted.add(id);
    return true;
  }

  release(id: string): void {
    this.untrusted.delete(id);
  }

  get untrustedCount(): number {
    return this.untrusted.size;
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
