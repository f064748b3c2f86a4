// Shared setup for the OAuth tests: a test CA, the fake token endpoint over HTTPS, one
// registered client with a refresh token, a config pointing at them and a log capture.
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { createTestPki, writePki, type TestPki } from '../../src/fakes/ca.js';
import { FakeTokenEndpoint } from '../../src/fakes/tokenEndpoint.js';
import { configSchema, type Config } from '../../src/config/schema.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { authorize, type AuthorizeOptions } from '../../src/oauth/authorize.js';
import { TokenStore, resolveStoreKey } from '../../src/oauth/store.js';

let sharedPki: Promise<TestPki> | undefined;

export interface OAuthWorld {
  dir: string;
  stateDir: string;
  caFile: string;
  fake: FakeTokenEndpoint;
  email: string;
  clientId: string;
  clientSecret: string;
  refreshToken: string;
  /** Everything logged so far (debug level, JSON lines). */
  logText(): string;
  log: Logger;
  config(overrides?: {
    tokens?: Record<string, unknown>;
    oauth?: Record<string, unknown>;
    accounts?: unknown[];
  }): Config;
  close(): Promise<void>;
}

export async function oauthWorld(opts: { accessTokenTtlSec?: number } = {}): Promise<OAuthWorld> {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-oauth-'));
  sharedPki ??= createTestPki();
  const pki = await sharedPki;
  const { caFile } = await writePki(pki, join(dir, 'pki'));
  const fake = await FakeTokenEndpoint.start({ pki, accessTokenTtlSec: opts.accessTokenTtlSec ?? 3600 });
  const email = 'scanner@example.com';
  // Secrets without the well-known prefixes (1//, GOCSPX-), so the log scan proves our own
  // hygiene rather than the redaction patterns.
  const clientId = `${randomBytes(4).toString('hex')}.apps.googleusercontent.com`;
  const clientSecret = `cs${randomBytes(15).toString('hex')}`;
  const refreshToken = `rt${randomBytes(20).toString('hex')}`;
  fake.registerClient(clientId, clientSecret);
  fake.addRefreshToken(refreshToken, { clientId, email });
  fake.consentEmail = email;
  const stateDir = join(dir, 'state');
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (c: Buffer) => chunks.push(c));
  const log = createLogger({ level: 'debug', format: 'json', stream: sink });
  return {
    dir,
    stateDir,
    caFile,
    fake,
    email,
    clientId,
    clientSecret,
    refreshToken,
    log,
    logText: () => Buffer.concat(chunks).toString('utf8'),
    config(o = {}) {
      return configSchema.parse({
        stateDir,
        listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
        accounts: o.accounts ?? [
          {
            name: 'office',
            email,
            oauth: {
              type: 'user',
              clientId,
              clientSecret,
              tokenUrl: fake.url,
              authUrl: fake.authUrl,
              caFile,
              ...(o.oauth ?? {}),
            },
          },
        ],
        tokens: o.tokens ?? {},
      });
    },
    async close() {
      await fake.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function collect(): { stream: PassThrough; text(): string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

/** Plays the browser at the consent page: GET the auth URL, return the redirect Location. */
export function consent(w: OAuthWorld, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca: readFileSync(w.caFile) }, (res) => {
        res.resume();
        if (res.statusCode !== 302 || !res.headers.location)
          reject(new Error(`consent page answered ${res.statusCode}`));
        else resolve(res.headers.location);
      })
      .on('error', reject);
  });
}

/**
 * `authorize` whose grant is written to the token store directly, as the owner of the state
 * directory (the CLI under the lock, the daemon's token service) would store it.
 */
export function authorizeToStore(opts: Omit<AuthorizeOptions, 'save'>): ReturnType<typeof authorize> {
  const store = new TokenStore({
    stateDir: opts.config.stateDir,
    key: resolveStoreKey(opts.config.tokens.encryptionKeyFile, opts.env ?? process.env),
  });
  return authorize({
    ...opts,
    save: async (rec) => {
      await store.update((d) => {
        d.accounts[opts.account] = rec;
      });
    },
  });
}
