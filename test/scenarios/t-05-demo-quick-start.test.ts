// `demo --keep` (rehearsal mode) as an operator uses it: a real process, real swaks pointed at
// the details it prints, and Ctrl-C (SIGINT) to end it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { CLI } from '../helpers/bridge.js';

const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';
const noSwaks =
  spawnSync('swaks', ['--version'], { stdio: 'ignore' }).status === 0 || REQUIRE
    ? false
    : 'swaks not installed (apt-get install swaks)';

test('demo --keep prints where to connect, reports a message swaks sends there, and ends cleanly on SIGINT', {
  skip: noSwaks,
  timeout: 120_000,
}, async () => {
  const child = spawn(process.execPath, [...CLI, 'demo', '--keep'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of [...waiters]) w();
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = once(child, 'exit');
  const waitOut = (re: RegExp, what: string) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within 60 s:\n${out}\n${err}`)), 60_000);
      const check = () => {
        const m = re.exec(out);
        if (!m) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(m);
      };
      waiters.add(check);
      check();
    });
  try {
    const config = (await waitOut(/^ {2}config +(\S+)$/m, 'connection details'))[1];
    const host = /^ {2}SMTP host +(\S+)$/m.exec(out)![1];
    const port = /^ {2}SMTP port +(\d+)/m.exec(out)![1];
    const user = /^ {2}user +(\S+)$/m.exec(out)![1];
    const password = /^ {2}password +(\S+)$/m.exec(out)![1];
    const sender = /^ {2}sender +(\S+)/m.exec(out)![1];
    assert.match(
      out,
      new RegExp(
        `^ {2}authorize +xoauth2-bridge authorize office --manual -c ${config.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`,
        'm',
      ),
    );
    const consoleUrl = /^ {2}console +(http:\/\/\S+)/m.exec(out)![1];
    assert.ok((await fetch(consoleUrl)).status < 500, 'the console answers');

    const subject = `rehearsal ${process.pid}`;
    const swaks = spawnSync(
      'swaks',
      [
        '--server',
        `${host}:${port}`,
        '--auth-user',
        user,
        '--auth-password',
        password,
        '--from',
        sender,
        '--to',
        'you@example.org',
        '--header',
        `Subject: ${subject}`,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(swaks.status, 0, swaks.stdout + swaks.stderr);
    assert.match(swaks.stdout, /<- {2}250 2\.0\.0 Ok: queued as /);
    await waitOut(
      new RegExp(
        `^arrived at fake Gmail: from <${sender}> to <you@example\\.org>, \\d+ bytes, subject "${subject}"$`,
        'm',
      ),
      'arrival line',
    );

    child.kill('SIGINT');
    const [code] = await exited;
    assert.equal(code, 0, out + err);
    assert.ok(!existsSync(dirname(config)), `temporary state ${dirname(config)} removed`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
