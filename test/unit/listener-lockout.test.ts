// AUTH lockouts under a flood (issue 10 item 3): IPv6 failures count per /64, and no number
// of failures from other addresses pushes a locked address out of the table.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Spool } from '../../src/spool/spool.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { AuthFailures, MAX_TRACKED } from '../../src/listener/limits.js';
import { RawSmtp, makeConfig, startListeners, tempSpool } from '../helpers/listener.js';

const PASSWORD = 'correct horse battery staple';
let dir: string;
let spool: Spool;
let hash: string;

let cleanup: () => Promise<void>;

before(async () => {
  ({ dir, spool, cleanup } = await tempSpool('xb-lockout-'));
  hash = await hashPassword(PASSWORD, FAKE_SCRYPT_COST);
});
after(() => cleanup());

test('lockouts survive a flood of 10,000+ failures from other addresses; IPv6 is counted per /64', async () => {
  const limits = { authFailLimit: 3, authFailWindow: '10m', authLockout: '15m' };
  const config = makeConfig(dir, {
    listeners: [
      { name: 'proxied', host: '127.0.0.1', port: 0, proxyProtocol: true, allowInsecureAuth: true, ...limits },
    ],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  const failures = new AuthFailures();
  const h = await startListeners(config, spool, { authFailures: failures });
  const auth = async (ip: string, password: string) => {
    const fam = ip.includes(':') ? 'TCP6' : 'TCP4';
    const c = await RawSmtp.connect(h.port(), {
      proxy: `PROXY ${fam} ${ip} ${fam === 'TCP6' ? '::1' : '127.0.0.1'} 40000 25\r\n`,
    });
    await c.ehlo();
    const r = await c.authPlain('printer', password);
    await c.quit();
    return r.lines.join();
  };
  try {
    // Locking over real SMTP: an IPv4 address, and three different addresses of one /64.
    for (let i = 0; i < 3; i++) assert.match(await auth('203.0.113.5', `wrong${i}`), /^535 5\.7\.8/);
    for (const ip of ['2001:db8:1:2::a', '2001:db8:1:2::b', '2001:db8:1:2:ffff::c'])
      assert.match(await auth(ip, 'wrong'), /^535 5\.7\.8/);
    const lockouts = h.logs().filter((l) => String(l.message).startsWith('auth lockout'));
    assert.deepEqual(
      lockouts.map((l) => [l.ip, l.scope]),
      [
        ['203.0.113.5', '203.0.113.5'],
        ['2001:db8:1:2:ffff::c', '2001:db8:1:2::/64'],
      ],
    );
    assert.equal(
      await auth('2001:db8:1:2::1234', PASSWORD),
      '454 4.7.0 Too many authentication failures, try later',
      'the whole /64 is locked',
    );
    assert.match(await auth('2001:db8:1:3::1', PASSWORD), /^235/, 'the neighbouring /64 is not');

    // The flood (straight into the limiter: 10,000 KDFs over SMTP would take minutes):
    // single failures from 10,000 distinct addresses of one /64, then from more distinct
    // IPv4 addresses and /64s than the table keeps.
    const lim = { limit: 3, windowMs: 600e3, lockoutMs: 900e3 };
    for (let i = 0; i < 10_000; i++) failures.fail(`2001:db8:9:9::${i.toString(16)}`, lim);
    assert.ok(failures.lockedFor('2001:db8:9:9::ffff') > 0, 'distinct addresses in one /64 add up');
    for (let i = 0; i < 2 * MAX_TRACKED; i++) {
      failures.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, lim);
      failures.fail(`2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`, lim);
    }
    assert.ok(failures.size.tracked <= MAX_TRACKED, `unlocked entries bounded: ${failures.size.tracked}`);
    assert.ok(failures.lockedFor('203.0.113.5') > 600e3, 'the IPv4 lockout kept (nearly) its 900 s');

    // And the locked clients are still refused over real SMTP, even with the right password.
    assert.equal(await auth('203.0.113.5', PASSWORD), '454 4.7.0 Too many authentication failures, try later');
    assert.equal(await auth('2001:db8:1:2::a', PASSWORD), '454 4.7.0 Too many authentication failures, try later');
    assert.equal(await auth('::ffff:203.0.113.5', PASSWORD), '454 4.7.0 Too many authentication failures, try later');
  } finally {
    await h.stop();
  }
});
