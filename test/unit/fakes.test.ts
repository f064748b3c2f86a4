import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import https from 'node:https';
import { createHash, createSign, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestPki, listenHttps, writePki, type TestPki } from '../../src/fakes/ca.js';
import { FakeTokenEndpoint } from '../../src/fakes/tokenEndpoint.js';
import { FakeGmail } from '../../src/fakes/gmail.js';
import nodemailer from 'nodemailer';

let pki: TestPki;
let tokens: FakeTokenEndpoint;

before(async () => {
  pki = await createTestPki();
  tokens = await FakeTokenEndpoint.start({ pki });
  tokens.registerClient('cid', 'csecret');
});
after(async () => {
  await tokens.close();
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: any;
  text: string;
}

function request(
  url: string,
  opts: { method?: string; form?: Record<string, string>; ca?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const body = opts.form ? new URLSearchParams(opts.form).toString() : undefined;
    const req = https.request(
      url,
      {
        method: opts.method ?? (body ? 'POST' : 'GET'),
        ca: opts.ca ?? pki.caCert,
        headers: body ? { 'content-type': 'application/x-www-form-urlencoded' } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: any;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json, text });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const post = (form: Record<string, string>): Promise<Reply> => request(tokens.url, { form });

function tlsConnect(port: number, opts: tls.ConnectionOptions): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts }, () => {
      resolve(s.authorized);
      s.destroy();
    });
    s.on('error', reject);
  });
}

test('test PKI: server cert verifies against the CA only', async () => {
  const server = tls.createServer({ cert: pki.cert, key: pki.key }, (s) => s.end());
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  try {
    assert.equal(await tlsConnect(port, { ca: pki.caCert }), true);
    // The IP SAN also works when connecting by address without SNI.
    assert.equal(await tlsConnect(port, { ca: pki.caCert, servername: undefined }), true);
    await assert.rejects(tlsConnect(port, {}), (err: NodeJS.ErrnoException) => {
      assert.match(String(err.code), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
      return true;
    });
    // A different CA must not be accepted either.
    const other = await createTestPki();
    await assert.rejects(tlsConnect(port, { ca: other.caCert }));
  } finally {
    server.close();
  }
});

test("listenHttps: the fakes' HTTPS server on 127.0.0.1 with the test cert; close() ends even a stalled request", async () => {
  const l = await listenHttps(pki);
  let bodyStarted!: () => void;
  const stalled = new Promise<void>((r) => (bodyStarted = r));
  l.server.on('request', (req, res) => {
    if (req.url === '/stall') {
      req.once('data', () => bodyStarted()); // never answers
      return;
    }
    res.end('hello');
  });
  assert.equal(l.server.address() && (l.server.address() as { address: string }).address, '127.0.0.1');
  const got = await new Promise<string>((resolve, reject) => {
    https
      .get(`https://localhost:${l.port}/`, { ca: pki.caCert }, (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve(t));
      })
      .on('error', reject);
  });
  assert.equal(got, 'hello');
  // An upload that stalls mid-body (what the Gmail API fake scripts) must not keep close() waiting.
  const req = https.request(`https://localhost:${l.port}/stall`, { method: 'POST', ca: pki.caCert, agent: false });
  req.on('error', () => {});
  req.write(Buffer.alloc(1024));
  await stalled;
  await l.close();
  await assert.rejects(tlsConnect(l.port, { ca: pki.caCert }), 'closed');
});

