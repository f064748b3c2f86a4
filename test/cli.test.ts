// The command line as an operator uses it: real processes, exit codes and output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './helpers/bridge.js';
import { verifyPassword } from '../src/listener/passwords.js';

function cli(args: string[], input?: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { input, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('check-config prints every problem with its key path and exits 2', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-cli-'));
  try {
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      [
        'stateDir: ./state',
        'listeners:',
        '  - { name: local, host: 127.0.0.1, port: 2525, tsl: none }',
        'accounts:',
        '  - name: office',
        '    email: not-an-address',
        '    oauth: { type: user, clientId: x, clientSecret: "${XOAUTH2_TEST_UNSET_VAR}" }',
        'users:',
        '  - { username: printer, passwordHash: hunter2, account: office }',
        'queue: { retry: [1m, soon] }',
      ].join('\n'),
    );
    const r = cli(['check-config', '-c', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /listeners\[0\]\.tsl: unknown key/);
    assert.match(r.stderr, /accounts\[0\]\.email: expected an email address/);
    assert.match(r.stderr, /accounts\[0\]\.oauth\.clientSecret: environment variable XOAUTH2_TEST_UNSET_VAR is not set/);
    assert.match(r.stderr, /users\[0\]\.passwordHash: .*plaintext passwords are refused/);
    assert.match(r.stderr, /queue\.retry\[1\]: .*duration/);
    assert.doesNotMatch(r.stderr, /hunter2/, 'a refused plaintext password is not echoed back');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('check-config on a missing file names the file and exits 2', () => {
  const r = cli(['check-config', '-c', '/nonexistent/xoauth2-bridge.yaml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /\/nonexistent\/xoauth2-bridge\.yaml: .*cannot read config file: ENOENT/);
});

test('serve with an invalid config exits 2 (the unit\'s RestartPreventExitStatus) and names the key', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-cli-'));
  try {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, ['stateDir: ./state', 'listeners:', '  - { name: local, host: 127.0.0.1, port: 0, tsl: none }', 'accounts: []', 'users: []'].join('\n'));
    const r = cli(['serve', '-c', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /listeners\[0\]\.tsl: unknown key/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('hash-password reads stdin and prints a scrypt hash that verifies', async () => {
  const r = cli(['hash-password'], 'correct horse battery staple\n');
  assert.equal(r.code, 0, r.stderr);
  const hash = r.stdout.trim();
  assert.match(hash, /^\$scrypt\$/);
  assert.equal(await verifyPassword('correct horse battery staple', hash), true);
  assert.equal(await verifyPassword('correct horse battery stapl', hash), false);
  assert.doesNotMatch(r.stdout + r.stderr, /correct horse/);
});
