// Google's scopes per transport: Gmail SMTP takes only the full-mailbox scope; the Gmail API
// sends with gmail.send alone.
import type { ProviderAccount } from '../provider.js';

/** Gmail SMTP (XOAUTH2) accepts only this: full read, write and delete access to the mailbox. */
export const GMAIL_FULL_SCOPE = 'https://mail.google.com/';
/** users.messages.send alone: send only (a "sensitive", not "restricted", scope). */
export const GMAIL_SEND_SCOPE = 'https://www.googleapis.com/auth/gmail.send';
/**
 * Google answers with who signed in only when asked for `openid email`, so a re-authorization
 * as another user can be refused before anything is stored.
 */
export const GOOGLE_IDENTITY_SCOPES = ['openid', 'email'] as const;

export function googleScopes(a: ProviderAccount): string[] {
  if (a.transport === 'gmail-api') return [GMAIL_SEND_SCOPE];
  // auto sends over SMTP when the API cannot express the envelope: it needs both.
  if (a.transport === 'auto') return [GMAIL_FULL_SCOPE, GMAIL_SEND_SCOPE];
  return [GMAIL_FULL_SCOPE];
}
