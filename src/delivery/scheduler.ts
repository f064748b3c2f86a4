// Owns: which message goes next. The queued messages in memory, the due-time index, the
// concurrency limit, and the accounts' sending limits (rate limits, quota window, holds):
// a due message whose account cannot send now is parked with that account's mail.
// Never does: decide or persist a message's state (transition.ts / outcome.ts), nor send.
import { Heap } from 'heap-js';
import type { Config } from '../config/schema.js';
import type { AccountHealth, SpooledEnvelope } from '../types.js';
import type { AccountState } from './accountState.js';
import { openRcpts, waitsForOperator } from './transition.js';

export interface Item {
  env: SpooledEnvelope;
  /** Bumped on every (re)schedule: older heap entries for this item are stale. */
  gen: number;
  /** Operator commands queued on this message; the scheduler leaves it alone meanwhile. */
  locks: number;
  commands: Promise<unknown>;
  /** An operator's retry of this message: tried even while the account is quota-held. Memory only. */
  bypassQuota?: boolean;
  /** Last hold reason logged, so a waiting message logs 'held' once per reason. */
  heldReason?: string;
  /** Parked by a sending limit: which one and until when (shown by `queue list`). */
  waiting?: string;
  /** Not before this time (ms), whatever the envelope says: bookkeeping failed, look again later. Memory only. */
  notBefore?: number;
}

/** Why an account's mail must wait now, and until when (null: until something changes). */
export interface Block {
  reason: string;
  until: number | null;
  /** Which limit, for the log and `queue list`. */
  why?: string;
}

interface Due {
  at: number;
  id: string;
  gen: number;
}

export interface SchedulerOptions {
  config: () => Config;
  health: AccountHealth;
  accounts: AccountState;
  now: () => number;
  /** A due message whose account can send, with capacity for it: start its attempt (registers it in `inFlight`). */
  start(item: Item, now: number): void;
  /** A due message whose account cannot send now. */
  parked(item: Item, block: Block): void;
  /** A message entered the queue. */
  added?(item: Item): void;
}

const MAX_TIMER = 2 ** 31 - 1;

