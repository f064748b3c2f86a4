// The daemon's log as journald stores it: a real `serve` process whose stderr is a pipe, with
// JOURNAL_STREAM set to that pipe's DEV:INODE the way systemd sets it for the journal's
// socket (computed from an fstat of the child's own fd 2, by stat(1) in a wrapping shell).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { CLI, importToken, sendThroughBridge, message } from '../helpers/bridge.js';
import { freePort } from '../helpers/net.js';

interface Daemon {
  lines: string[];
  port: number;
  waitLine(re: RegExp, what: string): Promise<string>;
  stop(): Promise<void>;
}

/** `serve` under sh; `journal: true` sets JOURNAL_STREAM to the DEV:INODE of its stderr, else to another file's. */
async function serve(configFile: string, journal: boolean, env: NodeJS.ProcessEnv = {}): Promise<Daemon> {
  const id = journal ? '/proc/self/fd/2' : '/dev/null';
  const child = spawn(
    '/bin/sh',
    [
      '-c',
      `JOURNAL_STREAM=$(stat -L -c %d:%i ${id}) exec "$@"`,
      'sh',
      process.execPath,
      ...CLI,
      'serve',
      '-c',
      configFile,
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, INVOCATION_ID: undefined, ...env },
    },
  );
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let buf = '';
  child.stderr!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    for (const w of waiters) w();
  });
  const waitLine = (re: RegExp, what: string) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${what} line within 20 s:\n${lines.join('\n')}`));
      }, 20_000);
      const check = () => {
        const l = lines.find((x) => re.test(x));
        if (l === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(l);
      };
      waiters.add(check);
      check();
    });
  const started = await waitLine(/xoauth2-bridge started/, 'started');
  const port = Number(/"local=127\.0\.0\.1:(\d+)"/.exec(started)?.[1]);
  return {
    lines,
    port,
    waitLine,
    stop: async () => {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    },
  };
}

function send(world: FakeWorld, d: Daemon) {
  return sendThroughBridge({
    port: d.port,
    user: world.user.username,
    pass: world.user.password,
    from: world.account.email,
    to: ['retry@example.org'],
    raw: message({ from: world.account.email, to: 'retry@example.org', subject: 'journal' }),
  });
}

/** One message into a bridge whose first upstream DATA gets a 451, then delivered. */
async function deferredOnce(world: FakeWorld, d: Daemon): Promise<void> {
  world.gmail.script({ stage: 'data', reply: '451 4.3.0 Mail server temporarily rejected message.', count: 1 });
  await send(world, d);
  await d.waitLine(/"message":"delivered"/, 'delivered');
}

test('under journald every line carries its priority (<3> <4> <6> <7>), and one upstream 451 is exactly one warning', async () => {
  const world = await startFakeWorld();
  try {
    const file = await writeBridgeConfig(world, bridgeConfig(world, { queue: { retry: ['200ms'] } }));
    importToken(file, world);
    const d = await serve(file, true);
    try {
      await deferredOnce(world, d);
    } finally {
      await d.stop();
    }
    const want: Record<string, string> = { error: '3', warn: '4', info: '6', debug: '7' };
    for (const l of d.lines) {
      const m = /^<(\d)>(\{.*\})$/.exec(l);
      assert.ok(m, `line without a priority prefix: ${l}`);
      assert.equal(m[1], want[JSON.parse(m[2]).level], `priority of ${l}`);
    }
    assert.ok(
      d.lines.some((l) => l.startsWith('<7>')),
      'debug lines are there (level debug), at priority 7',
    );
    const warnings = d.lines.filter((l) => /^<[0-4]>/.test(l));
    const about451 = warnings.filter((l) => l.includes('451'));
    assert.equal(about451.length, 1, `one warning for the 451, got:\n${warnings.join('\n')}`);
    assert.match(about451[0], /"message":"deferred"/);
    assert.equal(warnings.length, 1, `no other warning or error:\n${warnings.join('\n')}`);
  } finally {
    await world.close();
  }
});

test('JOURNAL_STREAM naming another file (inherited, stderr redirected): plain JSON lines, no prefix', async () => {
  const world = await startFakeWorld();
  try {
    const file = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'json' } }));
    const d = await serve(file, false);
    await d.stop();
    assert.ok(d.lines.length > 0);
    for (const l of d.lines) assert.ok(l.startsWith('{'), `unexpected prefix: ${l}`);
  } finally {
    await world.close();
  }
});

test("an upstream that refuses connections: one warning per attempt (the deferral), nodemailer's own error lines only at debug", async () => {
  const world = await startFakeWorld();
  try {
    const cfg = bridgeConfig(world, { queue: { retry: ['1h'] } });
    const acct = (cfg.accounts as { upstream: Record<string, unknown> }[])[0];
    acct.upstream = { ...acct.upstream, port: await freePort() }; // nothing listens there
    const file = await writeBridgeConfig(world, cfg);
    importToken(file, world);
    const d = await serve(file, true);
    try {
      await send(world, d);
      await d.waitLine(/^<4>.*"message":"deferred".*ECONNREFUSED/, 'deferred');
    } finally {
      await d.stop();
    }
    const refused = d.lines.filter((l) => l.includes('ECONNREFUSED'));
    assert.equal(refused.filter((l) => /^<[0-4]>/.test(l)).length, 1, refused.join('\n'));
    assert.ok(
      refused.some((l) => l.startsWith('<7>') && l.includes('"component":"smtp-out"') && l.includes('"libLevel"')),
      `nodemailer's line is kept at debug:\n${refused.join('\n')}`,
    );
  } finally {
    await world.close();
  }
});

