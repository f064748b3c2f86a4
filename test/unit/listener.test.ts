// Inbound listener over real SMTP sessions on loopback, with the real spool in a temp
// stateDir: every reply code of the contract, AUTH, policy, limits, protocol hygiene.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, readdir } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { Listeners } from '../../src/listener/server.js';
import { hashPassword, kdfStats } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { Spool } from '../../src/spool/spool.js';
import { createLogger } from '../../src/log/logger.js';
import { parseConfig, ConfigError } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { Envelope } from '../../src/types.js';
import { RawSmtp, makeConfig, message, ACCOUNT, spooledMessage } from '../helpers/listener.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { splitReceived } from '../helpers/received.js';

const PASSWORD = 'correct horse battery staple';
const b64 = (s: string) => Buffer.from(s).toString('base64');
let dir: string;
let spool: Spool;
let hash: string;
let hash2: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xb-listener-'));
  spool = new Spool(dir, createLogger({ silent: true }), { fsync: true });
  await spool.init();
  [hash, hash2] = await Promise.all([
    hashPassword(PASSWORD, FAKE_SCRYPT_COST),
    hashPassword('other password', FAKE_SCRYPT_COST),
  ]);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Harness {
  listeners: Listeners;
  port: (name?: string) => number;
  queued: Envelope[];
  logs: Array<Record<string, unknown>>;
  rawLog: () => string;
  stop: () => Promise<void>;
}

function users(extra: Record<string, unknown>[] = []) {
  return [
    { username: 'printer', passwordHash: hash, account: 'office' },
    {
      username: 'nas',
      passwordHash: hash2,
      account: 'office',
      allowedSenders: ['*@nas.example.com', 'Admin@Example.com', '*@exämple.com'],
    },
    ...extra,
  ];
}

async function start(listeners: Record<string, unknown>[], over: Record<string, unknown> = {}): Promise<Harness> {
  const config = makeConfig(dir, { listeners, users: users(), ...over });
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const log = createLogger({ level: 'debug', format: 'json', stream });
  const queued: Envelope[] = [];
  const l = new Listeners({ config, log, spool, onQueued: (env) => queued.push(env) });
  const bound = await l.start();
  return {
    listeners: l,
    port: (name) => bound.find((b) => !name || b.name === name)!.port,
    queued,
    get logs() {
      return lines.map((x) => JSON.parse(x) as Record<string, unknown>);
    },
    rawLog: () => lines.join('\n'),
    stop: () => l.stop(),
  };
}

const local = (extra: Record<string, unknown> = {}) => ({
  name: 'local',
  host: '127.0.0.1',
  port: 0,
  tls: 'none',
  ...extra,
});

async function spooledIds(): Promise<string[]> {
  return (await spool.list()).map((e) => e.id);
}

test('AUTH PLAIN via nodemailer: 250 2.0.0 Ok: queued as ID after the spool has the exact bytes', async () => {
  const h = await start([local()]);
  try {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: h.port(),
      secure: false,
      ignoreTLS: true,
      auth: { user: 'printer', pass: PASSWORD },
    });
    const raw = 'From: scanner@example.com\r\nTo: boss@example.net\r\nSubject: scan\r\n\r\nPage 1\r\n.leading dot\r\n';
    const info = await transport.sendMail({
      envelope: { from: 'scanner@example.com', to: ['boss@example.net', 'cc@example.net'] },
      raw,
    });
    transport.close();
    const m = /^250 2\.0\.0 Ok: queued as (\S+)$/.exec(info.response);
    assert.ok(m, info.response);
    const id = m[1];
    assert.equal(h.queued.length, 1);
    const env = h.queued[0];
    assert.equal(env.id, id);
    assert.equal(env.user, 'printer');
    assert.equal(env.account, 'office');
    assert.equal(env.mailFrom, 'scanner@example.com');
    assert.deepEqual(env.rcptTo, ['boss@example.net', 'cc@example.net']);
    assert.equal(env.clientIp, '127.0.0.1');
    assert.equal(env.bodyType, '7bit');
    assert.equal(env.smtputf8, false);
    assert.deepEqual(await spool.get(id), env);
    const spooled = splitReceived((await spooledMessage(spool, id)).toString('utf8'), {
      id,
      protocol: 'ESMTPA',
      listener: 'local',
      client: '[127.0.0.1]',
    });
    assert.equal(spooled.rest, raw);
    const rec = h.logs.find((l) => l.message === 'received');
    assert.ok(rec);
    assert.deepEqual(
      { id: rec.id, ip: rec.ip, user: rec.user, from: rec.from, rcpts: rec.rcpts, size: rec.size },
      {
        id,
        ip: '127.0.0.1',
        user: 'printer',
        from: 'scanner@example.com',
        rcpts: 2,
        size: (await spooledMessage(spool, id)).length,
      },
    );
    assert.ok(!h.rawLog().includes(PASSWORD));
  } finally {
    await h.stop();
  }
});

