// kill -9 of the daemon in the middle of a Gmail API upload: the message was acknowledged
// (250) and is in the spool, Gmail never answered, so after a restart it is uploaded again,
// and delivered exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, importToken } from '../helpers/bridge.js';
import { splitReceived } from '../helpers/received.js';
import { sendFile, writeBigMessage } from '../helpers/memory.js';
import { waitFor } from '../helpers/wait.js';

test('gmail-api: kill -9 during an upload loses nothing; after the restart the message is delivered once', {
  timeout: 120_000,
}, async () => {
  const world = await startFakeWorld({ transport: 'gmail-api' });
  const api = world.gmailApi!;
  try {
    const configFile = await writeBridgeConfig(
      world,
      bridgeConfig(world, { log: { level: 'info', format: 'json' }, queue: { retry: ['1s'] } }),
    );
    importToken(configFile, world);
    const file = join(world.dir, 'scan.eml');
    const size = await writeBigMessage(file, 4_000_000);
    // The fake reads the first 1 MB of the upload, then stops reading and never answers.
    api.stallAfterBytes = 1_000_000;
    api.failNext(1, 'stall');
    const first = await spawnBridge(configFile);
    await sendFile(first.ports.local, world.user, file, 'big@example.org');
    const got = await api.waitForStall(1_000_000, 30_000);
    assert.ok(got >= 1_000_000 && got < size, `stalled after ${got} bytes`);
    first.child.kill('SIGKILL');
    await first.exited;
    assert.equal(api.messages.length, 0);

    const second = await spawnBridge(configFile);
    try {
      await api.waitForMessages(1, 30_000);
      assert.equal(splitReceived(api.messages[0].raw).rest.length, size);
      // The spool entry is gone once Gmail's answer is in: nothing left to send twice.
      await waitFor(
        () => second.stderr.some((l) => l.includes('"message":"delivered"')),
        10_000,
        'the delivered log line',
      );
      assert.equal(api.messages.length, 1);
      assert.deepEqual(
        api.requests.map((r) => r.status),
        [0, 200],
        'one stalled upload, one complete one',
      );
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  } finally {
    await world.close();
  }
});
