// Interop with real SMTP clients a sysadmin would point at the bridge: swaks, curl,
// python3 smtplib and msmtp. .ci/run installs them; locally a missing client skips its
// test unless XOAUTH2_BRIDGE_REQUIRE_INTEROP=1 (set in CI), where it fails instead.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { startBridge, secretsOf, assertNoSecrets, type RunningBridge } from '../helpers/bridge.js';

const execFileP = promisify(execFile);
// A failing client's error would echo its argv (with the test password): report only what it printed.
async function run(
  cmd: string,
  args: string[],
  opts: Parameters<typeof execFileP>[2] = {},
): Promise<{ stdout: string; stderr: string }> {
  try {
    const r = await execFileP(cmd, args, { ...opts, encoding: 'utf8' });
    return { stdout: String(r.stdout), stderr: String(r.stderr) };
  } catch (e) {
    const err = e as { code?: unknown; stdout?: string; stderr?: string };
    throw new Error(`${cmd} failed (exit ${String(err.code)}): ${err.stderr ?? ''}${err.stdout ?? ''}`.trim());
  }
}
const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';

async function has(cmd: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

let world: FakeWorld;
let b: RunningBridge;
before(async () => {
  world = await startFakeWorld();
  b = await startBridge(world);
});
after(async () => {
  await b?.stop();
  await world?.close();
});

function body(client: string): string {
  return [
    'From: scanner@example.com',
    `To: ${client}@example.org`,
    `Subject: interop ${client}`,
    `Message-ID: <${client}.${Date.now()}@interop.test>`,
    '',
    `sent by ${client}`,
    '..a line that starts with a dot',
    '',
  ].join('\r\n');
}

async function expectDelivered(client: string): Promise<void> {
  const want = `${client}@example.org`;
  const deadline = Date.now() + 10_000;
  let got;
  while (!(got = world.gmail.messages.find((m) => m.rcptTo.includes(want))) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 25));
  assert.ok(got, `${client}: message reached fake Gmail`);
  assert.equal(got.mailFrom, 'scanner@example.com');
  assert.equal(got.authUser, 'scanner@example.com');
  const text = got.raw.toString();
  assert.match(text, new RegExp(`Subject: interop ${client}\r\n`));
  assert.match(text, new RegExp(`\r\n\r\nsent by ${client}\r\n`));
  assertNoSecrets(b.logs.join('\n'), secretsOf(world));
}

async function clientTest(cmd: string, t: { skip(msg: string): void }): Promise<boolean> {
  if (await has(cmd)) return true;
  if (REQUIRE) assert.fail(`${cmd} is not installed (CI must install it)`);
  t.skip(`${cmd} not installed`);
  return false;
}

test('swaks: AUTH PLAIN, message from a file', async (t) => {
  if (!(await clientTest('swaks', t))) return;
  const file = join(world.dir, 'swaks.eml');
  await writeFile(file, body('swaks'));
  const { stdout } = await run('swaks', [
    '--server',
    '127.0.0.1',
    '--port',
    String(b.port),
    '--auth',
    'PLAIN',
    '--auth-user',
    world.user.username,
    '--auth-password',
    world.user.password,
    '--from',
    'scanner@example.com',
    '--to',
    'swaks@example.org',
    '--data',
    `@${file}`,
    '--hide-all',
  ]);
  void stdout;
  await expectDelivered('swaks');
});

test('curl smtp://: AUTH with --user, --upload-file', async (t) => {
  if (!(await clientTest('curl', t))) return;
  const file = join(world.dir, 'curl.eml');
  await writeFile(file, body('curl'));
  await run('curl', [
    '--silent',
    '--show-error',
    `smtp://127.0.0.1:${b.port}`,
    '--mail-from',
    'scanner@example.com',
    '--mail-rcpt',
    'curl@example.org',
    '--upload-file',
    file,
    '--user',
    `${world.user.username}:${world.user.password}`,
  ]);
  await expectDelivered('curl');
});

