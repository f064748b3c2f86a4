// An acknowledged message whose data is gone is never dropped quietly (issue 24 item 3): its
// envelope goes to failed/ with reason data-lost, one error line names it, a metric counts
// it, `queue list` shows it, and a notice goes to bounceTo. Both after a restart (the spool's
// recovery finds ID.json without ID.msg) and while the daemon runs (the next attempt finds
// the queue file gone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { startBridge, sendThroughBridge, message, type RunningBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const SENDER = 'scanner@example.com';
const RCPT = 'lost@example.org';

const lines = (b: RunningBridge) => b.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
const events = (b: RunningBridge, msg: string, id: string) => lines(b).filter((j) => j.message === msg && j.id === id);
const lostLine = (b: RunningBridge, id: string) =>
  lines(b).find(
    (j) => j.level === 'error' && j.id === id && String(j.message).startsWith('message data lost on this host'),
  );

async function deferredMessage(world: FakeWorld, b: RunningBridge, deferrals: number): Promise<string> {
  // Gmail defers this recipient for as long as the test runs; notices to the sender go through.
  world.gmail.script({
    stage: 'rcpt',
    rcpt: RCPT,
    reply: '451 4.3.0 Mail server temporarily rejected message.',
    count: Infinity,
  });
  const r = await sendThroughBridge({
    port: b.port,
    user: world.user.username,
    pass: world.user.password,
    from: SENDER,
    to: [RCPT],
    raw: message({ from: SENDER, to: RCPT, subject: 'the scan' }),
  });
  const id = r.response.split(' ').pop()!;
  await waitFor(() => events(b, 'deferred', id).length >= deferrals, 20_000, `${deferrals} deferrals`);
  return id;
}

async function assertReported(world: FakeWorld, b: RunningBridge, id: string): Promise<void> {
  await waitFor(() => lostLine(b, id) !== undefined, 15_000, 'the data-lost error line');
  const line = lostLine(b, id)!;
  assert.equal(line.from, SENDER);
  assert.deepEqual(line.rcpts, [RCPT]);
  assert.equal(lines(b).filter((j) => j.level === 'error' && j.id === id).length, 1, 'one error line');
  const stateDir = b.bridge.config.stateDir;
  const failed = JSON.parse(readFileSync(join(stateDir, 'spool', 'failed', `${id}.json`), 'utf8')) as Record<
    string,
    unknown
  >;
  assert.equal(failed.state, 'failed');
  assert.equal(failed.failCode, 'data-lost');
  assert.ok(!existsSync(join(stateDir, 'spool', `${id}.json`)), 'no longer queued');
  const row = (await b.bridge.ops.listQueue()).find((r) => r.id === id);
  assert.equal(row?.state, 'failed');
  assert.equal(row?.reason, 'data-lost');
  assert.match(String(row?.failReason), /^message data lost on this host/);
  const metrics = await b.bridge.metrics.registry.metrics();
  assert.ok(metrics.includes('xoauth2_bridge_messages_data_lost_total{account="office"} 1'), 'counted');
  // The notice reaches bounceTo (the sender here) through the account.
  await waitFor(() => world.gmail.messages.some((m) => m.rcptTo.includes(SENDER)), 15_000, 'the notice to the sender');
  const notice = world.gmail.messages.find((m) => m.rcptTo.includes(SENDER))!.raw.toString('utf8');
  assert.match(notice, /message data lost on this host/);
  assert.match(notice, new RegExp(`Queue ID: ${id}`));
  assert.match(notice, new RegExp(`<${RCPT}>`));
}

test('restart: a twice-deferred message whose queue file vanished fails as data-lost (logged, counted, listed, notice sent)', async () => {
  const world = await startFakeWorld();
  let b = await startBridge(world, { queue: { retry: ['200ms'] } });
  try {
    const id = await deferredMessage(world, b, 2);
    await b.stop();
    const spoolDir = join(b.bridge.config.stateDir, 'spool');
    assert.ok(
      existsSync(join(spoolDir, `${id}.json`)),
      'its state file is there: the message was acknowledged and changed state',
    );
    unlinkSync(join(spoolDir, `${id}.msg`));
    b = await startBridge(world, { queue: { retry: ['200ms'] } });
    await assertReported(world, b, id);
    assert.ok(
      !b.logs.some((l) => l.includes('removed leftovers of unacknowledged writes')),
      'not passed off as an unacknowledged leftover',
    );
  } finally {
    await b.stop();
    await world.close();
  }
});

test('running: the queue file vanishes while the message waits for its retry: data-lost at the next attempt', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { queue: { retry: ['1s'] } });
  try {
    const id = await deferredMessage(world, b, 1);
    unlinkSync(join(b.bridge.config.stateDir, 'spool', `${id}.msg`));
    await assertReported(world, b, id);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('running: an operator command on a message whose queue file vanished reports it as data-lost', async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { queue: { retry: ['1h'] } });
  try {
    const id = await deferredMessage(world, b, 1);
    unlinkSync(join(b.bridge.config.stateDir, 'spool', `${id}.msg`));
    const r = await b.bridge.worker.command(id, { type: 'hold' });
    assert.equal(r.ok, false);
    assert.match(r.message, /message data lost on this host/);
    await assertReported(world, b, id);
  } finally {
    await b.stop();
    await world.close();
  }
});