export class Scheduler {
  readonly items = new Map<string, Item>();
  readonly inFlight = new Map<string, Promise<void>>();
  /** Messages waiting to be tried, ordered by due time: the scheduler never scans the whole queue. */
  private readonly due = new Heap<Due>((a, b) => a.at - b.at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  /** Due messages of an account that cannot send now, by account; released together when it can. */
  private readonly parkedBy = new Map<string, Set<string>>();
  private readonly parkTimers = new Map<string, NodeJS.Timeout>();
  private timer?: NodeJS.Timeout;
  private timerAt = Infinity;
  private running = false;

  constructor(private readonly o: SchedulerOptions) {}

  /** Starts picking due messages. */
  run(): void {
    this.running = true;
    this.pump();
  }

  /** Stops picking; everything stays in memory (and spooled). */
  halt(): void {
    this.running = false;
    this.clearTimer();
    for (const t of this.parkTimers.values()) clearTimeout(t);
    this.parkTimers.clear();
  }

  add(env: SpooledEnvelope): Item {
    const item: Item = { env, gen: 0, locks: 0, commands: Promise.resolve() };
    this.items.set(env.id, item);
    this.schedule(item);
    this.o.added?.(item);
    return item;
  }

  remove(id: string): void {
    this.items.delete(id);
  }

  /** (Re)enters a message into the due-time index, unless it waits for an operator. */
  schedule(item: Item, at?: number): void {
    item.gen++;
    if (waitsForOperator(item.env)) return;
    if (item.env.state === 'failed' || this.inFlight.has(item.env.id)) return;
    const t = Date.parse(item.env.nextAttemptAt);
    const when = at ?? Math.max(Number.isNaN(t) ? 0 : t, item.notBefore ?? 0);
    this.due.push({ at: when, id: item.env.id, gen: item.gen });
  }

  /** Starts every due message there is capacity for, then sleeps until the next one is due. */
  pump(): void {
    if (!this.running) return;
    const now = this.o.now();
    const max = this.o.config().queue.concurrency;
    while (this.inFlight.size < max) {
      const top = this.due.peek();
      if (!top) break;
      const item = this.items.get(top.id);
      if (!item || item.gen !== top.gen || item.locks) {
        this.due.pop(); // stale entry; a locked item is scheduled again when its commands are done
        continue;
      }
      if (top.at > now) break;
      this.due.pop();
      const block = this.accountBlock(
        item.env.account,
        now,
        item.bypassQuota === true,
        openRcpts(item.env.rcpts).length,
      );
      if (block) {
        this.park(item, block);
        continue;
      }
      item.notBefore = undefined;
      this.o.start(item, now);
    }
    this.arm(this.inFlight.size < max ? (this.due.peek()?.at ?? Infinity) : Infinity, now);
  }

  /** The account's block ended: its parked mail is due again. */
  unpark(account: string): void {
    const set = this.parkedBy.get(account);
    if (!set) return;
    this.parkedBy.delete(account);
    for (const id of set) {
      const item = this.items.get(id);
      if (item && !this.inFlight.has(id)) this.schedule(item);
    }
  }

  /** Forgets the account's parked set (its mail was rescheduled another way). */
  forgetParked(account: string): void {
    this.parkedBy.delete(account);
  }

  /** Why an account's mail must wait now, and until when (null: until something changes). */
  accountBlock(account: string, now: number, bypassQuota: boolean, recipients = 1): Block | null {
    const acct = this.o.config().accounts.find((a) => a.name === account);
    if (!acct) return { reason: 'account not configured', until: null };
    if (this.o.health.state(account) === 'needs-reauth') return { reason: 'needs-reauth', until: null };
    const hold = this.o.health.holdReason?.(account);
    if (hold) return hold;
    const accounts = this.o.accounts;
    const quota = accounts.quotaHoldUntil(account, now);
    if (quota !== null && !bypassQuota) return { reason: 'quota', until: quota };
    const perMinute = acct.limits.messagesPerMinute;
    const minute = perMinute ? accounts.minuteBlockedUntil(account, perMinute, now) : null;
    if (minute !== null)
      return { reason: 'rate-limit', until: minute, why: `limits.messagesPerMinute ${perMinute} reached` };
    const perDay = acct.limits.messagesPerDay;
    const rate = perDay ? accounts.blockedUntil(account, perDay, now) : null;
    if (rate !== null) return { reason: 'rate-limit', until: rate, why: `limits.messagesPerDay ${perDay} reached` };
    const rcptsPerDay = acct.limits.recipientsPerDay;
    const rcpts = rcptsPerDay ? accounts.recipientsBlockedUntil(account, rcptsPerDay, recipients, now) : null;
    if (rcpts !== null) {
      const sent = accounts.recipients(account, now);
      return {
        reason: 'rate-limit',
        until: rcpts,
        why: `limits.recipientsPerDay ${rcptsPerDay}: ${sent} sent in 24 h, this message has ${recipients}`,
      };
    }
    return null;
  }

  /** A due message whose account cannot send: waits with the account's other mail until the block ends. */
  private park(item: Item, block: Block): void {
    const account = item.env.account;
    let set = this.parkedBy.get(account);
    if (!set) this.parkedBy.set(account, (set = new Set()));
    set.add(item.env.id);
    item.gen++;
    this.o.parked(item, block);
    if (block.until !== null && !this.parkTimers.has(account)) {
      const t = setTimeout(
        () => {
          this.parkTimers.delete(account);
          this.unpark(account);
          this.pump();
        },
        Math.min(MAX_TIMER, Math.max(0, block.until - this.o.now())),
      );
      t.unref();
      this.parkTimers.set(account, t);
    }
  }

  private arm(at: number, now: number): void {
    if (at === this.timerAt && this.timer) return;
    this.clearTimer();
    if (at === Infinity) return;
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Infinity;
        this.pump();
      },
      Math.min(MAX_TIMER, Math.max(0, at - now)),
    );
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }
}
