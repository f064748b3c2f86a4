// The web console's access rules without a browser: loopback-only mode, the admin password
// (form and basic auth), CSRF refusals, cookies, TLS, and the config refusing a console on
// the network without TLS. The browser flows are in t-20-web-console-in-browser.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { readFile, chmod } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { hashPassword, kdfGate, kdfStats } from '../../src/listener/passwords.js';
import {
  startBridge,
  secretsOf,
  assertNoSecrets,
  CLI,
  sendThroughBridge,
  message,
  type RunningBridge,
} from '../helpers/bridge.js';
import { callOwner } from '../../src/control/client.js';
import type { MsTokenRequest } from '../../src/fakes/microsoftIdentity.js';
import { startMicrosoftConsole, MS_MAILBOX, type MicrosoftConsole } from '../helpers/microsoft-console.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(
  url: string,
  o: { method?: string; headers?: Record<string, string>; body?: string; ca?: string } = {},
): Promise<Res> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method: o.method ?? 'GET', headers: o.headers, ca: o.ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

const cookieOf = (r: Res) => (r.headers['set-cookie']?.[0] ?? '').split(';')[0];
const csrfOf = (body: string) => /name="csrf" value="([^"]+)"/.exec(body)?.[1] ?? '';

/** Logs in the way an operator does without adminPasswordHash: a one-time link minted by the
 * daemon over its control socket (what `xoauth2-bridge console-link` asks for). */
async function linkSession(b: RunningBridge): Promise<string> {
  const { result } = await callOwner(b.bridge.config, 'console.link');
  const r = result as { ok: boolean; url?: string; message: string };
  assert.ok(r.ok && r.url, r.message);
  const opened = await request(r.url!);
  assert.equal(opened.status, 303, opened.body);
  return cookieOf(opened);
}

// A client of the control protocol (one JSON line each way) that runs as another user: the
// CLI's Node lives under /root, which `nobody` cannot enter, Debian's python3 does not.
const SOCKET_CLIENT = `import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"op":"console.link"}\\n')
print(s.makefile().readline(), end='')`;

test('no-password console: without a session only the way to a link; console-link gives the owner a one-time, expiring link; nobody gets none', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { http: { port: 0, console: true } }, { http: true });
  try {
    const port = b.bridge.httpAddress!.port;
    const base = `http://127.0.0.1:${port}`;
    // Every local user can open a TCP connection to 127.0.0.1: without a session that gives nothing.
    const anon = await request(`${base}/accounts`);
    assert.equal(anon.status, 401);
    assert.match(anon.body, /xoauth2-bridge console-link/);
    assert.equal(anon.headers['set-cookie'], undefined, 'no session without a link');
    assert.doesNotMatch(anon.body, /data-account=/);
    assert.equal((await request(`${base}/login`)).status, 401);
    const id = '00000000000000000000000000';
    assert.equal(
      (
        await request(`${base}/queue/${id}/delete`, {
          method: 'POST',
          body: '',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: base },
        })
      ).status,
      403,
    );

    // The owner: the real CLI over the control socket prints the link on stdout.
    const cli = await run(process.execPath, [...CLI, 'console-link', '-c', b.configFile]);
    const url = cli.stdout.trim();
    assert.match(url, new RegExp(`^http://127\\.0\\.0\\.1:${port}/login\\?link=[A-Za-z0-9_-]{43}$`));
    assert.match(cli.stderr, /works once, within 5 minutes/);
    assert.equal(
      (await request(url, { method: 'HEAD' })).status,
      401,
      'a HEAD (link checker) does not use the link up',
    );
    const opened = await request(url);
    assert.equal(opened.status, 303);
    assert.equal(opened.headers.location, '/');
    const setCookie = opened.headers['set-cookie']?.[0] ?? '';
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.doesNotMatch(setCookie, /Secure/, 'no Secure flag over plain HTTP (the browser would drop the cookie)');
    const page = await request(`${base}/accounts`, { headers: { Cookie: cookieOf(opened) } });
    assert.equal(page.status, 200);
    assert.match(page.body, /<h1>Accounts<\/h1>/);
    assert.match(page.body, /data-account="office"/);
    assert.match(String(page.headers['content-security-policy'] ?? ''), /frame-ancestors 'none'/);
    // Once only.
    const again = await request(url);
    assert.equal(again.status, 401);
    assert.match(again.body, /used already or expired/);
    assert.equal(again.headers['set-cookie'], undefined);
    // Short-lived: a link past its expiry is refused (minted here with a 100 ms life).
    const short = b.bridge.console!.mintLink(b.bridge.httpAddress, 100);
    assert.ok(short.ok);
    await waitFor(() => Date.now() > Date.parse(short.expiresAt!), 5000, 'the short link to expire');
    const late = await request(short.url!);
    assert.equal(late.status, 401);
    assert.equal(late.headers['set-cookie'], undefined);
    assert.ok(b.logs.some((l) => l.includes('web console: login through a one-time link')));
    assert.ok(b.logs.some((l) => l.includes('web console: login link refused')));
    const token = new URL(url).searchParams.get('link')!;
    assert.ok(
      !b.logs.some((l) => l.includes(token) || l.includes(new URL(short.url!).searchParams.get('link')!)),
      'link tokens are never logged',
    );

    // Another local user: the control socket refuses to connect, so no link; the same client
    // as the owner gets one (the refusal is the uid, not the client).
    const sock = join(world.dir, 'state', 'control.sock');
    await chmod(world.dir, 0o755); // as /var/lib is: only the state directory's own mode guards it
    const asNobody = await run('setpriv', [
      '--reuid=nobody',
      '--regid=nogroup',
      '--clear-groups',
      '/usr/bin/python3',
      '-c',
      SOCKET_CLIENT,
      sock,
    ]).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    assert.notEqual(asNobody.code, 0);
    assert.match(asNobody.stderr, /PermissionError/);
    assert.doesNotMatch(asNobody.stdout + asNobody.stderr, /link=/);
    const asOwner = await run('/usr/bin/python3', ['-c', SOCKET_CLIENT, sock]);
    assert.match(asOwner.stdout, /"url":"http:\/\/127\.0\.0\.1:\d+\/login\?link=/);
    // ... and nobody's HTTP requests still get only the page that says how to get a link.
    const curl = await run('setpriv', [
      '--reuid=nobody',
      '--regid=nogroup',
      '--clear-groups',
      'curl',
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `${base}/queue`,
    ]);
    assert.equal(curl.stdout, '401');

    const rebound = await request(`${base}/accounts`, {
      headers: { Host: 'attacker.example:80', Cookie: cookieOf(opened) },
    });
    assert.equal(rebound.status, 403);
    assert.match(rebound.body, /adminPasswordHash/);
    // The health endpoints are unchanged.
    assert.equal((await request(`${base}/healthz`)).body, 'ok\n');
    assertNoSecrets(
      page.body + (await request(`${base}/queue`, { headers: { Cookie: cookieOf(opened) } })).body,
      secretsOf(world),
    );
  } finally {
    await b.stop();
    await world.close();
  }
});

