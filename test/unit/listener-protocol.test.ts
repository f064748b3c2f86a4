// Protocol-level behaviour of the inbound listener with real sockets on loopback and the
// real spool: what reaches the debug log of an AUTH exchange, half-closing clients (Exim),
// encoded From display names, the Received trace header, the smtp-server hook guard,
// the greeting delay and PROXY protocol v2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { Listeners } from '../../src/listener/server.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import {
  smtpServerHookProblems,
  assertSmtpServerHooks,
  SMTP_SERVER_VERSION,
  feedDataStream,
  originalFeedDataStream,
} from '../../src/listener/hooks.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { Spool } from '../../src/spool/spool.js';
import { createLogger } from '../../src/log/logger.js';
import type { Envelope } from '../../src/types.js';
import { RawSmtp, makeConfig, message, spooledMessage } from '../helpers/listener.js';
import { splitReceived } from '../helpers/received.js';
import { waitFor } from '../helpers/wait.js';
import { proxyV2 } from '../helpers/proxy.js';

const PASSWORD = 'tr0ub4dor&3 secret';
const b64 = (s: string) => Buffer.from(s).toString('base64');
let dir: string;
let spool: Spool;
let hash: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xb-protocol-'));
  spool = new Spool(dir, createLogger({ silent: true }), { fsync: true });
  await spool.init();
  hash = await hashPassword(PASSWORD, FAKE_SCRYPT_COST);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Harness {
  port: () => number;
  queued: Envelope[];
  lines: string[];
  logs: () => Array<Record<string, unknown>>;
  stop: () => Promise<void>;
}

async function start(listener: Record<string, unknown> = {}, over: Record<string, unknown> = {}): Promise<Harness> {
  const config = makeConfig(dir, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, tls: 'none', ...listener }],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
    ...over,
  });
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
    port: () => bound[0].port,
    queued,
    lines,
    logs: () => lines.map((x) => JSON.parse(x) as Record<string, unknown>),
    stop: () => l.stop(),
  };
}

test('debug log: no AUTH payload, whatever precedes the AUTH verb on the line (bare CR, arguments) and no continuation line', async () => {
  const h = await start();
  try {
    const plain = b64(`\0printer\0${PASSWORD}`);
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    // smtp-server splits commands on LF only: each of these is one command line to it.
    await c.cmd(`NOOP\rAUTH PLAIN ${plain}`);
    await c.cmd(`EHLO x\rAUTH PLAIN ${plain}\rMAIL FROM:<scanner@example.com>`);
    await c.cmd(`NOOP AUTH PLAIN ${plain}`);
    await c.cmd(`RSET\r\rauth plain ${plain}`);
    assert.equal((await c.cmd('AUTH PLAIN')).code, 334);
    assert.equal((await c.cmd(plain)).code, 235, 'continuation line of AUTH PLAIN');
    await c.quit();
    const c2 = await RawSmtp.connect(h.port());
    await c2.ehlo();
    assert.equal((await c2.authLogin('printer', PASSWORD)).code, 235);
    assert.equal((await c2.authPlain('printer', PASSWORD)).code, 503, 'already authenticated');
    await c2.quit();
    const c3 = await RawSmtp.connect(h.port());
    await c3.ehlo();
    assert.equal((await c3.cmd(`AUTH PLAIN ${plain}`)).code, 235);
    await c3.quit();

    const all = h.lines.join('\n');
    for (const secret of [plain, PASSWORD, b64(PASSWORD), plain.slice(0, 24), b64(PASSWORD).slice(0, 12)])
      assert.ok(!all.includes(secret), `log leaks ${secret}`);
    // The sessions are logged at debug (the test would pass vacuously otherwise).
    assert.ok(
      h.logs().some((l) => l.message === 'C: NOOP \\r AUTH [redacted]'),
      'the NOOP line is logged, redacted',
    );
    assert.ok(
      h.logs().some((l) => l.message === 'C: EHLO x \\r AUTH [redacted] \\r MAIL FROM:<scanner@example.com>'),
      all,
    );
  } finally {
    await h.stop();
  }
});