test('writePki writes PEM files with a private key file mode 0600', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fakes-pki-'));
  try {
    const files = await writePki(pki, join(dir, 'tls'));
    assert.equal(await readFile(files.caFile, 'utf8'), pki.caCert);
    assert.equal(await readFile(files.certFile, 'utf8'), pki.cert);
    assert.equal(await readFile(files.keyFile, 'utf8'), pki.key);
    assert.equal((await stat(files.keyFile)).mode & 0o777, 0o600);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('token endpoint: refresh grant ok, bad secret, revoked', async () => {
  tokens.addRefreshToken('rt-1', { clientId: 'cid', email: 'alice@example.com' });
  const ok = await post({
    grant_type: 'refresh_token',
    client_id: 'cid',
    client_secret: 'csecret',
    refresh_token: 'rt-1',
  });
  assert.equal(ok.status, 200);
  assert.match(ok.json.access_token, /^ya29\./);
  assert.equal(ok.json.expires_in, 3600);
  assert.equal(ok.json.token_type, 'Bearer');
  assert.equal(ok.json.scope, 'https://mail.google.com/');
  assert.equal(ok.json.refresh_token, undefined);
  assert.equal(tokens.tokenInfo(ok.json.access_token)?.email, 'alice@example.com');
  assert.equal(tokens.tokenInfo('ya29.bogus'), null);

  const bad = await post({
    grant_type: 'refresh_token',
    client_id: 'cid',
    client_secret: 'wrong',
    refresh_token: 'rt-1',
  });
  assert.equal(bad.status, 401);
  assert.equal(bad.json.error, 'invalid_client');

  tokens.revoke('rt-1');
  const revoked = await post({
    grant_type: 'refresh_token',
    client_id: 'cid',
    client_secret: 'csecret',
    refresh_token: 'rt-1',
  });
  assert.equal(revoked.status, 400);
  assert.deepEqual(revoked.json, { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' });

  const last = tokens.requests.at(-1)!;
  assert.equal(last.grantType, 'refresh_token');
  assert.equal(last.ok, false);
  assert.equal(last.error, 'invalid_grant');
  // Secrets are never recorded.
  assert.doesNotMatch(JSON.stringify(tokens.requests), /csecret|rt-1/);

  tokens.expireAccessTokens();
  assert.equal(tokens.tokenInfo(ok.json.access_token), null);
});

test('token endpoint: rotation, scripted failures and down()', async () => {
  tokens.addRefreshToken('rt-rot', { clientId: 'cid', email: 'bob@example.com' });
  const form = { grant_type: 'refresh_token', client_id: 'cid', client_secret: 'csecret', refresh_token: 'rt-rot' };
  tokens.rotateRefreshTokens = true;
  try {
    const r1 = await post(form);
    assert.equal(r1.status, 200);
    assert.ok(r1.json.refresh_token && r1.json.refresh_token !== 'rt-rot');
    // The new one works, the old one is still accepted during the grace period.
    assert.equal((await post({ ...form, refresh_token: r1.json.refresh_token })).status, 200);
    assert.equal((await post(form)).status, 200);
  } finally {
    tokens.rotateRefreshTokens = false;
  }

  tokens.failNext(1, 'http500');
  tokens.failNext(1, 'unauthorized_client');
  assert.equal((await post(form)).status, 500);
  const unauth = await post(form);
  assert.equal(unauth.status, 401);
  assert.equal(unauth.json.error, 'unauthorized_client');
  assert.equal((await post(form)).status, 200);

  tokens.down(true);
  await assert.rejects(post(form));
  tokens.down(false);
  assert.equal((await post(form)).status, 200);

  tokens.failNext(1, 'hang');
  const hung = await new Promise<string>((resolve) => {
    const req = https.request(tokens.url, { method: 'POST', ca: pki.caCert, timeout: 300 }, () => resolve('answered'));
    req.on('timeout', () => {
      req.destroy();
      resolve('timeout');
    });
    req.on('error', () => {});
    req.end(new URLSearchParams(form).toString());
  });
  assert.equal(hung, 'timeout');
});

function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

async function consent(challenge: string, redirectUri: string, extra: Record<string, string> = {}): Promise<URL> {
  const q = new URLSearchParams({
    client_id: 'cid',
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: 'https://mail.google.com/',
    state: 'st-123',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    access_type: 'offline',
    prompt: 'consent',
    ...extra,
  });
  const r = await request(`${tokens.authUrl}?${q}`);
  assert.equal(r.status, 302, r.text);
  return new URL(String(r.headers.location));
}

test('token endpoint: authorization code with PKCE', async () => {
  const redirectUri = 'http://127.0.0.1:45678/callback';
  tokens.consentEmail = 'carol@example.com';
  const { verifier, challenge } = pkce();
  // Like Google: an id_token only when openid was asked for.
  const withoutOpenid = new URL(await consent(challenge, redirectUri)).searchParams.get('code')!;
  const noId = await post({
    grant_type: 'authorization_code',
    code: withoutOpenid,
    code_verifier: verifier,
    redirect_uri: redirectUri,
    client_id: 'cid',
    client_secret: 'csecret',
  });
  assert.equal(noId.status, 200, noId.text);
  assert.equal(noId.json.id_token, undefined);
  const loc = await consent(challenge, redirectUri, { scope: 'https://mail.google.com/ openid email' });
  assert.equal(`${loc.origin}${loc.pathname}`, redirectUri);
  assert.equal(loc.searchParams.get('state'), 'st-123');
  const code = loc.searchParams.get('code')!;
  assert.ok(code);

  const ok = await post({
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: redirectUri,
    client_id: 'cid',
    client_secret: 'csecret',
  });
  assert.equal(ok.status, 200, ok.text);
  assert.match(ok.json.access_token, /^ya29\./);
  assert.ok(ok.json.refresh_token);
  const idPayload = JSON.parse(Buffer.from(ok.json.id_token.split('.')[1], 'base64url').toString());
  assert.equal(idPayload.email, 'carol@example.com');
  assert.deepEqual(tokens.refreshTokensFor('carol@example.com'), [noId.json.refresh_token, ok.json.refresh_token]);
  // The issued refresh token works for refresh grants.
  const refreshed = await post({
    grant_type: 'refresh_token',
    client_id: 'cid',
    client_secret: 'csecret',
    refresh_token: ok.json.refresh_token,
  });
  assert.equal(tokens.tokenInfo(refreshed.json.access_token)?.email, 'carol@example.com');
  // Codes are single use.
  const reuse = await post({
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: redirectUri,
    client_id: 'cid',
    client_secret: 'csecret',
  });
  assert.equal(reuse.json.error, 'invalid_grant');

  const wrongVerifier = await consent(pkce().challenge, redirectUri);
  const r2 = await post({
    grant_type: 'authorization_code',
    code: wrongVerifier.searchParams.get('code')!,
    code_verifier: verifier,
    redirect_uri: redirectUri,
    client_id: 'cid',
    client_secret: 'csecret',
  });
  assert.equal(r2.status, 400);
  assert.equal(r2.json.error, 'invalid_grant');

  const p3 = pkce();
  const wrongRedirect = await consent(p3.challenge, redirectUri);
  const r3 = await post({
    grant_type: 'authorization_code',
    code: wrongRedirect.searchParams.get('code')!,
    code_verifier: p3.verifier,
    redirect_uri: 'http://127.0.0.1:1/other',
    client_id: 'cid',
    client_secret: 'csecret',
  });
  assert.equal(r3.status, 400);
  assert.equal(r3.json.error, 'redirect_uri_mismatch');

  tokens.denyConsent = true;
  try {
    const denied = await consent(pkce().challenge, redirectUri);
    assert.equal(denied.searchParams.get('error'), 'access_denied');
    assert.equal(denied.searchParams.get('state'), 'st-123');
  } finally {
    tokens.denyConsent = false;
  }

  const plain = await request(
    `${tokens.authUrl}?${new URLSearchParams({ client_id: 'cid', redirect_uri: redirectUri, response_type: 'code', scope: 'https://mail.google.com/', state: 's', code_challenge: 'x', code_challenge_method: 'plain' })}`,
  );
  assert.equal(plain.status, 400);
  const badScope = await request(
    `${tokens.authUrl}?${new URLSearchParams({ client_id: 'cid', redirect_uri: redirectUri, response_type: 'code', scope: 'https://www.googleapis.com/auth/gmail.readonly', state: 's', code_challenge: 'x', code_challenge_method: 'S256' })}`,
  );
  assert.equal(badScope.status, 400);
});

function signJwt(keyJson: string, claims: Record<string, unknown>): string {
  const key = JSON.parse(keyJson) as { private_key: string; private_key_id: string };
  const enc = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  const data = `${enc({ alg: 'RS256', typ: 'JWT', kid: key.private_key_id })}.${enc(claims)}`;
  const sig = createSign('RSA-SHA256').update(data).sign(key.private_key).toString('base64url');
  return `${data}.${sig}`;
}

test('token endpoint: service-account JWT grant with domain-wide delegation', async () => {
  const { keyJson } = tokens.createServiceAccount('bridge@fake-project.iam.gserviceaccount.com');
  const key = JSON.parse(keyJson);
  assert.equal(key.type, 'service_account');
  assert.equal(key.token_uri, tokens.url);
  tokens.allowSubject(key.client_email, 'dave@example.com');
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: key.client_email,
    scope: 'https://mail.google.com/',
    aud: tokens.url,
    iat: now,
    exp: now + 3600,
    sub: 'dave@example.com',
  };
  const grant = (assertion: string): Promise<Reply> =>
    post({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion });

  const ok = await grant(signJwt(keyJson, claims));
  assert.equal(ok.status, 200, ok.text);
  assert.equal(tokens.tokenInfo(ok.json.access_token)?.email, 'dave@example.com');
  // google-auth-library always uses Google's audience; accept it too.
  assert.equal((await grant(signJwt(keyJson, { ...claims, aud: 'https://oauth2.googleapis.com/token' }))).status, 200);

  const wrongSub = await grant(signJwt(keyJson, { ...claims, sub: 'eve@example.com' }));
  assert.equal(wrongSub.status, 401);
  assert.equal(wrongSub.json.error, 'unauthorized_client');
  assert.equal(tokens.requests.at(-1)?.sub, 'eve@example.com');

  const expired = await grant(signJwt(keyJson, { ...claims, iat: now - 7200, exp: now - 3600 }));
  assert.equal(expired.json.error, 'invalid_grant');
  const other = tokens.createServiceAccount('other@fake-project.iam.gserviceaccount.com');
  const forged = await grant(signJwt(other.keyJson, claims));
  assert.equal(forged.status, 400);
  assert.equal(forged.json.error, 'invalid_grant');
});

// ---- FakeGmail ----

function mailer(gmail: FakeGmail, user: string, accessToken: string, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({
    host: 'localhost',
    port: gmail.port,
    secure: gmail.mode === 'implicit',
    requireTLS: gmail.mode === 'starttls',
    auth: { type: 'OAuth2', user, accessToken },
    tls: { ca: pki.caCert },
    ...extra,
  } as any);
}

async function accessTokenFor(email: string): Promise<string> {
  const rt = `rt-${randomBytes(6).toString('hex')}`;
  tokens.addRefreshToken(rt, { clientId: 'cid', email });
  const r = await post({ grant_type: 'refresh_token', client_id: 'cid', client_secret: 'csecret', refresh_token: rt });
  return r.json.access_token;
}

// Lines starting with '.' check dot-unstuffing; the 8-bit bytes check nothing is re-encoded.
const RAW = Buffer.from(
  'From: scanner@example.com\r\nTo: boss@example.com\r\nSubject: scan\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n.leading dot\r\n..two dots\r\nGr\u00fc\u00dfe\r\n',
  'utf8',
);

/** Minimal line-based SMTP client over implicit TLS for checking exact server replies. */
async function smtpDialog(port: number, lines: string[]): Promise<string[]> {
  const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.caCert });
  const replies: string[] = [];
  let buf = '';
  let wake: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    wake?.();
  });
  socket.on('close', () => wake?.());
  const readReply = async (): Promise<string> => {
    for (;;) {
      const m = /(^|\r\n)(\d{3}) [^\r\n]*\r\n/.exec(buf);
      if (m) {
        const end = m.index + m[0].length;
        const reply = buf.slice(0, end).trimEnd();
        buf = buf.slice(end);
        return reply;
      }
      if (socket.destroyed) return '';
      await new Promise<void>((r) => (wake = r));
    }
  };
  replies.push(await readReply());
  for (const line of lines) {
    socket.write(line + '\r\n');
    replies.push(await readReply());
  }
  socket.destroy();
  return replies;
}

