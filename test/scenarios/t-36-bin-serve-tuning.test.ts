// `npm install -g` users run `xoauth2-bridge serve` without the systemd unit's Environment=
// lines; bin/xoauth2-bridge.js applies the unit's V8 flag by re-executing itself in place (same
// PID). Checked on the live process through /proc: its command line.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { ROOT } from '../helpers/bridge.js';

const bin = join(ROOT, 'bin', 'xoauth2-bridge.js');

/** Runs `serve` through the bin script until it logs that it started; returns /proc's view of it. */
async function serveThroughBin(configFile: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const child = spawn(process.execPath, [bin, 'serve', '-c', configFile], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = once(child, 'exit');
  const lines: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(
        () => reject(new Error(`serve did not start within 60 s:\n${lines.join('\n')}`)),
        60_000,
      );
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (d: string) => {
        buf += d;
        const parts = buf.split('\n');
        buf = parts.pop()!;
        lines.push(...parts);
        if (parts.some((l) => l.includes('"xoauth2-bridge started"'))) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(([code]) => {
        clearTimeout(timer);
        reject(new Error(`serve exited (${code}) before starting:\n${lines.join('\n')}`));
      });
    });
    // The PID we spawned is the daemon: execve kept it.
    return (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0');
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

function unitValue(unit: string, name: string): string | undefined {
  return new RegExp(`^Environment=${name}=(.*)$`, 'm').exec(unit)?.[1].trim();
}

test('bin serve: without the unit environment it runs with the unit V8 flag, same PID', async (t) => {
  const world = await startFakeWorld();
  t.after(() => world.close());
  const configFile = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
  const unit = await readFile(join(ROOT, 'systemd', 'xoauth2-bridge.service'), 'utf8');
  // The flag bin applies is the unit's.
  const flag = unitValue(unit, 'NODE_OPTIONS');
  assert.equal(flag, '--max-semi-space-size=1');

  const bare: NodeJS.ProcessEnv = { ...process.env };
  delete bare.NODE_OPTIONS;
  delete bare.XOAUTH2_BRIDGE_NO_TUNE;
  const cmdline = await serveThroughBin(configFile, bare);
  assert.ok(cmdline.includes(flag), `command line: ${cmdline.join(' ')}`);
  assert.ok(cmdline.includes('serve') && cmdline.includes(configFile), `command line: ${cmdline.join(' ')}`);

  // A size the operator chose is kept.
  const own = await serveThroughBin(configFile, { ...bare, NODE_OPTIONS: '--max-semi-space-size=2' });
  assert.ok(!own.includes(flag), `command line: ${own.join(' ')}`);
});
