// Microsoft accounts in the token service, against the fake Microsoft identity platform
// over real HTTPS: delegated refresh with rotating refresh tokens (each usable once in the
// fake), persisted before use and across a restart; app-only client credentials; AADSTS
// codes kept in the messages, a dead grant or an expired secret -> needs-reauth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestPki, writePki } from '../../src/fakes/ca.js';
import { FakeMicrosoftIdentity } from '../../src/fakes/microsoftIdentity.js';
import { configSchema } from '../../src/config/schema.js';
import { TokenService, NeedsReauthError } from '../../src/oauth/service.js';
import { createLogger } from '../../src/log/logger.js';
import { collect } from '../helpers/oauth.js';

async function msWorld() {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-ms-'));
  const pki = await createTestPki();
  const { caFile } = await writePki(pki, join(dir, 'pki'));
  const ms = await FakeMicrosoftIdentity.start({ pki });
  const clientId = '00000000-1111-2222-3333-444444444444';
  const secret = `Qx8Q~${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  ms.registerApp(clientId, secret);
  const sink = collect();
  const log = createLogger({ level: 'debug', format: 'json', stream: sink.stream });
  const config = (type: 'user' | 'app') =>
    configSchema.parse({
      stateDir: join(dir, 'state'),
      listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
      accounts: [
        {
          name: 'm365',
          provider: 'microsoft',
          email: 'printer@contoso.com',
          oauth: ms.accountOAuth(type, clientId, { clientSecret: secret }, caFile),
        },
      ],
    });
  return {
    dir,
    ms,
    clientId,
    secret,
    log,
    logs: sink.text,
    config,
    close: async () => (await ms.close(), await rm(dir, { recursive: true, force: true })),
  };
}

test('microsoft config defaults: v2.0 endpoints of the tenant, smtp.office365.com:587, 30 messages/min and 10,000 recipients/day', () => {
  const c = configSchema.parse({
    stateDir: '/tmp/x',
    listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
    accounts: [
      {
        name: 'm365',
        provider: 'microsoft',
        email: 'a@contoso.com',
        oauth: { type: 'user', tenant: 'contoso.com', clientId: 'c', clientSecret: 's' },
      },
      {
        name: 'outlook',
        provider: 'microsoft',
        email: 'a@outlook.com',
        oauth: { type: 'user', tenant: 'consumers', clientId: 'c', clientSecret: 's' },
      },
      { name: 'gmail', email: 'a@example.com', oauth: { type: 'user', clientId: 'c', clientSecret: 's' } },
    ],
  });
  const [m, o, g] = c.accounts;
  assert.equal(m.oauth.tokenUrl, 'https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token');
  assert.deepEqual(
    [m.upstream.host, m.upstream.port, m.limits.messagesPerMinute, m.limits.recipientsPerDay, m.limits.messagesPerDay],
    ['smtp.office365.com', 587, 30, 10000, undefined],
  );
  assert.equal(o.upstream.host, 'smtp-mail.outlook.com');
  assert.deepEqual(
    [
      g.provider,
      g.upstream.host,
      g.upstream.port,
      g.oauth.tokenUrl,
      g.limits.messagesPerDay,
      g.limits.messagesPerMinute,
      g.limits.recipientsPerDay,
    ],
    ['google', 'smtp.gmail.com', 465, 'https://oauth2.googleapis.com/token', 2000, undefined, undefined],
  );
  const bad = configSchema.safeParse({
    stateDir: '/tmp/x',
    listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
    accounts: [
      {
        name: 'm365',
        provider: 'microsoft',
        email: 'a@contoso.com',
        oauth: { type: 'app', tenant: 'organizations', clientId: 'c' },
      },
    ],
  });
  assert.equal(bad.success, false);
  const msgs = bad.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
  assert.match(msgs, /accounts\.0\.oauth: set clientSecret\/clientSecretFile, or certificateFile and privateKeyFile/);
  assert.match(msgs, /accounts\.0\.oauth\.tenant: app-only sign-in needs your own tenant/);
});

test('delegated: every refresh rotates the refresh token; it is saved before use and a restart continues with it', async () => {
  const w = await msWorld();
  try {
    const rt0 = w.ms.issueRefreshToken(w.clientId, 'printer@contoso.com');
    const svc = new TokenService({ config: w.config('user'), log: w.log });
    await svc.init();
    await svc.importRefreshToken('m365', rt0);
    const t1 = await svc.getAccessToken('m365');
    assert.equal(w.ms.tokenInfo(t1)?.email, 'printer@contoso.com');
    const stored1 = JSON.parse(await readFile(join(w.dir, 'state', 'tokens.json'), 'utf8')).accounts.m365
      .refreshToken as string;
    assert.notEqual(stored1, rt0, 'the rotated refresh token is on disk');
    await svc.refresh('m365');
    const stored2 = JSON.parse(await readFile(join(w.dir, 'state', 'tokens.json'), 'utf8')).accounts.m365
      .refreshToken as string;
    assert.notEqual(stored2, stored1);
    svc.stop();
    // A new process (restart) reads the latest one; the fake has already forgotten the older ones.
    const again = new TokenService({ config: w.config('user'), log: w.log });
    await again.init();
    await again.refresh('m365');
    assert.equal(
      w.ms.requests.filter((r) => r.grantType === 'refresh_token' && !r.ok).length,
      0,
      'never sent a used refresh token',
    );
    assert.ok(
      !w.logs().includes(stored2) && !w.logs().includes(rt0) && !w.logs().includes(w.secret),
      'no refresh token or secret in the logs',
    );
    again.stop();
  } finally {
    await w.close();
  }
});

test('delegated: AADSTS70008 (expired grant) -> needs-reauth, the code in the message', async () => {
  const w = await msWorld();
  try {
    const svc = new TokenService({ config: w.config('user'), log: w.log });
    await svc.init();
    await svc.importRefreshToken('m365', 'M.C5-not-a-grant-the-fake-knows');
    await assert.rejects(
      svc.getAccessToken('m365'),
      (e: Error) => e instanceof NeedsReauthError && /AADSTS70008/.test(e.message),
    );
    assert.equal(svc.state('m365'), 'needs-reauth');
    assert.match(svc.status()[0].lastError ?? '', /refresh token expired or was revoked \(AADSTS70008\)/);
  } finally {
    await w.close();
  }
});

test('app-only: client credentials with a secret; an expired secret -> needs-reauth saying so, with AADSTS7000222', async () => {
  const w = await msWorld();
  try {
    const svc = new TokenService({ config: w.config('app'), log: w.log });
    await svc.init();
    const t = await svc.getAccessToken('m365');
    w.ms.allowMailbox(w.clientId, 'printer@contoso.com');
    assert.ok(w.ms.mayUse(t, 'printer@contoso.com'));
    assert.equal(w.ms.requests.at(-1)?.grantType, 'client_credentials');
    w.ms.expireSecret(w.clientId);
    await assert.rejects(svc.refresh('m365'), NeedsReauthError);
    assert.equal(svc.state('m365'), 'needs-reauth');
    assert.match(svc.status()[0].lastError ?? '', /client secret has expired.*\(AADSTS7000222\)/);
    assert.ok(!w.logs().includes(w.secret), 'the client secret never reaches the logs');
  } finally {
    await w.close();
  }
});

test('app-only: a wrong client secret -> needs-reauth; a reload with the right secret gets a fresh try at once', async () => {
  const w = await msWorld();
  try {
    const wrong = w.config('app');
    const o = wrong.accounts[0]!.oauth as { clientSecret?: string };
    o.clientSecret = 'Qx8Q~not-the-secret';
    const svc = new TokenService({ config: wrong, log: w.log });
    await svc.init();
    await assert.rejects(svc.getAccessToken('m365'), NeedsReauthError);
    assert.match(svc.status()[0].lastError ?? '', /AADSTS7000215/);
    // The fix is in the config (a key-based grant has nothing to re-authorize): reload applies it.
    svc.reload(w.config('app'));
    assert.equal(svc.state('m365'), 'ok');
    w.ms.allowMailbox(w.clientId, 'printer@contoso.com');
    assert.ok(w.ms.mayUse(await svc.getAccessToken('m365'), 'printer@contoso.com'));
  } finally {
    await w.close();
  }
});
