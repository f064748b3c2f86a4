// Interop with real SMTP clients a sysadmin would point at the bridge: swaks, curl,
// python3 smtplib and msmtp. .ci/run installs them; locally a missing client skips its
// test unless XOAUTH2_BRIDGE_REQUIRE_INTEROP=1 (set in CI), where it fails instead.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startFakeWorld, type FakeWorld } from '../src/fakes/world.js';
import { startBridge, secretsOf, assertNoSecrets, type RunningBridge } from './helpers/bridge.js';

const run = promisify(execFile);
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
  while (!(got = world.gmail.messages.find((m) => m.rcptTo.includes(want))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
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
    '--server', '127.0.0.1', '--port', String(b.port), '--auth', 'PLAIN',
    '--auth-user', world.user.username, '--auth-password', world.user.password,
    '--from', 'scanner@example.com', '--to', 'swaks@example.org', '--data', `@${file}`, '--hide-all',
  ]);
  void stdout;
  await expectDelivered('swaks');
});

test('curl smtp://: AUTH with --user, --upload-file', async (t) => {
  if (!(await clientTest('curl', t))) return;
  const file = join(world.dir, 'curl.eml');
  await writeFile(file, body('curl'));
  await run('curl', [
    '--silent', '--show-error', `smtp://127.0.0.1:${b.port}`, '--mail-from', 'scanner@example.com', '--mail-rcpt', 'curl@example.org',
    '--upload-file', file, '--user', `${world.user.username}:${world.user.password}`,
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
  await run('python3', ['-c', script], { env: { ...process.env, U: world.user.username, P: world.user.password, BODY: body('python3') } });
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
