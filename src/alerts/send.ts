// Where alerts go: a JSON webhook over verified HTTPS, and/or a mail to an admin spooled
// through one of the bridge's own accounts (durable like any other message).
import https from 'node:https';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log/logger.js';
import type { Envelope } from '../types.js';
import type { HealthState } from '../types.js';

export interface AlertNotice {
  /** needs-reauth | grant-expiring | queue-age | upstream-failing | disk-low */
  alert: string;
  status: 'firing' | 'resolved';
  account?: string;
  summary: string;
  at: string;
  /** When the episode began (resolved notices). */
  since?: string;
}

export interface AlertSender {
  readonly name: string;
  send(n: AlertNotice): Promise<void>;
}

const RETRY_DELAYS_MS = [2_000, 10_000, 30_000];

export class WebhookSender implements AlertSender {
  readonly name = 'webhook';
  private readonly ca?: string[];

  constructor(
    private readonly url: string,
    caFile: string | undefined,
    private readonly log: Logger,
  ) {
    // caFile adds trust anchors; the public roots stay trusted. Verification is never off.
    if (caFile) this.ca = [...tls.rootCertificates, readFileSync(caFile, 'utf8')];
  }

  async send(n: AlertNotice): Promise<void> {
    // `text` is what Slack/Mattermost/Teams-style incoming webhooks display.
    const body = JSON.stringify({
      text: `[xoauth2-bridge ${hostname()}] ${n.status === 'resolved' ? 'RESOLVED: ' : ''}${n.summary}`,
      host: hostname(),
      ...n,
    });
    for (let i = 0; ; i++) {
      try {
        await this.post(body);
        return;
      } catch (e) {
        if (i >= RETRY_DELAYS_MS.length) throw e;
        this.log.warn('alert webhook failed, retrying', {
          error: (e as Error).message,
          alert: n.alert,
          retryInMs: RETRY_DELAYS_MS[i],
        });
        await new Promise((r) => setTimeout(r, RETRY_DELAYS_MS[i]).unref());
      }
    }
  }

  private post(body: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        this.url,
        {
          method: 'POST',
          headers: {
            'Content-Type': 'application/json',
            'Content-Length': Buffer.byteLength(body),
            'User-Agent': 'xoauth2-bridge',
          },
          ca: this.ca,
          timeout: 10_000,
          minVersion: 'TLSv1.2',
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            (res.statusCode ?? 0) < 300 ? resolve() : reject(new Error(`webhook answered HTTP ${res.statusCode}`)),
          );
        },
      );
      req.on('timeout', () => req.destroy(new Error('webhook timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }
}

export interface MailDeps {
  to: string;
  /** The configured alerts.emailAccount, or null to pick the first working account. */
  account: string | null;
  accounts: () => Array<{ name: string; email: string; state: HealthState }>;
  /** Spools the message (durable) and hands it to delivery. */
  enqueue: (raw: Buffer, meta: { account: string; mailFrom: string; rcptTo: string[] }) => Promise<Envelope>;
}

export class MailSender implements AlertSender {
  readonly name = 'email';

  constructor(private readonly d: MailDeps) {}

  async send(n: AlertNotice): Promise<void> {
    const all = this.d.accounts();
    // An alert about a dead account is better sent through one that works.
    const acct =
      (this.d.account ? all.find((a) => a.name === this.d.account) : undefined) ??
      all.find((a) => a.state === 'ok') ??
      all[0];
    if (!acct) throw new Error('no account to send the alert mail through');
    const host = hostname();
    const subject = `[xoauth2-bridge ${host}] ${n.status === 'resolved' ? 'RESOLVED: ' : ''}${n.summary}`.replace(
      /[\r\n]+/g,
      ' ',
    );
    const lines = [
      n.summary,
      '',
      `alert:   ${n.alert}`,
      `status:  ${n.status}`,
      ...(n.account ? [`account: ${n.account}`] : []),
      `at:      ${n.at}`,
      ...(n.since ? [`since:   ${n.since}`] : []),
      `host:    ${host}`,
      '',
      'Sent by the xoauth2-bridge alert monitor (alerts: in the config).',
    ];
    const raw = [
      `From: xoauth2-bridge <${acct.email}>`,
      `To: ${this.d.to}`,
      `Subject: ${encodeHeader(subject)}`,
      `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
      `Message-ID: <${randomBytes(12).toString('hex')}@${host}>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      'Auto-Submitted: auto-generated',
      '',
      ...lines,
      '',
    ].join('\r\n');
    await this.d.enqueue(Buffer.from(raw, 'utf8'), { account: acct.name, mailFrom: acct.email, rcptTo: [this.d.to] });
  }
}

function encodeHeader(s: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x20-\x7e]*$/.test(s) ? s : `=?UTF-8?B?${Buffer.from(s, 'utf8').toString('base64')}?=`;
}
