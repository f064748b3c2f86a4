// Envelope addresses in header fields (the Gmail API's Bcc:): a local part that is no dot-atom
// is written as an RFC 5322 quoted string, read back by a parser that is not nodemailer's
// (python3's email package) as exactly the envelope's recipients; one that no header can carry
// holds the message with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { addrSpec, quoteLocalPart, localPartValue } from '../../src/upstream/addressQuote.js';
import { planRecipients, bccField, mailboxKey } from '../../src/upstream/apiEnvelope.js';
import { startBridge, message, type RunningBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const FROM = 'scanner@example.com';

/** Runs a python3 script (asynchronously: the bridge under test runs in this process) with `input` on stdin; its stdout as JSON. */
function python(script: string, input: Buffer): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`python3 exited ${code}: ${err}`)),
    );
    child.stdin.end(input);
  });
}

/** One SMTP transaction from python3's smtplib, RCPT lines written verbatim (smtplib would re-parse the addresses). */
async function smtpSend(
  port: number,
  w: FakeWorld,
  rcpts: string[],
  raw: string,
): Promise<{ rcpt: [number, string][]; data: [number, string] }> {
  const script = `
import json, smtplib, sys
c = json.loads(sys.stdin.buffer.read().decode('utf-8'))
s = smtplib.SMTP('127.0.0.1', c['port'], timeout=60)
s.ehlo('client.test')
s.login(c['user'], c['pass'])
code, _ = s.docmd('MAIL FROM:<%s>' % c['from'])
assert code == 250, code
rcpt = [list((lambda r: (r[0], r[1].decode()))(s.docmd('RCPT TO:<%s>' % a))) for a in c['rcpts']]
code, msg = s.data(c['raw'].encode())
s.quit()
print(json.dumps({'rcpt': rcpt, 'data': [code, msg.decode()]}))
`;
  const input = Buffer.from(
    JSON.stringify({ port, user: w.user.username, pass: w.user.password, from: FROM, rcpts, raw }),
  );
  return (await python(script, input)) as { rcpt: [number, string][]; data: [number, string] };
}

/** The header as python3 reads it: every Bcc address (headerregistry: local part value and domain) and the getaddresses count. */
async function pythonBcc(
  raw: Buffer,
): Promise<{ addresses: [string, string][]; getaddresses: string[]; defects: string[] }> {
  const script = `
import email, email.utils, json, sys
from email import policy
raw = sys.stdin.buffer.read()
m = email.message_from_bytes(raw, policy=policy.default)
h = m['Bcc']
legacy = email.message_from_bytes(raw)
print(json.dumps({
  'addresses': [[a.username, a.domain] for a in h.addresses],
  'getaddresses': [a for _, a in email.utils.getaddresses(legacy.get_all('Bcc') or [])],
  'defects': [type(d).__name__ for d in h.defects],
}))
`;
  return (await python(script, raw)) as { addresses: [string, string][]; getaddresses: string[]; defects: string[] };
}

