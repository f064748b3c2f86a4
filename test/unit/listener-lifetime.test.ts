// A connection's state ends with its socket (issue 24 item 4): smtp-server's connection
// object never emits 'close', so a timer cleared on it kept every connection (and its
// socket) alive for the whole preAuthTimeout and then logged a false "pre-auth timeout"
// for a client that had long gone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { Spool } from '../../src/spool/spool.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { RawSmtp, makeConfig, startListeners, tempSpool } from '../helpers/listener.js';
import { waitFor } from '../helpers/wait.js';

const PASSWORD = 'lifetime pass 42';
let dir: string;
let spool: Spool;
let hash: string;
let cleanup: () => Promise<void>;

before(async () => {
  ({ dir, spool, cleanup } = await tempSpool('xb-lifetime-'));
  hash = await hashPassword(PASSWORD, FAKE_SCRYPT_COST);
});
after(() => cleanup());

/** The ways a session ends: QUIT, the client's EOF, a reset before the greeting, mid-AUTH. */
async function session(port: number, kind: number, localAddress: string): Promise<void> {
  if (kind === 0) {
    const c = await RawSmtp.connect(port, { localAddress });
    await c.ehlo();
    await c.quit();
  } else if (kind === 1) {
    const c = await RawSmtp.connect(port, { localAddress });
    await c.cmd('NOOP');
    c.socket.end(); // no QUIT: the server closes after the client's EOF
    await c.waitClosed();
  } else if (kind === 2) {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
    s.resetAndDestroy();
  } else {
    const c = await RawSmtp.connect(port, { localAddress });
    await c.ehlo();
    assert.equal((await c.authPlain('printer', PASSWORD)).code, 235);
    c.socket.destroy();
  }
}

test('connections end with their socket: the live count (method and gauge) returns to 0, no pre-auth timeout for clients that left', async () => {
  // Long enough that none of the 200 quick sessions really times out on a loaded machine.
  const preAuthMs = 4000;
  const config = makeConfig(dir, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, preAuthTimeout: `${preAuthMs}ms` }],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  const metrics = new Metrics({ listeners: ['local'] });
  const h = await startListeners(config, spool, { metrics });
  const gauge = async () =>
    (await metrics.registry.getSingleMetric('xoauth2_bridge_smtp_connections')!.get()).values.find(
      (v) => v.labels.listener === 'local',
    )?.value;
  try {
    const sessions = 200;
    let next = 0;
    const worker = async (w: number) => {
      while (next < sessions) {
        const i = next++;
        await session(h.port(), i % 4, `127.0.0.${20 + w}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    await waitFor(
      () => h.listeners.liveConnections() === 0,
      10_000,
      `live connections to reach 0 (at ${h.listeners.liveConnections()})`,
    );
    await waitFor(async () => (await gauge()) === 0, 10_000, 'the smtp_connections gauge to reach 0');

    // Canary: an idle client opened after all of them times out after them; by its line,
    // any false one of the 200 sessions would be in the log too.
    const idle = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.9' });
    assert.equal(h.listeners.liveConnections(), 1);
    assert.equal(await gauge(), 1);
    await idle.ehlo();
    const r = await idle.read(preAuthMs + 10_000);
    assert.equal(r.lines.join(), '421 4.4.2 Timeout before authentication, closing connection');
    await waitFor(
      () => h.logs().some((l) => l.message === 'pre-auth timeout, connection closed' && l.ip === '127.0.0.9'),
      5000,
      'the canary timeout line',
    );
    const timeouts = h.logs().filter((l) => l.message === 'pre-auth timeout, connection closed');
    assert.deepEqual(
      timeouts.map((l) => l.ip),
      ['127.0.0.9'],
      'only the idle client timed out',
    );
    await idle.waitClosed();
    await waitFor(() => h.listeners.liveConnections() === 0, 10_000, 'the canary to leave the live count');
  } finally {
    await h.stop();
  }
});
