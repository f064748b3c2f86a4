// Token service against the fake Google token endpoint over real HTTPS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { TokenService, NeedsReauthError } from '../../src/oauth/service.js';
import { TokenStore } from '../../src/oauth/store.js';
import { GMAIL_FULL_SCOPE as GMAIL_SCOPE } from '../../src/providers/google/scopes.js';
import { DEFAULT_TIMEOUT_MS } from '../../src/providers/http.js';
import { tokenImport, tokenRefresh, tokenStatus } from '../../src/cli/token.js';
import { createLogger, nullLogger } from '../../src/log/logger.js';
import type { HealthState } from '../../src/types.js';
import { oauthWorld, collect } from '../helpers/oauth.js';
import { waitFor, sleep } from '../helpers/wait.js';

const refreshes = (w: { fake: { requests: { grantType: string }[] } }) =>
  w.fake.requests.filter((r) => r.grantType === 'refresh_token').length;

test('refreshes over HTTPS trusting oauth.caFile; without it the endpoint is not trusted', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const tok = await svc.getAccessToken('office');
    assert.equal(w.fake.tokenInfo(tok)?.email, w.email);
    assert.equal(w.fake.requests.at(-1)?.ok, true);
    assert.equal(svc.state('office'), 'ok');

    const untrusting = new TokenService({
      config: w.config({ oauth: { caFile: undefined } }),
      log: nullLogger,
      http: { timeoutMs: 3000 },
    });
    await untrusting.init();
    const before = w.fake.requests.length;
    await assert.rejects(
      untrusting.refresh('office'),
      (e: Error) => !(e instanceof NeedsReauthError) && /certificate|self.signed|issuer/i.test(e.message),
    );
    assert.equal(w.fake.requests.length, before, 'no request got past TLS verification');
  } finally {
    await w.close();
  }
});

test('50 concurrent getAccessToken calls cause exactly one token request', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const tokens = await Promise.all(Array.from({ length: 50 }, () => svc.getAccessToken('office')));
    assert.equal(refreshes(w), 1);
    assert.equal(new Set(tokens).size, 1);
    // Cached afterwards. A forced refresh (the upstream rejected the token) gets a new one
    // however young the old one is; forced callers right after it share that answer.
    assert.equal(await svc.getAccessToken('office'), tokens[0]);
    const forced = await Promise.all(Array.from({ length: 20 }, () => svc.getAccessToken('office', { force: true })));
    assert.equal(refreshes(w), 2);
    assert.equal(new Set(forced).size, 1);
    assert.notEqual(forced[0], tokens[0]);
    assert.equal(
      await svc.getAccessToken('office', { force: true }),
      forced[0],
      'a rejection moments later gets the token that answered the last one',
    );
    assert.equal(refreshes(w), 2);
    // 50 concurrent CLI refreshes: still one request.
    await Promise.all(Array.from({ length: 50 }, () => svc.refresh('office')));
    assert.equal(refreshes(w), 3);
    // Overlapping scheduled passes share one run.
    await Promise.all([svc.runScheduledRefresh(), svc.runScheduledRefresh()]);

    // Service accounts have no library-side de-duplication: ours alone must hold.
    const sa = 'dedup@fake-project.iam.gserviceaccount.com';
    const keyFile = join(w.dir, 'sa.json');
    writeFileSync(keyFile, w.fake.createServiceAccount(sa).keyJson, { mode: 0o600 });
    w.fake.allowSubject(sa, w.email);
    const saSvc = new TokenService({
      config: w.config({
        accounts: [
          {
            name: 'ws',
            email: w.email,
            oauth: { type: 'service-account', keyFile, subject: w.email, tokenUrl: w.fake.url, caFile: w.caFile },
          },
        ],
      }),
      log: w.log,
    });
    await saSvc.init();
    const saTokens = await Promise.all(Array.from({ length: 50 }, () => saSvc.getAccessToken('ws')));
    assert.equal(new Set(saTokens).size, 1);
    assert.equal(w.fake.requests.filter((r) => r.grantType.endsWith('jwt-bearer')).length, 1);
  } finally {
    await w.close();
  }
});

