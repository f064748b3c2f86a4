// `authorize` for Microsoft delegated accounts against the fake identity platform over real
// HTTPS: authorization code + PKCE (S256) + state through the loopback redirect and --manual
// paste, and the device code (RFC 8628) with the user approving through the fake's device login.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createTestPki, writePki } from '../../src/fakes/ca.js';
import { FakeMicrosoftIdentity, type MsTokenRequest } from '../../src/fakes/microsoftIdentity.js';
import { configSchema } from '../../src/config/schema.js';
import { authorizeCommand } from '../../src/cli/token.js';
import { TokenService } from '../../src/oauth/service.js';
import { TokenStore } from '../../src/oauth/store.js';
import { nullLogger } from '../../src/log/logger.js';
import { collect, authorizeToStore } from '../helpers/oauth.js';
import { waitFor } from '../helpers/wait.js';

const MAILBOX = 'printer@contoso.com';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

async function world(opts: { publicClient?: boolean; transport?: string } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-msauth-'));
  const pki = await createTestPki();
  const { caFile } = await writePki(pki, join(dir, 'pki'));
  const ca = await readFile(caFile);
  const ms = await FakeMicrosoftIdentity.start({ pki });
  const clientId = '00000000-1111-2222-3333-555555555555';
  const secret = opts.publicClient ? undefined : `Qx8Q~${Math.random().toString(36).slice(2)}`;
  ms.registerApp(clientId, secret ?? null, { publicClient: opts.publicClient });
  ms.consentEmail = MAILBOX;
  const stateDir = join(dir, 'state');
  const config = () =>
    configSchema.parse({
      stateDir,
      listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
      accounts: [
        {
          name: 'm365',
          provider: 'microsoft',
          email: MAILBOX,
          ...(opts.transport ? { transport: opts.transport } : {}),
          oauth: {
            type: 'user',
            tenant: ms.tenant,
            authorityHost: ms.authorityHost,
            clientId,
            ...(secret ? { clientSecret: secret } : {}),
            caFile,
          },
        },
      ],
    });
  /** Plays the browser at the sign-in page: GET the URL, return the redirect Location. */
  const signIn = (url: string) =>
    new Promise<string>((resolve, reject) => {
      https
        .get(url, { ca }, (res) => {
          res.resume();
          if (res.statusCode !== 302 || !res.headers.location)
            reject(new Error(`sign-in page answered ${res.statusCode}`));
          else resolve(res.headers.location);
        })
        .on('error', reject);
    });
  /** POST a form to the fake (the user at the device login page, or a raw token request). */
  const post = (url: string, form: Record<string, string>) =>
    new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
      const req = https.request(
        url,
        { method: 'POST', ca, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } },
        (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) as Record<string, unknown> }),
          );
        },
      );
      req.on('error', reject);
      req.end(new URLSearchParams(form).toString());
    });
  const stored = async () => (await new TokenStore({ stateDir, key: null }).load()).accounts.m365;
  /** The stored grant works: a new token service refreshes with it and gets a token for the mailbox. */
  const grantWorks = async () => {
    const svc = new TokenService({ config: config(), log: nullLogger });
    await svc.init();
    try {
      assert.equal(svc.state('m365'), 'ok');
      assert.equal(ms.tokenInfo(await svc.getAccessToken('m365', { force: true }))?.email, MAILBOX);
    } finally {
      svc.stop();
    }
  };
  return {
    dir,
    ms,
    clientId,
    secret,
    config,
    signIn,
    post,
    stored,
    grantWorks,
    close: async () => (await ms.close(), await rm(dir, { recursive: true, force: true })),
  };
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test('microsoft authorize, loopback: code + PKCE S256 + state, SMTP.Send offline_access; the stored grant refreshes', async () => {
  const w = await world();
  try {
    let authUrl = '';
    let page: Promise<{ status: number; body: string }> | undefined;
    const out = collect();
    await authorizeToStore({
      config: w.config(),
      account: 'm365',
      manual: false,
      input: new PassThrough(),
      output: out.stream,
      openUrl: (url) => {
        authUrl = url;
        page = w.signIn(url).then(httpGet);
      },
    });
    const u = new URL(authUrl);
    assert.equal(`${u.origin}${u.pathname}`, `${w.ms.authorityHost}/${w.ms.tenant}/oauth2/v2.0/authorize`);
    const q = u.searchParams;
    assert.equal(q.get('scope'), 'https://outlook.office.com/SMTP.Send offline_access');
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.ok((q.get('state') ?? '').length >= 32);
    assert.match(q.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.equal(q.get('login_hint'), MAILBOX);
    assert.ok(out.text().includes(authUrl), 'URL printed');
    assert.equal((await page!).status, 200);
    // The fake checked the verifier against the challenge before answering with the grant.
    assert.deepEqual(
      w.ms.requests.map((r) => [r.grantType, r.clientAuth, r.ok]),
      [['authorization_code', 'secret', true]],
    );
    const rec = await w.stored();
    assert.match(rec.refreshToken ?? '', /^M\.C5/);
    assert.equal(rec.state, 'ok');
    await w.grantWorks();
  } finally {
    await w.close();
  }
});

test('microsoft authorize --manual: the pasted redirect URL completes it; authorizeCommand stores it through the state owner', async () => {
  const w = await world();
  try {
    const input = new PassThrough();
    const out = collect();
    out.stream.on('data', (c: Buffer) => {
      const m = /(https:\/\/127\.0\.0\.1:\d+\/\S+\/authorize\?\S+)/.exec(c.toString());
      if (m) void w.signIn(m[1]).then((loc) => input.write(`  ${loc}  \n`));
    });
    assert.equal(await authorizeCommand(w.config(), 'm365', { manual: true }, input, out.stream), 0, out.text());
    assert.match(out.text(), /paste it here/);
    assert.match(out.text(), /Authorized account m365/);
    assert.ok((await w.stored()).refreshToken);
    await w.grantWorks();
  } finally {
    await w.close();
  }
});

test('microsoft authorize: a wrong state is refused before any code is redeemed; the fake checks the PKCE verifier', async () => {
  const w = await world();
  try {
    let page: Promise<{ status: number; body: string }> | undefined;
    await assert.rejects(
      authorizeToStore({
        config: w.config(),
        account: 'm365',
        manual: false,
        input: new PassThrough(),
        output: collect().stream,
        openUrl: (url) => {
          page = w.signIn(url).then((loc) => {
            const u = new URL(loc);
            u.searchParams.set('state', 'forged-state');
            return httpGet(u.toString());
          });
        },
      }),
      /state mismatch/,
    );
    assert.equal((await page!).status, 400);
    assert.equal(w.ms.requests.length, 0, 'no code redeemed');
    assert.equal(await w.stored(), undefined);

    // Someone who intercepted the code but not the verifier cannot redeem it.
    const input = new PassThrough();
    const done = authorizeToStore({
      config: w.config(),
      account: 'm365',
      manual: true,
      input,
      output: collect().stream,
      openUrl: (url) =>
        void w.signIn(url).then(async (loc) => {
          const code = new URL(loc).searchParams.get('code')!;
          const stolen = await w.post(w.ms.tokenUrl, {
            grant_type: 'authorization_code',
            client_id: w.clientId,
            client_secret: w.secret!,
            code,
            redirect_uri: new URL(url).searchParams.get('redirect_uri')!,
            code_verifier: 'x'.repeat(43),
            scope: 'https://outlook.office.com/SMTP.Send offline_access',
          });
          assert.equal(stolen.status, 400);
          assert.match(
            String(stolen.body.error_description),
            /^AADSTS50148: The code_verifier provided does not match/,
          );
          input.write(loc + '\n');
        }),
    });
    // The code was single-use: the real redemption now fails, with the AADSTS code in the message.
    await assert.rejects(done, /exchanging the authorization code failed: .*AADSTS54005/);
    assert.equal(await w.stored(), undefined);
  } finally {
    await w.close();
  }
});

test('microsoft authorize --device (public client): polls at the interval through authorization_pending and slow_down until the user approves', {
  timeout: 60_000,
}, async () => {
  const w = await world({ publicClient: true });
  try {
    w.ms.deviceIntervalSec = 1;
    const polls: MsTokenRequest[] = [];
    w.ms.on('request', (r: MsTokenRequest) => {
      if (r.grantType !== DEVICE_GRANT) return;
      polls.push(r);
      // First poll pending -> the next one is told to slow down -> then the user approves.
      if (polls.length === 1) w.ms.slowDownNext = 1;
    });
    const input = new PassThrough();
    const out = collect();
    let userCode = '';
    out.stream.on('data', (c: Buffer) => {
      const m = /enter the code (\w+)/.exec(c.toString());
      if (m) userCode = m[1];
    });
    const done = authorizeCommand(w.config(), 'm365', { manual: false, device: true }, input, out.stream);
    await waitFor(() => polls.length >= 2, 20_000, 'a pending poll and a slow_down');
    assert.ok(userCode, out.text());
    assert.deepEqual((await w.post(w.ms.deviceLoginUrl, { user_code: userCode })).status, 200);
    assert.equal(await done, 0, out.text());
    assert.deepEqual(
      polls.map((p) => p.error?.split(':')[0] ?? 'ok'),
      ['authorization_pending', 'slow_down', 'ok'],
    );
    assert.ok(polls[1].at - polls[0].at >= 950, `waited the interval (${polls[1].at - polls[0].at} ms)`);
    assert.ok(polls[2].at - polls[1].at >= 5950, `slow_down added 5 s (${polls[2].at - polls[1].at} ms)`);
    assert.ok(
      polls.every((p) => p.clientAuth === 'none'),
      'a public client sends no secret',
    );
    assert.match(
      out.text(),
      new RegExp(`open the page ${w.ms.deviceLoginUrl.replace(/[.]/g, '\\.')} and enter the code ${userCode}`),
    );
    await w.grantWorks();
  } finally {
    await w.close();
  }
});

test('microsoft authorize --device: an expired device code ends with a clear error; Google accounts refuse --device', {
  timeout: 30_000,
}, async () => {
  const w = await world({ publicClient: true });
  try {
    w.ms.deviceIntervalSec = 1;
    w.ms.deviceCodeTtlSec = 2;
    await assert.rejects(
      authorizeToStore({
        config: w.config(),
        account: 'm365',
        manual: false,
        device: true,
        input: new PassThrough(),
        output: collect().stream,
      }),
      /the device code expired before the sign-in was completed; run authorize --device again/,
    );
    assert.ok(
      w.ms.requests.some((r) => r.error?.startsWith('expired_token') || r.error?.startsWith('authorization_pending')),
    );
    assert.equal(await w.stored(), undefined);
    const google = configSchema.parse({
      stateDir: join(w.dir, 'g'),
      listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
      accounts: [{ name: 'g', email: 'a@example.com', oauth: { type: 'user', clientId: 'c', clientSecret: 's' } }],
    });
    await assert.rejects(
      authorizeToStore({
        config: google,
        account: 'g',
        manual: false,
        device: true,
        input: new PassThrough(),
        output: collect().stream,
      }),
      /--device is not available for Google accounts: Google refuses the Gmail scope/,
    );
  } finally {
    await w.close();
  }
});

test("microsoft authorize --device, transport auto: the device sign-in consents to SMTP and Graph; the token is SMTP's, one Graph refresh checks the Graph consent", {
  timeout: 60_000,
}, async () => {
  const w = await world({ publicClient: true, transport: 'auto' });
  try {
    w.ms.deviceIntervalSec = 1;
    const seen: MsTokenRequest[] = [];
    w.ms.on('request', (r: MsTokenRequest) => seen.push(r));
    const input = new PassThrough();
    const out = collect();
    let userCode = '';
    out.stream.on('data', (c: Buffer) => {
      const m = /enter the code (\w+)/.exec(c.toString());
      if (m) userCode = m[1];
    });
    const done = authorizeCommand(w.config(), 'm365', { manual: false, device: true }, input, out.stream);
    await waitFor(() => userCode !== '', 20_000, 'the device code shown');
    assert.equal((await w.post(w.ms.deviceLoginUrl, { user_code: userCode })).status, 200);
    assert.equal(await done, 0, out.text());
    assert.equal(
      seen.find((r) => r.grantType === 'devicecode')?.scope,
      'https://outlook.office.com/SMTP.Send https://graph.microsoft.com/Mail.Send offline_access',
    );
    assert.deepEqual(
      seen.filter((r) => r.grantType === 'refresh_token').map((r) => [r.scope, r.ok]),
      [['https://graph.microsoft.com/Mail.Send offline_access', true]],
    );
    await w.grantWorks();
  } finally {
    await w.close();
  }
});
