// How long each account's upstream has been failing, from the delivery worker's attempt
// results: the first transient failure starts the clock, any answer that shows the upstream
// working (delivered, or a definite 5xx/quota reply) stops it.
import type { Outcome } from '../types.js';

export class UpstreamHealth {
  private readonly since = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  record(account: string, outcome: Outcome): void {
    if (outcome === 'transient') {
      if (!this.since.has(account)) this.since.set(account, this.now());
    } else if (outcome !== 'auth') this.since.delete(account);
  }

  /** Epoch ms of the first failure of the current failing streak, or null. */
  failingSince(account: string): number | null {
    return this.since.get(account) ?? null;
  }
}
