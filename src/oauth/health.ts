// Account health as the delivery side sees it: each account's state (ok, needs-reauth,
// error) with listeners told of every change, and holds the upstream's verdicts put on an
// account (e.g. SMTP AUTH disabled) until their re-check time.
import type { Logger } from '../log/logger.js';
import type { HealthState } from '../types.js';
import type { Slot } from './account.js';

export class HealthBook {
  private readonly listeners: ((account: string, state: HealthState) => void)[] = [];

  constructor(
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

  onChange(listener: (account: string, state: HealthState) => void): void {
    this.listeners.push(listener);
  }

  /** Sets the account's state; an ok account has no last error; listeners hear of a change. */
  set(s: Slot, state: HealthState): void {
    if (s.state === state) return;
    s.state = state;
    if (state === 'ok') s.rec.lastError = undefined;
    for (const l of this.listeners) {
      try {
        l(s.cfg.name, state);
      } catch (e) {
        this.log.error('account state listener failed', { account: s.cfg.name, err: e });
      }
    }
  }

  /** Why the account's mail waits besides its state: the unusable store, or a hold not yet due for its re-check. */
  holdReason(s: Slot, storeError: string | null): { reason: string; until: number | null } | null {
    if (storeError) return { reason: `token store unusable: ${storeError}`, until: null };
    if (s.hold && s.hold.until > this.now()) return { ...s.hold };
    return null;
  }

  /** Holds the account for `forMs` (ACCOUNT in `reason` becomes its name); logged once per reason. */
  hold(s: Slot, reason: string, forMs: number): void {
    const account = s.cfg.name;
    const text = reason.replace(/ACCOUNT\b/g, account);
    if (s.hold?.reason !== text) this.log.error(`account ${account} is held: ${text}`, { account });
    s.hold = { reason: text, until: this.now() + forMs };
  }
}
