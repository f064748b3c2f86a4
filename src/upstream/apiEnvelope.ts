// Envelope semantics for the Gmail API. users.messages.send takes its recipients from the
// To/Cc/Bcc headers, not from an SMTP envelope, so the bridge checks that the two agree:
// envelope recipients the headers do not name are added as a Bcc header (Gmail removes it
// before delivery); a header address the envelope lacks (an MTA split the recipient list,
// a list expansion) cannot be expressed: such a message must not go through the API. Bcc
// addresses are written as RFC 5322 addr-specs (src/upstream/addressQuote.ts: a local part
// that is no dot-atom is quoted); one that no header can carry holds the message instead.
import { open } from 'node:fs/promises';
import { domainToASCII } from 'node:url';
import addressparser from 'nodemailer/lib/addressparser';
import type { MessageSource } from '../types.js';
import { headerValues } from '../listener/filter.js';
import { addrSpec, localPartValue } from './addressQuote.js';

/** How much header the bridge reads before the blank line: the listener's 256 KB limit plus its Received: line. */
export const MAX_HEADER_BYTES = 260 * 1024;
const RECIPIENT_FIELDS = ['to', 'cc', 'bcc'] as const;

export type ApiPlan =
  /** Send through the API, with these envelope recipients added as a Bcc header. */
  | { ok: true; bcc: string[] }
  /** The API cannot deliver to exactly the envelope: why, for `queue list` and the log. */
  | { ok: false; reason: string };

/**
 * The key two spellings of one mailbox share: the domain compares case-insensitively (and
 * as punycode); the local part exactly, since only the receiving domain may fold its case,
 * by its value (`"a,b"@x` in a header is the envelope's `a,b@x`, `"jo"@x` is `jo@x`).
 */
export function mailboxKey(address: string): string {
  const a = address.trim();
  const at = a.lastIndexOf('@');
  if (at <= 0) return a;
  const domain = a
    .slice(at + 1)
    .replace(/\.$/, '')
    .toLowerCase();
  return `${localPartValue(a.slice(0, at))}@${domainToASCII(domain) || domain}`;
}

/** Every address in the To, Cc and Bcc fields of a header section (groups flattened). */
export function headerRecipients(header: string): string[] {
  const out: string[] = [];
  for (const field of RECIPIENT_FIELDS)
    for (const value of headerValues(header, field))
      for (const a of addressparser(value, { flatten: true })) if (a.address) out.push(a.address);
  return out;
}

/**
 * Compares the envelope with the header recipients; never adds one outside the envelope, never
 * drops one. `transport` names the API in the reasons ("the Gmail API", "Microsoft Graph").
 */
export function planRecipients(
  rcptTo: readonly string[],
  inHeaders: readonly string[],
  maxRecipients: number,
  transport: string,
): ApiPlan {
  const envelope = new Set(rcptTo.map(mailboxKey));
  const named = new Set(inHeaders.map(mailboxKey));
  const outside = [...new Set(inHeaders.filter((a) => !envelope.has(mailboxKey(a))))];
  if (outside.length) {
    const list = outside.slice(0, 5).join(', ') + (outside.length > 5 ? ` and ${outside.length - 5} more` : '');
    return {
      ok: false,
      reason: `${transport} would also send to ${list}: the To/Cc/Bcc headers name ${outside.length === 1 ? 'an address' : 'addresses'} this envelope does not contain`,
    };
  }
  // One API call reaches every header recipient at once: it cannot be split like an SMTP transaction.
  if (rcptTo.length > maxRecipients)
    return {
      ok: false,
      reason: `${transport} cannot split ${rcptTo.length} recipients into transactions of limits.recipientsPerMessage (${maxRecipients})`,
    };
  const seen = new Set<string>();
  const bcc: string[] = [];
  for (const r of rcptTo) {
    const k = mailboxKey(r);
    if (named.has(k) || seen.has(k)) continue;
    seen.add(k);
    bcc.push(r);
  }
  const unwritable = bcc.filter((a) => addrSpec(a) === null);
  if (unwritable.length)
    return {
      ok: false,
      reason: `${transport} takes recipients from the Bcc header, and no RFC 5322 address can express ${unwritable
        .slice(0, 5)
        .map((a) => JSON.stringify(a))
        .join(', ')}${unwritable.length > 5 ? ` and ${unwritable.length - 5} more` : ''}`,
    };
  return { ok: true, bcc };
}

/** The header section of a spooled message (up to the blank line), or null when it is longer than `max`. */
export async function readHeader(msg: MessageSource, max = MAX_HEADER_BYTES): Promise<string | null> {
  const fh = await open(msg.path, 'r');
  try {
    const buf = Buffer.alloc(Math.min(max + 4, 64 * 1024));
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      // Never past the message (a queue file keeps its envelope after it).
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, msg.size - total), total);
      if (!bytesRead) break;
      chunks.push(Buffer.from(buf.subarray(0, bytesRead)));
      total += bytesRead;
      const all = Buffer.concat(chunks, total);
      const end = all.indexOf('\r\n\r\n');
      if (end >= 0) return all.subarray(0, end + 2).toString('utf8');
      if (total > max) return null;
    }
    // A message without a body is all header.
    return Buffer.concat(chunks, total).toString('utf8');
  } finally {
    await fh.close();
  }
}

/** The Bcc field prepended to the uploaded copy (one addr-spec per folded line); `bcc` as planRecipients gave it. */
export function bccField(bcc: readonly string[]): string {
  const specs = bcc.map((a) => {
    const spec = addrSpec(a);
    if (spec === null) throw new Error(`no RFC 5322 address can express ${JSON.stringify(a)}`);
    return `<${spec}>`;
  });
  return specs.length ? `Bcc: ${specs.join(',\r\n ')}\r\n` : '';
}

/** Reads the message's header and plans the API send for these envelope recipients; `transport` as for planRecipients. */
export async function planApiSend(
  msg: MessageSource,
  rcptTo: readonly string[],
  maxRecipients: number,
  transport: string,
): Promise<ApiPlan> {
  const header = await readHeader(msg);
  if (header === null)
    return {
      ok: false,
      reason: `the header section is longer than ${MAX_HEADER_BYTES / 1024} KB; its recipients cannot be checked`,
    };
  return planRecipients(rcptTo, headerRecipients(header), maxRecipients, transport);
}
