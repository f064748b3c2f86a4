// Envelope exactness for Graph's MIME sendMail, which (as users.messages.send) delivers to the
// message's To/Cc/Bcc: the shared planner in apiEnvelope.ts decides, and the Bcc field is the
// Gmail API's (addresses quoted as RFC 5322 requires, in addressQuote.ts); the reasons name Graph.
import { bccField, planApiSend, type ApiPlan } from '../apiEnvelope.js';
import type { MessageSource } from '../../types.js';

/** The Bcc field prepended to the MIME body (one address per folded line). */
export const graphBccField = bccField;

/** Whether Graph can deliver this message to exactly its envelope; the reason names Graph. */
export async function planGraphSend(
  msg: MessageSource,
  rcptTo: readonly string[],
  maxRecipients: number,
): Promise<ApiPlan> {
  return planApiSend(msg, rcptTo, maxRecipients, 'Microsoft Graph');
}