test('FakeGmail: accepts a valid bearer via nodemailer and keeps the bytes exact', async () => {
  const gmail = await FakeGmail.start({ pki, tokens });
  try {
    const token = await accessTokenFor('scanner@example.com');
    const t = mailer(gmail, 'scanner@example.com', token);
    const info = await t.sendMail({
      envelope: { from: 'scanner@example.com', to: ['boss@example.com', 'b2@example.com'] },
      raw: RAW,
    });
    t.close();
    assert.match(info.response, /^250 2\.0\.0 OK/);
    await gmail.waitForMessages(1, 2000);
    const m = gmail.messages[0];
    assert.equal(m.mailFrom, 'scanner@example.com');
    assert.deepEqual(m.rcptTo, ['boss@example.com', 'b2@example.com']);
    assert.ok(m.raw.equals(RAW), `raw differs: ${JSON.stringify(m.raw.toString())}`);
    assert.equal(m.authUser, 'scanner@example.com');
    assert.equal(m.secure, true);
    assert.match(m.tlsProtocol ?? '', /^TLSv1\.[23]$/);
    assert.deepEqual(gmail.auths, [{ user: 'scanner@example.com', ok: true }]);
    assert.equal(gmail.connections, 1);
  } finally {
    await gmail.close();
  }
});