test('AUTH LOGIN works and a cached login skips the KDF; bad and unknown users get the same 535 and log line', async () => {
  const h = await start([local()]);
  try {
    const c1 = await RawSmtp.connect(h.port());
    await c1.ehlo();
    const k0 = kdfStats.calls;
    assert.equal((await c1.authLogin('printer', PASSWORD)).code, 235);
    const k1 = kdfStats.calls;
    assert.equal(k1 - k0, 1, 'first login runs the KDF once');
    await c1.quit();

    // A printer opening a new connection per page.
    const c2 = await RawSmtp.connect(h.port());
    await c2.ehlo();
    const r2 = await c2.authPlain('printer', PASSWORD);
    assert.equal(r2.code, 235);
    assert.equal(kdfStats.calls, k1, 'second login answered from the cache');
    await c2.quit();

    const c3 = await RawSmtp.connect(h.port());
    await c3.ehlo();
    const bad = await c3.authPlain('printer', 'wrong password');
    const unknown = await c3.authLogin('nobody', 'wrong password');
    assert.equal(bad.lines.join(), '535 5.7.8 Authentication credentials invalid');
    assert.equal(unknown.lines.join(), '535 5.7.8 Authentication credentials invalid');
    assert.equal(kdfStats.calls - k1, 2, 'an unknown user costs a KDF run like a known one');
    await c3.quit();

    const fails = h.logs.filter((l) => l.message === 'auth failed ip=127.0.0.1');
    assert.equal(fails.length, 2);
    // Same fields, same wording: nothing tells whether "nobody" exists.
    assert.deepEqual(Object.keys(fails[0]).sort(), Object.keys(fails[1]).sort());
    const secrets = [
      'wrong password',
      PASSWORD,
      b64(PASSWORD),
      b64('wrong password'),
      b64('\0printer\0wrong password'),
      b64(`\0printer\0${PASSWORD}`),
    ];
    for (const s of secrets) assert.ok(!h.rawLog().includes(s), `log leaks ${s}`);
    assert.ok(!/unknown user|no such user|not found/i.test(h.rawLog()));
  } finally {
    await h.stop();
  }
});

