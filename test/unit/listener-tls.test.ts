// TLS listeners: STARTTLS and implicit TLS, generated self-signed certificates (reused on
// restart), configured certificates reloaded on SIGHUP, minimum TLS versions, and a legacy
// TLSv1 listener checked with `openssl s_client`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, stat } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import tls from 'node:tls';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { Listeners } from '../../src/listener/server.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';
import { Spool } from '../../src/spool/spool.js';
import { createLogger, nullLogger, type Logger } from '../../src/log/logger.js';
import { createTestPki, writePki } from '../../src/fakes/ca.js';
import type { Envelope } from '../../src/types.js';
import { RawSmtp, makeConfig, message } from '../helpers/listener.js';

const PASSWORD = 'tls test password';
let dir: string;
let spool: Spool;
let hash: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xb-listener-tls-'));
  spool = new Spool(dir, nullLogger);
  await spool.init();
  hash = await hashPassword(PASSWORD, FAKE_SCRYPT_COST);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function capture(): { log: Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk, _e, done) {
      out.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { log: createLogger({ level: 'debug', format: 'json', stream }), lines: () => out.map((l) => JSON.parse(l)) };
}

async function start(listeners: Record<string, unknown>[], log: Logger = nullLogger) {
  const config = makeConfig(dir, {
    listeners,
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
  });
  const queued: Envelope[] = [];
  const l = new Listeners({ config, log, spool, onQueued: (e) => queued.push(e) });
  const bound = await l.start();
  return { l, config, queued, port: (name: string) => bound.find((b) => b.name === name)!.port };
}

function peerFingerprint(
  port: number,
  opts: tls.ConnectionOptions = {},
): Promise<{ fingerprint: string; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      resolve({ fingerprint: s.getPeerCertificate().fingerprint256, protocol: s.getProtocol() });
      s.destroy();
    });
    s.on('error', reject);
  });
}

/** Runs openssl s_client; resolves with its combined output and exit code. */
function sClient(args: string[], stdin: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let talked = false;
    // Talks once the handshake is done (-brief prints CONNECTION ESTABLISHED), then leaves.
    const onData = (d: Buffer) => {
      out += d;
      if (!talked && out.includes('CONNECTION ESTABLISHED')) {
        talked = true;
        p.stdin.end(stdin);
      }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    const timer = setTimeout(() => p.kill(), 10_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test('STARTTLS listener: self-signed cert generated into stateDir/tls (reused on restart), AUTH needs TLS off loopback', async () => {
  const cap = capture();
  const lan = { name: 'lan', host: '127.0.0.1', port: 0, tls: 'starttls', proxyProtocol: true };
  const s1 = await start([lan], cap.log);
  const certPath = join(dir, 'tls', 'lan.crt');
  const keyPath = join(dir, 'tls', 'lan.key');
  let fp1: string;
  try {
    const cert = await readFile(certPath, 'utf8');
    assert.equal((await stat(keyPath)).mode & 0o777, 0o600);
    fp1 = new X509Certificate(cert).fingerprint256;
    assert.ok(
      cap.lines().some((l) => l.level === 'warn' && /self-signed/.test(String(l.message)) && l.listener === 'lan'),
    );

    // A remote client (address from the PROXY header) may not AUTH before STARTTLS ...
    const c = await RawSmtp.connect(s1.port('lan'), { proxy: 'PROXY TCP4 192.0.2.44 127.0.0.1 5000 587\r\n' });
    const ehlo = await c.ehlo();
    assert.ok(ehlo.lines.some((l) => /STARTTLS/.test(l)));
    assert.equal(
      (await c.authPlain('printer', PASSWORD)).lines.join(),
      '538 5.7.11 Encryption required for requested authentication mechanism',
    );
    // ... and may after it; the certificate verifies against itself for localhost.
    const sock = await c.starttls({ ca: cert, servername: 'localhost' });
    assert.equal(sock.authorized, true);
    assert.equal(sock.getPeerCertificate().fingerprint256, fp1);
    await c.ehlo();
    assert.equal((await c.authPlain('printer', PASSWORD)).code, 235);
    const r = await c.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net'),
    );
    assert.match(r.lines.join(), /^250 2\.0\.0 Ok: queued as /);
    await c.quit();
    assert.equal(s1.queued[0].clientIp, '192.0.2.44');
  } finally {
    await s1.l.stop();
  }
  const s2 = await start([{ ...lan, proxyProtocol: false }]);
  try {
    assert.equal(new X509Certificate(await readFile(certPath, 'utf8')).fingerprint256, fp1, 'reused, not regenerated');
    // Loopback clients may AUTH before STARTTLS (local scripts, the bridge's own host).
    const lo = await RawSmtp.connect(s2.port('lan'));
    await lo.ehlo();
    assert.equal((await lo.authPlain('printer', PASSWORD)).code, 235);
    await lo.quit();
    // nodemailer as a client: STARTTLS required, certificate verified.
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: s2.port('lan'),
      secure: false,
      requireTLS: true,
      tls: { ca: await readFile(certPath, 'utf8'), servername: 'localhost' },
      auth: { user: 'printer', pass: PASSWORD },
    });
    const info = await t.sendMail({
      envelope: { from: 'scanner@example.com', to: ['x@example.net'] },
      raw: 'From: scanner@example.com\r\n\r\nhi\r\n',
    });
    t.close();
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
  } finally {
    await s2.l.stop();
  }
});