test('FakeGmail: rejects an invalid or foreign bearer with 535 after the XOAUTH2 challenge', async () => {
  const gmail = await FakeGmail.start({ pki, tokens });
  try {
    const send = (user: string, token: string) =>
      mailer(gmail, user, token).sendMail({ envelope: { from: user, to: ['x@example.com'] }, raw: RAW });
    await assert.rejects(send('scanner@example.com', 'ya29.not-issued'), (err: any) => {
      assert.equal(err.responseCode, 535);
      assert.match(err.response, /BadCredentials/);
      return true;
    });
    // A valid token for someone else is refused too.
    const other = await accessTokenFor('someone@example.com');
    await assert.rejects(send('scanner@example.com', other), (err: any) => err.responseCode === 535);
    // An expired token is refused.
    const token = await accessTokenFor('scanner@example.com');
    tokens.expireAccessTokens();
    await assert.rejects(send('scanner@example.com', token), (err: any) => err.responseCode === 535);
    assert.equal(gmail.messages.length, 0);
    // nodemailer retries a failed XOAUTH2 once per send, so at least 3 failed attempts.
    assert.ok(gmail.auths.length >= 3);
    assert.ok(gmail.auths.every((a) => !a.ok && a.user === 'scanner@example.com'));

    // The exact Gmail dialogue, and PLAIN or MAIL without AUTH refused.
    const bad = Buffer.from('user=scanner@example.com\x01auth=Bearer ya29.nope\x01\x01').toString('base64');
    const replies = await smtpDialog(gmail.port, [
      'EHLO client.example',
      `AUTH XOAUTH2 ${bad}`,
      '',
      'AUTH PLAIN ' + Buffer.from('\0u\0p').toString('base64'),
      'MAIL FROM:<a@example.com>',
    ]);
    assert.match(replies[0], /^220 smtp\.gmail\.com ESMTP/);
    for (const cap of ['SIZE 35882577', '8BITMIME', 'SMTPUTF8', 'PIPELINING', 'AUTH LOGIN PLAIN XOAUTH2']) {
      assert.ok(replies[1].includes(cap), `EHLO lacks ${cap}: ${replies[1]}`);
    }
    const challenge = /^334 (.+)$/.exec(replies[2]);
    assert.ok(challenge, replies[2]);
    assert.deepEqual(JSON.parse(Buffer.from(challenge[1], 'base64').toString()), {
      status: '400',
      schemes: 'Bearer',
      scope: 'https://mail.google.com/',
    });
    assert.match(
      replies[3],
      /^535-5\.7\.8 Username and Password not accepted\. For more information, go to\r\n535 5\.7\.8 {2}https:\/\/support\.google\.com\/mail\/\?p=BadCredentials/,
    );
    assert.match(replies[4], /^535 5\.7\.8 /);
    assert.match(replies[5], /^530 5\.7\.0 Authentication Required/);
  } finally {
    await gmail.close();
  }
});

