// Picks the upstream per account transport. Each transport lives in its own folder and is
// registered by one entry in TRANSPORTS, keyed `provider:transport` or `transport` for any
// provider. The delivery worker keeps seeing one Upstream.
import type { AccountConfig, Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { Envelope, MessageSource, SendResult, TokenSource, TransportSizeLimit, Upstream } from '../types.js';
import { GoogleAutoUpstream } from './gmail-api/auto.js';
import { GmailApiUpstream, gmailApiSizeLimit } from './gmail-api/index.js';
import { MicrosoftAutoUpstream } from './graph/auto.js';
import { GraphUpstream } from './graph/index.js';
import { graphSizeLimit } from './graph/size.js';
import { SmtpUpstream } from './smtp/index.js';
import type { Transport } from './transport.js';

export interface RouterOptions {
  config: Config;
  log: Logger;
  tokens: TokenSource;
  ehloName?: string;
}

interface TransportEntry {
  /** `get` hands out another registered transport (auto wraps the ones it chooses between). */
  create(opts: RouterOptions, get: <T extends Transport>(key: string) => T): Transport;
  /** Beyond the listener's own limit; absent: none (SMTP, and auto, which can fall back to SMTP). */
  sizeLimit?(account: AccountConfig): TransportSizeLimit;
}

const TRANSPORTS: Record<string, TransportEntry> = {
  smtp: { create: (o) => new SmtpUpstream(o) },
  'gmail-api': { create: (o) => new GmailApiUpstream(o), sizeLimit: gmailApiSizeLimit },
  'google:auto': { create: (o, get) => new GoogleAutoUpstream(get('gmail-api'), get('smtp'), o.log) },
  graph: { create: (o) => new GraphUpstream(o), sizeLimit: graphSizeLimit },
  'microsoft:auto': { create: (o, get) => new MicrosoftAutoUpstream(o, get('graph')) },
};

function entryKey(a: { provider: string; transport: string }): string | undefined {
  const own = `${a.provider}:${a.transport}`;
  return own in TRANSPORTS ? own : a.transport in TRANSPORTS ? a.transport : undefined;
}

/** null: no limit beyond the listener's. */
export function maxMessageBytes(account: AccountConfig): TransportSizeLimit | null {
  const key = entryKey(account);
  return (key && TRANSPORTS[key]!.sizeLimit?.(account)) || null;
}

export class TransportRouter implements Upstream {
  private config: Config;
  private readonly transports = new Map<string, Transport>();

  constructor(opts: RouterOptions) {
    this.config = opts.config;
    const get = <T extends Transport>(key: string): T => {
      let t = this.transports.get(key);
      if (!t) {
        t = TRANSPORTS[key]!.create(opts, get);
        this.transports.set(key, t);
      }
      return t as T;
    };
    for (const key of Object.keys(TRANSPORTS)) get(key);
  }

  reload(config: Config): void {
    this.config = config;
    for (const t of this.transports.values()) t.reload(config);
  }

  async close(): Promise<void> {
    await Promise.all([...this.transports.values()].map((t) => t.close()));
  }

  private transportOf(account: string): { acct: AccountConfig | undefined; t: Transport } {
    const acct = this.config.accounts.find((a) => a.name === account);
    const key = acct ? entryKey(acct) : undefined;
    return { acct, t: this.transports.get(key ?? 'smtp')! };
  }

  /** Where this account's mail goes, for `send-test` output. */
  describe(account: string): string {
    const { acct, t } = this.transportOf(account);
    return acct ? t.describe(acct) : 'unknown account';
  }

  send(env: Envelope, message: MessageSource): Promise<SendResult> {
    return this.transportOf(env.account).t.send(env, message);
  }
}
