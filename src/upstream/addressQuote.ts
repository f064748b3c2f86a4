// SMTP envelope addresses written as RFC 5322 addr-specs, for transports that name recipients
// in header fields or API fields rather than an SMTP envelope (the Gmail API's Bcc:, Graph).
// An SMTP server may accept a local part that is no dot-atom without quotes (`a,b@dest`);
// written bare into a header, a parser reads `a` and `b@dest`. Such a local part is written as
// a quoted string (RFC 5322 3.4.1, `"` and `\` escaped with a backslash); an address that no
// header can carry (a control character, a domain that is neither dot-atom nor literal) is
// reported as null so the caller can hold the message with a reason. Pure functions, no I/O.

// atext (RFC 5322 3.2.3) plus UTF-8 beyond ASCII (RFC 6532 3.2, SMTPUTF8 mail).
const ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\\x00-\\x7f]";
const DOT_ATOM = new RegExp(`^(?:${ATEXT})+(?:\\.(?:${ATEXT})+)*$`, 'u');
/** A complete quoted string: qtext (printable ASCII but `"` and `\`, or UTF-8), space, or a quoted-pair. */
const QUOTED = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"$/u;
/** What a quoted string can carry once escaped: printable ASCII, space and UTF-8 beyond ASCII; no control characters. */
const QUOTABLE = /^(?:[\x20-\x7e]|[^\x00-\x7f\x80-\x9f])*$/u;
/** A domain literal, `[` dtext `]` (an address literal such as `[192.0.2.1]`). */
const DOMAIN_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]*\]$/;

/** Splits at the last `@` (a quoted local part may contain `@`; a domain never does). */
function split(address: string): { local: string; domain: string } | null {
  const at = address.lastIndexOf('@');
  if (at < 0) return null;
  return { local: address.slice(0, at), domain: address.slice(at + 1) };
}

/** The local part's value: a quoted string without its quotes and escapes; anything else as it is. */
export function localPartValue(local: string): string {
  return QUOTED.test(local) ? local.slice(1, -1).replace(/\\(.)/gu, '$1') : local;
}

/** A local part in its RFC 5322 form: a dot-atom as it is, anything else as a quoted string; null when no form exists. */
export function quoteLocalPart(local: string): string | null {
  const value = localPartValue(local);
  if (DOT_ATOM.test(value)) return value;
  if (!QUOTABLE.test(value)) return null;
  return `"${value.replace(/[\\"]/g, '\\$&')}"`;
}

/**
 * An envelope address (`RCPT TO`, bare or with a quoted local part) as an RFC 5322 addr-spec
 * that a parser reads back as exactly this one mailbox; null when no header can express it.
 */
export function addrSpec(address: string): string | null {
  const p = split(address);
  if (!p) return null;
  if (!DOT_ATOM.test(p.domain) && !DOMAIN_LITERAL.test(p.domain)) return null;
  const local = quoteLocalPart(p.local);
  return local === null ? null : `${local}@${p.domain}`;
}
