// A private Postfix instance for the bench: the MTA a sysadmin would otherwise put in front of
// Gmail, relaying to the same fake Gmail as the bridge. Everything lives in one temp dir (own
// config_directory, queue_directory, data_directory), it listens on loopback only, and stop()
// always runs `postfix -c DIR stop`. Upstream it uses SASL PLAIN over verified implicit TLS, or
// XOAUTH2 when given a Cyrus SASL XOAUTH2 client plugin (Postfix has none of its own); clients
// authenticate to it with SASL PLAIN against a Cyrus sasldb, like they do to the bridge.
import { execFileSync } from 'node:child_process';
import { mkdtemp, writeFile, mkdir, chmod, chown, readFile, readdir, rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { once } from 'node:events';

export interface PostfixOptions {
  /** Fake Gmail (implicit TLS) on 127.0.0.1. */
  upstreamPort: number;
  upstreamUser: string;
  upstreamPassword: string;
  /** PEM of the CA that signed the fake's `localhost` certificate. */
  caCert: string;
  /** The SMTP AUTH credentials clients use (same as the bridge's user). */
  clientUser: string;
  clientPassword: string;
  /**
   * Upstream AUTH XOAUTH2 through the sasl-xoauth2 Cyrus SASL client plugin (libsasl-xoauth2.so,
   * github.com/tarickb/sasl-xoauth2) instead of PLAIN with `upstreamPassword`: `plugin` is the
   * .so, `accessToken` a valid token for `upstreamUser`. The plugin reads Postfix's password as
   * the path of a JSON token file that it refreshes itself (client ID and secret in its
   * sasl-xoauth2.conf, under the sysconfdir it was built with); a fresh one-hour token outlives
   * the bench, so no refresh happens and that file needs only placeholder values.
   * (Debian's libsasl2-modules-kdexoauth2 does not work here: Postfix passes no prompt list to
   * sasl_client_start and that plugin answers "invalid parameter supplied".)
   */
  xoauth2?: { plugin: string; accessToken: string; refreshToken: string };
}

export interface PostfixInstance {
  port: number;
  dir: string;
  version: string;
  /** CPU seconds (user + system) of the master and every process it ran, exited ones included. */
  cpuSeconds(): Promise<number>;
  /**
   * Summed PSS in bytes of the master and its live children: each process maps the same
   * libraries, so a sum of RSS would count the shared pages once per process.
   */
  rss(): Promise<number>;
  stop(): Promise<void>;
}

/** Why Postfix cannot run here, or null when it can. */
export function postfixUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'Postfix needs root to start its master';
  if (!existsSync('/usr/sbin/postfix'))
    return 'postfix is not installed (apt-get install postfix libsasl2-modules sasl2-bin)';
  if (!existsSync('/usr/sbin/saslpasswd2')) return 'saslpasswd2 is not installed (apt-get install sasl2-bin)';
  return null;
}

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const CLK_TCK = 100; // USER_HZ on Linux

/** utime + stime (+ cutime + cstime of reaped children when `withChildren`), in clock ticks. */
function statTicks(pid: number, withChildren: boolean): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // Fields after the name start at 3 (state); utime is field 14, so index 11 here.
  const t = Number(f[11]) + Number(f[12]);
  return withChildren ? t + Number(f[13]) + Number(f[14]) : t;
}

