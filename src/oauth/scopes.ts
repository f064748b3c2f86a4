// Which OAuth scopes an account asks for, from its transport: the one place that decides,
// for `authorize`, the web console's re-authorization and service-account assertions.
import type { AccountConfig } from '../config/schema.js';

/** Gmail SMTP (XOAUTH2) accepts only this: full read, write and delete access to the mailbox. */
export const GMAIL_FULL_SCOPE = 'https://mail.google.com/';
/** users.messages.send alone: send only (a "sensitive", not "restricted", scope). */
export const GMAIL_SEND_SCOPE = 'https://www.googleapis.com/auth/gmail.send';

export function scopesFor(account: Pick<AccountConfig, 'transport'>): string[] {
  if (account.transport === 'gmail-api') return [GMAIL_SEND_SCOPE];
  // auto sends over SMTP when the API cannot express the envelope: it needs both.
  if (account.transport === 'auto') return [GMAIL_FULL_SCOPE, GMAIL_SEND_SCOPE];
  return [GMAIL_FULL_SCOPE];
}

/**
 * What a Google sign-in asks for: the transport's scopes plus `openid email`, so the token
 * response carries an id_token naming who signed in (Google sends none without them), and a
 * re-authorization as another user can be refused before anything is stored.
 */
export const GOOGLE_IDENTITY_SCOPES = ['openid', 'email'] as const;

export function signInScopesFor(account: Pick<AccountConfig, 'transport'>): string[] {
  return [...scopesFor(account), ...GOOGLE_IDENTITY_SCOPES];
}
