// The Graph transport's per-mailbox limiter: 4 in flight, one at a time after a throttle,
// the request and upload windows, Retry-After. Driven with explicit clocks and small windows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MailboxLimiter, GRAPH_WINDOWS } from '../../src/upstream/graph/limiter.js';

test('limiter: 4 slots per mailbox (case-insensitive), others independent; after a throttle one at a time until accepted', async () => {
  const l = new MailboxLimiter();
  const held = await Promise.all([1, 2, 3, 4].map(() => l.acquire('Box@contoso.com')));
  let fifth = false;
  const p = l.acquire('box@contoso.com').then((r) => ((fifth = true), r));
  const other = await l.acquire('other@contoso.com'); // another mailbox is not blocked
  await Promise.resolve();
  assert.equal(fifth, false);
  held[0]();
  const r5 = await p;
  assert.equal(fifth, true);
  l.pause('box@contoso.com', Date.now() + 1000);
  for (const r of [...held.slice(1), r5, other]) r();
  const one = await l.acquire('box@contoso.com');
  let second = false;
  const p2 = l.acquire('box@contoso.com').then((r) => ((second = true), r));
  await new Promise((r) => setImmediate(r));
  assert.equal(second, false, 'throttled: one at a time');
  l.accepted('box@contoso.com');
  (await p2)();
  assert.equal(second, true);
  one();
  assert.ok(l.waitLeft('box@contoso.com') > 0 && l.waitLeft('box@contoso.com') <= 1000, 'Retry-After');
});

test('limiter: the request window (10,000 per 10 minutes) and the upload window (150 MB per 5 minutes)', () => {
  assert.deepEqual(GRAPH_WINDOWS, {
    requests: { max: 10_000, ms: 600_000 },
    uploadBytes: { max: 150 * 1024 * 1024, ms: 300_000 },
  });
  const l = new MailboxLimiter(4, { requests: { max: 3, ms: 1000 }, uploadBytes: { max: 100, ms: 5000 } });
  const t0 = 1_000_000;
  l.record('m', 0, t0);
  l.record('m', 0, t0 + 100);
  assert.equal(l.waitLeft('m', t0 + 200), 0);
  l.record('m', 0, t0 + 200);
  assert.equal(l.waitLeft('m', t0 + 300), 700, 'the 4th request waits until the first leaves the window');
  assert.equal(l.waitLeft('m', t0 + 1000), 0);
  l.record('u', 60, t0);
  l.record('u', 30, t0 + 1000);
  assert.equal(l.waitLeft('u', t0 + 2000, 10), 0, '60 + 30 + 10 fits');
  assert.equal(l.waitLeft('u', t0 + 2000, 20), 3000, '60 + 30 + 20 waits for the 60 to expire');
  assert.equal(l.waitLeft('u', t0 + 2000, 500), 4000, 'larger than the window: waits for an empty window');
  assert.equal(l.waitLeft('u', t0 + 6001, 500), 0);
});
