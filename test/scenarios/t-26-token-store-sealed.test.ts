// A token store written without the at-rest key (e.g. `token import` run as the service user
// outside systemd) is sealed by the daemon that starts with the key: the store, its backup and
// any interrupted write; the log says so, and never claims encryption that is not on disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chown, copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { parseConfig } from '../../src/config/load.js';
import { refuseRootOnServiceState } from '../../src/cli/rootGuard.js';
import { lookupUser } from '../../src/cli/users.js';
import { spawnBridge, importToken, assertNoSecrets, secretsOf, CLI, type SpawnedBridge } from '../helpers/bridge.js';

function cli(args: string[], env: NodeJS.ProcessEnv = {}, input = ''): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end(input);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** A world whose store was written twice without a key: tokens.json and tokens.json.bak both hold the refresh token in clear. */
async function plaintextStore(): Promise<{ world: FakeWorld; configFile: string; state: string; creds: string }> {
  const world = await startFakeWorld();
  const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
  importToken(configFile, world);
  importToken(configFile, world);
  const state = join(world.dir, 'state');
  for (const f of ['tokens.json', 'tokens.json.bak'])
    assert.ok(
      (await readFile(join(state, f), 'utf8')).includes(world.account.refreshToken),
      `precondition: ${f} is plaintext`,
    );
  // A write interrupted by a crash leaves its temp file (safeWrite's NAME.PID.RANDOM.tmp).
  await writeFile(join(state, 'tokens.4242.abcdef.tmp'), await readFile(join(state, 'tokens.json')), { mode: 0o600 });
  // The unit's LoadCredential=token-key: 32 random bytes, read as $CREDENTIALS_DIRECTORY/token-key.
  const creds = join(world.dir, 'creds');
  await mkdir(creds, { mode: 0o700 });
  await writeFile(join(creds, 'token-key'), randomBytes(32), { mode: 0o400 });
  return { world, configFile, state, creds };
}

/** Every file left in the state directory that holds the refresh token in clear. */
async function plaintextCopies(state: string, token: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(state)) {
    const p = join(state, name);
    if (!(await stat(p)).isFile()) continue;
    if ((await readFile(p, 'utf8')).includes(token)) found.push(name);
  }
  return found;
}

const messages = (d: SpawnedBridge) =>
  d.stderr.flatMap((l) => {
    try {
      return [JSON.parse(l) as { level: string; message: string }];
    } catch {
      return [];
    }
  });

test('the daemon started with $CREDENTIALS_DIRECTORY/token-key seals a plaintext store, its backup and stale temp files, and says so once', {
  timeout: 90_000,
}, async () => {
  const { world, configFile, state, creds } = await plaintextStore();
  let d: SpawnedBridge | undefined;
  try {
    d = await spawnBridge(configFile, { CREDENTIALS_DIRECTORY: creds });
    assert.deepEqual(
      await plaintextCopies(state, world.account.refreshToken),
      [],
      'no file in stateDir holds the refresh token in clear after the start',
    );
    for (const f of ['tokens.json', 'tokens.json.bak'])
      assert.equal(JSON.parse(await readFile(join(state, f), 'utf8')).encryption, 'aes-256-gcm', f);
    const sealed = messages(d).filter((m) => /^token store sealed at rest/.test(m.message));
    assert.equal(sealed.length, 1, d.stderr.join('\n'));
    assert.equal(sealed[0].level, 'info');
    assert.match(sealed[0].message, /tokens\.json\.bak was plaintext, sealed/);
    assert.match(sealed[0].message, /tokens\.json was plaintext, sealed/);
    assert.match(sealed[0].message, /tokens\.4242\.abcdef\.tmp \(an interrupted write\) removed/);

    // The daemon's first write (a refresh asked over the control socket) keeps a sealed backup.
    const r = await cli(['token', 'refresh', world.account.name, '-c', configFile]);
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(
      await plaintextCopies(state, world.account.refreshToken),
      [],
      'no plaintext copy after the daemon wrote the store',
    );
    assert.equal(JSON.parse(await readFile(join(state, 'tokens.json.bak'), 'utf8')).encryption, 'aes-256-gcm');
    assertNoSecrets(d.stderr.join('\n') + r.out, secretsOf(world));
  } finally {
    d?.child.kill('SIGTERM');
    await d?.exited;
    await world.close();
  }
});

