import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Spool, type NewMessage } from '../../src/spool/spool.js';
import { DeliveryWorker } from '../../src/delivery/worker.js';
import { statusFromReply } from '../../src/delivery/bounce.js';
import type { SendResult, SpooledEnvelope } from '../../src/types.js';
import {
  ScriptedUpstream,
  TestHealth,
  recordingLogger,
  tempState,
  testConfig,
  MESSAGE,
  MESSAGE_META,
  ok,
  fail,
  parseDsn,
  statusGroups,
  type Script,
} from '../helpers/delivery.js';
import { waitFor, sleep } from '../helpers/wait.js';

const CANARY = 'canary@example.net';

async function setup(
  opts: { queue?: Record<string, unknown>; limits?: Record<string, unknown>; script?: Script } = {},
) {
  const { dir, cleanup } = await tempState();
  const config = testConfig(dir, opts.queue, opts.limits);
  const log = recordingLogger();
  const spool = new Spool(dir, log);
  await spool.init();
  // The canary (below) is deferred until released; every other message follows the test's script.
  let canaryHeld = true;
  const script: Script = opts.script ?? ((env) => ok(env));
  const upstream = new ScriptedUpstream((env, call, n) =>
    env.rcptTo.includes(CANARY) && canaryHeld ? fail('transient', '451 4.3.0 canary: try later') : script(env, call, n),
  );
  const health = new TestHealth();
  const workers: DeliveryWorker[] = [];
  const newWorker = (up = upstream, sp = spool) => {
    const w = new DeliveryWorker({ config, log, spool: sp, upstream: up, health, hostname: 'bridge.test' });
    workers.push(w);
    return w;
  };
  const worker = newWorker();
  const queue = async (m: Partial<NewMessage> = {}, w = worker) => {
    const env = await spool.receive([MESSAGE], { ...MESSAGE_META, ...m });
    w.notify(env);
    return env;
  };
  const queuedIds = async () => (await spool.list()).map((e) => e.id);
  // A canary proves a negative: a later message on the other account that the upstream defers.
  // Once it has been tried `tries` times, `tries - 1` retry steps went by with the scheduler
  // running, so whatever was due in them (a retry that must not happen) has happened.
  let canaryId: string | undefined;
  const canary = async (tries = 3, w = worker) => {
    canaryId ??= (await queue({ account: 'other', mailFrom: 'other@example.net', rcptTo: [CANARY] }, w)).id;
    const id = canaryId;
    const n = upstream.callsFor(id).length + tries;
    await waitFor(() => upstream.callsFor(id).length >= n, 5000, `the canary tried ${tries} more times`);
    return id;
  };
  // Lets the canary through and waits until it has left the queue.
  const releaseCanary = async () => {
    canaryHeld = false;
    const id = canaryId;
    await waitFor(async () => !(await queuedIds()).includes(id!), 5000, 'the canary delivered');
  };
  const done = async () => {
    for (const w of workers) await w.stop(200);
    await cleanup();
  };
  return {
    dir,
    config,
    log,
    spool,
    upstream,
    health,
    worker,
    newWorker,
    queue,
    queuedIds,
    canary,
    releaseCanary,
    done,
  };
}

function dsnOf(call: { body: Buffer }) {
  const dsn = parseDsn(call.body);
  const status = dsn.parts.find((p) => p.headers['content-type'] === 'message/delivery-status');
  assert.ok(status, 'DSN has a message/delivery-status part');
  const [perMessage, ...perRcpt] = statusGroups(status.body);
  return { ...dsn, perMessage, perRcpt };
}

test('ok: delivered once with the spooled bytes, then removed from the spool', async () => {
  const h = await setup();
  try {
    await h.worker.start();
    const env = await h.queue();
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'message removed');
    // The log line is written after the spool removal: wait on the event asserted below.
    await waitFor(() => h.log.events('delivered').length > 0, 5000, 'delivered log line');
    await waitFor(() => h.worker.stats().inFlight === 0, 5000, 'attempt finished');
    assert.equal(h.upstream.calls.length, 1);
    const [call] = h.upstream.calls;
    assert.equal(call.id, env.id);
    assert.deepEqual(call.body, MESSAGE);
    assert.deepEqual(call.rcptTo, MESSAGE_META.rcptTo);
    assert.equal(call.mailFrom, MESSAGE_META.mailFrom);
    const [ev] = h.log.events('delivered');
    assert.equal(ev.id, env.id);
    assert.equal(ev.rcpts, 2);
    assert.equal(ev.attempt, 1);
    assert.match(String(ev.reply), /^250 /);
    assert.deepEqual(h.worker.stats(), { queued: 0, inFlight: 0, oldestAgeMs: null, held: {} });
  } finally {
    await h.done();
  }
});

