// The delivery stage: takes due messages from the spool, hands them to the upstream and acts
// on the classified outcome (deliver, defer with backoff, hold, bounce). Every state change is
// decided by transition() and persisted in the envelope before the next step, so a crash at
// any point resends at most the recipients that were in flight, and never loses one. The
// worker is also the only place operator commands (retry, hold, release, delete) change a
// queued message: they wait for an attempt in flight, so they can never undo its result.
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Heap } from 'heap-js';
import type { Config } from '../config/schema.js';
import { formatDuration } from '../config/units.js';
import type { Logger, Meta } from '../log/logger.js';
import type { Spool } from '../spool/spool.js';
import type { AccountHealth, HealthState, Envelope, HoldReason, MessageState, Recipient, SendResult, SpooledEnvelope, Upstream } from '../types.js';
import { AccountState } from './accountState.js';
import { buildDsn, statusFromReply, type DsnRecipient } from './bounce.js';
import { openRcpts, transition, waitsForOperator, DATA_LOST_TEXT, type Bounce, type Change, type MessageView, type QueueEvent } from './transition.js';
import type { FailedEnvelope } from '../spool/spool.js';

export interface DeliveryWorkerOptions {
  config: Config;
  log: Logger;
  spool: Spool;
  /** null: this worker only answers operator commands (the CLI with no daemon running); it never sends. */
  upstream: Upstream | null;
  health: AccountHealth;
  now?: () => number;
  /** Reporting-MTA in bounces; default the host name. */
  hostname?: string;
  metrics?: DeliveryMetrics;
}

/** The counters this stage feeds (implemented by src/metrics). */
export interface DeliveryMetrics {
  delivered(account: string, rcpts: number): void;
  deferred(account: string): void;
  bounced(account: string): void;
  upstreamReply(account: string, outcome: SendResult['outcome']): void;
  /** An acknowledged message's data was gone: failed with reason data-lost. */
  dataLost?(account: string): void;
}

/** A message as operators see it: its stored envelope and its live state. */
export interface QueuedView {
  env: SpooledEnvelope;
  state: MessageState;
  reason: HoldReason | null;
  /** Why a due message is not sent yet (a sending limit), when it is parked. */
  waiting?: string;
}

/** The answer to an operator command. */
export interface CommandResult {
  ok: boolean;
  id: string;
  /** State after the command ('removed' after a delete). */
  state?: MessageState | 'removed';
  message: string;
}

export type OperatorEvent = Extract<QueueEvent, { type: 'retry' | 'hold' | 'release' | 'delete' }>;

interface Item {
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
}

interface Due {
  at: number;
  id: string;
  gen: number;
}

interface Block {
  reason: string;
  until: number | null;
  /** Which limit, for the log and `queue list`. */
  why?: string;
}

const MAX_TIMER = 2 ** 31 - 1;

