// Owns: the delivery stage's wiring and one attempt. It loads the spool, lets the scheduler
// pick due messages, hands each to the upstream, and has transition() decide on the result,
// which outcome.ts persists before acting on it: a crash at any point resends at most the
// recipients that were in flight, and never loses one. Account events (held, usable again,
// a rate-limit park) and operator commands go through commands.ts: transition(), persisted.
// Never does: decide a state itself, write queue files but through the spool's API, or
// render a hold for operators (commands.ts and the edges do).
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { formatDuration } from '../config/units.js';
import type { Logger } from '../log/logger.js';
import type { Spool } from '../spool/spool.js';
import type {
  AccountHealth,
  HealthState,
  HoldReason,
  MessageState,
  SendResult,
  SpooledEnvelope,
  Upstream,
} from '../types.js';
import { AccountState } from './accountState.js';
import { Commands, type CommandResult, type OperatorEvent } from './commands.js';
import { Outcomes, triesOf, type DeliveryMetrics } from './outcome.js';
import { Scheduler, type Block, type Item } from './scheduler.js';
import { openRcpts, sendView, transition } from './transition.js';

export type { CommandResult, OperatorEvent } from './commands.js';
export type { DeliveryMetrics } from './outcome.js';

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

/** A message as operators see it: its stored envelope and its live state. */
export interface QueuedView {
  env: SpooledEnvelope;
  state: MessageState;
  reason: HoldReason | null;
  /** Why a due message is not sent yet (a sending limit), when it is parked. */
  waiting?: string;
}

export class DeliveryWorker {
  private config: Config;
  private readonly log: Logger;
  private readonly spool: Spool;
  private readonly upstream: Upstream | null;
  private readonly health: AccountHealth;
  private readonly now: () => number;
  private readonly accounts: AccountState;
  private readonly scheduler: Scheduler;
  private readonly outcomes: Outcomes;
  private readonly commands: Commands;
  /** When an account's quota window ends, its held mail is made due again (persisted). */
  private readonly quotaTimers = new Map<string, NodeJS.Timeout>();
  private stopping = false;
  private started = false;
  private loaded = false;