test('lockout: after N failures 454 4.7.0 even with the right password, logged for fail2ban; recovery after the cool-down', async () => {
  const h = await start([local({ authFailLimit: 3, authFailWindow: '1m', authLockout: '1500ms' })]);
  try {
    const c = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.5' });
    await c.ehlo();
    for (let i = 0; i < 3; i++) assert.equal((await c.authPlain('printer', `guess${i}`)).code, 535);
    const locked = await c.authPlain('printer', PASSWORD);
    assert.equal(locked.lines.join(), '454 4.7.0 Too many authentication failures, try later');
    await c.quit();
    // Another address is not affected.
    const other = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.6' });
    await other.ehlo();
    assert.equal((await other.authPlain('printer', PASSWORD)).code, 235);
    await other.quit();

    assert.equal(h.logs.filter((l) => l.message === 'auth failed ip=127.0.0.5').length, 3);
    assert.equal(h.logs.filter((l) => l.message === 'auth lockout ip=127.0.0.5').length, 1);
    // The shipped fail2ban filter matches these very lines (<HOST> as fail2ban expands it, simplified).
    const filter = await readFile(
      new URL('../../config/fail2ban/filter.d/xoauth2-bridge.conf', import.meta.url),
      'utf8',
    );
    const failregex = /^failregex\s*=\s*(.+)$/m.exec(filter)![1].trim();
    const re = new RegExp(failregex.replace('<HOST>', '(?<host>[0-9a-fA-F.:]+)'));
    const matched = h
      .rawLog()
      .split('\n')
      .map((l) => re.exec(l)?.groups?.host)
      .filter(Boolean);
    assert.deepEqual(matched, ['127.0.0.5', '127.0.0.5', '127.0.0.5', '127.0.0.5']);

    // time is the subject: the 1500 ms lockout must have run out.
    await sleep(1600);
    const again = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.5' });
    await again.ehlo();
    assert.equal((await again.authPlain('printer', PASSWORD)).code, 235);
    await again.quit();
  } finally {
    await h.stop();
  }
});

test('no AUTH and not trusted: MAIL FROM gets 530 5.7.0', async () => {
  const h = await start([local()]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    const r = await c.cmd('MAIL FROM:<scanner@example.com>');
    assert.equal(r.lines.join(), '530 5.7.0 Authentication required');
    await c.quit();
    assert.deepEqual(h.queued, []);
  } finally {
    await h.stop();
  }
});

test('trusted network (127.0.0.2 as the LAN) relays without AUTH through trustedAccount, senders still checked; HELO-only works', async () => {
  const h = await start([local({ name: 'lan', trustedNetworks: ['127.0.0.2/32'], trustedAccount: 'office' })]);
  try {
    const lan = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.2' });
    assert.equal((await lan.cmd('HELO old-printer')).code, 250);
    const ok = await lan.sendRaw(
      'scanner@example.com',
      ['boss@example.net'],
      message('scanner@example.com', 'boss@example.net'),
    );
    assert.match(ok.lines.join(), /^250 2\.0\.0 Ok: queued as \S+$/);
    const spoof = await lan.cmd('MAIL FROM:<ceo@example.com>');
    assert.equal(spoof.lines.join(), '553 5.7.1 Sender address rejected: not owned by trusted account office');
    await lan.quit();
    assert.equal(h.queued.length, 1);
    assert.equal(h.queued[0].user, null);
    assert.equal(h.queued[0].account, 'office');
    assert.equal(h.queued[0].clientIp, '127.0.0.2');

    const outsider = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.3' });
    await outsider.cmd('HELO somewhere');
    assert.equal((await outsider.cmd('MAIL FROM:<scanner@example.com>')).code, 530);
    await outsider.quit();
  } finally {
    await h.stop();
  }
});

