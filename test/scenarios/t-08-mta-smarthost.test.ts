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
import { existsSync, realpathSync } from 'node:fs';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { startBridge, secretsOf, assertNoSecrets, ROOT, type RunningBridge } from '../helpers/bridge.js';
import { freePort } from '../helpers/net.js';
import { waitFor, sleep } from '../helpers/wait.js';
import { RawSmtp } from '../helpers/listener.js';
import { splitReceived } from '../helpers/received.js';

const execFileP = promisify(execFile);
function realOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';
// The real path: Exim re-executes itself as its own user, who cannot pass through the test run's private tree.
const EXIM = process.env.XOAUTH2_BRIDGE_EXIM ?? realOrSelf(join(ROOT, '.tmp', 'exim', 'usr', 'sbin', 'exim4'));

/** Runs a tool; on failure reports only what it printed (argv may hold the test password). */
async function run(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const p = execFileP(cmd, args, { encoding: 'utf8', env: opts.env ?? process.env, timeout: 60_000 });
  if (opts.input !== undefined) {
    p.child.stdin!.end(opts.input);
  }
  try {
    return String((await p).stdout);
  } catch (e) {
    const err = e as { code?: unknown; stdout?: string; stderr?: string };
    throw new Error(
      `${cmd} ${args[0] ?? ''} failed (exit ${String(err.code)}): ${err.stderr ?? ''}${err.stdout ?? ''}`.trim(),
    );
  }
}

async function available(
  what: string,
  check: () => Promise<unknown>,
  t: { skip(msg: string): void },
): Promise<boolean> {
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
  return [
    `From: scanner@example.com`,
    `To: ${rcpt}`,
    `Subject: ${tag} ${n}`,
    `Message-ID: <${tag}.${n}@mta.test>`,
    '',
    `message ${n} relayed by ${tag}`,
    '',
  ].join('\n');
}

const arrived = (tag: string) =>
  world.gmail.messages.filter((m) => m.raw.toString('latin1').includes(`\r\nSubject: ${tag} `));

