// Operations as a sysadmin sees them: /readyz and /metrics over HTTP, revoked grants and
// their repair through the CLI while the daemon runs, SIGHUP reloads, logs without secrets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile, readFile } from 'node:fs/promises';
import { stringify, parse } from 'yaml';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { hashPassword } from '../../src/listener/passwords.js';
import {
  startBridge,
  spawnBridge,
  importToken,
  sendThroughBridge,
  message,
  secretsOf,
  assertNoSecrets,
  CLI,
} from '../helpers/bridge.js';
import { waitFor, sleep } from '../helpers/wait.js';

const run = promisify(execFile);

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

function metric(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(' ').pop()) : NaN;
}

test('revoked grant: /readyz 503 and mail held; token import via the CLI -> 200 and the held mail is delivered', {
  timeout: 90_000,
}, async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, {}, { http: true });
  try {
    const http = b.bridge.httpAddress!.port;
    assert.equal((await get(http, '/healthz')).status, 200);
    assert.deepEqual(await get(http, '/readyz'), { status: 200, body: 'ready\n' });

    world.tokens.revoke(world.account.refreshToken);
    world.tokens.expireAccessTokens();
    await b.bridge.tokens.refresh(world.account.name).catch(() => {});
    const send = (i: number) =>
      sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: [`held${i}@example.org`],
        raw: message({ from: 'scanner@example.com', to: `held${i}@example.org` }),
      });
    for (let i = 0; i < 3; i++) assert.match((await send(i)).response, /^250 /);
    const ready = await get(http, '/readyz');
    assert.equal(ready.status, 503);
    assert.match(ready.body, /account office: needs-reauth/);
    assert.match(ready.body, /xoauth2-bridge authorize office/);
    const status = await run(process.execPath, [...CLI, 'token', 'status', '--json', '-c', b.configFile]).catch(
      (e) => e as { stdout: string },
    );
    assert.equal((JSON.parse(status.stdout) as Array<{ state: string }>)[0].state, 'needs-reauth');
    // Canary: the worker decided on all three (held: needs-reauth) instead of sending them.
    await waitFor(
      () => b.logs.filter((l) => l.includes('"message":"held"') && l.includes('needs-reauth')).length >= 3,
      10_000,
      'three messages held',
    );
    assert.equal(world.gmail.messages.length, 0, 'mail waits, it is not bounced or sent');
    assert.equal((await b.bridge.spool.list()).length, 3);
    const requestsWhileDead = world.tokens.requests.length;
    // time is the subject: a retry storm is a rate; none may come within a second.
    await sleep(1000);
    assert.equal(world.tokens.requests.length, requestsWhileDead, 'no retry storm against the token endpoint');
    const loud = b.logs.filter((l) => /needs re-?auth/i.test(l) && /"level":"error"/.test(l));
    assert.ok(
      loud.length >= 1 && loud.some((l) => l.includes('xoauth2-bridge authorize office')),
      'one loud line with the fix command',
    );

    // The operator re-authorizes: a new refresh token, imported by a separate CLI process.
    const fresh = `1//0g-new-${Date.now()}`;
    world.tokens.addRefreshToken(fresh, { clientId: world.account.clientId, email: world.account.email });
    const child = execFile(process.execPath, [...CLI, 'token', 'import', 'office', '-c', b.configFile]);
    child.stdin!.end(fresh + '\n');
    await new Promise((r) => child.on('exit', r));
    await world.gmail.waitForMessages(3, 15_000);
    assert.deepEqual(world.gmail.messages.map((m) => m.rcptTo[0]).sort(), [
      'held0@example.org',
      'held1@example.org',
      'held2@example.org',
    ]);
    await waitFor(async () => (await get(http, '/readyz')).status === 200, 5000, '/readyz 200');
    assertNoSecrets(b.logs.join('\n'), [...secretsOf(world), fresh]);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('/metrics counts a known sequence of messages', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, {}, { http: true });
  try {
    const http = b.bridge.httpAddress!.port;
    world.gmail.script({
      stage: 'rcpt',
      rcpt: 'nobody@example.org',
      reply: '550 5.1.1 The email account that you tried to reach does not exist.',
      count: Infinity,
    });
    for (const to of ['a@example.org', 'b@example.org', 'nobody@example.org'])
      await sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: [to],
        raw: message({ from: 'scanner@example.com', to }),
      });
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: 'bad-password',
        from: 'scanner@example.com',
        to: ['x@example.org'],
        raw: 'x',
      }),
    );
    await waitFor(
      async () =>
        (await b.bridge.spool.list()).filter((e) => !e.isBounce).length === 0 && world.gmail.messages.length >= 3,
      10_000,
      'deliveries',
    );
    const m = (await get(http, '/metrics')).body;
    assert.equal(metric(m, 'xoauth2_bridge_messages_received_total', 'account="office"') >= 3, true);
    assert.equal(metric(m, 'xoauth2_bridge_messages_delivered_total', 'account="office"') >= 2, true);
    assert.equal(metric(m, 'xoauth2_bridge_messages_bounced_total', 'account="office"'), 1);
    assert.equal(metric(m, 'xoauth2_bridge_upstream_replies_total', 'class="permanent"'), 1);
    assert.equal(metric(m, 'xoauth2_bridge_auth_failures_total', 'listener="local"'), 1);
    assert.equal(metric(m, 'xoauth2_bridge_account_state', 'state="ok"'), 1);
    assert.ok(metric(m, 'xoauth2_bridge_token_refreshes_total', 'result="ok"') >= 1);
    assert.match(m, /^xoauth2_bridge_queue_size \d+/m);
    assertNoSecrets(m, secretsOf(world));
  } finally {
    await b.stop();
    await world.close();
  }
});

