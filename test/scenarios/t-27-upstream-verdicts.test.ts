// What one upstream attempt means, end to end through the fake Gmail and the fake token
// endpoint: a send's verdict comes from its own reply (not from a token blip on another
// pooled connection), a rejected token is replaced whatever its age, and a malformed
// reply is never taken as delivery.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { sendAsScanner, startBridge, withBridge, type RunningBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const send = sendAsScanner;

const idOf = (r: { response: string }) => r.response.split(' ').pop()!;
const grants = (world: FakeWorld) => world.tokens.requests.filter((r) => r.grantType === 'refresh_token').length;
const events = (b: RunningBridge, msg: string, id: string) =>
  b.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((j) => j.message === msg && j.id === id);

test('a token blip while a second pool connection opens does not change the verdict of a 550 on the authenticated one', async () => {
  // Access tokens live 2 s, so the second connection needs a refresh while the first stays authenticated.
  const world = await startFakeWorld({ accessTokenTtlSec: 2 });
  const b = await startBridge(world, { queue: { retry: ['300ms'] } });
  try {
    await send(world, b, ['first@example.org']);
    await world.gmail.waitForMessages(1);
    await waitFor(
      () =>
        b.bridge.tokens.status()[0].accessTokenExpiresAt !== null &&
        Date.parse(b.bridge.tokens.status()[0].accessTokenExpiresAt!) < Date.now(),
      5000,
      'cached token expired',
    );
    // The connection that delivered the first message is idle and authenticated; the
    // token endpoint now resets connections, and the 550 is answered only after the second
    // connection's token request has failed.
    world.tokens.down(true);
    world.gmail.script({
      stage: 'rcpt',
      rcpt: 'nobody@example.org',
      reply: '550 5.1.1 The email account that you tried to reach does not exist.',
      count: 1,
      delayMs: 1500,
    });
    // The 550's message goes first, onto the idle authenticated connection; the second
    // message, sent while the RCPT is pending, needs a new connection and so a token.
    const bad = await send(world, b, ['nobody@example.org'], 'to nobody');
    await waitFor(
      () => b.logs.some((l) => l.includes('RCPT TO:<nobody@example.org>')),
      10_000,
      'the RCPT on the authenticated connection',
    );
    await send(world, b, ['second@example.org'], 'second');
    await waitFor(
      () => events(b, 'bounced', idOf(bad)).length > 0 || events(b, 'deferred', idOf(bad)).length > 0,
      10_000,
      'a verdict for the 550',
    );
    assert.deepEqual(
      events(b, 'deferred', idOf(bad)),
      [],
      "the 550 is not deferred because of another connection's token error",
    );
    assert.equal(events(b, 'bounced', idOf(bad)).length, 1, 'the 550 bounces');
    // The blip really happened before the verdict (a refresh failed while the 550 was pending).
    const failedAt = b.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((j) => String(j.message).includes('access token refresh failed'))?.timestamp;
    assert.ok(
      failedAt && String(failedAt) < String(events(b, 'bounced', idOf(bad))[0].timestamp),
      'a token refresh failed before the 550 was judged',
    );
    world.tokens.down(false);
    await waitFor(
      () => world.gmail.messages.some((m) => m.rcptTo.includes('second@example.org')),
      20_000,
      'the deferred message delivered after the blip',
    );
  } finally {
    await b.stop();
    await world.close();
  }
});

test('a revoked access token seconds old (334 + 535) is replaced by one token request, and the mail flows', async () => {
  await withBridge(async (world, b) => {
    await send(world, b, ['warm@example.org']);
    await world.gmail.waitForMessages(1);
    const before = grants(world);
    // Revoke every access token and drop the pooled connections: the next AUTH uses the cached, now revoked, token.
    world.tokens.expireAccessTokens();
    world.gmail.down(true);
    world.gmail.down(false);
    await send(world, b, ['after-revoke@example.org']);
    await world.gmail.waitForMessages(2, 10_000);
    assert.equal(b.bridge.tokens.state('office'), 'ok');
    assert.equal(grants(world) - before, 1, 'exactly one new token');
  });
});

test('concurrent rejections of one token share one token request', async () => {
  await withBridge(async (world, b) => {
    await send(world, b, ['warm@example.org']);
    await world.gmail.waitForMessages(1);
    const before = grants(world);
    world.tokens.expireAccessTokens();
    world.gmail.down(true);
    world.gmail.down(false);
    await Promise.all(Array.from({ length: 6 }, (_, i) => send(world, b, [`c${i}@example.org`])));
    await world.gmail.waitForMessages(7, 15_000);
    assert.equal(grants(world) - before, 1, 'one refresh for every rejecting connection');
    assert.equal(b.bridge.tokens.state('office'), 'ok');
  });
});

test('a bare 535 (no 334 challenge) gets a fresh token and one more try', async () => {
  await withBridge(async (world, b) => {
    await send(world, b, ['warm@example.org']);
    await world.gmail.waitForMessages(1);
    const before = grants(world);
    world.gmail.down(true);
    world.gmail.down(false);
    world.gmail.script({ stage: 'auth', reply: '535 5.7.8 Username and Password not accepted.', count: 1 });
    await send(world, b, ['bare@example.org']);
    await world.gmail.waitForMessages(2, 10_000);
    assert.equal(grants(world) - before, 1, 'the rejected token was replaced');
    assert.equal(b.bridge.tokens.state('office'), 'ok');
  });
});

