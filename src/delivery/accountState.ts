// Per-account delivery state that must survive a restart: the rolling 24 h send count
// (limits.messagesPerDay, Gmail's), the recipients sent to in 24 h (limits.recipientsPerDay,
// Exchange Online's) and Gmail quota holds. Kept in memory and written (debounced, with
// the safe-write module) to stateDir/spool/.ratelimit.json.
// Never decides a message's state: the scheduler reads the limits, transition() decides.
import { readFile } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { safeWrite } from '../fs/safeWrite.js';

export const DAY_MS = 24 * 3600e3;
const MINUTE_MS = 60_000;

interface Persisted {
  version: 1;
  sent: Record<string, number[]>;
  /** [send stamp, recipients] per send; absent in files written before recipients were counted. */
  rcpts?: Record<string, [number, number][]>;
  quotaHold: Record<string, number>;
}

export class AccountState {
  private sent = new Map<string, number[]>();
  private rcpts = new Map<string, [number, number][]>();
  private holds = new Map<string, number>();
  private saveTimer?: NodeJS.Timeout;
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly log: Logger,
    private readonly saveDelayMs = 1000,
  ) {}

  async load(): Promise<void> {
    let data: Partial<Persisted>;
    try {
      data = JSON.parse(await readFile(this.file, 'utf8')) as Partial<Persisted>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.warn('rate-limit state unreadable, starting with empty counts', { file: this.file, err: e });
      return;
    }
    for (const [acct, list] of Object.entries(data.sent ?? {}))
      if (Array.isArray(list))
        this.sent.set(
          acct,
          list.filter((n) => typeof n === 'number').sort((a, b) => a - b),
        );
    for (const [acct, list] of Object.entries(data.rcpts ?? {}))
      if (Array.isArray(list))
        this.rcpts.set(
          acct,
          list
            .filter((e) => Array.isArray(e) && typeof e[0] === 'number' && typeof e[1] === 'number')
            .sort((a, b) => a[0] - b[0]),
        );
    for (const [acct, until] of Object.entries(data.quotaHold ?? {}))
      if (typeof until === 'number') this.holds.set(acct, until);
  }

  /** Sends counted in the 24 h window ending at `now` (in-flight reservations included). */
  count(account: string, now: number): number {
    const list = this.prune(account, now);
    return list.length;
  }

  /** When the window has room again if `limit` is reached now, else null. */
  blockedUntil(account: string, limit: number, now: number): number | null {
    const list = this.prune(account, now);
    if (list.length < limit) return null;
    return list[list.length - limit] + DAY_MS;
  }

  /** The same for a per-minute limit (Exchange Online's 30 messages a minute). */
  minuteBlockedUntil(account: string, limit: number, now: number): number | null {
    const recent = this.prune(account, now).filter((t) => t > now - MINUTE_MS);
    if (recent.length < limit) return null;
    return recent[recent.length - limit] + MINUTE_MS;
  }

  /** Recipients sent to in the 24 h window ending at `now` (reservations included). */
  recipients(account: string, now: number): number {
    return this.pruneRcpts(account, now).reduce((n, e) => n + e[1], 0);
  }

  /**
   * When `need` more recipients fit under `limit` again, else null. A message with more
   * recipients than the whole limit goes once the window is empty (it could never fit).
   */
  recipientsBlockedUntil(account: string, limit: number, need: number, now: number): number | null {
    const list = this.pruneRcpts(account, now);
    let used = list.reduce((n, e) => n + e[1], 0);
    if (used === 0 || used + need <= limit) return null;
    for (const [t, n] of list) {
      used -= n;
      if (used === 0 || used + need <= limit) return t + DAY_MS;
    }
    return null;
  }

  /** Counts a send (and its recipients) before it starts, so concurrent sends cannot overshoot a limit. */
  reserve(account: string, now: number, recipients = 1): number {
    this.prune(account, now).push(now);
    this.pruneRcpts(account, now).push([now, recipients]);
    this.scheduleSave();
    return now;
  }

  /** The send reached nobody (nothing accepted): give the slot back. */
  release(account: string, stamp: number): void {
    const list = this.sent.get(account);
    const i = list ? list.lastIndexOf(stamp) : -1;
    if (list && i >= 0) list.splice(i, 1);
    this.settle(account, stamp, 0);
    this.scheduleSave();
  }

  /** Only `recipients` of the reserved ones were accepted: count those. */
  settle(account: string, stamp: number, recipients: number): void {
    const list = this.rcpts.get(account);
    let i = list ? list.length - 1 : -1;
    while (list && i >= 0 && list[i][0] !== stamp) i--;
    if (!list || i < 0 || list[i][1] === recipients) return;
    if (recipients > 0) list[i] = [stamp, recipients];
    else list.splice(i, 1);
    this.scheduleSave();
  }

  quotaHoldUntil(account: string, now: number): number | null {
    const until = this.holds.get(account);
    if (until === undefined) return null;
    if (until <= now) {
      this.holds.delete(account);
      this.scheduleSave();
      return null;
    }
    return until;
  }

  setQuotaHold(account: string, until: number): void {
    if ((this.holds.get(account) ?? 0) >= until) return;
    this.holds.set(account, until);
    this.scheduleSave();
  }

  clearQuotaHold(account: string): boolean {
    const had = this.holds.delete(account);
    if (had) this.scheduleSave();
    return had;
  }

  /** Writes now (stop, tests). */
  async flush(): Promise<void> {
    if (this.saveTimer) {
      clearTimeout(this.saveTimer);
      this.saveTimer = undefined;
    }
    await this.save();
  }

  private prune(account: string, now: number): number[] {
    let list = this.sent.get(account);
    if (!list) {
      list = [];
      this.sent.set(account, list);
    }
    let drop = 0;
    while (drop < list.length && list[drop] <= now - DAY_MS) drop++;
    if (drop) list.splice(0, drop);
    return list;
  }

  private pruneRcpts(account: string, now: number): [number, number][] {
    let list = this.rcpts.get(account);
    if (!list) {
      list = [];
      this.rcpts.set(account, list);
    }
    let drop = 0;
    while (drop < list.length && list[drop][0] <= now - DAY_MS) drop++;
    if (drop) list.splice(0, drop);
    return list;
  }

  private scheduleSave(): void {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      void this.save();
    }, this.saveDelayMs);
    this.saveTimer.unref();
  }

  private save(): Promise<void> {
    // Serialised so an older snapshot never renames over a newer one.
    this.saving = this.saving.then(async () => {
      const data: Persisted = {
        version: 1,
        sent: Object.fromEntries(this.sent),
        rcpts: Object.fromEntries(this.rcpts),
        quotaHold: Object.fromEntries(this.holds),
      };
      try {
        await safeWrite(this.file, JSON.stringify(data) + '\n', { mode: 0o600 });
      } catch (e) {
        this.log.warn('could not save rate-limit state', { file: this.file, err: e });
      }
    });
    return this.saving;
  }
}
