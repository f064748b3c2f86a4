// check-config, doctor and the root guard as an operator meets them: real CLI processes,
// real files with real owners and modes (the service user here is `nobody`), exit codes and
// the exact lines printed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile, rm, mkdir, chmod, chown, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI, ROOT, importToken } from '../helpers/bridge.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { lookupUser } from '../../src/cli/users.js';

const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';
const IS_ROOT = process.getuid?.() === 0;

function cli(
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** A temp directory other users can traverse (mkdtemp makes it 0700). */
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'xoauth2-check-'));
  await chmod(d, 0o755);
  dirs.push(d);
  return d;
}

const HASH = await hashPassword('printer-password');

function baseConfig(
  dir: string,
  extra: { account?: Record<string, unknown>; oauth?: Record<string, unknown>; top?: Record<string, unknown> } = {},
) {
  return {
    stateDir: join(dir, 'state'),
    listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
    accounts: [
      {
        name: 'office',
        email: 'office@corp.test',
        oauth: { type: 'user', clientId: 'cid.apps.googleusercontent.com', clientSecret: 'x', ...extra.oauth },
        ...extra.account,
      },
    ],
    users: [{ username: 'printer', passwordHash: HASH, account: 'office' }],
    ...extra.top,
  };
}

async function writeConfig(dir: string, cfg: unknown, name = 'config.yaml'): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, stringify(cfg), { mode: 0o644 });
  await chmod(file, 0o644);
  return file;
}

function needRoot(t: { skip(msg: string): void }): boolean {
  if (IS_ROOT) return true;
  if (REQUIRE)
    assert.fail('this test needs root (to own files as another user); XOAUTH2_BRIDGE_REQUIRE_INTEROP=1 requires it');
  t.skip('not root');
  return false;
}

test('check-config refuses the unedited example config, naming each placeholder and what to put there', async () => {
  const r = await cli(['check-config', '-c', join(ROOT, 'config', 'xoauth2-bridge.example.yaml')]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /accounts\[0\]\.oauth\.clientId: the example config's placeholder: put your OAuth client ID here/,
  );
  assert.match(
    r.stderr,
    /users\[0\]\.passwordHash: the example config's placeholder: put the output of `xoauth2-bridge hash-password` here/,
  );
});

test('check-config prints every problem in one run: schema problems and the files the config names that are missing', async () => {
  const dir = await tempDir();
  const example = await readFile(join(ROOT, 'config', 'xoauth2-bridge.example.yaml'), 'utf8');
  // The example as shipped, with its /etc paths moved under a directory that has none of the files.
  const file = join(dir, 'config.yaml');
  await writeFile(file, example.replaceAll('/etc/xoauth2-bridge/', `${dir}/etc/`));
  const r = await cli(['check-config', '-c', file]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /accounts\[0\]\.oauth\.clientId: the example config's placeholder/);
  assert.match(r.stderr, /users\[0\]\.passwordHash: the example config's placeholder/);
  for (const [key, name] of [
    ['listeners[1].certFile', 'tls.crt'],
    ['listeners[1].keyFile', 'tls.key'],
    ['accounts[0].oauth.clientSecretFile', 'client-secret'],
  ])
    assert.ok(
      r.stderr.includes(`  ${key}: ${dir}/etc/${name} does not exist`),
      `${key} not reported in the same run:\n${r.stderr}`,
    );
  // A relative path in a config that fails validation is still resolved against the config's directory.
  const cfg = baseConfig(dir, {
    oauth: { clientSecret: undefined, clientSecretFile: 'nosuch-secret', clientId: '123.apps.googleusercontent.com' },
  });
  const rel = await cli(['check-config', '-c', await writeConfig(dir, cfg, 'rel.yaml')]);
  assert.equal(rel.code, 2);
  assert.ok(
    rel.stderr.includes(`  accounts[0].oauth.clientSecretFile: ${join(dir, 'nosuch-secret')} does not exist`),
    rel.stderr,
  );
  assert.match(rel.stderr, /accounts\[0\]\.oauth\.clientId: the example config's placeholder/);
});

test('password hashes are parsed: a cut or hand-edited $scrypt$ hash is refused, in users and http.adminPasswordHash', async () => {
  const dir = await tempDir();
  const cut = HASH.slice(0, HASH.lastIndexOf('$')); // the hash part lost in a copy-paste
  const cfg = baseConfig(dir, { top: { http: { adminPasswordHash: HASH.replace('ln=15', 'ln=99') } } });
  cfg.users[0].passwordHash = cut;
  const r = await cli(['check-config', '-c', await writeConfig(dir, cfg)]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /users\[0\]\.passwordHash: not a valid \$scrypt\$ hash .*paste the whole output of `xoauth2-bridge hash-password`/,
  );
  assert.match(r.stderr, /http\.adminPasswordHash: not a valid \$scrypt\$ hash/);
  assert.doesNotMatch(r.stderr, new RegExp(cut.slice(-20).replace(/[$+/]/g, '\\$&')), 'the refused hash is not echoed');
  const serve = await cli(['serve', '-c', join(dir, 'config.yaml')]);
  assert.equal(serve.code, 2, 'serve refuses it too (no login could ever match)');
});

test('a plaintext users[].password is an unknown key that points to hash-password', async () => {
  const dir = await tempDir();
  const cfg = baseConfig(dir);
  (cfg.users[0] as Record<string, unknown>).password = 'printer-password';
  const r = await cli(['check-config', '-c', await writeConfig(dir, cfg)]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /users\[0\]\.password: unknown key: users take passwordHash, not a plaintext password; put the output of `xoauth2-bridge hash-password` in passwordHash/,
  );
  assert.doesNotMatch(r.stderr, /printer-password/, 'the password is not echoed');
});

test('clientSecret and clientSecretFile together are refused with the key path', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'secret'), 's3cret\n');
  const r = await cli([
    'check-config',
    '-c',
    await writeConfig(dir, baseConfig(dir, { oauth: { clientSecretFile: join(dir, 'secret') } })),
  ]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /accounts\[0\]\.oauth\.clientSecretFile: set clientSecret or clientSecretFile, not both/);
});

