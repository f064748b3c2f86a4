// The queue commands as an operator runs them against a live daemon: separate processes,
// the daemon notices within seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, importToken, sendThroughBridge, message, CLI } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const cli = async (...args: string[]) => (await run(process.execPath, [...CLI, ...args])).stdout;

test('queue list / show / delete / retry --all against a running daemon', { timeout: 90_000 }, async () => {
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { queue: { retry: ['1h'] } }));
    importToken(configFile, world);
    world.gmail.down(true);
    const d = await spawnBridge(configFile);
    try {
      const ids: string[] = [];
      for (const to of ['keep@example.org', 'drop@example.org']) {
        const r = await sendThroughBridge({
          port: d.ports.local,
          user: world.user.username,
          pass: world.user.password,
          from: 'scanner@example.com',
          to: [to],
          raw: message({ from: 'scanner@example.com', to, subject: `queued for ${to}` }),
        });
        ids.push(r.response.split(' ').pop()!);
      }
      // Both fail once (Gmail down) and wait an hour for their next try.
      type Row = {
        id: string;
        account: string;
        from: string;
        state: string;
        rcpts: { address: string; status: string }[];
        size: number;
        attempts: number;
        nextAttemptAt: string;
        lastReply: string | null;
      };
      let rows: Row[] = [];
      await waitFor(
        async () => {
          rows = JSON.parse(await cli('queue', 'list', '--json', '-c', configFile)) as Row[];
          return rows.length === 2 && rows.every((r) => r.attempts >= 1);
        },
        15_000,
        'two deferred messages',
      );
      assert.deepEqual(rows.map((r) => r.id).sort(), [...ids].sort());
      assert.ok(
        rows.every(
          (r) => r.account === 'office' && r.from === 'scanner@example.com' && r.lastReply && r.state === 'deferred',
        ),
      );
      const table = await cli('queue', 'list', '-c', configFile);
      for (const id of ids) assert.ok(table.includes(id), 'table lists every id');

      const shown = await cli('queue', 'show', ids[1], '-c', configFile);
      assert.match(shown, /Subject: queued for drop@example\.org/);

      await cli('queue', 'delete', ids[1], '-c', configFile);
      world.gmail.down(false);
      await cli('queue', 'retry', '--all', '-c', configFile);
      await world.gmail.waitForMessages(1, 10_000);
      // Canary: a message accepted after the retry is delivered after it; by then a resurrected
      // deleted message would have been sent too.
      const canary = 'canary@example.org';
      await sendThroughBridge({
        port: d.ports.local,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: [canary],
        raw: message({ from: 'scanner@example.com', to: canary, subject: 'canary' }),
      });
      await world.gmail.waitForMessages(2, 10_000);
      assert.deepEqual(
        world.gmail.messages.map((m) => m.rcptTo[0]),
        ['keep@example.org', canary],
        'the deleted message is never sent',
      );
      assert.deepEqual(JSON.parse(await cli('queue', 'list', '--json', '-c', configFile)), []);
      await assert.rejects(cli('queue', 'show', 'NOSUCHID0000000', '-c', configFile), /exit code 1|Command failed/);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  } finally {
    await world.close();
  }
});
