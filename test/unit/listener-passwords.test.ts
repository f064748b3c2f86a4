// Password hashing, verification, the success cache, and the `hash-password` command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Writable } from 'node:stream';
import { scryptSync } from 'node:crypto';
import {
  hashPassword,
  verifyPassword,
  PasswordCache,
  checkPassword,
  kdfStats,
  hashPasswordCommand,
} from '../../src/listener/passwords.js';
import { isValidPasswordHash } from '../../src/config/phc.js';
import { waitFor } from '../helpers/wait.js';

function sink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c, _e, cb) {
      chunks.push(Buffer.from(c));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

test('hashPassword makes a PHC scrypt string that verifies only the right password', async () => {
  const h = await hashPassword('s3cret päss');
  assert.match(h, /^\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  assert.notEqual(await hashPassword('s3cret päss'), h, 'random salt');
  assert.equal(await verifyPassword('s3cret päss', h), true);
  assert.equal(await verifyPassword('s3cret pass', h), false);
  assert.equal(await verifyPassword('', h), false);
  // The string is plain scrypt: an independent implementation agrees with it.
  const [, , params, salt, hash] = h.split('$');
  assert.equal(params, 'ln=15,r=8,p=1');
  const ref = scryptSync('s3cret päss', Buffer.from(salt, 'base64'), 32, {
    N: 2 ** 15,
    r: 8,
    p: 1,
    maxmem: 64 * 1024 * 1024,
  });
  assert.equal(ref.toString('base64').replace(/=+$/, ''), hash);
});

test('malformed or absurd hashes never verify', async () => {
  for (const bad of [
    '$scrypt$',
    'plaintext',
    '$scrypt$ln=15,r=8,p=1$AAAA$BBBB',
    '$scrypt$ln=30,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g',
  ]) {
    assert.equal(isValidPasswordHash(bad), false, bad);
    assert.equal(await verifyPassword('x', bad), false, bad);
  }
});

test('PasswordCache: hit after add, bound to the hash, TTL, size bound, clear', () => {
  let now = 1000;
  const c = new PasswordCache({ maxEntries: 2, ttlMs: 100, now: () => now });
  c.add('a', 'pw', 'H1');
  assert.equal(c.has('a', 'pw', 'H1'), true);
  assert.equal(c.has('a', 'pw2', 'H1'), false);
  assert.equal(c.has('b', 'pw', 'H1'), false);
  // username\0password is one unit: no ambiguity between ("a\0b", "c") and ("a", "b\0c").
  c.add('x\0y', 'z', 'H');
  assert.equal(c.has('x', 'y\0z', 'H'), false);
  assert.equal(c.has('a', 'pw', 'H2'), false, 'a changed hash invalidates');
  c.add('a', 'pw', 'H1');
  now += 101;
  assert.equal(c.has('a', 'pw', 'H1'), false, 'expired');
  c.add('1', 'p', 'H');
  c.add('2', 'p', 'H');
  c.add('3', 'p', 'H');
  assert.equal(c.size, 2);
  assert.equal(c.has('1', 'p', 'H'), false, 'oldest evicted');
  assert.equal(c.has('3', 'p', 'H'), true);
  c.clear();
  assert.equal(c.size, 0);
});

test('checkPassword: one KDF per miss (known or unknown user), none on a cache hit, failures never cached', async () => {
  const h = await hashPassword('pw');
  const cache = new PasswordCache();
  const k0 = kdfStats.calls;
  assert.equal(await checkPassword(cache, 'u', 'wrong', h), false);
  assert.equal(await checkPassword(cache, 'ghost', 'pw', undefined), false);
  assert.equal(kdfStats.calls - k0, 2);
  assert.equal(cache.size, 0);
  assert.equal(await checkPassword(cache, 'u', 'pw', h), true);
  const k1 = kdfStats.calls;
  assert.equal(await checkPassword(cache, 'u', 'pw', h), true);
  assert.equal(await checkPassword(cache, 'u', 'pw', h), true);
  assert.equal(kdfStats.calls, k1);
  assert.equal(await checkPassword(cache, 'u', 'pw', 'not-a-hash'), false);
});

test('hash-password from a pipe: first line, trailing CR/LF stripped', async () => {
  const input = new PassThrough();
  const out = sink();
  const err = sink();
  const p = hashPasswordCommand(input, out.stream, false, err.stream);
  input.end('pipe pässword\r\nsecond line ignored\n');
  assert.equal(await p, 0);
  const h = out.text().trim();
  assert.equal(out.text().split('\n').length, 2);
  assert.equal(await verifyPassword('pipe pässword', h), true);
  assert.equal(err.text(), '');
});

test('hash-password refuses an empty password', async () => {
  const input = new PassThrough();
  const out = sink();
  const err = sink();
  const p = hashPasswordCommand(input, out.stream, false, err.stream);
  input.end('\n');
  assert.equal(await p, 1);
  assert.equal(out.text(), '');
  assert.match(err.text(), /empty password/);
});

/** A stand-in terminal: records raw mode, delivers keystrokes. */
function fakeTty() {
  const input = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode: (b: boolean) => void; raw: boolean[] };
  input.isTTY = true;
  input.raw = [];
  input.setRawMode = (b: boolean) => {
    input.raw.push(b);
  };
  return input;
}

test('hash-password on a terminal: no echo, asks twice, handles backspace', async () => {
  const tty = fakeTty();
  const out = sink();
  const prompt = sink();
  const p = hashPasswordCommand(tty, out.stream, true, prompt.stream);
  tty.write('tty-secreX\u007ft\r');
  await waitFor(() => prompt.text().includes('Repeat password: '), 5000, 'the second prompt');
  tty.write('tty-secret\r');
  assert.equal(await p, 0);
  assert.equal(await verifyPassword('tty-secret', out.text().trim()), true);
  assert.equal(prompt.text(), 'Password: \nRepeat password: \n');
  assert.ok(!out.text().includes('tty-secret'));
  assert.deepEqual(tty.raw, [true, false, true, false], 'raw mode on while typing, restored after');
});

test('hash-password on a terminal: mismatch exits 1, Ctrl-C exits 130', async () => {
  const tty = fakeTty();
  const out = sink();
  const prompt = sink();
  const p = hashPasswordCommand(tty, out.stream, true, prompt.stream);
  tty.write('one\r');
  await waitFor(() => prompt.text().includes('Repeat password: '), 5000, 'the second prompt');
  tty.write('two\r');
  assert.equal(await p, 1);
  assert.equal(out.text(), '');
  assert.match(prompt.text(), /do not match/);

  const tty2 = fakeTty();
  const p2 = hashPasswordCommand(tty2, out.stream, true, prompt.stream);
  tty2.write('abc\u0003');
  assert.equal(await p2, 130);
  assert.equal(out.text(), '');
});
