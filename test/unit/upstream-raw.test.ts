// The upstream hands spooled bytes to nodemailer's pool without its Mail layer; these check
// the start-up guard on that contract and the envelope spelling it reproduces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import MimeNode from 'nodemailer/lib/mime-node/index.js';
import { rawSendProblems, assertRawSendContract, wireAddress } from '../../src/upstream/smtp/rawSend.js';

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