test('SIGHUP: a new user gets in; a broken config is rejected and the old one keeps serving', {
  timeout: 60_000,
}, async () => {
  const world = await startFakeWorld();
  try {
    const cfg = bridgeConfig(world);
    const configFile = await writeBridgeConfig(world, cfg);
    importToken(configFile, world);
    const d = await spawnBridge(configFile);
    try {
      const port = d.ports.local;
      const newPw = 'second-user-password';
      const send = (user: string, pass: string) =>
        sendThroughBridge({
          port,
          user,
          pass,
          from: 'scanner@example.com',
          to: ['hup@example.org'],
          raw: message({ from: 'scanner@example.com', to: 'hup@example.org' }),
        });
      await assert.rejects(send('scanner2', newPw), (e: { responseCode?: number }) => e.responseCode === 535);
      const next = parse(await readFile(configFile, 'utf8')) as { users: unknown[] };
      next.users.push({
        username: 'scanner2',
        passwordHash: await hashPassword(newPw, FAKE_SCRYPT_COST),
        account: 'office',
      });
      await writeFile(configFile, stringify(next));
      d.child.kill('SIGHUP');
      await waitFor(() => d.stderr.some((l) => l.includes('config reloaded')), 10_000, 'reload');
      assert.match((await send('scanner2', newPw)).response, /^250 /);

      await writeFile(configFile, 'stateDir: [this is not valid\n');
      d.child.kill('SIGHUP');
      await waitFor(() => d.stderr.some((l) => l.includes('reload rejected')), 10_000, 'rejected reload');
      assert.match((await send('scanner2', newPw)).response, /^250 /, 'still serving with the previous config');
      assert.match((await send(world.user.username, world.user.password)).response, /^250 /);
      assertNoSecrets(d.stderr.join('\n'), [...secretsOf(world), newPw]);
    } finally {
      d.child.kill('SIGTERM');
      const code = await d.exited;
      assert.equal(code, 0, `exit code ${code}; last log lines:\n${d.stderr.slice(-6).join('\n')}`);
    }
  } finally {
    await world.close();
  }
});