test('with adminPasswordHash the one-time link logs in too; console-link without a daemon or with the console off says so', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(
    world,
    { http: { port: 0, console: true, adminPasswordHash: await hashPassword('pw-link', FAKE_SCRYPT_COST) } },
    { http: true },
  );
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const login = await request(`${base}/login`);
    assert.equal(login.status, 200);
    assert.match(login.body, /name="password"/);
    assert.match(login.body, /xoauth2-bridge console-link/);
    const cookie = await linkSession(b);
    assert.equal((await request(`${base}/accounts`, { headers: { Cookie: cookie } })).status, 200);
  } finally {
    await b.stop();
  }
  const off = await startBridge(world, { http: { port: 0, console: false } }, { http: true, importToken: false });
  try {
    const r = await run(process.execPath, [...CLI, 'console-link', '-c', off.configFile]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /console-link: the web console is off \(http\.console: false\)/);
  } finally {
    await off.stop();
  }
  try {
    const r = await run(process.execPath, [...CLI, 'console-link', '-c', off.configFile]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /console-link: no daemon is running/);
  } finally {
    await world.close();
  }
});

// DNS rebinding: a name the attacker controls resolves to 127.0.0.1, so the peer is loopback
// and the browser sends that name as Host and in Origin. Only exact loopback literals (and
// `localhost`) with an optional numeric port may reach the no-password console.
const FORGED_HOSTS = (port: number) => [
  '127.evil.example',
  `127.evil.example:${port}`,
  '127.0.0.1.nip.io',
  `127.0.0.1.nip.io:${port}`,
  'localhost.evil',
  `localhost.evil:${port}`,
  '[::1].x',
  `[::1].x:${port}`,
  '[::1]x',
  'evil.example',
  '127.1',
  '0x7f.0.0.1',
  '2130706433',
  '127.0.0.1.',
  'localhost.',
  '[::2]',
  '::1',
  'localhost:abc',
  '127.0.0.1:99999',
  '127.0.0.1:',
  '127.0.0.1:+80',
  `localhost:${port}:${port}`,
  `127.0.0.1:${port}@evil.example`,
];
const EXACT_HOSTS = (port: number) => [
  'localhost',
  `localhost:${port}`,
  `LOCALHOST:${port}`,
  '127.0.0.1',
  `127.0.0.1:${port}`,
  `127.45.6.7:${port}`,
  '[::1]',
  `[::1]:${port}`,
];

test('DNS rebinding: forged Host and Origin names are refused by the no-password console; exact loopback forms are accepted', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { http: { port: 0, console: true } }, { http: true });
  try {
    const port = b.bridge.httpAddress!.port;
    const base = `http://127.0.0.1:${port}`;
    const cookie = await linkSession(b);
    for (const host of FORGED_HOSTS(port)) {
      const r = await request(`${base}/accounts`, { headers: { Host: host, Cookie: cookie } });
      assert.equal(r.status, 403, `Host: ${host} must be refused`);
      assert.match(r.body, /answers on this machine only/, `Host: ${host}`);
      assert.equal(r.headers['set-cookie'], undefined, `no session for Host: ${host}`);
    }
    for (const host of EXACT_HOSTS(port)) {
      const r = await request(`${base}/accounts`, { headers: { Host: host, Cookie: cookie } });
      assert.equal(r.status, 200, `Host: ${host} is an exact loopback form`);
    }
    // A page on a rebound name posts with its own Origin: refused even with the right Host,
    // session and CSRF token.
    const csrf = csrfOf((await request(`${base}/accounts`, { headers: { Cookie: cookie } })).body);
    const post = (host: string, origin: string) =>
      request(`${base}/accounts/office/authorize`, {
        method: 'POST',
        body: `csrf=${encodeURIComponent(csrf)}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookie, Host: host, Origin: origin },
      });
    for (const origin of [
      `http://127.evil.example:${port}`,
      `http://127.0.0.1.nip.io:${port}`,
      `http://localhost.evil:${port}`,
      `http://[::1].x:${port}`,
      'null',
    ]) {
      assert.equal((await post(`127.0.0.1:${port}`, origin)).status, 403, `Origin: ${origin}`);
    }
    // The rebinding page itself: Host and Origin both the attacker's name.
    assert.equal((await post(`127.evil.example:${port}`, `http://127.evil.example:${port}`)).status, 403);
    assert.equal((await post(`127.0.0.1.nip.io:${port}`, `http://127.0.0.1.nip.io:${port}`)).status, 403);
    // The console's own origin, spelled as the browser does for each exact form.
    const ok = await post(`localhost:${port}`, `http://localhost:${port}`);
    assert.equal(ok.status, 303, 'same-origin POST through localhost');
    assert.equal(ok.headers.location, '/accounts/office/authorize');
  } finally {
    await b.stop();
    await world.close();
  }
});

