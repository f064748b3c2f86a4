// Owns: carrying out a change transition() decided. Persist first (through the spool's API),
// then act: queue the DSN, set the account's quota window, tell the token service, log the
// event, reschedule; and the data-lost path (a queue file gone under an acknowledged message).
// Never does: decide a state (transition.ts), pick the next message (scheduler.ts), or send.
import type { Config } from '../config/schema.js';
import { formatDuration } from '../config/units.js';
import type { Logger, Meta } from '../log/logger.js';
import type { FailedEnvelope, Spool } from '../spool/spool.js';
import type { AccountHealth, SendResult, SpooledEnvelope } from '../types.js';
import type { AccountState } from './accountState.js';
import { buildDsn, statusFromReply, type DsnRecipient } from './bounce.js';
import type { Item, Scheduler } from './scheduler.js';
import { DATA_LOST_TEXT, openRcpts, transition, type Bounce, type BounceCode, type Change } from './transition.js';

/** The counters this stage feeds (implemented by src/metrics). */
export interface DeliveryMetrics {
  delivered(account: string, rcpts: number): void;
  deferred(account: string): void;
  bounced(account: string): void;
  upstreamReply(account: string, outcome: SendResult['outcome']): void;
  /** An acknowledged message's data was gone: failed with reason data-lost. */
  dataLost?(account: string): void;
}

export interface OutcomeOptions {
  config: () => Config;
  log: Logger;
  spool: Spool;
  health: AccountHealth;
  accounts: AccountState;
  scheduler: Scheduler;
  now: () => number;
  host: string;
  metrics?: DeliveryMetrics;
  /** The account's quota hold began or ended: its other mail follows (held, or due again). */
  accountChanged(account: string): void;
}

/** One ended attempt, as outcome.ts needs it. */
export interface Attempt {
  item: Item;
  /** The envelope the attempt was made with. */
  env: SpooledEnvelope;
  result: SendResult;
  /** Upstream attempts so far, this one included. */
  attempt: number;
  /** An operator's `retry --force` let this attempt through a quota hold. */
  bypassQuota: boolean;
  now: number;
}

/** The DSN's status code when the reply carries none. */
const FALLBACK_STATUS: Record<BounceCode, string> = {
  rejected: '5.0.0',
  permanent: '5.0.0',
  expired: '4.4.7',
  'data-lost': '5.3.0',
};

export class Outcomes {
  constructor(private readonly o: OutcomeOptions) {}

  /** The envelope after a decided change (not for 'removed'). */
  applied(env: SpooledEnvelope, d: Change): SpooledEnvelope {
    const { failReason: _f, failedAt: _a, ...rest } = env;
    const base = d.state === 'failed' ? env : rest;
    return {
      ...base,
      state: d.state as SpooledEnvelope['state'],
      reason: d.state === 'held' ? d.reason : null,
      rcpts: d.rcpts,
      ...(d.dueNow
        ? { nextAttemptAt: new Date(this.o.now()).toISOString() }
        : d.nextAttemptAt
          ? { nextAttemptAt: d.nextAttemptAt }
          : {}),
      ...(d.lastReply !== undefined ? { lastReply: d.lastReply } : {}),
    };
  }

