// The config file's shape. Every object is strict so a typo is an error that names its key.
import { z } from 'zod';
import { DEFAULT_PROVIDER, PROVIDER_IDS, providerIssues, withProviderDefaults } from '../providers/index.js';
import { MS_CLOUD_NAMES } from '../providers/microsoft/clouds.js';
import { isIP } from 'node:net';
import { Cron } from 'croner';
import { parseDuration, parseSize } from './units.js';
import { isNetwork, isLoopbackHost, openRelayReason } from './networks.js';
import { isValidPasswordHash } from './phc.js';

/** Whether croner (the token refresh job's scheduler) takes `expr`; a paused job never runs. */
function validCron(expr: string): boolean {
  try {
    new Cron(expr, { paused: true }).stop();
    return true;
  } catch {
    return false;
  }
}

const duration = (what: string) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `${what}: expected a duration like 30s, 5m, 4h or 5d` });
      return z.NEVER;
    }
    return ms;
  });

const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === null) {
    ctx.addIssue({ code: 'custom', message: 'expected a size like 25MB, 512KB or a number of bytes' });
    return z.NEVER;
  }
  return n;
});

// Parsed by the same code the listener matches clients with (src/config/networks.ts).
const cidr = z.string().refine(isNetwork, 'expected an IP address or CIDR like 192.168.1.0/24 or fd00::/8');

const email = z.string().regex(/^[^@\s]+@[^@\s]+$/, 'expected an email address');
const senderPattern = z.string().regex(/^([^@\s]+|\*)@[^@\s]+$/, 'expected an address or *@domain');
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'expected a name of letters, digits, . _ -');
// Parsed by the code that checks logins (src/config/phc.ts): a hash it cannot read never matches.
const passwordHash = z.string().superRefine((s, ctx) => {
  if (isValidPasswordHash(s)) return;
  const message = s.includes('REPLACE')
    ? "the example config's placeholder: put the output of `xoauth2-bridge hash-password` here"
    : s.startsWith('$scrypt$')
      ? 'not a valid $scrypt$ hash ($scrypt$ln=N,r=N,p=N$SALT$HASH): paste the whole output of `xoauth2-bridge hash-password`, in double quotes'
      : 'expected a $scrypt$ hash from `xoauth2-bridge hash-password`; plaintext passwords are refused';
  ctx.addIssue({ code: 'custom', message });
});
// Client IDs the example config ships with: they exist nowhere, so a refresh could only fail later.
const EXAMPLE_CLIENT_IDS = new Set(['123.apps.googleusercontent.com', '00000000-0000-0000-0000-000000000000']);
const clientId = z
  .string()
  .min(1)
  .refine((s) => !EXAMPLE_CLIENT_IDS.has(s), {
    message:
      "the example config's placeholder: put your OAuth client ID here (Google Cloud console, APIs & Services > Credentials; Entra ID: Application (client) ID), or for Google replace clientId with oauth.clientFile: the downloaded client JSON",
  });
const tlsVersion = z.enum(['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']);

export const listenerSchema = z.strictObject({
  name: name,
  host: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535),
  tls: z.enum(['none', 'starttls', 'implicit']).default('none'),
  certFile: z.string().optional(),
  keyFile: z.string().optional(),
  minTlsVersion: tlsVersion.default('TLSv1.2'),
  allowInsecureAuth: z.boolean().default(false),
  trustedNetworks: z.array(cidr).default([]),
  trustedAccount: name.optional(),
  maxMessageSize: size.default(25 * 1024 * 1024),
  maxClients: z.number().int().positive().default(100),
  maxRecipients: z.number().int().positive().default(1000),
  proxyProtocol: z.boolean().default(false),
  /** With proxyProtocol: the proxies allowed to send a PROXY header (others count as direct clients); required on a non-loopback listener. */
  proxyFrom: z.array(z.string().refine((s) => isIP(s) !== 0, 'expected an IP address')).optional(),
  // Inbound hardening (src/listener). Failed AUTHs are counted per client IP across listeners.
  maxConnectionsPerIp: z.number().int().positive().default(20),
  socketTimeout: duration('socketTimeout').default(300e3),
  closeTimeout: duration('closeTimeout').default(10e3),
  /** Pause before the 220 greeting (an "early talker" check, as Postfix's postscreen does); 0 = greet at once. */
  greetingDelay: duration('greetingDelay').default(0),
  /** A client must AUTH or send MAIL FROM within this time of connecting (421 otherwise). */
  preAuthTimeout: duration('preAuthTimeout').default(30e3),
  /** Slots of maxClients kept for trusted networks and authenticated sessions (default: a tenth). */
  reservedClients: z.number().int().min(0).optional(),
  authFailLimit: z.number().int().positive().default(5),
  authFailWindow: duration('authFailWindow').default(600e3),
  authLockout: duration('authLockout').default(900e3),
  /** A From header with an address the sender may not use: refuse (553 5.7.1) or rewrite it to the envelope sender. */
  fromHeader: z.enum(['reject', 'rewrite']).default('reject'),
  /** Allowed senders for trusted-network mail; default: the trusted account's email. */
  trustedSenders: z.array(senderPattern).optional(),
});

