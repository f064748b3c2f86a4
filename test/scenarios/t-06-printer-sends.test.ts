// End to end: SMTP client -> bridge -> fake Gmail, with the real stages and real sockets.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import {
  startBridge,
  spawnBridge,
  importToken,
  sendThroughBridge,
  message,
  secretsOf,
  assertNoSecrets,
  type RunningBridge,
} from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';
import { splitReceived } from '../helpers/received.js';

for (const mode of ['implicit', 'starttls'] as const) {
  describe(`relay through fake Gmail (${mode} TLS upstream)`, () => {
    let world: FakeWorld;
    let b: RunningBridge;
    before(async () => {
      world = await startFakeWorld({ gmailMode: mode });
      b = await startBridge(world);
    });
    after(async () => {
      await b?.stop();
      await world?.close();
    });

    test('delivers the exact bytes with the stored envelope, over TLS with a valid XOAUTH2 bearer', async () => {
      const raw = Buffer.from(
        'From: Scanner <scanner@example.com>\r\nTo: alice@example.org, bob@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n' +
          'X-Odd-Header:   kept   as is  \r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
          'Grüße from the printer.\r\n.leading dot line\r\n\r\nlast line without newline',
      );
      const before = world.gmail.messages.length;
      const res = await sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: ['alice@example.org', 'bob@example.org'],
        raw,
      });
      assert.match(res.response, /^250 2\.0\.0 Ok: queued as [A-Za-z0-9]+$/);
      await world.gmail.waitForMessages(before + 1, 10_000);
      const got = world.gmail.messages[before];
      assert.equal(got.mailFrom, 'scanner@example.com');
      assert.deepEqual(got.rcptTo, ['alice@example.org', 'bob@example.org']);
      assert.equal(got.authUser, 'scanner@example.com');
      assert.equal(got.secure, true);
      assert.match(got.tlsProtocol ?? '', /^TLSv1\.[23]$/);
      // nodemailer ends DATA with CRLF when the message does not; everything else is byte-identical.
      const expected = Buffer.concat([raw, Buffer.from('\r\n')]);
      const id = /queued as (\S+)$/.exec(res.response)![1];
      const { rest } = splitReceived(got.raw, { id, protocol: 'ESMTPA', listener: 'local' });
      assert.equal(rest.toString('hex'), expected.toString('hex'));
      const ok = world.gmail.auths.filter((a) => a.ok);
      assert.ok(ok.length >= 1 && ok.every((a) => a.user === 'scanner@example.com'));
      // The spool is emptied after Gmail's 250.
      await waitFor(async () => (await b.bridge.spool.list()).length === 0, 5000, 'spool to drain');
      assertNoSecrets(b.logs.join('\n'), secretsOf(world));
    });
  });
}

describe('inbound refusals', () => {
  let world: FakeWorld;
  let b: RunningBridge;
  before(async () => {
    world = await startFakeWorld();
    b = await startBridge(world, {
      listeners: [{ name: 'local', host: '127.0.0.1', port: 0, tls: 'none', maxMessageSize: '64KB' }],
    });
  });
  after(async () => {
    await b?.stop();
    await world?.close();
  });

  test('wrong password: 535 5.7.8, nothing queued', async () => {
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: 'wrong',
        from: 'scanner@example.com',
        to: ['a@example.org'],
        raw: message({ from: 'scanner@example.com', to: 'a@example.org' }),
      }),
      (err: { responseCode?: number; response?: string }) =>
        err.responseCode === 535 && /5\.7\.8/.test(err.response ?? ''),
    );
    assert.equal((await b.bridge.spool.list()).length, 0);
    assertNoSecrets(
      b.logs.join('\n'),
      ['wrong', ...secretsOf(world)].filter((s) => s.length > 5),
    );
  });

  test('sender not allowed for the user: 553 5.7.1', async () => {
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: world.user.password,
        from: 'ceo@example.com',
        to: ['a@example.org'],
        raw: message({ from: 'ceo@example.com', to: 'a@example.org' }),
      }),
      (err: { responseCode?: number; response?: string }) =>
        err.responseCode === 553 && /5\.7\.1/.test(err.response ?? ''),
    );
  });

  test('no AUTH from an untrusted client: 530 5.7.0', async () => {
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        from: 'scanner@example.com',
        to: ['a@example.org'],
        raw: message({ from: 'scanner@example.com', to: 'a@example.org' }),
      }),
      (err: { responseCode?: number; response?: string }) =>
        err.responseCode === 530 && /5\.7\.0/.test(err.response ?? ''),
    );
  });

  test('message over the size limit: 552 5.3.4 and no spool files left', async () => {
    const big = message({ from: 'scanner@example.com', to: 'a@example.org', body: 'x'.repeat(100 * 1024) });
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: ['a@example.org'],
        raw: big,
      }),
      (err: { responseCode?: number; response?: string }) =>
        err.responseCode === 552 && /5\.3\.4/.test(err.response ?? ''),
    );
    const files = (await readdir(join(b.bridge.config.stateDir, 'spool'))).filter(
      (f) => /\.(msg|eml|json)$/.test(f) && !f.startsWith('.'),
    );
    assert.deepEqual(files, []);
  });
});

