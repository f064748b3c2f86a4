// What every mail provider (Google, Microsoft) gives the rest of the bridge: one interface, so
// a new provider is its own folder plus one line in ./index.ts. The provider-neutral token
// cache (src/oauth/) decides *when* to refresh; a provider's refresher only talks to its token
// endpoint. Types here are structural views of an account, because config/ imports providers/
// (for defaults and checks) and not the reverse.
import type { Logger } from '../log/logger.js';
import type { TokenResource } from '../types.js';
import type { DeviceFlow, RedirectFlow } from './signIn.js';

export type OAuthType = 'user' | 'service-account' | 'app';

/** The account settings a provider reads (a structural view of config's AccountConfig). */
export interface ProviderOAuth {
  type: OAuthType;
  clientId?: string;
  tokenUrl?: string;
  authUrl?: string;
  tenant?: string;
  authorityHost?: string;
  clientSecret?: string;
  clientSecretFile?: string;
  certificateFile?: string;
  privateKeyFile?: string;
  keyFile?: string;
  subject?: string;
  caFile?: string;
}

export interface ProviderAccount {
  name?: string;
  provider?: string;
  email?: string;
  transport: string;
  mailbox?: string;
  cloud?: string;
  oauth?: ProviderOAuth;
  upstream?: { host?: string; port?: number; apiUrl?: string; largeMessages?: boolean };
}

/** An account that signs in interactively (oauth.type user), with its defaults filled in. */
export type SignInAccount = ProviderAccount & {
  name: string;
  email: string;
  oauth: ProviderOAuth & { type: 'user'; clientId: string; tokenUrl: string; authUrl: string };
};

/** An account before defaults: what the schema parsed. */
export interface RawAccount {
  provider: string;
  transport: string;
  cloud?: string;
  mailbox?: string;
  oauth: ProviderOAuth;
  upstream: { host?: string; port?: number; apiUrl?: string; largeMessages?: boolean };
  limits: { messagesPerDay?: number; recipientsPerDay?: number; messagesPerMinute?: number };
}

/** What a provider fills in where the config is silent. */
export interface ProviderDefaults {
  tokenUrl?: string;
  authUrl?: string;
  upstream: { host: string; port: number; apiUrl: string };
  limits: {
    messagesPerDay: number | undefined;
    recipientsPerDay: number | undefined;
    messagesPerMinute: number | undefined;
  };
}

/** A setting that does not fit the provider: its key path under the account, and the fix. */
export interface ConfigIssue {
  path: (string | number)[];
  message: string;
}

export interface HttpOptions {
  /** Per-request timeout; a hung endpoint must not stall delivery forever. */
  timeoutMs?: number;
}

/** The token endpoint's answer as the cache needs it. */
export interface TokenResponse {
  access_token: string;
  expires_in?: number;
  expiry_date?: number;
  refresh_token?: string;
  refresh_token_expires_in?: number;
  id_token?: string;
  scope?: string;
}

export interface ClassifiedError {
  /** The grant is dead (revoked, expired, wrong client): only re-authorization helps. */
  dead: boolean;
  /** OAuth error code (invalid_grant, AADSTS70008, ...) or network code, when known. */
  code: string | undefined;
  /** A short, secret-free description for logs and `token status`. */
  message: string;
}

/** A failure on our side (config file, disk), described by its own message. */
export class LocalError extends Error {}
/** A problem with the account's own config (secret file, key file): not the endpoint's fault. */
export class AccountConfigError extends LocalError {}

/** What the cache lends a refresher for one account. */
export interface GrantContext {
  name: string;
  /** The account's config now (a reload may change more than its oauth settings). */
  account: () => ProviderAccount;
  log: Logger;
  http: HttpOptions;
  now: () => number;
  /** The refresh token the cache holds now (it may change while a request runs). */
  currentRefreshToken: () => string | undefined;
  /** Persists a rotated refresh token; resolves before the new access token may be used. */
  rotate: (refreshToken: string, expiresInSec: number | undefined) => Promise<void>;
  /** The grant said when its refresh token lapses (a time-limited grant). */
  refreshTokenExpiresIn: (seconds: number) => void;
  /** No refresh token is stored: marks the account needs-reauth and throws NeedsReauthError. */
  noRefreshToken: () => Promise<never>;
}