test('re-authorization through the console as a different Google user is refused and stores nothing', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { http: { port: 0, console: true } }, { http: true });
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const cookie = await linkSession(b);
    const csrf = csrfOf((await request(`${base}/accounts`, { headers: { Cookie: cookie } })).body);
    const post = (path: string, body: Record<string, string>) =>
      request(`${base}${path}`, {
        method: 'POST',
        body: new URLSearchParams({ csrf, ...body }).toString(),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookie, Origin: base },
      });
    const before = await readFile(join(world.dir, 'state', 'tokens.json'), 'utf8');
    assert.equal((await post('/accounts/office/authorize', {})).status, 303);
    const consentPage = await request(`${base}/accounts/office/authorize`, { headers: { Cookie: cookie } });
    const consentUrl = /id="consent-url" href="([^"]+)"/
      .exec(consentPage.body)![1]
      .replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c)));
    world.tokens.consentEmail = 'attacker@evil.example';
    const landed = await request(consentUrl, { ca: readFileSync(world.caFile, 'utf8') });
    assert.equal(landed.status, 302);
    const done = await post('/accounts/office/authorize/complete', { redirect: String(landed.headers.location) });
    assert.equal(done.status, 303);
    const after = await request(`${base}/accounts`, { headers: { Cookie: cookie } });
    assert.match(
      after.body,
      /class="flash-bad" id="flash">Authorization of office failed: you signed in as attacker@evil\.example, but account &#34;office&#34; sends as scanner@example\.com; nothing was stored/,
    );
    assert.equal(
      await readFile(join(world.dir, 'state', 'tokens.json'), 'utf8'),
      before,
      'the token store is unchanged',
    );
    assert.ok(!b.logs.some((l) => l.includes('account authorized from the web console')));
    // The account keeps working with its own grant.
    const sent = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['r@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'r@example.org' }),
    });
    assert.match(sent.response, /^250 /);
    await world.gmail.waitForMessages(1, 15_000);
    assert.equal(world.gmail.messages[0].authUser, 'scanner@example.com');
  } finally {
    await b.stop();
    await world.close();
  }
});

test('admin password: login form and basic auth; every POST needs the CSRF token and a same-origin Origin', async () => {
  const world = await startFakeWorld();
  const adminPw = 'admin-pw-' + Math.random().toString(36).slice(2);
  const b = await startBridge(
    world,
    { http: { port: 0, console: true, adminPasswordHash: await hashPassword(adminPw, FAKE_SCRYPT_COST) } },
    { http: true },
  );
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const origin = { Origin: base };
    const anon = await request(`${base}/accounts`);
    assert.equal(anon.status, 303);
    assert.equal(anon.headers.location, '/login');
    const form = (s: Record<string, string>) => new URLSearchParams(s).toString();
    const post = (path: string, body: string, headers: Record<string, string>) =>
      request(`${base}${path}`, {
        method: 'POST',
        body,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
      });

    assert.equal((await post('/login', form({ password: 'wrong' }), origin)).status, 401);
    assert.ok(
      b.logs.some((l) => l.includes('web console: login failed')),
      'a failed login is logged (with the address, never the password)',
    );
    assert.equal(
      (await post('/login', form({ password: adminPw }), { Origin: 'https://evil.example' })).status,
      403,
      'login from a foreign page',
    );
    const login = await post('/login', form({ password: adminPw }), origin);
    assert.equal(login.status, 303);
    const cookie = cookieOf(login);
    assert.match(cookie, /^xob_session=/);
    const page = await request(`${base}/queue`, { headers: { Cookie: cookie } });
    assert.equal(page.status, 200);
    const csrf = csrfOf(page.body);
    assert.ok(csrf.length >= 32, 'the page carries the session CSRF token');

    const basic = await request(`${base}/accounts`, {
      headers: { Authorization: `Basic ${Buffer.from(`admin:${adminPw}`).toString('base64')}` },
    });
    assert.equal(basic.status, 200);
    assert.equal(
      (
        await request(`${base}/accounts`, {
          headers: { Authorization: `Basic ${Buffer.from('admin:nope').toString('base64')}` },
        })
      ).status,
      303,
    );

    // CSRF: no token, a wrong token, the right token from a foreign origin, no origin at all.
    const action = '/accounts/office/authorize';
    assert.equal((await post(action, '', { Cookie: cookie, ...origin })).status, 403);
    assert.equal((await post(action, form({ csrf: 'x'.repeat(43) }), { Cookie: cookie, ...origin })).status, 403);
    assert.equal((await post(action, form({ csrf }), { Cookie: cookie, Origin: 'http://evil.example' })).status, 403);
    assert.equal((await post(action, form({ csrf }), { Cookie: cookie })).status, 403);
    assert.equal((await post(action, form({ csrf }), { ...origin })).status, 403, 'no session');
    assert.ok(b.logs.some((l) => l.includes('refused by the CSRF check')));
    // The right token from our own page works.
    const ok = await post(action, form({ csrf }), { Cookie: cookie, ...origin });
    assert.equal(ok.status, 303);
    assert.equal(ok.headers.location, '/accounts/office/authorize');
    const consent = await request(`${base}${ok.headers.location}`, { headers: { Cookie: cookie } });
    assert.match(consent.body, /id="consent-url" href="https:\/\/127\.0\.0\.1:\d+\/[^"]*code_challenge_method=S256/);
    assertNoSecrets(page.body + consent.body + b.logs.join('\n'), [...secretsOf(world), adminPw]);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('console over TLS: the session cookie is Secure', async () => {
  const world = await startFakeWorld();
  const pki = join(world.dir, 'pki');
  const b = await startBridge(
    world,
    {
      http: {
        port: 0,
        console: true,
        adminPasswordHash: await hashPassword('pw-tls', FAKE_SCRYPT_COST),
        certFile: join(pki, 'cert.pem'),
        keyFile: join(pki, 'key.pem'),
      },
    },
    { http: true },
  );
  try {
    const base = `https://localhost:${b.bridge.httpAddress!.port}`;
    const ca = readFileSync(world.caFile, 'utf8');
    const login = await request(`${base}/login`, {
      method: 'POST',
      ca,
      body: 'password=pw-tls',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: base },
    });
    assert.equal(login.status, 303);
    assert.match(login.headers['set-cookie']?.[0] ?? '', /; Secure/);
    assert.equal((await request(`${base}/metrics`, { ca })).status, 200, '/metrics over the same HTTPS endpoint');
  } finally {
    await b.stop();
    await world.close();
  }
});

