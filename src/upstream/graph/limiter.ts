// Graph's per-mailbox limits, kept by the transport instead of discovered by failing:
// at most 4 requests in progress per mailbox (Exchange answers the 5th with 429
// MailboxConcurrency), at most 10,000 requests per 10 minutes and 150 MB uploaded per
// 5 minutes per mailbox, no request before the time a Retry-After named, and after a
// throttling answer one request at a time until Graph accepts one again (otherwise every
// message that waited would go at once when the pause ends, and meet the next 429 together).

/** Exchange Online: concurrent Graph requests per mailbox (per app). */
export const MAILBOX_CONCURRENCY = 4;

export interface Windows {
  requests: { max: number; ms: number };
  uploadBytes: { max: number; ms: number };
}
/** Outlook service limits for Graph: 10,000 requests per 10 minutes, 150 MB uploaded per 5 minutes, per app and mailbox. */
export const GRAPH_WINDOWS: Windows = {
  requests: { max: 10_000, ms: 10 * 60_000 },
  uploadBytes: { max: 150 * 1024 * 1024, ms: 5 * 60_000 },
};

interface Box {
  active: number;
  waiters: Array<() => void>;
  notBefore: number;
  /** Throttled since the last accepted request: one request at a time. */
  throttled: boolean;
  /** Start times of recent requests, oldest first. */
  sent: number[];
  /** Recent uploads: [time, bytes], oldest first. */
  uploads: Array<[number, number]>;
}

export class MailboxLimiter {
  private readonly boxes = new Map<string, Box>();

  constructor(
    private readonly limit = MAILBOX_CONCURRENCY,
    private readonly windows: Windows = GRAPH_WINDOWS,
  ) {}

  private box(mailbox: string): Box {
    const key = mailbox.toLowerCase();
    let b = this.boxes.get(key);
    if (!b) {
      b = { active: 0, waiters: [], notBefore: 0, throttled: false, sent: [], uploads: [] };
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

  /** One request to the mailbox starts now (`uploadBytes`: what it uploads). */
  record(mailbox: string, uploadBytes = 0, now = Date.now()): void {
    const b = this.box(mailbox);
    b.sent.push(now);
    if (uploadBytes) b.uploads.push([now, uploadBytes]);
  }

  /**
   * How long the mailbox must still wait before a request (0: go): Retry-After, or a full
   * window. `uploadBytes`: the upload this request would add (a message larger than the
   * whole window waits for an empty window, then goes).
   */
  waitLeft(mailbox: string, now = Date.now(), uploadBytes = 0): number {
    const b = this.box(mailbox);
    const { requests, uploadBytes: up } = this.windows;
    while (b.sent.length && b.sent[0] <= now - requests.ms) b.sent.shift();
    while (b.uploads.length && b.uploads[0][0] <= now - up.ms) b.uploads.shift();
    let wait = b.notBefore - now;
    if (b.sent.length >= requests.max) wait = Math.max(wait, b.sent[b.sent.length - requests.max] + requests.ms - now);
    if (uploadBytes && b.uploads.length) {
      // Wait until enough of the window has expired for this upload to fit.
      let total = b.uploads.reduce((n, [, bytes]) => n + bytes, 0);
      for (const [t, bytes] of b.uploads) {
        if (total + uploadBytes <= up.max) break;
        total -= bytes;
        wait = Math.max(wait, t + up.ms - now);
      }
    }
    return Math.max(0, wait);
  }
}
