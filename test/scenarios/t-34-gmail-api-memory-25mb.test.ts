// transport gmail-api: a 25 MB message is uploaded to the Gmail API streamed from the spool
// file, so the daemon's memory does not grow with the message size (measured on a real
// `serve` process through /proc, as test/scenarios/t-33-memory-25mb.test.ts does for SMTP).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, sendThroughBridge, message, importToken } from '../helpers/bridge.js';
import { splitReceived } from '../helpers/received.js';
import { MEMTEST_NODE_OPTIONS, mb, procStatus, sendFile, writeBigMessage, assertFlatPeak } from '../helpers/memory.js';

test('gmail-api: a 25 MB message is uploaded with flat RSS', { timeout: 120_000 }, async (t) => {
  if (process.platform !== 'linux') return t.skip('needs /proc');
  const world = await startFakeWorld({ transport: 'gmail-api' });
  const api = world.gmailApi!;
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
    importToken(configFile, world);
    const d = await spawnBridge(configFile, { NODE_OPTIONS: MEMTEST_NODE_OPTIONS });
    try {
      const pid = d.child.pid!;
      await sendThroughBridge({
        port: d.ports.local,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: ['warm@example.org'],
        raw: message({ from: 'scanner@example.com', to: 'warm@example.org' }),
      });
      await api.waitForMessages(1, 10_000);
      const base = await procStatus(pid);

      // The 5 MB message pays the fixed cost of streaming; the 25 MB one may add only noise on top.
      const small = join(world.dir, 'small.eml');
      const smallSize = await writeBigMessage(small, 5_000_000);
      await sendFile(d.ports.local, world.user, small, 'big@example.org');
      await api.waitForMessages(2, 60_000);
      assert.equal(splitReceived(api.messages[1].raw).rest.length, smallSize);
      const afterSmall = await procStatus(pid);

      const file = join(world.dir, 'big.eml');
      const size = await writeBigMessage(file, 25_000_000);
      // other@ is only in the envelope: the upload streams a Bcc prefix, then the spool file.
      await sendFile(d.ports.local, world.user, file, ['big@example.org', 'other@example.org']);
      await api.waitForMessages(3, 60_000);
      const got = api.messages[2];
      assert.deepEqual(got.bcc, ['other@example.org']);
      assert.equal(splitReceived(got.visible).rest.length, size);
      const after = await procStatus(pid);
      t.diagnostic(
        `daemon RSS after warm-up ${mb(base.rss)} MB; peak after a 5 MB upload ${mb(afterSmall.hwm)} MB; peak after a ${mb(size)} MB upload ${mb(after.hwm)} MB`,
      );
      assertFlatPeak(afterSmall, after);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  } finally {
    await world.close();
  }
});