test('every file the config names must exist: each missing one is printed with its key; all present: ok', async () => {
  const dir = await tempDir();
  const f = (n: string) => join(dir, n);
  const cfg = baseConfig(dir, {
    oauth: { clientSecret: undefined, clientSecretFile: 'client-secret', caFile: f('oauth-ca.pem') },
    account: { upstream: { caFile: f('up-ca.pem') } },
    top: {
      tokens: { encryptionKeyFile: f('token-key') },
      http: { certFile: f('http.crt'), keyFile: f('http.key') },
      alerts: { caFile: f('hook-ca.pem') },
    },
  });
  cfg.listeners[0] = {
    ...cfg.listeners[0],
    tls: 'starttls',
    certFile: 'tls.crt',
    keyFile: f('tls.key'),
  } as (typeof cfg.listeners)[0];
  const file = await writeConfig(dir, cfg);
  const r = await cli(['check-config', '-c', file]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  const keys = {
    'listeners[0].certFile': 'tls.crt', // relative: relative to the config file
    'listeners[0].keyFile': 'tls.key',
    'accounts[0].oauth.clientSecretFile': 'client-secret',
    'accounts[0].oauth.caFile': 'oauth-ca.pem',
    'accounts[0].upstream.caFile': 'up-ca.pem',
    'tokens.encryptionKeyFile': 'token-key',
    'http.certFile': 'http.crt',
    'http.keyFile': 'http.key',
    'alerts.caFile': 'hook-ca.pem',
  };
  for (const [key, name] of Object.entries(keys))
    assert.ok(r.stderr.includes(`  ${key}: ${f(name)} does not exist`), `${key} not reported:\n${r.stderr}`);
  for (const name of Object.values(keys)) await writeFile(f(name), 'x', { mode: 0o600 });
  const ok = await cli(['check-config', '-c', file]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /: ok \(1 listener\(s\), 1 account\(s\), 1 user\(s\)\)/);
});

test('check-config --as-user: a secret the service user cannot read is named with the fix; after it, ok', async (t) => {
  if (!needRoot(t)) return;
  const nobody = lookupUser('nobody')!;
  const dir = await tempDir();
  const secret = join(dir, 'client-secret');
  await writeFile(secret, 's3cret\n', { mode: 0o600 }); // root:root 0600, as an editor run by root leaves it
  const state = join(dir, 'state');
  await mkdir(state, { mode: 0o700 }); // root's: the daemon could not write its spool
  const file = await writeConfig(
    dir,
    baseConfig(dir, { oauth: { clientSecret: undefined, clientSecretFile: secret } }),
  );

  assert.equal((await cli(['check-config', '-c', file])).code, 0, 'root itself reads everything');
  const r = await cli(['check-config', '-c', file, '--as-user', 'nobody']);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  const group = (await readFile('/etc/group', 'utf8'))
    .split('\n')
    .find((l) => l.split(':')[2] === String(nobody.gid))!
    .split(':')[0];
  assert.ok(
    r.stderr.includes(`  accounts[0].oauth.clientSecretFile: user nobody cannot read ${secret} (mode 0600 root:root`) &&
      r.stderr.includes(`chgrp ${group} ${secret} && chmod 0640 ${secret}`),
    r.stderr,
  );
  assert.ok(
    r.stderr.includes(
      `  stateDir: user nobody cannot write in ${state} (mode 0700 root:root): chown -R nobody: ${state}`,
    ),
    r.stderr,
  );

  await chown(secret, 0, nobody.gid);
  await chmod(secret, 0o640);
  await chown(state, nobody.uid, nobody.gid);
  const ok = await cli(['check-config', '-c', file, '--as-user', 'nobody']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /files readable by nobody/);

  const unknown = await cli(['check-config', '-c', file, '--as-user', 'no-such-user-xb']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no user named "no-such-user-xb"/);
});

test('doctor checks as the owner of stateDir: no grant stored is a problem (with the command to fix it); after token import, ok', async (t) => {
  if (!needRoot(t)) return;
  const nobody = lookupUser('nobody')!;
  const world = await startFakeWorld();
  try {
    await chmod(world.dir, 0o755);
    const file = await writeBridgeConfig(world, bridgeConfig(world));
    await chmod(file, 0o644);
    await chmod(world.caFile, 0o644);
    const state = join(world.dir, 'state');
    await mkdir(state, { mode: 0o700 });

    const r = await cli(['doctor', '-c', file]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.ok(
      r.stderr.includes(
        `  accounts[0]: no grant stored for account office: run \`xoauth2-bridge authorize office -c ${file}\` (or \`xoauth2-bridge token import office -c ${file}\``,
      ),
      r.stderr,
    );
    assert.ok(r.stderr.includes(`${file}: grants (accounts that cannot get a token yet):\n  accounts[0]:`), r.stderr);
    assert.doesNotMatch(r.stderr, /invalid config/, 'a missing grant is not a config error');

    // Root checking a stateDir that belongs to the service user: the command that works as root
    // runs as that user (the bare one is refused by the root guard): runuser without the unit,
    // systemd-run with the unit's credential where the unit is installed.
    await chown(state, nobody.uid, nobody.gid);
    const unitDir = join(world.dir, 'units'); // the unit search path, not this machine's
    await mkdir(unitDir);
    const asRoot = await cli(['doctor', '-c', file], { env: { SYSTEMD_UNIT_PATH: unitDir } });
    assert.equal(asRoot.code, 2, asRoot.stdout + asRoot.stderr);
    assert.ok(
      asRoot.stderr.includes(`run \`runuser -u nobody -- xoauth2-bridge authorize office -c ${file}\``),
      asRoot.stderr,
    );
    await writeFile(
      join(unitDir, 'xoauth2-bridge.service'),
      await readFile(join(ROOT, 'systemd', 'xoauth2-bridge.service')),
    );
    const withUnit = await cli(['doctor', '-c', file], { env: { SYSTEMD_UNIT_PATH: unitDir } });
    const viaSystemd = `systemd-run --quiet --pipe --wait -p User=nobody -p LoadCredential=token-key:/etc/xoauth2-bridge/token-key xoauth2-bridge authorize office -c ${file}`;
    assert.ok(withUnit.stderr.includes(`run \`${viaSystemd}\``), withUnit.stderr);
    // The suggested command is one the root guard lets through: it names the same form itself.
    const guard = await cli(['authorize', 'office', '-c', file]);
    assert.equal(guard.code, 2);
    assert.ok(guard.stderr.includes(`  runuser -u nobody -- xoauth2-bridge authorize office -c ${file}`), guard.stderr);
    await chown(state, 0, 0);

    // Provisioned as root while the directory is still root's, then handed to the service user.
    const imp = await cli(['token', 'import', 'office', '-c', file], { input: world.account.refreshToken + '\n' });
    assert.equal(imp.code, 0, imp.stdout + imp.stderr);
    for (const p of [state, ...(await readdir(state)).map((n) => join(state, n))])
      await chown(p, nobody.uid, nobody.gid);
    const ok = await cli(['doctor', '-c', file]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(
      ok.stdout,
      /ok \(files readable by nobody, stateDir writable, every account has a grant, every upstream answers\)/,
    );
    assert.match(
      ok.stdout,
      new RegExp(
        `upstream of office: localhost:${world.gmail.port}: ok \\(127\\.0\\.0\\.1, (implicit TLS|STARTTLS) verified, \\d+ ms\\)`,
      ),
    );
  } finally {
    await world.close();
  }
});

test('doctor connects to each upstream: an unresolvable host and an untrusted certificate are named with their key; the Gmail API gets an HTTPS handshake', async () => {
  const world = await startFakeWorld();
  try {
    const cfg = bridgeConfig(world, { stateDir: join(world.dir, 'state') });
    const acct = (cfg.accounts as { upstream: Record<string, unknown> }[])[0];
    acct.upstream = { ...acct.upstream, host: 'smtp.invalid' };
    const file = await writeBridgeConfig(world, cfg);
    importToken(file, world);
    const r = await cli(['doctor', '-c', file]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.ok(r.stderr.includes(`${file}: upstream (connected from this host, TLS verified, no AUTH):\n`), r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `  accounts\\[0\\]\\.upstream: smtp\\.invalid:${world.gmail.port}: cannot resolve smtp\\.invalid \\((ENOTFOUND|EAI_AGAIN)\\): check accounts\\[0\\]\\.upstream\\.host`,
      ),
    );
    assert.doesNotMatch(r.stderr, /invalid config/);

    // Resolves, but the fake's TLS certificate is not trusted without caFile: refused, like the daemon would.
    acct.upstream = { ...acct.upstream, host: 'localhost', caFile: undefined };
    const untrusted = await cli(['doctor', '-c', await writeBridgeConfig(world, cfg)]);
    assert.equal(untrusted.code, 2, untrusted.stdout + untrusted.stderr);
    assert.match(
      untrusted.stderr,
      new RegExp(
        `  accounts\\[0\\]\\.upstream: localhost:${world.gmail.port}: 127\\.0\\.0\\.1: .*(certificate|self.signed|issuer)`,
        'i',
      ),
    );
    assert.ok(world.gmail.messages.length === 0);
  } finally {
    await world.close();
  }
  const api = await startFakeWorld({ transport: 'gmail-api' });
  try {
    const file = await writeBridgeConfig(api, bridgeConfig(api, { stateDir: join(api.dir, 'state') }));
    importToken(file, api);
    const r = await cli(['doctor', '-c', file]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(r.stdout.includes(`upstream of office: ${api.gmailApi!.url}: ok (127.0.0.1, HTTPS TLSv1.`), r.stdout);
  } finally {
    await api.close();
  }
});

test('root on a stateDir owned by the service user: token import, queue list, serve and send-test refuse (exit 2) with the exact command (through systemd-run for a store sealed with the unit credential), and leave nothing there', async (t) => {
  if (!needRoot(t)) return;
  const nobody = lookupUser('nobody')!;
  const dir = await tempDir();
  const state = join(dir, 'state');
  await mkdir(state, { mode: 0o700 });
  await chown(state, nobody.uid, nobody.gid);
  const file = await writeConfig(dir, baseConfig(dir));
  const cases: [string[], string][] = [
    [['token', 'import', 'office', '-c', file], `runuser -u nobody -- xoauth2-bridge token import office -c ${file}`],
    [['queue', 'list', '--json', '-c', file], `runuser -u nobody -- xoauth2-bridge queue list --json -c ${file}`],
    [['serve', '-c', file], `runuser -u nobody -- xoauth2-bridge serve -c ${file}`],
    [
      ['send-test', '--to', 'a b@corp.test', '-c', file],
      `runuser -u nobody -- xoauth2-bridge send-test --to 'a b@corp.test' -c ${file}`,
    ],
  ];
  for (const [args, command] of cases) {
    const r = await cli(args, { input: 'a-refresh-token\n' });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`stateDir ${state} belongs to user nobody`));
    assert.ok(
      r.stderr.split('\n').some((l) => l.trim() === command),
      `${args[0]}: no line "${command}" in:\n${r.stderr}`,
    );
  }
  assert.deepEqual(await readdir(state), [], "root left no file in the service user's stateDir");

  // The .deb's store is sealed with the unit's credential: the command to use goes through systemd.
  await writeFile(
    join(state, 'tokens.json'),
    JSON.stringify({
      format: 'xoauth2-bridge-tokens',
      version: 1,
      encryption: 'aes-256-gcm',
      iv: 'x',
      tag: 'x',
      data: 'x',
    }),
  );
  const sealed = await cli(['token', 'status', '-c', file]);
  assert.equal(sealed.code, 2, sealed.stdout + sealed.stderr);
  assert.ok(
    sealed.stderr.includes(
      `  systemd-run --quiet --pipe --wait -p User=nobody -p LoadCredential=token-key:/etc/xoauth2-bridge/token-key xoauth2-bridge token status -c ${file}\n`,
    ),
    sealed.stderr,
  );
});

test("oauth.clientFile: Google's downloaded client JSON supplies client id, secret and token URL at run time", async () => {
  const world = await startFakeWorld();
  try {
    const clientJson = join(world.dir, 'client_secret_123.json');
    await writeFile(
      clientJson,
      JSON.stringify({
        installed: {
          client_id: world.account.clientId,
          project_id: 'bridge-test',
          auth_uri: world.tokens.authUrl,
          token_uri: world.tokens.url,
          client_secret: world.account.clientSecret,
          redirect_uris: ['http://localhost'],
        },
      }),
    );
    const cfg = bridgeConfig(world);
    const acct = (cfg.accounts as { oauth: Record<string, unknown> }[])[0];
    acct.oauth = { type: 'user', clientFile: 'client_secret_123.json', caFile: world.caFile };
    const file = await writeBridgeConfig(world, cfg);
    const check = await cli(['check-config', '-c', file]);
    assert.equal(check.code, 0, check.stderr);
    const imp = await cli(['token', 'import', 'office', '-c', file], { input: world.account.refreshToken + '\n' });
    assert.equal(imp.code, 0, imp.stdout + imp.stderr);
    // The fake token endpoint only answers the registered client id + secret.
    const refresh = await cli(['token', 'refresh', 'office', '-c', file]);
    assert.equal(refresh.code, 0, refresh.stdout + refresh.stderr);
    assert.doesNotMatch(refresh.stdout + refresh.stderr + check.stdout, new RegExp(world.account.clientSecret));

    // A service-account key in its place, or a secret beside it, is named.
    await writeFile(
      clientJson,
      JSON.stringify({ type: 'service_account', client_email: 'x@y.iam.gserviceaccount.com' }),
    );
    acct.oauth = { type: 'user', clientFile: clientJson, clientSecret: 'also' };
    const bad = await cli(['check-config', '-c', await writeBridgeConfig(world, cfg, 'bad.yaml')]);
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /accounts\[0\]\.oauth\.clientSecret: clientFile carries the client secret: remove clientSecret/,
    );
    acct.oauth = { type: 'user', clientFile: clientJson };
    const sa = await cli(['check-config', '-c', await writeBridgeConfig(world, cfg, 'sa.yaml')]);
    assert.equal(sa.code, 2);
    assert.match(
      sa.stderr,
      /accounts\[0\]\.oauth\.clientFile: .* has no "installed" or "web" client \(a service-account key goes in oauth\.keyFile/,
    );
  } finally {
    await world.close();
  }
});

test('XOAUTH2_BRIDGE_CONFIG names the config when -c is not given', async () => {
  const dir = await tempDir();
  const file = await writeConfig(dir, baseConfig(dir), 'from-env.yaml');
  const r = await cli(['check-config'], { env: { XOAUTH2_BRIDGE_CONFIG: file } });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith(`${file}: ok`), r.stdout);
});
