// Measuring a `serve` process's memory through /proc and feeding it large messages, for the
// memory tests of each upstream transport.
import assert from 'node:assert/strict';
import { createWriteStream, createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { RawSmtp } from './listener.js';

/** V8's young generation grows with the heap, differently in each version (Node 26 lets
 * ~36 MB of short-lived chunk buffers pile up between scavenges, Node 22 ~14 MB). A fixed
 * 1 MB semi-space makes the high-water mark about what is retained, on every Node line;
 * a message held in memory still adds its full size (it lives outside the young generation). */
export const MEMTEST_NODE_OPTIONS = process.env.MEMTEST_NODE_OPTIONS ?? '--max-semi-space-size=1';

export const mb = (n: number): string => (n / 2 ** 20).toFixed(1);

export async function procStatus(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** The big message may raise the peak only by the fixed cost the small one already showed:
 * holding it in memory anywhere would add at least the size difference (20 MB). */
export function assertFlatPeak(afterSmall: { hwm: number }, after: { hwm: number }): void {
  const extra = after.hwm - afterSmall.hwm;
  assert.ok(extra < 20 * 2 ** 20, `peak RSS rose ${mb(extra)} MB more for the 25 MB message than for the 5 MB one`);
}

export async function writeBigMessage(file: string, bytes: number): Promise<number> {
  const out = createWriteStream(file);
  const head =
    'From: scanner@example.com\r\nTo: big@example.org\r\nSubject: 25 MB scan\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n';
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

/** A command whose reply must carry `code`; returns the whole reply text. The long timeout
 * leaves room for the final '.' of a 25 MB message on a busy machine. */
async function expectCmd(s: RawSmtp, line: string, code: number): Promise<string> {
  const r = await s.cmd(line, 30_000);
  const text = r.lines.join('\r\n');
  if (r.code !== code) throw new Error(`"${line.slice(0, 40)}" -> ${text}`);
  return text;
}

/** One SMTP session that pipes a message file as DATA; resolves the ms from the final '.' to the 250. */
export async function sendFile(
  port: number,
  user: { username: string; password: string },
  path: string,
  rcpts: string | string[],
): Promise<number> {
  const s = await RawSmtp.connect(port);
  await expectCmd(s, 'EHLO memtest', 250);
  await expectCmd(s, `AUTH PLAIN ${Buffer.from(`\0${user.username}\0${user.password}`).toString('base64')}`, 235);
  await expectCmd(s, 'MAIL FROM:<scanner@example.com>', 250);
  for (const rcpt of [rcpts].flat()) await expectCmd(s, `RCPT TO:<${rcpt}>`, 250);
  await expectCmd(s, 'DATA', 354);
  await s.pipeFrom(createReadStream(path));
  const t0 = process.hrtime.bigint();
  const reply = await expectCmd(s, '.', 250);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await expectCmd(s, 'QUIT', 221);
  assert.match(reply, /^250 2\.0\.0 Ok: queued as /);
  return ms;
}
