// kill -9 in the middle of a load: every message that got a 250 must be delivered after a
// restart (at-least-once; duplicates only for messages that were in flight upstream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, sendThroughBridge, message, importToken } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

test('SIGKILL under load loses no acknowledged message', { timeout: 180_000 }, async (t) => {
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(
      world,
      bridgeConfig(world, { log: { level: 'info', format: 'json' }, queue: { retry: ['1s'], concurrency: 4 } }),
    );
    importToken(configFile, world);
    // Gmail is down for the first 100 acknowledgements, so the kill finds a queue with
    // deferred messages, messages being retried and messages in flight.
    world.gmail.down(true);
    const first = await spawnBridge(configFile);
    const TOTAL = 300;
    const acked = new Set<string>();
    let killed = false;
    let next = 0;
    // 8 clients in parallel; the daemon is killed once 150 messages were acknowledged.
    const clients = Array.from({ length: 8 }, async () => {
      while (next < TOTAL) {
        const i = next++;
        const rcpt = `m${i}@example.org`;
        try {
          const r = await sendThroughBridge({
            port: first.ports.local,
            user: world.user.username,
            pass: world.user.password,
            from: 'scanner@example.com',
            to: [rcpt],
            raw: message({ from: 'scanner@example.com', to: rcpt, subject: `load ${i}` }),
          });
          if (/^250 /.test(r.response)) acked.add(rcpt);
        } catch {
          /* refused or cut off by the kill: not acknowledged, so not owed */
        }
        if (acked.size >= 100) world.gmail.down(false);
        if (acked.size >= 150 && !killed) {
          killed = true;
          first.child.kill('SIGKILL');
        }
        if (killed) return;
      }
    });
    await Promise.all(clients);
    await first.exited;
    assert.ok(killed, 'the daemon was killed mid-load');
    const deliveredBeforeRestart = world.gmail.messages.length;

    const second = await spawnBridge(configFile);
    try {
      const deliveredSet = () => new Set(world.gmail.messages.flatMap((m) => m.rcptTo));
      await waitFor(
        () => [...acked].every((r) => deliveredSet().has(r)),
        60_000,
        'every acknowledged message to be delivered',
      );
      const counts = new Map<string, number>();
      for (const m of world.gmail.messages) for (const r of m.rcptTo) counts.set(r, (counts.get(r) ?? 0) + 1);
      const dups = [...counts.values()].filter((c) => c > 1).length;
      t.diagnostic(
        `acknowledged ${acked.size}, delivered before kill ${deliveredBeforeRestart}, delivered in total ${counts.size} distinct, duplicates ${dups}`,
      );
      for (const r of acked) assert.ok(counts.has(r), `${r} delivered`);
      // Duplicates can only come from sends in flight at the kill (queue.concurrency = 4).
      assert.ok(dups <= 4, `${dups} duplicates`);
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  } finally {
    await world.close();
  }
});