/** PIDs whose parent is `ppid`. */
async function childrenOf(ppid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = await readFile(`/proc/${name}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === ppid) out.push(Number(name));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

export async function startPostfix(o: PostfixOptions): Promise<PostfixInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-bench-postfix-'));
  // Postfix daemons run as the postfix user: the tree must be traversable.
  await chmod(dir, 0o755);
  const conf = join(dir, 'etc');
  const queue = join(dir, 'queue');
  const data = join(dir, 'data');
  for (const d of [conf, queue, data]) await mkdir(d, { recursive: true });
  const [uid, gid] = ['postfix', 'postfix'].map((n, i) =>
    Number(execFileSync('id', [i ? '-g' : '-u', n], { encoding: 'utf8' }).trim()),
  );
  await chown(data, uid, gid);
  const port = await freePort();
  await writeFile(join(conf, 'ca.pem'), o.caCert);
  // Client-side AUTH: Cyrus SASL with a sasldb holding the bench user's password.
  // Outside config_directory: postfix-script wants everything there owned by root.
  await mkdir(join(dir, 'sasl'));
  const sasldb = join(dir, 'sasl', 'sasldb2');
  execFileSync('/usr/sbin/saslpasswd2', ['-p', '-c', '-f', sasldb, '-u', 'bench.local', o.clientUser], {
    input: o.clientPassword,
  });
  await chown(sasldb, uid, gid);
  // Debian's Cyrus SASL looks for smtpd.conf in $config_directory/sasl.
  await mkdir(join(conf, 'sasl'));
  await writeFile(
    join(conf, 'sasl', 'smtpd.conf'),
    `pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: ${sasldb}\nmech_list: PLAIN LOGIN\n`,
  );
  let upstreamSecret = o.upstreamPassword;
  const env: Record<string, string> = {};
  if (o.xoauth2) {
    if (!existsSync(o.xoauth2.plugin)) throw new Error(`SASL XOAUTH2 plugin ${o.xoauth2.plugin} does not exist`);
    upstreamSecret = join(data, 'token.json');
    const expiry = String(Math.floor(Date.now() / 1000) + 3000);
    await writeFile(
      upstreamSecret,
      JSON.stringify({ access_token: o.xoauth2.accessToken, refresh_token: o.xoauth2.refreshToken, expiry }),
    );
    await chown(upstreamSecret, uid, gid);
    // Cyrus SASL looks for plugins in SASL_PATH (colon-separated) before its built-in directory.
    const sysDir = '/usr/lib/x86_64-linux-gnu/sasl2';
    const dir = dirname(o.xoauth2.plugin);
    if (dir !== sysDir) env.SASL_PATH = `${dir}:${sysDir}`;
  }
  const importEnv = execFileSync('/usr/sbin/postconf', ['-d', '-h', 'import_environment'], { encoding: 'utf8' }).trim();
  const main = {
    compatibility_level: '3.6',
    queue_directory: queue,
    data_directory: data,
    myhostname: 'postfix.bench.local',
    mydomain: 'bench.local',
    myorigin: '$myhostname',
    mydestination: '',
    local_transport: 'error:local delivery is disabled',
    alias_maps: '',
    alias_database: '',
    local_recipient_maps: '',
    inet_interfaces: 'loopback-only',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    // Relay only for authenticated clients, as the bridge does.
    smtpd_relay_restrictions: 'permit_sasl_authenticated, reject',
    smtpd_recipient_restrictions: '',
    smtpd_peername_lookup: 'no',
    smtpd_sasl_auth_enable: 'yes',
    smtpd_sasl_type: 'cyrus',
    smtpd_sasl_path: 'smtpd',
    smtpd_sasl_local_domain: 'bench.local',
    cyrus_sasl_config_path: join(conf, 'sasl'),
    smtpd_sasl_security_options: 'noanonymous',
    smtpd_tls_security_level: 'none',
    message_size_limit: String(30 * 2 ** 20),
    relayhost: `[127.0.0.1]:${o.upstreamPort}`,
    // Upstream: implicit TLS (like Gmail's 465), verified against the test CA, name localhost.
    smtp_tls_wrappermode: 'yes',
    smtp_tls_security_level: 'verify',
    smtp_tls_verify_cert_match: 'localhost',
    smtp_tls_CAfile: join(conf, 'ca.pem'),
    smtp_tls_mandatory_protocols: '>=TLSv1.2',
    smtp_sasl_auth_enable: 'yes',
    smtp_sasl_password_maps: `static:${o.upstreamUser}:${upstreamSecret}`,
    smtp_sasl_security_options: 'noanonymous',
    smtp_sasl_tls_security_options: 'noanonymous',
    smtp_sasl_mechanism_filter: o.xoauth2 ? 'xoauth2' : 'plain',
    smtp_host_lookup: 'native',
    disable_dns_lookups: 'yes',
    biff: 'no',
    maillog_file: join(dir, 'maillog'),
    maillog_file_prefixes: dir,
    // Bounces of the bench would go to senders that do not exist here.
    notify_classes: '',
    import_environment: [importEnv, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)].join(' '),
  };
  await writeFile(
    join(conf, 'main.cf'),
    Object.entries(main)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') + '\n',
  );
  // Debian's master.cf with our own loopback listener and no chroot (the temp tree has no
  // /etc files copied in).
  const master = readFileSync('/etc/postfix/master.cf', 'utf8')
    .split('\n')
    .filter((l) => !/^smtp\s+inet\s/.test(l))
    .map((l) => {
      const m = /^(\S+\s+(?:unix|inet|fifo|pass|unix-dgram)\s+\S+\s+\S+\s+)y(\s.*)$/.exec(l);
      return m ? `${m[1]}n${m[2]}` : l;
    });
  master.push(`127.0.0.1:${port} inet n - n - - smtpd`);
  await writeFile(join(conf, 'master.cf'), master.join('\n') + '\n');
  const pf = (...args: string[]) =>
    execFileSync('/usr/sbin/postfix', ['-c', conf, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  let started = false;
  const stop = async (): Promise<void> => {
    if (started) {
      started = false;
      try {
        pf('stop');
      } catch {
        /* already gone */
      }
      // `stop` returns before the master exits; wait for it so nothing lingers.
      for (let i = 0; i < 100 && masterPid() !== null; i++) await new Promise((r) => setTimeout(r, 100));
    }
    await rm(dir, { recursive: true, force: true });
  };
  const masterPid = (): number | null => {
    try {
      const pid = Number(readFileSync(join(queue, 'pid', 'master.pid'), 'utf8').trim());
      return existsSync(`/proc/${pid}`) ? pid : null;
    } catch {
      return null;
    }
  };
  try {
    pf('start');
    started = true;
    let pid: number | null = null;
    for (let i = 0; i < 100 && !(pid = masterPid()); i++) await new Promise((r) => setTimeout(r, 50));
    if (!pid) throw new Error(`postfix did not start:\n${readLog(dir)}`);
    // Wait for the listener.
    for (let i = 0; ; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = createServer();
        s.once('error', () => resolve(true)); // in use = Postfix has it
        s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
      });
      if (ok) break;
      if (i > 100) throw new Error(`postfix is not listening on ${port}:\n${readLog(dir)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const master_ = pid;
    return {
      port,
      dir,
      version: execFileSync('/usr/sbin/postconf', ['-c', conf, '-h', 'mail_version'], { encoding: 'utf8' }).trim(),
      async cpuSeconds() {
        let ticks = statTicks(master_, true);
        for (const c of await childrenOf(master_)) {
          try {
            ticks += statTicks(c, true);
          } catch {
            /* exited between listing and reading: its time is in the master's cutime now */
          }
        }
        return ticks / CLK_TCK;
      },
      async rss() {
        let kb = 0;
        for (const p of [master_, ...(await childrenOf(master_))]) {
          try {
            kb += Number(/^Pss:\s+(\d+)/m.exec(await readFile(`/proc/${p}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
          } catch {
            /* exited */
          }
        }
        return kb * 1024;
      },
      stop,
    };
  } catch (e) {
    const log = readLog(dir);
    await stop();
    throw new Error(`${(e as Error).message.split('\n')[0]}\npostfix log:\n${log}`);
  }
}

function readLog(dir: string): string {
  try {
    return readFileSync(join(dir, 'maillog'), 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(no maillog)';
  }
}
