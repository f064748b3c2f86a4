// The upstream hands spooled bytes to nodemailer's pool without its Mail layer; these check
// the start-up guard on that contract and the envelope spelling it reproduces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import MimeNode from 'nodemailer/lib/mime-node/index.js';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';
import {
  rawSendProblems,
  assertRawSendContract,
  wireAddress,
  dotStuffingProblems,
  fastDotStuff,
} from '../../src/upstream/smtp/rawSend.js';

test('the installed nodemailer pool asks the raw message only for what it provides', () => {
  assert.deepEqual(rawSendProblems(), []);
  assert.doesNotThrow(() => assertRawSendContract());
});

test('a pool that needs more of the message is refused at start-up with the fix', () => {
  const changed = ['send(mail) { const s = mail.message.createReadStream(); mail.message.getAddresses(); }'];
  assert.deepEqual(rawSendProblems(changed), [
    'the pool calls mail.message.getAddresses(), which the raw message does not provide',
  ]);
  assert.throws(
    () => assertRawSendContract(changed),
    /written for 10\.6\.1.*getAddresses.*Install nodemailer 10\.6\.1 exactly/,
  );
  assert.match(
    rawSendProblems(['send(mail) { compile(mail.message) }']).join(),
    /no longer reads.*createReadStream.*hands mail\.message on as a whole/,
  );
});

test("envelope addresses are spelled as nodemailer's Mail layer would send them", () => {
  const viaMailLayer = (a: string) => new MimeNode().setEnvelope({ from: a, to: [] }).getEnvelope().from;
  for (const a of [
    'scanner@example.com',
    'Bob.Smith+tag@Example.ORG',
    'safe@jõgeva.ee',
    'jürgen@example.com',
    '"odd local"@example.com',
    "o'brien@example.com",
    'user@[192.0.2.1]',
    'x@localhost',
  ]) {
    assert.equal(wireAddress(a), viaMailLayer(a), a);
  }
  assert.equal(wireAddress(''), '');
});

// Dot-stuffing: clean chunks skip nodemailer's byte loop (fastDotStuff), every other chunk goes
// through it; the bytes on the wire must be DataStream's own, however the message is chunked.
const originalTransform = (DataStream.prototype as unknown as { _transform: unknown })._transform;

async function stuffed(parts: Buffer[], transform?: unknown): Promise<Buffer> {
  const ds = new DataStream();
  if (transform) (ds as unknown as { _transform: unknown })._transform = transform;
  const out: Buffer[] = [];
  ds.on('data', (c: Buffer) => out.push(c));
  const ended = new Promise((r) => ds.on('end', r));
  for (const p of parts) ds.write(p);
  ds.end();
  await ended;
  return Buffer.concat(out);
}

test('fast dot-stuffing writes exactly what nodemailer DataStream writes, for any chunking', async () => {
  assert.deepEqual(dotStuffingProblems(), []);
  assertRawSendContract();
  // Installed: a pooled connection's DataStream now takes the fast path.
  assert.equal((DataStream.prototype as unknown as { _transform: unknown })._transform, fastDotStuff);
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = ['a', 'b', '.', '\r', '\n', '\r\n', '\r\n', '\r\n.', 'xyz'];
  let fastChunks = 0;
  for (let round = 0; round < 400; round++) {
    // Mostly clean CRLF text (the fast path), sometimes with the characters DataStream changes.
    const clean = rnd(3) === 0;
    let text = '';
    const len = 1 + rnd(120);
    while (text.length < len) text += clean ? ['abc', '\r\n', 'de.f'][rnd(3)] : alphabet[rnd(alphabet.length)];
    const all = Buffer.from(text, 'latin1');
    const parts: Buffer[] = [];
    for (let off = 0; off < all.length; ) {
      const n = 1 + rnd(20);
      parts.push(all.subarray(off, off + n));
      off += n;
    }
    const want = await stuffed(parts, originalTransform);
    const got = await stuffed(parts);
    assert.deepEqual(got, want, JSON.stringify(text));
    if (clean) fastChunks++;
  }
  assert.ok(fastChunks > 50);
  // A large clean message passes through unchanged apart from the final dot.
  const big = Buffer.from('QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVph\r\n'.repeat(10_000));
  const parts = Array.from({ length: Math.ceil(big.length / 32768) }, (_, i) =>
    big.subarray(i * 32768, (i + 1) * 32768),
  );
  assert.deepEqual(await stuffed(parts), Buffer.concat([big, Buffer.from('.\r\n')]));
});

test('a DataStream that no longer stuffs like the fast path is refused at start-up', () => {
  const noStuffing = function (
    this: { push(b: Buffer): void; lastByte: number },
    chunk: Buffer,
    _e: string,
    done: () => void,
  ) {
    this.push(chunk);
    this.lastByte = chunk[chunk.length - 1];
    done();
  };
  assert.match(
    dotStuffingProblems(noStuffing as never).join(),
    /DataStream no longer writes what the fast dot-stuffing writes/,
  );
});
