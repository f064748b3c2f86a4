// Rotating Microsoft refresh tokens across real `serve` processes: a rotation persisted by one
// daemon is what the next one uses (the fake makes each refresh token usable once, so a lost
// rotation shows), and a kill -9 after the rotation was saved but before the new access token
// was used loses neither the message nor the grant.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { FakeMicrosoftIdentity } from '../../src/fakes/microsoftIdentity.js';
import { FakeExchange } from '../../src/fakes/exchange.js';
import { spawnBridge, sendThroughBridge, message, CLI, type SpawnedBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const MAILBOX = 'printer@contoso.com';
const CLIENT_ID = '00000000-aaaa-bbbb-cccc-000000000002';

interface World {
  world: FakeWorld;
  ms: FakeMicrosoftIdentity;
  exo: FakeExchange;
  configFile: string;
  secret: string;
  rt0: string;
  storedRt(): Promise<string>;
  /** A refresh grant straight at the fake: does this refresh token still work? */
  redeem(rt: string): Promise<{ status: number; error_description?: string }>;
  close(): Promise<void>;
}

async function setup(): Promise<World> {
  const world = await startFakeWorld();
  const ms = await FakeMicrosoftIdentity.start({ pki: world.pki });
  const exo = await FakeExchange.start({ pki: world.pki, identity: ms });
  const secret = `Zq8Q~${Math.random().toString(36).slice(2)}`;
  ms.registerApp(CLIENT_ID, secret);
  const configFile = await writeBridgeConfig(
    world,
    bridgeConfig(world, {
      accounts: [
        {
          name: 'm365',
          provider: 'microsoft',
          email: MAILBOX,
          oauth: ms.accountOAuth('user', CLIENT_ID, { clientSecret: secret }, world.caFile),
          upstream: { host: 'localhost', port: exo.port, caFile: world.caFile },
        },
      ],
      users: [{ username: 'copier', passwordHash: world.user.passwordHash, account: 'm365' }],
      queue: { retry: ['1s'] },
      log: { level: 'info', format: 'json' },
    }),
  );
  const rt0 = ms.issueRefreshToken(CLIENT_ID, MAILBOX);
  // Provisioned the way an operator does it, before the first `serve`.
  execFileSync(process.execPath, [...CLI, 'token', 'import', 'm365', '-c', configFile], { input: rt0 + '\n' });
  const ca = await readFile(world.caFile);
  return {
    world,
    ms,
    exo,
    configFile,
    secret,
    rt0,
    storedRt: async () =>
      (
        JSON.parse(await readFile(join(world.dir, 'state', 'tokens.json'), 'utf8')) as {
          accounts: Record<string, { refreshToken: string }>;
        }
      ).accounts.m365.refreshToken,
    redeem: (rt) =>
      new Promise((resolve, reject) => {
        const req = https.request(
          ms.tokenUrl,
          { method: 'POST', ca, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } },
          (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, ...(JSON.parse(body) as { error_description?: string }) }),
            );
          },
        );
        req.on('error', reject);
        req.end(
          new URLSearchParams({
            grant_type: 'refresh_token',
            client_id: CLIENT_ID,
            client_secret: secret,
            refresh_token: rt,
            scope: 'https://outlook.office.com/SMTP.Send offline_access',
          }).toString(),
        );
      }),
    close: async () => {
      await exo.close();
      await ms.close();
      await world.close();
    },
  };
}

async function sendVia(w: World, d: SpawnedBridge, to: string): Promise<string> {
  const r = await sendThroughBridge({
    port: d.ports.local,
    user: 'copier',
    pass: w.world.user.password,
    from: MAILBOX,
    to: [to],
    raw: message({ from: MAILBOX, to }),
  });
  return r.response.split(' ').pop()!;
}

async function stop(d: SpawnedBridge): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill('SIGTERM');
  await d.exited;
}

async function cli(configFile: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [...CLI, ...args, '-c', configFile]).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

