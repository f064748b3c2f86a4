// Interop with the MTAs a sysadmin points at the bridge as their smarthost: real Exim and
// real Postfix, each a private instance (own config, spool and logs in a temp dir) relaying
// to the bridge on loopback with SASL PLAIN. Debian's exim4 conflicts with postfix, so
// .ci/run unpacks the Exim packages without installing them (XOAUTH2_BRIDGE_EXIM names the
// binary); postfix is installed. Locally a missing MTA skips its test unless
// XOAUTH2_BRIDGE_REQUIRE_INTEROP=1 (set in CI), where it fails instead.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile, readFile, chown, chmod, access, constants } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startFakeWorld, type FakeWorld } from '../src/fakes/world.js';
import { startBridge, secretsOf, assertNoSecrets, ROOT, type RunningBridge } from './helpers/bridge.js';
import { waitFor } from './helpers/wait.js';
import { splitReceived } from './helpers/received.js';

const execFileP = promisify(execFile);
const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';
const EXIM = process.env.XOAUTH2_BRIDGE_EXIM ?? join(ROOT, '.tmp', 'exim', 'usr', 'sbin', 'exim4');

/** Runs a tool; on failure reports only what it printed (argv may hold the test password). */
async function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const p = execFileP(cmd, args, { encoding: 'utf8', env: opts.env ?? process.env, timeout: 60_000 });
  if (opts.input !== undefined) {
    p.child.stdin!.end(opts.input);
  }
  try {
    return String((await p).stdout);
  } catch (e) {
    const err = e as { code?: unknown; stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args[0] ?? ''} failed (exit ${String(err.code)}): ${err.stderr ?? ''}${err.stdout ?? ''}`.trim());
  }
}

async function available(what: string, check: () => Promise<unknown>, t: { skip(msg: string): void }): Promise<boolean> {
  try {
    await check();
    return true;
  } catch (e) {
    if (REQUIRE) assert.fail(`${what} is not available (CI must provide it): ${(e as Error).message}`);
    t.skip(`${what} not available`);
    return false;
  }
}

let world: FakeWorld;
let b: RunningBridge;
let dir: string;
before(async () => {
  world = await startFakeWorld();
  b = await startBridge(world);
  dir = await mkdtemp(join(tmpdir(), 'xb-mta-'));
});
after(async () => {
  await b?.stop();
  await world?.close();
  await rm(dir, { recursive: true, force: true });
});

function mail(n: number, tag: string, rcpt: string): string {
  return [`From: scanner@example.com`, `To: ${rcpt}`, `Subject: ${tag} ${n}`, `Message-ID: <${tag}.${n}@mta.test>`, '', `message ${n} relayed by ${tag}`, ''].join('\n');
}

const arrived = (tag: string) => world.gmail.messages.filter((m) => m.raw.toString('latin1').includes(`\r\nSubject: ${tag} `));

test('Exim as smarthost client: every message arrives exactly once (it sends `.` and QUIT together, then half-closes)', { timeout: 120_000 }, async (t) => {
  if (!(await available('exim (unpacked Debian exim4-daemon-light)', () => access(EXIM, constants.X_OK), t))) return;
  if (!(await available('the Debian-exim user', () => run('getent', ['passwd', 'Debian-exim']), t))) return;
  const root = join(dir, 'exim');
  for (const d of ['spool', 'log']) await mkdir(join(root, d), { recursive: true });
  // Exim drops to its own user: it must reach its spool and log directories.
  for (const d of [dir, root]) await chmod(d, 0o755);
  const user = (await run('getent', ['passwd', 'Debian-exim'])).split(':');
  for (const d of ['spool', 'log']) await chown(join(root, d), Number(user[2]), Number(user[3]));
  const conf = join(root, 'exim.conf');
  await writeFile(
    conf,
    [
      'primary_hostname = exim.test',
      'qualify_domain = exim.test',
      'domainlist local_domains = exim.test',
      `spool_directory = ${root}/spool`,
      `log_file_path = ${root}/log/%slog`,
      'keep_environment =',
      `exim_path = ${EXIM}`,
      'begin routers',
      'smarthost:',
      '  driver = manualroute',
      '  domains = ! +local_domains',
      '  transport = bridge_smtp',
      '  route_list = * 127.0.0.1',
      '  self = send',
      '  no_more',
      'begin transports',
      'bridge_smtp:',
      '  driver = smtp',
      `  port = ${b.port}`,
      '  hosts_require_auth = *',
      '  hosts_avoid_tls = *',
      '  allow_localhost',
      'begin authenticators',
      'plain:',
      '  driver = plaintext',
      '  public_name = PLAIN',
      `  client_send = ^${world.user.username}^${world.user.password}`,
      '',
    ].join('\n'),
    { mode: 0o640 },
  );
  // Deliveries run as Exim's user, which reads the config again (it holds the test password: not world-readable).
  await chown(conf, 0, Number(user[3]));
  const exim = (args: string[], input?: string) => run(EXIM, ['-C', conf, ...args], { input });
  const N = 8;
  for (let n = 0; n < N; n++) await exim(['-odi', '-f', 'scanner@example.com', '--', `exim${n}@example.org`], mail(n, 'exim', `exim${n}@example.org`));
  const eximLog = () => readFile(join(root, 'log', 'mainlog'), 'utf8').catch(() => '(no log)');
  await waitFor(() => arrived('exim').length >= N, 20_000, `${N} messages from Exim`).catch(async (e: Error) => {
    throw new Error(`${e.message}; Exim's log:\n${await eximLog()}`);
  });
  // A lost 250 leaves the message deferred in Exim's queue; a forced queue run would send it again.
  assert.equal((await exim(['-bpc'])).trim(), '0', `Exim's queue is empty:\n${await eximLog()}`);
  await exim(['-qff']);
  const got = arrived('exim');
  assert.equal(got.length, N, 'each message exactly once');
  for (let n = 0; n < N; n++) {
    const m = got.filter((x) => x.rcptTo.includes(`exim${n}@example.org`));
    assert.equal(m.length, 1, `message ${n} once`);
    assert.match(splitReceived(m[0].raw).rest.toString(), new RegExp(`Message-ID: <exim\\.${n}@mta\\.test>`));
  }
  const log = await eximLog();
  assert.equal(log.match(/ Completed\b/g)?.length, N, log);
  assert.ok(!/defer|==/.test(log), `no deferral in Exim's log:\n${log}`);
  assertNoSecrets(b.logs.join('\n'), secretsOf(world));
});