export interface Refresher {
  /** A new access token; `refreshToken` is the one the cache holds at the start of the refresh. */
  refresh(refreshToken: string | undefined): Promise<TokenResponse>;
  /** A token for a second resource of the same grant (Microsoft transport auto: Graph), rotation as in `refresh`. */
  refreshFor?(refreshToken: string | undefined, resource: TokenResource): Promise<TokenResponse>;
}

/** An SMTP reply that needs more than the generic classes: an operator hold, a better bounce, a quota. */
export interface SmtpReplyClass {
  /** Only an operator can fix this: the exact fix (ACCOUNT stands for the account name). */
  hold?: string;
  /** A clearer reason for the bounce or the deferral. */
  explain?: string;
  quota?: boolean;
  /**
   * The server refuses SMTP AUTH for this mailbox (another transport may still reach it). With
   * `hold`, at once; without, only when a fresh token is refused the same way (else: needs-reauth).
   */
  smtpAuthRefused?: boolean;
}

export interface Provider {
  readonly id: string;
  /** For messages: "Google", "Microsoft". */
  readonly label: string;
  /** Unused refresh tokens lapse after this long. */
  readonly idleGrantLifetimeMs: number;
  /** Whether oauth.clientFile (Google's downloaded client JSON) applies; otherwise the fix. */
  readonly clientFile: true | string;
  /** Interactive sign-in of a user's grant (oauth.type user): `authorize` and the web console. */
  readonly signIn: {
    redirect(a: SignInAccount, redirectUri: string, state: string): Promise<RedirectFlow>;
    /** The device code (RFC 8628), where the provider allows it for the account's scopes. */
    device?(a: SignInAccount, sleep: (ms: number) => Promise<void>): Promise<DeviceFlow>;
    /** Without `device`: why not, one sentence (each surface adds what to use instead). */
    noDevice?: string;
  };
  defaults(a: RawAccount): ProviderDefaults;
  /** Settings that do not fit this provider (also transport/grant combinations). */
  issues(a: RawAccount): ConfigIssue[];
  /** The scopes an account's tokens are asked for (the one place that decides). */
  scopes(a: ProviderAccount): string[];
  /** What an interactive sign-in asks for: scopes plus what names the signed-in user. */
  signInScopes(a: ProviderAccount): string[];
  /** Who an access token speaks for: a stored token is reused only for the same identity. */
  tokenIdentity(a: ProviderAccount): string;
  /** The grant's way to a new access token; throws when the account's own files make it unusable. */
  refresher(a: ProviderAccount, ctx: GrantContext): Refresher | undefined;
  /** A token-endpoint failure, reduced to what may be logged. */
  classifyTokenError(err: unknown, http: HttpOptions): ClassifiedError;
  /** The exact command that fixes a dead grant of a non-interactive grant type (else undefined). */
  fixHint(a: ProviderAccount & { name: string }): string | undefined;
  /** Upstream SMTP replies this provider's servers give that need more than the generic classes. */
  smtpReply?(text: string, a: ProviderAccount & { email: string }): SmtpReplyClass | null;
  /** A grant some setups revoke at a fixed age (Google: apps in "Testing" status, after 7 days). */
  readonly grantAgeLimit?: GrantAgeLimit;
}

export interface GrantAgeLimit {
  lifetimeMs: number;
  /** Warn from this age on. */
  warnAfterMs: number;
  /** When the limit applies, as a condition: 'the OAuth app is in "Testing" status'. */
  when: string;
  /** What avoids it. */
  advice: string;
}