test('FakeGmail: scripted replies at connect, rcpt and data; down() and back up', async () => {
  const gmail = await FakeGmail.start({ pki, tokens });
  try {
    const token = await accessTokenFor('scanner@example.com');
    const send = (to: string[]) =>
      mailer(gmail, 'scanner@example.com', token).sendMail({ envelope: { from: 'scanner@example.com', to }, raw: RAW });

    gmail.script({ stage: 'data', reply: '421 4.7.0 Try again later, closing connection.' });
    await assert.rejects(send(['boss@example.com']), (err: any) => {
      assert.equal(err.responseCode, 421);
      assert.match(err.response, /4\.7\.0 Try again later/);
      return true;
    });
    assert.equal(gmail.messages.length, 0);

    gmail.script({
      stage: 'rcpt',
      rcpt: 'ghost@example.com',
      reply: '550 5.1.1 The email account that you tried to reach does not exist.',
      count: Infinity,
    });
    const info = await send(['boss@example.com', 'ghost@example.com']);
    assert.deepEqual(info.accepted, ['boss@example.com']);
    assert.deepEqual(info.rejected, ['ghost@example.com']);
    assert.deepEqual(gmail.messages[0].rcptTo, ['boss@example.com']);

    gmail.script({ stage: 'connect', reply: '421 4.7.0 Try again later, closing connection.' });
    const greeting = await smtpDialog(gmail.port, []);
    assert.equal(greeting[0], '421 4.7.0 Try again later, closing connection.');

    gmail.script({ stage: 'mail', reply: '550 5.4.5 Daily user sending limit exceeded.' });
    await assert.rejects(
      send(['boss@example.com']),
      (err: any) => err.responseCode === 550 && /5\.4\.5/.test(err.response),
    );

    gmail.down(true);
    await assert.rejects(
      send(['boss@example.com']),
      (err: any) => err.code === 'ESOCKET' || err.code === 'ECONNECTION',
    );
    gmail.down(false);
    await send(['boss@example.com']);
    assert.equal(gmail.messages.length, 2);
  } finally {
    await gmail.close();
  }
});