test('transient: retried with growing backoff, attempts and last error persisted, then delivered', async () => {
  const reply = '421 4.7.0 Try again later, closing connection.';
  const h = await setup({ script: (env, _c, n) => (n <= 3 ? fail('transient', reply) : ok(env)) });
  try {
    await h.worker.start();
    const env = await h.queue();
    // The deferred line is written after the spool update: wait for both.
    await waitFor(
      async () => ((await h.spool.get(env.id))?.attempts ?? 0) >= 1 && h.log.events('deferred').length >= 1,
      5000,
      'first deferral persisted and logged',
    );
    const stored = (await h.spool.get(env.id))!;
    assert.equal(stored.lastReply, reply);
    const retryIn = Number(h.log.events('deferred')[0].retryIn);
    assert.ok(retryIn >= 45 && retryIn <= 55, `first retry in retry[0]=50ms ±10%, got ${retryIn}`);
    assert.ok(Date.parse(stored.nextAttemptAt) >= h.upstream.calls[0].at + 45);
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'delivered after retries');
    const at = h.upstream.calls.map((c) => c.at);
    assert.equal(at.length, 4);
    const gaps = [at[1] - at[0], at[2] - at[1], at[3] - at[2]];
    assert.ok(gaps[0] >= 44, `gap 1 follows retry[0]=50ms: ${gaps}`);
    assert.ok(gaps[1] >= 134 && gaps[2] >= 134, `later gaps follow retry[1]=150ms: ${gaps}`);
    assert.deepEqual(
      h.log.events('deferred').map((e) => e.attempt),
      [1, 2, 3],
    );
    assert.equal(h.log.events('deferred')[0].reply, reply);
    assert.equal(h.upstream.bounces().length, 0);
  } finally {
    await h.done();
  }
});

test('transient past queue.maxAge: bounced with Action failed and moved to failed/', async () => {
  const reply = '451 4.3.0 Mail server temporarily rejected message.';
  const h = await setup({
    queue: { retry: ['40ms'], maxAge: '250ms' },
    script: (env) => (env.isBounce ? ok(env) : fail('transient', reply)),
  });
  try {
    await h.worker.start();
    const env = await h.queue({ rcptTo: ['a@example.org'] });
    await waitFor(() => h.upstream.bounces().length === 1, 5000, 'expiry bounce sent');
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'spool empty');
    const [failed] = await h.spool.listFailed();
    assert.equal(failed.id, env.id);
    assert.match(failed.failReason, /gave up after 250ms/);
    const tries = h.upstream.callsFor(env.id);
    assert.ok(tries.length >= 3, `retried until maxAge (${tries.length} attempts)`);
    assert.ok(tries[tries.length - 1].at - Date.parse(env.receivedAt) >= 240, 'last attempt at maxAge, not before');
    const dsn = dsnOf(h.upstream.bounces()[0]);
    assert.equal(dsn.perRcpt.length, 1);
    assert.equal(dsn.perRcpt[0]['final-recipient'], 'rfc822; a@example.org');
    assert.equal(dsn.perRcpt[0].action, 'failed');
    assert.equal(dsn.perRcpt[0].status, '4.3.0');
    assert.equal(dsn.perRcpt[0]['diagnostic-code'], `smtp; ${reply}`);
  } finally {
    await h.done();
  }
});