test('rotation across a real serve restart: the second daemon continues with the rotated token; the old ones are dead in the fake', {
  timeout: 120_000,
}, async () => {
  const w = await setup();
  const daemons: SpawnedBridge[] = [];
  try {
    const d1 = await spawnBridge(w.configFile);
    daemons.push(d1);
    await sendVia(w, d1, 'first@example.org');
    await waitFor(() => w.exo.messages.length === 1, 20_000, 'the first message delivered');
    const rt1 = await w.storedRt();
    assert.notEqual(rt1, w.rt0, 'the rotated refresh token is on disk');
    await stop(d1);

    const d2 = await spawnBridge(w.configFile);
    daemons.push(d2);
    // Force a refresh in the new process: it must redeem rt1 (rt0 is already spent).
    const r = await cli(w.configFile, 'token', 'refresh', 'm365');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const rt2 = await w.storedRt();
    assert.ok(rt2 !== rt1 && rt2 !== w.rt0, 'rotated again by the second daemon');
    await sendVia(w, d2, 'second@example.org');
    await waitFor(() => w.exo.messages.length === 2, 20_000, 'the second message delivered');
    assert.deepEqual(
      w.exo.messages.map((m) => m.rcptTo[0]),
      ['first@example.org', 'second@example.org'],
    );
    assert.deepEqual(
      w.ms.requests.filter((q) => q.grantType === 'refresh_token').map((q) => q.ok),
      [true, true],
      'two refreshes, neither with a spent token',
    );
    for (const old of [w.rt0, rt1]) {
      const answer = await w.redeem(old);
      assert.equal(answer.status, 400);
      assert.match(answer.error_description ?? '', /^AADSTS70008:/);
    }
    const st = await cli(w.configFile, 'token', 'status', '--json');
    assert.equal((JSON.parse(st.stdout) as { state: string }[])[0].state, 'ok');
    const logs = daemons.flatMap((d) => d.stderr).join('\n');
    for (const secret of [w.rt0, rt1, rt2, w.secret])
      assert.ok(!logs.includes(secret), 'no refresh token or secret in the logs');
  } finally {
    for (const d of daemons) await stop(d);
    await w.close();
  }
});

test('kill -9 after the rotated refresh token was saved, before its access token was used: the message goes once, the grant still works', {
  timeout: 120_000,
}, async () => {
  const w = await setup();
  const daemons: SpawnedBridge[] = [];
  try {
    let issued: string | undefined;
    w.ms.on('issued', (e: { grantType: string; refreshToken?: string }) => {
      if (e.grantType === 'refresh_token') issued = e.refreshToken;
    });
    w.exo.holdAuth = true;
    const d1 = await spawnBridge(w.configFile);
    daemons.push(d1);
    const authHeld = once(w.exo, 'auth-held');
    const id = await sendVia(w, d1, 'once@example.org');
    await authHeld; // the daemon presented the new access token; Exchange has not answered
    assert.ok(issued, 'the fake issued a rotated refresh token');
    assert.equal(await w.storedRt(), issued, 'saved before the access token was used');
    d1.child.kill('SIGKILL');
    await d1.exited;
    w.exo.holdAuth = false;

    const d2 = await spawnBridge(w.configFile);
    daemons.push(d2);
    await waitFor(
      () => d2.stderr.some((l) => l.includes('"message":"delivered"') && l.includes(id)),
      20_000,
      'delivered after the restart',
    );
    assert.deepEqual(
      w.exo.messages.map((m) => m.rcptTo),
      [['once@example.org']],
      'delivered exactly once',
    );
    const r = await cli(w.configFile, 'token', 'refresh', 'm365');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const st = await cli(w.configFile, 'token', 'status', '--json');
    assert.equal((JSON.parse(st.stdout) as { state: string }[])[0].state, 'ok', 'no needs-reauth');
    assert.ok(
      w.ms.requests.filter((q) => q.grantType === 'refresh_token').every((q) => q.ok),
      'never a spent refresh token',
    );
  } finally {
    for (const d of daemons) await stop(d);
    await w.close();
  }
});
