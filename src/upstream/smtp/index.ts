// The SMTP transport: relays a spooled message to the provider's SMTP server (Gmail, Exchange
// Online) with SASL XOAUTH2 over verified TLS. The delivery worker only sees
// `send(envelope, message)` and a classified result.
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { rootCertificates, createSecureContext } from 'node:tls';
import { SMTPPool, sendRaw, assertRawSendContract } from './rawSend.js';
import type { Config, AccountConfig } from '../../config/schema.js';
import type { Envelope, MessageSource, SendResult, TokenSource, Upstream, RecipientResult } from '../../types.js';
import { bunyanAdapter, type Logger } from '../../log/logger.js';
import { NeedsReauthError } from '../../oauth/service.js';
import { OPERATOR_HOLD_MS, classifyError, classifyReply, replyText, type UpstreamError } from '../classify.js';
import { redactString } from '../../log/redact.js';
import { providerFor } from '../../providers/index.js';
import type { Transport as RegisteredTransport } from '../transport.js';

type Transport = SMTPPool;

interface AccountTransport {
  transport: Transport;
  /** The config it was built from, to rebuild only when it changed on reload. */
  key: string;
}

/**
 * The token service could not give this connection a token. nodemailer passes the error
 * object it got from provisionCallback on to the send that waited for the connection, so
 * each send judges its own failure (a token blip on one pooled connection says nothing
 * about a 550 on another).
 */
class TokenUnavailable extends Error {
  constructor(readonly reason: Error) {
    super(reason.message);
    this.name = 'TokenUnavailable';
  }
}

/**
 * The server refused the access token this connection authenticated with (after its 334
 * error challenge). nodemailer would fetch a new token on its own and AUTH again; the
 * provision callback refuses that, so every rejection reaches send(), the one place that
 * retries, and the token service, the one owner of refreshing.
 */
class TokenRejected extends Error {
  constructor(readonly token: string | undefined) {
    super('the upstream refused the access token (AUTH XOAUTH2)');
    this.name = 'TokenRejected';
  }
}

/** The nodemailer 10.6.1 pool internals read by messageOfConnection. */
interface PoolInternals {
  _connections?: Array<{
    auth?: { oauth2?: unknown };
    queueEntry?: false | { mail?: { message?: { messageId?: () => string } } };
  }>;
}

/**
 * The queue id of the message a pooled connection is authenticating for: nodemailer gives each
 * pool resource its own XOAuth2 object (`oauth2`, the provision callback's `this`) and assigns
 * the message before the resource connects. Undefined if the pool's shape is not as expected.
 */
function messageOfConnection(pool: Transport, oauth2: unknown): string | undefined {
  const conn = (pool as unknown as PoolInternals)._connections?.find((c) => c.auth?.oauth2 === oauth2);
  const entry = conn?.queueEntry;
  try {
    return entry ? entry.mail?.message?.messageId?.() : undefined;
  } catch {
    return undefined;
  }
}

export interface SmtpUpstreamOptions {
  config: Config;
  log: Logger;
  tokens: TokenSource;
  /** Name announced in EHLO; defaults to the host name. */
  ehloName?: string;
}

export class SmtpUpstream implements RegisteredTransport {
  private config: Config;
  private readonly log: Logger;
  private readonly tokens: TokenSource;
  private readonly transports = new Map<string, AccountTransport>();
  private readonly ehloName: string;
  /** Queue id -> the access token the connection carrying it authenticated with (set by the provision callback). */
  private readonly authTokens = new Map<string, string>();

  constructor(opts: SmtpUpstreamOptions) {
    assertRawSendContract();
    this.config = opts.config;
    this.log = opts.log.child({ component: 'upstream' });
    this.tokens = opts.tokens;
    this.ehloName = opts.ehloName ?? hostname();
  }

  reload(config: Config): void {
    this.config = config;
    for (const [name, t] of this.transports) {
      const acct = config.accounts.find((a) => a.name === name);
      if (!acct || transportKey(acct) !== t.key) {
        t.transport.close();
        this.transports.delete(name);
      }
    }
  }

  describe(a: AccountConfig): string {
    return `${a.upstream.host}:${a.upstream.port}`;
  }

  async close(): Promise<void> {
    for (const t of this.transports.values()) t.transport.close();
    this.transports.clear();
  }