test('permanent: failed/ plus an RFC 3464 bounce to the sender with the right fields', async () => {
  const reply =
    "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser x1-20020a";
  const h = await setup({ script: (env) => (env.isBounce ? ok(env) : fail('permanent', reply)) });
  try {
    await h.worker.start();
    const env = await h.queue();
    await waitFor(() => h.upstream.bounces().length === 1, 5000, 'bounce delivered');
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'spool empty');
    assert.equal(h.upstream.callsFor(env.id).length, 1, 'a permanent failure is not retried');
    const failed = await h.spool.listFailed();
    assert.deepEqual(
      failed.map((f) => f.id),
      [env.id],
    );
    assert.equal(failed[0].failReason, reply);

    const call = h.upstream.bounces()[0];
    assert.equal(call.mailFrom, '', 'bounces use the null sender');
    assert.deepEqual(call.rcptTo, ['scanner@example.com']);
    assert.equal(call.account, 'office');
    const dsn = dsnOf(call);
    assert.equal(dsn.headers.from, 'Mail Delivery Subsystem <scanner@example.com>');
    assert.equal(dsn.headers.to, '<scanner@example.com>');
    assert.match(dsn.headers['content-type'], /^multipart\/report; report-type=delivery-status; boundary="/);
    assert.equal(dsn.headers['auto-submitted'], 'auto-replied');
    assert.deepEqual(
      dsn.parts.map((p) => p.headers['content-type']),
      ['text/plain; charset=utf-8', 'message/delivery-status', 'text/rfc822-headers'],
    );
    assert.match(dsn.parts[0].body, /<a@example\.org>: 550 5\.1\.1 The email account/);
    assert.equal(dsn.perMessage['reporting-mta'], 'dns; bridge.test');
    assert.equal(Date.parse(dsn.perMessage['arrival-date']), Math.floor(Date.parse(env.receivedAt) / 1000) * 1000);
    assert.deepEqual(
      dsn.perRcpt.map((r) => r['final-recipient']),
      ['rfc822; a@example.org', 'rfc822; b@example.org'],
    );
    for (const r of dsn.perRcpt) {
      assert.equal(r.action, 'failed');
      assert.equal(r.status, '5.1.1');
      assert.equal(r['diagnostic-code'], `smtp; ${reply}`);
      assert.equal(r['remote-mta'], 'dns; smtp.gmail.com');
    }
    const orig = dsn.parts[2].body;
    assert.match(orig, /^From: Scanner <scanner@example\.com>\r\n/);
    assert.match(orig, /Subject: Scan of invoice 42\r\n/);
    assert.ok(!orig.includes('PDF attached'), 'only the headers of the original are returned');
    assert.equal(h.log.events('bounced')[0].id, env.id);
  } finally {
    await h.done();
  }
});

test('bounceTo: an address in queue.bounceTo receives the bounce instead of the sender', async () => {
  const h = await setup({
    queue: { bounceTo: 'postmaster@example.com' },
    script: (env) => (env.isBounce ? ok(env) : fail('permanent', '552 5.2.2 mailbox full')),
  });
  try {
    await h.worker.start();
    await h.queue({ rcptTo: ['a@example.org'] });
    await waitFor(() => h.upstream.bounces().length === 1, 5000, 'bounce delivered');
    assert.deepEqual(h.upstream.bounces()[0].rcptTo, ['postmaster@example.com']);
    assert.equal(dsnOf(h.upstream.bounces()[0]).perRcpt[0].status, '5.2.2');
  } finally {
    await h.done();
  }
});

test('never a bounce for a bounce (isBounce or null sender): failed/ and a log line only', async () => {
  const h = await setup({ script: () => fail('permanent', '550 5.1.1 no such user') });
  try {
    await h.worker.start();
    const a = await h.queue({ mailFrom: '', isBounce: true, user: null, rcptTo: ['gone@example.org'] });
    const b = await h.queue({ mailFrom: '', rcptTo: ['gone2@example.org'] });
    await waitFor(async () => (await h.spool.listFailed()).length === 2, 5000, 'both failed');
    // Canary: stop() waits for the attempts in flight, their outcomes (a bounce queued) included.
    await h.worker.stop(5000);
    assert.deepEqual(await h.queuedIds(), [], 'no bounce was queued');
    assert.equal(h.upstream.calls.length, 2);
    assert.deepEqual(
      h.upstream.bounces().map((c) => c.id),
      [a.id],
      'only the original bounce was ever sent',
    );
    const events = h.log.events('bounced');
    assert.deepEqual(events.map((e) => e.id).sort(), [a.id, b.id].sort());
    for (const e of events) assert.match(String(e.dsn), /none/);
  } finally {
    await h.done();
  }
});