test('FakeGmail: STARTTLS mode requires TLS before AUTH', async () => {
  const gmail = await FakeGmail.start({ pki, tokens, mode: 'starttls' });
  try {
    const token = await accessTokenFor('scanner@example.com');
    await mailer(gmail, 'scanner@example.com', token).sendMail({
      envelope: { from: 'scanner@example.com', to: ['boss@example.com'] },
      raw: RAW,
    });
    await gmail.waitForMessages(1, 2000);
    assert.equal(gmail.messages[0].secure, true);
    assert.match(gmail.messages[0].tlsProtocol ?? '', /^TLSv1\.[23]$/);
    // A client that skips STARTTLS cannot authenticate.
    const plain = mailer(gmail, 'scanner@example.com', token, { requireTLS: false, ignoreTLS: true });
    await assert.rejects(
      plain.sendMail({ envelope: { from: 'scanner@example.com', to: ['boss@example.com'] }, raw: RAW }),
      (err: any) => {
        assert.equal(err.responseCode, 530, String(err.response));
        assert.match(err.response, /5\.7\.0 Must issue a STARTTLS command first/);
        return true;
      },
    );
    assert.equal(gmail.messages.length, 1);
    // An unverifiable certificate is refused by a verifying client.
    const noCa = mailer(gmail, 'scanner@example.com', token, { tls: {} });
    await assert.rejects(
      noCa.sendMail({ envelope: { from: 'scanner@example.com', to: ['boss@example.com'] }, raw: RAW }),
      /unable to verify/,
    );
    assert.equal(gmail.messages.length, 1);
  } finally {
    await gmail.close();
  }
});

