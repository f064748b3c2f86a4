// How long each account's upstream has been failing, from the delivery worker's attempt
// results: the first transient failure starts the clock, any answer that shows the upstream
// working (delivered, or a definite 5xx/quota reply) stops it.
import type { Outcome } from '../types.js';

export class UpstreamHealth {
  private readonly since = new Map<string, number>();
  private readonly listeners: ((account: string, failingSince: number | null) => void)[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  record(account: string, outcome: Outcome): void {
    if (outcome === 'transient') {
      if (this.since.has(account)) return;
      const t = this.now();
      this.since.set(account, t);
      this.emit(account, t);
    } else if (outcome !== 'auth' && this.since.delete(account)) this.emit(account, null);
  }

  /** Called when a failing streak starts (its start time) and when it ends (null). */
  onChange(listener: (account: string, failingSince: number | null) => void): void {
    this.listeners.push(listener);
  }

  private emit(account: string, since: number | null): void {
    for (const l of this.listeners) l(account, since);
  }

  /** Epoch ms of the first failure of the current failing streak, or null. */
  failingSince(account: string): number | null {
    return this.since.get(account) ?? null;
  }
}
