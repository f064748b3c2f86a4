// The state directory's owner lock: stale locks are taken over at once, live owners are
// named, and a full disk never leaves a lock behind (issue 10 item 14).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readdir, open, truncate, stat } from 'node:fs/promises';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { acquireStateLock, lockPath, StateLockedError } from '../src/control/stateLock.js';
import { TokenStore } from '../src/oauth/store.js';
import { tokenImport } from '../src/cli/token.js';
import { testConfig } from './helpers/delivery.js';

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'state-lock-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await once(child, 'exit');
  return child.pid!;
}

test('a lock whose owner is gone (dead PID, or an empty file) is taken over at once', async () => {
  await withDir(async (dir) => {
    await writeFile(lockPath(dir), JSON.stringify({ pid: await deadPid(), role: 'daemon', since: '2020-01-01T00:00:00Z' }));
    const a = await acquireStateLock(dir, 'cli', { waitMs: 0 });
    await a.release();
    await writeFile(lockPath(dir), ''); // what a full disk left behind before
    const b = await acquireStateLock(dir, 'daemon', { waitMs: 0 });
    await b.release();
    assert.deepEqual(await readdir(dir), [], 'released: no lock or temp file left');
  });
});

test('a live owner is refused by name: a daemon at once, a CLI after the wait', async () => {
  await withDir(async (dir) => {
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      await writeFile(lockPath(dir), JSON.stringify({ pid: sleeper.pid, role: 'daemon', since: new Date().toISOString() }));
      await assert.rejects(acquireStateLock(dir, 'cli', { waitMs: 5000 }), (e: unknown) => e instanceof StateLockedError && new RegExp(`daemon \\(PID ${sleeper.pid}\\)`).test(e.message));
      await writeFile(lockPath(dir), JSON.stringify({ pid: sleeper.pid, role: 'cli', since: new Date().toISOString() }));
      await assert.rejects(acquireStateLock(dir, 'daemon', { waitMs: 100 }), (e: unknown) => e instanceof StateLockedError && e.message.includes(`PID ${sleeper.pid}`));
    } finally {
      sleeper.kill();
    }
  });
});

class Sink extends Writable {
  text = '';
  _write(c: Buffer, _e: string, cb: () => void) {
    this.text += c.toString();
    cb();
  }
}

function mountTmpfs(dir: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Fills the file system with one file; returns its path. */
async function fill(dir: string): Promise<string> {
  const f = join(dir, 'filler');
  const fh = await open(f, 'w');
  try {
    const block = Buffer.alloc(4096, 0x66);
    for (;;) await fh.write(block);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    await fh.close();
  }
  return f;
}

test('full disk: token import fails with ENOSPC and leaves no lock; once space is freed it works at once', async (t) => {
  await withDir(async (dir) => {
    const state = join(dir, 'state');
    await (await import('node:fs/promises')).mkdir(state);
    if (!mountTmpfs(state)) {
      // No mount permission: the lock a full disk used to leave (empty file) must not block either.
      t.diagnostic('mount not permitted: only the stale-lock half of this check runs');
      await writeFile(lockPath(state), '');
      const out = new Sink();
      const input = new PassThrough();
      input.end('1//0g-after-stale-lock\n');
      assert.equal(await tokenImport(testConfig(state), 'office', input, out), 0, out.text);
      return;
    }
    t.diagnostic('disk full simulated with a 256 KB tmpfs (ENOSPC)');
    try {
      const config = testConfig(state);
      const filler = await fill(state);
      const out = new Sink();
      const input = new PassThrough();
      input.end('1//0g-on-a-full-disk\n');
      assert.equal(await tokenImport(config, 'office', input, out), 1);
      assert.match(out.text, /ENOSPC/);
      // The store's own write on a full disk fails cleanly too (no temp file, no lock).
      await assert.rejects(new TokenStore({ stateDir: state, key: null }).update((d) => void (d.accounts.x = { state: 'ok' })), /ENOSPC/);
      assert.deepEqual((await readdir(state)).sort(), ['filler'], 'nothing left behind: no lock, no temp file');

      await truncate(filler, 0); // space freed
      const out2 = new Sink();
      const input2 = new PassThrough();
      input2.end('1//0g-after-space-freed\n');
      assert.equal(await tokenImport(config, 'office', input2, out2), 0, out2.text);
      assert.match(out2.text, /Stored the refresh token for account office/);
      assert.equal(((await stat(join(state, 'tokens.json'))).mode & 0o777), 0o600);
      assert.ok(!(await readdir(state)).includes('lock'), 'the CLI released the lock');
    } finally {
      try {
        execFileSync('umount', [state], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
    }
  });
});