test('partial rejection: accepted recipients are done, the rejected one bounces alone', async () => {
  const h = await setup({
    script: (env, call) =>
      env.isBounce
        ? ok(env)
        : {
            outcome: 'ok',
            response: '250 2.0.0 OK',
            accepted: call.rcptTo.filter((r) => r !== 'b@example.org'),
            rejected: [{ rcpt: 'b@example.org', response: '550 5.1.1 b: no such user' }],
          },
  });
  try {
    await h.worker.start();
    const env = await h.queue({ rcptTo: ['a@example.org', 'b@example.org', 'c@example.org'] });
    await waitFor(() => h.upstream.bounces().length === 1, 5000, 'bounce for b');
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'spool empty');
    assert.equal(h.upstream.callsFor(env.id).length, 1);
    const dsn = dsnOf(h.upstream.bounces()[0]);
    assert.deepEqual(
      dsn.perRcpt.map((r) => [r['final-recipient'], r.status]),
      [['rfc822; b@example.org', '5.1.1']],
    );
    assert.deepEqual(await h.spool.listFailed(), [], 'a message whose other recipients got it is not a failed message');
  } finally {
    await h.done();
  }
});

test('accepted recipients are persisted before the retry, which goes only to the rest', async () => {
  let onDiskAtRetry: SpooledEnvelope | null = null;
  const h = await setup({
    script: async (env, call, n) => {
      if (n === 1)
        return { outcome: 'transient', response: '451 4.3.0 later', accepted: call.rcptTo.slice(0, 2), rejected: [] };
      onDiskAtRetry = await h.spool.get(env.id);
      return ok(env);
    },
  });
  try {
    await h.worker.start();
    const env = await h.queue({ rcptTo: ['a@example.org', 'b@example.org', 'c@example.org'] });
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'delivered');
    assert.deepEqual(
      h.upstream.calls.map((c) => c.rcptTo),
      [['a@example.org', 'b@example.org', 'c@example.org'], ['c@example.org']],
    );
    assert.ok(onDiskAtRetry);
    const d = onDiskAtRetry as SpooledEnvelope;
    assert.deepEqual(
      d.rcpts.map((r) => [r.address, r.status]),
      [
        ['a@example.org', 'accepted'],
        ['b@example.org', 'accepted'],
        ['c@example.org', 'deferred'],
      ],
    );
    assert.equal(d.state, 'deferred');
    assert.equal(d.attempts, 1);
    assert.equal(h.upstream.callsFor(env.id).length, 2);
  } finally {
    await h.done();
  }
});

test('quota (550 5.4.5): the account is held without bounce, survives a restart, `queue retry` probes it', async () => {
  let officeOk = false;
  const quota =
    '550 5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852';
  const h = await setup({
    queue: { concurrency: 1, quotaHold: '1h' },
    script: (env) => (env.account === 'office' && !officeOk ? fail('quota', quota) : ok(env)),
  });
  try {
    await h.worker.start();
    const a = await h.queue();
    await waitFor(() => h.upstream.calls.length === 1, 5000, 'first office message tried');
    const b = await h.queue();
    const c = await h.queue({ account: 'other', mailFrom: 'other@example.net' });
    await waitFor(() => h.upstream.callsFor(c.id).length === 1, 5000, 'other account unaffected');
    await h.canary(); // several retry periods
    assert.equal(h.upstream.callsFor(a.id).length, 1, 'held message not retried');
    assert.equal(h.upstream.callsFor(b.id).length, 0, 'the whole account is held');
    const storedA = (await h.spool.get(a.id))!;
    assert.equal(storedA.attempts, 0, 'attempts not burnt');
    assert.equal(storedA.lastReply, quota);
    assert.equal(storedA.state, 'held');
    assert.equal(storedA.reason, 'quota');
    assert.deepEqual(await h.spool.listFailed(), []);
    assert.equal(h.upstream.bounces().length, 0);
    assert.equal(
      h.log.entries.filter((e) => e.level === 'warn' && /sending limit/.test(e.msg)).length,
      1,
      'one warning',
    );
    assert.match(h.worker.stats().held.office, /^quota until /);
    assert.ok(h.log.events('held').some((e) => e.id === b.id && e.reason === 'quota'));

    // restart: the hold is remembered
    await h.worker.stop(1000);
    const w2 = h.newWorker();
    await w2.start();
    await h.canary(3, w2);
    assert.equal(h.upstream.callsFor(a.id).length + h.upstream.callsFor(b.id).length, 1);
    await h.releaseCanary();

    // the operator retries one message: it is tried despite the hold; Gmail takes it, so the hold lifts
    officeOk = true;
    const r = await w2.command(a.id, { type: 'retry', force: true });
    assert.equal(r.ok, true, r.message);
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'account flows again');
    assert.equal(h.upstream.callsFor(a.id).length, 2);
    assert.equal(h.upstream.callsFor(b.id).length, 1);
    assert.deepEqual(w2.stats().held, {});
  } finally {
    await h.done();
  }
});

