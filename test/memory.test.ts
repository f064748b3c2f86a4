// A 25 MB message must stream through the daemon (client -> spool file -> Gmail) without
// the daemon's memory growing with the message size. Measured on a real `serve` process
// through /proc, so it is the daemon's own RSS, not the test runner's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream, createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../src/fakes/world.js';
import { spawnBridge, sendThroughBridge, message, importToken } from './helpers/bridge.js';
import { RawSmtp } from './helpers/listener.js';
import { splitReceived } from './helpers/received.js';

/** A command whose reply must carry `code`; returns the whole reply text. The long timeout
 * leaves room for the final '.' of a 25 MB message on a busy machine. */
async function expectCmd(s: RawSmtp, line: string, code: number): Promise<string> {
  const r = await s.cmd(line, 30_000);
  const text = r.lines.join('\r\n');
  if (r.code !== code) throw new Error(`"${line.slice(0, 40)}" -> ${text}`);
  return text;
}

async function procStatus(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

async function writeBigMessage(file: string, bytes: number): Promise<number> {
  const out = createWriteStream(file);
  const head = 'From: scanner@example.com\r\nTo: big@example.org\r\nSubject: 25 MB scan\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  out.write(head);
  const line = Buffer.from('QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n');
  const block = Buffer.concat(Array.from({ length: 1000 }, () => line));
  let written = head.length;
  while (written < bytes) {
    if (!out.write(block)) await once(out, 'drain');
    written += block.length;
  }
  out.end();
  await once(out, 'finish');
  return written;
}

test('a 25 MB message streams through the daemon with flat RSS', { timeout: 120_000 }, async (t) => {
  if (process.platform !== 'linux') return t.skip('needs /proc');
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
    importToken(configFile, world);
    const file = join(world.dir, 'big.eml');
    const size = await writeBigMessage(file, 25_000_000); // 25 MB, under the default 25 MiB limit
    // V8's young generation grows with the heap, differently in each version (Node 26 lets
    // ~36 MB of short-lived chunk buffers pile up between scavenges, Node 22 ~14 MB). A fixed
    // 1 MB semi-space makes the high-water mark about what is retained, on every Node line;
    // a message held in memory still adds its full size (it lives outside the young generation).
    const nodeOptions = process.env.MEMTEST_NODE_OPTIONS ?? '--max-semi-space-size=1';
    const d = await spawnBridge(configFile, { NODE_OPTIONS: nodeOptions });
    try {
      const pid = d.child.pid!;
      // Warm up: one small message through the whole path (pools, TLS, token) first.
      await sendThroughBridge({ port: d.ports.local, user: world.user.username, pass: world.user.password, from: 'scanner@example.com', to: ['warm@example.org'], raw: message({ from: 'scanner@example.com', to: 'warm@example.org' }) });
      await world.gmail.waitForMessages(1, 10_000);
      const base = await procStatus(pid);

      // Same session shape for both sizes; the 5 MB message raises the high-water mark by
      // whatever fixed cost streaming has (socket, TLS, file buffers, GC slack), so what the
      // 25 MB message adds on top is what grows with the message size.
      const sendFile = async (path: string, rcpt: string) => {
        const s = await RawSmtp.connect(d.ports.local);
        await expectCmd(s, 'EHLO memtest', 250);
        await expectCmd(s, `AUTH PLAIN ${Buffer.from(`\0${world.user.username}\0${world.user.password}`).toString('base64')}`, 235);
        await expectCmd(s, 'MAIL FROM:<scanner@example.com>', 250);
        await expectCmd(s, `RCPT TO:<${rcpt}>`, 250);
        await expectCmd(s, 'DATA', 354);
        await s.pipeFrom(createReadStream(path));
        const t0 = process.hrtime.bigint();
        const reply = await expectCmd(s, '.', 250);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        await expectCmd(s, 'QUIT', 221);
        assert.match(reply, /^250 2\.0\.0 Ok: queued as /);
        return ms;
      };
      const small = join(world.dir, 'small.eml');
      const smallSize = await writeBigMessage(small, 5_000_000);
      await sendFile(small, 'small@example.org');
      await world.gmail.waitForMessages(2, 60_000);
      assert.equal(splitReceived(world.gmail.messages[1].raw).rest.length, smallSize);
      const afterSmall = await procStatus(pid);

      const dataEndTo250Ms = await sendFile(file, 'big@example.org');
      await world.gmail.waitForMessages(3, 60_000);
      assert.equal(splitReceived(world.gmail.messages[2].raw).rest.length, size);
      const after = await procStatus(pid);
      const mb = (n: number) => (n / 2 ** 20).toFixed(1);
      t.diagnostic(
        `daemon RSS after warm-up ${mb(base.rss)} MB; peak after a 5 MB message ${mb(afterSmall.hwm)} MB; ` +
          `peak after a ${mb(size)} MB message ${mb(after.hwm)} MB; DATA end -> 250 for it: ${dataEndTo250Ms.toFixed(1)} ms`,
      );
      // Holding the message in memory anywhere would add at least the 20 MB size difference
      // (measured with the fixed semi-space on Node 22, 24 and 26: 0 MB).
      const extra = after.hwm - afterSmall.hwm;
      assert.ok(extra < 20 * 2 ** 20, `peak RSS rose ${mb(extra)} MB more for the 25 MB message than for the 5 MB one`);
    } finally {
      d.child.kill('SIGTERM');
      await d.exited;
    }
  } finally {
    await world.close();
  }
});
