// The providers the bridge knows: the one line a new provider adds is in PROVIDERS. Everything
// else asks here (defaults, config checks, scopes, token identity) instead of naming a provider.
import { google } from './google/index.js';
import { microsoft } from './microsoft/index.js';
import type { ConfigIssue, Provider, ProviderAccount, RawAccount } from './provider.js';
import { missingFrom } from './signIn.js';

export const PROVIDERS = { google, microsoft } as const satisfies Record<string, Provider>;

export type ProviderId = keyof typeof PROVIDERS;
export const PROVIDER_IDS = Object.keys(PROVIDERS) as [ProviderId, ...ProviderId[]];
/** Accounts that name no provider are Google's (the config's default). */
export const DEFAULT_PROVIDER: ProviderId = 'google';

export function providerFor(a: { provider?: string }): Provider {
  return PROVIDERS[(a.provider ?? DEFAULT_PROVIDER) as ProviderId] ?? PROVIDERS[DEFAULT_PROVIDER];
}

/** The scopes an account's tokens are asked for: the one place that decides (through its provider). */
export function scopesFor(a: ProviderAccount): string[] {
  return providerFor(a).scopes(a);
}

/** What an interactive sign-in asks for. */
export function signInScopesFor(a: ProviderAccount): string[] {
  return providerFor(a).signInScopes(a);
}

/** The scopes a transport needs that a grant's answer (its space-separated `scope`) lacks. */
export function missingScopes(a: ProviderAccount, granted: string | undefined | null): string[] {
  return missingFrom(scopesFor(a), granted);
}

/** Who an access token speaks for: a stored token is only reused for the same identity. */
export function tokenIdentity(a: ProviderAccount): string {
  return providerFor(a).tokenIdentity(a);
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

/** The account with its provider's defaults where the config is silent. */
export function withProviderDefaults<A extends RawAccount>(a: A): WithDefaults<A> {
  const d = providerFor(a).defaults(a);
  const o = { ...a.oauth };
  if (d.tokenUrl !== undefined) o.tokenUrl ??= d.tokenUrl;
  if (d.authUrl !== undefined) o.authUrl ??= d.authUrl;
  return {
    ...a,
    oauth: o,
    upstream: {
      ...a.upstream,
      host: a.upstream.host ?? d.upstream.host,
      port: a.upstream.port ?? d.upstream.port,
      apiUrl: a.upstream.apiUrl ?? d.upstream.apiUrl,
    },
    limits: {
      ...a.limits,
      messagesPerDay: a.limits.messagesPerDay ?? d.limits.messagesPerDay,
      recipientsPerDay: a.limits.recipientsPerDay ?? d.limits.recipientsPerDay,
      messagesPerMinute: a.limits.messagesPerMinute ?? d.limits.messagesPerMinute,
    },
  } as unknown as WithDefaults<A>;
}

/** Settings that do not fit the account's provider, each with its key path under the account and the fix. */
export function providerIssues(a: RawAccount): ConfigIssue[] {
  return providerFor(a).issues(a);
}
