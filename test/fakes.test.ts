import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import https from 'node:https';
import { createHash, createSign, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestPki, writePki, type TestPki } from '../src/fakes/ca.js';
import { FakeTokenEndpoint } from '../src/fakes/tokenEndpoint.js';

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

function request(url: string, opts: { method?: string; form?: Record<string, string>; ca?: string } = {}): Promise<Reply> {
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
  const ok = await post({ grant_type: 'refresh_token', client_id: 'cid', client_secret: 'csecret', refresh_token: 'rt-1' });
  assert.equal(ok.status, 200);
  assert.match(ok.json.access_token, /^ya29\./);
  assert.equal(ok.json.expires_in, 3600);
  assert.equal(ok.json.token_type, 'Bearer');
  assert.equal(ok.json.scope, 'https://mail.google.com/');
  assert.equal(ok.json.refresh_token, undefined);
  assert.equal(tokens.tokenInfo(ok.json.access_token)?.email, 'alice@example.com');
  assert.equal(tokens.tokenInfo('ya29.bogus'), null);

  const bad = await post({ grant_type: 'refresh_token', client_id: 'cid', client_secret: 'wrong', refresh_token: 'rt-1' });
  assert.equal(bad.status, 401);
  assert.equal(bad.json.error, 'invalid_client');

  tokens.revoke('rt-1');
  const revoked = await post({ grant_type: 'refresh_token', client_id: 'cid', client_secret: 'csecret', refresh_token: 'rt-1' });
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
  const loc = await consent(challenge, redirectUri);
  assert.equal(`${loc.origin}${loc.pathname}`, redirectUri);
  assert.equal(loc.searchParams.get('state'), 'st-123');
  const code = loc.searchParams.get('code')!;
  assert.ok(code);

  const ok = await post({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri, client_id: 'cid', client_secret: 'csecret' });
  assert.equal(ok.status, 200, ok.text);
  assert.match(ok.json.access_token, /^ya29\./);
  assert.ok(ok.json.refresh_token);
  const idPayload = JSON.parse(Buffer.from(ok.json.id_token.split('.')[1], 'base64url').toString());
  assert.equal(idPayload.email, 'carol@example.com');
  assert.deepEqual(tokens.refreshTokensFor('carol@example.com'), [ok.json.refresh_token]);
  // The issued refresh token works for refresh grants.
  const refreshed = await post({ grant_type: 'refresh_token', client_id: 'cid', client_secret: 'csecret', refresh_token: ok.json.refresh_token });
  assert.equal(tokens.tokenInfo(refreshed.json.access_token)?.email, 'carol@example.com');
  // Codes are single use.
  const reuse = await post({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri, client_id: 'cid', client_secret: 'csecret' });
  assert.equal(reuse.json.error, 'invalid_grant');

  const wrongVerifier = await consent(pkce().challenge, redirectUri);
  const r2 = await post({ grant_type: 'authorization_code', code: wrongVerifier.searchParams.get('code')!, code_verifier: verifier, redirect_uri: redirectUri, client_id: 'cid', client_secret: 'csecret' });
  assert.equal(r2.status, 400);
  assert.equal(r2.json.error, 'invalid_grant');

  const p3 = pkce();
  const wrongRedirect = await consent(p3.challenge, redirectUri);
  const r3 = await post({ grant_type: 'authorization_code', code: wrongRedirect.searchParams.get('code')!, code_verifier: p3.verifier, redirect_uri: 'http://127.0.0.1:1/other', client_id: 'cid', client_secret: 'csecret' });
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

  const plain = await request(`${tokens.authUrl}?${new URLSearchParams({ client_id: 'cid', redirect_uri: redirectUri, response_type: 'code', scope: 'https://mail.google.com/', state: 's', code_challenge: 'x', code_challenge_method: 'plain' })}`);
  assert.equal(plain.status, 400);
  const badScope = await request(`${tokens.authUrl}?${new URLSearchParams({ client_id: 'cid', redirect_uri: redirectUri, response_type: 'code', scope: 'https://www.googleapis.com/auth/gmail.send', state: 's', code_challenge: 'x', code_challenge_method: 'S256' })}`);
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
  const claims = { iss: key.client_email, scope: 'https://mail.google.com/', aud: tokens.url, iat: now, exp: now + 3600, sub: 'dave@example.com' };
  const grant = (assertion: string): Promise<Reply> => post({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion });

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
