// The Gmail API upstream (transport gmail-api): sends the spooled message with
// users.messages.send through the media upload endpoint, streamed from the spool file, with a
// token that needs only the gmail.send scope. Same interface as the SMTP upstream: the
// delivery worker only sees send(envelope, file) and a classified result.
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import type { Config, AccountConfig } from '../../config/schema.js';
import type { Envelope, MessageSource, SendResult, TokenSource, TransportSizeLimit } from '../../types.js';
import type { Transport } from '../transport.js';
import { openMessage } from '../../spool/message.js';
import type { Logger } from '../../log/logger.js';
import { NeedsReauthError } from '../../oauth/service.js';
import { googleApiTransporter } from '../../providers/google/client.js';
import { redactString } from '../../log/redact.js';
import { planApiSend, bccField, type ApiPlan } from '../apiEnvelope.js';
import { classifyApiAnswer, acceptedText } from './classify.js';
import { OPERATOR_HOLD_MS } from '../classify.js';

/** Gmail's limit for a message uploaded through the API. */
export const GMAIL_API_MAX_BYTES = 35 * 1024 * 1024;

export interface GmailApiUpstreamOptions {
  config: Config;
  log: Logger;
  tokens: TokenSource;
}

/** Messages over the API's limit bounce at DATA time (552), not after queuing. */
export function gmailApiSizeLimit(): TransportSizeLimit {
  return { bytes: GMAIL_API_MAX_BYTES, reason: `Gmail API limit ${GMAIL_API_MAX_BYTES} bytes` };
}

export class GmailApiUpstream implements Transport {
  private config: Config;
  private readonly log: Logger;
  private readonly tokens: TokenSource;
  private readonly clients = new Map<string, { agent: https.Agent; http: ReturnType<typeof googleApiTransporter> }>();
  private readonly retired: https.Agent[] = [];