test('a console on a non-loopback address without TLS is refused by check-config and serve, naming the keys', async () => {
  const world = await startFakeWorld();
  try {
    const file = await writeBridgeConfig(
      world,
      bridgeConfig(world, {
        http: { host: '0.0.0.0', port: 0, console: true, adminPasswordHash: await hashPassword('x', FAKE_SCRYPT_COST) },
      }),
    );
    for (const cmd of ['check-config', 'serve']) {
      const r = await run(process.execPath, [...CLI, cmd, '-c', file]).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(r.code, 2, `${cmd} exits 2`);
      assert.match(r.stderr, /http\.console: the console on 0\.0\.0\.0 \(not loopback\) would be served without TLS/);
      assert.match(r.stderr, /http\.certFile and http\.keyFile/);
      assert.match(r.stderr, /http\.allowInsecureConsole: true/);
    }
    const insecure = await writeBridgeConfig(
      world,
      bridgeConfig(world, { http: { host: '0.0.0.0', port: 0, console: true, allowInsecureConsole: true } }),
      'insecure.yaml',
    );
    const ok = await run(process.execPath, [...CLI, 'check-config', '-c', insecure]);
    assert.match(ok.stdout, /ok/);
  } finally {
    await world.close();
  }
});

test('queue actions from the console: Retry and Delete act on the spool like the CLI and report its answer', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { http: { port: 0, console: true } }, { http: true });
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    world.tokens.revoke(world.account.refreshToken);
    world.tokens.expireAccessTokens();
    await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['q@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'q@example.org' }),
    });
    await waitFor(() => b.bridge.tokens.state('office') === 'needs-reauth', 10_000, 'needs-reauth');
    await waitFor(
      async () => (await b.bridge.ops.listQueue()).some((r) => r.state === 'held' && r.reason === 'needs-reauth'),
      10_000,
      'the message held (its attempt over)',
    );
    const cookie = await linkSession(b);
    const first = await request(`${base}/queue`, { headers: { Cookie: cookie } });
    const csrf = csrfOf(first.body);
    const [id] = (await b.bridge.spool.list()).map((e) => e.id);
    assert.match(first.body, new RegExp(`data-id="${id}"`));
    const act = (what: string) =>
      request(`${base}/queue/${id}/${what}`, {
        method: 'POST',
        body: `csrf=${encodeURIComponent(csrf)}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookie, Origin: base },
      });
    const retried = await act('retry');
    assert.equal(retried.status, 303);
    const afterRetry = await request(`${base}/queue`, { headers: { Cookie: cookie } });
    // Its account needs re-authorization: a retry would change nothing, so it is refused with the fix.
    assert.match(
      afterRetry.body,
      new RegExp(`class="flash-bad" id="flash">queue retry: ${id}: not retried: its account needs re-authorization`),
    );
    assert.equal((await act('delete')).status, 303);
    const afterDelete = await request(`${base}/queue`, { headers: { Cookie: cookie } });
    assert.match(afterDelete.body, new RegExp(`id="flash">${id}: deleted from the queue`));
    assert.match(afterDelete.body, /id="no-waiting"/);
    assert.deepEqual(await b.bridge.spool.list(), []);
    await act('delete');
    assert.match(
      (await request(`${base}/queue`, { headers: { Cookie: cookie } })).body,
      /class="flash-bad" id="flash">queue delete: no message with id/,
    );
  } finally {
    await b.stop();
    await world.close();
  }
});

const external = Object.values(networkInterfaces())
  .flat()
  .find((i) => i && !i.internal && i.family === 'IPv4');

test('loopback-only console on 0.0.0.0: a request from a non-loopback address is refused', {
  skip: external ? false : 'no non-loopback IPv4 interface',
}, async () => {
  const world = await startFakeWorld();
  const b = await startBridge(
    world,
    { http: { host: '0.0.0.0', port: 0, console: true, allowInsecureConsole: true } },
    { http: true },
  );
  try {
    const port = b.bridge.httpAddress!.port;
    const remote = await request(`http://${external!.address}:${port}/accounts`);
    assert.equal(remote.status, 403);
    assert.match(remote.body, /answers on this machine only/);
    assert.equal(
      (await request(`http://${external!.address}:${port}/healthz`)).status,
      200,
      'health endpoints stay reachable',
    );
    assert.equal(
      (await request(`http://127.0.0.1:${port}/accounts`)).status,
      401,
      'loopback without a session: the way to a link',
    );
    assert.equal(
      (await request(`http://127.0.0.1:${port}/accounts`, { headers: { Cookie: await linkSession(b) } })).status,
      200,
      'the link names 127.0.0.1',
    );
  } finally {
    await b.stop();
    await world.close();
  }
});