test('account holds are stored states: held on disk while the account cannot send, due again on disk before its next send', async () => {
  const reply = '535-5.7.8 Username and Password not accepted.';
  let released = false;
  const onDiskAtSend = new Map<string, SpooledEnvelope | null>();
  const h = await setup({
    queue: { retry: ['1h'] },
    script: async (env) => {
      if (released) onDiskAtSend.set(env.id, await h.spool.get(env.id));
      return env.account === 'office' && !released ? fail('auth', reply) : ok(env);
    },
  });
  try {
    await h.worker.start();
    const a = await h.queue();
    await waitFor(() => h.health.reauth.length === 1, 5000, 'markNeedsReauth called');
    // New mail of a needs-reauth account is held, and the hold is what the spool holds, not only what the worker shows.
    const b = await h.queue();
    const storedHeld = async (id: string) => {
      const e = await h.spool.get(id);
      return e?.state === 'held' && e.reason === 'needs-reauth';
    };
    await waitFor(
      async () => (await storedHeld(a.id)) && (await storedHeld(b.id)),
      5000,
      'both held:needs-reauth on disk',
    );
    assert.deepEqual(
      { state: h.worker.get(b.id)?.state, reason: h.worker.get(b.id)?.reason },
      { state: 'held', reason: 'needs-reauth' },
    );
    assert.equal(h.upstream.callsFor(b.id).length, 0);

    released = true;
    h.health.set('office', 'ok'); // `token import` done: "usable again" is persisted before the mail goes
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'held mail delivered');
    for (const id of [a.id, b.id]) {
      const d = onDiskAtSend.get(id);
      assert.ok(d, `${id} was sent`);
      assert.equal(d.state, 'queued', 'no longer held on disk when it was sent');
      assert.equal(d.reason, null);
    }
  } finally {
    await h.done();
  }
});

test('quota window over: the held mail is due again on disk before it is sent, without an operator', async () => {
  let quotaOver = false;
  const onDiskAtSend = new Map<string, SpooledEnvelope | null>();
  const h = await setup({
    queue: { concurrency: 1, quotaHold: '3s', retry: ['1h'] },
    script: async (env) => {
      if (quotaOver) onDiskAtSend.set(env.id, await h.spool.get(env.id));
      return quotaOver ? ok(env) : fail('quota', '550 5.4.5 Daily user sending limit exceeded.');
    },
  });
  try {
    await h.worker.start();
    const a = await h.queue();
    await waitFor(() => h.upstream.calls.length === 1, 5000, 'first attempt');
    quotaOver = true; // Gmail would take it now; the bridge waits for the window to end
    const b = await h.queue();
    const stored = async (id: string) => (await h.spool.get(id))?.reason;
    await waitFor(
      async () => (await stored(a.id)) === 'quota' && (await stored(b.id)) === 'quota',
      5000,
      'both held:quota on disk',
    );
    await waitFor(async () => (await h.queuedIds()).length === 0, 10_000, 'sent once the window is over');
    for (const id of [a.id, b.id]) {
      const d = onDiskAtSend.get(id);
      assert.ok(d, `${id} was sent`);
      assert.equal(d.state, 'queued', 'no longer held on disk when it was sent');
    }
  } finally {
    await h.done();
  }
});

