// Google (Gmail and Google Workspace): defaults, config checks, scopes, grants (a user's refresh
// token, or a service account with domain-wide delegation), token errors and grant lifetimes.
import type { Provider, ProviderAccount, RawAccount } from '../provider.js';
import { classifyTokenError } from '../http.js';
import { readServiceAccountKey, type ServiceAccountOAuth } from './client.js';
import { GOOGLE_IDENTITY_SCOPES, googleScopes } from './scopes.js';
import { googleServiceAccountRefresher } from './serviceAccountGrant.js';
import { googleRedirect } from './signIn.js';
import { googleUserRefresher } from './userGrant.js';

const DAY = 86400e3;

export const GOOGLE = {
  tokenUrl: 'https://oauth2.googleapis.com/token',
  apiUrl: 'https://gmail.googleapis.com',
  authUrl: 'https://accounts.google.com/o/oauth2/v2/auth',
  upstream: { host: 'smtp.gmail.com', port: 465 },
  limits: { messagesPerDay: 2000, recipientsPerDay: undefined, messagesPerMinute: undefined },
};

export const google: Provider = {
  id: 'google',
  label: 'Google',
  // Unused refresh tokens lapse after 6 months.
  idleGrantLifetimeMs: 180 * DAY,
  clientFile: true,
  signIn: {
    redirect: googleRedirect,
    noDevice: 'Google refuses the Gmail scope in the device flow.',
  },
  // Google revokes refresh tokens of apps in "Testing" publishing status 7 days after issue.
  grantAgeLimit: {
    lifetimeMs: 7 * DAY,
    warnAfterMs: 5 * DAY,
    when: 'the OAuth app is in "Testing" status',
    advice: 'Move the app to "In production" (see README) to keep tokens valid',
  },

  defaults(a: RawAccount) {
    return {
      ...(a.oauth.type === 'user' ? { tokenUrl: GOOGLE.tokenUrl, authUrl: GOOGLE.authUrl } : {}),
      upstream: { ...GOOGLE.upstream, apiUrl: GOOGLE.apiUrl },
      limits: GOOGLE.limits,
    };
  },

  issues(a: RawAccount) {
    const out = [];
    const o = a.oauth;
    if (o.type === 'app')
      out.push({
        path: ['oauth', 'type'],
        message: 'type app (client credentials) is for provider microsoft; Google uses type service-account',
      });
    if (o.type === 'user' && !o.clientSecret && !o.clientSecretFile)
      out.push({ path: ['oauth'], message: 'set clientSecret or clientSecretFile' });
    if (o.tenant !== undefined)
      out.push({ path: ['oauth', 'tenant'], message: 'tenant is for provider microsoft only' });
    if (o.authorityHost !== undefined)
      out.push({ path: ['oauth', 'authorityHost'], message: 'authorityHost is for provider microsoft only' });
    if (a.transport === 'graph')
      out.push({
        path: ['transport'],
        message:
          'transport graph is Microsoft Graph, for provider microsoft; a Google account uses smtp, gmail-api or auto',
      });
    if (a.cloud !== undefined)
      out.push({
        path: ['cloud'],
        message: 'cloud (Microsoft national clouds) is for provider microsoft only; remove it',
      });
    if (a.mailbox !== undefined && a.transport !== 'graph')
      out.push({
        path: ['mailbox'],
        message:
          'mailbox (send from another mailbox) is for transport graph, or app-only (oauth.type app) Microsoft SMTP; remove it or set transport: graph',
      });
    return out;
  },

  scopes: googleScopes,
  signInScopes: (a) => [...googleScopes(a), ...GOOGLE_IDENTITY_SCOPES],

  tokenIdentity(a: ProviderAccount) {
    const o = a.oauth!;
    if (o.type === 'user') return `user:${o.clientId}:${o.tokenUrl}`;
    // A service account's token carries the scopes it asked for: another transport needs a new one.
    const scopes = a.transport === 'smtp' ? '' : `:${googleScopes(a).join(' ')}`;
    return `sa:${o.keyFile}:${o.subject ?? ''}:${o.tokenUrl}${scopes}`;
  },

  refresher(a, ctx) {
    const o = a.oauth!;
    if (o.type === 'user') return googleUserRefresher(a, ctx);
    if (o.type === 'service-account')
      return googleServiceAccountRefresher({ ...a, oauth: o as ServiceAccountOAuth }, ctx);
    return undefined;
  },

  classifyTokenError,

  fixHint(a) {
    const o = a.oauth!;
    if (o.type !== 'service-account') return undefined;
    // The Admin console's domain-wide delegation takes the key's numeric client ID, not its email.
    let clientId: string | undefined;
    try {
      clientId = readServiceAccountKey(o.keyFile!).client_id;
    } catch {
      /* an unreadable key file is its own error; the hint still names scope and subject */
    }
    return `check the key file and the domain-wide delegation of the service account (Google Admin console > Security > API controls > Domain-wide delegation: ${clientId ? `client ID ${clientId}` : "the key file's client_id"}, scope ${googleScopes(a).join(' ')}${o.subject ? `, subject ${o.subject}` : ''}), then run: xoauth2-bridge token refresh ${a.name}`;
  },
};
