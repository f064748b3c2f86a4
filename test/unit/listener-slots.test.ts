// Idle connections must not crowd out real clients (issue 10 item 17, issue 24 item 8): a
// share of maxClients is kept for trusted networks and authenticated sessions, a newcomer
// closes the oldest unauthenticated session when the rest is full, and a client that neither
// authenticates nor starts a transaction is closed after preAuthTimeout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Spool } from '../../src/spool/spool.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { RawSmtp, makeConfig, startListeners, tempSpool } from '../helpers/listener.js';
import { waitFor } from '../helpers/wait.js';

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

test('unauthenticated connections fill only their share of maxClients: a newcomer closes the oldest; trusted-network clients are not counted', async () => {
  const config = makeConfig(dir, {
    // The balancer connects from 127.0.0.1 and names each client in a PROXY header.
    listeners: [
      {
        name: 'proxied',
        host: '127.0.0.1',
        port: 0,
        proxyProtocol: true,
        proxyFrom: ['127.0.0.1'],
        maxClients: 6,
        reservedClients: 2,
        trustedNetworks: ['192.168.1.0/24'],
        trustedAccount: 'office',
      },
    ],
  });
  const h = await startListeners(config, spool);
  const open: RawSmtp[] = [];
  try {
    for (let i = 1; i <= 4; i++) open.push(await RawSmtp.connect(h.port(), { proxy: proxy(`203.0.113.${i}`) }));
    const newcomer = await RawSmtp.connect(h.port(), { proxy: proxy('203.0.113.99') }); // throws unless 220
    assert.equal((await open[0].read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    await open[0].waitClosed();
    assert.ok(
      h
        .logs()
        .some(
          (l) =>
            l.message === 'pre-auth session closed to make room' && l.ip === '203.0.113.1' && l.for === '203.0.113.99',
        ),
    );
    open.push(newcomer);

    // A PROXY header claiming loopback is no local client (issue 23 item 4): it counts against
    // the unauthenticated share like any other, so it closes the next-oldest session.
    const claimed = await RawSmtp.connect(h.port(), { proxy: proxy('127.0.0.1') });
    assert.equal((await open[1].read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    await open[1].waitClosed();
    assert.ok(
      h
        .logs()
        .some(
          (l) =>
            l.message === 'pre-auth session closed to make room' && l.ip === '203.0.113.2' && l.for === '127.0.0.1',
        ),
    );
    open.push(claimed);

    const lan = await RawSmtp.connect(h.port(), { proxy: proxy('192.168.1.5') });
    open.push(lan);
    assert.equal((await lan.ehlo()).code, 250);
    // The trusted client took a reserved slot: nobody was closed for it.
    for (const c of open.slice(2)) assert.equal((await c.cmd('NOOP')).code, 250);
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
    await waitFor(
      () => h.logs().some((l) => l.message === 'pre-auth timeout, connection closed' && l.ip === '127.0.0.9'),
      5000,
      'the log line',
    );
    // The authenticated session outlived the deadline (it was opened first).
    assert.equal((await authed.cmd('NOOP')).code, 250);
    await authed.quit();
  } finally {
    await h.stop();
  }
});

test('check-config refuses reservedClients >= maxClients, naming the key', () => {
  assert.throws(
    () =>
      makeConfig(dir, { listeners: [{ name: 'l', host: '127.0.0.1', port: 0, maxClients: 5, reservedClients: 5 }] }),
    /listeners\[0\]\.reservedClients: must be below maxClients/,
  );
});

test('slowloris from 100 addresses: a trusted-network client and an authenticating client still get in (250 / 235)', {
  timeout: 60_000,
}, async () => {
  const config = makeConfig(dir, {
    listeners: [
      { name: 'local', host: '127.0.0.1', port: 0, trustedNetworks: ['127.0.0.250/32'], trustedAccount: 'office' },
    ],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  const h = await startListeners(config, spool);
  const slow: RawSmtp[] = [];
  try {
    // maxClients 100 (a tenth reserved): one slow pre-auth client each from 127.0.0.2..101,
    // greeted, then sending a command a byte at a time and never finishing it.
    for (let i = 2; i <= 101; i++) {
      const c = await RawSmtp.connect(h.port(), { localAddress: `127.0.0.${i}`, greeting: false });
      assert.equal((await c.read()).code, 220, `slow client ${i} greeted`);
      c.write('EH');
      slow.push(c);
    }
    // The share for unauthenticated sessions is 90: the oldest ten made room for the last ten.
    const evicted = slow.slice(0, 10);
    for (const c of evicted)
      assert.equal((await c.read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    await waitFor(
      () => h.logs().filter((l) => l.message === 'pre-auth session closed to make room').length === 10,
      5000,
      'ten eviction lines',
    );

    const trusted = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.250' });
    assert.equal((await trusted.ehlo()).code, 250);
    assert.equal(
      (await trusted.cmd('MAIL FROM:<scanner@example.com>')).code,
      250,
      'the trusted network relays without AUTH',
    );
    const authed = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.200' });
    assert.equal((await authed.ehlo()).code, 250);
    assert.equal((await authed.authPlain('printer', PASSWORD)).code, 235);
    // An authenticated session is out of the unauthenticated share: newcomers evict slow ones, not it.
    for (let i = 0; i < 5; i++) slow.push(await RawSmtp.connect(h.port(), { localAddress: `127.0.1.${i + 1}` }));
    assert.equal((await authed.cmd('MAIL FROM:<scanner@example.com>')).code, 250);
    assert.equal((await trusted.cmd('RSET')).code, 250);
    await trusted.quit();
    await authed.quit();
  } finally {
    for (const c of slow) c.socket.destroy();
    await h.stop();
  }
});

test('every slot taken: a newcomer closes the oldest unauthenticated session; with only authenticated ones left it gets 421', async () => {
  const config = makeConfig(dir, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, maxClients: 3, reservedClients: 1 }],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  const h = await startListeners(config, spool);
  const open: RawSmtp[] = [];
  const login = async (n: number) => {
    const c = await RawSmtp.connect(h.port(), { localAddress: `127.0.0.4${n}` });
    open.push(c);
    await c.ehlo();
    assert.equal((await c.authPlain('printer', PASSWORD)).code, 235);
    return c;
  };
  try {
    const s1 = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.31' });
    const s2 = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.32' });
    open.push(s1, s2);
    await login(1); // the unauthenticated share (2) is full: s1 makes room
    assert.equal((await s1.read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    await login(2);
    await login(3); // all 3 slots taken (s2 and two logged in): s2 makes room
    assert.equal((await s2.read()).lines.join(), '421 4.7.0 Too many connections, try again later');
    const reasons = h
      .logs()
      .filter((l) => l.message === 'pre-auth session closed to make room')
      .map((l) => `${l.ip} ${l.reason}`);
    assert.deepEqual(reasons, ['127.0.0.31 unauthenticated share full', '127.0.0.32 every slot taken']);
    await s2.waitClosed();
    // Only authenticated sessions left: nobody to close, smtp-server's maxClients refuses.
    const s3 = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.33', greeting: false });
    open.push(s3);
    assert.match((await s3.read()).lines.join(), /^421 .*Too many connected clients/);
    for (const c of open.slice(2, 5)) assert.equal((await c.cmd('NOOP')).code, 250);
  } finally {
    await Promise.all(open.map((c) => c.quit()));
    await h.stop();
  }
});