test('sender policy: MAIL FROM and From header must be allowed (exact, case-insensitive, *@domain)', async () => {
  const h = await start([local()]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    assert.equal((await c.authPlain('nas', 'other password')).code, 235);
    const r1 = await c.cmd('MAIL FROM:<scanner@example.com>');
    assert.equal(r1.lines.join(), '553 5.7.1 Sender address rejected: not owned by user nas');
    await c.cmd('RSET');
    // Case-insensitive exact match and a *@domain match.
    const ok1 = await c.sendRaw(
      'admin@EXAMPLE.com',
      ['x@example.net'],
      message('Admin <admin@example.com>', 'x@example.net'),
    );
    assert.equal(ok1.code, 250, ok1.text);
    const ok2 = await c.sendRaw(
      'backup@nas.example.com',
      ['x@example.net'],
      message('"NAS, backup" <backup@NAS.example.com>', 'x@example.net'),
    );
    assert.equal(ok2.code, 250, ok2.text);
    const before = await spooledIds();
    // Envelope fine, From header somebody else: refused at the end of DATA, nothing spooled.
    const bad = await c.sendRaw(
      'backup@nas.example.com',
      ['x@example.net'],
      message('ceo@example.com', 'x@example.net', 'x'.repeat(200_000)),
    );
    assert.equal(bad.lines.join(), '553 5.7.1 Sender address rejected: From header address not owned by user nas');
    // Display-name spoof and folded From headers are caught too.
    const bad2 = await c.sendRaw(
      'backup@nas.example.com',
      ['x@example.net'],
      message('"ceo@example.com"\r\n <backup@nas.example.com>', 'x@example.net'),
    );
    assert.equal(bad2.code, 553);
    const bad3 = await c.sendRaw(
      'backup@nas.example.com',
      ['x@example.net'],
      'Subject: two froms\r\nFrom: backup@nas.example.com\r\nFROM: evil@example.org\r\n\r\nhi\r\n.\r\n',
    );
    assert.equal(bad3.code, 553);
    // A From header hidden behind a bare CR (the upstream client turns it into a line break).
    const bad4 = await c.sendRaw(
      'backup@nas.example.com',
      ['x@example.net'],
      'From: backup@nas.example.com\r\nSubject: cr\rFrom: evil@example.org\r\n\r\nhi\r\n.\r\n',
    );
    assert.equal(bad4.code, 553);
    assert.deepEqual(await spooledIds(), before);
    // The session is still usable after a refusal.
    assert.equal((await c.cmd('NOOP')).code, 250);
    await c.quit();
    assert.equal(h.queued.length, 2);
  } finally {
    await h.stop();
  }
});

test('size: EHLO SIZE, MAIL SIZE= too big and an oversized stream both get 552 5.3.4; nothing is spooled', async () => {
  const max = 64 * 1024;
  const h = await start([local({ maxMessageSize: max })]);
  try {
    const c = await RawSmtp.connect(h.port());
    const ehlo = await c.ehlo();
    assert.ok(ehlo.lines.includes(`250-SIZE ${max}`) || ehlo.lines.includes(`250 SIZE ${max}`), ehlo.lines.join('\n'));
    await c.authPlain('printer', PASSWORD);
    const r1 = await c.cmd(`MAIL FROM:<scanner@example.com> SIZE=${max + 1}`);
    assert.equal(r1.code, 552);
    assert.match(r1.text, /^5\.3\.4 /);
    const before = await spooledIds();
    const big = await c.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net', 'y'.repeat(max * 3)),
    );
    assert.equal(big.lines.join(), '552 5.3.4 Message size exceeds fixed maximum message size');
    assert.deepEqual(await spooledIds(), before);
    assert.deepEqual(
      (await readdir(spool.dir)).filter((n) => n.endsWith('.msg') || n.endsWith('.tmp')).length,
      before.length,
    );
    // Just under the limit still goes through.
    const fits = await c.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net', 'z'.repeat(max - 200)),
    );
    assert.equal(fits.code, 250, fits.text);
    await c.quit();
  } finally {
    await h.stop();
  }
});

test('a header section that never ends is refused (552 5.3.4) instead of being buffered', async () => {
  const h = await start([local()]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    await c.authPlain('printer', PASSWORD);
    const before = await spooledIds();
    const junk = Array.from({ length: 6000 }, (_, i) => `X-Junk-${i}: ${'j'.repeat(60)}\r\n`).join('');
    const r = await c.sendRaw('scanner@example.com', ['x@example.net'], `From: scanner@example.com\r\n${junk}.\r\n`);
    assert.equal(r.lines.join(), '552 5.3.4 Message header section too large');
    assert.deepEqual(await spooledIds(), before);
    await c.quit();
  } finally {
    await h.stop();
  }
});

test('recipients cap: 452 4.5.3 Too many recipients', async () => {
  const h = await start([local({ maxRecipients: 2 })]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    await c.authPlain('printer', PASSWORD);
    assert.equal((await c.cmd('MAIL FROM:<scanner@example.com>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<a@example.net>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<b@example.net>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<c@example.net>')).lines.join(), '452 4.5.3 Too many recipients');
    await c.quit();
  } finally {
    await h.stop();
  }
});

