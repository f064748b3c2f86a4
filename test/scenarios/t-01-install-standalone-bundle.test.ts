// The standalone bundle the .deb and the container image ship (packaging/build.mjs
// --standalone: every dependency bundled in, no node_modules beside it), run as a real
// process: its lazily loaded modules must work in the bundle's shape, not only from the
// sources or the npm package's dist/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, stat, readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { loadKeyPair } from '../../src/listener/certs.js';
import { nullLogger } from '../../src/log/logger.js';
import { parseConfig } from '../../src/config/load.js';
import { makeConfig } from '../helpers/listener.js';
import { ROOT } from '../helpers/bridge.js';

let world: FakeWorld;
let app: string;

before(async () => {
  world = await startFakeWorld();
  app = await mkdtemp(join(ROOT, '.tmp', 'standalone-'));
  execFileSync(process.execPath, [join(ROOT, 'packaging', 'build.mjs'), '--standalone', app], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
});
after(async () => {
  await world.close();
  await rm(app, { recursive: true, force: true });
});

test('standalone bundle: a STARTTLS listener without certFile/keyFile generates a certificate and relays', async () => {
  const cfg = bridgeConfig(world, {
    listeners: [{ name: 'lan', host: '127.0.0.1', port: 0, tls: 'starttls' }],
    log: { level: 'info', format: 'json' },
  });
  const configFile = await writeBridgeConfig(world, cfg);
  const main = join(app, 'main.mjs');
  execFileSync(process.execPath, [main, 'token', 'import', world.account.name, '-c', configFile], {
    input: world.account.refreshToken + '\n',
  });
  const child = spawn(process.execPath, [main, 'serve', '-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = once(child, 'exit');
  let err = '';
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        err += d;
        const m = /"listeners":\["lan=[^"]*:(\d+)"/.exec(err);
        if (m) resolve(Number(m[1]));
      });
      void exited.then(([code]) => reject(new Error(`serve exited ${code} before starting:\n${err}`)));
    });
    assert.match(err, /TLS listener uses a self-signed certificate/);
    assert.ok((await stat(join(world.dir, 'state', 'tls', 'lan.crt'))).isFile());
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: world.user.username, pass: world.user.password },
    });
    await t.sendMail({
      envelope: { from: world.account.email, to: ['rcpt@example.net'] },
      raw: `From: ${world.account.email}\r\nTo: rcpt@example.net\r\nSubject: standalone\r\n\r\nhi\r\n`,
    });
    t.close();
    await world.gmail.waitForMessages(1, 30_000);
    assert.match(world.gmail.messages[0].raw.toString(), /Subject: standalone/);
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
});

test('a self-signed certificate that cannot be made names the listener', async () => {
  const dir = await mkdtemp(join(ROOT, '.tmp', 'certs-'));
  try {
    // stateDir/tls is a file, so the certificate cannot be written there.
    await writeFile(join(dir, 'tls'), '');
    const config = makeConfig(dir, { listeners: [{ name: 'lan', host: '127.0.0.1', port: 0, tls: 'starttls' }] });
    await assert.rejects(loadKeyPair(config.listeners[0], dir, nullLogger), (e: Error) => {
      assert.match(e.message, /listener "lan"/);
      assert.match(e.message, /listeners\[0\]|certFile/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a certFile that cannot be read names the listener', async () => {
  const dir = await mkdtemp(join(ROOT, '.tmp', 'certs-'));
  try {
    const config = makeConfig(dir, {
      listeners: [
        {
          name: 'lan',
          host: '127.0.0.1',
          port: 0,
          tls: 'starttls',
          certFile: join(dir, 'none.crt'),
          keyFile: join(dir, 'none.key'),
        },
      ],
    });
    await assert.rejects(
      loadKeyPair(config.listeners[0], dir, nullLogger),
      /^Error: listener "lan": cannot read its certFile\/keyFile: ENOENT/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the conffile the .deb ships is short and valid once its placeholders are filled', async () => {
  const text = await readFile(join(ROOT, 'packaging', 'deb', 'config.yaml'), 'utf8');
  // Short, so a later change to it (which makes dpkg ask on upgrade) stays rare.
  assert.ok(text.length < 2500, `${text.length} bytes`);
  assert.match(text, /\/usr\/share\/doc\/xoauth2-bridge\/examples\/xoauth2-bridge\.example\.yaml/);
  assert.throws(() => parseConfig(text, '/etc/xoauth2-bridge/config.yaml'), /clientId[\s\S]*passwordHash/);
  const filled = text
    .replace('"123.apps.googleusercontent.com"', '"4711.apps.googleusercontent.com"')
    .replace(/"\$scrypt\$[^"]*REPLACE[^"]*"/, JSON.stringify(world.user.passwordHash));
  const cfg = parseConfig(filled, '/etc/xoauth2-bridge/config.yaml');
  assert.deepEqual(
    cfg.listeners.map((l) => [l.name, l.tls, l.certFile ?? null]),
    [
      ['local', 'none', null],
      ['lan', 'starttls', null],
    ],
  );
  assert.equal(cfg.stateDir, '/var/lib/xoauth2-bridge');
});
