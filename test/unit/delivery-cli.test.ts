// The queue CLI functions against a worker served on the control socket the way the daemon
// serves it, so the CLI's answers are the running worker's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { writeFile } from 'node:fs/promises';
import { Spool, type NewMessage } from '../../src/spool/spool.js';
import { DeliveryWorker } from '../../src/delivery/worker.js';
import { queueList, queueShow, queueRetry, queueDelete } from '../../src/cli/queue.js';
import { Operations } from '../../src/control/ops.js';
import { ControlServer } from '../../src/control/server.js';
import { TokenService } from '../../src/oauth/service.js';
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
} from '../helpers/delivery.js';
import { waitFor } from '../helpers/wait.js';

class Sink extends Writable {
  text = '';
  _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

async function setup(script?: ConstructorParameters<typeof ScriptedUpstream>[0]) {
  const { dir, cleanup } = await tempState();
  const config = testConfig(dir, { retry: ['1h'] });
  const log = recordingLogger();
  const spool = new Spool(dir, log);
  await spool.init();
  const upstream = new ScriptedUpstream(script);
  const worker = new DeliveryWorker({
    config,
    log,
    spool,
    upstream,
    health: new TestHealth(),
    hostname: 'bridge.test',
  });
  await worker.start();
  const tokens = new TokenService({ config, log });
  await tokens.init();
  const control = new ControlServer(
    dir,
    new Operations({ config: () => config, spool, worker, tokens, live: true }),
    log,
  );
  await control.start();
  return {
    dir,
    config,
    spool,
    upstream,
    worker,
    log,
    async queue(m: Partial<NewMessage> = {}) {
      const env = await spool.receive([MESSAGE], { ...MESSAGE_META, ...m });
      worker.notify(env);
      return env;
    },
    async done() {
      await control.stop();
      await worker.stop(500);
      await cleanup();
    },
  };
}

test('queue list shows each deferred message with its error, as a table and as JSON', async () => {
  const h = await setup((env) =>
    env.account === 'office' ? fail('transient', '421 4.7.0 Try again later, closing connection.') : ok(env),
  );
  try {
    const a = await h.queue();
    const b = await h.queue({ rcptTo: ['c@example.org'], mailFrom: 'other@example.com' });
    await waitFor(async () => (await h.spool.list()).every((e) => e.attempts === 1), 5000, 'both deferred');

    const out = new Sink();
    assert.equal(await queueList(h.config, { json: false }, out), 0);
    const lines = out.text.trim().split('\n');
    assert.match(lines[0], /^ID\s+ACCOUNT\s+FROM\s+RCPTS\s+SIZE\s+AGE\s+ATTEMPTS\s+NEXT TRY\s+LAST REPLY$/);
    const rowA = lines.find((l) => l.startsWith(a.id))!;
    assert.match(
      rowA,
      /office\s+scanner@example\.com\s+a@example\.org \(\+1\)\s+\d+B\s+\d+s\s+1\s+in (5\dm|1h(\d+m)?)\s+421 4\.7\.0 Try again later/,
    );
    assert.ok(lines.some((l) => l.startsWith(b.id) && /other@example\.com\s+c@example\.org\s/.test(l)));
    assert.match(lines[lines.length - 1], /^-- 2 messages queued, /);

    const json = new Sink();
    assert.equal(await queueList(h.config, { json: true }, json), 0);
    const rows = JSON.parse(json.text);
    assert.deepEqual(
      rows.map((r: { id: string }) => r.id),
      [a.id, b.id],
    );
    assert.deepEqual(
      rows[0].rcpts.map((r: { address: string; status: string }) => [r.address, r.status]),
      [
        ['a@example.org', 'deferred'],
        ['b@example.org', 'deferred'],
      ],
    );
    assert.equal(rows[0].state, 'deferred');
    assert.equal(rows[0].reason, null);
    assert.equal(rows[0].attempts, 1);
    assert.equal(rows[0].size, MESSAGE.length);
    assert.equal(rows[0].lastReply, '421 4.7.0 Try again later, closing connection.');
    assert.ok(Date.parse(rows[0].nextAttemptAt) > Date.now() + 50 * 60e3);
  } finally {
    await h.done();
  }
});

test('queue show prints the envelope and only the headers; unknown id exits 1', async () => {
  const h = await setup((env) =>
    env.rcptTo.includes('bad@example.org')
      ? fail('permanent', '550 5.1.1 no such user')
      : fail('transient', '451 4.3.0 later'),
  );
  try {
    const a = await h.queue();
    // Deferred in the spool and its attempt over (the worker shows it in-flight until then).
    await waitFor(
      async () => (await h.spool.get(a.id))?.attempts === 1 && h.worker.get(a.id)?.state === 'deferred',
      5000,
      'deferred and its attempt over',
    );
    const out = new Sink();
    assert.equal(await queueShow(h.config, a.id, out), 0);
    assert.match(out.text, new RegExp(`^id:\\s+${a.id}$`, 'm'));
    assert.match(out.text, /^state:\s+deferred$/m);
    assert.match(out.text, /^to:\s+a@example\.org \[deferred\] 451 4\.3\.0 later$/m);
    assert.match(out.text, /^to:\s+b@example\.org \[deferred\] 451 4\.3\.0 later$/m);
    assert.match(out.text, /^last reply:\s+451 4\.3\.0 later$/m);
    assert.match(out.text, /\n\nFrom: Scanner <scanner@example\.com>\r\n/);
    assert.match(out.text, /Subject: Scan of invoice 42/);
    assert.ok(!out.text.includes('PDF attached'));

    const f = await h.queue({ rcptTo: ['bad@example.org'], mailFrom: '' }); // null sender: failed without a bounce
    await waitFor(
      async () => (await h.spool.listFailed()).length === 1 && h.worker.get(f.id) === null,
      5000,
      'failed and its attempt over',
    );
    const fo = new Sink();
    assert.equal(await queueShow(h.config, f.id, fo), 0);
    assert.match(fo.text, /^state:\s+failed$/m);
    assert.match(fo.text, /^failed:\s+\S+: 550 5\.1\.1 no such user$/m);

    const err = new Sink();
    assert.equal(await queueShow(h.config, 'NOSUCHID', new Sink(), err), 1);
    assert.match(err.text, /no message with id NOSUCHID/);
  } finally {
    await h.done();
  }
});

test('queue retry ID: a running worker notices and tries the message now', async () => {
  let calls = 0;
  const h = await setup((env) => (++calls === 1 ? fail('transient', '451 4.3.0 later') : ok(env)));
  try {
    const a = await h.queue();
    await waitFor(async () => (await h.spool.get(a.id))?.attempts === 1, 5000, 'deferred for an hour');
    const out = new Sink();
    const t0 = Date.now();
    assert.equal(await queueRetry(h.config, { id: a.id }, out), 0);
    assert.match(out.text, new RegExp(`${a.id}: scheduled for immediate retry`));
    await waitFor(async () => (await h.spool.list()).length === 0, 5000, 'delivered after retry');
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(h.upstream.callsFor(a.id).length, 2);

    const err = new Sink();
    assert.equal(await queueRetry(h.config, { id: 'NOSUCHID' }, new Sink(), err), 1);
    assert.match(err.text, /no message with id NOSUCHID/);
  } finally {
    await h.done();
  }
});

test('queue retry --all retries every deferred message', async () => {
  let fails = true;
  const h = await setup((env) => (fails ? fail('transient', '421 4.7.0 later') : ok(env)));
  try {
    await h.queue();
    await h.queue();
    await h.queue({ account: 'other' });
    await waitFor(async () => (await h.spool.list()).every((e) => e.attempts === 1), 5000, 'all deferred');
    fails = false;
    const out = new Sink();
    assert.equal(await queueRetry(h.config, { all: true }, out), 0);
    assert.match(out.text, /^3 messages scheduled for immediate retry$/m);
    await waitFor(async () => (await h.spool.list()).length === 0, 5000, 'all delivered');
  } finally {
    await h.done();
  }
});

test('queue delete: the message leaves the queue and the running worker never sends it again', async () => {
  const h = await setup(() => fail('transient', '451 4.3.0 later'));
  try {
    const a = await h.queue();
    const b = await h.queue();
    await waitFor(async () => (await h.spool.list()).every((e) => e.attempts === 1), 5000, 'deferred');
    const out = new Sink();
    assert.equal(await queueDelete(h.config, a.id, out), 0);
    assert.match(out.text, new RegExp(`${a.id}: deleted from the queue`));
    await waitFor(() => h.worker.stats().queued === 1, 5000, 'worker dropped it');
    assert.deepEqual(
      (await h.spool.list()).map((e) => e.id),
      [b.id],
    );
    // retrying everything now must not resurrect the deleted one
    assert.equal(await queueRetry(h.config, { all: true }, new Sink()), 0);
    await waitFor(() => h.upstream.callsFor(b.id).length === 2, 5000, 'b retried');
    // Canary: a message queued after the retry is tried after it.
    const canary = await h.queue();
    await waitFor(() => h.upstream.callsFor(canary.id).length === 1, 5000, 'the canary tried');
    assert.equal(h.upstream.callsFor(a.id).length, 1);

    const err = new Sink();
    assert.equal(await queueDelete(h.config, a.id, new Sink(), err), 1);
    assert.match(err.text, /no message with id/);
  } finally {
    await h.done();
  }
});

test('queue list with no daemon running works while the token store is unreadable', async () => {
  const { dir, cleanup } = await tempState();
  try {
    const config = testConfig(dir, { retry: ['1h'] });
    const log = recordingLogger();
    const spool = new Spool(dir, log);
    await spool.init();
    const env = await spool.receive([MESSAGE], MESSAGE_META);
    await spool.close();
    // A damaged store: the token service holds every account, the queue commands still answer.
    await writeFile(new TokenService({ config, log }).storeFile, '{ damaged', { mode: 0o600 });
    const out = new Sink();
    assert.equal(await queueList(config, { json: true }, out), 0, out.text);
    const rows = JSON.parse(out.text) as { id: string }[];
    assert.deepEqual(
      rows.map((r) => r.id),
      [env.id],
    );
  } finally {
    await cleanup();
  }
});