test('the daemon never claims encryption at rest that is not on disk: a store it cannot seal is logged as plaintext', {
  timeout: 90_000,
}, async () => {
  const { world, configFile, state, creds } = await plaintextStore();
  let d: SpawnedBridge | undefined;
  try {
    // A backup that cannot be replaced (a directory in its place): sealing fails.
    const bak = join(state, 'tokens.json.bak');
    await rm(bak);
    await mkdir(join(bak, 'x'), { recursive: true });
    d = await spawnBridge(configFile, { CREDENTIALS_DIRECTORY: creds });
    const all = messages(d);
    assert.ok(
      !all.some((m) => /encrypted at rest/.test(m.message) && !/not encrypted at rest/.test(m.message)),
      `claimed encryption at rest:\n${d.stderr.join('\n')}`,
    );
    const err = all.filter((m) => /^token store is not encrypted at rest/.test(m.message));
    assert.equal(err.length, 1, d.stderr.join('\n'));
    assert.equal(err[0].level, 'error');
    assertNoSecrets(d.stderr.join('\n'), secretsOf(world));
  } finally {
    d?.child.kill('SIGTERM');
    await d?.exited;
    await world.close();
  }
});

test('on a fresh .deb install (unit key present, systemd running) the root guard suggests the credential form, and that form writes a sealed store', {
  timeout: 60_000,
}, async (t) => {
  if (process.getuid?.() !== 0) {
    if (process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1')
      assert.fail('this test needs root (a stateDir owned by another user)');
    return t.skip('not root');
  }
  const world = await startFakeWorld();
  try {
    const nobody = lookupUser('nobody')!;
    const state = join(world.dir, 'state');
    await mkdir(state, { mode: 0o700 });
    await chown(state, nobody.uid, nobody.gid);
    const configFile = await writeBridgeConfig(world, bridgeConfig(world));
    const config = parseConfig(await readFile(configFile, 'utf8'), configFile);
    // The .deb's postinst makes the unit's key; /run/systemd/system says systemd runs.
    const host = { unitKey: join(world.dir, 'etc-token-key'), systemdRunDir: join(world.dir, 'run-systemd-system') };
    await writeFile(host.unitKey, randomBytes(32), { mode: 0o400 });
    await mkdir(host.systemdRunDir);
    const argv = ['authorize', 'office', '--manual', '-c', configFile];
    const refusal = await refuseRootOnServiceState(config, argv, {}, host).then(
      () => assert.fail('not refused'),
      (e: Error) => e.message,
    );
    const suggested = `systemd-run --quiet --pipe --wait -p User=nobody -p LoadCredential=token-key:${host.unitKey} xoauth2-bridge authorize office --manual -c ${configFile}`;
    assert.ok(
      refusal.split('\n').some((l) => l.trim() === suggested),
      refusal,
    );
    assert.match(refusal, /so the token store is written encrypted/);
    // Without systemd (a container) the runuser form stays; the daemon seals at start there.
    await rm(host.systemdRunDir, { recursive: true });
    const plain = await refuseRootOnServiceState(config, argv, {}, host).then(
      () => '',
      (e: Error) => e.message,
    );
    assert.ok(plain.includes(`runuser -u nobody -- xoauth2-bridge authorize office --manual -c ${configFile}`), plain);

    // What the suggested form gives the CLI: the LoadCredential source as $CREDENTIALS_DIRECTORY/token-key.
    const source = /LoadCredential=token-key:(\S+)/.exec(suggested)![1];
    const creds = join(world.dir, 'creds');
    await mkdir(creds, { mode: 0o700 });
    await copyFile(source, join(creds, 'token-key'));
    await chown(state, 0, 0); // this test cannot run the CLI as nobody (node lives under /root): the root-owned twin
    for (let i = 0; i < 2; i++) {
      const r = await cli(
        ['token', 'import', world.account.name, '-c', configFile],
        { CREDENTIALS_DIRECTORY: creds },
        world.account.refreshToken,
      );
      assert.equal(r.code, 0, r.out);
    }
    assert.deepEqual(
      await plaintextCopies(state, world.account.refreshToken),
      [],
      'token import under the credential leaves no plaintext copy',
    );
    for (const f of ['tokens.json', 'tokens.json.bak'])
      assert.equal(JSON.parse(await readFile(join(state, f), 'utf8')).encryption, 'aes-256-gcm', f);
  } finally {
    await world.close();
  }
});