test('spool error: 452 4.3.1 Insufficient system storage, and the listener keeps working afterwards', async () => {
  const h = await start([local()]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    await c.authPlain('printer', PASSWORD);
    // A real storage failure: the spool directory vanished under the daemon.
    await rm(spool.dir, { recursive: true, force: true });
    const r = await c.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net'),
    );
    assert.equal(r.lines.join(), '452 4.3.1 Insufficient system storage');
    assert.deepEqual(h.queued, []);
    await spool.init();
    const ok = await c.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net'),
    );
    assert.equal(ok.code, 250);
    await c.quit();
    assert.ok(h.logs.some((l) => l.message === 'spool write failed, message refused with 452'));
  } finally {
    await spool.init();
    await h.stop();
  }
});

test('bare LF lines from a device are spooled as CRLF', async () => {
  const h = await start([local()]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    await c.authPlain('printer', PASSWORD);
    const payload =
      'From: scanner@example.com\nTo: x@example.net\nSubject: lf\n\nline one\nline two\r\nline three\n\r\n.\r\n';
    const r = await c.sendRaw('scanner@example.com', ['x@example.net'], payload);
    assert.equal(r.code, 250);
    await c.quit();
    const body = splitReceived((await spooledMessage(spool, h.queued[0].id)).toString('utf8')).rest;
    assert.equal(
      body,
      'From: scanner@example.com\r\nTo: x@example.net\r\nSubject: lf\r\n\r\nline one\r\nline two\r\nline three\r\n\r\n',
    );
  } finally {
    await h.stop();
  }
});

test('SMTP smuggling: each known end-of-data variant yields exactly one message', async () => {
  const h = await start([local()]);
  const variants: Record<string, string> = {
    'LF.LF': '\n.\n',
    'LF.CRLF': '\n.\r\n',
    'CR.CRLF': '\r.\r\n',
    'CRLF.CR': '\r\n.\r',
    'CRLF.LF': '\r\n.\n',
    'CRLF NUL.CRLF': '\r\n\x00.\r\n',
    'CR.CR': '\r.\r',
  };
  try {
    for (const [name, eod] of Object.entries(variants)) {
      const c = await RawSmtp.connect(h.port());
      await c.ehlo();
      await c.authPlain('printer', PASSWORD);
      const before = (await spooledIds()).length;
      const payload =
        'From: scanner@example.com\r\nTo: x@example.net\r\nSubject: outer\r\n\r\nouter body' +
        eod +
        'MAIL FROM:<scanner@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: scanner@example.com\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n';
      const first = await c.sendRaw('scanner@example.com', ['x@example.net'], payload);
      assert.match(first.lines.join(), /^250 2\.0\.0 Ok: queued as /, name);
      // Nothing else is pending: the next reply belongs to NOOP.
      assert.equal((await c.cmd('NOOP')).code, 250, name);
      await c.quit();
      const ids = await spooledIds();
      assert.equal(ids.length, before + 1, `${name}: exactly one message`);
      const last = h.queued.at(-1)!;
      assert.deepEqual(last.rcptTo, ['x@example.net'], name);
      assert.ok(
        (await spooledMessage(spool, last.id)).toString('utf8').includes('smuggled body'),
        `${name}: smuggled text stayed in the body`,
      );
    }
    assert.equal(h.queued.length, Object.keys(variants).length);
  } finally {
    await h.stop();
  }
});