  constructor(opts: GmailApiUpstreamOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'upstream', transport: 'gmail-api' });
    this.tokens = opts.tokens;
  }

  reload(config: Config): void {
    this.config = config;
    // A changed caFile takes effect with the next upload; uploads in flight keep their
    // connection (destroying it could cut one Gmail already took, and send it twice).
    for (const c of this.clients.values()) this.retired.push(c.agent);
    this.clients.clear();
  }

  describe(a: AccountConfig): string {
    return `${a.upstream.apiUrl} (Gmail API)`;
  }

  async close(): Promise<void> {
    for (const c of this.clients.values()) c.agent.destroy();
    for (const a of this.retired.splice(0)) a.destroy();
    this.clients.clear();
  }

  /** Whether the API can deliver this message to exactly its envelope, and the Bcc it needs. */
  plan(env: Envelope, message: MessageSource): Promise<ApiPlan> {
    const acct = this.config.accounts.find((a) => a.name === env.account);
    return planApiSend(message, env.rcptTo, acct?.limits.recipientsPerMessage ?? 100, 'the Gmail API');
  }

  async send(env: Envelope, message: MessageSource, plan?: ApiPlan): Promise<SendResult> {
    const r = await this.attempt(env, message, plan);
    return { ...r, response: redactString(r.response) };
  }

  private async attempt(env: Envelope, message: MessageSource, given?: ApiPlan): Promise<SendResult> {
    const none = { accepted: [] as string[], rejected: [] };
    const acct = this.config.accounts.find((a) => a.name === env.account);
    if (!acct) return { outcome: 'transient', response: `account "${env.account}" is not configured`, ...none };
    const plan = given ?? (await this.plan(env, message));
    if (!plan.ok)
      return {
        outcome: 'transport',
        response: `not sent: ${plan.reason} (transport gmail-api; with transport auto it goes over SMTP)`,
        ...none,
      };
    const prefix = Buffer.from(bccField(plan.bcc), 'utf8');
    const bytes = prefix.length + message.size;
    if (bytes > GMAIL_API_MAX_BYTES)
      return {
        outcome: 'permanent',
        response: `552 5.3.4 message of ${bytes} bytes exceeds the Gmail API limit of ${GMAIL_API_MAX_BYTES} bytes [gmail-api]`,
        ...none,
      };
    // The token Gmail refused, named to the token service so one refresh replaces it (and a
    // fresh token refused again means needs-reauth), whoever else saw it refused.
    let refused: string | undefined;
    for (;;) {
      let token: string;
      try {
        token = await this.tokens.getAccessToken(acct.name, refused === undefined ? {} : { rejected: refused });
      } catch (e) {
        return {
          outcome: e instanceof NeedsReauthError ? 'auth' : 'transient',
          response: `token: ${(e as Error).message}`,
          ...none,
        };
      }
      const v = await this.upload(acct, token, prefix, message, bytes);
      if (v.ok) {
        this.tokens.tokenWorked?.(acct.name, token);
        return { outcome: 'ok', response: v.response, accepted: [...env.rcptTo], rejected: [] };
      }
      if (v.refresh && refused === undefined) {
        // Gmail refused the token (revoked, expired early): one fresh one, then needs-reauth.
        refused = token;
        continue;
      }
      if (v.hold) {
        this.tokens.holdAccount?.(acct.name, v.hold, OPERATOR_HOLD_MS);
        return {
          outcome: 'transient',
          response: `${v.response} (held: ${v.hold.replace(/ACCOUNT\b/g, acct.name)})`,
          ...none,
        };
      }
      return { outcome: v.outcome, response: v.response, ...none };
    }
  }

  /** One media upload: the Bcc prefix, then the spool file, streamed (never held in memory). */
  private async upload(
    acct: AccountConfig,
    token: string,
    prefix: Buffer,
    message: MessageSource,
    bytes: number,
  ): Promise<ReturnType<typeof classifyApiAnswer> & { ok?: boolean }> {
    const body = prefix.length
      ? Readable.from(withPrefix(prefix, message), { objectMode: false })
      : openMessage(message);
    const base = acct.upstream.apiUrl.replace(/\/+$/, '');
    try {
      const res = await this.clientFor(acct).request({
        method: 'POST',
        url: `${base}/upload/gmail/v1/users/me/messages/send`,
        params: { uploadType: 'media' },
        headers: {
          Authorization: `Bearer ${token}`,
          'Content-Type': 'message/rfc822',
          'Content-Length': String(bytes),
        },
        data: body,
        responseType: 'json',
        // A streamed body cannot be replayed: the delivery worker's backoff retries instead.
        retry: false,
        maxRedirects: 0,
        // Room for a 35 MB upload on a slow line (at 100 KB/s), not forever.
        timeout: 60_000 + Math.ceil(bytes / 100),
      });
      return { ok: true, outcome: 'ok', response: acceptedText(res.status, res.data) };
    } catch (e) {
      body.destroy();
      // Only status, Google's answer and the error's own text: the request config carries the token.
      const err = e as { response?: { status?: number; data?: unknown }; code?: unknown; message?: string };
      const net = `${typeof err.code === 'string' ? err.code + ' ' : ''}${String(err.message ?? e).split('\n')[0]}`;
      const v = classifyApiAnswer(err.response?.status, err.response?.data, net);
      this.log.debug('gmail-api answer', {
        account: acct.name,
        status: err.response?.status ?? null,
        reply: redactString(v.response),
      });
      return v;
    }
  }

  /** Verified TLS to the API host; upstream.caFile adds trust anchors to the system roots. */
  private clientFor(acct: AccountConfig): ReturnType<typeof googleApiTransporter> {
    const key = acct.upstream.caFile ?? '';
    let c = this.clients.get(key);
    if (!c) {
      const ca = acct.upstream.caFile ? [...rootCertificates, readFileSync(acct.upstream.caFile, 'utf8')] : undefined;
      const agent = new https.Agent({ keepAlive: true, minVersion: 'TLSv1.2', ...(ca ? { ca } : {}) });
      c = { agent, http: googleApiTransporter(agent) };
      this.clients.set(key, c);
    }
    return c.http;
  }
}

async function* withPrefix(prefix: Buffer, message: MessageSource): AsyncIterable<Buffer> {
  yield prefix;
  yield* openMessage(message) as AsyncIterable<Buffer>;
}
