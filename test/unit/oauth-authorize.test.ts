// `authorize`: auth code + PKCE + state against the fake consent page and token endpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { TokenService } from '../../src/oauth/service.js';
import { TokenStore } from '../../src/oauth/store.js';
import { authorizeCommand } from '../../src/cli/token.js';
import { nullLogger } from '../../src/log/logger.js';
import { oauthWorld, collect, type OAuthWorld, consent, authorizeToStore } from '../helpers/oauth.js';

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function withState(location: string, state: string): string {
  const u = new URL(location);
  u.searchParams.set('state', state);
  return u.toString();
}

test('loopback flow: PKCE S256, state, offline consent; stores the refresh token', async () => {
  const w = await oauthWorld();
  try {
    const out = collect();
    let authUrl = '';
    let page: { status: number; body: string } | undefined;
    const browser: Promise<void>[] = [];
    const res = await authorizeToStore({
      config: w.config(),
      account: 'office',
      manual: false,
      input: new PassThrough(),
      output: out.stream,
      openUrl: (url) => {
        authUrl = url;
        browser.push(consent(w, url).then(async (loc) => void (page = await httpGet(loc))));
      },
    });
    await Promise.all(browser);
    assert.equal(res.email, w.email);
    const q = new URL(authUrl).searchParams;
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.equal(q.get('access_type'), 'offline');
    assert.equal(q.get('prompt'), 'consent');
    assert.equal(q.get('scope'), 'https://mail.google.com/ openid email');
    assert.ok((q.get('state') ?? '').length >= 32);
    assert.match(q.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.ok(out.text().includes(authUrl), 'URL printed');
    assert.equal(page?.status, 200);
    assert.match(page?.body ?? '', /Authorized/);
    // The fake verified the PKCE verifier against the challenge when exchanging the code.
    const exchange = w.fake.requests.find((r) => r.grantType === 'authorization_code');
    assert.equal(exchange?.ok, true);

    const rec = (await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office;
    assert.ok(rec.refreshToken && w.fake.refreshTokensFor(w.email).includes(rec.refreshToken));
    assert.equal(rec.authorizedEmail, w.email);

    // The daemon side uses what authorize stored.
    const svc = new TokenService({ config: w.config(), log: nullLogger });
    await svc.init();
    assert.equal(svc.state('office'), 'ok');
    assert.ok(w.fake.tokenInfo(await svc.getAccessToken('office', { force: true })));
  } finally {
    await w.close();
  }
});

test('--manual: the pasted redirect URL completes the flow (nothing needs to listen)', async () => {
  const w = await oauthWorld();
  try {
    const input = new PassThrough();
    const out = collect();
    const done = authorizeToStore({
      config: w.config(),
      account: 'office',
      manual: true,
      input,
      output: out.stream,
      openUrl: (url) => {
        void consent(w, url).then((loc) => {
          input.write('not a url\n');
          input.write(`  ${loc}  \n`);
        });
      },
    });
    const { email } = await done;
    assert.equal(email, w.email);
    assert.match(out.text(), /paste it here/);
    assert.match(out.text(), /does not look like the redirect URL/);
    const rec = (await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office;
    assert.ok(rec.refreshToken && w.fake.refreshTokensFor(w.email).includes(rec.refreshToken));
  } finally {
    await w.close();
  }
});

test('a redirect with the wrong state is rejected (manual and loopback) and nothing is stored', async () => {
  const w = await oauthWorld();
  try {
    const input = new PassThrough();
    await assert.rejects(
      authorizeToStore({
        config: w.config(),
        account: 'office',
        manual: true,
        input,
        output: collect().stream,
        openUrl: (url) => void consent(w, url).then((loc) => input.write(withState(loc, 'forged-state') + '\n')),
      }),
      /state mismatch/,
    );

    let page: Promise<{ status: number; body: string }> | undefined;
    await assert.rejects(
      authorizeToStore({
        config: w.config(),
        account: 'office',
        manual: false,
        input: new PassThrough(),
        output: collect().stream,
        openUrl: (url) => {
          page = consent(w, url).then((loc) => httpGet(withState(loc, 'forged-state')));
        },
      }),
      /state mismatch/,
    );
    const p = await page!;
    assert.equal(p.status, 400);
    assert.match(p.body, /Authorization failed/);
    assert.equal(w.fake.requests.filter((r) => r.grantType === 'authorization_code').length, 0, 'no code exchanged');
    assert.deepEqual((await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts, {});
  } finally {
    await w.close();
  }
});

test('denied consent, EOF on --manual input and service accounts give clear errors', async () => {
  const w = await oauthWorld();
  try {
    w.fake.denyConsent = true;
    const input = new PassThrough();
    await assert.rejects(
      authorizeToStore({
        config: w.config(),
        account: 'office',
        manual: true,
        input,
        output: collect().stream,
        openUrl: (url) => void consent(w, url).then((loc) => input.write(loc + '\n')),
      }),
      /access was denied/,
    );
    const eof = new PassThrough();
    eof.end();
    await assert.rejects(
      authorizeToStore({ config: w.config(), account: 'office', manual: true, input: eof, output: collect().stream }),
      /no redirect URL was pasted/,
    );

    const keyFile = join(w.dir, 'sa.json');
    writeFileSync(keyFile, w.fake.createServiceAccount('sa@p.iam.gserviceaccount.com').keyJson, { mode: 0o600 });
    const saCfg = w.config({
      accounts: [
        {
          name: 'ws',
          email: w.email,
          oauth: { type: 'service-account', keyFile, subject: w.email, tokenUrl: w.fake.url },
        },
      ],
    });
    const out = collect();
    assert.equal(await authorizeCommand(saCfg, 'ws', { manual: false }, new PassThrough(), out.stream), 1);
    assert.match(out.text(), /service accounts do not need authorize/);
  } finally {
    await w.close();
  }
});

test('authorizeCommand prints who was authorized, and refuses a different signed-in user without storing anything', async () => {
  const w = await oauthWorld();
  try {
    const run = async (): Promise<{ code: number; text: string }> => {
      const input = new PassThrough();
      const out = collect();
      // authorizeCommand has no openUrl hook: play the browser from the printed URL.
      out.stream.on('data', (c: Buffer) => {
        const m = /(https:\/\/127\.0\.0\.1:\d+\/auth\?\S+)/.exec(c.toString());
        if (m) void consent(w, m[1]).then((loc) => input.write(loc + '\n'));
      });
      const code = await authorizeCommand(w.config(), 'office', { manual: true }, input, out.stream);
      return { code, text: out.text() };
    };
    const ok = await run();
    assert.equal(ok.code, 0, ok.text);
    assert.match(ok.text, /Authorized account office as scanner@example\.com/);
    const stored = (await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office;
    assert.ok(stored?.refreshToken);

    w.fake.consentEmail = 'someone.else@example.com';
    const other = await run();
    assert.equal(other.code, 1, other.text);
    assert.match(
      other.text,
      /error: you signed in as someone\.else@example\.com, but account "office" sends as scanner@example\.com; nothing was stored/,
    );
    assert.doesNotMatch(other.text, /Authorized account/);
    assert.deepEqual(
      (await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office,
      stored,
      'the stored grant is unchanged',
    );
  } finally {
    await w.close();
  }
});

test('a Google sign-in whose token response names nobody (no id_token) is refused and stores nothing', async () => {
  const w = await oauthWorld();
  try {
    const input = new PassThrough();
    // The browser comes back from a consent that did not grant openid (so Google sends no
    // id_token): the bridge cannot tell whose mailbox the grant opens.
    const strip = (url: string): string => {
      const u = new URL(url);
      u.searchParams.set(
        'scope',
        (u.searchParams.get('scope') ?? '')
          .split(' ')
          .filter((s) => s !== 'openid')
          .join(' '),
      );
      return u.toString();
    };
    await assert.rejects(
      authorizeToStore({
        config: w.config(),
        account: 'office',
        manual: true,
        input,
        output: collect().stream,
        openUrl: (url) => void consent(w, strip(url)).then((loc) => input.write(`${loc}\n`)),
      }),
      /Google returned no id_token naming the signed-in user .*nothing was stored/,
    );
    assert.equal((await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office, undefined);
  } finally {
    await w.close();
  }
});
