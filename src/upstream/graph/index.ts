// The Microsoft Graph upstream (transport graph): sends the spooled message with
// POST /v1.0/users/{mailbox}/sendMail as base64 MIME (text/plain), byte-exact after the
// bridge's Received: line, with a token for https://graph.microsoft.com (delegated Mail.Send,
// or app-only .default with the Mail.Send application permission). Same interface as the
// other upstreams: the delivery worker only sees send(envelope, file) and a classified result.
// Graph's per-mailbox limits (4 concurrent requests, Retry-After) are kept here (limiter.ts).
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Config, AccountConfig } from '../../config/schema.js';
import type { Envelope, MessageSource, SendResult, TokenSource } from '../../types.js';
import type { Transport } from '../transport.js';
import { readMessage, openMessage } from '../../spool/message.js';
import type { Logger } from '../../log/logger.js';
import { NeedsReauthError } from '../../oauth/service.js';
import { addSecret, redactString } from '../../log/redact.js';
import type { ApiPlan } from '../apiEnvelope.js';
import { classifyGraphAnswer, type GraphContext, type GraphVerdict } from './classify.js';
import { OPERATOR_HOLD_MS } from '../classify.js';
import { graphBccField, planGraphSend } from './envelope.js';
import { MailboxLimiter } from './limiter.js';
import { DraftJournal } from './journal.js';
import { parseDraft } from './draft.js';
import { graphRequest, type HttpAnswer } from './http.js';
import { GRAPH_MAX_MESSAGE, GRAPH_MAX_REQUEST, graphMaxMessageBytes } from './size.js';

/** An attachment above this goes through an upload session (one POST takes up to 3 MB). */
const INLINE_ATTACHMENT_MAX = 3 * 1024 * 1024;
/** Upload-session chunk: at most 4 MB; a multiple of 320 KiB as Microsoft recommends (3.75 MiB). */
export const UPLOAD_CHUNK = 12 * 320 * 1024;

export interface GraphUpstreamOptions {
  config: Config;
  log: Logger;
  tokens: TokenSource;
}

/** The base64 length of n bytes. */
const base64Length = (n: number) => 4 * Math.ceil(n / 3);

export class GraphUpstream implements Transport {
  private config: Config;
  private readonly log: Logger;
  private readonly tokens: TokenSource;
  private readonly agents = new Map<string, https.Agent>();
  private readonly retired: https.Agent[] = [];
  readonly limiter = new MailboxLimiter();
  /** Large messages are parsed and held in memory whole: one at a time bounds that to one message. */
  private readonly largeSlot = new MailboxLimiter(1);