const oauthUser = z.strictObject({
  type: z.literal('user'),
  clientId: clientId,
  /** Google's downloaded client JSON ({"installed": {...}} or {"web": {...}}); src/config/load.ts reads it into clientId, clientSecret, tokenUrl, authUrl. */
  clientFile: z.string().optional(),
  clientSecret: z.string().min(1).optional(),
  clientSecretFile: z.string().optional(),
  /** Defaults per provider (Google: oauth2.googleapis.com; Microsoft: authorityHost/tenant/oauth2/v2.0/token). */
  tokenUrl: z.url().optional(),
  authUrl: z.url().optional(),
  /** Microsoft only: a tenant GUID or domain, `organizations`, or `consumers` (Outlook.com). */
  tenant: z.string().min(1).optional(),
  /** Microsoft only: the identity platform host (national clouds, test fakes). */
  authorityHost: z.url().optional(),
  caFile: z.string().optional(),
});

const oauthServiceAccount = z.strictObject({
  type: z.literal('service-account'),
  keyFile: z.string(),
  subject: email.optional(),
  tokenUrl: z.url().default('https://oauth2.googleapis.com/token'),
  caFile: z.string().optional(),
});

/** Microsoft app-only: client credentials with a secret or a certificate (signed client assertion). */
const oauthApp = z.strictObject({
  type: z.literal('app'),
  clientId: clientId,
  tenant: z.string().min(1),
  authorityHost: z.url().optional(),
  clientSecret: z.string().min(1).optional(),
  clientSecretFile: z.string().optional(),
  certificateFile: z.string().optional(),
  privateKeyFile: z.string().optional(),
  tokenUrl: z.url().optional(),
  caFile: z.string().optional(),
});

export const accountSchema = z
  .strictObject({
    name: name,
    /** Whose mail service: google (default) or microsoft (Microsoft 365 / Outlook.com). */
    provider: z.enum(PROVIDER_IDS).default(DEFAULT_PROVIDER),
    email: email,
    oauth: z.discriminatedUnion('type', [oauthUser, oauthServiceAccount, oauthApp]),
    /** smtp (both providers); Google: gmail-api (scope gmail.send only), auto (API, SMTP when the API cannot express the envelope); Microsoft: graph (Graph sendMail, scope Mail.Send). */
    transport: z.enum(['smtp', 'gmail-api', 'auto', 'graph']).default('smtp'),
    /** Microsoft: which cloud's sign-in and Graph hosts (global, usgov = GCC High, dod, china); oauth.authorityHost and upstream.apiUrl override it. */
    cloud: z.enum(MS_CLOUD_NAMES).optional(),
    /** Microsoft: send from this mailbox (transport graph: a shared mailbox, or any mailbox an app-only access policy allows; app-only SMTP: the XOAUTH2 user); default: email. */
    mailbox: email.optional(),
    upstream: z
      .strictObject({
        /** Defaults per provider: smtp.gmail.com:465; smtp.office365.com:587 (smtp-mail.outlook.com for tenant consumers). */
        host: z.string().optional(),
        port: z.number().int().min(1).max(65535).optional(),
        // Derived from the port when unset: 465 implicit TLS, anything else STARTTLS (required).
        tls: z.enum(['implicit', 'starttls']).optional(),
        caFile: z.string().optional(),
        /** API base URL: Gmail API (transport gmail-api / auto) or Microsoft Graph (transport graph); defaults per provider, overridable (test fakes, national clouds). */
        apiUrl: z.url().optional(),
        /** Microsoft Graph: messages over the 4 MB sendMail limit (up to 150 MB) go as a draft plus upload sessions; needs Mail.ReadWrite. */
        largeMessages: z.boolean().default(false),
        maxConnections: z.number().int().positive().default(3),
        maxMessages: z.number().int().positive().default(100),
      })
      .prefault({}),
    limits: z
      .strictObject({
        /** Defaults per provider: Google 2000 messages/day; Microsoft none (Exchange counts recipients: recipientsPerDay). */
        messagesPerDay: z.number().int().positive().optional(),
        /** Recipients per rolling 24 h (Exchange Online counts these: default 10,000 for microsoft). */
        recipientsPerDay: z.number().int().positive().optional(),
        /** Microsoft default 30 (Exchange Online's per-minute limit); Google none. */
        messagesPerMinute: z.number().int().positive().optional(),
        recipientsPerMessage: z.number().int().positive().default(100),
      })
      .prefault({}),
  })
  .transform((a) => withProviderDefaults(a));

