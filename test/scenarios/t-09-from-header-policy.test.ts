// The From header as the sender policy sees it, end to end: refused by default, rewritten
// when the listener says `fromHeader: rewrite`; the null sender of relayed bounces is accepted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld } from '../../src/fakes/world.js';
import { startBridge, sendThroughBridge } from '../helpers/bridge.js';
import { splitReceived } from '../helpers/received.js';

const spoofed = (extra = '') =>
  Buffer.from(
    'Received: from printer (printer.lan [192.168.1.50])\r\n\tby host; Thu, 26 Nov 2026 10:00:00 +0000\r\n' +
      'From: "Scanner 3rd floor"\r\n <ceo@example.com>\r\nTo: alice@example.org\r\nSubject: Scan =?utf-8?q?M=C3=BCller?=\r\n' +
      extra +
      '\r\nbody line one\r\nFrom: not a header, part of the body\r\n',
  );

test('default: a From header the user does not own is refused with 553 5.7.1', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world);
  try {
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        user: world.user.username,
        pass: world.user.password,
        from: 'scanner@example.com',
        to: ['alice@example.org'],
        raw: spoofed(),
      }),
      (e: { responseCode?: number; response?: string }) => e.responseCode === 553 && /5\.7\.1/.test(e.response ?? ''),
    );
    assert.equal((await b.bridge.spool.list()).length, 0);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('fromHeader: rewrite puts the envelope sender in From, keeps the name and every other byte, adds Reply-To', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, fromHeader: 'rewrite' }],
  });
  try {
    const res = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['alice@example.org'],
      raw: spoofed(),
    });
    assert.match(res.response, /^250 /);
    await world.gmail.waitForMessages(1, 10_000);
    const got = splitReceived(world.gmail.messages[0].raw.toString('utf8')).rest;
    assert.equal(
      got,
      'Received: from printer (printer.lan [192.168.1.50])\r\n\tby host; Thu, 26 Nov 2026 10:00:00 +0000\r\n' +
        'From: "Scanner 3rd floor" <scanner@example.com>\r\nTo: alice@example.org\r\nSubject: Scan =?utf-8?q?M=C3=BCller?=\r\n' +
        'Reply-To: "Scanner 3rd floor" <ceo@example.com>\r\n' +
        '\r\nbody line one\r\nFrom: not a header, part of the body\r\n',
    );
    assert.ok(b.logs.some((l) => l.includes('from header rewritten')));
  } finally {
    await b.stop();
    await world.close();
  }
});

test('the null sender (a bounce relayed by Postfix) is accepted when its From header is allowed', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world);
  try {
    const raw =
      'From: scanner@example.com\r\nTo: alice@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n';
    const res = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: '',
      to: ['alice@example.org'],
      raw,
    });
    assert.match(res.response, /^250 /);
    await world.gmail.waitForMessages(1, 10_000);
    assert.equal(world.gmail.messages[0].mailFrom, '');
  } finally {
    await b.stop();
    await world.close();
  }
});
