// Per-client-IP bookkeeping: failed AUTH attempts with a lockout (brute-force brake), and
// open connections (so one device or attacker cannot take every slot).

export interface AuthLimits {
  /** Failures within `windowMs` that trigger a lockout. */
  limit: number;
  windowMs: number;
  lockoutMs: number;
}

export class AuthFailures {
  private readonly byIp = new Map<string, { failures: number[]; lockedUntil: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Milliseconds of lockout left for `ip` (0 = not locked). */
  lockedFor(ip: string): number {
    const e = this.byIp.get(ip);
    if (!e) return 0;
    const left = e.lockedUntil - this.now();
    if (left > 0) return left;
    if (e.lockedUntil) this.byIp.delete(ip); // cool-down over: start from a clean slate
    return 0;
  }

  /** Records a failure; returns true when this failure started a lockout. */
  fail(ip: string, limits: AuthLimits): boolean {
    const t = this.now();
    this.prune(t);
    let e = this.byIp.get(ip);
    if (!e) this.byIp.set(ip, (e = { failures: [], lockedUntil: 0 }));
    e.failures = e.failures.filter((f) => f > t - limits.windowMs);
    e.failures.push(t);
    if (e.failures.length >= limits.limit && e.lockedUntil <= t) {
      e.lockedUntil = t + limits.lockoutMs;
      e.failures = [];
      return true;
    }
    return false;
  }

  failures(ip: string): number {
    return this.byIp.get(ip)?.failures.length ?? 0;
  }

  // Keeps the map from growing without bound under a distributed attack.
  private prune(t: number): void {
    if (this.byIp.size < 10_000) return;
    for (const [ip, e] of this.byIp) {
      if (e.lockedUntil <= t && (e.failures.at(-1) ?? 0) < t - 3600e3) this.byIp.delete(ip);
    }
    while (this.byIp.size >= 10_000) this.byIp.delete(this.byIp.keys().next().value as string);
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