  private transportFor(acct: AccountConfig): AccountTransport {
    const existing = this.transports.get(acct.name);
    if (existing) return existing;
    const up = acct.upstream;
    const entry: AccountTransport = { transport: undefined as unknown as Transport, key: transportKey(acct) };
    const tokens = this.tokens;
    const authTokens = this.authTokens;
    // Verification is never optional: caFile only adds anchors to the system roots.
    const implicit = (up.tls ?? (up.port === 465 ? 'implicit' : 'starttls')) === 'implicit';
    // One TLS context per account, not one per connection (parsing every root CA each time is costly).
    const secureContext = createSecureContext({
      minVersion: 'TLSv1.2',
      ...(up.caFile ? { ca: [...rootCertificates, readFileSync(up.caFile, 'utf8')] } : {}),
    });
    entry.transport = new SMTPPool({
      pool: true,
      host: up.host,
      port: up.port,
      secure: implicit,
      requireTLS: !implicit, // 587: STARTTLS or nothing
      name: this.ehloName,
      maxConnections: up.maxConnections,
      maxMessages: up.maxMessages,
      connectionTimeout: 30_000,
      greetingTimeout: 30_000,
      socketTimeout: 120_000,
      tls: { rejectUnauthorized: true, minVersion: 'TLSv1.2', servername: up.host, secureContext },
      auth: {
        type: 'OAuth2',
        // App-only Microsoft: mailbox (a shared mailbox the app may use) is the XOAUTH2 user.
        user: acct.mailbox ?? acct.email,
        // nodemailer calls this once per connection, before its AUTH (`this`: the connection's
        // XOAuth2 object, holding the token it was given). After a 334 challenge and 535 it
        // calls again with renew=true: that is refused (TokenRejected), so the rejection ends
        // the attempt and send() below handles it like a bare 535: one retry per rejection.
        provisionCallback(
          this: { accessToken?: string | false },
          _user: string,
          renew: boolean,
          cb: (err: Error | null, token?: string) => void,
        ) {
          if (renew) {
            cb(new TokenRejected(this.accessToken || undefined));
            return;
          }
          const id = messageOfConnection(entry.transport, this);
          tokens.getAccessToken(acct.name).then(
            (token) => {
              if (id !== undefined) authTokens.set(id, token);
              cb(null, token);
            },
            (err: Error) => cb(new TokenUnavailable(err)),
          );
        },
      },
      logger: bunyanAdapter(this.log, 'smtp-out'),
      debug: false,
    } as SMTPPool.Options);
    this.transports.set(acct.name, entry);
    return entry;
  }

  async send(env: Envelope, message: MessageSource): Promise<SendResult> {
    const r = await this.attempt(env, message);
    // Replies and token errors end up in the envelope (spool), queue list and logs.
    return {
      ...r,
      response: redactString(r.response),
      rejected: r.rejected.map((x) => ({ ...x, response: redactString(x.response) })),
    };
  }

  private async attempt(env: Envelope, message: MessageSource): Promise<SendResult> {
    const acct = this.config.accounts.find((a) => a.name === env.account);
    if (!acct)
      return {
        outcome: 'transient',
        response: `account "${env.account}" is not configured`,
        accepted: [],
        rejected: [],
      };
    const t = this.transportFor(acct);
    const accepted: string[] = [];
    const rejected: RecipientResult[] = [];
    try {
      return await this.chunks(acct, t, env, message, accepted, rejected);
    } finally {
      this.authTokens.delete(env.id);
    }
  }

