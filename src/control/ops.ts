// Every operation on live state, in one place: the control socket (CLI), the CLI itself when
// no daemon runs (holding the state lock), and the web console all call these, so there is one
// owner of the queue and the tokens and one set of answers. Results are plain JSON-able data.
import type { Config } from '../config/schema.js';
import type { DeliveryWorker, CommandResult, QueuedView } from '../delivery/worker.js';
import type { Spool, CorruptEntry, FailedEnvelope } from '../spool/spool.js';
import { readHeaderBlock } from '../spool/headers.js';
import { NeedsReauthError, fixHint, type AccountStatus, type TokenService } from '../oauth/service.js';
import type { FailCode, HoldReason, MessageSource, MessageState, RcptStatus } from '../types.js';
import { nullLogger, type Logger } from '../log/logger.js';
import type { TransportRouter } from '../upstream/router.js';
import { sendTestMessage } from '../upstream/testMessage.js';

/** One message as `queue list --json` prints it (and the console shows it). */
export interface QueueRow {
  id: string;
  account: string | null;
  user: string | null;
  from: string | null;
  state: MessageState;
  /** held: why; failed: a code when the failure is not an upstream reply (data-lost). */
  reason: HoldReason | FailCode | null;
  rcpts: { address: string; status: RcptStatus; reply?: string }[];
  attempts: number;
  nextAttemptAt: string | null;
  lastReply: string | null;
  /** Due but waiting for a sending limit: which one, until when. */
  waiting?: string;
  size: number;
  receivedAt: string | null;
  ageMs: number | null;
  isBounce: boolean;
  /** failed: why and when. */
  failReason?: string;
  failedAt?: string;
  /** corrupt: the envelope file in spool/corrupt/ and why it could not be read. */
  file?: string;
  error?: string;
}

export interface ShowResult {
  row: QueueRow;
  client: string | null;
  bodyType: string | null;
  smtputf8: boolean;
  /** The message's header block (never the body). */
  headers: string;
}

export interface OpResult {
  ok: boolean;
  message: string;
}

/** `console-link`: a one-time login address for the web console (message: the same address). */
export interface ConsoleLinkResult extends OpResult {
  url?: string;
  expiresAt?: string;
}

export interface RetryAllResult extends OpResult {
  retried: number;
  refused: CommandResult[];
}

/** The parts of a running bridge (or of the CLI acting alone) that the operations use. */
export interface OpsParts {
  config: () => Config;
  spool: Spool;
  worker: DeliveryWorker;
  tokens: TokenService;
  /** Re-read the config file (daemon only). */
  reload?: () => Promise<boolean>;
  /** Mints a one-time web console login link (daemon only; null when the console is off). */
  consoleLink?: () => ConsoleLinkResult | null;
  /** false in the CLI acting without a daemon: stored grants are not tried until the daemon starts. */
  live: boolean;
  /** `send-test` sends through it (the owner's upstream and tokens); absent: send-test is refused. */
  upstream?: TransportRouter;
  log?: Logger;
}

export class Operations {
  constructor(private readonly p: OpsParts) {}

  /** Queued messages (live states), then failed/ and corrupt/ ones. */
  async listQueue(): Promise<QueueRow[]> {
    const now = Date.now();
    const rows = this.p.worker.list().map((v) => queuedRow(v, now));
    for (const f of await this.p.spool.listFailed()) rows.push(failedRow(f, now));
    for (const c of await this.p.spool.listCorrupt()) rows.push(corruptRow(c));
    return rows;
  }

  async show(id: string): Promise<ShowResult | null> {
    const now = Date.now();
    const live = this.p.worker.get(id);
    if (live) return this.withHeaders(queuedRow(live, now), live.env, this.p.spool.message(live.env));
    const failed = await this.p.spool.getFailed(id);
    if (failed) return this.withHeaders(failedRow(failed, now), failed, this.p.spool.failedMessage(failed));
    const corrupt = (await this.p.spool.listCorrupt()).find((c) => c.id === id);
    if (corrupt) return { row: corruptRow(corrupt), client: null, bodyType: null, smtputf8: false, headers: '' };
    return null;
  }

  private async withHeaders(
    row: QueueRow,
    env: { clientIp: string; bodyType: string; smtputf8: boolean },
    msg: MessageSource,
  ): Promise<ShowResult> {
    let headers: string;
    try {
      headers = (await readHeaderBlock(msg)).toString('utf8');
    } catch (e) {
      headers = `(cannot read the message file: ${(e as Error).message})\n`;
    }
    return { row, client: env.clientIp, bodyType: env.bodyType, smtputf8: env.smtputf8, headers };
  }

  /** One message now: also through its account's quota hold (an operator's explicit choice), never through an operator hold. */
  retry(id: string): Promise<CommandResult> {
    return this.p.worker.command(id, { type: 'retry', force: true });
  }

  /** Every queued message now; quota holds only with `force`. */
  async retryAll(opts: { force: boolean }): Promise<RetryAllResult> {
    const r = await this.p.worker.retryAll(opts.force);
    const quota = r.refused.filter((x) => x.heldFor === 'quota').length;
    const other = r.refused.length - quota;
    let message = `${r.retried} message${r.retried === 1 ? '' : 's'} scheduled for immediate retry`;
    if (quota) message += `; ${quota} left under their account's quota hold (add --force to try them anyway)`;
    if (other)
      message += `; ${other} not retried (held by an operator or waiting for re-authorization; see queue list)`;
    return { ok: true, message, retried: r.retried, refused: r.refused };
  }

