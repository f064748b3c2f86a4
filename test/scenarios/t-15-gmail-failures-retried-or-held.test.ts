// Gmail's failure classes end to end: the fake Gmail answers with scripted replies and the
// bridge (real nodemailer upstream, real worker, real spool) must take the right action.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { sendAsScanner, startBridge, withBridge } from '../helpers/bridge.js';
import { waitFor, sleep } from '../helpers/wait.js';

const send = sendAsScanner;

test('421 and 451 are retried with backoff, then delivered once', async () => {
  await withBridge(async (world, b) => {
    world.gmail.script({ stage: 'data', reply: '451 4.3.0 Mail server temporarily rejected message.', count: 1 });
    world.gmail.script({ stage: 'mail', reply: '421 4.7.0 Try again later, closing connection.', count: 1 });
    await send(world, b, ['retry@example.org']);
    await world.gmail.waitForMessages(1, 10_000);
    await waitFor(async () => (await b.bridge.spool.list()).length === 0, 5000, 'spool empty');
    // Canary: a later message delivered after its retries had their chance to send it again.
    await send(world, b, ['canary@example.org'], 'canary');
    await world.gmail.waitForMessages(2, 10_000);
    assert.deepEqual(
      world.gmail.messages.map((m) => m.rcptTo[0]),
      ['retry@example.org', 'canary@example.org'],
      'delivered exactly once',
    );
    assert.ok(b.logs.filter((l) => l.includes('"message":"deferred"')).length >= 2, 'two deferrals logged');
  });
});

test('550 5.4.5 daily limit holds the account without bouncing', async () => {
  await withBridge(async (world, b) => {
    world.gmail.script({
      stage: 'mail',
      reply:
        '550 5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852',
      count: 1,
    });
    await send(world, b, ['quota@example.org']);
    await waitFor(() => b.logs.some((l) => l.includes('"reason":"quota"')), 5000, 'quota hold');
    // time is the subject: the hold must outlast several 300 ms retry steps; the only account is
    // held, so no canary message could pass to show a step went by.
    await sleep(1000);
    const [env] = await b.bridge.spool.list();
    assert.ok(env, 'the message is still queued');
    assert.equal(world.gmail.messages.length, 0, 'no retry during the hold, and no bounce');
    assert.equal(b.bridge.worker.stats().held.office?.startsWith('quota'), true);
  });
});

test('550 5.1.1 for one recipient: the others are delivered, a DSN for that one goes to the sender', async () => {
  await withBridge(async (world, b) => {
    world.gmail.script({
      stage: 'rcpt',
      rcpt: 'nobody@example.org',
      reply: '550 5.1.1 The email account that you tried to reach does not exist.',
      count: Infinity,
    });
    await send(world, b, ['ok@example.org', 'nobody@example.org']);
    await world.gmail.waitForMessages(2, 10_000);
    const [orig, dsn] = world.gmail.messages;
    assert.deepEqual(orig.rcptTo, ['ok@example.org']);
    assert.equal(dsn.mailFrom, '', 'bounces use the null sender');
    assert.deepEqual(dsn.rcptTo, ['scanner@example.com']);
    const text = dsn.raw.toString();
    assert.match(text, /Content-Type: multipart\/report;[^\r\n]*report-type="?delivery-status/i);
    assert.match(text, /Final-Recipient: rfc822; ?nobody@example\.org/i);
    assert.match(text, /Action: failed/);
    assert.match(text, /Status: 5\.1\.1/);
    assert.match(text, /Diagnostic-Code: smtp; ?550 5\.1\.1/);
    assert.doesNotMatch(text, /Final-Recipient: rfc822; ?ok@example\.org/i);
    await waitFor(async () => (await b.bridge.spool.list()).length === 0, 5000, 'spool empty');
  });
});

test("535 (Gmail's 334 + 535 dialogue) after the renewed token marks the account needs-reauth and holds its mail", async () => {
  const world = await startFakeWorld();
  // A grant for another mailbox than the account's `email`: Gmail refuses every AUTH.
  const wrong = '1//0g-wrong-mailbox-grant';
  world.tokens.addRefreshToken(wrong, { clientId: world.account.clientId, email: 'someone-else@example.com' });
  const b = await startBridge(world, { queue: { retry: ['300ms'] } }, { importToken: false });
  try {
    await b.bridge.tokens.importRefreshToken('office', wrong);
    await send(world, b, ['auth@example.org']);
    await waitFor(() => b.bridge.tokens.state('office') === 'needs-reauth', 10_000, 'needs-reauth');
    assert.equal(world.gmail.messages.length, 0);
    assert.equal((await b.bridge.spool.list()).length, 1, 'held, not bounced');
    // nodemailer answers the 334 challenge, asks for a renewed token and tries AUTH again.
    assert.ok(world.gmail.auths.filter((a) => !a.ok).length >= 2, 'AUTH retried with a renewed token before giving up');
    assert.ok(
      b.logs.some((l) => /"level":"error"/.test(l) && l.includes('xoauth2-bridge authorize office')),
      'one loud line with the fix',
    );
    const attempts = world.gmail.auths.length;
    // time is the subject: no AUTH over several 300 ms retry steps; the only account is held,
    // so no canary message could pass to show a step went by.
    await sleep(1000);
    assert.equal(world.gmail.auths.length, attempts, 'no more AUTH attempts while the account needs re-authorization');
  } finally {
    await b.stop();
    await world.close();
  }
});

test('250 recipients with a limit of 100 go out as 3 transactions; a 451 midway resends only the rest', async () => {
  const rcpts = Array.from({ length: 250 }, (_, i) => `r${i}@example.org`);
  await withBridge(async (world, b) => {
    // Fail the second transaction once: the first 100 are done and must not be sent again.
    let seen = 0;
    const orig = world.gmail.messages.push.bind(world.gmail.messages);
    world.gmail.messages.push = (...m) => {
      seen += m.length;
      if (seen === 1)
        world.gmail.script({ stage: 'data', reply: '451 4.3.0 Mail server temporarily rejected message.', count: 1 });
      return orig(...m);
    };
    await send(world, b, rcpts);
    await waitFor(
      () => world.gmail.messages.reduce((n, m) => n + m.rcptTo.length, 0) >= 250,
      15_000,
      'all recipients delivered',
    );
    await waitFor(async () => (await b.bridge.spool.list()).length === 0, 5000, 'spool empty');
    const sizes = world.gmail.messages.map((m) => m.rcptTo.length);
    assert.deepEqual(sizes, [100, 100, 50]);
    const all = world.gmail.messages.flatMap((m) => m.rcptTo);
    assert.equal(new Set(all).size, 250, 'no recipient received it twice');
  });
});

test('50 concurrent deliveries on a cold start make exactly one token request', async () => {
  await withBridge(
    async (world, b) => {
      const before = world.tokens.requests.length;
      await Promise.all(Array.from({ length: 50 }, (_, i) => send(world, b, [`c${i}@example.org`])));
      await world.gmail.waitForMessages(50, 20_000);
      const grants = world.tokens.requests.slice(before).filter((r) => r.grantType === 'refresh_token');
      assert.equal(grants.length, 1);
      assert.ok(
        world.gmail.auths.filter((a) => a.ok).length <= 3,
        'pooled upstream connections: at most maxConnections AUTHs',
      );
    },
    { listeners: [{ name: 'local', host: '127.0.0.1', port: 0, maxConnectionsPerIp: 60 }] },
  );
});