test('five wrong admin passwords from one address lock it out (429), even for the right password', {
  timeout: 60_000,
}, async () => {
  const world = await startFakeWorld();
  const b = await startBridge(
    world,
    { http: { port: 0, console: true, adminPasswordHash: await hashPassword('right-pw', FAKE_SCRYPT_COST) } },
    { http: true },
  );
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const login = (pw: string) =>
      request(`${base}/login`, {
        method: 'POST',
        body: `password=${pw}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: base },
      });
    for (let i = 0; i < 5; i++) assert.equal((await login('wrong')).status, 401);
    const locked = await login('right-pw');
    assert.equal(locked.status, 429);
    assert.match(locked.body, /Too many failed logins/);
    assert.equal(locked.headers['set-cookie'], undefined);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('forty concurrent wrong admin passwords: the KDF gate runs at most five, one at a time, and the right password is then locked out', {
  timeout: 120_000,
}, async () => {
  const world = await startFakeWorld();
  // The real cost (not FAKE_SCRYPT_COST): each check takes long enough for the 40 to overlap.
  const b = await startBridge(
    world,
    { http: { port: 0, console: true, adminPasswordHash: await hashPassword('right-pw') } },
    { http: true },
  );
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const login = (pw: string) =>
      request(`${base}/login`, {
        method: 'POST',
        body: `password=${pw}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: base },
      });
    const kdfBefore = kdfStats.calls;
    const gateBefore = kdfGate.stats.runs;
    // The gate's contract: one KDF in flight per client. Sampled on every turn of the event
    // loop the console runs on, for as long as the flood lasts.
    let maxInFlight = 0;
    let sampling = true;
    const sample = (): void => {
      maxInFlight = Math.max(maxInFlight, kdfGate.inFlight);
      if (sampling) setImmediate(sample);
    };
    sample();
    const flood = await Promise.all(Array.from({ length: 40 }, (_, i) => login(`wrong-${i}`)));
    sampling = false;
    const statuses = flood.map((r) => r.status);
    assert.ok(
      statuses.every((s) => s === 401 || s === 429),
      statuses.join(' '),
    );
    const kdfRuns = kdfStats.calls - kdfBefore;
    assert.ok(kdfRuns <= 5, `at most five password checks ran (ran ${kdfRuns})`);
    assert.equal(kdfGate.stats.runs - gateBefore, kdfRuns, 'every KDF ran through the shared gate');
    assert.ok(statuses.filter((s) => s === 401).length <= 5, statuses.join(' '));
    assert.equal(maxInFlight, 1, 'one KDF in flight for the one client');
    assert.equal(kdfGate.queued, 0, 'nothing left waiting in the gate');
    const locked = await login('right-pw');
    assert.equal(locked.status, 429);
    assert.match(locked.body, /Too many failed logins/);
    assert.equal(locked.headers['set-cookie'], undefined);
    assert.equal(kdfStats.calls - kdfBefore, kdfRuns, 'a locked-out login runs no KDF');
    // Basic auth goes through the same lockout.
    assert.equal(
      (
        await request(`${base}/accounts`, {
          headers: { Authorization: `Basic ${Buffer.from('admin:right-pw').toString('base64')}` },
        })
      ).status,
      303,
    );
    assert.equal(kdfStats.calls - kdfBefore, kdfRuns);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('Hold and Release from the console: an operator hold keeps a deferred message from being tried until released', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { http: { port: 0, console: true } }, { http: true });
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    world.gmail.script({
      stage: 'mail',
      reply: '451 4.3.0 Mail server temporarily rejected message.',
      count: Infinity,
    });
    await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['h@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'h@example.org' }),
    });
    await waitFor(
      async () => (await b.bridge.ops.listQueue()).some((r) => r.state === 'deferred'),
      10_000,
      'the message deferred',
    );
    const cookie = await linkSession(b);
    const first = await request(`${base}/queue`, { headers: { Cookie: cookie } });
    const csrf = csrfOf(first.body);
    const [row] = await b.bridge.ops.listQueue();
    assert.match(first.body, new RegExp(`action="/queue/${row.id}/hold"`), 'a deferred message offers Hold');
    const act = (what: string) =>
      request(`${base}/queue/${row.id}/${what}`, {
        method: 'POST',
        body: `csrf=${encodeURIComponent(csrf)}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cookie, Origin: base },
      });
    assert.equal((await act('hold')).status, 303);
    const held = await request(`${base}/queue`, { headers: { Cookie: cookie } });
    assert.match(held.body, /id="flash">/);
    assert.doesNotMatch(held.body, /class="flash-bad"/);
    assert.match(held.body, /class="st st-held">held<\/span><br><span class="muted">operator/);
    assert.match(held.body, new RegExp(`action="/queue/${row.id}/release"`), 'a held message offers Release');
    const r = (await b.bridge.ops.listQueue())[0];
    assert.equal(r.state, 'held');
    assert.equal(r.reason, 'operator');
    // Gmail works again; the held message still waits for the operator: even Retry is refused.
    world.gmail.clearScript();
    await act('retry');
    assert.match(
      (await request(`${base}/queue`, { headers: { Cookie: cookie } })).body,
      /class="flash-bad" id="flash">queue retry: .*held by an operator/,
    );
    assert.equal(world.gmail.messages.length, 0);
    assert.equal((await act('release')).status, 303);
    await world.gmail.waitForMessages(1, 15_000);
    assert.equal(world.gmail.messages[0].rcptTo[0], 'h@example.org');
  } finally {
    await b.stop();
    await world.close();
  }
});

// ---- Sign in with a code (device flow) for Microsoft delegated accounts ----

const SMTP_SEND = 'https://outlook.office.com/SMTP.Send';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

interface MsConsole extends Omit<MicrosoftConsole, 'close'> {
  base: string;
  cookie: string;
  csrf: string;
  /** Every body the console answered in this test (scanned for the device code and tokens). */
  bodies: string[];
  get(path: string, headers?: Record<string, string>): Promise<Res>;
  /** A POST as the console's own page sends it (session, CSRF token, same Origin), with overrides. */
  post(path: string, o?: { form?: Record<string, string>; headers?: Record<string, string> }): Promise<Res>;
  /** The user at the device login page of the fake identity platform. */
  enterCode(userCode: string, decision?: 'approve' | 'decline'): Promise<number>;
  /** Device-code requests (issued) and polls (device_code grant) the fake saw. */
  issued(): MsTokenRequest[];
  polls(code?: string): MsTokenRequest[];
  tokensFile(): Promise<string>;
}

/** The Microsoft console world (test/helpers/microsoft-console.ts) and a logged-in session. */
async function withMsConsole(fn: (x: MsConsole) => Promise<void>): Promise<void> {
  const mc = await startMicrosoftConsole();
  const { world, ms, b, close } = mc;
  const ca = readFileSync(world.caFile, 'utf8');
  const bodies: string[] = [];
  const tracked = async (p: Promise<Res>) => {
    const r = await p;
    bodies.push(r.body);
    return r;
  };
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const cookie = await linkSession(b);
    const csrf = csrfOf((await request(`${base}/accounts`, { headers: { Cookie: cookie } })).body);
    assert.ok(csrf);
    await fn({
      ...mc,
      base,
      cookie,
      csrf,
      bodies,
      get: (path, headers = {}) => tracked(request(`${base}${path}`, { headers: { Cookie: cookie, ...headers } })),
      post: (path, o = {}) =>
        tracked(
          request(`${base}${path}`, {
            method: 'POST',
            body: new URLSearchParams(o.form ?? { csrf }).toString(),
            headers: {
              'Content-Type': 'application/x-www-form-urlencoded',
              Cookie: cookie,
              Origin: base,
              ...o.headers,
            },
          }),
        ),
      enterCode: async (userCode, decision = 'approve') =>
        (
          await request(ms.deviceLoginUrl, {
            method: 'POST',
            ca,
            body: new URLSearchParams({ user_code: userCode, decision }).toString(),
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          })
        ).status,
      issued: () => ms.requests.filter((r) => r.grantType === 'devicecode'),
      polls: (code) => ms.requests.filter((r) => r.grantType === DEVICE_GRANT && (!code || r.deviceCode === code)),
      tokensFile: () => readFile(join(world.dir, 'state', 'tokens.json'), 'utf8'),
    });
  } finally {
    await close();
  }
}

const unescapeHtml = (s: string) => s.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c)));
const userCodeOf = (body: string) => /id="user-code"[^>]*>([^<]+)</.exec(body)?.[1] ?? '';
const verificationUrlOf = (body: string) => unescapeHtml(/id="verification-url" href="([^"]+)"/.exec(body)?.[1] ?? '');
const deviceStatusOf = (body: string) => unescapeHtml(/id="device-status"[^>]*>([^<]+)</.exec(body)?.[1] ?? '');

/** Reads the device page until its status leaves "waiting" (the page refreshes itself the same way). */
async function deviceOutcome(x: MsConsole, account = 'm365'): Promise<Res> {
  let last: Res | undefined;
  await waitFor(
    async () => {
      last = await x.get(`/accounts/${account}/authorize/device`);
      return last.status !== 200 || !/Waiting for you to enter the code/.test(last.body);
    },
    30_000,
    'the device sign-in to end',
  );
  return last!;
}

test('console device sign-in (Microsoft): the code and URL on the page, approved at the identity platform, the page turns to success, held mail is delivered', {
  timeout: 90_000,
}, async () => {
  await withMsConsole(async (x) => {
    // A message for m365 finds its grant gone: the account turns needs-reauth and the message waits.
    assert.match(await x.sendAsCopier('held for a code'), /^250 /);
    await waitFor(
      async () => /1 held \(needs-reauth\)/.test((await x.get('/accounts')).body),
      20_000,
      'm365 needs-reauth with its message held',
    );

    // Google's Authorize page says in one line why it has no code sign-in. Two starts at once
    // (a double click): the newer replaces the older, whose flow ends instead of waiting 15 minutes.
    const replaced = () => x.b.logs.filter((l) => l.includes('no redirect URL was pasted (input closed)')).length;
    const twice = await Promise.all([x.post('/accounts/office/authorize'), x.post('/accounts/office/authorize')]);
    assert.deepEqual(
      twice.map((r) => r.headers.location),
      ['/accounts/office/authorize', '/accounts/office/authorize'],
    );
    await waitFor(() => replaced() === 1, 10_000, 'the replaced paste attempt to end');
    const google = await x.get('/accounts/office/authorize');
    assert.match(
      google.body,
      /id="no-device">Sign in with a code is not offered for Google accounts: Google refuses the Gmail scope in the device flow\. Use the address above and paste where it lands\./,
    );
    assert.doesNotMatch(google.body, /--manual on a machine/, 'the page offers its own paste, not a CLI option');
    assert.doesNotMatch(google.body, /id="device-start"/);
    assert.equal((await x.post('/accounts/office/authorize/cancel')).status, 303);
    assert.match((await x.get('/accounts')).body, /id="flash">Authorization of office cancelled\./);
    await waitFor(() => replaced() === 2, 10_000, 'the cancelled paste attempt to end');

    // Microsoft's Authorize page offers it next to the paste flow.
    assert.equal((await x.post('/accounts/m365/authorize')).status, 303);
    const paste = await x.get('/accounts/m365/authorize');
    assert.match(paste.body, /id="consent-url"/);
    assert.match(
      paste.body,
      /<form method="post" action="\/accounts\/m365\/authorize\/device">.*id="device-start">Sign in with a code</s,
    );

    // Two starts at once (a double click, two tabs): one attempt, one code.
    const starts = await Promise.all([
      x.post('/accounts/m365/authorize/device'),
      x.post('/accounts/m365/authorize/device'),
    ]);
    for (const s of starts) {
      assert.equal(s.status, 303, s.body);
      assert.equal(s.headers.location, '/accounts/m365/authorize/device');
    }
    assert.equal(x.issued().length, 1, 'one device code asked for');
    const page = await x.get('/accounts/m365/authorize/device');
    assert.equal(page.status, 200);
    const userCode = userCodeOf(page.body);
    assert.match(userCode, /^[A-Z0-9]{6,}$/);
    assert.equal(verificationUrlOf(page.body), x.ms.deviceLoginUrl);
    assert.match(page.body, /<meta http-equiv="refresh" content="\d+">/);
    assert.equal(deviceStatusOf(page.body), 'Waiting for you to enter the code…');
    assert.match(page.body, /action="\/accounts\/m365\/authorize\/cancel"/);
    assert.match(String(page.headers['content-security-policy']), /^default-src 'none';/);
    assert.doesNotMatch(page.body, /<script/i);
    // The paste page of the cancelled paste attempt now leads to the code.
    assert.equal((await x.get('/accounts/m365/authorize')).headers.location, '/accounts/m365/authorize/device');

    // The daemon polls; the user enters the code at the identity platform.
    await waitFor(() => x.polls().some((p) => p.error?.startsWith('authorization_pending')), 20_000, 'a pending poll');
    assert.equal(await x.enterCode(userCode), 200);
    const done = await deviceOutcome(x);
    assert.equal(done.status, 200);
    assert.equal(
      deviceStatusOf(done.body),
      'Account m365 authorized as printer@contoso.com; its held mail is being sent.',
    );
    assert.doesNotMatch(done.body, /http-equiv="refresh"/, 'the finished page stops refreshing');
    // Shown once: the attempt is over.
    assert.equal((await x.get('/accounts/m365/authorize/device')).headers.location, '/accounts');

    // The held message leaves through Exchange with the new grant.
    await waitFor(() => x.exo.messages.length === 1, 20_000, 'the held message at Exchange');
    assert.deepEqual(x.exo.messages[0].rcptTo, ['boss@example.org']);
    assert.equal(x.exo.messages[0].authUser, MS_MAILBOX);
    assert.ok(
      x.b.logs.some((l) => l.includes('account authorized from the web console') && l.includes('"flow":"device"')),
    );

    // The device code (what redeems the grant) never reached a page or a log line.
    const deviceCode = x.issued()[0].deviceCode!;
    assert.ok(deviceCode.length > 20);
    assert.equal(x.refreshTokens.length, 2, 'the new grant, and its rotation when the held message was sent');
    assertNoSecrets(x.bodies.join('\n') + x.b.logs.join('\n'), [deviceCode, ...x.refreshTokens, ...secretsOf(x.world)]);
  });
});

test('console device sign-in failures: an expired code, a declined sign-in, a grant without SMTP.Send and a sign-in as another user each say why and store nothing; Google gets no code', {
  timeout: 90_000,
}, async () => {
  await withMsConsole(async (x) => {
    const before = await x.tokensFile();
    const startAndRead = async () => {
      const s = await x.post('/accounts/m365/authorize/device');
      assert.equal(s.headers.location, '/accounts/m365/authorize/device', s.body);
      const page = await x.get('/accounts/m365/authorize/device');
      const code = userCodeOf(page.body);
      assert.ok(code, page.body);
      return code;
    };

    // The code runs out before anyone enters it.
    x.ms.deviceCodeTtlSec = 2;
    await startAndRead();
    const expired = await deviceOutcome(x);
    assert.equal(
      deviceStatusOf(expired.body),
      'Authorization of m365 failed: the device code expired before the sign-in was completed; run authorize --device again',
    );
    assert.match(expired.body, /id="device-start">Get a new code</);
    x.ms.deviceCodeTtlSec = 900;

    // The user says no at the identity platform.
    assert.equal(await x.enterCode(await startAndRead(), 'decline'), 200);
    assert.equal(
      deviceStatusOf((await deviceOutcome(x)).body),
      'Authorization of m365 failed: the sign-in was declined',
    );

    // The consent leaves out SMTP.Send: the grant cannot send, so it is refused.
    x.ms.withheldScopes.add(SMTP_SEND);
    assert.equal(await x.enterCode(await startAndRead()), 200);
    assert.match(
      deviceStatusOf((await deviceOutcome(x)).body),
      /^Authorization of m365 failed: the grant lacks https:\/\/outlook\.office\.com\/SMTP\.Send \(not consented\?\).*nothing was stored$/,
    );
    assert.equal(x.refreshTokens.length, 1, 'the platform did issue a grant');
    x.ms.withheldScopes.delete(SMTP_SEND);

    // The code is entered by someone signed in as another user (an admin's browser session):
    // the platform issues that user a grant; the console refuses it, naming both addresses.
    x.ms.consentEmail = 'admin@contoso.com';
    assert.equal(await x.enterCode(await startAndRead()), 200);
    const wrongUser = await deviceOutcome(x);
    assert.match(
      deviceStatusOf(wrongUser.body),
      /^Authorization of m365 failed: you signed in as admin@contoso\.com, but account "m365" sends as printer@contoso\.com; nothing was stored\. Run authorize again and sign in as printer@contoso\.com/,
    );
    assert.match(wrongUser.body, /id="device-start">Get a new code</);
    assert.equal(x.refreshTokens.length, 2, "the platform did issue the admin's grant");

    assert.equal(await x.tokensFile(), before, 'nothing was stored');
    assert.ok(!x.b.logs.some((l) => l.includes('account authorized from the web console')));
    assert.equal(x.issued().length, 4);

    // Google: refused before anything starts (Google refuses the Gmail scope in the device flow).
    const g = await x.post('/accounts/office/authorize/device');
    assert.equal(g.headers.location, '/accounts');
    assert.match(
      (await x.get('/accounts')).body,
      /id="flash">Sign in with a code is not offered for Google accounts: Google refuses the Gmail scope in the device flow\./,
    );
    assert.equal(x.issued().length, 4);
    assertNoSecrets(x.bodies.join('\n') + x.b.logs.join('\n'), [
      ...x.issued().map((r) => r.deviceCode!),
      ...x.refreshTokens,
      ...secretsOf(x.world),
    ]);
  });
});

test('console device sign-in, attacker side: start and cancel need the session, the CSRF token and exact loopback Host/Origin; the status page needs the session; Cancel and stop end the polling', {
  timeout: 90_000,
}, async () => {
  await withMsConsole(async (x) => {
    const port = x.b.bridge.httpAddress!.port;
    const refusedStarts: Res[] = [
      // No session at all (a page elsewhere posting a form to 127.0.0.1).
      await request(`${x.base}/accounts/m365/authorize/device`, {
        method: 'POST',
        body: `csrf=${x.csrf}`,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: x.base },
      }),
      // The session's cookie without its CSRF token, or with another.
      await x.post('/accounts/m365/authorize/device', { form: {} }),
      await x.post('/accounts/m365/authorize/device', { form: { csrf: 'x'.repeat(43) } }),
      // The right token from another origin, or with no Origin/Referer at all.
      await x.post('/accounts/m365/authorize/device', { headers: { Origin: 'http://evil.example' } }),
      await x.post('/accounts/m365/authorize/device', { headers: { Origin: `http://127.0.0.1.nip.io:${port}` } }),
      await x.post('/accounts/m365/authorize/device', { headers: { Origin: '' } }),
      // DNS rebinding: a name the attacker controls as Host (and Origin).
      await x.post('/accounts/m365/authorize/device', {
        headers: { Host: `127.0.0.1.nip.io:${port}`, Origin: `http://127.0.0.1.nip.io:${port}` },
      }),
    ];
    for (const r of refusedStarts) assert.equal(r.status, 403, r.body);
    assert.equal(x.issued().length, 0, 'no refused request started a sign-in');

    // The status page: nothing without the session.
    const s = await x.post('/accounts/m365/authorize/device');
    assert.equal(s.status, 303);
    const mine = await x.get('/accounts/m365/authorize/device');
    const codeA = userCodeOf(mine.body);
    assert.ok(codeA);
    const anon = await request(`${x.base}/accounts/m365/authorize/device`);
    assert.equal(anon.status, 401);
    assert.ok(!anon.body.includes(codeA) && !anon.body.includes('verification-url'));
    const rebound = await x.get('/accounts/m365/authorize/device', { Host: `localhost.evil:${port}` });
    assert.equal(rebound.status, 403);
    assert.ok(!rebound.body.includes(codeA));

    // Cancel with a bad token or origin does nothing; the attempt goes on.
    assert.equal((await x.post('/accounts/m365/authorize/cancel', { form: {} })).status, 403);
    assert.equal(
      (await x.post('/accounts/m365/authorize/cancel', { headers: { Origin: 'http://evil.example' } })).status,
      403,
    );
    const deviceA = x.issued()[0].deviceCode!;
    await waitFor(() => x.polls(deviceA).length >= 1, 20_000, 'the first attempt polling');
    assert.equal(userCodeOf((await x.get('/accounts/m365/authorize/device')).body), codeA);

    // The owner's Cancel ends it: the page says so, and the daemon stops polling that code.
    const cancelled = await x.post('/accounts/m365/authorize/cancel');
    const cancelledAt = Date.now();
    assert.equal(cancelled.headers.location, '/accounts');
    assert.match((await x.get('/accounts')).body, /id="flash">Authorization of m365 cancelled\./);
    assert.equal((await x.get('/accounts/m365/authorize/device')).headers.location, '/accounts');
    await waitFor(
      () =>
        x.b.logs.some(
          (l) => l.includes('web console authorization failed') && l.includes('the device sign-in was cancelled'),
        ),
      10_000,
      'the cancelled attempt to end',
    );
    // Canary: a new attempt polls twice; the cancelled code was not polled after Cancel.
    assert.equal((await x.post('/accounts/m365/authorize/device')).status, 303);
    const deviceB = x.issued()[1].deviceCode!;
    await waitFor(() => x.polls(deviceB).length >= 2, 20_000, 'the new attempt polling twice');
    assert.deepEqual(
      x.polls(deviceA).filter((p) => p.at > cancelledAt),
      [],
      'no poll of the cancelled code after Cancel',
    );
    // The user would now enter the cancelled code: it was never redeemed, nothing is stored.
    assert.equal(x.refreshTokens.length, 0);

    // The daemon stops with the new attempt still waiting: it ends (no timer keeps this
    // process alive: the test file would not exit otherwise).
    const logged = x.b.logs.length;
    await x.b.stop();
    await waitFor(
      () =>
        x.b.logs
          .slice(logged)
          .some(
            (l) => l.includes('web console authorization failed') && l.includes('the device sign-in was cancelled'),
          ),
      10_000,
      'the attempt ended by the stop',
    );
    assertNoSecrets(x.bodies.join('\n') + x.b.logs.join('\n'), [deviceA, deviceB, ...secretsOf(x.world)]);
  });
});