  hold(id: string): Promise<CommandResult> {
    return this.p.worker.command(id, { type: 'hold' });
  }

  release(id: string): Promise<CommandResult> {
    return this.p.worker.command(id, { type: 'release' });
  }

  delete(id: string): Promise<CommandResult> {
    return this.p.worker.command(id, { type: 'delete' });
  }

  tokenStatus(): AccountStatus[] {
    return this.p.tokens.status();
  }

  /**
   * Stores a refresh token (from `token import` or the grant `authorize` obtained). In the
   * daemon the answer comes once the grant is in use: a fresh access token was obtained with it.
   */
  async importToken(
    account: string,
    refreshToken: string,
    extra: { authorizedEmail?: string } = {},
  ): Promise<OpResult> {
    const acct = this.p.config().accounts.find((a) => a.name === account);
    if (!acct) return this.unknownAccount(account);
    try {
      await this.p.tokens.importRefreshToken(account, refreshToken, extra);
    } catch (e) {
      return { ok: false, message: (e as Error).message };
    }
    if (!this.p.live)
      return {
        ok: true,
        message: `Stored the refresh token for account ${account}; the daemon uses it when it starts.`,
      };
    try {
      await this.p.tokens.refresh(account);
    } catch (e) {
      const fix = e instanceof NeedsReauthError ? ` Fix: ${fixHint(acct)}` : '';
      return {
        ok: false,
        message: `Stored the refresh token for account ${account}, but it does not work yet: ${(e as Error).message}.${fix}`,
      };
    }
    const st = this.p.tokens.status().find((s) => s.account === account);
    return {
      ok: true,
      message: `Account ${account}: the new grant is in use (access token valid until ${st?.accessTokenExpiresAt ?? '?'}); its held mail is being sent.`,
    };
  }

  private unknownAccount(account: string): OpResult {
    const names = this.p.config().accounts.map((a) => a.name);
    return { ok: false, message: `no account named "${account}" (configured: ${names.join(', ')})` };
  }

  async refresh(account: string): Promise<OpResult> {
    const acct = this.p.config().accounts.find((a) => a.name === account);
    if (!acct) return this.unknownAccount(account);
    try {
      await this.p.tokens.refresh(account);
    } catch (e) {
      const fix = e instanceof NeedsReauthError ? `\nFix: ${fixHint(acct)}` : '';
      return { ok: false, message: `${(e as Error).message}${fix}` };
    }
    const st = this.p.tokens.status().find((s) => s.account === account);
    return {
      ok: true,
      message: `Account ${account}: access token refreshed, valid until ${st?.accessTokenExpiresAt ?? '?'}.`,
    };
  }

  /**
   * A one-time login link for the web console. Asked over the control socket, so only who may
   * use that socket gets one: the console never grants more than the socket does.
   */
  consoleLink(): ConsoleLinkResult {
    if (!this.p.consoleLink)
      return {
        ok: false,
        message: 'no daemon is running; the web console is part of it (start it: xoauth2-bridge serve)',
      };
    return (
      this.p.consoleLink() ?? {
        ok: false,
        message: 'the web console is off (http.console: false); set http.console: true and reload',
      }
    );
  }

  /** `send-test`: one message straight through an account's upstream, by the owner of the token store. */
  async sendTest(to: string, account?: string): Promise<OpResult> {
    if (!this.p.upstream) return { ok: false, message: 'send-test is not available here' };
    return sendTestMessage(this.p.config(), this.p.upstream, this.p.log ?? nullLogger, { to, account });
  }

  async reload(): Promise<OpResult> {
    if (!this.p.reload) return { ok: false, message: 'no daemon is running; there is nothing to reload' };
    return (await this.p.reload())
      ? { ok: true, message: 'config reloaded' }
      : { ok: false, message: 'reload rejected, the running config is kept (see the daemon log for why)' };
  }
}

function queuedRow(v: QueuedView, now: number): QueueRow {
  const e = v.env;
  return {
    id: e.id,
    account: e.account,
    user: e.user,
    from: e.mailFrom,
    state: v.state,
    reason: v.reason,
    rcpts: e.rcpts.map((r) => ({ address: r.address, status: r.status, ...(r.reply ? { reply: r.reply } : {}) })),
    attempts: e.attempts,
    nextAttemptAt: v.state === 'held' && v.reason !== 'quota' ? null : e.nextAttemptAt,
    lastReply: e.lastReply ?? null,
    ...(v.waiting ? { waiting: v.waiting } : {}),
    size: e.size,
    receivedAt: e.receivedAt,
    ageMs: Math.max(0, now - Date.parse(e.receivedAt)),
    isBounce: e.isBounce === true,
  };
}

function failedRow(f: FailedEnvelope, now: number): QueueRow {
  return {
    ...queuedRow({ env: f, state: 'failed', reason: null }, now),
    reason: f.failCode ?? null,
    nextAttemptAt: null,
    failReason: f.failReason,
    failedAt: f.failedAt,
  };
}

function corruptRow(c: CorruptEntry): QueueRow {
  return {
    id: c.id,
    account: null,
    user: null,
    from: null,
    state: 'corrupt',
    reason: null,
    rcpts: [],
    attempts: 0,
    nextAttemptAt: null,
    lastReply: null,
    size: 0,
    receivedAt: null,
    ageMs: null,
    isBounce: false,
    file: c.file,
    error: c.error,
  };
}
