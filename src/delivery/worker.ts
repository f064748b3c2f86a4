// The delivery stage: takes due messages from the spool, hands them to the upstream and acts
// on the classified outcome (deliver, defer with backoff, hold the account, bounce). Every
// decision is persisted in the envelope before the next step, so a crash at any point
// resends at most the recipients that were in flight, and never loses one.
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { formatDuration } from '../config/units.js';
import type { Logger, Meta } from '../log/logger.js';
import type { Spool } from '../spool/spool.js';
import type { AccountHealth, AccountState as HealthState, Envelope, SendResult, Upstream } from '../types.js';
import { AccountState } from './accountState.js';
import { buildDsn, statusFromReply, type DsnRecipient } from './bounce.js';

export interface DeliveryWorkerOptions {
  config: Config;
  log: Logger;
  spool: Spool;
  upstream: Upstream;
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
}

interface Item {
  env: Envelope;
  /** Due now regardless of nextAttemptAt (the account was re-authorized). Memory only. */
  forceAt?: number;
  /** An operator's `queue retry` of this message: try it even while the account is quota-held. */
  bypassQuota?: boolean;
  /** Last hold reason logged, so a waiting message logs 'held' once per reason. */
  heldReason?: string;
  /** Order of arrival in memory, to tell items added during a spool listing. */
  seq: number;
}

interface Block {
  reason: string;
  until: number | null;
}

const MAX_TIMER = 2 ** 31 - 1;

export class DeliveryWorker {
  private config: Config;
  private readonly log: Logger;
  private readonly spool: Spool;
  private readonly upstream: Upstream;
  private readonly health: AccountHealth;
  private readonly now: () => number;
  private readonly host: string;
  private readonly metrics?: DeliveryMetrics;
  private readonly accounts: AccountState;
  private readonly items = new Map<string, Item>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private timer?: NodeJS.Timeout;
  private stopping = false;
  private started = false;
  private rescanChain: Promise<void> = Promise.resolve();
  /** Ids finished while a spool listing was being read, so a stale listing does not bring them back. */
  private finishedDuringScan: Set<string> | null = null;
  private addSeq = 0;

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

  /** Loads every spooled message, including ones that were being sent when the process died. */
  async start(): Promise<void> {
    await this.accounts.load();
    this.started = true;
    await this.scan(); // errors propagate: a daemon that cannot read its spool must not start
    this.log.info('delivery started', { queued: this.items.size, concurrency: this.config.queue.concurrency });
  }

  /** A message was just queued: try it at once. */
  notify(env: Envelope): void {
    if (this.stopping) return; // stays spooled; the next start picks it up
    if (!this.items.has(env.id)) this.add(env);
    if (this.started) this.pump();
  }

  /** Re-reads the spool after a CLI command changed it (retry, delete). Never rejects: errors are logged. */
  rescan(): Promise<void> {
    const run = this.rescanChain.then(() => this.scan()).catch((err) => this.log.error('spool rescan failed', { err }));
    this.rescanChain = run;
    return run;
  }

  reload(config: Config): void {
    this.config = config;
    this.pump();
  }