test('auth: needs-reauth, mail held (no bounce, new mail waits), released at once when the account is ok again', async () => {
  const reply =
    '535-5.7.8 Username and Password not accepted. For more information, go to 5.7.8 https://support.google.com/mail/?p=BadCredentials';
  let released = false;
  const h = await setup({
    queue: { retry: ['10s'] },
    script: (env) => (env.account === 'office' && !released ? fail('auth', reply) : ok(env)),
  });
  try {
    await h.worker.start();
    const a = await h.queue();
    await waitFor(() => h.health.reauth.length === 1, 5000, 'markNeedsReauth called');
    assert.deepEqual(h.health.reauth[0], { account: 'office', reason: reply });
    const b = await h.queue();
    const c = await h.queue({ account: 'other' });
    await waitFor(() => h.upstream.callsFor(c.id).length === 1, 5000, 'other account delivers');
    // Canary: a later message on the other account (retries here are 10 s apart, too slow for h.canary()).
    const d = await h.queue({ account: 'other', mailFrom: 'other@example.net' });
    await waitFor(() => h.upstream.callsFor(d.id).length === 1, 5000, 'the canary delivered');
    assert.equal(h.upstream.callsFor(b.id).length, 0, 'no send for a needs-reauth account');
    assert.equal(h.upstream.callsFor(a.id).length, 1);
    assert.deepEqual(h.worker.stats().held, { office: 'needs-reauth' });
    assert.equal(h.upstream.bounces().length, 0);
    assert.deepEqual(await h.spool.listFailed(), []);
    assert.ok(h.log.events('held').some((e) => e.id === a.id && e.reason === 'needs-reauth'));
    assert.equal((await h.spool.get(a.id))!.attempts, 0);

    released = true;
    const t0 = Date.now();
    h.health.set('office', 'ok'); // `token import` / `authorize` done
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'held mail delivered');
    assert.ok(Date.now() - t0 < 2000, 'retried at once, not after the 10s backoff');
    assert.equal(h.upstream.callsFor(a.id).length, 2);
    assert.equal(h.upstream.callsFor(b.id).length, 1);
  } finally {
    await h.done();
  }
});

test('restart: every spooled message is picked up, including one in flight when the process stopped', async () => {
  let hang!: () => void;
  const hung = new Promise<SendResult>((r) => (hang = () => r(fail('transient', 'connection lost'))));
  const h = await setup({ script: () => hung });
  try {
    await h.worker.start();
    const a = await h.queue();
    await waitFor(() => h.upstream.calls.length === 1, 5000, 'send in flight');
    await h.worker.stop(50); // the "crash": the send never finished
    assert.ok(h.log.entries.some((e) => e.level === 'warn' && /did not finish/.test(e.msg)));
    const b = await h.spool.receive([MESSAGE], MESSAGE_META);
    const c = await h.spool.receive([MESSAGE], MESSAGE_META);
    c.nextAttemptAt = new Date(Date.now() + 300).toISOString();
    await h.spool.update(c);

    const spool2 = new Spool(h.dir, h.log);
    await spool2.init();
    const up2 = new ScriptedUpstream();
    const w2 = h.newWorker(up2, spool2);
    await w2.start();
    await waitFor(async () => (await spool2.list()).length === 0, 5000, 'all delivered after restart');
    assert.deepEqual(up2.calls.map((x) => x.id).sort(), [a.id, b.id, c.id].sort());
    assert.ok(up2.callsFor(c.id)[0].at >= Date.parse(c.nextAttemptAt), 'a message not yet due waits for its time');
    hang();
  } finally {
    await h.done();
  }
});

test('concurrency: never more than queue.concurrency sends, each message sent exactly once', async () => {
  // The sends wait on a gate until all 10 are queued and 3 are in flight (a 40 ms sleep could
  // end before the next message is queued on a loaded machine, and 3 never run at once).
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const h = await setup({ queue: { concurrency: 3 }, script: async (env) => (await gate, ok(env)) });
  try {
    await h.worker.start();
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await h.queue()).id);
    await waitFor(() => h.upstream.inFlight === 3, 5000, 'three sends in flight');
    release();
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'all delivered');
    assert.equal(h.upstream.maxInFlight, 3);
    assert.deepEqual(h.upstream.calls.map((c) => c.id).sort(), ids.sort());
  } finally {
    await h.done();
  }
});