test('log.format unset: text under journald (no time or level word: the journal has them), each field once, priorities as with JSON', async () => {
  const world = await startFakeWorld();
  try {
    const file = await writeBridgeConfig(
      world,
      bridgeConfig(world, { queue: { retry: ['200ms'] }, log: { level: 'debug' } }),
    );
    importToken(file, world);
    const d = await serve(file, true);
    try {
      world.gmail.script({ stage: 'data', reply: '451 4.3.0 Mail server temporarily rejected message.', count: 1 });
      await send(world, d);
      await d.waitLine(/^<6>delivered /, 'delivered');
    } finally {
      await d.stop();
    }
    for (const l of d.lines) {
      assert.match(l, /^<[3467]>[^{\s]/, `not a prefixed text line: ${l}`);
      assert.doesNotMatch(l, /^<\d>(\d{4}-\d\d-\d\dT|(error|warn|info|debug): )/, `time or level repeated in: ${l}`);
      const keys = [...l.matchAll(/ ([A-Za-z_][\w.-]*)=/g)].map((m) => m[1]);
      assert.equal(new Set(keys).size, keys.length, `a field repeated in: ${l}`);
    }
    const deferred = d.lines.filter((l) => /^<4>deferred .*451/.test(l));
    assert.equal(deferred.length, 1, d.lines.join('\n'));
    assert.ok(
      d.lines.some((l) => l.startsWith('<7>')),
      'debug lines at priority 7',
    );
  } finally {
    await world.close();
  }
});

test('log.format unset: text under systemd without the journal (INVOCATION_ID only) keeps time and level; JSON when not under systemd', async () => {
  const world = await startFakeWorld();
  try {
    const file = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info' } }));
    const unit = await serve(file, false, { INVOCATION_ID: '0123456789abcdef0123456789abcdef' });
    await unit.stop();
    assert.match(
      unit.lines.find((l) => l.includes('xoauth2-bridge started'))!,
      /^\d{4}-\d\d-\d\dT[\d:.]+Z info: xoauth2-bridge started listeners=/,
    );
    // Not under systemd at all (JOURNAL_STREAM unset too): JSON, as before.
    const child = spawn(process.execPath, [...CLI, 'serve', '-c', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, INVOCATION_ID: undefined, JOURNAL_STREAM: undefined },
    });
    let out = '';
    child.stderr.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('xoauth2-bridge started')) child.kill('SIGTERM');
    });
    await once(child, 'exit');
    assert.match(
      out.split('\n').find((l) => l.includes('xoauth2-bridge started'))!,
      /^\{.*"message":"xoauth2-bridge started"/,
    );
  } finally {
    await world.close();
  }
});