  /** Stops taking work and waits (bounded) for in-flight sends; everything else stays spooled. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.clearTimer();
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
    this.log.info('delivery stopped', { queued: this.items.size });
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

  // ---- scheduling ----

  private async scan(): Promise<void> {
    const listedAt = this.addSeq;
    this.finishedDuringScan = new Set();
    const finished = this.finishedDuringScan;
    let envs: Envelope[];
    try {
      envs = await this.spool.list();
    } finally {
      this.finishedDuringScan = null;
    }
    const now = this.now();
    const onDisk = new Set<string>();
    for (const env of envs) {
      onDisk.add(env.id);
      if (finished.has(env.id) || this.inFlight.has(env.id)) continue;
      const item = this.items.get(env.id);
      if (!item) {
        this.add(env);
        continue;
      }
      // The worker persists every change it makes, so a different nextAttemptAt on disk is
      // an operator's `queue retry`.
      if (env.nextAttemptAt !== item.env.nextAttemptAt && Date.parse(env.nextAttemptAt) <= now) {
        item.bypassQuota = true;
        item.heldReason = undefined;
      }
      item.env = env;
    }
    for (const [id, item] of this.items) {
      // Gone from disk: deleted with `queue delete` (items added after the listing was read are spared).
      if (!onDisk.has(id) && !this.inFlight.has(id) && item.seq <= listedAt) {
        this.items.delete(id);
        this.log.info('removed', { id, account: item.env.account, reason: 'deleted from the queue' });
      }
    }
    this.pump();
  }

  private add(env: Envelope): void {
    this.items.set(env.id, { env, seq: ++this.addSeq });
  }

  /** Starts every due message there is capacity for, then sleeps until the next one is due. */
  private pump(): void {
    if (this.stopping || !this.started) return;
    this.clearTimer();
    const now = this.now();
    const max = this.config.queue.concurrency;
    let wake = Infinity;
    for (const item of this.items.values()) {
      if (this.inFlight.size >= max) return; // a completion pumps again
      if (this.inFlight.has(item.env.id)) continue;
      const due = this.dueAt(item);
      if (due > now) {
        wake = Math.min(wake, due);
        continue;
      }
      const block = this.accountBlock(item.env.account, now, item.bypassQuota === true);
      if (block) {
        if (block.until !== null) wake = Math.min(wake, block.until);
        this.markHeld(item, block);
        continue;
      }
      this.startSend(item, now);
    }
    if (wake !== Infinity && this.inFlight.size < max) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, Math.min(MAX_TIMER, Math.max(0, wake - now)));
      this.timer.unref();
    }
  }

  private dueAt(item: Item): number {
    const at = Date.parse(item.env.nextAttemptAt);
    const due = Number.isNaN(at) ? 0 : at;
    return item.forceAt !== undefined ? Math.min(due, item.forceAt) : due;
  }

  /** Why an account's mail must wait now, and until when (null: until something changes). */
  private accountBlock(account: string, now: number, bypassQuota: boolean): Block | null {
    const acct = this.config.accounts.find((a) => a.name === account);
    if (!acct) return { reason: 'account not configured', until: null };
    if (this.health.state(account) === 'needs-reauth') return { reason: 'needs-reauth', until: null };
    const quota = this.accounts.quotaHoldUntil(account, now);
    if (quota !== null && !bypassQuota) return { reason: 'quota', until: quota };
    const rate = this.accounts.blockedUntil(account, acct.limits.messagesPerDay, now);
    if (rate !== null) return { reason: 'rate-limit', until: rate };
    return null;
  }

  private markHeld(item: Item, block: Block): void {
    if (item.heldReason === block.reason) return;
    item.heldReason = block.reason;
    this.event('held', item.env, { reason: block.reason, ...(block.until !== null ? { until: new Date(block.until).toISOString() } : {}) });
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onHealthChange(account: string, state: HealthState): void {
    if (state === 'ok') {
      const now = this.now();
      let n = 0;
      for (const item of this.items.values()) {
        if (item.env.account !== account || this.inFlight.has(item.env.id)) continue;
        item.forceAt = now;
        item.heldReason = undefined;
        n++;
      }
      if (n) this.log.info('account usable again, retrying its mail now', { account, messages: n });
    }
    this.pump();
  }

  // ---- one attempt ----

  private startSend(item: Item, now: number): void {
    const id = item.env.id;
    item.heldReason = undefined;
    const stamp = this.accounts.reserve(item.env.account, now);
    const run = this.attempt(item, stamp)
      .catch((err) => {
        // Bookkeeping failed (spool I/O): keep the message and try again later.
        const retryAt = this.now() + this.config.queue.retry[0];
        item.env.nextAttemptAt = new Date(retryAt).toISOString();
        item.forceAt = undefined;
        this.log.error('delivery bookkeeping failed, message kept for a later attempt', { id, account: item.env.account, err });
      })
      .finally(() => {
        this.inFlight.delete(id);
        this.pump();
      });
    this.inFlight.set(id, run);
  }

  private async attempt(item: Item, stamp: number): Promise<void> {
    const env = item.env;
    item.forceAt = undefined;
    const bypassQuota = item.bypassQuota === true;
    item.bypassQuota = false;
    const attempt = env.attempts + 1;
    let r: SendResult;
    try {
      r = await this.upstream.send(env, this.spool.messagePath(env.id));
    } catch (err) {
      r = { outcome: 'transient', response: `local error: ${(err as Error)?.message ?? String(err)}`, accepted: [], rejected: [] };
    }
    this.metrics?.upstreamReply(env.account, r.outcome);
    const now = this.now();
    if (!r.accepted.length && r.outcome !== 'ok') this.accounts.release(env.account, stamp);

    // 1. Recipients Gmail accepted are never sent again: persist that first.
    const accepted = pick(env.rcptTo, r.accepted);
    if (accepted.length) {
      env.delivered.push(...accepted);
      env.rcptTo = env.rcptTo.filter((x) => !accepted.includes(x));
      const quotaLifted = this.accounts.clearQuotaHold(env.account);
      if (quotaLifted) this.log.info('quota hold lifted: Gmail accepted mail again', { account: env.account });
      const nothingElse = env.rcptTo.length === 0 && r.rejected.length === 0;
      if (nothingElse) {
        await this.spool.remove(env.id);
        this.finish(env.id);
        this.event('delivered', env, { rcpts: accepted.length, attempt, reply: r.response, status: 'sent' });
        return;
      }
      if (!(await this.persist(env))) return;
      this.event('delivered', env, { rcpts: accepted.length, attempt, reply: r.response, status: 'partial', pending: env.rcptTo.length });
    }

    // 2. Permanent refusals bounce: per-recipient rejections always, everything left on a permanent outcome.
    const rejected = r.rejected.flatMap((x) => pick(env.rcptTo, [x.rcpt]).map((rcpt) => ({ rcpt, response: x.response })));
    const rejectedSet = new Set(rejected.map((x) => x.rcpt));
    const bounced: { rcpt: string; response: string }[] = [...rejected];
    if (r.outcome === 'permanent') for (const rcpt of env.rcptTo) if (!rejectedSet.has(rcpt)) bounced.push({ rcpt, response: r.response });
    if (bounced.length) {
      if (!(await this.spool.get(env.id))) return this.gone(env);
      const gone = new Set(bounced.map((b) => b.rcpt));
      await this.bounce(env, bounced.map((b) => ({ rcpt: b.rcpt, status: statusFromReply(b.response, '5.0.0'), action: 'failed', diagnostic: b.response })), {
        attempt,
        reason: r.outcome === 'permanent' ? 'permanent failure' : 'recipient rejected',
      });
      env.rcptTo = env.rcptTo.filter((x) => !gone.has(x));
      env.lastError = r.response;
      if (r.outcome === 'permanent' || env.rcptTo.length === 0) {
        if (r.outcome === 'permanent') await this.spool.fail(env.id, r.response);
        else await this.spool.remove(env.id);
        this.finish(env.id);
        return;
      }
      if (!(await this.persist(env))) return;
    }
    if (env.rcptTo.length === 0) {
      await this.spool.remove(env.id);
      this.finish(env.id);
      return;
    }

    // 3. What is left waits.
    switch (r.outcome) {
      case 'quota':
        return this.holdQuota(item, r, now, bypassQuota);
      case 'auth':
        return this.holdAuth(item, r, now);
      default:
        // 'transient', or 'ok' that left recipients unanswered: retry those later.
        return this.defer(item, r, now, attempt);
    }
  }

  private async defer(item: Item, r: SendResult, now: number, attempt: number): Promise<void> {
    const env = item.env;
    const q = this.config.queue;
    env.attempts = attempt;
    env.lastError = r.response;
    const received = Date.parse(env.receivedAt);
    const expiresAt = received + q.maxAge;
    if (now >= expiresAt) {
      if (!(await this.spool.get(env.id))) return this.gone(env);
      const reason = `gave up after ${formatDuration(q.maxAge)} in the queue: ${r.response}`;
      await this.bounce(env, env.rcptTo.map((rcpt) => ({ rcpt, status: statusFromReply(r.response, '4.4.7'), action: 'failed', diagnostic: r.response })), {
        attempt,
        reason: `expired after ${formatDuration(q.maxAge)}`,
      });
      await this.spool.fail(env.id, reason);
      this.finish(env.id);
      return;
    }
    const base = q.retry[Math.min(attempt - 1, q.retry.length - 1)];
    const delay = Math.round(base * (0.9 + Math.random() * 0.2));
    // The last try happens at maxAge, so a message is never bounced before its time.
    const next = Math.min(now + delay, expiresAt);
    env.nextAttemptAt = new Date(next).toISOString();
    await this.maybeWarn(env, now);
    if (!(await this.persist(env))) return;
    this.event('deferred', env, { attempt, retryIn: next - now, nextAttemptAt: env.nextAttemptAt, reply: r.response });
  }

  private async holdQuota(item: Item, r: SendResult, now: number, wasBypass: boolean): Promise<void> {
    const env = item.env;
    env.lastError = r.response; // attempts are not burnt: Gmail refused the account, not the message
    const until = now + this.config.queue.quotaHold;
    if (this.accounts.quotaHoldUntil(env.account, now) === null) {
      this.log.warn('Gmail daily sending limit reached: holding this account\'s mail (no bounce)', {
        account: env.account,
        until: new Date(until).toISOString(),
        reply: r.response,
        ...(wasBypass ? { retriedByOperator: true } : {}),
      });
    }
    this.accounts.setQuotaHold(env.account, until);
    await this.maybeWarn(env, now);
    if (!(await this.persist(env))) return;
    item.heldReason = 'quota';
    this.event('held', env, { reason: 'quota', until: new Date(until).toISOString(), reply: r.response });
  }

  private async holdAuth(item: Item, r: SendResult, now: number): Promise<void> {
    const env = item.env;
    this.health.markNeedsReauth(env.account, r.response);
    env.lastError = r.response;
    // Should the account still report ok, do not spin: look again after the first retry step.
    env.nextAttemptAt = new Date(now + this.config.queue.retry[0]).toISOString();
    await this.maybeWarn(env, now);
    if (!(await this.persist(env))) return;
    item.heldReason = 'needs-reauth';
    this.event('held', env, { reason: 'needs-reauth', reply: r.response });
  }

  /** Once per message, after queue.delayWarning: tell the sender it is late but still being tried. */
  private async maybeWarn(env: Envelope, now: number): Promise<void> {
    const after = this.config.queue.delayWarning;
    if (after === false || env.warned || env.isBounce || env.mailFrom === '') return;
    if (now - Date.parse(env.receivedAt) < after) return;
    const reply = env.lastError ?? 'delivery delayed';
    await this.bounce(env, env.rcptTo.map((rcpt) => ({ rcpt, status: statusFromReply(reply, '4.0.0'), action: 'delayed', diagnostic: reply })), {
      retryUntil: new Date(Date.parse(env.receivedAt) + this.config.queue.maxAge),
      reason: 'delay warning',
    });
    env.warned = true;
  }

  /** Queues a DSN (failed or delayed) to the sender or bounceTo; never for a bounce. */
  private async bounce(env: Envelope, recipients: DsnRecipient[], ctx: { attempt?: number; reason: string; retryUntil?: Date }): Promise<void> {
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
      originalFile: this.spool.messagePath(env.id),
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

  /** Rewrites the envelope; false when the message was deleted meanwhile (then it is dropped). */
  private async persist(env: Envelope): Promise<boolean> {
    if (await this.spool.update(env)) return true;
    this.gone(env);
    return false;
  }

  private gone(env: Envelope): void {
    this.finish(env.id);
    this.log.info('removed', { id: env.id, account: env.account, reason: 'deleted from the queue during delivery' });
  }

  private finish(id: string): void {
    this.items.delete(id);
    this.finishedDuringScan?.add(id);
  }

  private event(name: string, env: Envelope, extra: Meta): void {
    if (name === 'delivered') this.metrics?.delivered(env.account, Number(extra.rcpts ?? 0));
    else if (name === 'deferred') this.metrics?.deferred(env.account);
    else if (name === 'bounced') this.metrics?.bounced(env.account);
    this.log.info(name, {
      id: env.id,
      account: env.account,
      user: env.user,
      from: env.mailFrom,
      rcpts: env.rcptTo.length,
      size: env.size,
      attempt: env.attempts,
      delay: Math.max(0, this.now() - Date.parse(env.receivedAt)),
      ...extra,
    });
  }
}

/** The entries of `want` that are in `list`, spelled as in `list` (addresses compare case-insensitively). */
function pick(list: string[], want: string[]): string[] {
  const w = new Set(want.map((x) => x.toLowerCase()));
  return list.filter((x) => w.has(x.toLowerCase()));
}