test('implicit TLS with configured certFile/keyFile, reloaded on SIGHUP', async () => {
  const pki1 = await createTestPki();
  const files = await writePki(pki1, join(dir, 'pki'));
  const smtps = {
    name: 'smtps',
    host: '127.0.0.1',
    port: 0,
    tls: 'implicit',
    certFile: files.certFile,
    keyFile: files.keyFile,
  };
  const s = await start([smtps]);
  try {
    const c = await RawSmtp.connect(s.port('smtps'), { implicitTls: { ca: pki1.caCert, servername: 'localhost' } });
    await c.ehlo();
    assert.equal((await c.authLogin('printer', PASSWORD)).code, 235);
    const r = await c.sendRaw(
      'scanner@example.com',
      ['x@example.net'],
      message('scanner@example.com', 'x@example.net'),
    );
    assert.equal(r.code, 250);
    await c.quit();
    const before = await peerFingerprint(s.port('smtps'));
    assert.equal(before.fingerprint, new X509Certificate(pki1.cert).fingerprint256);
    assert.equal(before.protocol, 'TLSv1.3');

    const pki2 = await createTestPki();
    await writePki(pki2, join(dir, 'pki'));
    await s.l.reload(s.config);
    const after = await peerFingerprint(s.port('smtps'));
    assert.equal(after.fingerprint, new X509Certificate(pki2.cert).fingerprint256);
    const c2 = await RawSmtp.connect(s.port('smtps'), { implicitTls: { ca: pki2.caCert, servername: 'localhost' } });
    assert.equal((await c2.ehlo()).code, 250);
    await c2.quit();
  } finally {
    await s.l.stop();
  }
});

test('default minimum TLSv1.2 refuses older clients; an explicit TLSv1 listener serves openssl s_client -tls1', async () => {
  const modern = { name: 'modern', host: '127.0.0.1', port: 0, tls: 'implicit' };
  const legacy = { name: 'legacy', host: '127.0.0.1', port: 0, tls: 'starttls', minTlsVersion: 'TLSv1' };
  const s = await start([modern, legacy]);
  try {
    await assert.rejects(
      peerFingerprint(s.port('modern'), { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }),
    );
    assert.equal((await peerFingerprint(s.port('modern'), { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2');

    const refused = await sClient(
      ['-connect', `127.0.0.1:${s.port('modern')}`, '-tls1', '-cipher', 'DEFAULT:@SECLEVEL=0', '-brief'],
      '',
    );
    assert.doesNotMatch(refused.out, /CONNECTION ESTABLISHED/, refused.out);
    assert.match(refused.out, /alert|error/i, refused.out);

    // OpenSSL 3 clients also need SECLEVEL=0 to offer TLSv1 at all (old printers do not care).
    const old = await sClient(
      [
        '-connect',
        `127.0.0.1:${s.port('legacy')}`,
        '-starttls',
        'smtp',
        '-tls1',
        '-cipher',
        'DEFAULT:@SECLEVEL=0',
        '-brief',
        '-ign_eof',
      ],
      'EHLO old-printer\r\nQUIT\r\n',
    );
    assert.match(old.out, /Protocol version: TLSv1\r?\n/, old.out);
    assert.match(old.out, /^250[ -]/m, old.out);
    assert.match(old.out, /^221 /m, old.out);
  } finally {
    await s.l.stop();
  }
});