export const userSchema = z.strictObject({
  username: z.string().min(1),
  passwordHash: passwordHash,
  account: name,
  allowedSenders: z.array(senderPattern).optional(),
});

/** `alerts:` (src/alerts): where to tell a person, and when. */
export const alertsSchema = z
  .strictObject({
    webhook: z
      .url()
      .refine((u) => u.startsWith('https://'), 'expected an https:// URL (alerts are sent over verified TLS)')
      .optional(),
    /** Extra trust anchors for the webhook (private CA). */
    caFile: z.string().optional(),
    email: email.optional(),
    /** Account the alert mail is sent through; default: the first account that works. */
    emailAccount: name.optional(),
    queueAgeWarn: duration('queueAgeWarn').default(3600e3),
    upstreamFailingFor: duration('upstreamFailingFor').default(1800e3),
    /** Free space on the stateDir file system below which to alert: a size (500MB) or a percentage (5%). */
    diskFreeWarn: z
      .union([z.string(), z.number()])
      .transform((v, ctx) => {
        const pct = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v) : null;
        if (pct && Number(pct[1]) <= 100) return { percent: Number(pct[1]) };
        const n = parseSize(v);
        if (n === null) {
          ctx.addIssue({ code: 'custom', message: 'expected a size like 500MB or a percentage like 5%' });
          return z.NEVER;
        }
        return { bytes: n };
      })
      .default({ percent: 5 }),
    /** Warn this long before a grant's known expiry (refresh_token_expires_in, idle limit). */
    grantExpiryWarn: duration('grantExpiryWarn').default(2 * 86400e3),
    checkInterval: duration('checkInterval').default(60e3),
  })
  .prefault({});

