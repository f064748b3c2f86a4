// Checks systemd/xoauth2-bridge.service with systemd's own tools. systemd-analyze (Debian/
// Ubuntu package "systemd") works without systemd running as PID 1, so this runs in
// containers too; where it is missing the tool-based tests skip and say why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { CLI, importToken } from '../helpers/bridge.js';
import { freePort } from '../helpers/net.js';
import { watchdogIntervalMs } from '../../src/daemon/notify.js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const unitPath = path.join(root, 'systemd', 'xoauth2-bridge.service');
const bin = path.join(root, 'bin', 'xoauth2-bridge.js');
/** `systemd-analyze security` exposure (0 = locked down, 10 = unprotected) the unit must stay under. */
const MAX_EXPOSURE = 2.0;

function has(cmd: string): boolean {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}
// CI (.ci/run) installs both and sets XOAUTH2_BRIDGE_REQUIRE_INTEROP=1: there a missing tool fails instead of skipping.
const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';
const noAnalyze = has('systemd-analyze') || REQUIRE ? false : 'systemd-analyze not installed (apt-get install systemd)';
const noStrace = noAnalyze || (has('strace') || REQUIRE ? false : 'strace not installed (apt-get install strace)');

/** `Key=value` lines of the [Service] section; a key may repeat. */
async function serviceSection(): Promise<Map<string, string[]>> {
  const text = await readFile(unitPath, 'utf8');
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1];
      continue;
    }
    const eq = line.indexOf('=');
    if (section !== 'Service' || eq < 0) continue;
    const k = line.slice(0, eq).trim();
    out.set(k, [...(out.get(k) ?? []), line.slice(eq + 1).trim()]);
  }
  return out;
}

/**
 * A copy of the unit (same file name) whose ExecStart points at this checkout's bin script:
 * the shipped unit names the installed command, which `verify` insists must exist.
 */
async function unitCopy(): Promise<{ dir: string; file: string }> {
  const text = await readFile(unitPath, 'utf8');
  const rewritten = text.replace(/^ExecStart=xoauth2-bridge /m, `ExecStart=${bin} `);
  assert.notEqual(rewritten, text, 'ExecStart= no longer starts with the bare command name; update this test');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'xb-systemd-'));
  const file = path.join(dir, 'xoauth2-bridge.service');
  await writeFile(file, rewritten);
  return { dir, file };
}

test('unit has the hardening the ops issue requires', async () => {
  const s = await serviceSection();
  const one = (k: string) => s.get(k)?.at(-1);
  assert.ok(one('DynamicUser') === 'yes' || one('User'), 'dedicated user');
  assert.equal(one('StateDirectory'), 'xoauth2-bridge');
  assert.equal(one('ConfigurationDirectory'), 'xoauth2-bridge');
  assert.match(one('LoadCredential') ?? '', /^token-key:/);
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('PrivateTmp'), 'yes');
  assert.equal(one('ProtectHome'), 'yes');
  assert.deepEqual(one('RestrictAddressFamilies')?.split(/\s+/).sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX']);
  assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('Restart'), 'on-failure');
  // A config error (exit 2) must not restart forever.
  assert.equal(one('RestartPreventExitStatus'), '2');
  // The config's stateDir default and the docs assume this path.
  assert.match(one('ExecStart') ?? '', / serve -c \/etc\/xoauth2-bridge\/config\.yaml$/);
  // Readiness and watchdog come from a systemd-notify child (src/daemon/notify.ts).
  assert.equal(one('Type'), 'notify');
  assert.equal(one('NotifyAccess'), 'all');
  assert.match(one('WatchdogSec') ?? '', /^\d+s$/);
});

