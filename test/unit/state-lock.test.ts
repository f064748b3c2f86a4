// The state directory's owner lock: stale locks are taken over at once, live owners are
// named, and a full disk never leaves a lock behind (issue 10 item 14).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readdir, open, truncate, stat } from 'node:fs/promises';
import { execFileSync, spawn, type ChildProcessByStdio } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { acquireStateLock, lockOwner, lockPath, StateLockedError } from '../../src/control/stateLock.js';
import { TokenStore } from '../../src/oauth/store.js';
import { tokenImport } from '../../src/cli/token.js';
import { testConfig } from '../helpers/delivery.js';
import { ROOT } from '../helpers/bridge.js';

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
    await writeFile(
      lockPath(dir),
      JSON.stringify({ pid: await deadPid(), role: 'daemon', since: '2020-01-01T00:00:00Z' }),
    );
    const a = await acquireStateLock(dir, 'cli', { waitMs: 0 });
    await a.release();
    await writeFile(lockPath(dir), ''); // what a full disk left behind before
    const b = await acquireStateLock(dir, 'daemon', { waitMs: 0 });
    await b.release();
    // lock.id (the random part of the lock's name) stays; the PID file and temp files do not.
    assert.deepEqual(await readdir(dir), ['lock.id'], 'released: no lock or temp file left');
  });
});

/** A lock contender in its own process (test/helpers/lock-worker.ts), steered line by line. */
class Contender {
  private readonly answers: string[] = [];
  private readonly waiters: Array<(line: string) => void> = [];
  readonly exited: Promise<unknown>;

  constructor(readonly child: ChildProcessByStdio<Writable, Readable, null>) {
    createInterface({ input: child.stdout }).on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.answers.push(l);
    });
    this.exited = once(child, 'exit');
  }

  static start(): Contender {
    // Compiled JavaScript under test/run.mjs; the TypeScript source through tsx when run alone.
    const ts = import.meta.url.endsWith('.ts');
    const script = fileURLToPath(new URL(`../helpers/lock-worker.${ts ? 'ts' : 'js'}`, import.meta.url));
    const loader = ts ? ['--import', pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href] : [];
    return new Contender(spawn(process.execPath, [...loader, script], { stdio: ['pipe', 'pipe', 'inherit'] }));
  }

  send(line: string): Promise<string> {
    this.child.stdin.write(line + '\n');
    return this.next();
  }

  private next(): Promise<string> {
    const a = this.answers.shift();
    if (a !== undefined) return Promise.resolve(a);
    return new Promise((resolve, reject) => {
      this.waiters.push(resolve);
      void this.exited.then(() => reject(new Error(`contender ${this.child.pid} exited`)));
    });
  }

  async stop(): Promise<void> {
    this.child.stdin.end();
    await this.exited;
  }
}

test('a live owner is refused by name: a daemon at once, a CLI after the wait', async () => {
  await withDir(async (dir) => {
    const holder = Contender.start();
    try {
      assert.equal(await holder.send(`take ${dir} daemon`), 'owner');
      const pid = holder.child.pid!;
      assert.equal((await lockOwner(dir))?.pid, pid);
      const t0 = Date.now();
      await assert.rejects(
        acquireStateLock(dir, 'cli', { waitMs: 5000 }),
        (e: unknown) => e instanceof StateLockedError && new RegExp(`daemon \\(PID ${pid}\\)`).test(e.message),
      );
      assert.ok(Date.now() - t0 < 4000, 'refused at once, not after the wait');
      assert.equal(await holder.send('release'), 'released');
      assert.equal(await lockOwner(dir), null);
      assert.equal(await holder.send(`take ${dir} cli`), 'owner');
      await assert.rejects(
        acquireStateLock(dir, 'daemon', { waitMs: 100 }),
        (e: unknown) => e instanceof StateLockedError && e.message.includes(`PID ${pid}`),
      );
    } finally {
      await holder.stop();
    }
  });
});

test('three processes racing for a stale lock: exactly one owns it, in each of 60 rounds', {
  timeout: 300_000,
}, async () => {
  const contenders = [Contender.start(), Contender.start(), Contender.start()];
  const doubled: string[] = [];
  const stale = JSON.stringify({ pid: await deadPid(), role: 'daemon', since: '2020-01-01T00:00:00Z' });
  try {
    for (let round = 0; round < 60; round++) {
      await withDir(async (dir) => {
        // A lock left by a dead owner: the takeover path the contenders race on.
        await writeFile(lockPath(dir), stale);
        const answers = await Promise.all(contenders.map((c) => c.send(`take ${dir} daemon`)));
        const owners = answers.filter((a) => a === 'owner').length;
        if (owners !== 1) doubled.push(`round ${round}: ${owners} owners (${answers.join(' | ')})`);
        for (const a of answers)
          if (a !== 'owner') assert.match(a, /^refused another xoauth2-bridge daemon \(PID \d+\)/);
        await Promise.all(contenders.map((c) => c.send('release')));
      });
    }
  } finally {
    await Promise.all(contenders.map((c) => c.stop()));
  }
  assert.deepEqual(doubled, [], `rounds without exactly one owner: ${doubled.length} of 60`);
});

test('an owner killed with SIGKILL: the next process takes the lock at once', async () => {
  await withDir(async (dir) => {
    for (const role of ['daemon', 'cli'] as const) {
      const holder = Contender.start();
      assert.equal(await holder.send(`take ${dir} ${role}`), 'owner');
      holder.child.kill('SIGKILL');
      await holder.exited;
      const lock = await acquireStateLock(dir, 'daemon', { waitMs: 0 }); // no wait at all
      assert.equal((await lockOwner(dir))?.pid, process.pid);
      await lock.release();
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
      await assert.rejects(
        new TokenStore({ stateDir: state, key: null }).update((d) => void (d.accounts.x = { state: 'ok' })),
        /ENOSPC/,
      );
      assert.deepEqual((await readdir(state)).sort(), ['filler'], 'nothing left behind: no lock, no temp file');

      await truncate(filler, 0); // space freed
      const out2 = new Sink();
      const input2 = new PassThrough();
      input2.end('1//0g-after-space-freed\n');
      assert.equal(await tokenImport(config, 'office', input2, out2), 0, out2.text);
      assert.match(out2.text, /Stored the refresh token for account office/);
      assert.equal((await stat(join(state, 'tokens.json'))).mode & 0o777, 0o600);
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