export class DeliveryWorker {
  private config: Config;
  private readonly log: Logger;
  private readonly spool: Spool;
  private readonly upstream: Upstream | null;
  private readonly health: AccountHealth;
  private readonly now: () => number;
  private readonly host: string;
  private readonly metrics?: DeliveryMetrics;
  private readonly accounts: AccountState;
  private readonly items = new Map<string, Item>();
  /** Messages waiting to be tried, ordered by due time: the scheduler never scans the whole queue. */
  private readonly due = new Heap<Due>((a, b) => a.at - b.at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  /** Due messages of an account that cannot send now, by account; released together when it can. */
  private readonly parked = new Map<string, Set<string>>();
  private readonly parkTimers = new Map<string, NodeJS.Timeout>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private timer?: NodeJS.Timeout;
  private timerAt = Infinity;
  private stopping = false;
  private started = false;

  constructor(opts: DeliveryWorkerOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'delivery' });
    this.spool = opts.spool;
    this.upstream = opts.upstream;
    this.health = opts.health;
    this.now = opts.now ?? Date.now;
    this.host = opts.hostname ?? hostname();
    this.metrics = opts.metrics;
    this.accounts = new AccountState(join(this.spool.dir, '.ratelimit.json'), this.log);
    this.health.onChange((account, state) => this.onHealthChange(account, state));
  }

  /** Reads every spooled message (and the rate-limit state) without sending anything. */
  async load(): Promise<void> {
    await this.accounts.load();
    for (const env of await this.spool.list()) if (!this.items.has(env.id)) this.add(env);
  }

  /** Loads every spooled message, including ones that were being sent when the process died, and starts sending. */
  async start(): Promise<void> {
    if (!this.upstream) throw new Error('a worker without an upstream cannot start delivering');
    await this.load(); // errors propagate: a daemon that cannot read its spool must not start
    // Acknowledged messages whose data is gone (init() keeps their envelopes) are reported now,
    // not when their turn comes (a held account's mail may wait for days).
    for (const item of [...this.items.values()]) if (!(await this.spool.hasMessage(item.env))) await this.dataLost(item, item.env);
    this.started = true;
    this.log.info('delivery started', { queued: this.items.size, concurrency: this.config.queue.concurrency });
    this.pump();
  }

  /** A message was just queued: try it at once. */
  notify(env: SpooledEnvelope): void {
    if (this.stopping) return; // stays spooled; the next start picks it up
    if (!this.items.has(env.id)) this.add(env);
    this.pump();
  }

  reload(config: Config): void {
    this.config = config;
    this.pump();
  }

  /** Stops taking work and waits (bounded) for in-flight sends; everything else stays spooled. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.clearTimer();
    for (const t of this.parkTimers.values()) clearTimeout(t);
    this.parkTimers.clear();
    if (this.inFlight.size) {
      let t: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        Promise.allSettled([...this.inFlight.values()]).then(() => false),
        new Promise<boolean>((res) => (t = setTimeout(() => res(true), timeoutMs))),
      ]);
      clearTimeout(t);
      if (timedOut) this.log.warn('stop: in-flight sends did not finish in time, they stay spooled and are retried at the next start', { inFlight: this.inFlight.size });
    }
    await this.accounts.flush();
    if (this.started) this.log.info('delivery stopped', { queued: this.items.size });
  }

  /** Writes the rate-limit state now (the CLI before it exits). */
  flush(): Promise<void> {
    return this.accounts.flush();
  }

  stats(): { queued: number; inFlight: number; oldestAgeMs: number | null; held: Record<string, string> } {
    const now = this.now();
    let oldest = Infinity;
    const accounts = new Set(this.config.accounts.map((a) => a.name));
    for (const { env } of this.items.values()) {
      oldest = Math.min(oldest, Date.parse(env.receivedAt));
      accounts.add(env.account);
    }
    const held: Record<string, string> = {};
    for (const a of accounts) {
      const b = this.accountBlock(a, now, false);
      if (b) held[a] = b.until === null ? b.reason : `${b.reason} until ${new Date(b.until).toISOString()}`;
    }
    return { queued: this.items.size, inFlight: this.inFlight.size, oldestAgeMs: oldest === Infinity ? null : Math.max(0, now - oldest), held };
  }

  // ---- what operators see and do ----

  /** Every queued message with its live state (in-flight, or held because its account cannot send). */
  list(): QueuedView[] {
    return [...this.items.values()].sort((a, b) => (a.env.id < b.env.id ? -1 : 1)).map((it) => ({ env: it.env, ...this.view(it) }));
  }

  get(id: string): QueuedView | null {
    const it = this.items.get(id);
    return it ? { env: it.env, ...this.view(it) } : null;
  }

  /**
   * Applies an operator command to one message (queued, failed or corrupt). On a message in
   * flight it waits for the attempt to end and then decides on the result (e.g. a retry then
   * concerns only the recipients still pending).
   */
  command(id: string, e: OperatorEvent): Promise<CommandResult> {
    const item = this.items.get(id);
    if (!item) return this.commandOffQueue(id, e);
    item.locks++;
    const run = item.commands.then(() => this.commandOn(item, e));
    item.commands = run.catch(() => {});
    return run.finally(() => {
      item.locks--;
      if (!item.locks && this.items.get(id) === item) {
        this.schedule(item);
        this.pump();
      }
    });
  }

  /** `queue retry --all`: every queued message now; quota holds only with `force`, operator holds never. */
  async retryAll(force: boolean): Promise<{ retried: number; refused: CommandResult[] }> {
    let retried = 0;
    const refused: CommandResult[] = [];
    for (const it of [...this.items.values()]) {
      if (this.inFlight.has(it.env.id)) continue; // being tried right now
      const r = await this.command(it.env.id, { type: 'retry', force });
      if (r.ok) retried++;
      else if (this.items.has(it.env.id)) refused.push(r);
    }
    return { retried, refused };
  }

  private async commandOn(item: Item, e: OperatorEvent): Promise<CommandResult> {
    const id = item.env.id;
    let waited = false;
    for (;;) {
      const running = this.inFlight.get(id);
      if (running) {
        waited = true;
        await running.catch(() => {});
      }
      if (this.items.get(id) !== item) {
        const where = (await this.spool.getFailed(id)) ? 'it failed and is in failed/' : 'it was delivered';
        return { ok: false, id, message: `${id}: the attempt in flight finished it (${where}); nothing to ${e.type}` };
      }
      if (this.inFlight.has(id)) continue;
      const v = this.view(item);
      const d = transition({ state: v.state, reason: v.reason, rcpts: item.env.rcpts }, e);
      if (d.kind === 'after-attempt') continue;
      if (d.kind === 'refuse') return { ok: false, id, state: v.state, message: `${id}: ${d.message}` };
      if (d.kind === 'same') return { ok: true, id, state: v.state, message: `${id}: already ${describe(v.state, v.reason)}` };
      if (d.state === 'removed') {
        await this.spool.remove(id);
        this.finish(id);
        this.log.info('removed', { id, account: item.env.account, reason: 'deleted by an operator' });
        return { ok: true, id, state: 'removed', message: `${id}: deleted from the queue` };
      }
      const next = this.applied(item.env, d);
      if (!(await this.spool.update(next))) {
        // Only this worker removes queue files: a missing one is lost data, never dropped quietly.
        await this.dataLost(item, item.env);
        return { ok: false, id, state: 'failed', message: `${id}: ${DATA_LOST_TEXT} (its queue file is gone); moved to failed/, notice sent` };
      }
      item.env = next;
      item.heldReason = undefined;
      if (e.type === 'retry') item.bypassQuota = v.state === 'held' && v.reason === 'quota';
      this.log.info(`operator ${e.type}`, { id, account: next.account, state: next.state, ...(next.reason ? { reason: next.reason } : {}) });
      const pending = openRcpts(next.rcpts).length;
      const what =
        e.type === 'retry'
          ? `scheduled for immediate retry (${pending} recipient${pending === 1 ? '' : 's'} pending${waited ? ', after the attempt in flight' : ''})`
          : e.type === 'hold'
            ? 'held (reason operator)'
            : 'released, due now';
      return { ok: true, id, state: next.state, message: `${id}: ${what}` };
    }
  }

  /** Commands on messages in failed/ or corrupt/. */
  private async commandOffQueue(id: string, e: OperatorEvent): Promise<CommandResult> {
    const failed = await this.spool.getFailed(id);
    if (failed) {
      const d = transition({ state: 'failed', reason: null, rcpts: failed.rcpts }, e);
      if (d.kind === 'refuse') return { ok: false, id, state: 'failed', message: `${id}: ${d.message}` };
      if (d.kind !== 'change') return { ok: true, id, state: 'failed', message: `${id}: unchanged` };
      if (d.state === 'removed') {
        await this.spool.removeFailed(id);
        this.log.info('removed', { id, account: failed.account, reason: 'deleted from failed/ by an operator' });
        return { ok: true, id, state: 'removed', message: `${id}: deleted from failed/` };
      }
      const next = this.applied(failed, d);
      if (!(await this.spool.requeueFailed(next))) return { ok: false, id, message: `${id}: left failed/ meanwhile` };
      const queued = (await this.spool.get(id)) ?? next;
      this.add(queued);
      this.log.info('operator retry', { id, account: next.account, state: next.state, from: 'failed/' });
      this.pump();
      const n = openRcpts(next.rcpts).length;
      return { ok: true, id, state: next.state, message: `${id}: moved back from failed/ and scheduled for immediate retry (${n} recipient${n === 1 ? '' : 's'})` };
    }
    if ((await this.spool.listCorrupt()).some((c) => c.id === id)) {
      const d = transition({ state: 'corrupt', reason: null, rcpts: [] }, e);
      if (d.kind === 'change' && d.state === 'removed') {
        await this.spool.removeCorrupt(id);
        this.log.info('removed', { id, reason: 'corrupt envelope deleted by an operator' });
        return { ok: true, id, state: 'removed', message: `${id}: deleted from corrupt/` };
      }
      return { ok: false, id, state: 'corrupt', message: `${id}: ${d.kind === 'refuse' ? d.message : 'unchanged'}` };
    }
    return { ok: false, id, message: `no message with id ${id}` };
  }

  /** The envelope after a decided change (not for 'removed'). */
  private applied(env: SpooledEnvelope, d: Change): SpooledEnvelope {
    const { failReason: _f, failedAt: _a, ...rest } = env;
    const base = d.state === 'failed' ? env : rest;
    return {
      ...base,
      state: d.state as SpooledEnvelope['state'],
      reason: d.state === 'held' ? d.reason : null,
      rcpts: d.rcpts,
      ...(d.dueNow ? { nextAttemptAt: new Date(this.now()).toISOString() } : d.nextAttemptAt ? { nextAttemptAt: d.nextAttemptAt } : {}),
      ...(d.lastReply !== undefined ? { lastReply: d.lastReply } : {}),
    };
  }

  /** Live state: in flight, the stored state, or held because the account cannot send now. */
  private view(it: Item): { state: MessageState; reason: HoldReason | null; waiting?: string } {
    if (this.inFlight.has(it.env.id)) return { state: 'in-flight', reason: null };
    if (it.heldReason === 'rate-limit' && it.waiting) return { state: it.env.state, reason: it.env.reason, waiting: it.waiting };
    const { state, reason } = it.env;
    if (waitsForOperator(it.env)) return { state, reason };
    if (this.health.state(it.env.account) === 'needs-reauth') return { state: 'held', reason: 'needs-reauth' };
    if (!it.bypassQuota && this.accounts.quotaHoldUntil(it.env.account, this.now()) !== null) return { state: 'held', reason: 'quota' };
    // Held for a reason that has ended: it goes with the next run.
    if (state === 'held') return { state: it.env.attempts ? 'deferred' : 'queued', reason: null };
    return { state, reason };
  }

  // ---- scheduling ----

  private add(env: SpooledEnvelope): void {
    const item: Item = { env, gen: 0, locks: 0, commands: Promise.resolve() };
    this.items.set(env.id, item);
    this.schedule(item);
  }

  /** (Re)enters a message into the due-time index, unless it waits for an operator. */
  private schedule(item: Item, at?: number): void {
    item.gen++;
    if (waitsForOperator(item.env)) return;
    if (item.env.state === 'failed' || this.inFlight.has(item.env.id)) return;
    const t = Date.parse(item.env.nextAttemptAt);
    this.due.push({ at: at ?? (Number.isNaN(t) ? 0 : t), id: item.env.id, gen: item.gen });
  }

  /** Starts every due message there is capacity for, then sleeps until the next one is due. */
  private pump(): void {
    if (this.stopping || !this.started) return;
    const now = this.now();
    const max = this.config.queue.concurrency;
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
      const block = this.accountBlock(item.env.account, now, item.bypassQuota === true, openRcpts(item.env.rcpts).length);
      if (block) {
        this.park(item, block);
        continue;
      }
      if (item.env.state === 'held') {
        // Held for its account (quota, needs-reauth) and the account can send again.
        const d = transition({ state: 'held', reason: item.env.reason, rcpts: item.env.rcpts }, { type: 'account-ok' });
        if (d.kind === 'change') item.env = this.applied(item.env, d);
      }
      this.startSend(item, now);
    }
    this.arm(this.inFlight.size < max ? (this.due.peek()?.at ?? Infinity) : Infinity, now);
  }

  private arm(at: number, now: number): void {
    if (at === this.timerAt && this.timer) return;
    this.clearTimer();
    if (at === Infinity) return;
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.pump();
    }, Math.min(MAX_TIMER, Math.max(0, at - now)));
    this.timer.unref();
  }

  /** A due message whose account cannot send: waits with the account's other mail until the block ends. */
  private park(item: Item, block: Block): void {
    const account = item.env.account;
    let set = this.parked.get(account);
    if (!set) this.parked.set(account, (set = new Set()));
    set.add(item.env.id);
    item.gen++;
    this.markHeld(item, block);
    if (block.until !== null && !this.parkTimers.has(account)) {
      const t = setTimeout(() => {
        this.parkTimers.delete(account);
        this.unpark(account);
        this.pump();
      }, Math.min(MAX_TIMER, Math.max(0, block.until - this.now())));
      t.unref();
      this.parkTimers.set(account, t);
    }
  }

  private unpark(account: string): void {
    const set = this.parked.get(account);
    if (!set) return;
    this.parked.delete(account);
    for (const id of set) {
      const item = this.items.get(id);
      if (item && !this.inFlight.has(id)) this.schedule(item);
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  /** Why an account's mail must wait now, and until when (null: until something changes). */
  private accountBlock(account: string, now: number, bypassQuota: boolean, recipients = 1): Block | null {
    const acct = this.config.accounts.find((a) => a.name === account);
    if (!acct) return { reason: 'account not configured', until: null };
    if (this.health.state(account) === 'needs-reauth') return { reason: 'needs-reauth', until: null };
    const hold = this.health.holdReason?.(account);
    if (hold) return hold;
    const quota = this.accounts.quotaHoldUntil(account, now);
    if (quota !== null && !bypassQuota) return { reason: 'quota', until: quota };
    const perMinute = acct.limits.messagesPerMinute;
    const minute = perMinute ? this.accounts.minuteBlockedUntil(account, perMinute, now) : null;
    if (minute !== null) return { reason: 'rate-limit', until: minute, why: `limits.messagesPerMinute ${perMinute} reached` };
    const perDay = acct.limits.messagesPerDay;
    const rate = perDay ? this.accounts.blockedUntil(account, perDay, now) : null;
    if (rate !== null) return { reason: 'rate-limit', until: rate, why: `limits.messagesPerDay ${perDay} reached` };
    const rcptsPerDay = acct.limits.recipientsPerDay;
    const rcpts = rcptsPerDay ? this.accounts.recipientsBlockedUntil(account, rcptsPerDay, recipients, now) : null;
    if (rcpts !== null)
      return { reason: 'rate-limit', until: rcpts, why: `limits.recipientsPerDay ${rcptsPerDay}: ${this.accounts.recipients(account, now)} sent in 24 h, this message has ${recipients}` };
    return null;
  }

  private markHeld(item: Item, block: Block): void {
    item.waiting = block.why ? `${block.why}${block.until !== null ? `; waits until ${new Date(block.until).toISOString()}` : ''}` : undefined;
    if (item.heldReason === block.reason) return;
    item.heldReason = block.reason;
    this.event('held', item.env, { reason: block.reason, ...(block.until !== null ? { until: new Date(block.until).toISOString() } : {}), ...(block.why ? { why: block.why } : {}) });
  }

  private onHealthChange(account: string, state: HealthState): void {
    if (state === 'ok') {
      // The hold ended: held and deferred mail of the account is due at once.
      let n = 0;
      for (const item of this.items.values()) {
        if (item.env.account !== account || this.inFlight.has(item.env.id)) continue;
        const d = transition({ state: item.env.state, reason: item.env.reason, rcpts: item.env.rcpts }, { type: 'account-ok' });
        item.heldReason = undefined;
        if (d.kind === 'change') {
          item.env = this.applied(item.env, d); // memory only: after a restart it is due at once anyway
          n++;
        }
        if (!item.locks) this.schedule(item, this.now());
      }
      this.parked.delete(account);
      if (n) this.log.info('account usable again, retrying its mail now', { account, messages: n });
    }
    this.pump();
  }

  // ---- one attempt ----

  private startSend(item: Item, now: number): void {
    const id = item.env.id;
    item.heldReason = undefined;
    const stamp = this.accounts.reserve(item.env.account, now, openRcpts(item.env.rcpts).length);
    const run = this.attempt(item, stamp)
      .catch((err) => {
        // Bookkeeping failed (spool I/O): keep the message and try again later.
        const retryAt = this.now() + this.config.queue.retry[0];
        item.env = { ...item.env, nextAttemptAt: new Date(retryAt).toISOString() };
        this.log.error('delivery bookkeeping failed, message kept for a later attempt', { id, account: item.env.account, err });
      })
      .finally(() => {
        this.inFlight.delete(id);
        if (this.items.get(id) === item && !item.locks) this.schedule(item);
        this.pump();
      });
    this.inFlight.set(id, run);
  }

  private async attempt(item: Item, stamp: number): Promise<void> {
    const env = item.env;
    const bypassQuota = item.bypassQuota === true;
    item.bypassQuota = false;
    // `attempts` drives the backoff (auth and quota holds do not count); the log reports every try.
    const attempt = triesOf(env) + 1;
    const send: Envelope = sendView(env);
    const source = this.spool.message(env);
    if (!source.bytes && !(await this.spool.hasMessage(env))) {
      this.accounts.release(env.account, stamp);
      await this.dataLost(item, env);
      return;
    }
    let r: SendResult;
    try {
      r = await this.upstream!.send(send, source);
    } catch (err) {
      r = { outcome: 'transient', response: `local error: ${(err as Error)?.message ?? String(err)}`, accepted: [], rejected: [] };
    }
    this.metrics?.upstreamReply(env.account, r.outcome);
    const now = this.now();
    if (!r.accepted.length && r.outcome !== 'ok') this.accounts.release(env.account, stamp);
    else this.accounts.settle(env.account, stamp, r.accepted.length);
    const q = this.config.queue;
    const expiresAt = Date.parse(env.receivedAt) + q.maxAge;
    const base = q.retry[Math.min(env.attempts, q.retry.length - 1)];
    // The last try happens at maxAge, so a message is never bounced before its time.
    const retryAt = Math.min(Math.max(now + Math.round(base * (0.9 + Math.random() * 0.2)), now + (r.retryAfterMs ?? 0)), expiresAt);
    const d = transition(
      { state: 'in-flight', reason: null, rcpts: env.rcpts },
      {
        type: 'outcome',
        outcome: r.outcome,
        response: r.response,
        accepted: r.accepted,
        rejected: r.rejected,
        retryAt: new Date(retryAt).toISOString(),
        ...(now >= expiresAt ? { expiry: `gave up after ${formatDuration(q.maxAge)} in the queue: ${r.response}` } : {}),
      },
    );
    if (d.kind !== 'change') throw new Error(`unexpected decision ${d.kind} for an attempt's outcome`);
    const counted = d.countAttempt ? env.attempts + 1 : env.attempts;
    const next: SpooledEnvelope = { ...this.applied(env, d), attempts: counted, ...(attempt !== counted ? { tries: attempt } : {}) };
    const accepted = d.rcpts.filter((x, i) => x.status === 'accepted' && env.rcpts[i]?.status !== 'accepted');

    // 1. Recipients Gmail accepted are never sent again: persist that first.
    if (accepted.length) {
      if (this.accounts.clearQuotaHold(env.account)) {
        this.log.info('quota hold lifted: Gmail accepted mail again', { account: env.account });
        this.unpark(env.account);
      }
      if (d.state === 'removed' && !d.bounce?.length) {
        await this.spool.remove(env.id);
        this.finish(env.id);
        this.event('delivered', next, { rcpts: accepted.length, attempt, reply: r.response, status: 'sent' });
        return;
      }
      const acceptedOnly = { ...env, rcpts: env.rcpts.map((x, i) => (d.rcpts[i].status === 'accepted' ? d.rcpts[i] : x)) };
      if (!(await this.persist(item, acceptedOnly))) return;
      this.event('delivered', next, { rcpts: accepted.length, attempt, reply: r.response, status: 'partial', pending: openRcpts(next.rcpts).length });
    }

    // 2. Permanent refusals bounce (per-recipient rejections always; everything left on a permanent outcome or expiry).
    if (d.bounce?.length) {
      const reason = d.state === 'failed' ? (d.failReason && d.failReason !== r.response ? `expired after ${formatDuration(q.maxAge)}` : 'permanent failure') : 'recipient rejected';
      await this.bounce(env, bounceList(d.bounce, d.failReason !== r.response && d.state === 'failed' ? '4.4.7' : '5.0.0'), { attempt, reason });
    }

    // 3. The message's new state.
    if (d.state === 'removed') {
      await this.spool.remove(env.id);
      this.finish(env.id);
      return;
    }
    if (d.state === 'failed') {
      if (!(await this.spool.fail(next, d.failReason ?? r.response))) await this.dataLost(item, next);
      this.finish(env.id);
      return;
    }
    if (d.state === 'held' && d.reason === 'quota') {
      const until = now + q.quotaHold;
      if (this.accounts.quotaHoldUntil(env.account, now) === null) {
        this.log.warn("Gmail daily sending limit reached: holding this account's mail (no bounce)", {
          account: env.account,
          until: new Date(until).toISOString(),
          reply: r.response,
          ...(bypassQuota ? { retriedByOperator: true } : {}),
        });
      }
      this.accounts.setQuotaHold(env.account, until);
      await this.maybeWarn(next, now);
      if (!(await this.persist(item, next))) return;
      item.heldReason = 'quota';
      this.event('held', next, { reason: 'quota', until: new Date(until).toISOString(), reply: r.response });
      return;
    }
    if (d.state === 'held' && d.reason === 'transport') {
      if (!(await this.persist(item, next))) return;
      item.heldReason = 'transport';
      this.event('held', next, { reason: 'transport', reply: r.response });
      return;
    }
    if (d.state === 'held') {
      this.health.markNeedsReauth(env.account, r.response);
      // Should the account still report ok, do not spin: look again after the first retry step.
      next.nextAttemptAt = new Date(now + q.retry[0]).toISOString();
      await this.maybeWarn(next, now);
      if (!(await this.persist(item, next))) return;
      item.heldReason = 'needs-reauth';
      this.event('held', next, { reason: 'needs-reauth', reply: r.response });
      return;
    }
    await this.maybeWarn(next, now);
    if (!(await this.persist(item, next))) return;
    this.event('deferred', next, { attempt, retryIn: Date.parse(next.nextAttemptAt) - now, nextAttemptAt: next.nextAttemptAt, reply: r.response });
  }

  /** Once per message, after queue.delayWarning: tell the sender it is late but still being tried. */
  private async maybeWarn(env: SpooledEnvelope, now: number): Promise<void> {
    const after = this.config.queue.delayWarning;
    if (after === false || env.warned || env.isBounce || env.mailFrom === '') return;
    if (now - Date.parse(env.receivedAt) < after) return;
    const reply = env.lastReply ?? 'delivery delayed';
    await this.bounce(env, openRcpts(env.rcpts).map((x) => ({ rcpt: x.address, status: statusFromReply(reply, '4.0.0'), action: 'delayed', diagnostic: reply })), {
      retryUntil: new Date(Date.parse(env.receivedAt) + this.config.queue.maxAge),
      reason: 'delay warning',
    });
    env.warned = true;
  }

  /** Queues a DSN (failed or delayed) to the sender or bounceTo; never for a bounce. */
  private async bounce(env: SpooledEnvelope, recipients: DsnRecipient[], ctx: { attempt?: number; reason: string; retryUntil?: Date }): Promise<void> {
    const delayed = recipients.every((r) => r.action === 'delayed');
    const meta: Meta = { rcpts: recipients.length, reason: ctx.reason, reply: recipients[0]?.diagnostic, ...(ctx.attempt ? { attempt: ctx.attempt } : {}) };
    if (env.isBounce || env.mailFrom === '') {
      if (!delayed) this.event('bounced', env, { ...meta, dsn: 'none (the message is itself a bounce)' });
      return;
    }
    const bounceTo = this.config.queue.bounceTo;
    const to = bounceTo === 'sender' ? env.mailFrom : bounceTo;
    const acct = this.config.accounts.find((a) => a.name === env.account);
    const dsn = await buildDsn({
      env,
      original: this.spool.message(env),
      reportingMta: this.host,
      recipients,
      from: `Mail Delivery Subsystem <${acct?.email ?? `MAILER-DAEMON@${this.host}`}>`,
      to,
      retryUntil: ctx.retryUntil,
      remoteMta: acct?.upstream.host,
    });
    const queued = await this.spool.receive([dsn], {
      user: null,
      account: env.account,
      mailFrom: '',
      rcptTo: [to],
      clientIp: '127.0.0.1',
      bodyType: dsn.some((b) => b > 0x7f) ? '8bitmime' : '7bit',
      smtputf8: /[^\x00-\x7f]/.test(to),
      isBounce: true,
    });
    this.add(queued);
    this.event(delayed ? 'delay-warning' : 'bounced', env, { ...meta, dsn: queued.id, to });
  }

  /**
   * Rewrites the envelope after an attempt; false when the queue file is gone. Nothing else
   * removes it while an attempt is in flight (operator commands wait for the attempt), so its
   * data was lost: the message fails as data-lost.
   */
  private async persist(item: Item, env: SpooledEnvelope): Promise<boolean> {
    if (await this.spool.update(env)) {
      item.env = env;
      return true;
    }
    await this.dataLost(item, env);
    return false;
  }

  /**
   * An acknowledged message whose queue file is gone is never dropped quietly: one error line
   * (id, sender, recipients), counted, a notice to bounceTo, its envelope in failed/ (data-lost).
   */
  private async dataLost(item: Item, env: SpooledEnvelope): Promise<void> {
    const d = transition({ state: env.state, reason: env.reason, rcpts: env.rcpts }, { type: 'data-lost' });
    if (d.kind !== 'change') return;
    // The notice first: a crash before the move repeats it at the next start rather than losing it.
    if (d.bounce?.length) await this.bounce(env, bounceList(d.bounce, '5.3.0'), { reason: 'data lost' });
    const failed: FailedEnvelope = { ...this.applied(env, d), state: 'failed', failReason: d.failReason!, failCode: d.failCode, failedAt: new Date(this.now()).toISOString() };
    await this.spool.failLost(failed);
    this.finish(env.id);
    this.metrics?.dataLost?.(env.account);
    this.log.error(`${DATA_LOST_TEXT}: the queue file of acknowledged message ${env.id} is gone; moved to failed/ (data-lost), notice sent to ${this.config.queue.bounceTo}`, {
      id: env.id,
      account: env.account,
      user: env.user,
      from: env.mailFrom,
      rcpts: d.bounce?.map((b) => b.rcpt) ?? [],
      size: env.size,
      receivedAt: env.receivedAt,
      file: this.spool.message(env).path,
    });
    this.pump(); // the notice is due now
  }

  private finish(id: string): void {
    this.items.delete(id);
  }

  private event(name: string, env: SpooledEnvelope, extra: Meta): void {
    if (name === 'delivered') this.metrics?.delivered(env.account, Number(extra.rcpts ?? 0));
    else if (name === 'deferred') this.metrics?.deferred(env.account);
    else if (name === 'bounced') this.metrics?.bounced(env.account);
    // A deferral or a bounce is what `journalctl -p warning` should show: one line per event.
    this.log[name === 'deferred' || name === 'bounced' ? 'warn' : 'info'](name, {
      id: env.id,
      account: env.account,
      user: env.user,
      from: env.mailFrom,
      rcpts: openRcpts(env.rcpts).length,
      size: env.size,
      attempt: triesOf(env),
      delay: Math.max(0, this.now() - Date.parse(env.receivedAt)),
      ...extra,
    });
  }
}

/** Upstream attempts so far, counted or not (envelopes written before `tries` existed hold only `attempts`). */
function triesOf(env: SpooledEnvelope): number {
  return Math.max(env.tries ?? 0, env.attempts);
}

/** What the upstream is handed: the message and only the recipients still to send. */
export function sendView(env: SpooledEnvelope): Envelope {
  return {
    id: env.id,
    user: env.user,
    account: env.account,
    mailFrom: env.mailFrom,
    rcptTo: openRcpts(env.rcpts).map((r) => r.address),
    size: env.size,
    clientIp: env.clientIp,
    bodyType: env.bodyType,
    smtputf8: env.smtputf8,
    receivedAt: env.receivedAt,
    ...(env.isBounce ? { isBounce: true } : {}),
  };
}

function bounceList(b: Bounce[], fallback: string): DsnRecipient[] {
  return b.map((x) => ({ rcpt: x.rcpt, status: statusFromReply(x.reply, fallback), action: 'failed', diagnostic: x.reply }));
}

function describe(state: MessageState, reason: HoldReason | null): string {
  return state === 'held' && reason ? `held (${reason})` : state;
}

export type { Recipient };
