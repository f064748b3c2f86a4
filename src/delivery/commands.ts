// Owns: operator commands (retry, hold, release, delete) on queued, failed and corrupt
// messages. Each becomes an event for transition(); a change is persisted before the answer,
// and a command on a message in flight waits for the attempt, so it never undoes its result.
// Renders transition()'s codes as the operator's text (the CLI and console show it as is).
// Never does: decide a state itself, send, or pick the next message.
import type { Logger } from '../log/logger.js';
import type { Spool } from '../spool/spool.js';
import type { HoldReason, MessageState } from '../types.js';
import type { Outcomes } from './outcome.js';
import type { Item, Scheduler } from './scheduler.js';
import { DATA_LOST_TEXT, openRcpts, transition, type QueueEvent, type Refusal } from './transition.js';

/** The answer to an operator command. */
export interface CommandResult {
  ok: boolean;
  id: string;
  /** State after the command ('removed' after a delete). */
  state?: MessageState | 'removed';
  /** Refused because the message is held, and why (e.g. 'quota': `--force` would try it). */
  heldFor?: HoldReason;
  message: string;
}

export type OperatorEvent = Extract<QueueEvent, { type: 'retry' | 'hold' | 'release' | 'delete' }>;

export interface CommandsOptions {
  log: Logger;
  spool: Spool;
  scheduler: Scheduler;
  outcomes: Outcomes;
  /** The message's live state (in flight, or as stored). */
  view(item: Item): { state: MessageState; reason: HoldReason | null };
}

/** What an operator reads about a hold: why, and what lifts it. */
export function heldWhy(reason: HoldReason): string {
  if (reason === 'operator') return 'it is held by an operator; `queue release` lets it go';
  if (reason === 'transport')
    return "the account's API transport (Gmail API or Microsoft Graph) cannot send it to exactly its envelope (its To/Cc/Bcc headers name addresses the envelope lacks); set the account's transport to auto (Google) or smtp (Microsoft) so such mail goes over SMTP, then `queue retry` it";
  if (reason === 'quota')
    return "its account is held after Gmail's daily sending limit; `queue retry --force` tries anyway";
  return 'its account needs re-authorization (run `authorize` or `token import`); it is sent once the account works again';
}

/** A refusal of transition() as the operator's text, for the event that was refused. */
export function refusalText(type: QueueEvent['type'], why: Refusal): string {
  if (why.code === 'nothing-open') return 'every recipient already accepted it; nothing to retry';
  if (why.code === 'held') {
    if (type === 'release') return `not held by an operator: ${heldWhy(why.reason)}`;
    return `${type === 'retry' ? 'not retried' : 'not sent'}: ${heldWhy(why.reason)}`;
  }
  const s = why.state;
  if (type === 'retry' && s === 'corrupt')
    return 'the envelope is corrupt; inspect spool/corrupt/ and `queue delete` it';
  if (type === 'hold') return `a ${s} message cannot be held`;
  if (type === 'release') return `not held (state ${s})`;
  if (type === 'outcome') return `no attempt in flight (state ${s})`;
  return `cannot ${type === 'start' ? 'start an attempt on' : type} a ${s} message`;
}

function refused(id: string, type: QueueEvent['type'], why: Refusal, state?: MessageState): CommandResult {
  return {
    ok: false,
    id,
    ...(state ? { state } : {}),
    ...(why.code === 'held' ? { heldFor: why.reason } : {}),
    message: `${id}: ${refusalText(type, why)}`,
  };
}

export class Commands {
  constructor(private readonly o: CommandsOptions) {}

  /**
   * Applies an operator command to one message (queued, failed or corrupt). On a message in
   * flight it waits for the attempt to end and then decides on the result (e.g. a retry then
   * concerns only the recipients still pending).
   */
  command(id: string, e: OperatorEvent): Promise<CommandResult> {
    const s = this.o.scheduler;
    const item = s.items.get(id);
    if (!item) return this.offQueue(id, e);
    return this.locked(item, () => this.on(item, e));
  }

  /**
   * An account event (held, usable again, a rate-limit park) on one message, in line with
   * operator commands on it: decided by transition(), persisted before the scheduler sees it.
   * True when it changed.
   */
  account(item: Item, e: Extract<QueueEvent, { type: 'account-ok' | 'account-hold' | 'park' }>): Promise<boolean> {
    return this.locked(item, async () => {
      if (this.o.scheduler.inFlight.has(item.env.id) || this.o.scheduler.items.get(item.env.id) !== item) return false;
      const d = transition({ state: item.env.state, reason: item.env.reason, rcpts: item.env.rcpts }, e);
      if (d.kind !== 'change') return false;
      return this.o.outcomes.persist(item, this.o.outcomes.applied(item.env, d));
    });
  }