test('8BITMIME and SMTPUTF8 are recorded, UTF-8 addresses accepted, bytes kept', async () => {
  const h = await start([local()]);
  try {
    const c = await RawSmtp.connect(h.port());
    const ehlo = await c.ehlo();
    assert.ok(ehlo.lines.some((l) => l.includes('8BITMIME')) && ehlo.lines.some((l) => l.includes('SMTPUTF8')));
    await c.authPlain('nas', 'other password');
    const raw =
      'From: Jörg <jörg@exämple.com>\r\nTo: zoë@exämple.org\r\nSubject: Grüße\r\n\r\nÄpfel und Öl — 8 bit\r\n';
    const r = await c.sendRaw('jörg@exämple.com', ['zoë@exämple.org'], raw + '.\r\n', 'BODY=8BITMIME SMTPUTF8');
    assert.equal(r.code, 250, r.lines.join());
    await c.quit();
    const env = h.queued[0];
    assert.equal(env.bodyType, '8bitmime');
    assert.equal(env.smtputf8, true);
    assert.equal(env.mailFrom, 'jörg@exämple.com');
    assert.deepEqual(env.rcptTo, ['zoë@exämple.org']);
    assert.deepEqual(splitReceived(await spooledMessage(spool, env.id), { id: env.id }).rest, Buffer.from(raw, 'utf8'));
  } finally {
    await h.stop();
  }
});

test('PROXY protocol v1: client IP comes from the header (trusted networks, AUTH-before-TLS rule, lockouts)', async () => {
  const h = await start([
    local({
      name: 'proxied',
      proxyProtocol: true,
      trustedNetworks: ['198.51.100.0/24', '2001:db8:1::/48'],
      trustedAccount: 'office',
      authFailLimit: 2,
    }),
  ]);
  try {
    const lan = await RawSmtp.connect(h.port(), { proxy: 'PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n' });
    await lan.ehlo();
    const r = await lan.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net'),
    );
    assert.equal(r.code, 250, r.lines.join());
    await lan.quit();
    assert.equal(h.queued[0].clientIp, '198.51.100.7');
    assert.equal(h.queued[0].user, null);
    const lan6 = await RawSmtp.connect(h.port(), { proxy: 'PROXY TCP6 2001:db8:1::5 ::1 40000 25\r\n' });
    await lan6.ehlo();
    assert.equal(
      (await lan6.sendRaw('scanner@example.com', ['x@example.net'], message('scanner@example.com', 'x@example.net')))
        .code,
      250,
    );
    await lan6.quit();
    assert.equal(h.queued[1].clientIp, '2001:db8:1::5');
    const outside6 = await RawSmtp.connect(h.port(), { proxy: 'PROXY TCP6 2001:db8:2::5 ::1 40000 25\r\n' });
    await outside6.ehlo();
    assert.equal((await outside6.cmd('MAIL FROM:<scanner@example.com>')).code, 530);
    await outside6.quit();

    // Seen as a remote client: no AUTH on cleartext, no relay.
    const remote = await RawSmtp.connect(h.port(), { proxy: 'PROXY TCP4 203.0.113.9 127.0.0.1 40001 25\r\n' });
    await remote.ehlo();
    assert.equal(
      (await remote.authPlain('printer', PASSWORD)).lines.join(),
      '538 5.7.11 Encryption required for requested authentication mechanism',
    );
    assert.equal((await remote.cmd('MAIL FROM:<scanner@example.com>')).code, 530);
    await remote.quit();
  } finally {
    await h.stop();
  }
  // Lockouts count the proxied address.
  const h2 = await start([local({ name: 'proxied', proxyProtocol: true, allowInsecureAuth: true, authFailLimit: 2 })]);
  try {
    const c = await RawSmtp.connect(h2.port(), { proxy: 'PROXY TCP6 2001:db8::77 ::1 40002 25\r\n' });
    await c.ehlo();
    assert.equal((await c.authPlain('printer', 'nope1')).code, 535);
    assert.equal((await c.authPlain('printer', 'nope2')).code, 535);
    assert.equal((await c.authPlain('printer', PASSWORD)).code, 454);
    await c.quit();
    assert.ok(h2.logs.some((l) => l.message === 'auth lockout ip=2001:db8::77'));
    const direct = await RawSmtp.connect(h2.port(), { proxy: 'PROXY TCP4 192.0.2.1 127.0.0.1 40003 25\r\n' });
    await direct.ehlo();
    assert.equal(
      (await direct.authPlain('printer', PASSWORD)).code,
      235,
      'allowInsecureAuth lets a remote client AUTH in cleartext',
    );
    await direct.quit();
  } finally {
    await h2.stop();
  }
});

