// Owns: the one decision of how a message's state changes. Pure: it takes the message's state,
// reason and recipients plus one event (an attempt's outcome with its expiry, an operator
// command, an account hold or its end, lost data) and returns the decision as codes.
// Never does: I/O, clocks, or English for operators (commands.ts and the edges render codes).
// Tested table-driven over every state x event (test/unit/transition.test.ts).
import type {
  Envelope,
  FailCode,
  HoldReason,
  MessageState,
  Outcome,
  Recipient,
  RecipientResult,
  SpooledEnvelope,
} from '../types.js';

export interface MessageView {
  state: MessageState;
  reason: HoldReason | null;
  rcpts: Recipient[];
}

export type QueueEvent =
  /** An attempt starts. */
  | { type: 'start' }
  /**
   * The attempt ended. `retryAt`: when to try again if it defers; `recheckAt`: when to look
   * again at a message held for re-authorization (should the account still report ok);
   * `expiry`: set (the reason) when the message is past queue.maxAge.
   */
  | {
      type: 'outcome';
      outcome: Outcome;
      response: string;
      accepted: string[];
      rejected: RecipientResult[];
      retryAt: string;
      recheckAt?: string;
      expiry?: string;
    }
  /** Operator `queue retry` (`force`: also through a quota hold). */
  | { type: 'retry'; force?: boolean }
  | { type: 'hold' }
  | { type: 'release' }
  | { type: 'delete' }
  /** The account cannot send (dead grant, Gmail's daily quota). */
  | { type: 'account-hold'; reason: 'needs-reauth' | 'quota' }
  /** The account's hold ended (re-authorized, quota window over). */
  | { type: 'account-ok' }
  /** A due message waits for its account's sending limit (rate limit) until `until`. */
  | { type: 'park'; until: string }
  /** The message was acknowledged but its data (the queue file) is gone. */
  | { type: 'data-lost' };

export interface Bounce {
  rcpt: string;
  reply: string;
}

/** Why an event does not apply, as a code; commands.ts renders it for operators. */
export type Refusal =
  /** Held, and this event does not lift that hold. */
  | { code: 'held'; reason: HoldReason }
  /** The event does not apply to a message in this state. */
  | { code: 'state'; state: MessageState }
  /** A failed message whose every recipient accepted it: nothing to retry. */
  | { code: 'nothing-open' };

/** Why recipients bounce in a change: a per-recipient rejection, a permanent outcome, queue.maxAge, lost data. */
export type BounceCode = 'rejected' | 'permanent' | 'expired' | 'data-lost';

export type Decision =
  /** The event does not apply. */
  | { kind: 'refuse'; why: Refusal }
  /** An attempt is in flight: apply the event again once it has ended. */
  | { kind: 'after-attempt' }
  /** Nothing changes. */
  | { kind: 'same' }
  | Change;

export interface Change {
  kind: 'change';
  /** 'removed': the message leaves the queue (every recipient done, or deleted). */
  state: MessageState | 'removed';
  reason: HoldReason | null;
  rcpts: Recipient[];
  /** Due at once (retry, release, a hold ended). */
  dueNow?: boolean;
  /** When to try next (a deferral). */
  nextAttemptAt?: string;
  /** Recipients that failed for good in this step: a DSN reports them. */
  bounce?: Bounce[];
  /** Why they bounce (set with a non-empty `bounce`). */
  bounceCode?: BounceCode;
  /** The attempt counts against the message (quota and auth holds do not burn attempts). */
  countAttempt?: boolean;
  lastReply?: string;
  /** state 'failed': why. */
  failReason?: string;
  failCode?: FailCode;
}

/** What the sender's notice and the failed envelope say about a message whose data is gone. */
export const DATA_LOST_TEXT = 'message data lost on this host';

const OPEN: ReadonlySet<string> = new Set(['pending', 'deferred']);

