// Per-account delivery state that must survive a restart: the rolling 24 h send count
// (limits.messagesPerDay) and Gmail quota holds. Kept in memory and written (debounced, with
// the safe-write module) to stateDir/spool/.ratelimit.json.
import { readFile } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { safeWrite } from '../fs/safeWrite.js';

export const DAY_MS = 24 * 3600e3;
const MINUTE_MS = 60_000;

interface Persisted {
  version: 1;
  sent: Record<string, number[]>;
  quotaHold: Record<string, number>;
}

export class AccountState {
  private sent = new Map<string, number[]>();
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
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn('rate-limit state unreadable, starting with empty counts', { file: this.file, err: e });
      return;
    }
    for (const [acct, list] of Object.entries(data.sent ?? {})) if (Array.isArray(list)) this.sent.set(acct, list.filter((n) => typeof n === 'number').sort((a, b) => a - b));
    for (const [acct, until] of Object.entries(data.quotaHold ?? {})) if (typeof until === 'number') this.holds.set(acct, until);
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

  /** Counts a send before it starts, so concurrent sends cannot overshoot the limit. */
  reserve(account: string, now: number): number {
    const list = this.prune(account, now);
    list.push(now);
    this.scheduleSave();
    return now;
  }

  /** The send reached nobody (nothing accepted): give the slot back. */
  release(account: string, stamp: number): void {
    const list = this.sent.get(account);
    const i = list ? list.lastIndexOf(stamp) : -1;
    if (list && i >= 0) {
      list.splice(i, 1);
      this.scheduleSave();
    }
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
      const data: Persisted = { version: 1, sent: Object.fromEntries(this.sent), quotaHold: Object.fromEntries(this.holds) };
      try {
        await safeWrite(this.file, JSON.stringify(data) + '\n', { mode: 0o600 });
      } catch (e) {
        this.log.warn('could not save rate-limit state', { file: this.file, err: e });
      }
    });
    return this.saving;
  }
}
