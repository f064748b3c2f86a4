// RFC 3464 delivery status notifications: multipart/report with a human-readable part, a
// message/delivery-status part and the original headers (text/rfc822-headers).
// Builds the bytes only: never queues or sends them (outcome.ts does).
import { randomBytes } from 'node:crypto';
import type { Envelope, MessageSource } from '../types.js';
import { readHeaderBlock } from '../spool/headers.js';

export interface DsnRecipient {
  rcpt: string;
  /** Enhanced status code, e.g. 5.1.1 (see statusFromReply). */
  status: string;
  action: 'failed' | 'delayed';
  /** The upstream reply (or our reason), used as `Diagnostic-Code: smtp; ...`. */
  diagnostic: string;
}

export interface DsnOptions {
  env: Envelope;
  original: MessageSource;
  reportingMta: string;
  recipients: DsnRecipient[];
  now?: Date;
  /** From header; Gmail only lets us send as the account, so the worker passes `Mail Delivery Subsystem <account email>`. */
  from?: string;
  /** To header; default the envelope sender. */
  to?: string;
  /** For delayed notices: when we give up (Will-Retry-Until). */
  retryUntil?: Date;
  /** Remote-MTA for the per-recipient fields, e.g. smtp.gmail.com. */
  remoteMta?: string;
}

/**
 * The enhanced status code in an SMTP reply ("550 5.1.1 ..." -> "5.1.1"); otherwise derived
 * from the basic code class (5.0.0 / 4.0.0), otherwise `fallback`.
 */
export function statusFromReply(reply: string, fallback = '4.0.0'): string {
  const m = /(?:^|[\s-])([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/.exec(reply);
  if (m) return `${m[1]}.${m[2]}.${m[3]}`;
  const c = /^\s*([45])\d\d[\s-]/.exec(reply + ' ');
  if (c) return `${c[1]}.0.0`;
  return fallback;
}

/** RFC 5322 date in UTC ("Tue, 04 Mar 2025 10:00:00 +0000"). */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/** One DSN field value on one logical line, folded at whitespace so no line passes 78 chars. */
function field(name: string, value: string): string {
  const words = value
    .replace(/[\r\n\t]+/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim()
    .split(' ');
  const lines: string[] = [];
  let line = `${name}:`;
  for (const w of words) {
    if (line.length + 1 + w.length > 78 && line.trim().length > name.length + 1) {
      lines.push(line);
      line = ` ${w}`;
    } else line += ` ${w}`;
  }
  lines.push(line);
  return lines.join('\r\n');
}

function oneLine(s: string): string {
  return s
    .replace(/[\r\n]+/g, ' ')
    .replace(/\s{2,}/g, ' ')
    .trim();
}

function addrType(addr: string): string {
  // RFC 6533: internationalized addresses use the utf-8 address type.
  return /[^\x00-\x7f]/.test(addr) ? 'utf-8' : 'rfc822';
}

export async function buildDsn(opts: DsnOptions): Promise<Buffer> {
  const { env, reportingMta, recipients } = opts;
  const now = opts.now ?? new Date();
  const boundary = `=_dsn_${randomBytes(12).toString('hex')}`;
  const delayed = recipients.length > 0 && recipients.every((r) => r.action === 'delayed');
  const from = opts.from ?? `Mail Delivery Subsystem <MAILER-DAEMON@${reportingMta}>`;
  const to = opts.to ?? env.mailFrom;
  const subject = delayed ? 'Delayed Mail (still being retried)' : 'Undelivered Mail Returned to Sender';
  const headers = await readHeaderBlock(opts.original).catch(() =>
    Buffer.from('(original message no longer available)\r\n'),
  );
  const origHeaders = headers.toString('binary').replace(/\r?\n/g, '\r\n');
  const subjectLine = /^subject:[ \t]*(.*(?:\r\n[ \t].*)*)/im.exec(origHeaders)?.[1];

  const human: string[] = [
    `This is the mail system at host ${reportingMta}.`,
    '',
    delayed
      ? 'Your message could not be delivered yet. The mail system will keep trying;\r\nyou do not need to send it again.'
      : "I'm sorry to have to inform you that your message could not be delivered\r\nto one or more recipients.",
    '',
    `Queue ID: ${env.id}`,
    `Sent: ${rfc5322Date(new Date(env.receivedAt))}`,
    ...(subjectLine !== undefined ? [`Subject: ${oneLine(Buffer.from(subjectLine, 'binary').toString('utf8'))}`] : []),
    ...(delayed && opts.retryUntil ? [`Will retry until: ${rfc5322Date(opts.retryUntil)}`] : []),
    '',
    ...recipients.map((r) => `<${r.rcpt}>: ${oneLine(r.diagnostic).slice(0, 900)}`), // SMTP lines stay under 998
    '',
  ];

  const perMessage = [
    field('Reporting-MTA', `dns; ${reportingMta}`),
    field('X-Queue-ID', env.id),
    field('Arrival-Date', rfc5322Date(new Date(env.receivedAt))),
  ];
  const perRecipient = recipients.map((r) =>
    [
      field('Final-Recipient', `${addrType(r.rcpt)}; ${r.rcpt}`),
      field('Action', r.action),
      field('Status', r.status),
      ...(opts.remoteMta ? [field('Remote-MTA', `dns; ${opts.remoteMta}`)] : []),
      field('Diagnostic-Code', `smtp; ${oneLine(r.diagnostic)}`),
      field('Last-Attempt-Date', rfc5322Date(now)),
      ...(r.action === 'delayed' && opts.retryUntil ? [field('Will-Retry-Until', rfc5322Date(opts.retryUntil))] : []),
    ].join('\r\n'),
  );

  const head = [
    field('From', from),
    field('To', `<${to}>`),
    field('Subject', subject),
    field('Date', rfc5322Date(now)),
    field('Message-ID', `<${env.id}.${randomBytes(6).toString('hex')}@${reportingMta}>`),
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Description: Notification',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    human.join('\r\n'),
    `--${boundary}`,
    'Content-Description: Delivery report',
    'Content-Type: message/delivery-status',
    '',
    perMessage.join('\r\n'),
    '',
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Description: Undelivered Message Headers',
    'Content-Type: text/rfc822-headers',
    '',
    '',
  ].join('\r\n');
  const tail = `\r\n--${boundary}--\r\n`;
  // Original headers stay byte-for-byte (binary) so 8-bit headers are not re-encoded.
  return Buffer.concat([
    Buffer.from(head, 'utf8'),
    Buffer.from(origHeaders.replace(/(\r\n)+$/, ''), 'binary'),
    Buffer.from(tail),
  ]);
}
