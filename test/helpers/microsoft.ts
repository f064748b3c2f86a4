// A fake Microsoft identity platform with one registered app, over real HTTPS signed by a
// test CA: what the Microsoft unit tests share (the app's credentials, the account's oauth
// block, the browser's and a raw client's requests, the stored grant).
import https from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAppCertificate, createTestPki, writePki } from '../../src/fakes/ca.js';
import { FakeMicrosoftIdentity } from '../../src/fakes/microsoftIdentity.js';
import { PassThrough } from 'node:stream';
import { type Config, configSchema } from '../../src/config/schema.js';
import { TokenStore } from '../../src/oauth/store.js';
import { authorizeToStore, collect } from './oauth.js';

/** The mailbox the accounts send as, and the user who signs in unless a test says otherwise. */
export const MS_MAILBOX = 'printer@contoso.com';

/** A config's stateDir and listener, for config checks that start no daemon. */
export const MS_CONFIG_BASE = { stateDir: '/tmp/x', listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }] };

/** A delegated Microsoft account m365 for MS_MAILBOX in tenant contoso.com, `extra` on top (config checks). */
export const msAccount = (extra: Record<string, unknown> = {}) => ({
  name: 'm365',
  provider: 'microsoft',
  email: MS_MAILBOX,
  oauth: { type: 'user', tenant: 'contoso.com', clientId: 'abc' },
  ...extra,
});

/** What the config schema refuses in `cfg`, one `path: message` line each (none: it parses). */
export function configIssues(cfg: unknown): string[] {
  const r = configSchema.safeParse(cfg);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

export interface MicrosoftAppOptions {
  /** Names the temp directory (which test made it). */
  name: string;
  clientId: string;
  /** A public client (no secret). */
  publicClient?: boolean;
  /** App-only credentials as a certificate (uploaded to the app) instead of a client secret. */
  certificate?: boolean;
  /** What the fake's own paths name: a domain (default) or its GUID. */
  fakeTenant?: string;
}

export async function fakeMicrosoftApp(o: MicrosoftAppOptions) {
  const dir = await mkdtemp(join(tmpdir(), `xoauth2-${o.name}-`));
  const pki = await createTestPki();
  const { caFile } = await writePki(pki, join(dir, 'pki'));
  const ca = await readFile(caFile);
  const ms = await FakeMicrosoftIdentity.start({ pki, ...(o.fakeTenant ? { tenant: o.fakeTenant } : {}) });
  const secret = o.publicClient || o.certificate ? undefined : `Qx8Q~${Math.random().toString(36).slice(2)}`;
  let credentials: Record<string, string> = secret ? { clientSecret: secret } : {};
  if (o.certificate) {
    const app = await createAppCertificate();
    ms.registerApp(o.clientId, null);
    ms.uploadCertificate(o.clientId, app.cert);
    credentials = { certificateFile: join(dir, 'app.crt'), privateKeyFile: join(dir, 'app.key') };
    await writeFile(credentials.certificateFile, app.cert);
    await writeFile(credentials.privateKeyFile, app.key, { mode: 0o600 });
  } else ms.registerApp(o.clientId, secret ?? null, { publicClient: o.publicClient });
  ms.consentEmail = MS_MAILBOX;
  const stateDir = join(dir, 'state');
  return {
    dir,
    ca,
    ms,
    clientId: o.clientId,
    secret,
    stateDir,
    /** The account's oauth block for this app (`extra` overrides, e.g. another tenant). */
    oauth: (type: 'user' | 'app', extra: Record<string, unknown> = {}) => ({
      ...ms.accountOAuth(type, o.clientId, credentials, caFile),
      ...extra,
    }),
    /**
     * The config of one account m365 for MS_MAILBOX with this app's `type` oauth block:
     * `account` adds account keys (transport, ...), `oauthExtra` overrides oauth keys (tenant, ...).
     */
    config: (type: 'user' | 'app', account: Record<string, unknown> = {}, oauthExtra: Record<string, unknown> = {}) =>
      configSchema.parse({
        stateDir,
        listeners: MS_CONFIG_BASE.listeners,
        accounts: [
          {
            name: 'm365',
            provider: 'microsoft',
            email: MS_MAILBOX,
            oauth: { ...ms.accountOAuth(type, o.clientId, credentials, caFile), ...oauthExtra },
            ...account,
          },
        ],
      }),
    /** Plays the browser at the sign-in page: GET the URL, return the redirect Location. */
    signIn: (url: string) =>
      new Promise<string>((resolve, reject) => {
        https
          .get(url, { ca }, (res) => {
            res.resume();
            if (res.statusCode !== 302 || !res.headers.location)
              reject(new Error(`sign-in page answered ${res.statusCode}`));
            else resolve(res.headers.location);
          })
          .on('error', reject);
      }),
    /** POSTs a form to the fake (the user at the device login page, or a raw token request). */
    post: (url: string, form: Record<string, string>) =>
      new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
        const req = https.request(
          url,
          { method: 'POST', ca, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
              }),
            );
          },
        );
        req.on('error', reject);
        req.end(new URLSearchParams(form).toString());
      }),
    /** The account m365's record in the token store. */
    stored: async () => (await new TokenStore({ stateDir, key: null }).load()).accounts.m365,
    close: async () => {
      await ms.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `authorize --manual` for account m365 into the store: the user signs in at the fake and
 * pastes the redirect (a refused sign-in ends the paste). Returns the sign-in URL.
 */
export async function authorizeManually(
  app: { signIn(url: string): Promise<string> },
  config: Config,
): Promise<string> {
  const input = new PassThrough();
  let authUrl = '';
  await authorizeToStore({
    config,
    account: 'm365',
    manual: true,
    input,
    output: collect().stream,
    openUrl: (url) => {
      authUrl = url;
      void app.signIn(url).then(
        (loc) => input.write(`${loc}\n`),
        () => input.end(),
      );
    },
  });
  return authUrl;
}
