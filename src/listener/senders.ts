// Who may send as whom: a user's allowedSenders (exact addresses or *@domain), checked
// against MAIL FROM and the From header. Comparison is case-insensitive; domains compare
// in their ASCII (punycode) form so an IDN matches whichever way the client spelled it.
import { domainToASCII } from 'node:url';
import addressparser from 'nodemailer/lib/addressparser';
import type Libmime from 'libmime';

function normDomain(d: string): string {
  const lower = d.trim().replace(/\.$/, '').toLowerCase();
  return domainToASCII(lower) || lower;
}

/** Lower-cased address with an ASCII domain, or null when it has no local@domain shape. */
export function normalizeAddress(addr: string): string | null {
  const a = addr.trim();
  const at = a.lastIndexOf('@');
  if (at <= 0 || at === a.length - 1) return null;
  return `${a.slice(0, at).toLowerCase()}@${normDomain(a.slice(at + 1))}`;
}

export class SenderPolicy {
  private readonly exact = new Set<string>();
  private readonly domains = new Set<string>();

  constructor(readonly patterns: readonly string[]) {
    for (const p of patterns) {
      if (p.startsWith('*@')) this.domains.add(normDomain(p.slice(2)));
      else {
        const n = normalizeAddress(p);
        if (n) this.exact.add(n);
      }
    }
  }

  allows(address: string): boolean {
    const n = normalizeAddress(address);
    if (!n) return false;
    return this.exact.has(n) || this.domains.has(n.slice(n.lastIndexOf('@') + 1));
  }
}

// Anything address-shaped, wherever it sits in the header (display name, comment, angle
// brackets): a display name like "ceo@example.com" <allowed@...> is a spoof too.
const ADDRESS_LIKE = /[^\s<>"(),;:[\]\\]+@[^\s<>"(),;:[\]\\]+/g;

/**
 * A header value with its RFC 2047 encoded words (`=?UTF-8?B?…?=`, `=?…?Q?…?=`, adjacent
 * words joined) decoded, as a mail client will display it. Undecodable words stay as they are.
 */
export function decodeEncodedWords(value: string): string {
  // Every encoded word starts with "=?": without one there is nothing to decode.
  if (!value.includes('=?')) return value;
  // Fail closed: judging an encoded name undecoded could let a spoof through.
  if (!libmime) throw new Error('the RFC 2047 decoder is not loaded (loadWordDecoder)');
  try {
    return libmime.decodeWords(value);
  } catch {
    return value;
  }
}

let libmime: typeof Libmime | undefined;

/**
 * Loads libmime (with its charset tables, about 5 MB of RSS) the first time a From header
 * carries an encoded word, instead of at start: most mail never needs it.
 */
export async function loadWordDecoder(): Promise<void> {
  libmime ??= (await import('libmime')).default;
}

// The role addresses MTAs send their own delivery notices from (RFC 5321 4.5.5 has them
// use the null reverse-path; Postfix writes MAILER-DAEMON@myhostname, Exim
// Mailer-Daemon@qualify_domain, RFC 2142 reserves postmaster), on any domain: the MTA's
// host name is not known to us.
const NOTICE_SENDER = /^(mailer-daemon|postmaster)@[^@\s]+$/i;

export function isNoticeSender(address: string): boolean {
  return NOTICE_SENDER.test(address.trim());
}

/**
 * Checks the From header values of a message against the policy. Returns null when every
 * address in them is allowed, else the first offending address (or the raw value when no
 * address could be parsed from it). Encoded display names are judged decoded: the reader
 * sees `ceo@bank.example` whether it was written plainly or as `=?UTF-8?B?…?=`.
 * With `nullSender` (MAIL FROM:<>, a delivery notice) MAILER-DAEMON@… and postmaster@…
 * are allowed as well; any other address in the header is still judged by the policy.
 */
export function checkFromHeaders(
  values: readonly string[],
  policy: SenderPolicy,
  opts: { nullSender?: boolean } = {},
): string | null {
  const allowed = (a: string) => policy.allows(a) || (!!opts.nullSender && isNoticeSender(a));
  for (const value of values) {
    const parsed = addressparser(value, { flatten: true })
      .map((a) => a.address)
      .filter((a): a is string => !!a);
    if (!parsed.length) return value.trim().slice(0, 200) || '(empty From header)';
    const decoded = decodeEncodedWords(value);
    const found = new Set([...parsed, ...(value.match(ADDRESS_LIKE) ?? []), ...(decoded.match(ADDRESS_LIKE) ?? [])]);
    for (const a of found) if (!allowed(a.replace(/^mailto:/i, ''))) return a;
  }
  return null;
}