test('a bare 535 for the fresh token too: needs-reauth after one new token, mail held', async () => {
  await withBridge(async (world, b) => {
    await send(world, b, ['warm@example.org']);
    await world.gmail.waitForMessages(1);
    const before = grants(world);
    world.gmail.down(true);
    world.gmail.down(false);
    world.gmail.script({ stage: 'auth', reply: '535 5.7.8 Username and Password not accepted.', count: Infinity });
    await send(world, b, ['held@example.org']);
    await waitFor(() => b.bridge.tokens.state('office') === 'needs-reauth', 10_000, 'needs-reauth');
    assert.equal(grants(world) - before, 1, 'one fresh token was tried before giving up');
    assert.equal((await b.bridge.spool.list()).length, 1, 'held, not bounced');
  });
});

test('a malformed reply to DATA ("2x0 huh") is not delivery: deferred, then delivered once', async () => {
  await withBridge(async (world, b) => {
    world.gmail.script({ stage: 'data', reply: '2x0 huh', count: 1 });
    const r = await send(world, b, ['odd@example.org']);
    await waitFor(() => events(b, 'delivered', idOf(r)).length > 0, 10_000, 'delivered');
    const deferred = events(b, 'deferred', idOf(r));
    assert.equal(deferred.length, 1);
    assert.match(String(deferred[0].reply), /malformed reply to DATA: 2x0 huh/);
    assert.equal(events(b, 'delivered', idOf(r)).length, 1, 'counted as delivered only after the real 250');
  });
});

test('a reply with an invalid code ("999 …") is transient, never a bounce', async () => {
  await withBridge(async (world, b) => {
    world.gmail.script({ stage: 'data', reply: '999 something odd', count: 1 });
    world.gmail.script({ stage: 'rcpt', rcpt: 'weird@example.org', reply: '999 who knows', count: 1 });
    const r = await send(world, b, ['weird@example.org']);
    await world.gmail.waitForMessages(1, 15_000);
    assert.deepEqual(
      world.gmail.messages.map((m) => m.rcptTo),
      [['weird@example.org']],
      'delivered, and no DSN was sent',
    );
    assert.equal(events(b, 'bounced', idOf(r)).length, 0);
    assert.ok(events(b, 'deferred', idOf(r)).length >= 1);
  });
});

/** Revokes every access token at the token endpoint and drops the pooled (authenticated) connections. */
function revokeAccessTokens(world: FakeWorld): void {
  world.tokens.expireAccessTokens();
  world.gmail.down(true);
  world.gmail.down(false);
}

for (const bare of [false, true]) {
  test(`a second revocation right after the first (${bare ? 'bare 535' : '334 + 535'}): one token request per rejection, both delivered, no needs-reauth`, async () => {
    await withBridge(async (world, b) => {
      world.gmail.bareAuthFailure = bare;
      await send(world, b, ['warm@example.org']);
      await world.gmail.waitForMessages(1);
      const before = grants(world);
      const authsBefore = world.gmail.auths.length;
      revokeAccessTokens(world);
      await send(world, b, ['first-revoke@example.org']);
      await world.gmail.waitForMessages(2, 10_000);
      assert.equal(grants(world) - before, 1, 'one token request for the first rejection');
      // Revoked again at once: well inside the 5 s in which a forced token used to be shared.
      revokeAccessTokens(world);
      await send(world, b, ['second-revoke@example.org']);
      await world.gmail.waitForMessages(3, 10_000);
      assert.equal(grants(world) - before, 2, 'one token request for the second rejection');
      assert.equal(b.bridge.tokens.state('office'), 'ok');
      assert.deepEqual(
        world.gmail.auths.slice(authsBefore).map((a) => a.ok),
        [false, true, false, true],
        'each rejection: the refused AUTH, then one AUTH with the new token',
      );
      assert.ok(!b.logs.some((l) => l.includes('needs re-authorization')), 'no needs-reauth');
    });
  });
}

test('a revoked grant behind a slow-failing AUTH (Dovecot-style delays): one forced refresh and two AUTHs, then needs-reauth', async () => {
  await withBridge(async (world, b) => {
    await send(world, b, ['warm@example.org']);
    await world.gmail.waitForMessages(1);
    const before = grants(world);
    const authsBefore = world.gmail.auths.length;
    // Gmail now refuses every token of the account, valid or not, and takes its time to say so.
    world.gmail.refuseTokens = true;
    world.gmail.authFailureDelaysMs = [600, 1700];
    world.gmail.down(true);
    world.gmail.down(false);
    const held = await send(world, b, ['held@example.org']);
    await waitFor(() => events(b, 'held', idOf(held)).length > 0, 20_000, 'the message held');
    assert.equal(b.bridge.tokens.state('office'), 'needs-reauth');
    // A canary sent after needs-reauth is held without an attempt: nothing else reached Gmail meanwhile.
    const canary = await send(world, b, ['canary@example.org']);
    await waitFor(() => events(b, 'held', idOf(canary)).length > 0, 10_000, 'the canary held');
    assert.equal(grants(world) - before, 1, 'exactly one forced refresh');
    assert.deepEqual(
      world.gmail.auths.slice(authsBefore).map((a) => a.ok),
      [false, false],
      'two AUTHs: the refused token, then its one replacement',
    );
  });
});