export const configSchema = z
  .strictObject({
    stateDir: z.string().min(1),
    listeners: z.array(listenerSchema).min(1),
    accounts: z.array(accountSchema).min(1),
    users: z.array(userSchema).default([]),
    queue: z
      .strictObject({
        retry: z.array(duration('retry')).min(1).default([60e3, 300e3, 900e3, 3600e3, 14400e3]),
        maxAge: duration('maxAge').default(5 * 86400e3),
        bounceTo: z.union([z.literal('sender'), email]).default('sender'),
        quotaHold: duration('quotaHold').default(6 * 3600e3),
        delayWarning: z.union([duration('delayWarning'), z.literal(false)]).default(false),
        concurrency: z.number().int().positive().default(8),
      })
      .prefault({}),
    tokens: z
      .strictObject({
        refreshCron: z
          .string()
          .refine(validCron, 'expected a cron expression like "*/5 * * * *"')
          .default('*/5 * * * *'),
        refreshAhead: duration('refreshAhead').default(600e3),
        encryptionKeyFile: z.string().nullable().default(null),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
        // Unset: text under systemd, JSON elsewhere (src/log/logger.ts, defaultLogFormat).
        format: z.enum(['json', 'text']).optional(),
      })
      .prefault({}),
    http: z
      .strictObject({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(9465),
        /** The web console at / (src/http/console). */
        console: z.boolean().default(false),
        adminPasswordHash: passwordHash.optional(),
        certFile: z.string().optional(),
        keyFile: z.string().optional(),
        allowInsecureConsole: z.boolean().default(false),
      })
      .prefault({}),
    alerts: alertsSchema,
  })
  .superRefine((cfg, ctx) => {
    checkHttp(cfg.http, ctx);
    const accounts = new Set<string>();
    cfg.accounts.forEach((a, i) => {
      if (accounts.has(a.name))
        ctx.addIssue({ code: 'custom', path: ['accounts', i, 'name'], message: `duplicate account name "${a.name}"` });
      accounts.add(a.name);
      if ((a.oauth.type === 'user' || a.oauth.type === 'app') && a.oauth.clientSecret && a.oauth.clientSecretFile)
        ctx.addIssue({
          code: 'custom',
          path: ['accounts', i, 'oauth', 'clientSecretFile'],
          message: 'set clientSecret or clientSecretFile, not both (keep clientSecretFile and remove clientSecret)',
        });
      if (a.upstream.largeMessages && a.transport !== 'graph')
        ctx.addIssue({
          code: 'custom',
          path: ['accounts', i, 'upstream', 'largeMessages'],
          message: 'largeMessages is for transport graph (Microsoft Graph upload sessions); remove it',
        });
      for (const issue of providerIssues(a))
        ctx.addIssue({ code: 'custom', path: ['accounts', i, ...issue.path], message: issue.message });
      if (a.upstream.port !== 465 && a.upstream.port !== 587 && a.upstream.host === 'smtp.gmail.com')
        ctx.addIssue({
          code: 'custom',
          path: ['accounts', i, 'upstream', 'port'],
          message: 'smtp.gmail.com takes 465 (implicit TLS) or 587 (STARTTLS)',
        });
    });
    if (cfg.alerts.emailAccount && !accounts.has(cfg.alerts.emailAccount))
      ctx.addIssue({
        code: 'custom',
        path: ['alerts', 'emailAccount'],
        message: `no account named "${cfg.alerts.emailAccount}"`,
      });
    const users = new Set<string>();
    cfg.users.forEach((u, i) => {
      if (users.has(u.username))
        ctx.addIssue({ code: 'custom', path: ['users', i, 'username'], message: `duplicate user "${u.username}"` });
      users.add(u.username);
      if (!accounts.has(u.account))
        ctx.addIssue({ code: 'custom', path: ['users', i, 'account'], message: `no account named "${u.account}"` });
    });
    const listeners = new Set<string>();
    cfg.listeners.forEach((l, i) => {
      if (listeners.has(l.name))
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', i, 'name'],
          message: `duplicate listener name "${l.name}"`,
        });
      listeners.add(l.name);
      if ((l.certFile === undefined) !== (l.keyFile === undefined))
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', i, l.certFile ? 'keyFile' : 'certFile'],
          message: 'certFile and keyFile go together',
        });
      if (l.trustedNetworks.length && !l.trustedAccount)
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', i, 'trustedAccount'],
          message: 'trustedNetworks needs a trustedAccount to relay through',
        });
      if (l.trustedAccount && !accounts.has(l.trustedAccount))
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', i, 'trustedAccount'],
          message: `no account named "${l.trustedAccount}"`,
        });
      // Any client reaching the port could claim any address in its PROXY header: a trusted
      // one, or a new one per connection to dodge the failed-login lockout.
      if (l.proxyProtocol && !l.proxyFrom?.length && !isLoopbackHost(l.host))
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', i, 'proxyFrom'],
          message: `listener "${l.name}" on ${l.host} takes PROXY headers from any client, which could then claim any address (trusted networks, lockouts, logs): list your proxy's addresses in proxyFrom, e.g. proxyFrom: [10.0.0.5]`,
        });
      if (l.reservedClients !== undefined && l.reservedClients >= l.maxClients)
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', i, 'reservedClients'],
          message: `must be below maxClients (${l.maxClients}): the rest of the slots serve untrusted clients`,
        });
      const openRelay = openRelayReason(l);
      if (openRelay) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'trustedNetworks'], message: openRelay });
    });
  });

/** The console must not hand an admin password or session cookie to the network in clear text. */
function checkHttp(
  h: { host: string; console: boolean; certFile?: string; keyFile?: string; allowInsecureConsole: boolean },
  ctx: z.RefinementCtx,
): void {
  if ((h.certFile === undefined) !== (h.keyFile === undefined))
    ctx.addIssue({
      code: 'custom',
      path: ['http', h.certFile ? 'keyFile' : 'certFile'],
      message: 'certFile and keyFile go together',
    });
  if (h.console && !isLoopbackHost(h.host) && !h.certFile && !h.allowInsecureConsole)
    ctx.addIssue({
      code: 'custom',
      path: ['http', 'console'],
      message: `the console on ${h.host} (not loopback) would be served without TLS: set http.certFile and http.keyFile, or http.allowInsecureConsole: true (passwords and cookies then cross the network in clear text), or bind http.host: 127.0.0.1`,
    });
}

export type Config = z.output<typeof configSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
export type AccountConfig = z.output<typeof accountSchema>;
export type UserConfig = z.output<typeof userSchema>;
export type AlertsConfig = z.output<typeof alertsSchema>;