/** A seeded generator (mulberry32): the same fuzz lines every run. */
function seeded(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

/** The password as it would look in a log: plain, hex, and base64 at each of the three byte alignments. */
function spellingsOf(password: string): string[] {
  const out = [password, Buffer.from(password).toString('hex')];
  for (let off = 0; off < 3; off++) {
    const rest = Buffer.from(password).subarray(off);
    out.push(rest.subarray(0, rest.length - (rest.length % 3)).toString('base64'));
  }
  return out;
}

test('debug log: a fuzzer splicing passwords (plain, hex, SASL PLAIN and XOAUTH2 base64) into any verb never gets one logged', async () => {
  const other = { username: 'scanner', password: 'S3cr3t!pa55&word' };
  const users = [{ username: 'printer', password: PASSWORD }, other];
  const h = await start(
    {},
    {
      users: [
        { username: 'printer', passwordHash: hash, account: 'office' },
        {
          username: other.username,
          passwordHash: await hashPassword(other.password, FAKE_SCRYPT_COST),
          account: 'office',
        },
      ],
    },
  );
  const rnd = seeded(24);
  const pick = <T>(a: readonly T[]): T => a[rnd(a.length)];
  const payload = (u: { username: string; password: string }): string => {
    const junk = 'xyz'.slice(0, rnd(3)); // shifts the base64 alignment of what follows
    return pick([
      () => u.password,
      () => Buffer.from(u.password).toString('hex'),
      () => b64(u.password),
      () => b64(`${junk}\0${u.username}\0${u.password}`),
      () => b64(`${u.username}\0${u.username}\0${u.password}`),
      () => b64(`${junk}user=${u.username}\x01auth=Bearer ${u.password}\x01\x01`),
    ])();
  };
  const templates = [
    (p: string) => `EHLO fuzz.IN ${p}`,
    (p: string) => `EHLO ${p}`,
    (p: string) => `HELO x${p}`,
    (p: string) => `EHLO fuzz.${p}`,
    (p: string) => `EHLO x\r${p}`,
    (p: string) => `MAIL FROM:<a@example.com> ${p}`,
    (p: string) => `MAIL FROM:<${p}@example.com>`,
    (p: string) => `MAIL FROM:${p}`,
    (p: string) => `MAIL FROM:<a@example.com> SIZE=10 ENVID=${p}`,
    (p: string) => `RCPT TO:<x@${p}>`,
    (p: string) => `RCPT TO:<x@example.org> NOTIFY=${p}`,
    (p: string) => `NOOP ${p}`,
    (p: string) => `VRFY ${p}`,
    (p: string) => `RSET ${p}`,
    (p: string) => `BDAT ${p}`,
    (p: string) => `XFUZZ${rnd(100)} ${p}`,
    (p: string) => `${p}`,
  ];
  let sent = 0;
  try {
    for (let session = 0; session < 30; session++) {
      const c = await RawSmtp.connect(h.port());
      await c.ehlo('fuzz.IN');
      // Half the sessions authenticated: smtp-server closes unauthenticated ones after 10 commands.
      const authed = session % 2 === 0;
      if (authed)
        assert.equal(
          (await c.authPlain(users[session % 4 < 2 ? 0 : 1].username, users[session % 4 < 2 ? 0 : 1].password)).code,
          235,
        );
      let open = true;
      for (let i = 0; i < (authed ? 20 : 7) && open; i++) {
        const line = pick(templates)(payload(pick(users)));
        sent++;
        // 421: smtp-server closes after 10 unrecognised (or unauthenticated) commands.
        open = (await c.cmd(line)).code !== 421;
      }
      // The line from the field report, verbatim.
      if (open) await c.cmd(`EHLO fuzz.IN ${b64(`\0printer\0${PASSWORD}`)}`);
      await c.quit();
    }
    // A last session: its EHLO line is the canary that every earlier line reached the log.
    const canary = await RawSmtp.connect(h.port());
    await canary.ehlo('canary.test');
    await canary.quit();
    await waitFor(() => h.logs().some((l) => l.message === 'C: EHLO canary.test'), 5000, 'the canary line');
    const all = h.lines.join('\n');
    const lower = all.toLowerCase();
    for (const u of users)
      for (const spelling of spellingsOf(u.password)) {
        const found =
          spelling === Buffer.from(u.password).toString('hex') ? lower.includes(spelling) : all.includes(spelling);
        assert.ok(!found, `the log carries ${u.username}'s password as ${JSON.stringify(spelling)}`);
      }
    // Not vacuous: the sessions were logged at debug, the harmless part of each line kept.
    const clientLines = h.logs().filter((l) => String(l.message).startsWith('C: '));
    assert.ok(clientLines.length >= sent / 2, `${clientLines.length} client lines logged for ${sent} sent`);
    assert.ok(
      clientLines.some((l) => l.message === 'C: EHLO fuzz.IN […]'),
      'EHLO logged up to its host name',
    );
    assert.ok(
      clientLines.some((l) => l.message === 'C: MAIL FROM:<a@example.com> […]'),
      'MAIL logged up to its path',
    );
    assert.ok(
      clientLines.some((l) => l.message === 'C: MAIL FROM:<a@example.com> SIZE=10 […]'),
      'known MAIL parameters kept',
    );
  } finally {
    await h.stop();
  }
});

test('a client that writes `.` and QUIT together and then half-closes (as Exim does) still gets 250 queued and 221', async () => {
  const h = await start();
  try {
    for (const auth of [true, false]) {
      const c = await RawSmtp.connect(h.port());
      await c.ehlo('exim.test');
      if (auth) assert.equal((await c.authPlain('printer', PASSWORD)).code, 235);
      else assert.equal((await c.cmd('RSET')).code, 250);
      if (!auth) {
        // Without AUTH the transaction is refused; the refusal must reach the half-closed client too.
        c.write('MAIL FROM:<scanner@example.com>\r\nQUIT\r\n');
        c.socket.end();
        assert.match((await c.read()).lines.join(), /^530 5\.7\.0/);
        assert.equal((await c.read()).code, 221);
        await c.waitClosed();
        continue;
      }
      assert.equal((await c.cmd('MAIL FROM:<scanner@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<boss@example.net>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      const body = message('scanner@example.com', 'boss@example.net');
      c.write(body.replace(/\.\r\n$/, '') + '.\r\nQUIT\r\n');
      c.socket.end();
      const queued = await c.read();
      assert.match(queued.lines.join(), /^250 2\.0\.0 Ok: queued as \S+$/);
      assert.equal((await c.read()).code, 221);
      await c.waitClosed();
      assert.equal(h.queued.length, 1);
      assert.equal(queued.text, `2.0.0 Ok: queued as ${h.queued[0].id}`);
    }
  } finally {
    await h.stop();
  }
});

test('a client that half-closes without QUIT gets its replies and then the server closes its side', async () => {
  const h = await start();
  try {
    const c = await RawSmtp.connect(h.port());
    c.write('EHLO eof.test\r\nNOOP\r\n');
    c.socket.end();
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.read()).code, 250);
    await c.waitClosed(); // well before the 5-minute idle timeout
  } finally {
    await h.stop();
  }
});

test('start-up guard: the installed smtp-server has every internal the hooks use; a missing or changed one refuses to start, named', async () => {
  assert.deepEqual(smtpServerHookProblems(), []);
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
    dependencies: Record<string, string>;
  };
  assert.equal(
    pkg.dependencies['smtp-server'],
    SMTP_SERVER_VERSION,
    'package.json pins the version the hooks were written for',
  );

  // A prototype without handler_AUTH (as if a release renamed it).
  const withoutAuth = Object.create(SMTPConnection.prototype) as Record<string, unknown>;
  withoutAuth.handler_AUTH = undefined;
  assert.deepEqual(smtpServerHookProblems({ server: SMTPServer.prototype, connection: withoutAuth }), [
    'SMTPConnection.handler_AUTH() is missing',
  ]);
  // A send() that no longer guards its write with readyState === 'open' (the half-close hook relies on it).
  const otherSend = Object.create(SMTPConnection.prototype) as Record<string, unknown>;
  otherSend.send = function send(this: { _socket: { writable: boolean } }) {
    return this._socket.writable;
  };
  assert.match(
    smtpServerHookProblems({ server: SMTPServer.prototype, connection: otherSend }).join(),
    /SMTPConnection\.send\(\) no longer contains `readyState === 'open'`/,
  );
  // A connection object without the fields the hooks read.
  const probe = () => ({ _socket: null, session: {} });
  const fields = smtpServerHookProblems({ server: SMTPServer.prototype, connection: SMTPConnection.prototype, probe });
  assert.ok(
    fields.includes('SMTPConnection has no _socket') && fields.includes('SMTPConnection has no _parser stream'),
    fields.join(),
  );
  assert.throws(
    () => assertSmtpServerHooks({ server: {}, connection: SMTPConnection.prototype }, '9.9.9'),
    (e: Error) =>
      /^smtp-server 9\.9\.9 does not have the internals the listener hooks into \(written for 3\.21\.6\): SMTPServer\.connect\(\) is missing; /.test(
        e.message,
      ) && /Install smtp-server 3\.21\.6 exactly/.test(e.message),
  );

  // The listener itself refuses to start, and binds nothing, when the library lacks a hook target.
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  const saved = proto.connectionReady;
  delete proto.connectionReady;
  try {
    await assert.rejects(start(), /SMTPConnection\.connectionReady\(\) is missing/);
  } finally {
    proto.connectionReady = saved;
  }
});

test('From display names are judged RFC 2047-decoded: B and Q encoded (also split) addresses refused, a harmless encoded name accepted', async () => {
  const send = async (h: Harness, from: string) => {
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    await c.authPlain('printer', PASSWORD);
    const r = await c.sendRaw('scanner@example.com', ['boss@example.net'], message(from, 'boss@example.net'));
    await c.quit();
    return r;
  };
  const h = await start();
  try {
    const spoofs = [
      `=?UTF-8?B?${b64('ceo@bank.example')}?= <scanner@example.com>`,
      '=?utf-8?q?ceo=40bank=2Eexample?= <scanner@example.com>',
      '=?UTF-8?Q?ceo?= =?UTF-8?Q?=40bank.example?= <scanner@example.com>',
      `"=?UTF-8?B?${b64('Bank <ceo@bank.example>')}?=" <scanner@example.com>`,
    ];
    for (const from of spoofs) {
      const r = await send(h, from);
      assert.equal(
        r.lines.join(),
        '553 5.7.1 Sender address rejected: From header address not owned by user printer',
        from,
      );
    }
    assert.equal(h.queued.length, 0);
    const ok = await send(h, `=?UTF-8?B?${b64('Jörg Müller, 3rd floor')}?= <scanner@example.com>`);
    assert.equal(ok.code, 250, ok.lines.join());
    const okQ = await send(h, '=?iso-8859-1?q?Scanner_J=F6rg?= <scanner@example.com>');
    assert.equal(okQ.code, 250, okQ.lines.join());
  } finally {
    await h.stop();
  }
  // fromHeader: rewrite drops a display name that decodes to an address.
  const r = await start({ fromHeader: 'rewrite' });
  try {
    const got = await send(r, `=?UTF-8?B?${b64('ceo@bank.example')}?= <ceo@bank.example>`);
    assert.equal(got.code, 250);
    const raw = (await spooledMessage(spool, r.queued[0].id)).toString('utf8');
    assert.match(raw, /^From: scanner@example\.com\r\n/m);
  } finally {
    await r.stop();
  }
});

test('Received: header prepended (RFC 5321 4.4, RFC 3848 types), client address from PROXY, no AUTH user name; the rest byte-identical', async () => {
  // allowInsecureAuth: a proxied client (even one claiming 127.0.0.1) gets no cleartext AUTH otherwise.
  const h = await start({
    proxyProtocol: true,
    trustedNetworks: ['198.51.100.0/24', '2001:db8::/32'],
    trustedAccount: 'office',
    allowInsecureAuth: true,
  });
  const tlsL = await start({ name: 'secure', tls: 'implicit' });
  try {
    const body = message('scanner@example.com', 'boss@example.net', 'exact bytes\r\n..dot-stuffed line\r\n\ttab');
    const sent = body.replace(/\r\n\.\./, '\r\n.').replace(/\.\r\n$/, '');
    const cases: Array<{
      port: number;
      helo: string;
      greet: 'HELO' | 'EHLO';
      auth: boolean;
      proxy?: string;
      tls?: boolean;
      want: string;
      from: string;
      client: string;
    }> = [
      {
        port: h.port(),
        helo: 'printer.lan',
        greet: 'HELO',
        auth: false,
        proxy: 'PROXY TCP4 198.51.100.7 127.0.0.1 4000 25\r\n',
        want: 'SMTP',
        from: 'printer.lan',
        client: '[198.51.100.7]',
      },
      {
        port: h.port(),
        helo: 'nas.lan',
        greet: 'EHLO',
        auth: false,
        proxy: 'PROXY TCP6 2001:db8::1 ::1 4000 25\r\n',
        want: 'ESMTP',
        from: 'nas.lan',
        client: '[IPv6:2001:db8::1]',
      },
      {
        port: h.port(),
        helo: '[127.0.0.1]',
        greet: 'EHLO',
        auth: true,
        proxy: 'PROXY TCP4 127.0.0.1 127.0.0.1 4000 25\r\n',
        want: 'ESMTPA',
        from: '[127.0.0.1]',
        client: '[127.0.0.1]',
      },
      {
        port: tlsL.port(),
        helo: 'bad_name!',
        greet: 'EHLO',
        auth: true,
        tls: true,
        want: 'ESMTPSA',
        from: 'unknown',
        client: '[127.0.0.1]',
      },
    ];
    for (const k of cases) {
      const c = await RawSmtp.connect(k.port, {
        proxy: k.proxy,
        implicitTls: k.tls ? { rejectUnauthorized: false } : undefined,
      });
      assert.equal((await c.cmd(`${k.greet} ${k.helo}`)).code, 250);
      if (k.auth) assert.equal((await c.authPlain('printer', PASSWORD)).code, 235);
      const r = await c.sendRaw('scanner@example.com', ['boss@example.net'], body);
      assert.equal(r.code, 250, r.lines.join());
      await c.quit();
      const queued = [...h.queued, ...tlsL.queued].at(-1)!;
      const raw = (await spooledMessage(spool, queued.id)).toString('utf8');
      const { fields, rest } = splitReceived(raw, { id: queued.id, protocol: k.want, helo: k.from, client: k.client });
      assert.equal(fields.listener, k.tls ? 'secure' : 'local');
      assert.equal(rest, sent, 'every byte after the header is what the client sent');
      assert.ok(!raw.includes('printer ') && !/Authenticated sender/i.test(raw), 'no AUTH user name in the header');
      assert.equal(queued.size, Buffer.byteLength(raw));
    }
  } finally {
    await h.stop();
    await tlsL.stop();
  }
});

test('null sender (an MTA delivery notice): From MAILER-DAEMON@… or postmaster@… accepted; other addresses still judged; not without the null sender', async () => {
  const h = await start();
  try {
    const send = async (mailFrom: string, from: string) => {
      const c = await RawSmtp.connect(h.port());
      await c.ehlo();
      await c.authPlain('printer', PASSWORD);
      const r = await c.sendRaw(mailFrom, ['scanner@example.com'], message(from, 'scanner@example.com'));
      await c.quit();
      return r;
    };
    assert.equal((await send('', 'Mail Delivery System <MAILER-DAEMON@postfix.lan>')).code, 250);
    assert.equal((await send('', 'postmaster@exim.lan')).code, 250);
    assert.equal((await send('', 'MAILER-DAEMON@postfix.lan, ceo@bank.example')).code, 553);
    assert.equal((await send('', '"ceo@bank.example" <MAILER-DAEMON@postfix.lan>')).code, 553);
    assert.equal((await send('scanner@example.com', 'MAILER-DAEMON@postfix.lan')).code, 553);
    assert.equal(h.queued.length, 2);
  } finally {
    await h.stop();
  }
});

test('greeting: at once by default (a client talking first is served, not 421); greetingDelay holds it and refuses early talkers', async () => {
  const h = await start();
  try {
    // Written before the greeting can have arrived: with smtp-server's fixed 100 ms hold this got "421 You talk too soon".
    const c = await RawSmtp.connect(h.port(), { greeting: false });
    c.write('EHLO early.test\r\n');
    assert.equal((await c.read()).code, 220);
    assert.equal((await c.read()).code, 250);
    await c.quit();
  } finally {
    await h.stop();
  }
  const d = await start({ greetingDelay: '300ms' });
  try {
    const t0 = process.hrtime.bigint();
    const c = await RawSmtp.connect(d.port());
    const waited = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.ok(waited >= 290, `greeting after ${waited.toFixed(0)} ms, greetingDelay is 300 ms`);
    assert.equal((await c.ehlo()).code, 250);
    await c.quit();
    const early = await RawSmtp.connect(d.port(), { greeting: false });
    early.write('EHLO early.test\r\n');
    assert.match((await early.read()).lines.join(), /^421 .*You talk too soon/);
    await early.waitClosed();
  } finally {
    await d.stop();
  }
});

test('PROXY v2: client address from the binary header (trusted networks, lockouts, logs, Received); v1 still works; a bad header is dropped; proxyFrom still decides', async () => {
  const h = await start({
    proxyProtocol: true,
    trustedNetworks: ['198.51.100.0/24'],
    trustedAccount: 'office',
    allowInsecureAuth: true,
    authFailLimit: 2,
  });
  try {
    // v2 header and EHLO in one write: the bytes after the header are SMTP.
    const lan = await RawSmtp.connect(h.port(), { greeting: false });
    lan.write(
      Buffer.concat([
        proxyV2('198.51.100.7', 40000, { tlv: Buffer.from([0x04, 0x00, 0x01, 0x00]) }),
        Buffer.from('EHLO lan.test\r\n'),
      ]),
    );
    assert.equal((await lan.read()).code, 220);
    assert.equal((await lan.read()).code, 250);
    assert.equal(
      (await lan.sendRaw('scanner@example.com', ['x@example.net'], message('scanner@example.com', 'x@example.net')))
        .code,
      250,
      'trusted by the proxied address',
    );
    await lan.quit();
    const env = h.queued.at(-1)!;
    assert.equal(env.clientIp, '198.51.100.7');
    assert.equal(splitReceived((await spooledMessage(spool, env.id)).toString('utf8')).fields.client, '[198.51.100.7]');
    assert.ok(h.logs().some((l) => l.message === 'received' && l.ip === '198.51.100.7'));

    const v6 = await RawSmtp.connect(h.port(), { greeting: false });
    v6.write(proxyV2('2001:db8::77', 40001));
    assert.equal((await v6.read()).code, 220);
    await v6.ehlo();
    assert.equal((await v6.cmd('MAIL FROM:<scanner@example.com>')).code, 530, 'not in the trusted networks');
    assert.equal((await v6.authPlain('printer', 'wrong 1')).code, 535);
    assert.equal((await v6.authPlain('printer', 'wrong 2')).code, 535);
    assert.equal((await v6.authPlain('printer', PASSWORD)).code, 454, 'locked out by the proxied address');
    await v6.quit();
    assert.ok(h.logs().some((l) => l.message === 'auth lockout ip=2001:db8::77'));

    // LOCAL (a proxy's own health check): the connection's own address.
    const local = await RawSmtp.connect(h.port(), { greeting: false });
    local.write(proxyV2('', 0, { local: true }));
    assert.equal((await local.read()).code, 220);
    await local.ehlo();
    assert.equal((await local.authPlain('printer', PASSWORD)).code, 235, '127.0.0.1 is not locked out');
    await local.quit();

    const v1 = await RawSmtp.connect(h.port(), { proxy: 'PROXY TCP4 198.51.100.8 127.0.0.1 40002 25\r\n' });
    await v1.ehlo();
    assert.equal(
      (await v1.sendRaw('scanner@example.com', ['x@example.net'], message('scanner@example.com', 'x@example.net')))
        .code,
      250,
    );
    await v1.quit();
    assert.equal(h.queued.at(-1)!.clientIp, '198.51.100.8');

    // A v2 signature with a wrong version byte: no session at all.
    const bad = await RawSmtp.connect(h.port(), { greeting: false });
    const broken = proxyV2('198.51.100.9', 1);
    broken[12] = 0x31;
    bad.write(broken);
    await bad.waitClosed();
  } finally {
    await h.stop();
  }
  // Only the peers in proxyFrom send a header: anyone else is greeted at once as a direct client.
  const p = await start({ proxyProtocol: true, proxyFrom: ['192.0.2.1'] });
  try {
    const c = await RawSmtp.connect(p.port());
    await c.ehlo();
    await c.authPlain('printer', PASSWORD);
    assert.equal(
      (await c.sendRaw('scanner@example.com', ['x@example.net'], message('scanner@example.com', 'x@example.net'))).code,
      250,
    );
    await c.quit();
    assert.equal(p.queued.at(-1)!.clientIp, '127.0.0.1');
  } finally {
    await p.stop();
  }
});

/** Feeds `parts` to a DATA parser using `feed`: the message bytes it emits and the commands after. */
async function parseData(parts: Buffer[], feed: unknown): Promise<{ data: string; commands: string[] }> {
  const parser = new SMTPStream();
  (parser as unknown as { _feedDataStream: unknown })._feedDataStream = feed;
  const commands: string[] = [];
  const data: Buffer[] = [];
  parser.oncommand = (cmd: Buffer, cb?: () => void) => {
    const line = cmd.toString('latin1');
    commands.push(line);
    if (line === 'DATA') {
      const ds = parser.startDataMode();
      ds.on('data', (c: Buffer) => data.push(c));
      ds.on('end', () => parser.continue());
    }
    cb?.();
  };
  for (const p of parts) parser.write(p);
  await new Promise<void>((resolve) => parser.end(() => resolve()));
  return { data: Buffer.concat(data).toString('latin1'), commands };
}

test('end of DATA: the native "\\n." search parses exactly like smtp-server, for any chunking', async () => {
  assertSmtpServerHooks();
  // Installed: every connection's parser uses it.
  assert.equal((SMTPStream.prototype as unknown as { _feedDataStream: unknown })._feedDataStream, feedDataStream);
  let seed = 11;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const pieces = ['a', 'bc', '.', '..', '\r', '\n', '\r\n', '\r\n.', '\r\n..', '\r\n.\r\n', '\n.\n', '\r.\r'];
  const fixed = [
    '.\r\nNOOP', // an empty message
    '..\r\n.\r\n',
    '.\r\n', // a leading dot line arriving alone
    'x\r\n..\r\n...\r\n.\r\nNOOP',
    'x\n.\r\nNOOP\r\n.\r\n', // a bare-LF terminator is not one
  ];
  for (let round = 0; round < 600; round++) {
    let body = round < fixed.length ? fixed[round] : '';
    const len = rnd(90);
    while (body.length < len) body += pieces[rnd(pieces.length)];
    const all = Buffer.from(`DATA\r\n${body}\r\n.\r\nNOOP\r\n`, 'latin1');
    const parts: Buffer[] = [];
    for (let off = 0; off < all.length; ) {
      const n = 1 + rnd(round % 2 ? 7 : 40);
      parts.push(all.subarray(off, off + n));
      off += n;
    }
    const want = await parseData(parts, originalFeedDataStream);
    const got = await parseData(parts, feedDataStream);
    assert.deepEqual(got, want, JSON.stringify(all.toString('latin1')));
  }
  // A large message in socket-sized chunks: every byte through, dots unescaped.
  const body = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVph\r\n..dot\r\n'.repeat(20_000);
  const all = Buffer.from(`DATA\r\n${body}.\r\nQUIT\r\n`, 'latin1');
  const parts = Array.from({ length: Math.ceil(all.length / 65536) }, (_, i) =>
    all.subarray(i * 65536, (i + 1) * 65536),
  );
  const got = await parseData(parts, feedDataStream);
  assert.equal(got.data, body.replaceAll('\r\n..dot', '\r\n.dot'));
  assert.deepEqual(got.commands, ['DATA', 'QUIT']);
});

test('start-up guard: a changed _feedDataStream refuses to start, named', () => {
  const changed = Object.create(SMTPStream.prototype) as Record<string, unknown>;
  changed._feedDataStream = function _feedDataStream(this: { _dataStream: { write(b: Buffer): void } }, chunk: Buffer) {
    this._dataStream.write(chunk);
  };
  assert.match(
    smtpServerHookProblems({
      server: SMTPServer.prototype,
      connection: SMTPConnection.prototype,
      stream: changed,
    }).join(),
    /SMTPStream\._feedDataStream\(\) no longer contains `this\._lastBytes` \(feedDataStream is a copy of it\)/,
  );
});