test('Exim as smarthost client: every message arrives exactly once (it sends `.` and QUIT together, then half-closes)', {
  timeout: 120_000,
}, async (t) => {
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
  for (let n = 0; n < N; n++)
    await exim(
      ['-odi', '-f', 'scanner@example.com', '--', `exim${n}@example.org`],
      mail(n, 'exim', `exim${n}@example.org`),
    );
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

test('Postfix as smarthost client (README recipe): cron mail from root@host rewritten by sender_canonical_maps is relayed; its own bounce (null sender, From: MAILER-DAEMON@its host) is relayed, not refused', {
  timeout: 120_000,
}, async (t) => {
  if (!(await available('postfix', () => access('/usr/sbin/postfix', constants.X_OK), t))) return;
  if (process.getuid?.() !== 0) {
    if (REQUIRE) assert.fail('the Postfix test needs root to start its master');
    return t.skip('not root');
  }
  const root = join(dir, 'postfix');
  const conf = join(root, 'etc');
  const queue = join(root, 'queue');
  const data = join(root, 'data');
  for (const d of [conf, queue, data]) await mkdir(d, { recursive: true });
  for (const d of [dir, root]) await chmod(d, 0o755);
  const [uid, gid] = (await run('getent', ['passwd', 'postfix'])).split(':').slice(2, 4).map(Number);
  await chown(data, uid, gid);
  const port = await freePort();
  const main: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: queue,
    data_directory: data,
    myhostname: 'postfix.test',
    mydomain: 'postfix.test',
    myorigin: '$myhostname',
    mydestination: '$myhostname',
    // Local delivery fails for everyone: mail to nobody@postfix.test makes Postfix bounce.
    local_transport: 'error:5.1.1 no such user here',
    local_recipient_maps: '',
    smtpd_reject_unlisted_recipient: 'no',
    alias_maps: '',
    alias_database: '',
    inet_interfaces: 'loopback-only',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    smtpd_relay_restrictions: 'permit_mynetworks, reject',
    smtpd_peername_lookup: 'no',
    relayhost: `[127.0.0.1]:${b.port}`,
    smtp_tls_security_level: 'none',
    smtp_sasl_auth_enable: 'yes',
    smtp_sasl_password_maps: `static:${world.user.username}:${world.user.password}`,
    smtp_sasl_security_options: 'noanonymous',
    smtp_sasl_mechanism_filter: 'plain',
    disable_dns_lookups: 'yes',
    smtp_host_lookup: 'native',
    biff: 'no',
    maillog_file: join(root, 'maillog'),
    maillog_file_prefixes: root,
    // README "Point clients at it": every sender but the MTA's own notices becomes the account's address.
    sender_canonical_maps: `regexp:${join(conf, 'sender_canonical')}`,
  };
  // An address (not the null sender, which a bare `!/…/` would match too) that is not the MTA's own.
  await writeFile(
    join(conf, 'sender_canonical'),
    'if !/^(MAILER-DAEMON|postmaster)@/\n/@/    scanner@example.com\nendif\n',
  );
  await writeFile(
    join(conf, 'main.cf'),
    Object.entries(main)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') + '\n',
  );
  // Debian's master.cf without chroot (the temp tree has no /etc copies), our own loopback smtpd.
  const master = (await readFile('/etc/postfix/master.cf', 'utf8'))
    .split('\n')
    .filter((l) => !/^smtp\s+inet\s/.test(l))
    .map((l) => l.replace(/^(\S+\s+(?:unix|inet|fifo|pass|unix-dgram)\s+\S+\s+\S+\s+)y(\s)/, '$1n$2'));
  master.push(`127.0.0.1:${port} inet n - n - - smtpd`);
  await writeFile(join(conf, 'master.cf'), master.join('\n') + '\n');
  const log = () => readFile(join(root, 'maillog'), 'utf8').catch(() => '(no log)');
  await run('/usr/sbin/postfix', ['-c', conf, 'start']);
  try {
    await waitFor(async () => (await log()).includes('daemon started'), 20_000, 'postfix master');
    // Mail to a local user that does not exist: Postfix accepts it, local delivery fails,
    // and Postfix sends its bounce to the (remote) sender through the relayhost, the bridge.
    const c = await connectWhenListening(port);
    assert.equal((await c.cmd('EHLO client.test')).code, 250);
    // Cron's mail: root@ the host, in the envelope and in From.
    const cron = await c.sendRaw(
      'root@postfix.test',
      ['admin@example.org'],
      'From: Cron Daemon <root@postfix.test>\r\nTo: admin@example.org\r\nSubject: cron job\r\n\r\nbackup done\r\n.\r\n',
    );
    assert.equal(cron.code, 250, cron.lines.join());
    const r = await c.sendRaw(
      'scanner@example.com',
      ['nobody@postfix.test'],
      'From: scanner@example.com\r\nTo: nobody@postfix.test\r\nSubject: to nobody\r\n\r\nhello\r\n.\r\n',
    );
    assert.equal(r.code, 250, r.lines.join());
    await c.quit();
    await waitFor(
      () => world.gmail.messages.some((m) => m.mailFrom === '' && m.rcptTo.includes('scanner@example.com')),
      30_000,
      'the bounce at fake Gmail',
    ).catch(async (e: Error) => {
      throw new Error(
        `${e.message}; postfix log:\n${await log()}\nbridge:\n${b.logs.filter((l) => /rejected|553/.test(l)).join('\n')}`,
      );
    });
    await waitFor(
      () => world.gmail.messages.some((m) => m.rcptTo.includes('admin@example.org')),
      30_000,
      'the cron mail at fake Gmail',
    ).catch(async (e: Error) => {
      throw new Error(
        `${e.message}; postfix log:\n${await log()}\nbridge:\n${b.logs.filter((l) => /rejected|553/.test(l)).join('\n')}`,
      );
    });
    const cronMail = world.gmail.messages.find((m) => m.rcptTo.includes('admin@example.org'))!;
    assert.equal(cronMail.mailFrom, 'scanner@example.com');
    assert.match(splitReceived(cronMail.raw).rest.toString('latin1'), /^From: Cron Daemon <scanner@example\.com>\r$/m);
    const bounce = world.gmail.messages.find((m) => m.mailFrom === '' && m.rcptTo.includes('scanner@example.com'))!;
    const text = splitReceived(bounce.raw).rest.toString('latin1');
    assert.match(text, /^From: Mail Delivery System <MAILER-DAEMON@postfix\.test>\r$/m);
    assert.match(text, /no such user here/);
    await waitFor(
      async () =>
        /to=<scanner@example\.com>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+,.* status=sent \(250 2\.0\.0 Ok: queued as/.test(
          await log(),
        ),
      10_000,
      'postfix logs the bounce as sent',
    );
  } finally {
    // `postfix stop` returns before the master exits (its last log line may never reach
    // maillog once postlogd is gone): wait for the master's process itself.
    const master = await readFile(join(queue, 'pid', 'master.pid'), 'utf8').then(
      (s) => Number(s.trim()),
      () => 0,
    );
    await run('/usr/sbin/postfix', ['-c', conf, 'stop']).catch(() => '');
    if (master) await waitFor(() => !existsSync(`/proc/${master}`), 20_000, 'postfix master to exit').catch(() => {});
  }
  assertNoSecrets(b.logs.join('\n'), secretsOf(world));
});

async function connectWhenListening(port: number): Promise<RawSmtp> {
  let last: unknown;
  for (let i = 0; i < 100; i++) {
    try {
      return await RawSmtp.connect(port);
    } catch (e) {
      last = e;
      await sleep(100);
    }
  }
  throw last;
}
