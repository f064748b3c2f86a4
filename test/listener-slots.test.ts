// Idle connections must not crowd out real clients (issue 10 item 17): a share of
// maxClients is kept for trusted networks and loopback, and a client that neither
// authenticates nor starts a transaction is closed after preAuthTimeout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Spool } from '../src/spool/spool.js';
import { hashPassword } from '../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../src/fakes/world.js';
import { RawSmtp, makeConfig, startListeners, tempSpool } from './helpers/listener.js';
import { waitFor } from './helpers/wait.js';

const PASSWORD = 'correct horse battery staple';
let dir: string;
let spool: Spool;
let hash: string;

let cleanup: () => Promise<void>;

before(async () => {
  ({ dir, spool, cleanup } = await tempSpool('xb-slots-'));
  hash = await hashPassword(PASSWORD, FAKE_SCRYPT_COST);
});
after(() => cleanup());

const proxy = (ip: string) => `PROXY TCP4 ${ip} 127.0.0.1 40000 25\r\n`;

test('idle untrusted connections fill only their share of maxClients: trusted and loopback clients still get 220', async () => {
  const config = makeConfig(dir, {
    // The balancer connects from 127.0.0.1; a local client from 127.0.0.2 sends no header.
    listeners: [{ name: 'proxied', host: '127.0.0.1', port: 0, proxyProtocol: true, proxyFrom: ['127.0.0.1'], maxClients: 6, reservedClients: 2, trustedNetworks: ['192.168.1.0/24'], trustedAccount: 'office' }],
  });
  const h = await startListeners(config, spool);
  const open: RawSmtp[] = [];
  try {
    for (let i = 1; i <= 4; i++) open.push(await RawSmtp.connect(h.port(), { proxy: proxy(`203.0.113.${i}`) }));
    const refused = await RawSmtp.connect(h.port(), { proxy: proxy('203.0.113.99'), greeting: false });
    assert.equal((await refused.read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    await refused.waitClosed();
    assert.ok(h.logs().some((l) => l.message === 'untrusted share of maxClients full' && l.ip === '203.0.113.99'));

    // A PROXY header claiming loopback is not a local client (issue 23 item 4).
    const claimed = await RawSmtp.connect(h.port(), { proxy: proxy('127.0.0.1'), greeting: false });
    assert.equal((await claimed.read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    await claimed.waitClosed();

    const lan = await RawSmtp.connect(h.port(), { proxy: proxy('192.168.1.5') }); // throws unless 220
    const local = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.2' });
    open.push(lan, local);
    assert.equal((await lan.ehlo()).code, 250);
  } finally {
    await Promise.all(open.map((c) => c.quit()));
    await h.stop();
  }
});

test('a connection that neither authenticates nor sends MAIL gets 421 after preAuthTimeout; authenticated ones stay', async () => {
  const config = makeConfig(dir, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, preAuthTimeout: '1s', socketTimeout: '5m' }],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  const h = await startListeners(config, spool);
  try {
    const authed = await RawSmtp.connect(h.port());
    await authed.ehlo();
    assert.equal((await authed.authPlain('printer', PASSWORD)).code, 235);
    const idle = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.9' });
    await idle.ehlo();
    const r = await idle.read(10_000);
    assert.equal(r.lines.join(), '421 4.4.2 Timeout before authentication, closing connection');
    await idle.waitClosed();
    await waitFor(() => h.logs().some((l) => l.message === 'pre-auth timeout, connection closed' && l.ip === '127.0.0.9'), 5000, 'the log line');
    // The authenticated session outlived the deadline (it was opened first).
    assert.equal((await authed.cmd('NOOP')).code, 250);
    await authed.quit();
  } finally {
    await h.stop();
  }
});

test('check-config refuses reservedClients >= maxClients, naming the key', () => {
  assert.throws(
    () => makeConfig(dir, { listeners: [{ name: 'l', host: '127.0.0.1', port: 0, maxClients: 5, reservedClients: 5 }] }),
    /listeners\[0\]\.reservedClients: must be below maxClients/,
  );
});
