// A 25 MB message must stream through the daemon (client -> spool file -> Gmail) without
// the daemon's memory growing with the message size. Measured on a real `serve` process
// through /proc, so it is the daemon's own RSS, not the test runner's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, sendThroughBridge, message, importToken } from '../helpers/bridge.js';
import { splitReceived } from '../helpers/received.js';
import { MEMTEST_NODE_OPTIONS, mb, procStatus, sendFile, writeBigMessage, assertFlatPeak } from '../helpers/memory.js';
import { RawSmtp } from '../helpers/listener.js';
import { Readable } from 'node:stream';

test('a 25 MB message streams through the daemon with flat RSS', { timeout: 120_000 }, async (t) => {
  if (process.platform !== 'linux') return t.skip('needs /proc');
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
    importToken(configFile, world);
    const file = join(world.dir, 'big.eml');
    const size = await writeBigMessage(file, 25_000_000); // 25 MB, under the default 25 MiB limit
    const d = await spawnBridge(configFile, { NODE_OPTIONS: MEMTEST_NODE_OPTIONS });
    try {
      const pid = d.child.pid!;
      // Warm up: one small message through the whole path (pools, TLS, token) first.
      await sendThroughBridge({
        port: d.ports.local,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: ['warm@example.org'],
        raw: message({ from: 'scanner@example.com', to: 'warm@example.org' }),
      });
      await world.gmail.waitForMessages(1, 10_000);
      const base = await procStatus(pid);

      // Same session shape for both sizes; the 5 MB message raises the high-water mark by
      // whatever fixed cost streaming has (socket, TLS, file buffers, GC slack), so what the
      // 25 MB message adds on top is what grows with the message size.
      const small = join(world.dir, 'small.eml');
      const smallSize = await writeBigMessage(small, 5_000_000);
      await sendFile(d.ports.local, world.user, small, 'small@example.org');
      await world.gmail.waitForMessages(2, 60_000);
      assert.equal(splitReceived(world.gmail.messages[1].raw).rest.length, smallSize);
      const afterSmall = await procStatus(pid);

      const dataEndTo250Ms = await sendFile(d.ports.local, world.user, file, 'big@example.org');
      await world.gmail.waitForMessages(3, 60_000);
      assert.equal(splitReceived(world.gmail.messages[2].raw).rest.length, size);
      const after = await procStatus(pid);
      t.diagnostic(
        `daemon RSS after warm-up ${mb(base.rss)} MB; peak after a 5 MB message ${mb(afterSmall.hwm)} MB; ` +
          `peak after a ${mb(size)} MB message ${mb(after.hwm)} MB; DATA end -> 250 for it: ${dataEndTo250Ms.toFixed(1)} ms`,
      );
      // Measured with the fixed semi-space on Node 22, 24 and 26: 0–11 MB above the 5 MB peak.
      assertFlatPeak(afterSmall, after);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  } finally {
    await world.close();
  }
});

// Issue 24 item 6: a message over the limit is refused with 552 5.3.4 at the end of DATA, and
// its bytes are dropped as they arrive: refusing 200 MB of long lines must not cost memory.
test("a 200 MB DATA of long lines is refused with 552 5.3.4 and the daemon's peak RSS grows under 30 MB", {
  timeout: 180_000,
}, async (t) => {
  if (process.platform !== 'linux') return t.skip('needs /proc');
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
    const d = await spawnBridge(configFile, { NODE_OPTIONS: MEMTEST_NODE_OPTIONS });
    try {
      const pid = d.child.pid!;
      const s = await RawSmtp.connect(d.ports.local);
      assert.equal((await s.ehlo('memtest')).code, 250);
      assert.equal((await s.authPlain(world.user.username, world.user.password)).code, 235);
      assert.equal((await s.cmd('MAIL FROM:<scanner@example.com>')).code, 250);
      assert.equal((await s.cmd('RCPT TO:<big@example.org>')).code, 250);
      assert.equal((await s.cmd('DATA')).code, 354);
      const base = await procStatus(pid);
      // 1 MiB lines of base64-like text after a normal header section: 200 of them.
      const line = Buffer.concat([Buffer.alloc(2 ** 20 - 2, 'QUJD'), Buffer.from('\r\n')]);
      const total = 200;
      await s.pipeFrom(
        Readable.from(
          (function* () {
            yield Buffer.from('From: scanner@example.com\r\nTo: big@example.org\r\nSubject: too big\r\n\r\n');
            for (let i = 0; i < total; i++) yield line;
          })(),
        ),
      );
      const reply = await s.cmd('.', 60_000);
      assert.equal(reply.lines.join(), '552 5.3.4 Message size exceeds fixed maximum message size');
      assert.equal((await s.cmd('QUIT')).code, 221);
      const after = await procStatus(pid);
      const growth = after.hwm - Math.max(base.rss, 0);
      t.diagnostic(
        `daemon RSS before DATA ${mb(base.rss)} MB (peak so far ${mb(base.hwm)} MB); peak after refusing ${mb(total * line.length)} MB: ${mb(after.hwm)} MB (+${mb(growth)} MB)`,
      );
      assert.ok(growth < 30 * 2 ** 20, `peak RSS rose ${mb(growth)} MB while refusing the message`);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  } finally {
    await world.close();
  }
});
