// `send-test` and the one owner of the token store: with a daemon running the daemon sends it
// (the CLI never opens tokens.json, checked with strace); with none, the CLI holds the state
// lock while it sends (a daemon started meanwhile is refused).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { spawnBridge, importToken, assertNoSecrets, secretsOf, CLI, type SpawnedBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  cmd: string,
  args: string[],
): { child: ReturnType<typeof spawn>; done: Promise<Ran>; stderr: () => string; exited: () => boolean } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let exited = false;
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const done = once(child, 'close').then(([code]) => {
    exited = true;
    return { code: code as number | null, stdout, stderr };
  });
  return { child, done, stderr: () => stderr, exited: () => exited };
}

const refreshes = (w: Awaited<ReturnType<typeof startFakeWorld>>) =>
  w.tokens.requests.filter((r) => r.grantType === 'refresh_token').length;

test('with a daemon running, send-test is sent by the daemon: its log says so, and the CLI never opens the token store', {
  timeout: 120_000,
}, async () => {
  const world = await startFakeWorld();
  const trace = await mkdtemp(join(tmpdir(), 'xoauth2-strace-'));
  let d: SpawnedBridge | undefined;
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
    importToken(configFile, world);
    d = await spawnBridge(configFile);
    const before = refreshes(world);
    // Every file the CLI process (and any child) opens or renames, by path.
    const out = join(trace, 'trace');
    const r = await run('strace', [
      '-f',
      '-qq',
      '--seccomp-bpf',
      '-e',
      'trace=open,openat,openat2,rename,renameat,renameat2,unlink,unlinkat',
      '-o',
      out,
      process.execPath,
      ...CLI,
      'send-test',
      '--to',
      'ops@example.org',
      '-c',
      configFile,
    ]).done;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^sent via localhost:${world.gmail.port} as ${world.account.email}: ok 250 `));
    const touched = (await readFile(out, 'utf8')).split('\n').filter((l) => l.includes('tokens.json'));
    assert.deepEqual(touched, [], 'the CLI opened the token store behind the daemon');
    const sent = d.stderr
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((j) => j.message === 'send-test sent');
    assert.equal(sent.length, 1, d.stderr.join('\n'));
    assert.equal(sent[0].account, world.account.name);
    assert.ok(d.stderr.some((l) => /"message":"control request"/.test(l) && /"op":"send-test"/.test(l)));
    assert.equal(world.gmail.messages.filter((m) => m.rcptTo.includes('ops@example.org')).length, 1);
    // One owner of the grant: any refresh for it was the daemon's (its single flight), at most one.
    assert.ok(refreshes(world) - before <= 1, `refreshes during send-test: ${refreshes(world) - before}`);
    assertNoSecrets(d.stderr.join('\n') + r.stdout + r.stderr, secretsOf(world));
  } finally {
    d?.child.kill('SIGTERM');
    await d?.exited;
    await rm(trace, { recursive: true, force: true });
    await world.close();
  }
});

test('with no daemon, send-test holds the state lock while it sends: a daemon started meanwhile is refused', {
  timeout: 120_000,
}, async () => {
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world));
    importToken(configFile, world);
    const gate = world.gmail.holdNextData();
    const st = run(process.execPath, [...CLI, 'send-test', '--to', 'ops@example.org', '-c', configFile]);
    await gate.reached; // the CLI is in the middle of the SMTP transaction
    const daemon = run(process.execPath, [...CLI, 'serve', '-c', configFile]);
    await waitFor(
      () => daemon.exited() || daemon.stderr().includes('xoauth2-bridge started'),
      60_000,
      'the daemon to exit or start',
    );
    if (!daemon.exited()) {
      daemon.child.kill('SIGTERM');
      await daemon.done;
      assert.fail('a daemon started while send-test was sending without the daemon');
    }
    const serve = await daemon.done;
    assert.notEqual(serve.code, 0, serve.stderr);
    assert.match(serve.stderr, new RegExp(`PID ${st.child.pid}\\b`), serve.stderr);
    gate.release();
    const r = await st.done;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^sent via /);
    assert.equal(world.gmail.messages.filter((m) => m.rcptTo.includes('ops@example.org')).length, 1);
  } finally {
    await world.close();
  }
});
