// Password checks under a wrong-password flood (issue 10 item 16): KDF runs are bounded
// process-wide and served fairly between client addresses, a cached login never waits
// behind them, and one address with many parallel logins is charged before its KDFs run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Spool } from '../../src/spool/spool.js';
import { hashPassword, kdfGate } from '../../src/listener/passwords.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { RawSmtp, makeConfig, message, startListeners, type ListenerHarness, tempSpool } from '../helpers/listener.js';
import { waitFor } from '../helpers/wait.js';

const PASSWORD = 'correct horse battery staple';
let dir: string;
let spool: Spool;
let hash: string;
const metrics = new Metrics();

let cleanup: () => Promise<void>;

before(async () => {
  ({ dir, spool, cleanup } = await tempSpool('xb-kdf-', true));
  hash = await hashPassword(PASSWORD);
});
after(() => cleanup());

async function kdfRuns(): Promise<number> {
  const m = await metrics.registry.getSingleMetric('xoauth2_bridge_kdf_runs_total')!.get();
  return m.values[0].value;
}

function start(authFailLimit: number): Promise<ListenerHarness> {
  const config = makeConfig(dir, {
    listeners: [
      {
        name: 'proxied',
        host: '127.0.0.1',
        port: 0,
        proxyProtocol: true,
        allowInsecureAuth: true,
        authFailLimit,
        maxConnectionsPerIp: 50,
      },
    ],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  return startListeners(config, spool);
}

async function session(h: ListenerHarness, ip: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(h.port(), { proxy: `PROXY TCP4 ${ip} 127.0.0.1 40000 25\r\n` });
  await c.ehlo();
  return c;
}

/** Opens a session and sends a wrong-password AUTH without waiting for the answer. */
async function wrongLogin(h: ListenerHarness, ip: string, n: number): Promise<{ c: RawSmtp; reply: Promise<string> }> {
  const c = await session(h, ip);
  c.write('AUTH PLAIN ' + Buffer.from(`\0printer\0wrong ${n}`).toString('base64') + '\r\n');
  return { c, reply: c.read(120_000).then((r) => r.lines.join()) };
}

test('a cached login and its 250 go through while 64 wrong-password logins wait for the KDF', async () => {
  const h = await start(100);
  try {
    const printer = await session(h, '192.0.2.10');
    assert.equal((await printer.authPlain('printer', PASSWORD)).code, 235); // warms the cache
    await printer.quit();

    const flood = await Promise.all(Array.from({ length: 64 }, (_, i) => wrongLogin(h, `198.51.100.${i + 1}`, i)));
    await waitFor(() => kdfGate.queued >= 32, 30_000, 'wrong-password checks queued behind the KDF bound');

    const again = await session(h, '192.0.2.10');
    assert.equal((await again.authPlain('printer', PASSWORD)).code, 235);
    const r = await again.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net'),
    );
    assert.match(r.lines.join(), /^250 2\.0\.0 Ok: queued as /);
    const stillQueued = kdfGate.queued;
    assert.ok(stillQueued > 0, 'the cached login and the 250 did not wait for the KDF queue to drain');
    await again.quit();

    const replies = await Promise.all(flood.map((f) => f.reply));
    assert.ok(
      replies.every((x) => x === '535 5.7.8 Authentication credentials invalid'),
      replies.find((x) => !x.startsWith('535')),
    );
    assert.ok(kdfGate.inFlight <= kdfGate.concurrency);
    await Promise.all(flood.map((f) => f.c.quit()));
  } finally {
    await h.stop();
  }
});

test('one address with 20 parallel wrong logins runs at most authFailLimit KDFs (charged before the KDF), then 454', async (t) => {
  const h = await start(5);
  try {
    const runs0 = await kdfRuns();
    const flood = await Promise.all(Array.from({ length: 20 }, (_, i) => wrongLogin(h, '203.0.113.20', i)));
    const replies = await Promise.all(flood.map((f) => f.reply));
    const runs = (await kdfRuns()) - runs0;
    t.diagnostic(`KDF runs for 20 parallel wrong logins from one address: ${runs}`);
    assert.ok(runs >= 1 && runs <= 5, `KDF runs for 20 parallel logins: ${runs}`);
    assert.ok(
      replies.every((x) => /^(535 5\.7\.8|454 4\.7\.0)/.test(x)),
      replies.join('\n'),
    );
    assert.ok(replies.filter((x) => x.startsWith('454')).length >= 15, replies.join('\n'));
    await waitFor(() => h.logs().some((l) => l.message === 'auth lockout ip=203.0.113.20'), 10_000, 'the lockout line');
    await Promise.all(flood.map((f) => f.c.quit()));
  } finally {
    await h.stop();
  }
});

test('fair between addresses: a login from a second address runs while the first still has checks queued', async () => {
  const h = await start(100);
  try {
    const flood = await Promise.all(Array.from({ length: 30 }, (_, i) => wrongLogin(h, '203.0.113.30', i)));
    await waitFor(() => kdfGate.queued >= 20, 30_000, "the first address's checks queued");
    const other = await session(h, '192.0.2.77');
    assert.equal(
      (await other.authPlain('printer', PASSWORD)).code,
      235,
      'a cold (uncached) login from another address',
    );
    assert.ok(kdfGate.queued > 0, 'it did not wait for the flooding address to drain its queue');
    await other.quit();
    await Promise.all(flood.map((f) => f.reply));
    await Promise.all(flood.map((f) => f.c.quit()));
  } finally {
    await h.stop();
  }
});

test('8 parallel logins with the right password from one address (cold cache) share one KDF and are never locked out', async (t) => {
  const h = await start(5);
  try {
    const runs0 = await kdfRuns();
    const sessions = await Promise.all(Array.from({ length: 8 }, () => session(h, '192.0.2.88')));
    const replies = await Promise.all(sessions.map((c) => c.authPlain('printer', PASSWORD)));
    const runs = (await kdfRuns()) - runs0;
    t.diagnostic(`KDF runs for 8 parallel right logins from one address: ${runs}`);
    assert.deepEqual(
      replies.map((r) => r.code),
      Array(8).fill(235),
    );
    assert.equal(runs, 1);
    assert.ok(!h.logs().some((l) => String(l.message).startsWith('auth failed')));
    await Promise.all(sessions.map((c) => c.quit()));
  } finally {
    await h.stop();
  }
});
