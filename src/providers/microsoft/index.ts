// Microsoft (Microsoft 365 / Exchange Online, Outlook.com): defaults per cloud and tenant,
// config checks, scopes per transport, grants (delegated, app-only with a secret or a
// certificate), AADSTS token errors and Exchange's SMTP replies.
import { classifyTokenError } from '../http.js';
import type { ConfigIssue, Provider, ProviderAccount, RawAccount } from '../provider.js';
import { microsoftAppRefresher } from './appGrant.js';
import { MS_CLOUDS, type MsCloud, microsoftScopes, microsoftSignInScopes } from './clouds.js';
import { microsoftDelegatedRefresher } from './delegatedGrant.js';
import { classifyMicrosoftError, exchangeReply } from './errors.js';
import { microsoftDevice, microsoftRedirect, type UserAccount as MsUserAccount } from './signIn.js';
import type { MicrosoftOAuth } from './tokens.js';

export const MICROSOFT = {
  authorityHost: 'https://login.microsoftonline.com',
  upstream: { host: 'smtp.office365.com', port: 587 },
  /** Outlook.com (tenant `consumers`) mailboxes send through a different host. */
  consumerUpstream: { host: 'smtp-mail.outlook.com', port: 587 },
  // Exchange Online counts recipients, not messages: 10,000 recipients per day; 30 messages per minute.
  limits: { messagesPerDay: undefined, recipientsPerDay: 10_000, messagesPerMinute: 30 },
};

/** The v2.0 endpoints of a tenant at an authority host. */
export function microsoftEndpoints(
  authorityHost: string | undefined,
  tenant: string,
): { tokenUrl: string; authUrl: string; deviceUrl: string } {
  const base = `${(authorityHost ?? MICROSOFT.authorityHost).replace(/\/+$/, '')}/${encodeURIComponent(tenant)}/oauth2/v2.0`;
  return { tokenUrl: `${base}/token`, authUrl: `${base}/authorize`, deviceUrl: `${base}/devicecode` };
}

const DAY = 86400e3;

export const microsoft: Provider = {
  id: 'microsoft',
  label: 'Microsoft',
  // Unused refresh tokens lapse after 90 days of inactivity.
  idleGrantLifetimeMs: 90 * DAY,
  clientFile: "clientFile is Google's downloaded client JSON; for Microsoft set clientId and clientSecretFile",
  signIn: {
    redirect: (a, uri, state) => microsoftRedirect(a as MsUserAccount, uri, state),
    device: (a, sleep) => microsoftDevice(a as MsUserAccount, sleep),
  },

  defaults(a: RawAccount) {
    const o = a.oauth;
    const cloud = MS_CLOUDS[(a.cloud as MsCloud | undefined) ?? 'global'];
    const ep = o.tenant ? microsoftEndpoints(o.authorityHost ?? (a.cloud ? cloud.login : undefined), o.tenant) : null;
    const up = o.tenant === 'consumers' ? MICROSOFT.consumerUpstream : MICROSOFT.upstream;
    return {
      ...(ep && o.type === 'user' ? { tokenUrl: ep.tokenUrl, authUrl: ep.authUrl } : {}),
      // app-only without a tenant is reported by issues(); '' keeps the type's promise of a string.
      ...(o.type === 'app' ? { tokenUrl: ep?.tokenUrl ?? '' } : {}),
      upstream: { ...up, apiUrl: cloud.graph },
      limits: MICROSOFT.limits,
    };
  },

  issues(a: RawAccount) {
    const out: ConfigIssue[] = [];
    const o = a.oauth;
    if (o.type === 'service-account')
      out.push({
        path: ['oauth', 'type'],
        message: "service-account is Google's; for Microsoft use type user (delegated) or app (client credentials)",
      });
    if ((o.type === 'user' || o.type === 'app') && !o.tenant)
      out.push({
        path: ['oauth', 'tenant'],
        message:
          'set the Entra ID tenant: its GUID or domain (contoso.com), organizations, or consumers for Outlook.com',
      });
    if (o.type === 'app') {
      const secret = Boolean(o.clientSecret || o.clientSecretFile);
      const cert = Boolean(o.certificateFile || o.privateKeyFile);
      if (!secret && !cert)
        out.push({
          path: ['oauth'],
          message: 'set clientSecret/clientSecretFile, or certificateFile and privateKeyFile',
        });
      if (secret && cert)
        out.push({ path: ['oauth'], message: 'set either a client secret or a certificate, not both' });
      if (cert && !(o.certificateFile && o.privateKeyFile))
        out.push({ path: ['oauth'], message: 'a certificate needs both certificateFile and privateKeyFile' });
      if (o.tenant === 'consumers' || o.tenant === 'organizations' || o.tenant === 'common')
        out.push({
          path: ['oauth', 'tenant'],
          message: 'app-only sign-in needs your own tenant (GUID or domain), not consumers/organizations/common',
        });
    }
    if (a.transport === 'gmail-api')
      out.push({
        path: ['transport'],
        message: `transport ${a.transport} is for Google accounts only; Microsoft accounts send over SMTP (transport smtp) or Microsoft Graph (transport graph)`,
      });
    // SMTP: Exchange takes another mailbox as the XOAUTH2 user only from an app-only token.
    if (a.mailbox !== undefined && a.transport !== 'graph' && !(a.transport === 'smtp' && o.type === 'app'))
      out.push({
        path: ['mailbox'],
        message:
          'mailbox (send from another mailbox) is for transport graph, or app-only (oauth.type app) Microsoft SMTP; remove it or set transport: graph',
      });
    return out;
  },

  scopes: microsoftScopes,
  // Delegated: plus openid profile email, so the sign-in's id_token names who signed in.
  // Delegated auto consents to SMTP and Graph in one sign-in; each token is still for one resource.
  signInScopes: microsoftSignInScopes,

  tokenIdentity(a: ProviderAccount) {
    const o = a.oauth!;
    // A Microsoft token is for one resource (SMTP or Graph): another transport needs a new one.
    const resource = a.transport !== 'smtp' ? `:${microsoftScopes(a).join(' ')}` : '';
    return `${o.type}:${o.clientId}:${o.tokenUrl}${resource}`;
  },

  refresher(a, ctx) {
    const o = a.oauth as MicrosoftOAuth;
    const acct = { ...a, name: a.name ?? ctx.name };
    if (o.type === 'app') return microsoftAppRefresher(acct, o, ctx);
    if (o.type === 'user') return microsoftDelegatedRefresher(acct, o, ctx);
    return undefined;
  },

  classifyTokenError: (err, http) => classifyMicrosoftError(err) ?? classifyTokenError(err, http),

  fixHint(a) {
    if (a.oauth?.type !== 'app') return undefined;
    return `check the app registration in Entra ID (client secret or certificate, SMTP.SendAsApp with admin consent, the Exchange service principal and its mailbox permission: see README "Microsoft 365"), then run: xoauth2-bridge token refresh ${a.name}`;
  },

  smtpReply: (text, a) => exchangeReply(text, a.oauth ?? { type: 'user' }, a.mailbox ?? a.email),
};
