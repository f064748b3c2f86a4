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
import type { Envelope, MessageSource, SendResult, TokenSource, Upstream } from '../../types.js';
import { readMessage } from '../../spool/message.js';
import type { Logger } from '../../log/logger.js';
import { NeedsReauthError } from '../../oauth/service.js';
import { redactString } from '../../log/redact.js';
import type { ApiPlan } from '../apiEnvelope.js';
import { classifyGraphAnswer, type GraphContext, type GraphVerdict } from './classify.js';
import { graphBccField, planGraphSend } from './envelope.js';
import { MailboxLimiter } from './limiter.js';

/** Graph's request size limit; a MIME sendMail body is base64, so about 3 MB of message. */
export const GRAPH_MAX_REQUEST = 4 * 1024 * 1024;
/** How long an account stays held for a fix only an operator can make before it is tried again. */
const OPERATOR_HOLD_MS = 15 * 60_000;

export interface GraphUpstreamOptions {
  config: Config;
  log: Logger;
  tokens: TokenSource;
}

/** The base64 length of n bytes. */
const base64Length = (n: number) => 4 * Math.ceil(n / 3);

export class GraphUpstream implements Upstream {
  private config: Config;
  private readonly log: Logger;
  private readonly tokens: TokenSource;
  private readonly agents = new Map<string, https.Agent>();
  private readonly retired: https.Agent[] = [];
  readonly limiter = new MailboxLimiter();

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

  async send(env: Envelope, message: MessageSource): Promise<SendResult> {
    const r = await this.attempt(env, message);
    return { ...r, response: redactString(r.response) };
  }

  private async attempt(env: Envelope, message: MessageSource): Promise<SendResult> {
    const none = { accepted: [] as string[], rejected: [] };
    const acct = this.config.accounts.find((a) => a.name === env.account);
    if (!acct) return { outcome: 'transient', response: `account "${env.account}" is not configured`, ...none };
    const mailbox = acct.mailbox ?? acct.email;
    const plan = await this.plan(env, message);
    if (!plan.ok) return { outcome: 'transport', response: `not sent: ${plan.reason} (transport graph)`, ...none };
    const prefix = Buffer.from(graphBccField(plan.bcc), 'utf8');
    const encoded = base64Length(prefix.length + message.size);
    if (encoded > GRAPH_MAX_REQUEST)
      return {
        outcome: 'permanent',
        response: `552 5.3.4 message of ${prefix.length + message.size} bytes is ${encoded} bytes as base64, over Microsoft Graph's sendMail limit of ${GRAPH_MAX_REQUEST} bytes (4 MB) [graph]`,
        ...none,
      };
    const ctx: GraphContext = { mailbox, grant: acct.oauth.type === 'app' ? 'app' : 'user', clientId: 'clientId' in acct.oauth ? acct.oauth.clientId : '' };
    const release = await this.limiter.acquire(mailbox);
    try {
      let renewed = false;
      for (;;) {
        // Graph asked this mailbox to wait (Retry-After): defer without a request.
        const left = this.limiter.waitLeft(mailbox);
        if (left > 0) return { outcome: 'transient', response: `deferred: Microsoft Graph asked to wait ${Math.ceil(left / 1000)} s (Retry-After) for ${mailbox} [graph]`, retryAfterMs: left, ...none };
        let token: string;
        try {
          token = await this.tokens.getAccessToken(acct.name, { force: renewed });
        } catch (e) {
          return { outcome: e instanceof NeedsReauthError ? 'auth' : 'transient', response: `token: ${(e as Error).message}`, ...none };
        }
        const body = Buffer.concat([prefix, await readMessage(message)]).toString('base64');
        const v = await this.post(acct, mailbox, token, body, ctx);
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
          this.tokens.holdAccount?.(acct.name, v.hold, OPERATOR_HOLD_MS);
          return { outcome: 'transient', response: `${v.response} (held: ${v.hold.replace(/ACCOUNT\b/g, acct.name)})`, ...none };
        }
        if (v.badRecipient) {
          const bad = env.rcptTo.find((r) => r.toLowerCase() === v.badRecipient!.toLowerCase());
          // Graph refused the whole message for one address: bounce that one, the rest go again without it.
          if (bad && env.rcptTo.length > 1) return { outcome: 'transient', response: v.response, accepted: [], rejected: [{ rcpt: bad, response: v.response }] };
        }
        return { outcome: v.outcome, response: v.response, ...(v.retryAfterMs !== undefined ? { retryAfterMs: v.retryAfterMs } : {}), ...none };
      }
    } finally {
      release();
    }
  }

  /** One sendMail request with the base64 MIME body. */
  private post(acct: AccountConfig, mailbox: string, token: string, body: string, ctx: GraphContext): Promise<GraphVerdict> {
    const url = new URL(`${acct.upstream.apiUrl.replace(/\/+$/, '')}/v1.0/users/${encodeURIComponent(mailbox)}/sendMail`);
    return new Promise((resolve) => {
      const req = https.request(
        url,
        {
          method: 'POST',
          agent: this.agentFor(acct),
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'text/plain', 'Content-Length': String(body.length) },
          // Room for a 4 MB request on a slow line (at 100 KB/s), not forever.
          timeout: 60_000 + Math.ceil(body.length / 100),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => resolve(classifyGraphAnswer(undefined, undefined, {}, ctx, e.message)));
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString('utf8');
            if (status >= 200 && status < 300) return resolve({ outcome: 'ok', response: `${status} graph sendMail accepted${res.headers['request-id'] ? ` request-id=${String(res.headers['request-id'])}` : ''}` });
            let data: unknown = text;
            try {
              data = JSON.parse(text);
            } catch {
              /* not JSON: a proxy's page; keep the text */
            }
            const v = classifyGraphAnswer(status, data, res.headers, ctx);
            this.log.debug('graph answer', { account: acct.name, status, reply: redactString(v.response) });
            resolve(v);
          });
        },
      );
      // Only the error's own text: the request carries the token.
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e: NodeJS.ErrnoException) => resolve(classifyGraphAnswer(undefined, undefined, {}, ctx, `${e.code ? e.code + ' ' : ''}${e.message.split('\n')[0]}`)));
      req.end(body);
    });
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
