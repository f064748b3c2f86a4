// Graph's per-mailbox limits, kept by the transport instead of discovered by failing:
// at most 4 requests in progress per mailbox (Exchange answers the 5th with 429
// MailboxConcurrency), no request before the time a Retry-After named, and after a
// throttling answer one request at a time until Graph accepts one again (otherwise every
// message that waited would go at once when the pause ends, and meet the next 429 together).

/** Exchange Online: concurrent Graph requests per mailbox (per app). */
export const MAILBOX_CONCURRENCY = 4;

interface Box {
  active: number;
  waiters: Array<() => void>;
  notBefore: number;
  /** Throttled since the last accepted request: one request at a time. */
  throttled: boolean;
}

export class MailboxLimiter {
  private readonly boxes = new Map<string, Box>();

  constructor(private readonly limit = MAILBOX_CONCURRENCY) {}

  private box(mailbox: string): Box {
    const key = mailbox.toLowerCase();
    let b = this.boxes.get(key);
    if (!b) {
      b = { active: 0, waiters: [], notBefore: 0, throttled: false };
      this.boxes.set(key, b);
    }
    return b;
  }

  private room(b: Box): boolean {
    return b.active < (b.throttled ? 1 : this.limit);
  }

  /** Waits for one of the mailbox's slots; call the returned function once done. */
  async acquire(mailbox: string): Promise<() => void> {
    const b = this.box(mailbox);
    while (!this.room(b)) await new Promise<void>((resolve) => b.waiters.push(resolve));
    b.active++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      b.active--;
      this.wake(b);
    };
  }

  private wake(b: Box): void {
    // Each woken waiter checks for room again; wake as many as could fit.
    const n = (b.throttled ? 1 : this.limit) - b.active;
    for (const w of b.waiters.splice(0, Math.max(0, n))) w();
  }

  /** Graph throttled the mailbox: no request before `until` (ms since epoch), then one at a time. */
  pause(mailbox: string, until: number): void {
    const b = this.box(mailbox);
    b.notBefore = Math.max(b.notBefore, until);
    b.throttled = true;
  }

  /** Graph accepted a request: the full concurrency again. */
  accepted(mailbox: string): void {
    const b = this.box(mailbox);
    if (!b.throttled) return;
    b.throttled = false;
    this.wake(b);
  }

  /** How long the mailbox must still wait (0: go). */
  waitLeft(mailbox: string, now = Date.now()): number {
    return Math.max(0, this.box(mailbox).notBefore - now);
  }
}