test('mail spooled while Gmail is down is delivered by the next daemon process after a restart', async () => {
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { queue: { retry: ['2s'] } }));
    importToken(configFile, world);
    world.gmail.down(true);
    const first = await spawnBridge(configFile);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await sendThroughBridge({
        port: first.ports.local,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: [`r${i}@example.org`],
        raw: message({ from: 'scanner@example.com', to: `r${i}@example.org`, subject: `restart ${i}` }),
      });
      ids.push(res.response.split(' ').pop()!);
    }
    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0, 'SIGTERM is a clean stop');
    assert.equal(world.gmail.messages.length, 0);
    world.gmail.down(false);
    const second = await spawnBridge(configFile);
    try {
      await world.gmail.waitForMessages(3, 15_000);
      assert.deepEqual(world.gmail.messages.map((m) => m.rcptTo[0]).sort(), [
        'r0@example.org',
        'r1@example.org',
        'r2@example.org',
      ]);
      assertNoSecrets([...first.stderr, ...second.stderr].join('\n'), secretsOf(world));
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  } finally {
    await world.close();
  }
});

test('upstream TLS is always verified: an untrusted certificate is refused and the mail stays queued', async () => {
  const world = await startFakeWorld();
  const cfg = bridgeConfig(world) as { accounts: Array<{ upstream: Record<string, unknown> }> };
  delete cfg.accounts[0].upstream.caFile; // the fake Gmail's test CA is not a system root
  const b = await startBridge(world, { accounts: cfg.accounts });
  try {
    const res = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['tls@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'tls@example.org' }),
    });
    assert.match(res.response, /^250 /);
    await waitFor(async () => (await b.bridge.spool.list()).some((e) => e.attempts >= 1), 10_000, 'a failed attempt');
    const [env] = await b.bridge.spool.list();
    assert.match(env.lastReply ?? '', /certificate/i);
    assert.equal(world.gmail.messages.length, 0);
    assert.equal(world.gmail.auths.length, 0, 'no credentials were offered to the unverified server');
  } finally {
    await b.stop();
    await world.close();
  }
});

describe('internationalized recipient domain', () => {
  let world: FakeWorld;
  let b: RunningBridge;
  before(async () => {
    world = await startFakeWorld();
    b = await startBridge(world);
  });
  after(async () => {
    await b?.stop();
    await world?.close();
  });

  test('an IDN recipient domain counts as accepted upstream: the message is sent once, not retried', async () => {
    const res = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['safe@jõgeva.ee', 'bob@Example.ORG'],
      raw: message({ from: 'scanner@example.com', to: 'safe@jõgeva.ee' }),
    });
    assert.match(res.response, /^250 /);
    await world.gmail.waitForMessages(1, 10_000);
    // On the wire the domain is punycoded (xn--jgeva-dua.ee); smtp-server decodes it back.
    assert.deepEqual(world.gmail.messages[0].rcptTo, ['safe@jõgeva.ee', 'bob@example.org']);
    // Both recipients were accepted upstream, so the message leaves the spool (not deferred
    // for a retry that would send it to them again).
    await waitFor(async () => (await b.bridge.spool.list()).length === 0, 5000, 'spool to drain');
    assert.equal(world.gmail.messages.length, 1);
  });
});
