// Envelope exactness for Graph's MIME sendMail, which (as users.messages.send) delivers to the
// message's To/Cc/Bcc: the shared planner in apiEnvelope.ts decides; this adds the Bcc field
// with each local part quoted as RFC 5322 requires (a local part that is not a dot-atom, such
// as "john doe"@example.org, must be a quoted string or the header means another address).
import { planApiSend, type ApiPlan } from '../apiEnvelope.js';
import type { MessageSource } from '../../types.js';

const ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
const DOT_ATOM = new RegExp(`^${ATEXT}+(?:\\.${ATEXT}+)*$`);

/** An RFC 5322 local part: as-is when it is a dot-atom (or non-ASCII, RFC 6532), else a quoted string. */
export function quoteLocalPart(local: string): string {
  if (DOT_ATOM.test(local) || (/[^\x00-\x7f]/.test(local) && !/[\s"\\(),:;<>@[\]]/.test(local))) return local;
  return `"${local.replace(/(["\\])/g, '\\$1')}"`;
}

export function quoteAddress(address: string): string {
  const at = address.lastIndexOf('@');
  return at <= 0 ? address : `${quoteLocalPart(address.slice(0, at))}${address.slice(at)}`;
}

/** The Bcc field prepended to the MIME body (one address per folded line). */
export function graphBccField(bcc: readonly string[]): string {
  return bcc.length ? `Bcc: ${bcc.map((a) => `<${quoteAddress(a)}>`).join(',\r\n ')}\r\n` : '';
}

/** Whether Graph can deliver this message to exactly its envelope; the reason names Graph. */
export async function planGraphSend(msg: MessageSource, rcptTo: readonly string[], maxRecipients: number): Promise<ApiPlan> {
  const plan = await planApiSend(msg, rcptTo, maxRecipients);
  return plan.ok ? plan : { ok: false, reason: plan.reason.replace(/the Gmail API/g, 'Microsoft Graph') };
}
