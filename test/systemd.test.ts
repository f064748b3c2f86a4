// Checks systemd/xoauth2-bridge.service with systemd's own tools. systemd-analyze (Debian/
// Ubuntu package "systemd") works without systemd running as PID 1, so this runs in
// containers too; where it is missing the tool-based tests skip and say why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
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
  const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', unitPath], { encoding: 'utf8', timeout: 30_000 });
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

test('every syscall the bridge makes is allowed by the unit\'s SystemCallFilter', { skip: noStrace, timeout: 90_000 }, async () => {
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
    const r = spawnSync('strace', ['-f', '-qq', '-c', '-o', out, process.execPath, bin, 'demo'], { encoding: 'utf8', timeout: 80_000, cwd: dir });
    if (r.error) throw r.error;
    const summary = await readFile(out, 'utf8').catch(() => '');
    assert.ok(summary, `strace produced no summary (ptrace not permitted?): ${r.stderr}`);
    const used = new Set<string>();
    for (const line of summary.split('\n')) {
      const m = /^\s*\d+\.\d+\s+\d+\.\d+\s+\d+\s+\d+\s+(?:\d+\s+)?([a-z0-9_]+)\s*$/.exec(line);
      if (m && m[1] !== 'total') used.add(m[1]);
    }
    // The workload must have done what the daemon does, or the comparison proves nothing.
    for (const sc of ['accept4', 'connect', 'fsync', 'rename']) assert.ok(used.has(sc), `demo made no ${sc}() call:\n${r.stdout}\n${r.stderr}`);
    const refused = [...used].filter((sc) => !allowed.has(sc) || denied.has(sc)).sort();
    assert.deepEqual(refused, [], `syscalls the unit would refuse: ${refused.join(', ')}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