test('addr-spec: dot-atoms stay bare; other local parts are quoted with " and \\ escaped; what no header can carry is null', () => {
  assert.equal(addrSpec('plain.name+tag@dest.test'), 'plain.name+tag@dest.test');
  assert.equal(addrSpec('a,b@dest.test'), '"a,b"@dest.test');
  assert.equal(addrSpec('x;y@dest.test'), '"x;y"@dest.test');
  assert.equal(addrSpec('g:h@dest.test'), '"g:h"@dest.test');
  assert.equal(addrSpec('p)q@dest.test'), '"p)q"@dest.test');
  assert.equal(addrSpec('r"s@dest.test'), '"r\\"s"@dest.test');
  assert.equal(addrSpec('c\\d@dest.test'), '"c\\\\d"@dest.test');
  assert.equal(addrSpec('.lead@dest.test'), '".lead"@dest.test', 'no dot-atom: a leading dot');
  assert.equal(addrSpec('two..dots@dest.test'), '"two..dots"@dest.test');
  assert.equal(addrSpec('a b@dest.test'), '"a b"@dest.test');
  assert.equal(addrSpec('"a,b"@dest.test'), '"a,b"@dest.test', 'an already quoted local part is kept');
  assert.equal(addrSpec('"jo"@dest.test'), 'jo@dest.test', 'a needlessly quoted one is written bare');
  assert.equal(addrSpec('üser@dömain.test'), 'üser@dömain.test', 'SMTPUTF8 (RFC 6532)');
  assert.equal(addrSpec('user@[192.0.2.1]'), 'user@[192.0.2.1]');
  assert.equal(addrSpec('a\r\nBcc: evil@x.test@dest.test'), null, 'a line break cannot be quoted');
  assert.equal(addrSpec('a\x01b@dest.test'), null);
  assert.equal(addrSpec('user@dest,test'), null, 'a domain cannot be quoted');
  assert.equal(addrSpec('nodomain'), null);
  assert.equal(quoteLocalPart('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(localPartValue('"a\\"b"'), 'a"b');
  // A header's quoted spelling and the envelope's bare one are one mailbox.
  assert.equal(mailboxKey('"a,b"@Dest.TEST'), mailboxKey('a,b@dest.test'));
  assert.deepEqual(planRecipients(['a,b@dest.test'], ['"a,b"@dest.test'], 100, 'the Gmail API'), { ok: true, bcc: [] });
});

test('plan: a recipient no header can carry holds the message with the reason; the Bcc field is parsed back exactly by python3', async () => {
  const bad = planRecipients(['ok@dest.test', 'x@dest,test'], [], 100, 'the Gmail API');
  assert.equal(bad.ok, false);
  assert.match(!bad.ok ? bad.reason : '', /no RFC 5322 address can express "x@dest,test"/);
  const rcpts = [
    'a,b@dest.test',
    'x;y@dest.test',
    'g:h@dest.test',
    'p)q@dest.test',
    'r"s@dest.test',
    'c\\d@dest.test',
    'plain@dest.test',
  ];
  const plan = planRecipients(rcpts, [], 100, 'the Gmail API');
  assert.ok(plan.ok);
  const parsed = await pythonBcc(Buffer.from(bccField(plan.bcc) + 'Subject: x\r\n\r\nbody\r\n'));
  assert.deepEqual(
    parsed.addresses,
    rcpts.map((r) => [r.slice(0, r.lastIndexOf('@')), 'dest.test']),
  );
  assert.equal(parsed.getaddresses.length, rcpts.length, JSON.stringify(parsed.getaddresses));
  assert.deepEqual(parsed.defects, []);
});

test('gmail-api end to end: envelope recipients with , ; : ) " \\ in the local part reach the API as one Bcc address each, and no recipient sees another', {
  timeout: 90_000,
}, async () => {
  const w = await startFakeWorld({ transport: 'gmail-api' });
  let b: RunningBridge | undefined;
  try {
    b = await startBridge(w);
    // smtp-server accepts these bare (and a quoted one); it refuses what no header could carry (a control character, `x@dest,test`).
    const hidden = [
      'a,b@dest.test',
      'x;y@dest.test',
      'g:h@dest.test',
      'p)q@dest.test',
      'r"s@dest.test',
      'c\\d@dest.test',
      '"e,f"@dest.test',
    ];
    const raw = message({ from: FROM, to: 'Visible <visible@dest.test>' }).toString('utf8');
    const r = await smtpSend(b.port, w, ['visible@dest.test', ...hidden], raw);
    assert.deepEqual(
      r.rcpt.map((x) => x[0]),
      [250, ...hidden.map(() => 250)],
      JSON.stringify(r.rcpt),
    );
    assert.equal(r.data[0], 250, r.data[1]);
    await w.gmailApi!.waitForMessages(1);
    const got = w.gmailApi!.messages[0];
    const parsed = await pythonBcc(got.raw);
    // Each envelope-only recipient parsed back exactly once, by value, and nothing else.
    assert.deepEqual(
      parsed.addresses.map(([local, domain]) => `${local}@${domain}`).sort(),
      hidden.map((h) => `${localPartValue(h.slice(0, h.lastIndexOf('@')))}@dest.test`).sort(),
      `python3 read the Bcc field as ${JSON.stringify(parsed.addresses)}:\n${got.raw.toString('utf8').split('\r\n\r\n')[0]}`,
    );
    assert.equal(parsed.getaddresses.length, hidden.length, JSON.stringify(parsed.getaddresses));
    assert.deepEqual(parsed.defects, []);
    // What recipients get (Gmail strips Bcc): no hidden recipient in it.
    const visible = got.visible.toString('utf8');
    for (const h of hidden)
      assert.ok(
        !visible.includes(localPartValue(h.slice(0, h.lastIndexOf('@')))),
        `${h} is visible to the other recipients`,
      );
    await waitFor(() => b!.logs.some((l) => l.includes('"delivered"')), 15_000, 'delivered line');
  } finally {
    await b?.stop();
    await w.close();
  }
});