  /** An attempt's decided change: accepted recipients persisted first, then bounces, then the new state. */
  async attemptEnded(a: Attempt, d: Change): Promise<void> {
    const { item, env, result: r, attempt, now } = a;
    const q = this.o.config().queue;
    const counted = d.countAttempt ? env.attempts + 1 : env.attempts;
    const next: SpooledEnvelope = {
      ...this.applied(env, d),
      attempts: counted,
      ...(attempt !== counted ? { tries: attempt } : {}),
    };
    const accepted = d.rcpts.filter((x, i) => x.status === 'accepted' && env.rcpts[i]?.status !== 'accepted');

    // 1. Recipients Gmail accepted are never sent again: persist that first.
    if (accepted.length) {
      if (this.o.accounts.clearQuotaHold(env.account)) {
        this.o.log.info('quota hold lifted: Gmail accepted mail again', { account: env.account });
        this.o.scheduler.unpark(env.account);
        this.o.accountChanged(env.account);
      }
      if (d.state === 'removed' && !d.bounce?.length) {
        await this.o.spool.remove(env.id);
        this.o.scheduler.remove(env.id);
        this.event('delivered', next, { rcpts: accepted.length, attempt, reply: r.response, status: 'sent' });
        return;
      }
      const acceptedOnly = {
        ...env,
        rcpts: env.rcpts.map((x, i) => (d.rcpts[i].status === 'accepted' ? d.rcpts[i] : x)),
      };
      if (!(await this.persist(item, acceptedOnly))) return;
      this.event('delivered', next, {
        rcpts: accepted.length,
        attempt,
        reply: r.response,
        status: 'partial',
        pending: openRcpts(next.rcpts).length,
      });
    }

    // 2. Permanent refusals bounce (per-recipient rejections always; everything left on a permanent outcome or expiry).
    if (d.bounce?.length) {
      const code = d.bounceCode ?? 'rejected';
      const reason =
        code === 'expired'
          ? `expired after ${formatDuration(q.maxAge)}`
          : code === 'permanent'
            ? 'permanent failure'
            : 'recipient rejected';
      await this.bounce(env, bounceList(d.bounce, FALLBACK_STATUS[code]), { attempt, reason });
    }

    // 3. The message's new state.
    if (d.state === 'removed') {
      await this.o.spool.remove(env.id);
      this.o.scheduler.remove(env.id);
      return;
    }
    if (d.state === 'failed') {
      if (!(await this.o.spool.fail(next, d.failReason ?? r.response))) await this.dataLost(next);
      this.o.scheduler.remove(env.id);
      return;
    }
    if (d.state === 'held' && d.reason === 'quota') {
      const until = now + q.quotaHold;
      if (this.o.accounts.quotaHoldUntil(env.account, now) === null) {
        this.o.log.warn("Gmail daily sending limit reached: holding this account's mail (no bounce)", {
          account: env.account,
          until: new Date(until).toISOString(),
          reply: r.response,
          ...(a.bypassQuota ? { retriedByOperator: true } : {}),
        });
      }
      this.o.accounts.setQuotaHold(env.account, until);
      await this.maybeWarn(next, now);
      if (!(await this.persist(item, next))) return;
      this.o.accountChanged(env.account);
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
      this.o.health.markNeedsReauth(env.account, r.response);
      await this.maybeWarn(next, now);
      if (!(await this.persist(item, next))) return;
      item.heldReason = 'needs-reauth';
      this.event('held', next, { reason: 'needs-reauth', reply: r.response });
      return;
    }
    await this.maybeWarn(next, now);
    if (!(await this.persist(item, next))) return;
    this.event('deferred', next, {
      attempt,
      retryIn: Date.parse(next.nextAttemptAt) - now,
      nextAttemptAt: next.nextAttemptAt,
      reply: r.response,
    });
  }

  /**
   * Rewrites the envelope; false when the queue file is gone. Nothing else removes it while
   * the worker holds the message (operator commands wait for an attempt in flight), so its
   * data was lost: the message fails as data-lost.
   */
  async persist(item: Item, env: SpooledEnvelope): Promise<boolean> {
    if (await this.o.spool.update(env)) {
      item.env = env;
      return true;
    }
    await this.dataLost(env);
    return false;
  }

  /**
   * An acknowledged message whose queue file is gone is never dropped quietly: one error line
   * (id, sender, recipients), counted, a notice to bounceTo, its envelope in failed/ (data-lost).
   */
  async dataLost(env: SpooledEnvelope): Promise<void> {
    const d = transition({ state: env.state, reason: env.reason, rcpts: env.rcpts }, { type: 'data-lost' });
    if (d.kind !== 'change') return;
    // The notice first: a crash before the move repeats it at the next start rather than losing it.
    if (d.bounce?.length)
      await this.bounce(env, bounceList(d.bounce, FALLBACK_STATUS['data-lost']), { reason: 'data lost' });
    const failed: FailedEnvelope = {
      ...this.applied(env, d),
      state: 'failed',
      failReason: d.failReason!,
      failCode: d.failCode,
      failedAt: new Date(this.o.now()).toISOString(),
    };
    await this.o.spool.failLost(failed);
    this.o.scheduler.remove(env.id);
    this.o.metrics?.dataLost?.(env.account);
    const bounceTo = this.o.config().queue.bounceTo;
    this.o.log.error(
      `${DATA_LOST_TEXT}: the queue file of acknowledged message ${env.id} is gone; moved to failed/ (data-lost), notice sent to ${bounceTo}`,
      {
        id: env.id,
        account: env.account,
        user: env.user,
        from: env.mailFrom,
        rcpts: d.bounce?.map((b) => b.rcpt) ?? [],
        size: env.size,
        receivedAt: env.receivedAt,
        file: this.o.spool.message(env).path,
      },
    );
    this.o.scheduler.pump(); // the notice is due now
  }

