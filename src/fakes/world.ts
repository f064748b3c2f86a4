// A complete fake Google for one account: CA, token endpoint and Gmail, plus a bridge config
// pointing at them. Shared by `demo`, the tests and the benchmark so they set up alike.
import { mkdtemp, writeFile, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { createTestPki, writePki, type TestPki } from './ca.js';
import { FakeTokenEndpoint } from './tokenEndpoint.js';
import { FakeGmail } from './gmail.js';
import { FakeGmailApi } from './gmailApi.js';
import { scopesFor } from '../providers/index.js';
import { hashPassword } from '../listener/passwords.js';
import { FakeMicrosoftIdentity } from './microsoftIdentity.js';
import { FakeGraph } from './graph.js';

/** The cheapest cost the hash parser accepts (1 MiB, ~2 ms instead of 32 MiB, ~100 ms): the
 * fake world's and the tests' users, so a suite full of logins does not spend its time in the
 * KDF. Tests of the KDF itself (listener-kdf, listener-passwords) keep the defaults. */
export const FAKE_SCRYPT_COST = { ln: 10, r: 8, p: 1 } as const;

export interface FakeWorld {
  dir: string;
  pki: TestPki;
  caFile: string;
  tokens: FakeTokenEndpoint;
  gmail: FakeGmail;
  /** Started for transport gmail-api and auto. */
  gmailApi?: FakeGmailApi;
  transport: 'smtp' | 'gmail-api' | 'auto';
  account: { name: string; email: string; clientId: string; clientSecret: string; refreshToken: string };
  user: { username: string; password: string; passwordHash: string };
  close(): Promise<void>;
}

export interface WorldOptions {
  gmailMode?: 'implicit' | 'starttls';
  accessTokenTtlSec?: number;
  email?: string;
  /** The account's transport: gmail-api and auto also start a fake Gmail API, and the grant carries that transport's scopes. */
  transport?: 'smtp' | 'gmail-api' | 'auto';
}

export async function startFakeWorld(opts: WorldOptions = {}): Promise<FakeWorld> {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-bridge-'));
  const pki = await createTestPki();
  const { caFile } = await writePki(pki, join(dir, 'pki'));
  const tokens = await FakeTokenEndpoint.start({ pki, accessTokenTtlSec: opts.accessTokenTtlSec });
  const gmail = await FakeGmail.start({ pki, tokens, mode: opts.gmailMode ?? 'implicit' });
  const transport = opts.transport ?? 'smtp';
  const gmailApi = transport === 'smtp' ? undefined : await FakeGmailApi.start({ pki, tokens });
  const email = opts.email ?? 'scanner@example.com';
  // Random per run so a leak scan of the logs can look for the exact values.
  const account = {
    name: 'office',
    email,
    clientId: `${randomBytes(4).toString('hex')}.apps.googleusercontent.com`,
    clientSecret: `GOCSPX-${randomBytes(12).toString('base64url')}`,
    refreshToken: `1//0g${randomBytes(24).toString('base64url')}`,
  };
  tokens.registerClient(account.clientId, account.clientSecret);
  tokens.addRefreshToken(account.refreshToken, {
    clientId: account.clientId,
    email,
    scope: scopesFor({ transport }).join(' '),
  });
  const password = `pw-${randomBytes(9).toString('base64url')}`;
  const user = { username: 'printer', password, passwordHash: await hashPassword(password, FAKE_SCRYPT_COST) };
  return {
    dir,
    pki,
    caFile,
    tokens,
    gmail,
    gmailApi,
    transport,
    account,
    user,
    async close() {
      await gmailApi?.close();
      await gmail.close();
      await tokens.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A config object (as it would be written in YAML) for a bridge in front of the fake world. */
export function bridgeConfig(world: FakeWorld, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    stateDir: join(world.dir, 'state'),
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, tls: 'none' }],
    accounts: [
      {
        name: world.account.name,
        email: world.account.email,
        oauth: {
          type: 'user',
          clientId: world.account.clientId,
          clientSecret: world.account.clientSecret,
          tokenUrl: world.tokens.url,
          authUrl: world.tokens.authUrl,
          caFile: world.caFile,
        },
        upstream: {
          host: 'localhost',
          port: world.gmail.port,
          tls: world.gmail.mode,
          caFile: world.caFile,
          ...(world.gmailApi ? { apiUrl: world.gmailApi.url } : {}),
        },
        ...(world.transport !== 'smtp' ? { transport: world.transport } : {}),
      },
    ],
    users: [{ username: world.user.username, passwordHash: world.user.passwordHash, account: world.account.name }],
    queue: { retry: ['1s', '2s', '5s'] },
    log: { level: 'debug', format: 'json' },
    http: { port: 0 },
    ...overrides,
  };
}

/** Writes the config as YAML and returns its path. */
export async function writeBridgeConfig(
  world: FakeWorld,
  cfg: Record<string, unknown>,
  name = 'config.yaml',
): Promise<string> {
  await mkdir(world.dir, { recursive: true });
  const file = join(world.dir, name);
  await writeFile(file, stringify(cfg), { mode: 0o600 });
  return file;
}

/** A fake Microsoft tenant reached over Graph: the identity platform, Graph, one app and its mailbox. */
export interface FakeGraphTenant {
  identity: FakeMicrosoftIdentity;
  graph: FakeGraph;
  clientId: string;
  secret: string;
  mailbox: string;
  /** An account entry (as written in YAML) for transport graph, delegated or app-only. */
  account(name: string, type: 'user' | 'app', extra?: Record<string, unknown>): Record<string, unknown>;
  close(): Promise<void>;
}

/** `graphRoles`: the app's admin-consented Graph application permissions (default Mail.Send). */
export async function startFakeGraphTenant(
  world: FakeWorld,
  opts: { mailbox?: string; graphRoles?: string[] } = {},
): Promise<FakeGraphTenant> {
  const identity = await FakeMicrosoftIdentity.start({ pki: world.pki });
  const graph = await FakeGraph.start({ pki: world.pki, identity });
  const clientId = `${randomBytes(4).toString('hex')}-aaaa-4bbb-8ccc-${randomBytes(6).toString('hex')}`;
  const secret = `Gr8Q~${randomBytes(18).toString('base64url')}`;
  const mailbox = opts.mailbox ?? 'printer@contoso.com';
  identity.registerApp(clientId, secret, { graphRoles: opts.graphRoles });
  identity.consentEmail = mailbox;
  graph.addMailbox(mailbox);
  return {
    identity,
    graph,
    clientId,
    secret,
    mailbox,
    account: (name, type, extra = {}) => ({
      name,
      provider: 'microsoft',
      email: mailbox,
      transport: 'graph',
      oauth: identity.accountOAuth(type, clientId, { clientSecret: secret }, world.caFile),
      upstream: { apiUrl: graph.url, caFile: world.caFile },
      ...extra,
    }),
    async close() {
      await graph.close();
      await identity.close();
    },
  };
}