test('scheduled pass refreshes ahead of expiry and idle accounts, backs off when the endpoint fails', async () => {
  const w = await oauthWorld({ accessTokenTtlSec: 3600 });
  try {
    let clock = Date.now();
    const svc = new TokenService({
      config: w.config({ tokens: { refreshAhead: '10m' } }),
      log: w.log,
      now: () => clock,
    });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const t1 = await svc.getAccessToken('office');
    assert.equal(refreshes(w), 1);

    clock += 1000e3; // 2600 s left: not due
    await svc.runScheduledRefresh();
    assert.equal(refreshes(w), 1);

    clock += 2100e3; // 500 s left < refreshAhead
    await svc.runScheduledRefresh();
    assert.equal(refreshes(w), 2);
    const t2 = await svc.getAccessToken('office');
    assert.notEqual(t2, t1);
    assert.equal(refreshes(w), 2, 'the refreshed token is served from cache');

    // Endpoint failing: the pass fails, the still-valid token keeps being served.
    clock += 3100e3; // 500 s left again
    w.fake.failNext(3, 'http500');
    const before = w.fake.requests.length;
    await svc.runScheduledRefresh();
    const tried = w.fake.requests.length - before;
    assert.equal(tried, 3, 'one attempt = the request plus the two short library retries');
    assert.equal(await svc.getAccessToken('office'), t2);
    const st = svc.status()[0];
    assert.equal(st.state, 'ok');
    assert.match(st.lastError ?? '', /500/);
    // Backing off: the next passes do not touch the endpoint.
    await svc.runScheduledRefresh();
    await svc.runScheduledRefresh();
    assert.equal(w.fake.requests.length - before, tried);
    clock += 10e3; // past the first backoff step
    await svc.runScheduledRefresh();
    assert.equal(w.fake.requests.at(-1)?.ok, true);
    assert.notEqual(await svc.getAccessToken('office'), t2);
    assert.equal(svc.status()[0].lastError, null);

    // Idle: a long-lived access token is still refreshed after ~20 h without a refresh.
    w.fake.accessTokenTtlSec = 200_000;
    await svc.refresh('office');
    const n = refreshes(w);
    clock += 3600e3;
    await svc.runScheduledRefresh();
    assert.equal(refreshes(w), n, 'not idle yet');
    clock += 19.5 * 3600e3;
    await svc.runScheduledRefresh();
    assert.equal(refreshes(w), n + 1, 'idle account refreshed');
  } finally {
    await w.close();
  }
});

test('the cron job refreshes short-lived tokens ahead of expiry by itself', async () => {
  const w = await oauthWorld({ accessTokenTtlSec: 4 });
  const svc = new TokenService({
    config: w.config({ tokens: { refreshCron: '*/1 * * * * *', refreshAhead: '2s' } }),
    log: w.log,
  });
  try {
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const t1 = await svc.getAccessToken('office');
    svc.startSchedule();
    await waitFor(() => refreshes(w) >= 3, 8000, 'two scheduled refreshes');
    svc.stop();
    const t = await svc.getAccessToken('office');
    assert.notEqual(t, t1);
    assert.ok(w.fake.tokenInfo(t), 'the served token is valid at the endpoint');
    assert.ok(w.fake.requests.every((r) => r.ok));
    const n = refreshes(w);
    // time is the subject: the job runs every second; none may run in 1.5 s after stop().
    await sleep(1500);
    assert.ok(refreshes(w) <= n + 1, 'stop() ends the schedule');
  } finally {
    svc.stop();
    await w.close();
  }
});

test('tokens.refreshCron: 5 or 6 fields are taken, two services schedule side by side; anything else is refused naming the key', async () => {
  const w = await oauthWorld();
  try {
    for (const ok of ['*/5 * * * *', '*/1 * * * * *', '0 3 * * 1-5']) w.config({ tokens: { refreshCron: ok } });
    // Two services in one process (a test, a reload) each schedule their own job.
    const one = new TokenService({ config: w.config(), log: w.log });
    const two = new TokenService({ config: w.config(), log: w.log });
    await one.init();
    await two.init();
    try {
      one.startSchedule();
      assert.doesNotThrow(() => two.startSchedule());
    } finally {
      one.stop();
      two.stop();
    }
    for (const bad of ['every 5 minutes', '*/5 * * *', '61 * * * *'])
      assert.throws(
        () => w.config({ tokens: { refreshCron: bad } }),
        (e: Error) => /refreshCron/.test(e.message) && /expected a cron expression like/.test(e.message),
        bad,
      );
  } finally {
    await w.close();
  }
});

