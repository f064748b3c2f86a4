// Picks the upstream per account transport: SMTP (XOAUTH2), the Gmail API, or auto (the API
// when it can deliver to exactly the envelope, SMTP when the headers name other addresses),
// or a transport registered in `transports` (its own folder plus one line here).
// The delivery worker keeps seeing one Upstream.
import type { Config } from '../config/schema.js';
import type { Envelope, MessageSource, SendResult, TokenSource, TransportSizeLimit, Upstream } from '../types.js';
import type { Logger } from '../log/logger.js';
import { GmailUpstream } from './gmail.js';
import { GMAIL_API_MAX_BYTES, GmailApiUpstream } from './gmailApi.js';
import { GRAPH_MAX_MESSAGE, GraphUpstream, graphMaxMessageBytes } from './graph/index.js';
import { MicrosoftAutoUpstream } from './graph/auto.js';
import type { AccountConfig } from '../config/schema.js';

/** A transport in its own folder: an Upstream that follows config reloads and says where it sends. */
export interface RegisteredTransport extends Upstream {
  reload(config: Config): void;
  describe(account: AccountConfig): string;
}

/** null: no limit beyond the listener's (SMTP, and auto, which falls back to SMTP). */
export function maxMessageBytes(account: AccountConfig): TransportSizeLimit | null {
  if (account.transport === 'graph') {
    const bytes = graphMaxMessageBytes(account);
    return {
      bytes,
      reason: account.upstream.largeMessages
        ? `Exchange Online limit ${bytes} bytes`
        : `Microsoft Graph sendMail limit ${bytes} bytes; upstream.largeMessages raises it to ${GRAPH_MAX_MESSAGE / 1024 / 1024} MB`,
    };
  }
  if (account.transport === 'gmail-api')
    return { bytes: GMAIL_API_MAX_BYTES, reason: `Gmail API limit ${GMAIL_API_MAX_BYTES} bytes` };
  return null;
}

export interface RouterOptions {
  config: Config;
  log: Logger;
  tokens: TokenSource;
  ehloName?: string;
}

export class TransportRouter implements Upstream {
  private config: Config;
  readonly smtp: GmailUpstream;
  readonly api: GmailApiUpstream;
  /** Transports by the account's `provider:transport`, or `transport` for any provider. */
  readonly transports = new Map<string, RegisteredTransport>();
  private readonly log: Logger;

  constructor(opts: RouterOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'upstream' });
    this.smtp = new GmailUpstream(opts);
    this.api = new GmailApiUpstream(opts);
    const graph = new GraphUpstream(opts);
    this.transports.set('graph', graph);
    this.transports.set('microsoft:auto', new MicrosoftAutoUpstream(opts, graph));
  }

  reload(config: Config): void {
    this.config = config;
    this.smtp.reload(config);
    this.api.reload(config);
    for (const t of this.transports.values()) t.reload(config);
  }

  async close(): Promise<void> {
    await Promise.all([this.smtp.close(), this.api.close(), ...[...this.transports.values()].map((t) => t.close())]);
  }

  /** Where this account's mail goes, for `send-test` output. */
  describe(account: string): string {
    const a = this.config.accounts.find((x) => x.name === account);
    if (!a) return 'unknown account';
    const smtp = `${a.upstream.host}:${a.upstream.port}`;
    const registered = this.transports.get(`${a.provider}:${a.transport}`) ?? this.transports.get(a.transport);
    if (registered) return registered.describe(a);
    if (a.transport === 'gmail-api') return `${a.upstream.apiUrl} (Gmail API)`;
    if (a.transport === 'auto') return `${a.upstream.apiUrl} (Gmail API) or ${smtp}`;
    return smtp;
  }

  async send(env: Envelope, message: MessageSource): Promise<SendResult> {
    const acct = this.config.accounts.find((a) => a.name === env.account);
    const transport = acct?.transport ?? 'smtp';
    if (transport === 'smtp') return this.smtp.send(env, message);
    const registered = this.transports.get(`${acct?.provider}:${transport}`) ?? this.transports.get(transport);
    if (registered) return registered.send(env, message);
    if (transport === 'gmail-api') return this.api.send(env, message);
    const plan = await this.api.plan(env, message);
    if (plan.ok) return this.api.send(env, message, plan);
    this.log.debug('transport auto: over SMTP', { id: env.id, account: env.account, why: plan.reason });
    return this.smtp.send(env, message);
  }
}