  constructor(opts: GraphUpstreamOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'upstream', transport: 'graph' });
    this.tokens = opts.tokens;
  }

  reload(config: Config): void {
    this.config = config;
    // A changed caFile takes effect with the next request; requests in flight keep their connection.
    for (const a of this.agents.values()) this.retired.push(a);
    this.agents.clear();
  }

  async close(): Promise<void> {
    for (const a of this.agents.values()) a.destroy();
    for (const a of this.retired.splice(0)) a.destroy();
    this.agents.clear();
  }

  describe(acct: AccountConfig): string {
    return `${acct.upstream.apiUrl}/v1.0/users/${acct.mailbox ?? acct.email}/sendMail (Microsoft Graph)`;
  }

  /** Whether Graph can deliver this message to exactly its envelope, and the Bcc it needs. */
  plan(env: Envelope, message: MessageSource): Promise<ApiPlan> {
    const acct = this.config.accounts.find((a) => a.name === env.account);
    return planGraphSend(message, env.rcptTo, acct?.limits.recipientsPerMessage ?? 100);
  }

  /** `tokens`: where the Graph token comes from when not the token service (transport auto's app-only Graph token). */
  async send(env: Envelope, message: MessageSource, opts: { tokens?: TokenSource } = {}): Promise<SendResult> {
    const r = await this.attempt(env, message, opts.tokens ?? this.tokens);
    return { ...r, response: redactString(r.response) };
  }

  private async attempt(env: Envelope, message: MessageSource, tokens: TokenSource): Promise<SendResult> {
    const none = { accepted: [] as string[], rejected: [] };
    const acct = this.config.accounts.find((a) => a.name === env.account);
    if (!acct) return { outcome: 'transient', response: `account "${env.account}" is not configured`, ...none };
    const mailbox = acct.mailbox ?? acct.email;
    const plan = await this.plan(env, message);
    if (!plan.ok) return { outcome: 'transport', response: `not sent: ${plan.reason} (transport graph)`, ...none };
    const prefix = Buffer.from(graphBccField(plan.bcc), 'utf8');
    const encoded = base64Length(prefix.length + message.size);
    const large = encoded > GRAPH_MAX_REQUEST;
    if (large && acct.upstream.largeMessages && message.size > GRAPH_MAX_MESSAGE)
      return {
        outcome: 'permanent',
        response: `552 5.3.4 message of ${message.size} bytes exceeds Exchange Online's limit of ${GRAPH_MAX_MESSAGE} bytes (150 MB) [graph]`,
        ...none,
      };
    if (large && !acct.upstream.largeMessages)
      return {
        outcome: 'permanent',
        response: `552 5.3.4 message of ${prefix.length + message.size} bytes is ${encoded} bytes as base64, over Microsoft Graph's sendMail limit of ${GRAPH_MAX_REQUEST} bytes (4 MB); upstream.largeMessages: true sends up to 150 MB (needs Mail.ReadWrite) [graph]`,
        ...none,
      };
    const ctx: GraphContext = {
      mailbox,
      grant: acct.oauth.type === 'app' ? 'app' : 'user',
      clientId: 'clientId' in acct.oauth ? acct.oauth.clientId : '',
    };
    const release = await this.limiter.acquire(mailbox);
    try {
      let renewed = false;
      for (;;) {
        // Graph asked this mailbox to wait (Retry-After): defer without a request.
        const left = this.limiter.waitLeft(mailbox, Date.now(), large ? message.size : 0);
        if (left > 0)
          return {
            outcome: 'transient',
            response: `deferred: Graph's limits for ${mailbox} (Retry-After, requests per 10 minutes, or MB uploaded per 5 minutes) allow the next request in ${Math.ceil(left / 1000)} s [graph]`,
            retryAfterMs: left,
            ...none,
          };
        let token: string;
        try {
          token = await tokens.getAccessToken(acct.name, { force: renewed });
        } catch (e) {
          return {
            outcome: e instanceof NeedsReauthError ? 'auth' : 'transient',
            response: `token: ${(e as Error).message}`,
            ...none,
          };
        }
        const v = large
          ? await this.largeSlot.acquire('*').then(async (done) => {
              try {
                return await this.sendLarge(env, acct, mailbox, token, message, plan.bcc, ctx);
              } finally {
                done();
              }
            })
          : await this.post(
              acct,
              mailbox,
              token,
              Buffer.concat([prefix, await readMessage(message)]).toString('base64'),
              ctx,
            );
        if (v.outcome === 'ok') {
          this.limiter.accepted(mailbox);
          return { outcome: 'ok', response: v.response, accepted: [...env.rcptTo], rejected: [] };
        }
        if (v.retryAfterMs !== undefined) this.limiter.pause(mailbox, Date.now() + v.retryAfterMs);
        if (v.refresh && !renewed) {
          // Graph refused the token (revoked, expired early): one fresh one, then needs-reauth.
          renewed = true;
          continue;
        }
        if (v.hold) {
          tokens.holdAccount?.(acct.name, v.hold, OPERATOR_HOLD_MS);
          return {
            outcome: 'transient',
            response: `${v.response} (held: ${v.hold.replace(/ACCOUNT\b/g, acct.name)})`,
            ...none,
          };
        }
        if (v.badRecipient) {
          const bad = env.rcptTo.find((r) => r.toLowerCase() === v.badRecipient!.toLowerCase());
          // Graph refused the whole message for one address: bounce that one, the rest go again without it.
          if (bad && env.rcptTo.length > 1)
            return {
              outcome: 'transient',
              response: v.response,
              accepted: [],
              rejected: [{ rcpt: bad, response: v.response }],
            };
        }
        return {
          outcome: v.outcome,
          response: v.response,
          ...(v.retryAfterMs !== undefined ? { retryAfterMs: v.retryAfterMs } : {}),
          ...none,
        };
      }
    } finally {
      release();
    }
  }

  /** One sendMail request with the base64 MIME body. */
  private async post(
    acct: AccountConfig,
    mailbox: string,
    token: string,
    body: string,
    ctx: GraphContext,
  ): Promise<GraphVerdict> {
    const r = await this.call(
      acct,
      token,
      'POST',
      `/v1.0/users/${encodeURIComponent(mailbox)}/sendMail`,
      Buffer.from(body, 'latin1'),
      'text/plain',
    );
    return this.verdict(acct, r, ctx, 'sendMail');
  }

  private verdict(acct: AccountConfig, r: HttpAnswer, ctx: GraphContext, what: string): GraphVerdict {
    if (r.status !== undefined && r.status >= 200 && r.status < 300)
      return {
        outcome: 'ok',
        response: `${r.status} graph ${what} accepted${r.headers['request-id'] ? ` request-id=${String(r.headers['request-id'])}` : ''}`,
      };
    const v = classifyGraphAnswer(r.status, r.data, r.headers, ctx, r.netError);
    this.log.debug('graph answer', {
      account: acct.name,
      what,
      status: r.status ?? null,
      reply: redactString(v.response),
    });
    return v;
  }

  /**
   * A message over sendMail's 4 MB: a draft from the parsed MIME, attachments over 3 MB through
   * upload sessions, then /send. The draft id is on disk before anything is uploaded to it.
   */
  private async sendLarge(
    env: Envelope,
    acct: AccountConfig,
    mailbox: string,
    token: string,
    message: MessageSource,
    bcc: string[],
    ctx: GraphContext,
  ): Promise<GraphVerdict> {
    const journal = new DraftJournal(this.config.stateDir);
    const box = `/v1.0/users/${encodeURIComponent(mailbox)}/messages`;
    const json = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf8');
    const earlier = await journal.get(env.id);
    if (earlier?.phase === 'sending') {
      // A send may have happened before a crash or a lost answer: send the same draft, never a new one.
      const r = await this.call(acct, token, 'POST', `${box}/${encodeURIComponent(earlier.draftId)}/send`);
      if (r.status === 404) {
        await journal.remove(env.id);
        return {
          outcome: 'ok',
          response: '404 graph draft already sent (it left the Drafts folder before the last answer arrived) [graph]',
        };
      }
      const v = this.verdict(acct, r, ctx, 'send (resumed draft)');
      if (v.outcome === 'ok' || v.outcome === 'permanent') await journal.remove(env.id);
      return v;
    }
    if (earlier) {
      // Stopped while uploading: the draft may lack attachments; delete it and start over.
      const r = await this.call(acct, token, 'DELETE', `${box}/${encodeURIComponent(earlier.draftId)}`);
      if (r.status !== 404 && !(r.status !== undefined && r.status < 300))
        return this.verdict(acct, r, ctx, 'delete unfinished draft');
      await journal.remove(env.id);
      this.log.info('graph: deleted an unfinished draft from an earlier attempt', { id: env.id, account: acct.name });
    }
    const parsed = await parseDraft(openMessage(message), { mailbox, extraBcc: bcc });
    const created = await this.call(acct, token, 'POST', box, json(parsed.json), 'application/json');
    const draftId =
      created.data && typeof created.data === 'object' ? (created.data as { id?: unknown }).id : undefined;
    if (created.status !== 201 || typeof draftId !== 'string') return this.verdict(acct, created, ctx, 'create draft');
    const at = `${box}/${encodeURIComponent(draftId)}`;
    await journal.put(env.id, { draftId, mailbox, phase: 'uploading' });
    const abandon = async (v: GraphVerdict): Promise<GraphVerdict> => {
      const d = await this.call(acct, token, 'DELETE', at);
      if (d.status === 404 || (d.status !== undefined && d.status < 300)) await journal.remove(env.id);
      return v;
    };
    for (const [i, a] of parsed.attachments.entries()) {
      const meta = {
        name: a.name,
        contentType: a.contentType,
        isInline: a.isInline,
        ...(a.contentId ? { contentId: a.contentId } : {}),
      };
      if (a.bytes.length <= INLINE_ATTACHMENT_MAX) {
        const r = await this.call(
          acct,
          token,
          'POST',
          `${at}/attachments`,
          json({ '@odata.type': '#microsoft.graph.fileAttachment', ...meta, contentBytes: a.bytes.toString('base64') }),
          'application/json',
        );
        if (r.status !== 201) return abandon(this.verdict(acct, r, ctx, 'add attachment'));
        continue;
      }
      const s = await this.call(
        acct,
        token,
        'POST',
        `${at}/attachments/createUploadSession`,
        json({ AttachmentItem: { attachmentType: 'file', ...meta, size: a.bytes.length } }),
        'application/json',
      );
      const uploadUrl =
        s.data && typeof s.data === 'object' ? (s.data as { uploadUrl?: unknown }).uploadUrl : undefined;
      if (s.status !== 201 || typeof uploadUrl !== 'string')
        return abandon(this.verdict(acct, s, ctx, 'create upload session'));
      // Graph's upload URL carries its own credential: never in a log line.
      addSecret(uploadUrl, { slot: `graph-upload:${env.id}:${i}`, expiresAt: Date.now() + 86400e3 });
      for (let from = 0; from < a.bytes.length; from += UPLOAD_CHUNK) {
        const chunk = a.bytes.subarray(from, Math.min(from + UPLOAD_CHUNK, a.bytes.length));
        // The upload URL is pre-authorized: no bearer (Graph refuses one there).
        const r = await this.call(acct, null, 'PUT', uploadUrl, chunk, 'application/octet-stream', {
          'Content-Range': `bytes ${from}-${from + chunk.length - 1}/${a.bytes.length}`,
        });
        if (r.status !== 200 && r.status !== 201) return abandon(this.verdict(acct, r, ctx, 'upload chunk'));
      }
    }
    await journal.put(env.id, { draftId, mailbox, phase: 'sending' });
    const sent = await this.call(acct, token, 'POST', `${at}/send`);
    const v = this.verdict(acct, sent, ctx, 'send draft');
    if (v.outcome === 'ok') await journal.remove(env.id);
    // Refused for good (a recipient, send-as): the draft goes; otherwise the next attempt sends this same draft.
    else if (v.outcome === 'permanent') return abandon(v);
    return v;
  }

  /** One HTTPS request to Graph (a path under upstream.apiUrl, or an absolute upload URL). Never throws. */
  private call(
    acct: AccountConfig,
    token: string | null,
    method: string,
    pathOrUrl: string,
    body?: Buffer,
    contentType?: string,
    extra: Record<string, string> = {},
  ): Promise<HttpAnswer> {
    this.limiter.record(acct.mailbox ?? acct.email, method === 'PUT' ? (body?.length ?? 0) : 0);
    const url = /^https:\/\//.test(pathOrUrl)
      ? new URL(pathOrUrl)
      : new URL(`${acct.upstream.apiUrl.replace(/\/+$/, '')}${pathOrUrl}`);
    return graphRequest(this.agentFor(acct), token, method, url, body, contentType, extra);
  }

  /** Verified TLS to the Graph host; upstream.caFile adds trust anchors to the system roots. */
  private agentFor(acct: AccountConfig): https.Agent {
    const key = acct.upstream.caFile ?? '';
    let a = this.agents.get(key);
    if (!a) {
      const ca = acct.upstream.caFile ? [...rootCertificates, readFileSync(acct.upstream.caFile, 'utf8')] : undefined;
      a = new https.Agent({ keepAlive: true, minVersion: 'TLSv1.2', ...(ca ? { ca } : {}) });
      this.agents.set(key, a);
    }
    return a;
  }
}
