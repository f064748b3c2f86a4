// Which OAuth scopes an account asks for, from its provider, grant type and transport: the
// one place that decides, for `authorize`, the web console's re-authorization, token
// refreshes and service-account assertions.
import type { AccountConfig } from '../config/schema.js';
import { graphScopes, MS_APP_SCOPE, MS_DELEGATED_SCOPES } from '../providers/microsoft.js';

/** Gmail SMTP (XOAUTH2) accepts only this: full read, write and delete access to the mailbox. */
export const GMAIL_FULL_SCOPE = 'https://mail.google.com/';
/** users.messages.send alone: send only (a "sensitive", not "restricted", scope). */
export const GMAIL_SEND_SCOPE = 'https://www.googleapis.com/auth/gmail.send';

type ScopeAccount = Pick<AccountConfig, 'transport'> &
  Partial<Pick<AccountConfig, 'provider' | 'email' | 'mailbox' | 'cloud'>> & {
    oauth?: { type: string };
    upstream?: { largeMessages?: boolean };
  };

export function scopesFor(account: ScopeAccount): string[] {
  if (account.provider === 'microsoft') return microsoftScopes(account);
  if (account.transport === 'gmail-api') return [GMAIL_SEND_SCOPE];
  // auto sends over SMTP when the API cannot express the envelope: it needs both.
  if (account.transport === 'auto') return [GMAIL_FULL_SCOPE, GMAIL_SEND_SCOPE];
  return [GMAIL_FULL_SCOPE];
}

/** Microsoft: one resource per token. App-only asks for the resource's .default (the admin-consented permissions). */
function microsoftScopes(account: ScopeAccount): string[] {
  const app = account.oauth?.type === 'app';
  if (account.transport !== 'graph') return app ? [MS_APP_SCOPE] : [...MS_DELEGATED_SCOPES];
  const g = graphScopes(account.cloud);
  if (app) return [g.app];
  const shared = account.mailbox !== undefined && account.mailbox.toLowerCase() !== account.email?.toLowerCase();
  return [shared ? g.sendShared : g.send, ...(account.upstream?.largeMessages ? [g.readWrite] : []), 'offline_access'];
}

/**
 * The scopes a transport needs that a grant's answer (its space-separated `scope`) lacks.
 * offline_access is not checked here (a missing refresh token is its own error); an answer
 * without a scope list says nothing, so nothing is missing.
 */
export function missingScopes(account: ScopeAccount, granted: string | undefined | null): string[] {
  if (typeof granted !== 'string') return [];
  const have = new Set(granted.split(/\s+/).filter(Boolean));
  return scopesFor(account).filter((sc) => sc !== 'offline_access' && !have.has(sc));
}

/**
 * What a Google sign-in asks for: the transport's scopes plus `openid email`, so the token
 * response carries an id_token naming who signed in (Google sends none without them), and a
 * re-authorization as another user can be refused before anything is stored.
 */
export const GOOGLE_IDENTITY_SCOPES = ['openid', 'email'] as const;

export function signInScopesFor(account: ScopeAccount): string[] {
  return [...scopesFor(account), ...GOOGLE_IDENTITY_SCOPES];
}