test('a rotated refresh token is persisted before use and survives a restart', async () => {
  const w = await oauthWorld();
  try {
    w.fake.rotateRefreshTokens = true;
    const svc = new TokenService({ config: w.config(), log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    await svc.getAccessToken('office');
    // Already on disk the moment the access token was handed out.
    const store = new TokenStore({ stateDir: w.stateDir, key: null });
    const rotated = (await store.load()).accounts.office.refreshToken!;
    assert.notEqual(rotated, w.refreshToken);
    assert.ok(w.fake.refreshTokensFor(w.email).includes(rotated));
    // The previous version is kept as a backup: it is the write that saved the rotated token,
    // made before the access token from the same response was recorded.
    const bak = JSON.parse(readFileSync(join(w.stateDir, 'tokens.json.bak'), 'utf8')) as {
      accounts: Record<string, { refreshToken: string; accessToken?: string }>;
    };
    assert.equal(bak.accounts.office.refreshToken, rotated);
    assert.equal(bak.accounts.office.accessToken, undefined);

    // Restart with the old token dead: only the rotated one can work.
    w.fake.revoke(w.refreshToken);
    w.fake.rotateRefreshTokens = false;
    const svc2 = new TokenService({ config: w.config(), log: w.log });
    await svc2.init();
    const tok = await svc2.getAccessToken('office');
    assert.ok(w.fake.tokenInfo(tok));
    assert.equal(svc2.state('office'), 'ok');
  } finally {
    await w.close();
  }
});

test('invalid_grant: needs-reauth, one loud line, no retry storm; token import makes it healthy again', async () => {
  const w = await oauthWorld();
  try {
    const cfg = w.config();
    const svc = new TokenService({ config: cfg, log: w.log });
    const changes: [string, HealthState][] = [];
    svc.onChange((a, s) => changes.push([a, s]));
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    w.fake.revoke(w.refreshToken);
    await assert.rejects(svc.getAccessToken('office'), NeedsReauthError);
    assert.equal(svc.state('office'), 'needs-reauth');
    assert.deepEqual(changes.at(-1), ['office', 'needs-reauth']);
    const n = w.fake.requests.length;
    for (let i = 0; i < 20; i++) await assert.rejects(svc.getAccessToken('office'), NeedsReauthError);
    await assert.rejects(svc.getAccessToken('office', { force: true }), NeedsReauthError);
    await svc.runScheduledRefresh();
    assert.equal(w.fake.requests.length, n, 'no endpoint calls while needs-reauth');
    const loud = w
      .logText()
      .split('\n')
      .filter((l) => l.includes('needs re-authorization'));
    assert.equal(loud.length, 1);
    assert.match(loud[0], /xoauth2-bridge authorize office/);
    assert.match(loud[0], /"level":"error"/);

    // Survives a restart without calling the endpoint.
    const again = new TokenService({ config: cfg, log: nullLogger });
    await again.init();
    assert.equal(again.state('office'), 'needs-reauth');
    assert.equal(w.fake.requests.length, n);

    // `token status` (another process) sees it; exit 1 while unhealthy.
    const st = collect();
    assert.equal(await tokenStatus(cfg, { json: true }, st.stream), 1);
    const rows = JSON.parse(st.text()) as { account: string; state: string; lastError: string }[];
    assert.equal(rows[0].state, 'needs-reauth');
    assert.match(rows[0].lastError, /invalid_grant/);

    // `token import` with no daemon running (the CLI owns the store): the next daemon starts healthy.
    const fresh = `rt${Date.now()}fresh0123456789`;
    w.fake.addRefreshToken(fresh, { clientId: w.clientId, email: w.email });
    const input = new PassThrough();
    input.end(`  ${fresh}\n`);
    const out = collect();
    assert.equal(await tokenImport(cfg, 'office', input, out.stream), 0, out.text());
    const next = new TokenService({ config: cfg, log: w.log });
    await next.init();
    assert.equal(next.state('office'), 'ok');
    // An import the running daemon takes itself (control socket, console): healthy, listener fired.
    await svc.importRefreshToken('office', fresh);
    assert.equal(svc.state('office'), 'ok');
    assert.deepEqual(changes.at(-1), ['office', 'ok']);
    const tok = await svc.getAccessToken('office');
    assert.ok(w.fake.tokenInfo(tok));
    const st2 = collect();
    assert.equal(await tokenStatus(cfg, { json: false }, st2.stream), 0);
    assert.match(st2.text(), /office\s+scanner@example\.com\s+ok\s+in (?:\d+m|1h)/);
  } finally {
    await w.close();
  }
});

test('unauthorized_client also means needs-reauth; markNeedsReauth holds the account; token refresh CLI', async () => {
  const w = await oauthWorld();
  try {
    const cfg = w.config();
    const svc = new TokenService({ config: cfg, log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    w.fake.failNext(1, 'unauthorized_client');
    await assert.rejects(
      svc.getAccessToken('office'),
      (e: Error) => e instanceof NeedsReauthError && /unauthorized_client/.test(e.message),
    );
    assert.equal(svc.state('office'), 'needs-reauth');

    // `token refresh` from the CLI tries once for real and clears the state on success.
    const out = collect();
    assert.equal(await tokenRefresh(cfg, 'office', out.stream), 0, out.text());
    assert.match(out.text(), /access token refreshed, valid until \d{4}-/);
    const next = new TokenService({ config: cfg, log: w.log });
    await next.init();
    assert.equal(next.state('office'), 'ok');
    const tok = await next.getAccessToken('office');
    assert.ok(w.fake.tokenInfo(tok), 'uses the token the CLI obtained');

    next.markNeedsReauth('office', 'Gmail answered 535 5.7.8 twice');
    assert.equal(next.state('office'), 'needs-reauth');
    await assert.rejects(next.getAccessToken('office'), NeedsReauthError);

    // A refresh token the endpoint refuses: exit 1 with the fix.
    w.fake.revoke(w.refreshToken);
    const out2 = collect();
    assert.equal(await tokenRefresh(cfg, 'office', out2.stream), 1);
    assert.match(out2.text(), /needs re-authorization[\s\S]*xoauth2-bridge authorize office/);
  } finally {
    await w.close();
  }
});

test('no refresh token stored: needs-reauth at once, without calling the endpoint', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: w.log });
    await svc.init();
    assert.equal(svc.state('office'), 'needs-reauth');
    await assert.rejects(svc.getAccessToken('office'), NeedsReauthError);
    assert.equal(w.fake.requests.length, 0);
    assert.equal(svc.status()[0].lastError, 'no refresh token stored');
  } finally {
    await w.close();
  }
});