test('connection limits: per-IP cap (421 4.7.0) and maxClients', async () => {
  const h = await start([local({ maxConnectionsPerIp: 2 }), local({ name: 'tiny', maxClients: 1 })]);
  try {
    const a = await RawSmtp.connect(h.port('local'), { localAddress: '127.0.0.7' });
    const b = await RawSmtp.connect(h.port('local'), { localAddress: '127.0.0.7' });
    const c = await RawSmtp.connect(h.port('local'), { localAddress: '127.0.0.7', greeting: false });
    const refused = await c.read();
    assert.equal(refused.lines.join(), '421 4.7.0 Too many connections from your address, try again later');
    await c.waitClosed();
    // Another address still gets in; and a slot frees up when a client leaves.
    const d = await RawSmtp.connect(h.port('local'), { localAddress: '127.0.0.8' });
    await a.quit();
    // The server notices the close asynchronously; the freed slot shows up shortly after.
    const tryConnect = () => RawSmtp.connect(h.port('local'), { localAddress: '127.0.0.7' }).catch(() => undefined);
    let e = await tryConnect();
    await waitFor(async () => !!(e ??= await tryConnect()), 5000, 'a freed slot is usable again');
    assert.ok(e, 'a freed slot is usable again');
    await Promise.all([b.quit(), d.quit(), e.quit()]);

    // maxClients counts every session; an unauthenticated one would make room for a
    // newcomer (listener-slots.test.ts), an authenticated one does not.
    const t1 = await RawSmtp.connect(h.port('tiny'));
    await t1.ehlo();
    assert.equal((await t1.authPlain('printer', PASSWORD)).code, 235);
    const t2 = await RawSmtp.connect(h.port('tiny'), { greeting: false });
    const full = await t2.read();
    assert.equal(full.code, 421);
    assert.match(full.text, /Too many connected clients/);
    assert.equal((await t1.cmd('NOOP')).code, 250);
    await t1.quit();
  } finally {
    await h.stop();
  }
});

test('idle timeout closes the session with 421', async () => {
  const h = await start([local({ socketTimeout: '1s' })]);
  try {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    const t0 = Date.now();
    const r = await c.read(5000);
    assert.equal(r.code, 421);
    assert.ok(Date.now() - t0 >= 900);
    await c.waitClosed();
  } finally {
    await h.stop();
  }
});

test('stop(): a session in DATA finishes with 250, idle sessions get 421, new connections are refused', async () => {
  const h = await start([local()]);
  const port = h.port();
  const busy = await RawSmtp.connect(port);
  await busy.ehlo();
  await busy.authPlain('printer', PASSWORD);
  await busy.cmd('MAIL FROM:<scanner@example.com>');
  await busy.cmd('RCPT TO:<x@example.net>');
  assert.equal((await busy.cmd('DATA')).code, 354);
  busy.write('From: scanner@example.com\r\nSubject: half\r\n\r\nfirst half\r\n');
  const idle = await RawSmtp.connect(port);
  await idle.ehlo();
  const stopped = h.stop();
  const idleReply = await idle.read();
  assert.equal(idleReply.code, 421);
  // Canary: the listener refuses new connections, so the stop is under way while the busy
  // session still has its message to finish.
  await waitFor(
    async () =>
      RawSmtp.connect(port).then(
        (c) => (c.socket.destroy(), false),
        () => true,
      ),
    5000,
    'the listener closed',
  );
  busy.write('second half\r\n.\r\n');
  const done = await busy.read();
  assert.match(done.lines.join(), /^250 2\.0\.0 Ok: queued as /);
  busy.socket.end();
  await stopped;
  assert.equal(h.queued.length, 1);
  assert.match((await spooledMessage(spool, h.queued[0].id)).toString('utf8'), /first half\r\nsecond half\r\n$/);
  await assert.rejects(RawSmtp.connect(port));
});