  /** Runs fn after the commands queued on the message; the scheduler leaves it alone meanwhile. */
  private locked<T>(item: Item, fn: () => Promise<T>): Promise<T> {
    const s = this.o.scheduler;
    item.locks++;
    const run = item.commands.then(fn);
    item.commands = run.catch(() => {});
    return run.finally(() => {
      item.locks--;
      if (!item.locks && s.items.get(item.env.id) === item) {
        s.schedule(item);
        s.pump();
      }
    });
  }

  /** `queue retry --all`: every queued message now; quota holds only with `force`, operator holds never. */
  async retryAll(force: boolean): Promise<{ retried: number; refused: CommandResult[] }> {
    const s = this.o.scheduler;
    let retried = 0;
    const refusedList: CommandResult[] = [];
    for (const it of [...s.items.values()]) {
      if (s.inFlight.has(it.env.id)) continue; // being tried right now
      const r = await this.command(it.env.id, { type: 'retry', force });
      if (r.ok) retried++;
      else if (s.items.has(it.env.id)) refusedList.push(r);
    }
    return { retried, refused: refusedList };
  }

  private async on(item: Item, e: OperatorEvent): Promise<CommandResult> {
    const { scheduler: s, spool, outcomes, log } = this.o;
    const id = item.env.id;
    let waited = false;
    for (;;) {
      const running = s.inFlight.get(id);
      if (running) {
        waited = true;
        await running.catch(() => {});
      }
      if (s.items.get(id) !== item) {
        const where = (await spool.getFailed(id)) ? 'it failed and is in failed/' : 'it was delivered';
        return { ok: false, id, message: `${id}: the attempt in flight finished it (${where}); nothing to ${e.type}` };
      }
      if (s.inFlight.has(id)) continue;
      const v = this.o.view(item);
      const d = transition({ state: v.state, reason: v.reason, rcpts: item.env.rcpts }, e);
      if (d.kind === 'after-attempt') continue;
      if (d.kind === 'refuse') return refused(id, e.type, d.why, v.state);
      if (d.kind === 'same')
        return { ok: true, id, state: v.state, message: `${id}: already ${describe(v.state, v.reason)}` };
      if (d.state === 'removed') {
        await spool.remove(id);
        s.remove(id);
        log.info('removed', { id, account: item.env.account, reason: 'deleted by an operator' });
        return { ok: true, id, state: 'removed', message: `${id}: deleted from the queue` };
      }
      const next = outcomes.applied(item.env, d);
      if (!(await outcomes.persist(item, next))) {
        return {
          ok: false,
          id,
          state: 'failed',
          message: `${id}: ${DATA_LOST_TEXT} (its queue file is gone); moved to failed/, notice sent`,
        };
      }
      item.heldReason = undefined;
      if (e.type === 'retry') item.bypassQuota = v.state === 'held' && v.reason === 'quota';
      log.info(`operator ${e.type}`, {
        id,
        account: next.account,
        state: next.state,
        ...(next.reason ? { reason: next.reason } : {}),
      });
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
  private async offQueue(id: string, e: OperatorEvent): Promise<CommandResult> {
    const { scheduler: s, spool, outcomes, log } = this.o;
    const failed = await spool.getFailed(id);
    if (failed) {
      const d = transition({ state: 'failed', reason: null, rcpts: failed.rcpts }, e);
      if (d.kind === 'refuse') return refused(id, e.type, d.why, 'failed');
      if (d.kind !== 'change') return { ok: true, id, state: 'failed', message: `${id}: unchanged` };
      if (d.state === 'removed') {
        await spool.removeFailed(id);
        log.info('removed', { id, account: failed.account, reason: 'deleted from failed/ by an operator' });
        return { ok: true, id, state: 'removed', message: `${id}: deleted from failed/` };
      }
      const next = outcomes.applied(failed, d);
      if (!(await spool.requeueFailed(next))) return { ok: false, id, message: `${id}: left failed/ meanwhile` };
      s.add((await spool.get(id)) ?? next);
      log.info('operator retry', { id, account: next.account, state: next.state, from: 'failed/' });
      s.pump();
      const n = openRcpts(next.rcpts).length;
      return {
        ok: true,
        id,
        state: next.state,
        message: `${id}: moved back from failed/ and scheduled for immediate retry (${n} recipient${n === 1 ? '' : 's'})`,
      };
    }
    if ((await spool.listCorrupt()).some((c) => c.id === id)) {
      const d = transition({ state: 'corrupt', reason: null, rcpts: [] }, e);
      if (d.kind === 'change' && d.state === 'removed') {
        await spool.removeCorrupt(id);
        log.info('removed', { id, reason: 'corrupt envelope deleted by an operator' });
        return { ok: true, id, state: 'removed', message: `${id}: deleted from corrupt/` };
      }
      if (d.kind === 'refuse') return refused(id, e.type, d.why, 'corrupt');
      return { ok: false, id, state: 'corrupt', message: `${id}: unchanged` };
    }
    return { ok: false, id, message: `no message with id ${id}` };
  }
}

function describe(state: MessageState, reason: HoldReason | null): string {
  return state === 'held' && reason ? `held (${reason})` : state;
}
