// Drain on SIGTERM, against a real `serve` process: /readyz turns 503 at once (so a load
// balancer stops sending) while a session in DATA still finishes with 250, new connections
// are refused, and the process exits 0 with the message delivered or spooled, never lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, importToken } from '../helpers/bridge.js';
import { RawSmtp } from '../helpers/listener.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/wait.js';

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('error', () => resolve(true));
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
  });
}

async function readyz(port: number): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: await res.text() };
}

test('SIGTERM: /readyz 503 at once while a session in DATA finishes with 250; then exit 0, nothing lost', {
  timeout: 60_000,
}, async () => {
  const world = await startFakeWorld();
  try {
    const httpPort = await freePort();
    const config = bridgeConfig(world, {
      http: { host: '127.0.0.1', port: httpPort },
      log: { level: 'info', format: 'json' },
    });
    const configFile = await writeBridgeConfig(world, config);
    importToken(configFile, world);
    const d = await spawnBridge(configFile);
    try {
      await waitFor(async () => (await readyz(httpPort)).status === 200, 10_000, '/readyz 200');
      const c = await RawSmtp.connect(d.ports.local);
      await c.ehlo();
      assert.equal((await c.authPlain(world.user.username, world.user.password)).code, 235);
      assert.equal((await c.cmd('MAIL FROM:<scanner@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<drain@example.org>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('From: scanner@example.com\r\nTo: drain@example.org\r\nSubject: drain\r\n\r\nfirst half\r\n');
      d.child.kill('SIGTERM');
      // The session is still in DATA, so the listeners have not finished closing: /readyz must already say no.
      await waitFor(
        async () => (await readyz(httpPort).catch(() => ({ status: 0, body: '' }))).status === 503,
        5000,
        '/readyz 503',
      );
      assert.match((await readyz(httpPort)).body, /^draining: /);
      await waitFor(() => refused(d.ports.local), 5000, 'new SMTP connections refused');
      c.write('second half\r\n.\r\n');
      const r = await c.read();
      assert.match(r.lines.join(), /^250 2\.0\.0 Ok: queued as \S+$/);
      await c.quit();
      assert.equal(await d.exited, 0);
      const delivered = world.gmail.messages.filter((m) => m.rcptTo.includes('drain@example.org')).length;
      const spooled = (await readdir(join(config.stateDir as string, 'spool'))).filter((f) =>
        /^[^.]+\.(msg|eml)$/.test(f),
      ).length;
      assert.equal(delivered + spooled, 1, `delivered ${delivered}, spooled ${spooled}`);
    } finally {
      if (d.child.exitCode === null) d.child.kill('SIGKILL');
    }
  } finally {
    await world.close();
  }
});
