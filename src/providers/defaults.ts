// Per-provider defaults and consistency checks for an account's config. Kept free of the
// config schema (the schema imports this) so each provider's endpoints, upstream and
// limits are stated in one place.

import { MS_CLOUDS, type MsCloud } from './microsoft.js';

export type ProviderId = 'google' | 'microsoft';

export const GOOGLE = {
  tokenUrl: 'https://oauth2.googleapis.com/token',
  apiUrl: 'https://gmail.googleapis.com',
  authUrl: 'https://accounts.google.com/o/oauth2/v2/auth',
  upstream: { host: 'smtp.gmail.com', port: 465 },
  limits: {
    messagesPerDay: 2000 as number | undefined,
    recipientsPerDay: undefined as number | undefined,
    messagesPerMinute: undefined as number | undefined,
  },
};

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

interface RawOAuth {
  type: 'user' | 'service-account' | 'app';
  tokenUrl?: string;
  authUrl?: string;
  tenant?: string;
  authorityHost?: string;
  clientSecret?: string;
  clientSecretFile?: string;
  certificateFile?: string;
  privateKeyFile?: string;
}

interface RawAccount {
  provider: ProviderId;
  cloud?: MsCloud;
  oauth: RawOAuth;
  upstream: { host?: string; port?: number; apiUrl?: string };
  limits: { messagesPerDay?: number; recipientsPerDay?: number; messagesPerMinute?: number };
}

type FilledOAuth<O> = O extends { type: 'user' }
  ? O & { tokenUrl: string; authUrl: string }
  : O extends { type: 'app' }
    ? O & { tokenUrl: string }
    : O;

export type WithDefaults<A extends RawAccount> = Omit<A, 'oauth' | 'upstream' | 'limits'> & {
  oauth: FilledOAuth<A['oauth']>;
  upstream: A['upstream'] & { host: string; port: number; apiUrl: string };
  limits: A['limits'] & {
    messagesPerDay: number | undefined;
    recipientsPerDay: number | undefined;
    messagesPerMinute: number | undefined;
  };
};

export function withProviderDefaults<A extends RawAccount>(a: A): WithDefaults<A> {
  const ms = a.provider === 'microsoft';
  const o = { ...a.oauth };
  if (ms && o.tenant && (o.type === 'user' || o.type === 'app')) {
    const ep = microsoftEndpoints(o.authorityHost ?? (a.cloud ? MS_CLOUDS[a.cloud].login : undefined), o.tenant);
    o.tokenUrl ??= ep.tokenUrl;
    if (o.type === 'user') o.authUrl ??= ep.authUrl;
  }
  if (o.type === 'user') {
    o.tokenUrl ??= GOOGLE.tokenUrl;
    o.authUrl ??= GOOGLE.authUrl;
  }
  if (o.type === 'app') o.tokenUrl ??= '';
  const up = ms ? (o.tenant === 'consumers' ? MICROSOFT.consumerUpstream : MICROSOFT.upstream) : GOOGLE.upstream;
  const lim = ms ? MICROSOFT.limits : GOOGLE.limits;
  return {
    ...a,
    oauth: o,
    upstream: {
      ...a.upstream,
      host: a.upstream.host ?? up.host,
      port: a.upstream.port ?? up.port,
      apiUrl: a.upstream.apiUrl ?? (ms ? MS_CLOUDS[a.cloud ?? 'global'].graph : GOOGLE.apiUrl),
    },
    limits: {
      ...a.limits,
      messagesPerDay: a.limits.messagesPerDay ?? lim.messagesPerDay,
      recipientsPerDay: a.limits.recipientsPerDay ?? lim.recipientsPerDay,
      messagesPerMinute: a.limits.messagesPerMinute ?? lim.messagesPerMinute,
    },
  } as unknown as WithDefaults<A>;
}

/** Settings that do not fit the provider, each with its key path under the account and the fix. */
export function providerIssues(a: RawAccount): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = [];
  const o = a.oauth;
  if (a.provider === 'google') {
    if (o.type === 'app')
      out.push({
        path: ['oauth', 'type'],
        message: 'type app (client credentials) is for provider microsoft; Google uses type service-account',
      });
    if (o.tenant !== undefined)
      out.push({ path: ['oauth', 'tenant'], message: 'tenant is for provider microsoft only' });
    if (o.authorityHost !== undefined)
      out.push({ path: ['oauth', 'authorityHost'], message: 'authorityHost is for provider microsoft only' });
    return out;
  }
  if (o.type === 'service-account')
    out.push({
      path: ['oauth', 'type'],
      message: "service-account is Google's; for Microsoft use type user (delegated) or app (client credentials)",
    });
  if ((o.type === 'user' || o.type === 'app') && !o.tenant)
    out.push({
      path: ['oauth', 'tenant'],
      message: 'set the Entra ID tenant: its GUID or domain (contoso.com), organizations, or consumers for Outlook.com',
    });
  if (o.type === 'app') {
    const secret = Boolean(o.clientSecret || o.clientSecretFile);
    const cert = Boolean(o.certificateFile || o.privateKeyFile);
    if (!secret && !cert)
      out.push({
        path: ['oauth'],
        message: 'set clientSecret/clientSecretFile, or certificateFile and privateKeyFile',
      });
    if (secret && cert) out.push({ path: ['oauth'], message: 'set either a client secret or a certificate, not both' });
    if (cert && !(o.certificateFile && o.privateKeyFile))
      out.push({ path: ['oauth'], message: 'a certificate needs both certificateFile and privateKeyFile' });
    if (o.tenant === 'consumers' || o.tenant === 'organizations' || o.tenant === 'common')
      out.push({
        path: ['oauth', 'tenant'],
        message: 'app-only sign-in needs your own tenant (GUID or domain), not consumers/organizations/common',
      });
  }
  return out;
}