/** Recipients still to send (pending or deferred). */
export function openRcpts(rcpts: Recipient[]): Recipient[] {
  return rcpts.filter((r) => OPEN.has(r.status));
}

function change(m: MessageView, c: Partial<Change> & Pick<Change, 'state'>): Change {
  return { kind: 'change', reason: null, rcpts: m.rcpts, ...c };
}

function refuse(why: Refusal): Decision {
  return { kind: 'refuse', why };
}

function stateOrHeld(m: MessageView): Refusal {
  return m.state === 'held' && m.reason ? { code: 'held', reason: m.reason } : { code: 'state', state: m.state };
}

/**
 * Held for this message alone until an operator acts (hold, or a transport that cannot send
 * it as enveloped): an account's hold or its end does not touch it.
 */
export function waitsForOperator(m: Pick<MessageView, 'state' | 'reason'>): boolean {
  return m.state === 'held' && (m.reason === 'operator' || m.reason === 'transport');
}

export function transition(m: MessageView, e: QueueEvent): Decision {
  const waiting = m.state === 'queued' || m.state === 'deferred';
  switch (e.type) {
    case 'start':
      if (waiting) return change(m, { state: 'in-flight' });
      return refuse(stateOrHeld(m));

    case 'outcome':
      if (m.state !== 'in-flight') return refuse({ code: 'state', state: m.state });
      return outcome(m, e);

    case 'retry':
      if (m.state === 'in-flight') return { kind: 'after-attempt' };
      if (waiting) return change(m, { state: 'queued', dueNow: true });
      if (m.state === 'held') {
        if (m.reason === 'quota' && e.force) return change(m, { state: 'queued', dueNow: true });
        // The transport is chosen again (e.g. after switching the account to auto).
        if (m.reason === 'transport') return change(m, { state: 'queued', dueNow: true });
        return refuse(stateOrHeld(m));
      }
      if (m.state === 'failed') {
        // Re-queue the recipients that failed; accepted ones are never sent again.
        const rcpts = m.rcpts.map(
          (r): Recipient => (r.status === 'accepted' ? r : { address: r.address, status: 'pending' }),
        );
        if (!openRcpts(rcpts).length) return refuse({ code: 'nothing-open' });
        return change(m, { state: 'queued', rcpts, dueNow: true });
      }
      return refuse({ code: 'state', state: m.state });

    case 'hold':
      if (m.state === 'in-flight') return { kind: 'after-attempt' };
      if (m.state === 'held' && m.reason === 'operator') return { kind: 'same' };
      if (waiting || m.state === 'held') return change(m, { state: 'held', reason: 'operator' });
      return refuse({ code: 'state', state: m.state });

    case 'release':
      if (m.state === 'in-flight') return { kind: 'after-attempt' };
      if (waitsForOperator(m)) return change(m, { state: 'queued', dueNow: true });
      return refuse(stateOrHeld(m));

    case 'delete':
      if (m.state === 'in-flight') return { kind: 'after-attempt' };
      return change(m, { state: 'removed' });

    case 'account-hold':
      if (waiting) return change(m, { state: 'held', reason: e.reason });
      if (m.state === 'held' && !waitsForOperator(m) && m.reason !== e.reason)
        return change(m, { state: 'held', reason: e.reason });
      return { kind: 'same' };

    case 'account-ok':
      // Contract: deferred mail of a re-authorized account is retried at once.
      if (m.state === 'deferred' || (m.state === 'held' && !waitsForOperator(m)))
        return change(m, { state: 'queued', dueNow: true });
      return { kind: 'same' };

    case 'park':
      // Not a hold: the message stays queued or deferred, next tried when the limit allows.
      if (waiting) return change(m, { state: m.state, nextAttemptAt: e.until });
      return { kind: 'same' };

    case 'data-lost': {
      // Never dropped quietly, whatever it waited for: every open recipient fails with a notice.
      if (m.state === 'in-flight') return { kind: 'after-attempt' };
      if (m.state === 'failed' || m.state === 'corrupt') return { kind: 'same' };
      const bounce: Bounce[] = [];
      const rcpts = m.rcpts.map((r): Recipient => {
        if (!OPEN.has(r.status)) return r;
        bounce.push({ rcpt: r.address, reply: DATA_LOST_TEXT });
        return { address: r.address, status: 'rejected', reply: DATA_LOST_TEXT };
      });
      return change(m, {
        state: 'failed',
        rcpts,
        bounce,
        bounceCode: 'data-lost',
        failReason: `${DATA_LOST_TEXT}: its queue file is gone`,
        failCode: 'data-lost',
        lastReply: DATA_LOST_TEXT,
      });
    }
  }
}

