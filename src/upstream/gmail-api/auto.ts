// transport auto for a Google account: the Gmail API when it can deliver to exactly the
// envelope (scope gmail.send), SMTP when the headers name addresses the API would add.
import type { AccountConfig } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import type { Envelope, MessageSource, SendResult } from '../../types.js';
import type { SmtpUpstream } from '../smtp/index.js';
import type { Transport } from '../transport.js';
import type { GmailApiUpstream } from './index.js';

export class GoogleAutoUpstream implements Transport {
  private readonly log: Logger;

  constructor(
    private readonly api: GmailApiUpstream,
    private readonly smtp: SmtpUpstream,
    log: Logger,
  ) {
    this.log = log.child({ component: 'upstream' });
  }

  /** The API and SMTP transports are registered on their own and reload and close there. */
  reload(): void {}
  async close(): Promise<void> {}

  describe(a: AccountConfig): string {
    return `${a.upstream.apiUrl} (Gmail API) or ${a.upstream.host}:${a.upstream.port}`;
  }

  async send(env: Envelope, message: MessageSource): Promise<SendResult> {
    const plan = await this.api.plan(env, message);
    if (plan.ok) return this.api.send(env, message, plan);
    this.log.debug('transport auto: over SMTP', { id: env.id, account: env.account, why: plan.reason });
    return this.smtp.send(env, message);
  }
}