test('notify and an operator retry of a message already in flight do not send it twice', async () => {
  // time is the subject: a send that takes a while, so notify and retry land during it.
  const h = await setup({ script: async (env) => (await sleep(150), ok(env)) });
  try {
    await h.worker.start();
    const env = await h.queue();
    await waitFor(() => h.upstream.calls.length === 1, 5000, 'in flight');
    h.worker.notify(env);
    const r = await h.worker.command(env.id, { type: 'retry' });
    assert.equal(r.ok, false, 'nothing left to retry once the attempt in flight delivered it');
    assert.match(r.message, /finished it \(it was delivered\)/);
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'delivered');
    await h.canary(2);
    assert.equal(h.upstream.callsFor(env.id).length, 1);
  } finally {
    await h.done();
  }
});

test('stop waits for in-flight sends and leaves the rest spooled', async () => {
  let finishedAt = 0;
  // The send in flight finishes only once stop() has been called (a gate, not a sleep: on a
  // loaded machine a 300 ms send could finish before the test looks).
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const h = await setup({
    queue: { concurrency: 1 },
    script: async (env) => (await gate, (finishedAt = Date.now()), ok(env)),
  });
  try {
    await h.worker.start();
    const a = await h.queue();
    const b = await h.queue();
    const c = await h.queue();
    await waitFor(() => h.upstream.calls.length === 1, 5000, 'first send started');
    assert.equal(finishedAt, 0);
    const stopping = h.worker.stop(5000);
    // time is the subject: the send stays gated a while after stop() began, so a stop that
    // did not wait for it would return first.
    setTimeout(release, 200);
    await stopping;
    assert.ok(finishedAt > 0, 'stop waited for the send to finish');
    assert.deepEqual(await h.queuedIds(), [b.id, c.id], 'the finished one is removed, the rest stay');
    assert.equal(h.upstream.calls[0].id, a.id);
    h.worker.notify(b);
    // time is the subject: a stopped worker has no later event to wait for.
    await sleep(100);
    assert.equal(h.upstream.calls.length, 1, 'no new work after stop');
  } finally {
    await h.done();
  }
});

test('messagesPerDay: over the limit mail waits, and the count survives a restart', async () => {
  const h = await setup({ limits: { messagesPerDay: 2 } });
  try {
    await h.worker.start();
    const a = await h.queue();
    const b = await h.queue();
    await waitFor(async () => (await h.queuedIds()).length === 0, 5000, 'two delivered');
    const c = await h.queue();
    const d = await h.queue({ account: 'other' });
    await waitFor(() => h.upstream.callsFor(d.id).length === 1, 5000, 'other account not limited');
    await h.canary();
    assert.equal(h.upstream.callsFor(c.id).length, 0, 'third message waits');
    assert.match(h.worker.stats().held.office, /^rate-limit until /);
    assert.ok(h.log.events('held').some((e) => e.id === c.id && e.reason === 'rate-limit'));
    assert.deepEqual(
      [a, b].map((x) => h.upstream.callsFor(x.id).length),
      [1, 1],
    );

    await h.worker.stop(1000);
    const w2 = h.newWorker();
    await w2.start();
    await h.canary(3, w2);
    await h.releaseCanary();
    assert.equal(h.upstream.callsFor(c.id).length, 0, 'still held after a restart');
    assert.deepEqual(await h.queuedIds(), [c.id]);
  } finally {
    await h.done();
  }
});