test('service account: RS256 JWT bearer grant with subject and Gmail scope, verified by the fake', async () => {
  const w = await oauthWorld();
  try {
    const sa = 'bridge@fake-project.iam.gserviceaccount.com';
    const { keyJson } = w.fake.createServiceAccount(sa);
    const keyFile = join(w.dir, 'sa.json');
    writeFileSync(keyFile, keyJson, { mode: 0o600 });
    w.fake.allowSubject(sa, w.email);
    const account = (subject: string) => ({
      name: 'ws',
      email: subject,
      oauth: { type: 'service-account', keyFile, subject, tokenUrl: w.fake.url, caFile: w.caFile },
    });
    const svc = new TokenService({ config: w.config({ accounts: [account(w.email)] }), log: w.log });
    await svc.init();
    const tok = await svc.getAccessToken('ws');
    const req = w.fake.requests.at(-1)!;
    assert.equal(req.grantType, 'urn:ietf:params:oauth:grant-type:jwt-bearer');
    assert.equal(req.ok, true, req.error);
    assert.equal(req.sub, w.email);
    assert.equal(req.scope, GMAIL_SCOPE);
    assert.equal(w.fake.tokenInfo(tok)?.email, w.email);
    assert.equal(await svc.getAccessToken('ws'), tok, 'cached');

    // A subject the delegation does not cover: refused, account held with a hint.
    const bad = new TokenService({ config: w.config({ accounts: [account('other@example.com')] }), log: w.log });
    await bad.init();
    await assert.rejects(bad.getAccessToken('ws'), NeedsReauthError);
    assert.equal(bad.state('ws'), 'needs-reauth');
    assert.match(w.logText(), /domain-wide delegation/);
    // The Workspace admin enters the numeric client ID (not the email) under domain-wide delegation.
    const clientId = (JSON.parse(keyJson) as { client_id: string }).client_id;
    assert.ok(w.logText().includes(`client ID ${clientId}`), w.logText());
    assert.doesNotMatch(w.logText(), /PRIVATE KEY/);
    const pk = (JSON.parse(keyJson) as { private_key: string }).private_key.split('\n')[1];
    assert.ok(!w.logText().includes(pk));
  } finally {
    await w.close();
  }
});

