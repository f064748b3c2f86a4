// transport in the config and the scopes each transport asks for: authorize's consent URL,
// the service-account assertion, and check-config refusing it for Microsoft accounts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { TokenService } from '../../src/oauth/service.js';
import { TokenStore } from '../../src/oauth/store.js';
import { oauthWorld, collect, type OAuthWorld, consent, authorizeToStore } from '../helpers/oauth.js';
import { CLI } from '../helpers/bridge.js';

const FULL = 'https://mail.google.com/';
const SEND = 'https://www.googleapis.com/auth/gmail.send';

for (const [transport, scopes] of [
  ['gmail-api', [SEND]],
  ['auto', [FULL, SEND]],
  ['smtp', [FULL]],
] as const) {
  test(`authorize with transport ${transport} asks for ${scopes.join(' + ')} (+ openid email) and stores a grant with exactly that`, async () => {
    const w = await oauthWorld();
    try {
      const base = w.config().accounts[0];
      const config = w.config({
        accounts: [
          {
            name: 'office',
            email: w.email,
            transport,
            oauth: {
              type: 'user',
              clientId: w.clientId,
              clientSecret: w.clientSecret,
              tokenUrl: w.fake.url,
              authUrl: w.fake.authUrl,
              caFile: w.caFile,
            },
          },
        ],
      });
      assert.equal(config.accounts[0].transport, transport);
      assert.equal(base.transport, 'smtp', 'default');
      const input = new PassThrough();
      let authUrl = '';
      await authorizeToStore({
        config,
        account: 'office',
        manual: true,
        input,
        output: collect().stream,
        openUrl: (url) => {
          authUrl = url;
          void consent(w, url).then((loc) => input.write(`${loc}\n`));
        },
      });
      // openid email: the id_token names who signed in (the identity check before storing).
      assert.deepEqual(new URL(authUrl).searchParams.get('scope')?.split(' '), [...scopes, 'openid', 'email']);
      const rec = (await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office;
      const svc = new TokenService({ config, log: w.log });
      await svc.init();
      const token = await svc.getAccessToken('office', { force: true });
      assert.ok(rec.refreshToken);
      assert.deepEqual(w.fake.tokenInfo(token)?.scope.split(' '), [...scopes, 'openid', 'email']);
      svc.stop();
    } finally {
      await w.close();
    }
  });
}

test('authorize refuses a grant whose send scope was unticked on the consent screen and stores nothing', async () => {
  const w = await oauthWorld();
  try {
    w.fake.uncheckedScopes.add(SEND);
    const config = w.config({
      accounts: [
        {
          name: 'office',
          email: w.email,
          transport: 'auto',
          oauth: {
            type: 'user',
            clientId: w.clientId,
            clientSecret: w.clientSecret,
            tokenUrl: w.fake.url,
            authUrl: w.fake.authUrl,
            caFile: w.caFile,
          },
        },
      ],
    });
    const input = new PassThrough();
    await assert.rejects(
      authorizeToStore({
        config,
        account: 'office',
        manual: true,
        input,
        output: collect().stream,
        openUrl: (url) => void consent(w, url).then((loc) => input.write(`${loc}\n`)),
      }),
      /the grant lacks https:\/\/www\.googleapis\.com\/auth\/gmail\.send .*nothing was stored/,
    );
    assert.equal((await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office, undefined);
  } finally {
    await w.close();
  }
});

test('service account with transport gmail-api: the signed assertion asks for gmail.send only', async () => {
  const w = await oauthWorld();
  try {
    const sa = 'bridge@fake-project.iam.gserviceaccount.com';
    const keyFile = join(w.dir, 'sa.json');
    writeFileSync(keyFile, w.fake.createServiceAccount(sa).keyJson, { mode: 0o600 });
    w.fake.allowSubject(sa, w.email);
    const config = w.config({
      accounts: [
        {
          name: 'ws',
          email: w.email,
          transport: 'gmail-api',
          oauth: { type: 'service-account', keyFile, subject: w.email, tokenUrl: w.fake.url, caFile: w.caFile },
        },
      ],
    });
    const svc = new TokenService({ config, log: w.log });
    await svc.init();
    const token = await svc.getAccessToken('ws');
    assert.equal(w.fake.requests.at(-1)?.scope, SEND);
    assert.equal(w.fake.tokenInfo(token)?.scope, SEND);
    svc.stop();
  } finally {
    await w.close();
  }
});

test('check-config: transport on a Microsoft account is refused with its key path and the fix; on Google it is accepted', async () => {
  const w = await oauthWorld();
  try {
    const file = join(w.dir, 'c.yaml');
    const yaml = (provider: string, extra: string) =>
      [
        `stateDir: ${w.stateDir}`,
        'listeners: [{ name: local, host: 127.0.0.1, port: 2525 }]',
        'accounts:',
        '  - name: office',
        `    provider: ${provider}`,
        '    email: printer@contoso.com',
        '    transport: gmail-api',
        `    oauth: { type: user, clientId: x, clientSecret: y${extra} }`,
      ].join('\n');
    writeFileSync(file, yaml('microsoft', ', tenant: contoso.com'));
    const bad = spawnSync(process.execPath, [...CLI, 'check-config', '-c', file], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(bad.status, 2);
    assert.match(
      bad.stderr,
      /accounts\[0\]\.transport: transport gmail-api is for Google accounts only; Microsoft accounts send over SMTP/,
    );
    writeFileSync(file, yaml('google', ''));
    const ok = spawnSync(process.execPath, [...CLI, 'check-config', '-c', file], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(ok.status, 0, ok.stderr);
  } finally {
    await w.close();
  }
});
