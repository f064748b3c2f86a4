// The Received: trace header (RFC 5321 section 4.4) the listener prepends to every message
// it accepts for relaying. Everything after it stays as the client sent it.
import net from 'node:net';

export interface ReceivedInfo {
  /** What the client said in HELO/EHLO (attacker-chosen: only a clean domain or literal is kept). */
  helo: string | false | undefined;
  /** The client address (from the PROXY header when there is one). */
  ip: string;
  /** Our host name, as in the greeting. */
  host: string;
  /** The listener's name from the config. */
  listener: string;
  esmtp: boolean;
  tls: boolean;
  authenticated: boolean;
  id: string;
  date: Date;
}

const DOMAIN =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** An RFC 5321 address literal for an IP: `[192.0.2.1]`, `[IPv6:2001:db8::1]`. */
export function addressLiteral(ip: string): string {
  return net.isIPv6(ip) ? `[IPv6:${ip}]` : `[${ip}]`;
}

/** RFC 3848 protocol types: ESMTP, ESMTPA, ESMTPS, ESMTPSA (SMTP for HELO clients). */
export function protocolType(i: Pick<ReceivedInfo, 'esmtp' | 'tls' | 'authenticated'>): string {
  if (!i.esmtp) return 'SMTP';
  return 'ESMTP' + (i.tls ? 'S' : '') + (i.authenticated ? 'A' : '');
}

/** RFC 5322 date-time in UTC with a numeric zone (`Tue, 01 Dec 2026 21:30:00 +0000`). */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/**
 * The header field, folded, ending in CRLF. The AUTH user name is left out (Postfix's
 * smtpd_sasl_authenticated_header also defaults to no): the header travels to every
 * recipient, and a login name is half of a credential; ESMTPA already says the client
 * authenticated, and the bridge's own log has who it was under the queue id.
 */
export function receivedHeader(i: ReceivedInfo): string {
  const helo = typeof i.helo === 'string' ? i.helo.trim() : '';
  const literal = /^\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]$/i.exec(helo);
  const heloOk = DOMAIN.test(helo) || (!!literal && net.isIP(literal[1]) !== 0);
  const from = heloOk ? helo : 'unknown';
  return (
    `Received: from ${from} (${addressLiteral(i.ip)})\r\n` +
    `\tby ${i.host} (xoauth2-bridge, listener ${i.listener}) with ${protocolType(i)} id ${i.id};\r\n` +
    `\t${rfc5322Date(i.date)}\r\n`
  );
}