test('debug logs during refresh failures hold none of the secrets used', async () => {
  const w = await oauthWorld();
  try {
    w.fake.rotateRefreshTokens = true;
    const cfg = w.config();
    const svc = new TokenService({ config: cfg, log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const access: string[] = [await svc.getAccessToken('office')];
    w.fake.failNext(3, 'http500');
    await assert.rejects(svc.refresh('office'));
    await svc.refresh('office');
    access.push(await svc.getAccessToken('office'));
    const quick = new TokenService({ config: cfg, log: w.log, http: { timeoutMs: 300 } });
    await quick.init();
    w.fake.failNext(1, 'hang');
    const before = w.fake.requests.length;
    await assert.rejects(quick.refresh('office'), /token endpoint timed out after 0\.3 s/);
    assert.equal(w.fake.requests.length - before, 1, 'a timed-out request is not retried at once');
    w.fake.failNext(1, 'invalid_grant');
    await assert.rejects(svc.refresh('office'), NeedsReauthError);
    const stored = (await new TokenStore({ stateDir: w.stateDir, key: null }).load()).accounts.office;

    const text = w.logText();
    assert.match(text, /refresh failed/);
    assert.match(text, /needs re-authorization/);
    assert.match(text, /"level":"debug"/);
    const secrets = [
      w.clientSecret,
      w.refreshToken,
      stored.refreshToken!,
      ...w.fake.refreshTokensFor(w.email),
      ...access,
    ];
    assert.ok(secrets.length >= 5);
    for (const s of secrets) assert.ok(!text.includes(s), `secret leaked into logs: ${s.slice(0, 6)}…`);
  } finally {
    await w.close();
  }
});

test('token request policy: a timed-out request is not retried, a dropped connection once, HTTP 5xx twice', async () => {
  const w = await oauthWorld();
  try {
    assert.equal(DEFAULT_TIMEOUT_MS, 10_000);
    // Long enough that the requests which are answered never time out on a loaded machine (300 ms did
    // at load 20); only the hanging one waits for it.
    const svc = new TokenService({ config: w.config(), log: nullLogger, http: { timeoutMs: 2000 } });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const sent = async (kind: 'hang' | 'reset' | 'http500', n: number, ok: boolean) => {
      w.fake.failNext(n, kind);
      const before = refreshes(w);
      if (ok) await svc.refresh('office');
      else await assert.rejects(svc.refresh('office'), (e: Error) => !(e instanceof NeedsReauthError));
      return refreshes(w) - before;
    };
    assert.equal(await sent('hang', 1, false), 1, 'a timed-out request is sent once');
    assert.equal(await sent('reset', 1, true), 2, 'a dropped connection is retried once and then succeeds');
    assert.equal(await sent('reset', 2, false), 2, 'but not twice');
    assert.equal(await sent('http500', 2, true), 3, '5xx is retried twice');
    assert.equal(await sent('http500', 3, false), 3, 'and then given up to our own backoff');
    assert.equal(svc.state('office'), 'ok', 'transient failures never mark the grant dead');
  } finally {
    await w.close();
  }
});

test('warns at start when a refresh token may be a 7-day "Testing" token about to lapse', async () => {
  const w = await oauthWorld();
  try {
    const t0 = Date.now();
    const first = new TokenService({ config: w.config(), log: nullLogger, now: () => t0 });
    await first.init();
    await first.importRefreshToken('office', w.refreshToken);
    const lines = (days: number) => {
      const c = collect();
      const log = createLogger({ level: 'debug', stream: c.stream });
      return { svc: new TokenService({ config: w.config(), log, now: () => t0 + days * 86400e3 }), text: c.text };
    };
    const early = lines(2);
    await early.svc.init();
    const late = lines(5.5);
    await late.svc.init();
    const old = lines(30);
    await old.svc.init();
    await new Promise((r) => setImmediate(r));
    assert.doesNotMatch(early.text(), /Testing/);
    assert.match(late.text(), /"level":"warn".*Testing.*7 days after issue.*In production/);
    assert.doesNotMatch(old.text(), /Testing/, 'a token still alive after 7 days is from a production app');
  } finally {
    await w.close();
  }
});

test('reload(config): added accounts appear, changed service-account settings get a fresh try', async () => {
  const w = await oauthWorld();
  try {
    const sa = 'reload@fake-project.iam.gserviceaccount.com';
    const keyFile = join(w.dir, 'sa.json');
    writeFileSync(keyFile, w.fake.createServiceAccount(sa).keyJson, { mode: 0o600 });
    w.fake.allowSubject(sa, w.email);
    const saAccount = (subject: string) => ({
      name: 'ws',
      email: w.email,
      oauth: { type: 'service-account', keyFile, subject, tokenUrl: w.fake.url, caFile: w.caFile },
    });
    const svc = new TokenService({
      config: w.config({ accounts: [saAccount('nobody@example.com')] }),
      log: nullLogger,
    });
    const changes: string[] = [];
    svc.onChange((a, s) => changes.push(`${a}:${s}`));
    await svc.init();
    await assert.rejects(svc.getAccessToken('ws'), NeedsReauthError);
    const base = w.config();
    svc.reload({ ...base, accounts: [...base.accounts, w.config({ accounts: [saAccount(w.email)] }).accounts[0]] });
    assert.equal(svc.state('ws'), 'ok');
    assert.ok(w.fake.tokenInfo(await svc.getAccessToken('ws')));
    assert.equal(svc.state('office'), 'needs-reauth', 'new account without a token');
    assert.deepEqual(
      svc
        .status()
        .map((s) => s.account)
        .sort(),
      ['office', 'ws'],
    );
    assert.deepEqual(changes, ['ws:needs-reauth', 'ws:ok']);
  } finally {
    await w.close();
  }
});

test('a rejection names the rejected token: shared only when a newer one exists, a second revocation seconds later refreshes again', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const t1 = await svc.getAccessToken('office');
    assert.equal(refreshes(w), 1);
    // 20 connections report the same rejected token at once: one refresh answers them all.
    const t2s = await Promise.all(Array.from({ length: 20 }, () => svc.getAccessToken('office', { rejected: t1 })));
    assert.equal(new Set(t2s).size, 1);
    const t2 = t2s[0];
    assert.ok(t2 !== t1, 'a new token answers the rejection');
    assert.equal(refreshes(w), 2);
    // A late report of t1 gets the newer t2 without a request.
    assert.ok((await svc.getAccessToken('office', { rejected: t1 })) === t2, 'the newer token');
    assert.equal(refreshes(w), 2);
    // t2 worked (a delivery), then it is revoked too, well inside the old 5 s window: a new token, not t2 again.
    svc.tokenWorked('office', t2);
    // A late report of t1 arrives while t2's replacement is in flight: it gets the replacement, not t2.
    const [t3, late] = await Promise.all([
      svc.getAccessToken('office', { rejected: t2 }),
      svc.getAccessToken('office', { rejected: t1 }),
    ]);
    assert.ok(t3 !== t2, 'the second revocation gets a new token, not the one just refused');
    assert.ok(late === t3, 'the late report of t1 joins the refresh in flight');
    assert.equal(refreshes(w), 3);
    assert.equal(svc.state('office'), 'ok');
    // t3 answered a rejection and was refused before it ever worked: the grant is dead, no more requests.
    await assert.rejects(svc.getAccessToken('office', { rejected: t3 }), NeedsReauthError);
    assert.equal(refreshes(w), 3);
  } finally {
    await w.close();
  }
});
