// `authorize` for Microsoft delegated accounts against the fake identity platform over real
// HTTPS: authorization code + PKCE (S256) + state through the loopback redirect and --manual
// paste, and the device code (RFC 8628) with the user approving through the fake's device login.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { FakeMicrosoftIdentity, MsTokenRequest } from '../../src/fakes/microsoftIdentity.js';
import { configSchema } from '../../src/config/schema.js';
import { authorizeCommand } from '../../src/cli/token.js';
import { TokenService } from '../../src/oauth/service.js';
import { nullLogger } from '../../src/log/logger.js';
import { collect, authorizeToStore } from '../helpers/oauth.js';
import { microsoftIssuer } from '../../src/providers/microsoft/clouds.js';
import { createPublicKey, type JsonWebKey as NodeJwk, verify } from 'node:crypto';
import { waitFor } from '../helpers/wait.js';
import { fakeMicrosoftApp, MS_MAILBOX } from '../helpers/microsoft.js';

const MAILBOX = MS_MAILBOX;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/**
 * `tenant`: what the account's oauth.tenant says (default: the fake's domain); `fakeTenant`:
 * what the fake's own paths name (a domain, or its GUID).
 */
async function world(
  opts: {
    publicClient?: boolean;
    transport?: string;
    tenant?: (ms: FakeMicrosoftIdentity) => string;
    fakeTenant?: string;
  } = {},
) {
  const app = await fakeMicrosoftApp({
    name: 'msauth',
    clientId: '00000000-1111-2222-3333-555555555555',
    publicClient: opts.publicClient,
    fakeTenant: opts.fakeTenant,
  });
  const { ms, stateDir } = app;
  const config = () =>
    app.config('user', opts.transport ? { transport: opts.transport } : {}, { tenant: opts.tenant?.(ms) ?? ms.tenant });
  const tokensFile = () => readFile(join(stateDir, 'tokens.json'), 'utf8').catch(() => '(none)');
  /** `authorize --manual` through the CLI command: the user signs in at the fake and pastes the redirect. */
  const manual = async () => {
    const input = new PassThrough();
    const out = collect();
    let authUrl = '';
    out.stream.on('data', (c: Buffer) => {
      const m = /(https:\/\/127\.0\.0\.1:\d+\/\S+\/authorize\?\S+)/.exec(c.toString());
      if (m) {
        authUrl = m[1];
        void w.signIn(m[1]).then((loc) => input.write(`${loc}\n`));
      }
    });
    const code = await authorizeCommand(config(), 'm365', { manual: true }, input, out.stream);
    return { code, text: out.text(), authUrl };
  };
  /** `authorize --device` through the CLI command: the user enters the code at the fake's device login. */
  const device = async () => {
    ms.deviceIntervalSec = 1;
    const out = collect();
    let entered = false;
    out.stream.on('data', (c: Buffer) => {
      const m = /enter the code (\w+)/.exec(c.toString());
      if (m && !entered) {
        entered = true;
        void w.post(ms.deviceLoginUrl, { user_code: m[1] });
      }
    });
    const code = await authorizeCommand(
      config(),
      'm365',
      { manual: false, device: true },
      new PassThrough(),
      out.stream,
    );
    return { code, text: out.text() };
  };
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
  const w = { ...app, config, tokensFile, manual, device, grantWorks };
  return w;
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
    assert.equal(q.get('scope'), 'https://outlook.office.com/SMTP.Send offline_access openid profile email');
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
      /--device is not available for Google accounts: Google refuses the Gmail scope in the device flow\. Use --manual/,
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
      'https://outlook.office.com/SMTP.Send https://graph.microsoft.com/Mail.Send offline_access openid profile email',
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

// ---- Who signed in: the id_token's email / preferred_username against the account's email ----

const ADMIN = 'admin@contoso.com';

test('microsoft authorize --manual as another user (an admin in the browser): refused, naming both addresses; the stored grant is unchanged', async () => {
  const w = await world();
  try {
    assert.equal((await w.manual()).code, 0);
    const before = await w.tokensFile();
    assert.equal((await w.stored()).authorizedEmail, MAILBOX);
    w.ms.consentEmail = ADMIN;
    const r = await w.manual();
    assert.equal(r.code, 1, r.text);
    assert.match(
      r.text,
      /error: you signed in as admin@contoso\.com, but account "m365" sends as printer@contoso\.com; nothing was stored\. Run authorize again and sign in as printer@contoso\.com/,
    );
    assert.match(r.text, /Microsoft named the user: email admin@contoso\.com, preferred_username admin@contoso\.com/);
    assert.equal(await w.tokensFile(), before, 'the store is unchanged');
    // The platform did issue the admin a grant: the refusal is the bridge's.
    assert.equal(w.ms.requests.filter((q) => q.grantType === 'authorization_code' && q.ok).length, 2);
    await w.grantWorks();
  } finally {
    await w.close();
  }
});

test('microsoft authorize --device as another user: refused, nothing stored', { timeout: 30_000 }, async () => {
  const w = await world({ publicClient: true });
  try {
    w.ms.consentEmail = ADMIN;
    const r = await w.device();
    assert.equal(r.code, 1, r.text);
    assert.match(
      r.text,
      /error: you signed in as admin@contoso\.com, but account "m365" sends as printer@contoso\.com; nothing was stored/,
    );
    assert.ok(
      w.ms.requests.some((q) => q.grantType === DEVICE_GRANT && q.ok),
      'the device code was redeemed',
    );
    assert.equal(await w.stored(), undefined);
  } finally {
    await w.close();
  }
});

test("microsoft authorize: a user whose sign-in name (UPN) differs but whose email claim is the account's is accepted; refreshes ask for no OpenID scope", async () => {
  const w = await world();
  try {
    const upn = 'p.rinter@contoso.onmicrosoft.com';
    w.ms.consentEmail = upn;
    w.ms.mailOf.set(upn, MAILBOX);
    const r = await w.manual();
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /Authorized account m365 as printer@contoso\.com/);
    assert.equal((await w.stored()).authorizedEmail, MAILBOX);
    // The code's redemption asked for one resource plus the OpenID scopes.
    assert.equal(
      w.ms.requests.find((q) => q.grantType === 'authorization_code')?.scope,
      'https://outlook.office.com/SMTP.Send offline_access openid profile email',
    );
    await w.grantWorks();
    assert.deepEqual(
      w.ms.requests.filter((q) => q.grantType === 'refresh_token').map((q) => [q.scope, q.ok]),
      [['https://outlook.office.com/SMTP.Send offline_access', true]],
    );

    // A user whose sign-in name is the account's email and whose email claim is not: accepted
    // by preferred_username.
    w.ms.consentEmail = MAILBOX;
    w.ms.mailOf.set(MAILBOX, 'printer.box@contoso.com');
    const byUpn = await w.manual();
    assert.equal(byUpn.code, 0, byUpn.text);
    assert.equal((await w.stored()).authorizedEmail, MAILBOX);
    // Another user whose UPN and address both differ: the note names both claims.
    w.ms.consentEmail = 'a.dmin@contoso.onmicrosoft.com';
    w.ms.mailOf.set(w.ms.consentEmail, ADMIN);
    const before = await w.tokensFile();
    const refused = await w.manual();
    assert.equal(refused.code, 1);
    assert.match(refused.text, /you signed in as admin@contoso\.com, but account "m365" sends as printer@contoso\.com/);
    assert.match(
      refused.text,
      /Microsoft named the user: email admin@contoso\.com, preferred_username a\.dmin@contoso\.onmicrosoft\.com; the account's email must be one of them, normally the mailbox's primary SMTP address/,
    );
    assert.equal(await w.tokensFile(), before);
  } finally {
    await w.close();
  }
});

