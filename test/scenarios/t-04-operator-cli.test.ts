// The command line as an operator uses it: real processes, exit codes and output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';
import { stringify } from 'yaml';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../helpers/bridge.js';
import { verifyPassword, hashPassword } from '../../src/listener/passwords.js';

function cli(args: string[], input?: string, env: NodeJS.ProcessEnv = {}, prefix: string[] = []) {
  const argv = [...prefix, process.execPath, ...CLI, ...args];
  const r = spawnSync(argv[0], argv.slice(1), {
    input,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
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
    assert.match(
      r.stderr,
      /accounts\[0\]\.oauth\.clientSecret: environment variable XOAUTH2_TEST_UNSET_VAR is not set/,
    );
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

test("serve with an invalid config exits 2 (the unit's RestartPreventExitStatus) and names the key", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-cli-'));
  try {
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      [
        'stateDir: ./state',
        'listeners:',
        '  - { name: local, host: 127.0.0.1, port: 0, tsl: none }',
        'accounts: []',
        'users: []',
      ].join('\n'),
    );
    const r = cli(['serve', '-c', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /listeners\[0\]\.tsl: unknown key/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a reader that closes the output early (`queue list | head`) ends the command quietly, not with an EPIPE trace', async () => {
  const c = spawn(process.execPath, [...CLI, 'hash-password'], { stdio: ['pipe', 'pipe', 'pipe'] });
  c.stdout.destroy(); // the reader is gone before the command writes
  let stderr = '';
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  c.stdin.end('pw-for-the-epipe-test\n');
  const [code] = (await once(c, 'exit')) as [number | null];
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|Unhandled/);
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

test('serve names listeners[N].port and the fix when the port is taken, or below 1024 without CAP_NET_BIND_SERVICE', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-cli-'));
  const holder = net.createServer().listen(0, '127.0.0.1');
  try {
    await once(holder, 'listening');
    const taken = (holder.address() as net.AddressInfo).port;
    const hash = await hashPassword('pw');
    const config = (port: number) => ({
      stateDir: join(dir, 'state'),
      http: { port: 0 },
      listeners: [
        { name: 'local', host: '127.0.0.1', port: 0 },
        { name: 'lan', host: '127.0.0.1', port },
      ],
      accounts: [
        {
          name: 'office',
          email: 'office@corp.test',
          oauth: { type: 'user', clientId: 'cid.apps.googleusercontent.com', clientSecret: 'x' },
        },
      ],
      users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
    });
    const file = join(dir, 'c.yaml');
    await writeFile(file, stringify(config(taken)));
    const r = cli(['serve', '-c', file]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `listeners\\[1\\]\\.port: listener \\\\"lan\\\\" cannot listen on 127\\.0\\.0\\.1:${taken}: .*EADDRINUSE.*stop it, or set listeners\\[1\\]\\.port to a free port`,
      ),
    );

    // Port 587 without the capability (root with it dropped from the bounding set, as the service user is).
    if (process.getuid?.() !== 0) return t.skip('needs root to drop CAP_NET_BIND_SERVICE with setpriv');
    await writeFile(file, stringify(config(587)));
    const p = cli(['serve', '-c', file], undefined, {}, [
      'setpriv',
      '--bounding-set',
      '-net_bind_service',
      '--inh-caps',
      '-net_bind_service',
      '--',
    ]);
    assert.equal(p.code, 1, p.stderr);
    assert.match(
      p.stderr,
      /listeners\[1\]\.port: .*127\.0\.0\.1:587: .*EACCES.*need CAP_NET_BIND_SERVICE: start the daemon through its systemd unit .*AmbientCapabilities=.*or set listeners\[1\]\.port to a port above 1023/,
    );
  } finally {
    holder.close();
    await rm(dir, { recursive: true, force: true });
  }
});