/** Past queue.maxAge: every open recipient bounces (a transport hold never gets here: only an operator decides on it). */
function giveUp(m: MessageView, reply: string, failReason: string, rcpts = m.rcpts, bounce: Bounce[] = []): Change {
  const out = [...bounce];
  const next = rcpts.map((r): Recipient => {
    if (!OPEN.has(r.status)) return r;
    out.push({ rcpt: r.address, reply: r.reply ?? reply });
    return { address: r.address, status: 'rejected', reply: r.reply ?? reply };
  });
  return change(m, {
    state: 'failed',
    rcpts: next,
    bounce: out,
    bounceCode: 'expired',
    failReason,
    lastReply: reply,
    countAttempt: true,
  });
}

function outcome(m: MessageView, e: Extract<QueueEvent, { type: 'outcome' }>): Change {
  const accepted = new Set(e.accepted.map((a) => a.toLowerCase()));
  const rejected = new Map(e.rejected.map((r) => [r.rcpt.toLowerCase(), r.response]));
  const bounce: Bounce[] = [];
  const rcpts = m.rcpts.map((r): Recipient => {
    if (!OPEN.has(r.status)) return r;
    const key = r.address.toLowerCase();
    if (accepted.has(key)) return { address: r.address, status: 'accepted', reply: e.response };
    const why = rejected.get(key) ?? (e.outcome === 'permanent' ? e.response : undefined);
    if (why !== undefined) {
      bounce.push({ rcpt: r.address, reply: why });
      return { address: r.address, status: 'rejected', reply: why };
    }
    return { address: r.address, status: 'deferred', reply: e.response };
  });
  const left = openRcpts(rcpts).length;
  const bounced = {
    bounce,
    ...(bounce.length
      ? { bounceCode: e.outcome === 'permanent' ? ('permanent' as const) : ('rejected' as const) }
      : {}),
  };
  if (!left) {
    if (e.outcome === 'permanent')
      return change(m, {
        state: 'failed',
        rcpts,
        ...bounced,
        failReason: e.response,
        lastReply: e.response,
        countAttempt: true,
      });
    return change(m, { state: 'removed', rcpts, ...bounced, lastReply: e.response, countAttempt: true });
  }
  if (e.outcome === 'quota')
    return change(m, { state: 'held', reason: 'quota', rcpts, ...bounced, lastReply: e.response });
  if (e.outcome === 'auth')
    return change(m, {
      state: 'held',
      reason: 'needs-reauth',
      rcpts,
      ...bounced,
      lastReply: e.response,
      ...(e.recheckAt ? { nextAttemptAt: e.recheckAt } : {}),
    });
  if (e.outcome === 'transport')
    return change(m, { state: 'held', reason: 'transport', rcpts, ...bounced, lastReply: e.response });
  // 'transient', or 'ok' that left recipients unanswered: retry those later, unless too old.
  if (e.expiry) return giveUp({ ...m, rcpts }, e.response, e.expiry, rcpts, bounce);
  return change(m, {
    state: 'deferred',
    rcpts,
    ...bounced,
    nextAttemptAt: e.retryAt,
    lastReply: e.response,
    countAttempt: true,
  });
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