  constructor(opts: DeliveryWorkerOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'delivery' });
    this.spool = opts.spool;
    this.upstream = opts.upstream;
    this.health = opts.health;
    this.now = opts.now ?? Date.now;
    this.accounts = new AccountState(join(this.spool.dir, '.ratelimit.json'), this.log);
    const config = () => this.config;
    this.scheduler = new Scheduler({
      config,
      health: this.health,
      accounts: this.accounts,
      now: this.now,
      start: (item, now) => this.startSend(item, now),
      parked: (item, block) => this.markHeld(item, block),
      added: (item) => this.added(item),
    });
    const { log, spool, health, accounts, scheduler, now } = this;
    this.outcomes = new Outcomes({
      config,
      log,
      spool,
      health,
      accounts,
      scheduler,
      now,
      host: opts.hostname ?? hostname(),
      metrics: opts.metrics,
      accountChanged: (account) => void this.reconcile(account),
    });
    this.commands = new Commands({ log, spool, scheduler, outcomes: this.outcomes, view: (it) => this.view(it) });
    this.health.onChange((account, state) => this.onHealthChange(account, state));
  }

  private get items(): Map<string, Item> {
    return this.scheduler.items;
  }

  /**
   * Reads every spooled message (and the rate-limit state) without sending anything, and
   * brings each one's stored state in line with its account (held while it cannot send).
   */
  async load(): Promise<void> {
    await this.accounts.load();
    for (const env of await this.spool.list()) if (!this.items.has(env.id)) this.scheduler.add(env);
    this.loaded = true;
    const accounts = new Set([...this.items.values()].map((it) => it.env.account));
    for (const account of accounts) await this.reconcile(account);
  }

  /** Loads every spooled message, including ones that were being sent when the process died, and starts sending. */
  async start(): Promise<void> {
    if (!this.upstream) throw new Error('a worker without an upstream cannot start delivering');
    await this.load(); // errors propagate: a daemon that cannot read its spool must not start
    // Acknowledged messages whose data is gone (init() keeps their envelopes) are reported now,
    // not when their turn comes (a held account's mail may wait for days).
    for (const item of [...this.items.values()])
      if (!(await this.spool.hasMessage(item.env))) await this.outcomes.dataLost(item.env);
    this.started = true;
    this.log.info('delivery started', { queued: this.items.size, concurrency: this.config.queue.concurrency });
    this.scheduler.run();
  }

  /** A message was just queued: try it at once. */
  notify(env: SpooledEnvelope): void {
    if (this.stopping) return; // stays spooled; the next start picks it up
    if (!this.items.has(env.id)) this.scheduler.add(env);
    this.scheduler.pump();
  }

  reload(config: Config): void {
    this.config = config;
    this.scheduler.pump();
  }

  /** Stops taking work and waits (bounded) for in-flight sends; everything else stays spooled. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.scheduler.halt();
    for (const t of this.quotaTimers.values()) clearTimeout(t);
    this.quotaTimers.clear();
    const inFlight = this.scheduler.inFlight;
    if (inFlight.size) {
      let t: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        Promise.allSettled([...inFlight.values()]).then(() => false),
        new Promise<boolean>((res) => (t = setTimeout(() => res(true), timeoutMs))),
      ]);
      clearTimeout(t);
      if (timedOut)
        this.log.warn(
          'stop: in-flight sends did not finish in time, they stay spooled and are retried at the next start',
          { inFlight: inFlight.size },
        );
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
      const b = this.scheduler.accountBlock(a, now, false);
      if (b) held[a] = b.until === null ? b.reason : `${b.reason} until ${new Date(b.until).toISOString()}`;
    }
    const age = oldest === Infinity ? null : Math.max(0, now - oldest);
    return { queued: this.items.size, inFlight: this.scheduler.inFlight.size, oldestAgeMs: age, held };
  }

  // ---- what operators see and do ----

  /** Every queued message with its live state (in-flight, or held because its account cannot send). */
  list(): QueuedView[] {
    return [...this.items.values()]
      .sort((a, b) => (a.env.id < b.env.id ? -1 : 1))
      .map((it) => ({ env: it.env, ...this.view(it) }));
  }

  get(id: string): QueuedView | null {
    const it = this.items.get(id);
    return it ? { env: it.env, ...this.view(it) } : null;
  }

  /** See Commands.command. */
  command(id: string, e: OperatorEvent): Promise<CommandResult> {
    return this.commands.command(id, e);
  }

  /** `queue retry --all`: every queued message now; quota holds only with `force`, operator holds never. */
  retryAll(force: boolean): Promise<{ retried: number; refused: CommandResult[] }> {
    return this.commands.retryAll(force);
  }

  /** Live state: in flight, else as stored (account holds are stored too); `waiting` when a sending limit parks it. */
  private view(it: Item): { state: MessageState; reason: HoldReason | null; waiting?: string } {
    if (this.scheduler.inFlight.has(it.env.id)) return { state: 'in-flight', reason: null };
    const { state, reason } = it.env;
    return { state, reason, ...(it.heldReason === 'rate-limit' && it.waiting ? { waiting: it.waiting } : {}) };
  }

  /** Why the account cannot send, as a hold reason for its mail (null: it can). `bypass`: an operator's retry --force goes through a quota hold. */
  private accountHold(account: string, bypass = false): 'needs-reauth' | 'quota' | null {
    if (this.health.state(account) === 'needs-reauth') return 'needs-reauth';
    if (!bypass && this.accounts.quotaHoldUntil(account, this.now()) !== null) return 'quota';
    return null;
  }

  /**
   * Brings the stored state of the account's mail in line with the account, each change
   * decided by transition() and persisted: held while it cannot send, due again once it can
   * (`deferredToo`: its deferred mail as well, after a re-authorization). Returns how many changed.
   */
  private async reconcile(account: string, deferredToo = false): Promise<number> {
    const hold = this.accountHold(account);
    if (hold === 'quota') this.armQuotaEnd(account);
    const changes: Promise<boolean>[] = [];
    for (const item of this.items.values()) {
      if (item.env.account !== account || this.scheduler.inFlight.has(item.env.id)) continue;
      const h = hold === 'quota' && item.bypassQuota ? null : hold;
      if (h) changes.push(this.commands.account(item, { type: 'account-hold', reason: h }));
      else if (item.env.state === 'held' || deferredToo)
        changes.push(this.commands.account(item, { type: 'account-ok' }));
    }
    return (await Promise.all(changes)).filter(Boolean).length;
  }

  /** At the end of the account's quota window its held mail is due again. */
  private armQuotaEnd(account: string): void {
    if (this.stopping || this.quotaTimers.has(account)) return;
    const until = this.accounts.quotaHoldUntil(account, this.now());
    if (until === null) return;
    const t = setTimeout(
      () => {
        this.quotaTimers.delete(account);
        void this.reconcile(account);
      },
      Math.min(2 ** 31 - 1, Math.max(0, until - this.now())),
    );
    t.unref();
    this.quotaTimers.set(account, t);
  }

  /** A message entered the queue (received, a DSN, back from failed/): held at once if its account cannot send. */
  private added(item: Item): void {
    if (!this.loaded) return; // load() reconciles every account at once
    const hold = this.accountHold(item.env.account, item.bypassQuota);
    if (hold) void this.commands.account(item, { type: 'account-hold', reason: hold });
  }

  /** A due message its account cannot send now: logged once per reason; a rate-limit park is persisted (its next try). */
  private markHeld(item: Item, block: Block): void {
    const until = block.until !== null ? new Date(block.until).toISOString() : undefined;
    if (block.reason === 'rate-limit' && until) void this.commands.account(item, { type: 'park', until });
    item.waiting = block.why ? `${block.why}${until ? `; waits until ${until}` : ''}` : undefined;
    if (item.heldReason === block.reason) return;
    item.heldReason = block.reason;
    this.outcomes.event('held', item.env, {
      reason: block.reason,
      ...(until ? { until } : {}),
      ...(block.why ? { why: block.why } : {}),
    });
  }

  private onHealthChange(account: string, state: HealthState): void {
    if (state === 'ok') {
      // The hold ended: held and deferred mail of the account is due at once (contract), persisted first.
      for (const item of this.items.values()) if (item.env.account === account) item.heldReason = undefined;
      this.scheduler.forgetParked(account);
    }
    void this.reconcile(account, state === 'ok').then((n) => {
      if (n && state === 'ok') this.log.info('account usable again, retrying its mail now', { account, messages: n });
      this.scheduler.pump();
    });
  }

  // ---- one attempt ----

  private startSend(item: Item, now: number): void {
    const id = item.env.id;
    item.heldReason = undefined;
    const stamp = this.accounts.reserve(item.env.account, now, openRcpts(item.env.rcpts).length);
    const run = this.attempt(item, stamp)
      .catch((err) => {
        // Bookkeeping failed (spool I/O): keep the message as stored and look again later.
        item.notBefore = this.now() + this.config.queue.retry[0];
        this.log.error('delivery bookkeeping failed, message kept for a later attempt', {
          id,
          account: item.env.account,
          err,
        });
      })
      .finally(() => {
        this.scheduler.inFlight.delete(id);
        if (this.items.get(id) === item && !item.locks) this.scheduler.schedule(item);
        this.scheduler.pump();
      });
    this.scheduler.inFlight.set(id, run);
  }

  private async attempt(item: Item, stamp: number): Promise<void> {
    if (item.env.state === 'held') {
      // Held for its account (quota, needs-reauth) and the account can send again: persisted before the send.
      const d = transition({ state: 'held', reason: item.env.reason, rcpts: item.env.rcpts }, { type: 'account-ok' });
      if (d.kind === 'change' && !(await this.outcomes.persist(item, this.outcomes.applied(item.env, d)))) {
        this.accounts.release(item.env.account, stamp);
        return;
      }
    }
    const start = transition(
      { state: item.env.state, reason: item.env.reason, rcpts: item.env.rcpts },
      { type: 'start' },
    );
    if (start.kind !== 'change') {
      // The scheduler never picks such a message (held for an operator, or failed); should it, it is not sent.
      this.accounts.release(item.env.account, stamp);
      this.log.error('delivery: a message that cannot be sent was picked; left as it is', {
        id: item.env.id,
        state: item.env.state,
        reason: item.env.reason,
      });
      return;
    }
    const env = item.env;
    const bypassQuota = item.bypassQuota === true;
    item.bypassQuota = false;
    // `attempts` drives the backoff (auth and quota holds do not count); the log reports every try.
    const attempt = triesOf(env) + 1;
    const source = this.spool.message(env);
    if (!source.bytes && !(await this.spool.hasMessage(env))) {
      this.accounts.release(env.account, stamp);
      await this.outcomes.dataLost(env);
      return;
    }
    let r: SendResult;
    try {
      r = await this.upstream!.send(sendView(env), source);
    } catch (err) {
      r = {
        outcome: 'transient',
        response: `local error: ${(err as Error)?.message ?? String(err)}`,
        accepted: [],
        rejected: [],
      };
    }
    this.outcomes.metricsReply(env.account, r.outcome);
    const now = this.now();
    if (!r.accepted.length && r.outcome !== 'ok') this.accounts.release(env.account, stamp);
    else this.accounts.settle(env.account, stamp, r.accepted.length);
    const q = this.config.queue;
    const expiresAt = Date.parse(env.receivedAt) + q.maxAge;
    const base = q.retry[Math.min(env.attempts, q.retry.length - 1)];
    // The last try happens at maxAge, so a message is never bounced before its time.
    const retryAt = Math.min(
      Math.max(now + Math.round(base * (0.9 + Math.random() * 0.2)), now + (r.retryAfterMs ?? 0)),
      expiresAt,
    );
    const d = transition(
      { state: 'in-flight', reason: null, rcpts: env.rcpts },
      {
        type: 'outcome',
        outcome: r.outcome,
        response: r.response,
        accepted: r.accepted,
        rejected: r.rejected,
        retryAt: new Date(retryAt).toISOString(),
        // Should the account still report ok after a refused login, do not spin: look again after the first retry step.
        recheckAt: new Date(now + q.retry[0]).toISOString(),
        ...(now >= expiresAt
          ? { expiry: `gave up after ${formatDuration(q.maxAge)} in the queue: ${r.response}` }
          : {}),
      },
    );
    if (d.kind !== 'change') throw new Error(`unexpected decision ${d.kind} for an attempt's outcome`);
    await this.outcomes.attemptEnded({ item, env, result: r, attempt, bypassQuota, now }, d);
  }
}