test('reload: new users and changed passwords/senders apply without restart; the cache is cleared', async () => {
  const h = await start([local()]);
  try {
    const login = async (u: string, p: string) => {
      const c = await RawSmtp.connect(h.port());
      await c.ehlo();
      const r = await c.authPlain(u, p);
      const m = r.code === 235 ? await c.cmd('MAIL FROM:<scanner@example.com>') : null;
      await c.quit();
      return { auth: r.code, mail: m?.code };
    };
    assert.deepEqual(await login('printer', PASSWORD), { auth: 235, mail: 250 });
    assert.deepEqual(await login('scanner2', 'other password'), { auth: 535, mail: undefined });
    const next: Config = makeConfig(dir, {
      listeners: [local()],
      users: [
        { username: 'printer', passwordHash: hash2, account: 'office', allowedSenders: ['only@example.com'] },
        { username: 'scanner2', passwordHash: hash2, account: 'office' },
      ],
    });
    await h.listeners.reload(next);
    // The old password was cached; the reload must forget it.
    assert.deepEqual(await login('printer', PASSWORD), { auth: 535, mail: undefined });
    assert.deepEqual(await login('printer', 'other password'), { auth: 235, mail: 553 });
    assert.deepEqual(await login('scanner2', 'other password'), { auth: 235, mail: 250 });
  } finally {
    await h.stop();
  }
});

test('open-relay and spoofable-proxy configs are refused by the config check', () => {
  const cfg = (listener: Record<string, unknown>) => () => makeConfig(dir, { listeners: [listener], users: [] });
  const lan = { name: 'lan', host: '0.0.0.0', port: 587, tls: 'starttls', trustedAccount: 'office' };
  for (const nets of [['0.0.0.0/0'], ['::/0'], ['0.0.0.0/1', '128.0.0.0/1'], ['192.168.1.0/24', '::/1', '8000::/1']]) {
    assert.throws(cfg({ ...lan, trustedNetworks: nets }), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.ok(
        e.problems.some((p) => p.path === 'listeners[0].trustedNetworks' && /open relay/.test(p.message)),
        JSON.stringify(e.problems),
      );
      return true;
    });
  }
  // A LAN range is fine; so is "anything" on a loopback-only listener.
  assert.doesNotThrow(cfg({ ...lan, trustedNetworks: ['192.168.1.0/24', 'fd00::/8'] }));
  assert.doesNotThrow(cfg({ ...lan, host: '127.0.0.1', trustedNetworks: ['0.0.0.0/0'] }));
  // PROXY headers from anyone + trusted networks = anyone can claim a trusted address.
  assert.throws(cfg({ ...lan, trustedNetworks: ['192.168.1.0/24'], proxyProtocol: true }), /proxyFrom/);
  assert.doesNotThrow(
    cfg({ ...lan, trustedNetworks: ['192.168.1.0/24'], proxyProtocol: true, proxyFrom: ['10.0.0.5'] }),
  );
  // The example from the contract still parses.
  assert.doesNotThrow(() =>
    parseConfig(
      `stateDir: ${dir}\nlisteners:\n  - { name: local, host: 127.0.0.1, port: 2525, tls: none }\naccounts:\n  - name: office\n    email: ${ACCOUNT.email}\n    oauth: { type: user, clientId: x, clientSecret: y }\n`,
      join(dir, 'c.yaml'),
    ),
  );
});

test('a port already in use fails start() with the listener named, and nothing stays bound', async () => {
  const h = await start([local()]);
  try {
    const config = makeConfig(dir, {
      listeners: [local({ name: 'free' }), local({ name: 'clash', port: h.port() })],
      users: users(),
    });
    const l2 = new Listeners({ config, log: createLogger({ silent: true }), spool, onQueued: () => {} });
    await assert.rejects(l2.start(), /listener "clash" cannot listen on 127\.0\.0\.1:\d+/);
  } finally {
    await h.stop();
  }
});
