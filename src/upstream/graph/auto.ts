// transport auto for a Microsoft account: SMTP (XOAUTH2) while Exchange takes it; when
// Exchange refuses SMTP AUTH for the mailbox (535 5.7.139 SMTP AUTH disabled, or 5.7.3 for
// an app's token or for a user's fresh token), this message and the account's next ones for
// an hour go through Microsoft Graph instead of holding the account. The Graph token is the token service's for resource
// 'graph', like the SMTP one: app-only, by client credentials for Graph; delegated, from the
// same refresh token, rotated and single-flight with the SMTP refreshes.
import type { Config } from '../../config/schema.js';
import type { Envelope, MessageSource, SendResult, TokenSource } from '../../types.js';
import type { Logger } from '../../log/logger.js';
import { SmtpUpstream } from '../smtp/index.js';
import type { GraphUpstream } from './index.js';
import type { Transport } from '../transport.js';

/** How long an account stays on Graph after SMTP AUTH was refused, before SMTP is tried again. */
export const SMTP_RECHECK_MS = 60 * 60_000;

export class MicrosoftAutoUpstream implements Transport {
  private readonly log: Logger;
  private readonly smtp: SmtpUpstream;
  private readonly smtpOff = new Map<string, number>();

  constructor(
    opts: { config: Config; log: Logger; tokens: TokenSource; ehloName?: string },
    private readonly graph: GraphUpstream,
  ) {
    this.log = opts.log.child({ component: 'upstream', transport: 'auto' });
    const outer = opts.tokens;
    // The SMTP side's "hold the account" for a refused SMTP AUTH is dropped: that message's
    // result says so (refusal), and send() turns it into "use Graph".
    const tokens: TokenSource = {
      getAccessToken: (a, o) => outer.getAccessToken(a, o),
      holdAccount: (a, reason, ms, code) => {
        if (code !== 'smtp-auth-refused') outer.holdAccount?.(a, reason, ms, code);
      },
    };
    this.smtp = new SmtpUpstream({ ...opts, tokens });
    this.graphTokens = {
      getAccessToken: (a, o) => outer.getAccessToken(a, { ...o, resource: 'graph' }),
      holdAccount: (a, reason, ms) => outer.holdAccount?.(a, reason, ms),
    };
  }

  private readonly graphTokens: TokenSource;

  reload(config: Config): void {
    this.smtp.reload(config);
  }

  close(): Promise<void> {
    return this.smtp.close();
  }

  describe(acct: Config['accounts'][number]): string {
    return `${acct.upstream.host}:${acct.upstream.port}, or ${this.graph.describe(acct)} while SMTP AUTH is refused`;
  }

  async send(env: Envelope, message: MessageSource): Promise<SendResult> {
    if ((this.smtpOff.get(env.account) ?? 0) > Date.now())
      return this.graph.send(env, message, { tokens: this.graphTokens });
    const r = await this.smtp.send(env, message);
    // This message's own result only: another message's refusal on another pooled connection
    // says nothing about whether this one was accepted (it may have been: never send it twice).
    if (r.refusal !== 'smtp-auth-refused' || r.accepted.length) return r;
    this.smtpOff.set(env.account, Date.now() + SMTP_RECHECK_MS);
    this.log.warn(
      `transport auto: Exchange refused SMTP AUTH for account ${env.account}; sending through Microsoft Graph for the next hour`,
      { account: env.account, id: env.id, smtp: r.response.slice(0, 200) },
    );
    return this.graph.send(env, message, { tokens: this.graphTokens });
  }
}
