// One login check (SMTP AUTH and the web console's admin password): lockout, then the cache
// of successful logins (never waits for a KDF), then the fair KDF gate. A client that already has a check in flight or queued is charged
// a failure BEFORE its next check waits (refunded if that check succeeds), so 20 parallel
// connections from one address reach the lockout after `limit` of them instead of running
// 20 KDFs; the lockout then drops the rest of its queue.
import { PasswordCache, type KdfGate, KdfCancelled, kdfGate, checkPassword } from './passwords.js';
import { AuthFailures, type AuthLimits } from './limits.js';
import { clientKey } from '../config/networks.js';

export interface LoginVerdict {
  /** ok: authenticated; bad: 535; locked: 454 (no KDF was run for it, or it was dropped). */
  result: 'ok' | 'bad' | 'locked';
  /** This attempt counted as a failure (log it, count it). */
  failed: boolean;
  /** This attempt started a lockout. */
  lockoutStarted: boolean;
}

export class Logins {
  /** Checks running or queued, by keyed hash of the credentials: the same login sent on
   * several connections at once (a device, a restarted MTA) shares one KDF. */
  private readonly inFlight = new Map<string, Promise<boolean>>();

  constructor(
    readonly failures: AuthFailures = new AuthFailures(),
    readonly cache: PasswordCache = new PasswordCache(),
    readonly gate: KdfGate = kdfGate,
    /** Prefixes the client key in the gate: each door (SMTP AUTH, the web console) keeps its own
     * one-in-flight slot and its own queue, so a lockout at one door drops no check of the other. */
    private readonly door = '',
  ) {}

  async check(
    ip: string,
    username: string,
    password: string,
    phc: string | undefined,
    limits: AuthLimits,
  ): Promise<LoginVerdict> {
    if (this.failures.lockedFor(ip) > 0) return { result: 'locked', failed: false, lockoutStarted: false };
    if (phc !== undefined && this.cache.has(username, password, phc))
      return { result: 'ok', failed: false, lockoutStarted: false };
    const key = this.door + clientKey(ip);
    const same = `${this.cache.id(username, password)}\0${phc ?? ''}`;
    const shared = this.inFlight.get(same);
    if (shared) {
      let ok: boolean;
      try {
        ok = await shared;
      } catch (e) {
        if (e instanceof KdfCancelled) return { result: 'locked', failed: false, lockoutStarted: false };
        throw e;
      }
      if (ok) return { result: 'ok', failed: false, lockoutStarted: false };
      if (this.failures.lockedFor(ip) > 0) return { result: 'locked', failed: false, lockoutStarted: false };
      return { result: 'bad', failed: true, lockoutStarted: this.fail(ip, key, limits) };
    }
    const precharged = this.gate.pending(key) > 0;
    if (precharged && this.fail(ip, key, limits)) return { result: 'locked', failed: true, lockoutStarted: true };
    let ok: boolean;
    try {
      const run = this.gate.run(key, () => checkPassword(this.cache, username, password, phc));
      this.inFlight.set(same, run);
      ok = await run.finally(() => this.inFlight.delete(same));
    } catch (e) {
      if (e instanceof KdfCancelled) return { result: 'locked', failed: precharged, lockoutStarted: false };
      throw e;
    }
    if (ok) {
      if (precharged) this.failures.refund(ip);
      return { result: 'ok', failed: false, lockoutStarted: false };
    }
    if (precharged) return { result: 'bad', failed: true, lockoutStarted: false };
    const lockoutStarted = this.fail(ip, key, limits);
    return { result: 'bad', failed: true, lockoutStarted };
  }

  /** Counts a failure; a lockout also drops the client's queued checks. */
  private fail(ip: string, key: string, limits: AuthLimits): boolean {
    const started = this.failures.fail(ip, limits);
    if (started) this.gate.cancel(key);
    return started;
  }
}