test('FakeGmail: maxMessagesPerConnection closes a reused connection with 421', async () => {
  const gmail = await FakeGmail.start({ pki, tokens, maxMessagesPerConnection: 1 });
  const token = await accessTokenFor('scanner@example.com');
  const pool = mailer(gmail, 'scanner@example.com', token, { pool: true, maxConnections: 1 });
  try {
    const send = () => pool.sendMail({ envelope: { from: 'scanner@example.com', to: ['boss@example.com'] }, raw: RAW });
    await send();
    await assert.rejects(send(), (err: any) => err.responseCode === 421);
    await send();
    assert.equal(gmail.messages.length, 2);
    assert.notEqual(gmail.messages[0].connectionId, gmail.messages[1].connectionId);
    assert.ok(gmail.connections >= 2);
  } finally {
    pool.close();
    await gmail.close();
  }
});

test('FakeGmail: records BODY=8BITMIME and SMTPUTF8 from MAIL FROM', async () => {
  const gmail = await FakeGmail.start({ pki, tokens });
  try {
    const token = await accessTokenFor('scanner@example.com');
    const auth = Buffer.from(`user=scanner@example.com\x01auth=Bearer ${token}\x01\x01`).toString('base64');
    const replies = await smtpDialog(gmail.port, [
      'EHLO client.example',
      `AUTH XOAUTH2 ${auth}`,
      'MAIL FROM:<scanner@example.com> BODY=8BITMIME SMTPUTF8',
      'RCPT TO:<jürgen@example.com>',
      'DATA',
      'Subject: x\r\n\r\n..hi\r\n.',
      'QUIT',
    ]);
    assert.match(replies[2], /^235/);
    assert.match(replies[6], /^250 2\.0\.0 OK/);
    const m = gmail.messages[0];
    assert.equal(m.bodyType, '8bitmime');
    assert.equal(m.smtputf8, true);
    assert.deepEqual(m.rcptTo, ['jürgen@example.com']);
    assert.equal(m.raw.toString('utf8'), 'Subject: x\r\n\r\n.hi\r\n');
  } finally {
    await gmail.close();
  }
});

test('FakeGmail: AUTH PLAIN works only for a password set with acceptPassword', async () => {
  const gmail = await FakeGmail.start({ pki, tokens });
  const plain = (user: string, pass: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;
  try {
    const before = await smtpDialog(gmail.port, [
      'EHLO client.example',
      plain('scanner@example.com', 'app-pass'),
      'QUIT',
    ]);
    assert.match(before[2], /^535 5\.7\.8/);
    gmail.acceptPassword('scanner@example.com', 'app-pass');
    const wrong = await smtpDialog(gmail.port, ['EHLO client.example', plain('scanner@example.com', 'other'), 'QUIT']);
    assert.match(wrong[2], /^535 5\.7\.8/);
    const ok = await smtpDialog(gmail.port, ['EHLO client.example', plain('scanner@example.com', 'app-pass'), 'QUIT']);
    assert.match(ok[2], /^235/);
    assert.deepEqual(
      gmail.auths.map((a) => a.ok),
      [false, false, true],
    );
  } finally {
    await gmail.close();
  }
});