test('systemd-analyze verify accepts the unit without any warning', { skip: noAnalyze }, async () => {
  const { dir, file } = await unitCopy();
  try {
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8', timeout: 30_000 });
    // verify exits 0 on unknown keys and bad values (it only warns), so any output is a failure.
    assert.equal(r.status, 0, r.stderr);
    assert.equal((r.stderr + r.stdout).trim(), '', 'verify printed warnings');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test(`systemd-analyze security rates the unit at most ${MAX_EXPOSURE}`, { skip: noAnalyze }, async () => {
  const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', unitPath], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const m = /Overall exposure level for xoauth2-bridge\.service: (\d+(?:\.\d+)?)/.exec(r.stdout);
  assert.ok(m, r.stdout);
  const score = Number(m[1]);
  console.log(`# systemd-analyze security exposure: ${score}`);
  assert.ok(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE}:\n${r.stdout}`);
});

/** Syscall names in a `systemd-analyze syscall-filter` group, nested groups expanded. */
function syscallGroups(): (name: string) => Set<string> {
  const r = spawnSync('systemd-analyze', ['syscall-filter', '--no-pager'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const groups = new Map<string, string[]>();
  let cur: string[] | null = null;
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('@')) groups.set(line.trim(), (cur = []));
    else if (!line.trim()) cur = null;
    else if (cur && !line.trim().startsWith('#')) cur.push(line.trim());
  }
  const expand = (name: string, seen = new Set<string>()): Set<string> => {
    if (!name.startsWith('@')) return new Set([name]);
    const members = groups.get(name);
    assert.ok(members, `unknown syscall group ${name}`);
    const out = new Set<string>();
    if (seen.has(name)) return out;
    seen.add(name);
    for (const m of members) for (const s of expand(m, seen)) out.add(s);
    return out;
  };
  return (n) => expand(n);
}

test("every syscall the bridge makes is allowed by the unit's SystemCallFilter", {
  skip: noStrace,
  timeout: 90_000,
}, async () => {
  // A disallowed call would get EPERM (SystemCallErrorNumber) or, without it, SIGSYS: either
  // way the daemon breaks in production only. Trace the demo (listener, spool fsync, token
  // refresh, TLS to the fake Gmail) and compare against the filter as systemd expands it.
  const s = await serviceSection();
  const expand = syscallGroups();
  const allowed = new Set<string>();
  const denied = new Set<string>();
  for (const v of s.get('SystemCallFilter') ?? []) {
    const deny = v.startsWith('~');
    for (const item of (deny ? v.slice(1) : v).split(/\s+/).filter(Boolean))
      for (const sc of expand(item)) (deny ? denied : allowed).add(sc);
  }
  assert.ok(allowed.size > 100, 'unit has no allow-list SystemCallFilter');

  const dir = await mkdtemp(path.join(os.tmpdir(), 'xb-strace-'));
  try {
    const out = path.join(dir, 'summary');
    const r = spawnSync('strace', ['-f', '-qq', '-c', '-o', out, process.execPath, bin, 'demo'], {
      encoding: 'utf8',
      timeout: 80_000,
      cwd: dir,
    });
    if (r.error) throw r.error;
    const summary = await readFile(out, 'utf8').catch(() => '');
    assert.ok(summary, `strace produced no summary (ptrace not permitted?): ${r.stderr}`);
    const used = new Set<string>();
    for (const line of summary.split('\n')) {
      const m = /^\s*\d+\.\d+\s+\d+\.\d+\s+\d+\s+\d+\s+(?:\d+\s+)?([a-z0-9_]+)\s*$/.exec(line);
      if (m && m[1] !== 'total') used.add(m[1]);
    }
    // The workload must have done what the daemon does, or the comparison proves nothing.
    for (const sc of ['accept4', 'connect', 'fsync', 'rename'])
      assert.ok(used.has(sc), `demo made no ${sc}() call:\n${r.stdout}\n${r.stderr}`);
    const refused = [...used].filter((sc) => !allowed.has(sc) || denied.has(sc)).sort();
    assert.deepEqual(refused, [], `syscalls the unit would refuse: ${refused.join(', ')}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// A stand-in for systemd's notification socket: a unix datagram socket printing each message on
// one line, closing the descriptor systemd-notify sends with BARRIER=1 (as systemd does) so it
// returns. /usr/bin/python3: Debian's, which has the socket module's recvmsg.
const NOTIFY_LISTENER = `
import socket, sys, os, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("LISTENING", flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array('i')
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
            for fd in fds: os.close(fd)
    print(msg.decode().replace("\\n", " | "), flush=True)
`;

test('watchdog heartbeat: half of WATCHDOG_USEC, only when WATCHDOG_PID is unset or this process', () => {
  assert.equal(watchdogIntervalMs({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000' }, 42), 15_000);
  assert.equal(
    watchdogIntervalMs({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42),
    15_000,
  );
  assert.equal(
    watchdogIntervalMs({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '43' }, 42),
    null,
  );
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 42), null, 'no socket to send to');
  assert.equal(watchdogIntervalMs({ NOTIFY_SOCKET: '/run/x' }, 42), null, 'no watchdog asked for');
});

test('sd_notify: READY=1 only once the listener accepts, WATCHDOG=1 periodically, STOPPING=1 on SIGTERM', {
  skip: has('systemd-notify') || REQUIRE ? false : 'systemd-notify not installed',
  timeout: 120_000,
}, async () => {
  const world = await startFakeWorld();
  const children: import('node:child_process').ChildProcess[] = [];
  try {
    const sock = path.join(world.dir, 'notify.sock');
    const listener = spawn('/usr/bin/python3', ['-u', '-c', NOTIFY_LISTENER, sock], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(listener);
    const messages: string[] = [];
    const waiters = new Set<() => void>();
    const waitFor = (what: string, cond: () => boolean) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ${what} within 60 s; got:\n${messages.join('\n')}`)),
          60_000,
        );
        const check = () => {
          if (!cond()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    let buf = '';
    let acceptedAtReady: Promise<string> | null = null;
    const port = await freePort();
    listener.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        messages.push(line);
        // The moment READY=1 arrives, the SMTP listener must already answer.
        if (line.startsWith('READY=1') && !acceptedAtReady) acceptedAtReady = greeting(port);
      }
      for (const w of [...waiters]) w();
    });
    await waitFor('LISTENING', () => messages.includes('LISTENING'));

    const file = await writeBridgeConfig(
      world,
      bridgeConfig(world, {
        listeners: [{ name: 'local', host: '127.0.0.1', port, tls: 'none' }],
        log: { level: 'info', format: 'json' },
      }),
    );
    importToken(file, world);
    const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000' };
    delete env.WATCHDOG_PID;
    const daemon = spawn(process.execPath, [...CLI, 'serve', '-c', file], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(daemon);
    let stderr = '';
    daemon.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = once(daemon, 'exit');

    await waitFor('READY=1', () => messages.some((m) => m.startsWith('READY=1')));
    assert.match(await acceptedAtReady!, /^220 /, 'the listener answered right when READY=1 arrived');
    assert.match(
      messages.find((m) => m.startsWith('READY=1'))!,
      new RegExp(`STATUS=relaying; listening on 127\\.0\\.0\\.1:${port}`),
    );
    await waitFor('three WATCHDOG=1', () => messages.filter((m) => m === 'WATCHDOG=1').length >= 3);
    assert.ok(
      messages.findIndex((m) => m === 'WATCHDOG=1') > messages.findIndex((m) => m.startsWith('READY=1')),
      'no heartbeat before READY=1',
    );
    assert.ok(!messages.some((m) => m.startsWith('STOPPING=1')), 'no STOPPING=1 before SIGTERM');

    daemon.kill('SIGTERM');
    await waitFor('STOPPING=1', () => messages.some((m) => m.startsWith('STOPPING=1')));
    const [code] = await exited;
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /systemd notification failed/);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await world.close();
  }
});

/** The first line an SMTP server sends on a new connection. */
function greeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let data = '';
    c.on('data', (d) => {
      data += d.toString();
      if (data.includes('\n')) {
        c.end('QUIT\r\n');
        resolve(data.split('\r\n')[0]);
      }
    });
    c.on('error', reject);
  });
}