  private async chunks(
    acct: AccountConfig,
    t: AccountTransport,
    env: Envelope,
    message: MessageSource,
    accepted: string[],
    rejected: RecipientResult[],
  ): Promise<SendResult> {
    const per = acct.limits.recipientsPerMessage;
    let lastResponse = '';
    let renewed = false;
    // Gmail takes at most 100 recipients per transaction: split, and stop at the first
    // failure that is not about single recipients so a retry resends only the rest.
    for (let i = 0; i < env.rcptTo.length; i += per) {
      const chunk = env.rcptTo.slice(i, i + per);
      this.authTokens.delete(env.id);
      try {
        const info = await sendRaw(
          t.transport,
          env.id,
          { from: env.mailFrom, to: chunk, use8BitMime: env.bodyType === '8bitmime', size: env.size },
          message,
        );
        // A new connection authenticated for this chunk: its token works.
        const used = this.authTokens.get(env.id);
        if (used !== undefined) this.tokens.tokenWorked?.(acct.name, used);
        lastResponse = info.response ?? '';
        // nodemailer takes any reply starting with "2" as success; only a real 250 is.
        if (!/^250(?:[ -]|$)/.test(lastResponse))
          return {
            outcome: 'transient',
            response: `malformed reply to DATA: ${oneLine(lastResponse) || '(empty)'}`,
            accepted,
            rejected,
          };
        const ok = new Set((info.accepted as (string | { address: string })[]).map(addr));
        for (const r of chunk) if (ok.has(r.toLowerCase())) accepted.push(r);
        collectRejected(info as unknown as { rejectedErrors?: UpstreamError[]; rejected?: unknown[] }, chunk, rejected);
        // Recipients answered 4xx inside an otherwise good transaction stay pending.
        const pending = chunk.filter((r) => !ok.has(r.toLowerCase()) && !rejected.some((x) => x.rcpt === r));
        if (pending.length)
          return { outcome: 'transient', response: lastResponse || 'some recipients deferred', accepted, rejected };
      } catch (e) {
        const err = e as UpstreamError & { rejectedErrors?: UpstreamError[]; rejected?: unknown[] };
        if (e instanceof TokenUnavailable) {
          const reauth = e.reason instanceof NeedsReauthError;
          return { outcome: reauth ? 'auth' : 'transient', response: `token: ${e.reason.message}`, accepted, rejected };
        }
        const ms = providerFor(acct).smtpReply?.(replyText(err), acct) ?? null;
        if (ms?.hold && (renewed || !/\b5\.7\.3\b/.test(replyText(err)))) {
          // Only an operator can fix this (5.7.139 at once; app-only 5.7.3 after a fresh token was refused too).
          this.tokens.holdAccount?.(
            acct.name,
            ms.hold,
            OPERATOR_HOLD_MS,
            ms.smtpAuthRefused ? 'smtp-auth-refused' : undefined,
          );
          return {
            outcome: 'transient',
            response: `${replyText(err)} (held: ${ms.hold.replace(/ACCOUNT\b/g, acct.name)})`,
            accepted,
            rejected,
            ...(ms.smtpAuthRefused ? { refusal: 'smtp-auth-refused' as const } : {}),
          };
        }
        if (!renewed && (e instanceof TokenRejected || (err.code === 'EAUTH' && classifyError(err) === 'auth'))) {
          // The server refused the token (after a 334 challenge, or a bare 535). The token
          // service answers the rejection of exactly that token (a newer one, the refresh in
          // flight, one new refresh, or needs-reauth if it had itself answered a rejection), and
          // this chunk is tried once more. AUTH comes before MAIL, so nothing was sent.
          const refused = e instanceof TokenRejected ? e.token : this.authTokens.get(env.id);
          renewed = true;
          try {
            await this.tokens.getAccessToken(
              acct.name,
              refused !== undefined ? { rejected: refused } : { force: true },
            );
          } catch (te) {
            const reauth = te instanceof NeedsReauthError;
            return {
              outcome: reauth ? 'auth' : 'transient',
              response: `token: ${(te as Error).message}`,
              accepted,
              rejected,
            };
          }
          i -= per;
          continue;
        }
        if (e instanceof TokenRejected)
          return { outcome: 'auth', response: `${e.message} again, after a new one`, accepted, rejected };
        if (err.code === 'EENVELOPE' && err.rejectedErrors?.length) {
          // Every recipient of this chunk refused: the permanent ones bounce, 4xx ones wait.
          collectRejected(err, chunk, rejected);
          const transientOnes = chunk.filter((r) => !rejected.some((x) => x.rcpt === r));
          if (transientOnes.length) return { outcome: 'transient', response: replyText(err), accepted, rejected };
          lastResponse = replyText(err);
          continue;
        }
        // Exchange's own daily limit answers 554 5.2.0: a quota (hold), not a reason to bounce.
        const outcome = ms?.quota ? 'quota' : classifyError(err);
        const response = ms?.explain
          ? `${replyText(err)} (${ms.explain.replace(/ACCOUNT\b/g, acct.name)})`
          : replyText(err);
        // A fresh token refused the same way: SMTP AUTH may be off for the mailbox.
        const refusal = renewed && ms?.smtpAuthRefused ? { refusal: 'smtp-auth-refused' as const } : {};
        return { outcome: outcome === 'ok' ? 'transient' : outcome, response, accepted, rejected, ...refusal };
      }
    }
    if (!accepted.length && rejected.length)
      return { outcome: 'permanent', response: rejected[0].response, accepted, rejected };
    return { outcome: 'ok', response: lastResponse, accepted, rejected };
  }
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim().slice(0, 200);
}

function addr(a: string | { address: string }): string {
  return (typeof a === 'string' ? a : a.address).toLowerCase();
}

/** Recipients refused with 5xx inside a transaction bounce on their own; 4xx stay pending. */
function collectRejected(src: { rejectedErrors?: UpstreamError[] }, chunk: string[], out: RecipientResult[]): void {
  for (const re of src.rejectedErrors ?? []) {
    const rcpt = (re as UpstreamError & { recipient?: string }).recipient;
    const match = chunk.find((r) => r.toLowerCase() === rcpt?.toLowerCase());
    if (!match) continue;
    const outcome = classifyReply(re.responseCode, re.response ?? '');
    if (outcome === 'permanent') out.push({ rcpt: match, response: replyText(re) });
  }
}

function transportKey(a: AccountConfig): string {
  return JSON.stringify([a.mailbox ?? a.email, a.upstream]);
}
