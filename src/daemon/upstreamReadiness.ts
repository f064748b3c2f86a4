// /readyz and the upstream_failing metric: an account whose upstream has failed every attempt
// for a while (a mistyped host, a blocked port) is not ready. "Failing" is the alert monitor's
// notion (src/alerts/upstream.ts: a streak of transient outcomes, ended by any answer that shows
// the upstream working); this adds how many attempts the streak holds, so one unlucky attempt
// after a quiet hour does not flip readiness.
import { Gauge, type Registry } from 'prom-client';
import type { Outcome } from '../types.js';
import type { UpstreamHealth } from '../alerts/upstream.js';

export interface UpstreamReadinessOptions {
  /** The streak must be at least this old. Default 5 min. */
  afterMs?: number;
  /** ... and hold at least this many attempts. Default 3. */
  minAttempts?: number;
  now?: () => number;
}

export class UpstreamReadiness {
  private readonly attempts = new Map<string, number>();
  private readonly afterMs: number;
  private readonly minAttempts: number;
  private readonly now: () => number;

  constructor(
    private readonly health: UpstreamHealth,
    opts: UpstreamReadinessOptions = {},
  ) {
    this.afterMs = opts.afterMs ?? 5 * 60_000;
    this.minAttempts = opts.minAttempts ?? 3;
    this.now = opts.now ?? Date.now;
  }

  /** Call after UpstreamHealth.record with the same result. */
  record(account: string, outcome: Outcome): void {
    if (this.health.failingSince(account) === null) this.attempts.delete(account);
    else if (outcome === 'transient') this.attempts.set(account, (this.attempts.get(account) ?? 0) + 1);
  }

  /** The failing streak when it counts as "not ready", else null. */
  failing(account: string): { sinceMs: number; attempts: number } | null {
    const since = this.health.failingSince(account);
    const attempts = this.attempts.get(account) ?? 0;
    if (since === null || attempts < this.minAttempts || this.now() - since < this.afterMs) return null;
    return { sinceMs: this.now() - since, attempts };
  }

  /** The /readyz line for the account, or null. */
  reason(account: string): string | null {
    const f = this.failing(account);
    if (!f) return null;
    return `account ${account}: upstream failing — all ${f.attempts} attempts in the last ${Math.round(f.sinceMs / 1000)} s failed (unreachable or refusing); see: xoauth2-bridge queue list (last reply), xoauth2-bridge doctor`;
  }

  /** xoauth2_bridge_upstream_failing{account}: 1 while reason() would be shown, else 0. */
  register(registry: Registry, accounts: () => string[]): void {
    const self = this;
    new Gauge({
      name: 'xoauth2_bridge_upstream_failing',
      help: 'Whether every upstream attempt of the account has failed for a while (1) or not (0); /readyz lists such accounts.',
      labelNames: ['account'],
      registers: [registry],
      collect() {
        this.reset();
        for (const a of accounts()) this.set({ account: a }, self.failing(a) ? 1 : 0);
      },
    });
  }
}