test('python3 smtplib: login + sendmail', async (t) => {
  if (!(await clientTest('python3', t))) return;
  const script = [
    'import os, smtplib',
    `s = smtplib.SMTP('127.0.0.1', ${b.port})`,
    "s.login(os.environ['U'], os.environ['P'])",
    "s.sendmail('scanner@example.com', ['python3@example.org'], os.environ['BODY'].encode())",
    's.quit()',
  ].join('\n');
  await run('python3', ['-c', script], {
    env: { ...process.env, U: world.user.username, P: world.user.password, BODY: body('python3') },
  });
  await expectDelivered('python3');
});

test('msmtp: the sendmail-compatible client cron jobs use', async (t) => {
  if (!(await clientTest('msmtp', t))) return;
  const file = join(world.dir, 'msmtprc');
  await writeFile(
    file,
    [
      'account bridge',
      'host 127.0.0.1',
      `port ${b.port}`,
      'tls off',
      'auth plain',
      `user ${world.user.username}`,
      `password ${world.user.password}`,
      'from scanner@example.com',
      'account default : bridge',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const child = execFile('msmtp', ['-C', file, 'msmtp@example.org']);
  child.stdin!.end(body('msmtp'));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  assert.equal(code, 0, 'msmtp exit code');
  await expectDelivered('msmtp');
});

test('TLS listeners: swaks over STARTTLS and curl over implicit TLS, both verifying the certificate', async (t) => {
  if (!(await clientTest('swaks', t)) || !(await clientTest('curl', t))) return;
  const pki = join(world.dir, 'pki');
  const tlsBridge = await startBridge(world, {
    stateDir: join(world.dir, 'state-tls'),
    listeners: [
      {
        name: 'submission',
        host: '127.0.0.1',
        port: 0,
        tls: 'starttls',
        certFile: join(pki, 'cert.pem'),
        keyFile: join(pki, 'key.pem'),
      },
      {
        name: 'smtps',
        host: '127.0.0.1',
        port: 0,
        tls: 'implicit',
        certFile: join(pki, 'cert.pem'),
        keyFile: join(pki, 'key.pem'),
      },
    ],
  });
  try {
    const port = (name: string) => tlsBridge.bridge.bound.find((l) => l.name === name)!.port;
    const file = join(world.dir, 'tls.eml');
    await writeFile(file, body('swaks-tls'));
    const { stdout } = await run('swaks', [
      '--server',
      'localhost',
      '--port',
      String(port('submission')),
      '--tls',
      '--tls-verify',
      '--tls-ca-path',
      world.caFile,
      '--auth',
      'PLAIN',
      '--auth-user',
      world.user.username,
      '--auth-password',
      world.user.password,
      '--from',
      'scanner@example.com',
      '--to',
      'swaks-tls@example.org',
      '--data',
      `@${file}`,
    ]);
    assert.match(stdout, /^ -> STARTTLS$/m, 'swaks used STARTTLS');
    assert.match(stdout, /^<~ +250 2\.0\.0 Ok: queued as /m, 'queued over the encrypted session');
    await expectDelivered('swaks-tls');

    await writeFile(file, body('curl-tls'));
    await run('curl', [
      '--silent',
      '--show-error',
      `smtps://localhost:${port('smtps')}`,
      '--cacert',
      world.caFile,
      '--mail-from',
      'scanner@example.com',
      '--mail-rcpt',
      'curl-tls@example.org',
      '--upload-file',
      file,
      '--user',
      `${world.user.username}:${world.user.password}`,
    ]);
    await expectDelivered('curl-tls');
    // And the same curl without the CA refuses the server: the certificate really is checked.
    await assert.rejects(
      run('curl', [
        '--silent',
        '--show-error',
        `smtps://localhost:${port('smtps')}`,
        '--mail-from',
        'scanner@example.com',
        '--mail-rcpt',
        'x@example.org',
        '--upload-file',
        file,
      ]),
      /certificate/i,
    );
  } finally {
    await tlsBridge.stop();
  }
});