test('microsoft authorize: an answer without an id_token, or whose id_token names nobody, is refused and stores nothing', async () => {
  const w = await world();
  try {
    // The consent leaves out openid: no id_token comes back.
    w.ms.withheldScopes.add('openid');
    const none = await w.manual();
    assert.equal(none.code, 1, none.text);
    assert.match(
      none.text,
      /error: Microsoft returned no id_token naming the signed-in user \(openid profile email were asked for\); nothing was stored\. Run authorize again\./,
    );
    // An id_token without email and preferred_username.
    w.ms.withheldScopes.delete('openid');
    w.ms.withheldScopes.add('email');
    w.ms.withheldScopes.add('profile');
    const nobody = await w.manual();
    assert.equal(nobody.code, 1, nobody.text);
    assert.match(nobody.text, /error: Microsoft's id_token names no user \(neither email nor preferred_username/);
    assert.equal(w.ms.requests.filter((q) => q.grantType === 'authorization_code' && q.ok).length, 2);
    assert.equal(await w.stored(), undefined);
  } finally {
    await w.close();
  }
});

test("microsoft authorize: the id_token's issuer is {authority}/{tenant GUID}/v2.0, accepted with the tenant configured as a domain, organizations or the GUID", async () => {
  let tenant = '';
  const w = await world({ tenant: (ms) => tenant || ms.tenant });
  try {
    assert.match(w.ms.tenantId, /^[0-9a-f-]{36}$/);
    assert.equal(w.ms.issuer, `${w.ms.authorityHost}/${w.ms.tenantId}/v2.0`);
    for (const t of ['contoso.com', 'organizations', 'common', w.ms.tenantId]) {
      tenant = t;
      const r = await w.manual();
      assert.equal(r.code, 0, `${t}: ${r.text}`);
      assert.equal(new URL(r.authUrl).pathname, `/${t}/oauth2/v2.0/authorize`);
      assert.equal((await w.stored()).authorizedEmail, MAILBOX, t);
    }
  } finally {
    await w.close();
  }
});

test('microsoft authorize: a forged id_token (issuer of another cloud, of another tenant than the configured GUID) is refused and stores nothing', {
  timeout: 30_000,
}, async () => {
  const other = '72f988bf-86f1-41af-91ab-2d7cd011db47';
  let tenant = '';
  const w = await world({ tenant: (ms) => tenant || ms.tenant });
  try {
    // Another cloud's issuer with this tenant's GUID.
    w.ms.forgeIdToken = { iss: `https://login.microsoftonline.us/${w.ms.tenantId}/v2.0` };
    const cloud = await w.manual();
    assert.equal(cloud.code, 1, cloud.text);
    assert.ok(
      cloud.text.includes(
        `error: exchanging the authorization code failed: Microsoft's id_token was issued by https://login.microsoftonline.us/${w.ms.tenantId}/v2.0, not ${w.ms.issuer} (the configured cloud and tenant); nothing was stored`,
      ),
      cloud.text,
    );
    // The issuer names another tenant than the token's tid.
    w.ms.forgeIdToken = { iss: `${w.ms.authorityHost}/${other}/v2.0` };
    assert.match((await w.manual()).text, /Microsoft's id_token was issued by https:\/\/127\.0\.0\.1:\d+\/72f988bf-/);
    // The tenant configured as a GUID: a token of another tenant is refused, however consistent.
    tenant = w.ms.tenantId;
    w.ms.forgeIdToken = { tid: other, iss: `${w.ms.authorityHost}/${other}/v2.0` };
    const guid = await w.manual();
    assert.match(
      guid.text,
      new RegExp(
        `error: exchanging the authorization code failed: Microsoft's id_token is from tenant ${other}, not the configured tenant ${w.ms.tenantId} \\(oauth\\.tenant\\); nothing was stored`,
      ),
    );
    // No tid at all.
    w.ms.forgeIdToken = { tid: undefined };
    assert.match((await w.manual()).text, /Microsoft's id_token names no tenant \(tid\)/);
    // The device flow's answer is checked the same way.
    w.ms.forgeIdToken = { iss: `https://login.chinacloudapi.cn/${w.ms.tenantId}/v2.0` };
    const dev = await w.device();
    assert.equal(dev.code, 1);
    assert.match(
      dev.text,
      /error: the device sign-in failed: Microsoft's id_token was issued by https:\/\/login\.chinacloudapi\.cn\//,
    );
    assert.equal(w.ms.requests.filter((q) => q.ok && q.grantType !== 'devicecode').length, 5, 'each was issued');
    assert.equal(await w.stored(), undefined);
  } finally {
    await w.close();
  }
});

test('id_token issuers per cloud: a cloud login host maps to its issuer host (China: login.partner.microsoftonline.cn); another authority issues as itself', () => {
  const tid = '0a1b2c3d-0000-4000-8000-000000000001';
  assert.equal(
    microsoftIssuer('https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token', tid),
    `https://login.microsoftonline.com/${tid}/v2.0`,
  );
  assert.equal(
    microsoftIssuer('https://login.microsoftonline.us/x/oauth2/v2.0/token', tid),
    `https://login.microsoftonline.us/${tid}/v2.0`,
  );
  assert.equal(
    microsoftIssuer('https://login.chinacloudapi.cn/x/oauth2/v2.0/token', tid),
    `https://login.partner.microsoftonline.cn/${tid}/v2.0`,
  );
  assert.equal(
    microsoftIssuer('https://127.0.0.1:8443/x/oauth2/v2.0/token', tid),
    `https://127.0.0.1:8443/${tid}/v2.0`,
  );
});

test('fake identity: a device sign-in with openid gets an RS256 id_token signed by the key its keys endpoint publishes; without openid, none', {
  timeout: 30_000,
}, async () => {
  const w = await world();
  try {
    w.ms.deviceIntervalSec = 1;
    const redeem = async (scope: string) => {
      const auth = { client_id: w.clientId, client_secret: w.secret! };
      const d = await w.post(`${w.ms.authorityHost}/organizations/oauth2/v2.0/devicecode`, { ...auth, scope });
      assert.equal(d.status, 200, JSON.stringify(d.body));
      assert.equal((await w.post(w.ms.deviceLoginUrl, { user_code: String(d.body.user_code) })).status, 200);
      const t = await w.post(`${w.ms.authorityHost}/organizations/oauth2/v2.0/token`, {
        ...auth,
        grant_type: DEVICE_GRANT,
        device_code: String(d.body.device_code),
      });
      assert.equal(t.status, 200, JSON.stringify(t.body));
      return t.body;
    };
    const body = await redeem('https://outlook.office.com/SMTP.Send offline_access openid profile email');
    const [h, p, sig] = String(body.id_token).split('.');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg: string; kid: string };
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    assert.equal(header.alg, 'RS256');
    const keys = await new Promise<{ keys: (NodeJwk & { kid: string })[] }>((resolve, reject) => {
      https
        .get(`${w.ms.authorityHost}/common/discovery/v2.0/keys`, { ca: w.ca }, (res) => {
          let t = '';
          res.on('data', (c: Buffer) => (t += c.toString()));
          res.on('end', () => resolve(JSON.parse(t) as { keys: (NodeJwk & { kid: string })[] }));
        })
        .on('error', reject);
    });
    const jwk = keys.keys.find((k) => k.kid === header.kid)!;
    assert.ok(
      verify(
        'RSA-SHA256',
        Buffer.from(`${h}.${p}`),
        createPublicKey({ key: jwk, format: 'jwk' }),
        Buffer.from(sig, 'base64url'),
      ),
    );
    assert.equal(
      claims.iss,
      `${w.ms.authorityHost}/${w.ms.tenantId}/v2.0`,
      'the GUID, though the path said organizations',
    );
    assert.equal(claims.aud, w.clientId);
    assert.equal(claims.tid, w.ms.tenantId);
    assert.equal(claims.preferred_username, MAILBOX);
    assert.equal(claims.email, MAILBOX);
    assert.match(String(claims.oid), /^[0-9a-f-]{36}$/);
    assert.equal(body.scope, 'https://outlook.office.com/SMTP.Send offline_access', 'the first resource only');
    // Without openid (a sign-in that asks for the resource only): no id_token.
    assert.equal((await redeem('https://outlook.office.com/SMTP.Send offline_access')).id_token, undefined);
  } finally {
    await w.close();
  }
});
