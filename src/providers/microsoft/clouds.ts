// Microsoft's clouds and scopes: where sign-in and Graph live, and what each transport's token
// is for (one resource per token, so Graph and SMTP scopes never mix).
import type { ProviderAccount } from '../provider.js';

/** Delegated scope for SMTP AUTH XOAUTH2; offline_access brings the refresh token. */
export const MS_SMTP_SCOPE = 'https://outlook.office.com/SMTP.Send';
export const MS_DELEGATED_SCOPES = [MS_SMTP_SCOPE, 'offline_access'];
/**
 * OpenID scopes a delegated sign-in adds (beside one resource's scopes, as Entra ID allows) so
 * its id_token names who signed in: email and preferred_username. Never asked for in a refresh.
 */
export const MS_IDENTITY_SCOPES = ['openid', 'profile', 'email'];
/** App-only (client credentials): Exchange Online's application permission SMTP.SendAsApp. */
export const MS_APP_SCOPE = 'https://outlook.office365.com/.default';
/**
 * Microsoft's clouds (the account's `cloud:` key): where sign-in and Graph live. One table, so
 * a cloud's login host, Graph host and Graph scopes always agree. (SMTP hosts and the Exchange
 * SMTP scope are the global ones; in a national cloud set upstream.host for transport smtp.)
 * `issuer`: the host in its id_tokens' iss ({issuer}/{tenant GUID}/v2.0), per its v2.0 OpenID
 * metadata; China's differs from its login host.
 */
export const MS_CLOUDS = {
  global: {
    login: 'https://login.microsoftonline.com',
    issuer: 'https://login.microsoftonline.com',
    graph: 'https://graph.microsoft.com',
  },
  /** US Government GCC High. */
  usgov: {
    login: 'https://login.microsoftonline.us',
    issuer: 'https://login.microsoftonline.us',
    graph: 'https://graph.microsoft.us',
  },
  /** US Government DoD. */
  dod: {
    login: 'https://login.microsoftonline.us',
    issuer: 'https://login.microsoftonline.us',
    graph: 'https://dod-graph.microsoft.us',
  },
  /** Microsoft 365 operated by 21Vianet (China). */
  china: {
    login: 'https://login.chinacloudapi.cn',
    issuer: 'https://login.partner.microsoftonline.cn',
    graph: 'https://microsoftgraph.chinacloudapi.cn',
  },
} as const;
export type MsCloud = keyof typeof MS_CLOUDS;
export const MS_CLOUD_NAMES = Object.keys(MS_CLOUDS) as [MsCloud, ...MsCloud[]];

/** The Graph scopes of a cloud (the resource is the cloud's Graph host). */
export function graphScopes(cloud: MsCloud = 'global'): {
  send: string;
  sendShared: string;
  readWrite: string;
  app: string;
} {
  const g = MS_CLOUDS[cloud].graph;
  return {
    send: `${g}/Mail.Send`,
    sendShared: `${g}/Mail.Send.Shared`,
    readWrite: `${g}/Mail.ReadWrite`,
    app: `${g}/.default`,
  };
}

/** Microsoft Graph (transport graph): base URL and scopes. One token is for one resource, so Graph and SMTP scopes never mix. */
export const GRAPH_URL = MS_CLOUDS.global.graph;
export const GRAPH_SEND_SCOPE = `${GRAPH_URL}/Mail.Send`;
/** Delegated: send from a shared mailbox the user has Send As / Send on Behalf on. */
export const GRAPH_SEND_SHARED_SCOPE = `${GRAPH_URL}/Mail.Send.Shared`;
/** Needed for drafts and upload sessions (upstream.largeMessages). */
export const GRAPH_READWRITE_SCOPE = `${GRAPH_URL}/Mail.ReadWrite`;
/** App-only: the application permissions (Mail.Send) granted with admin consent. */
export const GRAPH_APP_SCOPE = `${GRAPH_URL}/.default`;

/** Microsoft: one resource per token. App-only asks for the resource's .default (the admin-consented permissions). */
export function microsoftScopes(a: ProviderAccount): string[] {
  const app = a.oauth?.type === 'app';
  if (a.transport !== 'graph') return app ? [MS_APP_SCOPE] : [...MS_DELEGATED_SCOPES];
  if (app) return [graphScopes(a.cloud as MsCloud | undefined).app];
  return microsoftGraphScopes(a);
}

/**
 * A delegated grant's Graph scopes: those of transport graph, and the second resource of a
 * delegated transport auto account (its Graph token comes from the same refresh token).
 */
export function microsoftGraphScopes(a: ProviderAccount): string[] {
  const g = graphScopes(a.cloud as MsCloud | undefined);
  const shared = a.mailbox !== undefined && a.mailbox.toLowerCase() !== a.email?.toLowerCase();
  return [shared ? g.sendShared : g.send, ...(a.upstream?.largeMessages ? [g.readWrite] : []), 'offline_access'];
}

/**
 * What a sign-in consents to: the transport's scopes and the OpenID ones (who signed in).
 * Delegated transport auto: SMTP.Send and Graph's Mail.Send in one sign-in (SMTP first: a
 * redemption without its own scope is for the first resource); every token request still
 * names one resource (microsoftScopes / microsoftGraphScopes).
 */
export function microsoftSignInScopes(a: ProviderAccount): string[] {
  if (a.oauth?.type === 'app') return microsoftScopes(a);
  const resources = a.transport === 'auto' ? [MS_SMTP_SCOPE, ...microsoftGraphScopes(a)] : microsoftScopes(a);
  return [...resources, ...MS_IDENTITY_SCOPES];
}

/** The authorization code's redemption: the first token's one resource, and the OpenID scopes (its id_token). */
export function microsoftRedeemScopes(a: ProviderAccount): string[] {
  return [...microsoftScopes(a), ...MS_IDENTITY_SCOPES];
}

/**
 * The issuer of the id_tokens signed in at `authority` (the token endpoint's origin) for the
 * tenant `tid`: a cloud's login host maps to its issuer host; any other authority (oauth.authorityHost
 * pointing elsewhere) is taken to issue as itself.
 */
export function microsoftIssuer(authority: string, tid: string): string {
  const origin = new URL(authority).origin;
  const cloud = Object.values(MS_CLOUDS).find((c) => c.login === origin);
  return `${cloud?.issuer ?? origin}/${tid}/v2.0`;
}
