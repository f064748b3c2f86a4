// Domain types shared by the stages. Kept here so each stage depends on data, not on
// another stage's implementation.

/**
 * A message as the upstream sees it for one attempt: `rcptTo` holds exactly the recipients to
 * try now (the worker never hands it one that was accepted before).
 */
export interface Envelope {
  id: string;
  /** Authenticated local user, or null when accepted from a trusted network. */
  user: string | null;
  /** Account (Gmail identity) the message is relayed through. */
  account: string;
  /** MAIL FROM; '' is the null sender (bounces). */
  mailFrom: string;
  rcptTo: string[];
  size: number;
  clientIp: string;
  /** 8BITMIME / SMTPUTF8 as the client declared them, passed upstream as-is. */
  bodyType: '7bit' | '8bitmime';
  smtputf8: boolean;
  receivedAt: string;
  /** Set when this message is itself a bounce (never bounce a bounce). */
  isBounce?: boolean;
}

/** Where a message stands (README "Message states"). `in-flight` is the daemon's live view, never stored. */
export type MessageState = 'queued' | 'deferred' | 'in-flight' | 'held' | 'failed' | 'corrupt';
/** `transport`: the API transport (Gmail API, Microsoft Graph) cannot deliver to exactly this envelope (the headers name other addresses); an operator decides. */
export type HoldReason = 'needs-reauth' | 'quota' | 'operator' | 'transport';
export type RcptStatus = 'pending' | 'accepted' | 'deferred' | 'rejected';
/** Why a message failed, when it is not an upstream reply: `data-lost` = acknowledged, but its queue file is gone. Shown as text only at the edge. */
export type FailCode = 'data-lost';

export interface Recipient {
  address: string;
  status: RcptStatus;
  /** The last upstream reply about this recipient. */
  reply?: string;
}

/**
 * One spooled message's envelope. Version 3: stored after the message in its queue file
 * (ID.msg), and as ID.json once its state changes; version 2 (older spools): ID.json next to
 * ID.eml, which holds the message alone.
 * `rcptTo` is every recipient in the client's order (never changes); what happened to each
 * is in `rcpts`. Version-1 envelopes (pending `rcptTo` + `delivered`) are migrated on read.
 */
export interface SpooledEnvelope extends Envelope {
  version: 2 | 3;
  /** Version 3: CRC-32 (8 hex digits) of the message bytes, checked when a spool is opened after a stop or crash. */
  crc32?: string;
  /** The same, in files written before CRC-32 (or on Node 22.0/22.1): SHA-256 (hex). */
  sha256?: string;
  rcpts: Recipient[];
  state: Exclude<MessageState, 'in-flight' | 'corrupt'>;
  /** Set exactly when state is 'held'. */
  reason: HoldReason | null;
  attempts: number;
  /** Every upstream attempt, also those that do not count toward the backoff (auth and quota holds); absent: equal to attempts. */
  tries?: number;
  nextAttemptAt: string;
  /** Last upstream reply (or local error) for the message; never contains secrets. */
  lastReply?: string;
  /** Set once a delay warning was sent. */
  warned?: boolean;
  /** state 'failed': why and when. */
  failReason?: string;
  /** state 'failed': the reason as a code, when there is one. */
  failCode?: FailCode;
  failedAt?: string;
}

/** What the delivery worker needs to know about one upstream attempt. */
export type Outcome =
  | 'ok' // every recipient accepted
  | 'transient' // retry later with backoff
  | 'permanent' // bounce
  | 'quota' // Gmail daily limit (550 5.4.5): hold the account's queue
  | 'auth' // credentials rejected even after a forced refresh: account needs re-authorization
  | 'transport'; // the account's transport cannot send this message as enveloped (Gmail API, header-only recipients): hold it

export interface RecipientResult {
  rcpt: string;
  response: string;
}

/**
 * One attempt's result. `accepted` recipients are done; `rejected` ones bounce with their
 * own reply. What happens to the rest depends on `outcome`: nothing is left for 'ok';
 * they wait for a retry for 'transient' / 'quota' / 'auth'; they bounce with `response`
 * for 'permanent'.
 */
export interface SendResult {
  outcome: Outcome;
  /** Upstream reply (or local error) worth logging: never contains secrets. */
  response: string;
  /** Recipients the upstream accepted in this attempt. */
  accepted: string[];
  /** Recipients refused permanently in this attempt (bounced even if others were accepted). */
  rejected: RecipientResult[];
  /** The upstream asked to wait this long before the next try (HTTP Retry-After): the retry is not sooner. */
  retryAfterMs?: number;
  /** Why the upstream refused, when a wrapping transport may act on it (auto: another transport). */
  refusal?: HoldCode;
}

/**
 * Where a spooled message's bytes are: the first `size` bytes of `path` (a queue file holds
 * its envelope after them). Read it with the spool's openMessage / readMessage.
 */
export interface MessageSource {
  readonly path: string;
  readonly size: number;
  /** The same bytes in memory, when the spool still holds them (a small message just received). */
  readonly bytes?: Buffer;
}

/** The upstream as the delivery worker sees it. */
export interface Upstream {
  send(envelope: Envelope, message: MessageSource): Promise<SendResult>;
  close(): Promise<void>;
}

/** An account's token health as the token service judges it (its sending limits are delivery/accountState.ts). */
export type HealthState = 'ok' | 'needs-reauth' | 'error';

/** Why an upstream holds an account, as a code (its text is for operators). */
export type HoldCode = 'smtp-auth-refused';

/** A second resource of an account's grant (the first is its transport's): Graph for a delegated Microsoft auto account. */
export type TokenResource = 'graph';

/** The token service as the upstream sees it. */
export interface TokenSource {
  /**
   * A usable access token; `force` skips the cache (after a 535). `rejected`: the upstream
   * refused this token; the answer is a newer one, shared by every caller that names the same
   * token (at most one refresh per rejection). Throws NeedsReauthError when the grant is dead.
   * `resource`: a token for that second resource of the grant, from the same refresh token.
   */
  getAccessToken(
    account: string,
    opts?: { force?: boolean; rejected?: string; resource?: TokenResource },
  ): Promise<string>;
  /** The upstream accepted this token (AUTH succeeded with it). */
  tokenWorked?(account: string, token: string): void;
  /** The upstream says the account cannot send until an operator fixes something: hold its mail with that fix for a while. */
  holdAccount?(account: string, reason: string, forMs: number, code?: HoldCode): void;
}

/** Account health as the delivery worker sees it (owned by the token service). */
export interface AccountHealth {
  state(account: string): HealthState;
  /** Gmail refused our credentials even after a forced refresh (535 twice). */
  markNeedsReauth(account: string, reason: string): void;
  /** Called whenever an account's state changes (e.g. ok again after `token import`). */
  onChange(listener: (account: string, state: HealthState) => void): void;
  /** Set when the account cannot send until an operator fixes something (token store unreadable, SMTP AUTH disabled): its mail waits, with this reason, until `until` (null: until fixed). */
  holdReason?(account: string): { reason: string; until: number | null } | null;
}

/** The tightest message size an account's transport takes, for the listener to refuse with 552. */
export interface TransportSizeLimit {
  bytes: number;
  /** Names the transport's limit, for the 552 reply. */
  reason: string;
}