test('messagesPerMinute (Exchange Online: 30/min): over the limit mail waits for the minute to pass', async () => {
  const h = await setup({ limits: { messagesPerMinute: 2 } });
  try {
    await h.worker.start();
    const a = await h.queue();
    const b = await h.queue();
    await waitFor(
      () => h.upstream.callsFor(a.id).length + h.upstream.callsFor(b.id).length === 2,
      5000,
      'two delivered',
    );
    const c = await h.queue();
    await waitFor(
      () => h.log.events('held').some((e) => e.id === c.id && e.reason === 'rate-limit'),
      5000,
      'third held',
    );
    assert.equal(h.upstream.callsFor(c.id).length, 0, 'third message waits');
    const until = Date.parse(h.worker.stats().held.office.replace(/^rate-limit until /, ''));
    assert.ok(until - Date.now() > 50_000 && until - Date.now() <= 60_000, 'until the first send is a minute old');
    // The park is persisted: the spool says when it is tried next (a restart does not make it due at once).
    await waitFor(
      async () => (await h.spool.get(c.id))?.nextAttemptAt === new Date(until).toISOString(),
      5000,
      'next try stored',
    );
    assert.equal((await h.spool.get(c.id))?.state, 'queued', 'a rate limit is no hold');
    assert.match(String(h.worker.get(c.id)?.waiting), /^limits\.messagesPerMinute 2 reached; waits until /);
  } finally {
    await h.done();
  }
});

test('delayWarning: one Action: delayed notice per message, the message keeps being retried', async () => {
  const reply = '451 4.4.2 Timeout - closing connection.';
  const h = await setup({
    queue: { retry: ['40ms'], delayWarning: '120ms' },
    script: (env) => (env.isBounce ? ok(env) : fail('transient', reply)),
  });
  try {
    await h.worker.start();
    const env = await h.queue({ rcptTo: ['a@example.org'] });
    await waitFor(() => h.upstream.bounces().length === 1, 5000, 'delay notice sent');
    const tries = h.upstream.callsFor(env.id).length;
    await waitFor(() => h.upstream.callsFor(env.id).length >= tries + 3, 5000, 'still retried');
    assert.equal(h.upstream.bounces().length, 1, 'only one notice');
    const stored = (await h.spool.get(env.id))!;
    assert.equal(stored.warned, true);
    const dsn = dsnOf(h.upstream.bounces()[0]);
    assert.equal(dsn.headers.subject, 'Delayed Mail (still being retried)');
    assert.equal(dsn.perRcpt[0].action, 'delayed');
    assert.equal(dsn.perRcpt[0].status, '4.4.2');
    assert.ok(Date.parse(dsn.perRcpt[0]['will-retry-until']) > Date.now() + 4 * 86400e3);
    assert.deepEqual(await h.spool.listFailed(), []);
  } finally {
    await h.done();
  }
});

test('statusFromReply reads enhanced codes and falls back on the reply class', () => {
  assert.equal(statusFromReply('550-5.1.1 The email account ... 550 5.1.1 double-check'), '5.1.1');
  assert.equal(statusFromReply('552 5.2.2 mailbox full'), '5.2.2');
  assert.equal(statusFromReply('554 transaction failed', '5.0.0'), '5.0.0');
  assert.equal(statusFromReply('421 closing', '4.4.7'), '4.0.0');
  assert.equal(statusFromReply('ECONNREFUSED: connect failed', '4.4.7'), '4.4.7');
});

test('the held line after a rejected token reports the real attempt number, counting earlier holds', async () => {
  const reply = '535 5.7.8 Username and Password not accepted.';
  const h = await setup({
    queue: { retry: ['50ms'] },
    script: (env, _call, n) =>
      n === 1 || n === 3 ? fail('auth', reply) : n === 2 ? fail('transient', '451 4.3.0 try later') : ok(env),
  });
  try {
    await h.worker.start();
    const a = await h.queue();
    const held = () =>
      h.log.events('held').filter((e) => e.id === a.id && e.reason === 'needs-reauth' && e.reply === reply);
    await waitFor(() => held().length === 1, 5000, 'first hold');
    assert.equal(held()[0].attempt, 1, 'the first attempt');
    h.health.set('office', 'ok');
    await waitFor(() => held().length === 2, 5000, 'second hold');
    assert.equal(
      h.log.events('deferred').find((e) => e.id === a.id)?.attempt,
      2,
      'the deferral was the second attempt',
    );
    assert.equal(held()[1].attempt, 3, 'the third attempt, not 0 or 1');
    h.health.set('office', 'ok');
    await waitFor(() => h.log.events('delivered').some((e) => e.id === a.id), 5000, 'delivered');
    assert.equal(h.log.events('delivered').find((e) => e.id === a.id)?.attempt, 4);
  } finally {
    await h.done();
  }
});