  /** Once per message, after queue.delayWarning: tell the sender it is late but still being tried. */
  private async maybeWarn(env: SpooledEnvelope, now: number): Promise<void> {
    const q = this.o.config().queue;
    if (q.delayWarning === false || env.warned || env.isBounce || env.mailFrom === '') return;
    if (now - Date.parse(env.receivedAt) < q.delayWarning) return;
    const reply = env.lastReply ?? 'delivery delayed';
    const rcpts = openRcpts(env.rcpts).map(
      (x): DsnRecipient => ({
        rcpt: x.address,
        status: statusFromReply(reply, '4.0.0'),
        action: 'delayed',
        diagnostic: reply,
      }),
    );
    await this.bounce(env, rcpts, {
      retryUntil: new Date(Date.parse(env.receivedAt) + q.maxAge),
      reason: 'delay warning',
    });
    env.warned = true;
  }

  /** Queues a DSN (failed or delayed) to the sender or bounceTo; never for a bounce. */
  private async bounce(
    env: SpooledEnvelope,
    recipients: DsnRecipient[],
    ctx: { attempt?: number; reason: string; retryUntil?: Date },
  ): Promise<void> {
    const delayed = recipients.every((r) => r.action === 'delayed');
    const meta: Meta = {
      rcpts: recipients.length,
      reason: ctx.reason,
      reply: recipients[0]?.diagnostic,
      ...(ctx.attempt ? { attempt: ctx.attempt } : {}),
    };
    if (env.isBounce || env.mailFrom === '') {
      if (!delayed) this.event('bounced', env, { ...meta, dsn: 'none (the message is itself a bounce)' });
      return;
    }
    const config = this.o.config();
    const to = config.queue.bounceTo === 'sender' ? env.mailFrom : config.queue.bounceTo;
    const acct = config.accounts.find((a) => a.name === env.account);
    const dsn = await buildDsn({
      env,
      original: this.o.spool.message(env),
      reportingMta: this.o.host,
      recipients,
      from: `Mail Delivery Subsystem <${acct?.email ?? `MAILER-DAEMON@${this.o.host}`}>`,
      to,
      retryUntil: ctx.retryUntil,
      remoteMta: acct?.upstream.host,
    });
    const queued = await this.o.spool.receive([dsn], {
      user: null,
      account: env.account,
      mailFrom: '',
      rcptTo: [to],
      clientIp: '127.0.0.1',
      bodyType: dsn.some((b) => b > 0x7f) ? '8bitmime' : '7bit',
      smtputf8: /[^\x00-\x7f]/.test(to),
      isBounce: true,
    });
    this.o.scheduler.add(queued);
    this.event(delayed ? 'delay-warning' : 'bounced', env, { ...meta, dsn: queued.id, to });
  }

  /** Counts an upstream reply by its outcome. */
  metricsReply(account: string, outcome: SendResult['outcome']): void {
    this.o.metrics?.upstreamReply(account, outcome);
  }

  /** One log line per event (and its counter). */
  event(name: string, env: SpooledEnvelope, extra: Meta): void {
    const m = this.o.metrics;
    if (name === 'delivered') m?.delivered(env.account, Number(extra.rcpts ?? 0));
    else if (name === 'deferred') m?.deferred(env.account);
    else if (name === 'bounced') m?.bounced(env.account);
    // A deferral or a bounce is what `journalctl -p warning` should show: one line per event.
    this.o.log[name === 'deferred' || name === 'bounced' ? 'warn' : 'info'](name, {
      id: env.id,
      account: env.account,
      user: env.user,
      from: env.mailFrom,
      rcpts: openRcpts(env.rcpts).length,
      size: env.size,
      attempt: triesOf(env),
      delay: Math.max(0, this.o.now() - Date.parse(env.receivedAt)),
      ...extra,
    });
  }
}

/** Upstream attempts so far, counted or not (envelopes written before `tries` existed hold only `attempts`). */
export function triesOf(env: SpooledEnvelope): number {
  return Math.max(env.tries ?? 0, env.attempts);
}

function bounceList(b: Bounce[], fallback: string): DsnRecipient[] {
  return b.map((x) => ({
    rcpt: x.rcpt,
    status: statusFromReply(x.reply, fallback),
    action: 'failed',
    diagnostic: x.reply,
  }));
}
