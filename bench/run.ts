// `npm run bench [-- --quick] [--only 1,3] [--tsx] [--no-postfix]`: speed, memory and efficiency
// of the bridge against baselines measured in the same run, on loopback with the fake Gmail (TLS
// + XOAUTH2): talking to the fake directly, and a private Postfix relaying to it (bench/postfix.ts;
// needs root and Debian's postfix + sasl2-bin, else its column says n/a).
// Absolute numbers on a shared machine are noise, so every figure is also a ratio against its
// own baseline, and baselines and bridge runs are interleaved. Prints a table and writes
// bench/results.json. Not a test: a MISS never fails the process.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { cpus, tmpdir, loadavg, totalmem, release } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import https from 'node:https';
import tls from 'node:tls';
import nodemailer from 'nodemailer';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../src/fakes/world.js';
import { CLI, ROOT } from '../test/helpers/bridge.js';
import { sleep } from '../test/helpers/wait.js';
import { SmtpClient, makeMessage, type Auth, type ConnectOptions } from './smtp.js';
import { startPostfix, postfixUnavailable, type PostfixInstance } from './postfix.js';
import { drain } from './drain.js';

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const onlyArg = argv.find((a, i) => a.startsWith('--only') && (a.includes('=') || argv[i + 1]));
const ONLY = onlyArg
  ? new Set((onlyArg.includes('=') ? onlyArg.split('=')[1] : argv[argv.indexOf(onlyArg) + 1]).split(',').map(Number))
  : null;
const want = (n: number): boolean => !ONLY || ONLY.has(n);

const P = QUICK
  ? { printerN: 60, printerRounds: 3, concN: 600, largeN: 20, tokenTtlSec: 6, tokenLoadSec: 10 }
  : { printerN: 500, printerRounds: 5, concN: 5000, largeN: 20, tokenTtlSec: 12, tokenLoadSec: 36 };
const SMALL = 10 * 1024;
/** How long the daemon idles after the large-message run before its RSS is read again. */
const RETURN_WAIT_MS = 60_000;
const LARGE = 20 * 1024 * 1024;
const CLIENTS = 16;
// Bridge settings used for every scenario (reported in results.json).
const BRIDGE = {
  upstreamMaxConnections: 8,
  upstreamMaxMessages: 100, // the default, kept: it sets the floor of AUTHs per 1,000 messages
  queueConcurrency: 16,
  maxConnectionsPerIp: 64, // default 20 would cap scenario 3's 20 clients exactly at the limit
  messagesPerDay: 1_000_000, // the 2,000/day default quota would hold scenario 2's messages
};
const FROM = 'scanner@example.com';
const TO = 'archive@example.org';

// ---------------------------------------------------------------- helpers

const now = () => performance.now();
const mb = (b: number) => b / 2 ** 20;

function quantile(xs: number[], q: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

async function procStatus(pid: number): Promise<{ rss: number; hwm: number; anon: number; file: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') };
}

function machine(): Record<string, unknown> {
  const dir = realpathSync(tmpdir());
  let fs = 'unknown';
  try {
    let best = '';
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, mnt, type] = line.split(' ');
      if (!mnt) continue;
      const m = mnt.replace(/\\040/g, ' ');
      const under = dir === m || dir.startsWith(m.endsWith('/') ? m : m + '/');
      if (under && m.length >= best.length) {
        best = m;
        fs = `${type} (${dev} on ${m})`;
      }
    }
  } catch {
    /* not linux */
  }
  const c = cpus();
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    memGB: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    os: `${process.platform} ${release()}`,
    tmpdir: dir,
    tmpdirFs: fs,
    loadavgAtStart: loadavg().map((x) => +x.toFixed(2)),
  };
}

/** A refresh_token grant against the fake endpoint: the baselines' own access token. */
async function fetchAccessToken(world: FakeWorld): Promise<string> {
  const body = new URLSearchParams({
    grant_type: 'refresh_token',
    client_id: world.account.clientId,
    client_secret: world.account.clientSecret,
    refresh_token: world.account.refreshToken,
  }).toString();
  return new Promise((resolve, reject) => {
    const req = https.request(
      world.tokens.url,
      {
        method: 'POST',
        ca: world.pki.caCert,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          const j = JSON.parse(text) as { access_token?: string };
          if (res.statusCode !== 200 || !j.access_token) reject(new Error(`token endpoint: ${res.statusCode}`));
          else resolve(j.access_token);
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** FakeGmail keeps every message; drop the bodies as they arrive so the harness stays small. */
function releaseBodies(world: FakeWorld): { bytes: number; stop(): void } {
  const st = { bytes: 0, seen: 0 };
  const tick = () => {
    const ms = world.gmail.messages;
    for (; st.seen < ms.length; st.seen++) {
      st.bytes += ms[st.seen].raw.length;
      ms[st.seen].raw = Buffer.alloc(0);
    }
  };
  const timer = setInterval(tick, 20);
  return {
    get bytes() {
      tick();
      return st.bytes;
    },
    stop: () => clearInterval(timer),
  };
}

/** Every bridge started, so a failing scenario can show what the daemon logged. */
const started: Array<{ name: string; stderr: string[] }> = [];

/**
 * How the daemon child runs. By default bench/serve.ts is bundled to plain JS with esbuild
 * (already installed as tsx's compiler; dependencies stay external), so the daemon runs like
 * the compiled dist/ does in production: tsx's loader keeps a second V8 isolate (its hooks
 * thread) and compiled sources in memory, which would inflate RSS by tens of MB. `--tsx`
 * runs the sources through tsx instead.
 */
let daemonArgs: string[] = [];
let daemonMode = '';
async function prepareDaemon(): Promise<void> {
  const src = join(ROOT, 'bench', 'serve.ts');
  if (!argv.includes('--tsx')) {
    try {
      const esbuild = await import('esbuild');
      const outfile = join(ROOT, 'node_modules', '.cache', 'xoauth2-bridge-bench', 'serve.mjs');
      await esbuild.build({
        entryPoints: [src],
        outfile,
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        packages: 'external',
        logLevel: 'silent',
      });
      daemonArgs = [outfile];
      daemonMode = 'compiled JS (esbuild bundle of bench/serve.ts, dependencies external)';
      return;
    } catch (e) {
      console.log(`esbuild unavailable (${(e as Error).message.split('\n')[0]}), running the daemon through tsx`);
    }
  }
  daemonArgs = ['--import', 'tsx', src];
  daemonMode = 'TypeScript sources through tsx';
}

/**
 * The Environment= lines of systemd/xoauth2-bridge.service (thread pool size, V8 flags): the
 * daemon runs here as the unit runs it. BENCH_NO_UNIT_ENV=1 leaves them out (to measure them).
 */
function unitEnvironment(): Record<string, string> {
  if (process.env.BENCH_NO_UNIT_ENV === '1') return {};
  const unit = readFileSync(join(ROOT, 'systemd', 'xoauth2-bridge.service'), 'utf8');
  const env: Record<string, string> = {};
  for (const m of unit.matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(.*)$/gm)) env[m[1]] = m[2].trim();
  return env;
}
const UNIT_ENV = unitEnvironment();

interface DaemonMemory {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

interface BridgeProc {
  child: ChildProcess;
  pid: number;
  port: number;
  stderr: string[];
  /** process.memoryUsage() inside the daemon (bench/serve.ts answers SIGUSR2 on stdout). */
  memory(): Promise<DaemonMemory>;
  stop(): Promise<void>;
}

/** Writes a config for the world, imports the refresh token with the real CLI, runs bench/serve.ts. */
async function startBridgeProc(
  world: FakeWorld,
  name: string,
  opts: {
    noFsync?: boolean;
    noKdfGate?: boolean;
    tokens?: Record<string, unknown>;
    listener?: Record<string, unknown>;
  } = {},
): Promise<BridgeProc> {
  const cfg = bridgeConfig(world, {
    stateDir: join(world.dir, `state-${name}`),
    log: { level: 'warn', format: 'json' },
    queue: { retry: ['1s', '2s', '5s'], concurrency: BRIDGE.queueConcurrency },
    ...(opts.tokens ? { tokens: opts.tokens } : {}),
  }) as {
    listeners: Array<Record<string, unknown>>;
    accounts: Array<{ upstream: Record<string, unknown>; limits?: Record<string, unknown> }>;
  };
  cfg.listeners[0].maxConnectionsPerIp = BRIDGE.maxConnectionsPerIp;
  Object.assign(cfg.listeners[0], opts.listener);
  cfg.accounts[0].upstream.maxConnections = BRIDGE.upstreamMaxConnections;
  cfg.accounts[0].upstream.maxMessages = BRIDGE.upstreamMaxMessages;
  cfg.accounts[0].limits = { messagesPerDay: BRIDGE.messagesPerDay };
  const file = await writeBridgeConfig(world, cfg, `config-${name}.yaml`);
  execFileSync(process.execPath, [...CLI, 'token', 'import', world.account.name, '-c', file], {
    input: world.account.refreshToken,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  // BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the daemon.
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      ...daemonArgs,
      file,
      ...(opts.noFsync ? ['--unsafe-no-fsync'] : []),
      ...(opts.noKdfGate ? ['--unsafe-no-kdf-gate'] : []),
    ],
    {
      cwd: ROOT,
      env: { ...process.env, ...UNIT_ENV },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  const stderr: string[] = [];
  started.push({ name, stderr });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => stderr.push(...d.split('\n').filter(Boolean)));
  const exited = once(child, 'exit');
  let memoryWaiter: ((m: DaemonMemory) => void) | null = null;
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => reject(new Error(`bridge ${name} did not start in 30 s:\n${stderr.join('\n')}`)),
      30_000,
    );
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith('{"ready"')) {
          clearTimeout(timer);
          resolve((JSON.parse(line) as { ports: Record<string, number> }).ports.local);
        } else if (line.startsWith('{"memory"')) {
          const w = memoryWaiter;
          memoryWaiter = null;
          w?.((JSON.parse(line) as { memory: DaemonMemory }).memory);
        }
      }
    });
    void exited.then(([code]) => {
      clearTimeout(timer);
      reject(new Error(`bridge ${name} exited (${code}) before starting:\n${stderr.join('\n')}`));
    });
  });
  return {
    child,
    pid: child.pid!,
    port,
    stderr,
    memory() {
      return new Promise<DaemonMemory>((resolve) => {
        memoryWaiter = resolve;
        child.kill('SIGUSR2');
      });
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(10_000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    },
  };
}

interface Target {
  name: string;
  conn: ConnectOptions;
  auth: Auth;
}

const bridgeTarget = (world: FakeWorld, b: BridgeProc, name: string): Target => ({
  name,
  conn: { port: b.port },
  auth: { plain: { user: world.user.username, pass: world.user.password } },
});

const directTarget = (world: FakeWorld, token: string): Target => ({
  name: 'direct',
  conn: { port: world.gmail.port, tls: { ca: world.pki.caCert, servername: 'localhost' } },
  auth: { xoauth2: { user: world.account.email, token } },
});

/**
 * One printer-style session: connect, EHLO, AUTH, one message, QUIT. `greeting` is the wait
 * for the 220 once TCP (and TLS, for the fake Gmail) is up: smtp-server, in the bridge and in
 * the fake Gmail alike, holds it back 100 ms to catch clients that talk too early.
 */
async function printerSession(t: Target, body: Buffer): Promise<{ total: number; greeting: number; t250: number }> {
  const t0 = now();
  const c = await SmtpClient.open(t.conn);
  const greeting = c.greetingMs;
  await c.hello(t.auth);
  const t250 = await c.send(FROM, TO, body);
  await c.quit();
  return { total: now() - t0, greeting, t250 };
}

// ---------------------------------------------------------------- scenario 7: KDF flood

/**
 * End of DATA -> 250 of an authenticated client while 64 wrong-password logins (64 loopback
 * source addresses, each far under its lockout limit) keep scrypt busy: without the KDF gate
 * (bench-only switch) every check runs at once on libuv's threadpool, in front of the
 * spool's fsyncs; with it at most 2 run, fairly between addresses.
 */
async function kdfFlood(): Promise<void> {
  const world = await startFakeWorld();
  const body = makeMessage(SMALL, FROM, TO, 'kdf');
  const n = QUICK ? 5 : 10;
  const out: Record<string, { p50: number; p99: number; max: number; messages: number; wrongLogins: number }> = {};
  try {
    for (const gated of [false, true]) {
      const name = gated ? 'kdf-gate' : 'kdf-nogate';
      const b = await startBridgeProc(world, name, {
        noKdfGate: !gated,
        listener: { authFailLimit: 1_000_000, maxClients: 200 },
      });
      try {
        const t = bridgeTarget(world, b, name);
        const client = await SmtpClient.open(t.conn);
        await client.hello(t.auth);
        await client.send(FROM, TO, body); // warm-up
        let stop = false;
        let wrong = 0;
        const wrongAuth = `AUTH PLAIN ${Buffer.from(`\0${world.user.username}\0not-the-password`).toString('base64')}`;
        const workers = Array.from({ length: 64 }, async (_, i) => {
          while (!stop) {
            const c = await SmtpClient.open({ ...t.conn, localAddress: `127.0.1.${i + 1}` });
            await c.cmd('EHLO flood.local', 250);
            await c.cmd(wrongAuth, 535);
            wrong++;
            await c.quit().catch(() => {});
          }
        });
        await sleep(1000); // let the flood build up
        // Gate off, each spool fs call can queue behind 64 KDFs: cap the phase at 90 s.
        const lat: number[] = [];
        const end = now() + 90_000;
        for (let i = 0; i < n && (i === 0 || now() < end); i++) lat.push(await client.send(FROM, TO, body));
        stop = true;
        await Promise.allSettled(workers);
        await client.quit();
        out[name] = {
          p50: quantile(lat, 0.5),
          p99: quantile(lat, 0.99),
          max: Math.max(...lat),
          messages: lat.length,
          wrongLogins: wrong,
        };
      } finally {
        await b.stop();
      }
    }
  } finally {
    await world.close();
  }
  results.kdfFlood = out;
  const before = out['kdf-nogate'];
  const after = out['kdf-gate'];
  const ms = (r: { p50: number; p99: number; messages: number; wrongLogins: number }) =>
    `${f(r.p50)} / ${f(r.p99)} (${r.messages} msgs, ${r.wrongLogins} wrong logins)`;
  row(6, {
    scenario: 'KDF flood (64 wrong logins): end of DATA -> 250 p50 / p99 ms, gate off',
    bridge: ms(before),
    postfix: '',
    direct: '',
    vsDirect: '',
    vsPostfix: '',
    target: 'report',
  });
  row(6.1, {
    scenario: 'KDF flood (64 wrong logins): end of DATA -> 250 p50 / p99 ms, gate on',
    bridge: ms(after),
    postfix: '',
    direct: '',
    vsDirect: '',
    vsPostfix: '',
    target: 'report',
  });
}

// ---------------------------------------------------------------- results

/** One line of the table: the bridge next to Postfix and to talking to the fake Gmail directly. */
interface Row {
  scenario: string;
  bridge: string;
  postfix: string;
  /** Postfix relaying with XOAUTH2 through a SASL plugin (shown when SASL_XOAUTH2 is set). */
  postfixX: string;
  direct: string;
  vsDirect: string;
  vsPostfix: string;
  target: string;
  met: string;
}
const rows: Array<Row & { order: number }> = [];
const results: Record<string, unknown> = {};
const errors: Record<string, string> = {};

const f = (x: number | undefined, d = 1) => (x !== undefined && Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const x = (a: number, b: number | undefined) => (b !== undefined && Number.isFinite(a / b) ? f(a / b, 2) + 'x' : '');
/** `met`: undefined = a figure reported without a target; a list = every target must hold. */
function row(
  order: number,
  r: Omit<Row, 'met' | 'postfixX'> & { postfixX?: string; met?: Array<boolean | undefined> },
): void {
  const checks = (r.met ?? []).filter((m): m is boolean => m !== undefined);
  const met = r.met === undefined ? '' : checks.length === 0 ? 'n/a' : checks.every(Boolean) ? 'yes' : 'NO';
  rows.push({ ...r, postfixX: r.postfixX ?? '', met, order });
}

// ---------------------------------------------------------------- Postfix

/** The fixed app password Postfix uses upstream (Postfix has no XOAUTH2 of its own). */
const POSTFIX_UPSTREAM_PASSWORD = `app-${Math.random().toString(36).slice(2)}`;
let postfixVersion = '';
let postfixMissing: string | null = null;

/**
 * XOAUTH2_BRIDGE_BENCH_SASL_XOAUTH2: the sasl-xoauth2 Cyrus SASL plugin (.so). When set, a second
 * Postfix relays with real XOAUTH2 through it: the "Postfix XOAUTH2" column, what users compare.
 */
const SASL_XOAUTH2 = process.env.XOAUTH2_BRIDGE_BENCH_SASL_XOAUTH2 || '';

/**
 * A private Postfix relaying to this world's fake Gmail, or null (with the reason noted) if it
 * cannot run here. `xoauth2`: upstream AUTH XOAUTH2 through SASL_XOAUTH2, or null without it.
 */
async function maybePostfix(world: FakeWorld, xoauth2 = false): Promise<PostfixInstance | null> {
  if (argv.includes('--no-postfix')) postfixMissing = '--no-postfix';
  postfixMissing ??= postfixUnavailable();
  if (postfixMissing || (xoauth2 && !SASL_XOAUTH2)) return null;
  if (!xoauth2) world.gmail.acceptPassword(world.account.email, POSTFIX_UPSTREAM_PASSWORD);
  const pf = await startPostfix({
    upstreamPort: world.gmail.port,
    upstreamUser: world.account.email,
    upstreamPassword: POSTFIX_UPSTREAM_PASSWORD,
    caCert: world.pki.caCert,
    clientUser: world.user.username,
    clientPassword: world.user.password,
    ...(xoauth2
      ? {
          xoauth2: {
            plugin: SASL_XOAUTH2,
            accessToken: await fetchAccessToken(world),
            refreshToken: world.account.refreshToken,
          },
        }
      : {}),
  });
  postfixVersion = pf.version;
  return pf;
}

const postfixTarget = (world: FakeWorld, pf: PostfixInstance, name = 'postfix'): Target => ({
  name,
  conn: { port: pf.port },
  auth: { plain: { user: world.user.username, pass: world.user.password } },
});

/** CPU seconds (user + system) the process has used so far. */
function processCpuSeconds(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ ticks
}

// ---------------------------------------------------------------- scenarios 1 + 5

interface PrinterStats {
  n: number;
  messagesPerSec: number;
  /** Rate with the greeting wait taken out (EHLO..QUIT only). */
  messagesPerSecAfterGreeting: number;
  sessionMs: { p50: number; p99: number };
  greetingMs: { p50: number; p99: number };
  timeTo250Ms: { p50: number; p99: number };
  upstreamAuths: number;
}

async function printerAndDurability(): Promise<void> {
  const world = await startFakeWorld();
  const bodies = releaseBodies(world);
  const procs: BridgeProc[] = [];
  let pf: PostfixInstance | null = null;
  let pfx: PostfixInstance | null = null;
  try {
    const token = await fetchAccessToken(world);
    const fsyncOn = await startBridgeProc(world, 'fsync');
    procs.push(fsyncOn);
    const fsyncOff = want(5) ? await startBridgeProc(world, 'nofsync', { noFsync: true }) : null;
    if (fsyncOff) procs.push(fsyncOff);
    pf = await maybePostfix(world);
    pfx = await maybePostfix(world, true);
    const targets = [
      directTarget(world, token),
      bridgeTarget(world, fsyncOn, 'bridge'),
      ...(pf ? [postfixTarget(world, pf)] : []),
      ...(pfx ? [postfixTarget(world, pfx, 'postfix-xoauth2')] : []),
      ...(fsyncOff ? [bridgeTarget(world, fsyncOff, 'bridge-nofsync')] : []),
    ];
    // The no-fsync run only feeds the ratio of scenario 5: half as many sessions keeps the run short.
    const share = (name: string) => (name === 'bridge-nofsync' ? 0.5 : 1);
    const body = makeMessage(SMALL, FROM, TO, 'printer');
    const raw = new Map(
      targets.map((t) => [t.name, { total: [] as number[], greeting: [] as number[], t250: [] as number[], auths: 0 }]),
    );
    let expected = world.gmail.messages.length;
    // Warm-up (JIT, upstream pool and token, password cache): a printer's steady state.
    for (const t of targets) {
      for (let i = 0; i < 5; i++) await printerSession(t, body);
      expected += 5;
      await world.gmail.waitForMessages(expected, 30_000);
    }
    for (let r = 0; r < P.printerRounds; r++) {
      // Rotate the order each round so drift on a shared machine hits every target alike.
      const order = targets.map((_, i) => targets[(i + r) % targets.length]);
      for (const t of order) {
        const total = Math.round(P.printerN * share(t.name));
        const per = Math.ceil(total / P.printerRounds);
        const n = Math.max(0, Math.min(per, total - r * per));
        const s = raw.get(t.name)!;
        const auths0 = world.gmail.auths.length;
        for (let i = 0; i < n; i++) {
          const res = await printerSession(t, body);
          s.total.push(res.total);
          s.greeting.push(res.greeting);
          s.t250.push(res.t250);
        }
        expected += n;
        // Let the relay finish delivering before the next target runs (not timed), so every
        // upstream AUTH in this window belongs to this target.
        await world.gmail.waitForMessages(expected, 60_000);
        s.auths += world.gmail.auths.length - auths0;
      }
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const q = (xs: number[]) => ({ p50: quantile(xs, 0.5), p99: quantile(xs, 0.99) });
    const summary: Record<string, PrinterStats> = {};
    for (const [name, s] of raw) {
      summary[name] = {
        n: s.total.length,
        messagesPerSec: s.total.length / (sum(s.total) / 1000),
        messagesPerSecAfterGreeting: s.total.length / ((sum(s.total) - sum(s.greeting)) / 1000),
        sessionMs: q(s.total),
        greetingMs: q(s.greeting),
        timeTo250Ms: q(s.t250),
        upstreamAuths: s.auths,
      };
    }
    const d = summary.direct;
    const b = summary.bridge;
    const p = summary.postfix as PrinterStats | undefined;
    const px = summary['postfix-xoauth2'] as PrinterStats | undefined;
    // The fake Gmail (smtp-server) holds its 220 greeting 100 ms; the bridge does not (its
    // greetingDelay is 0) and neither does Postfix. So direct is compared without that wait:
    // its sessions with the connect -> 220 time taken out (which also drops the fake's real
    // greeting work, a fraction of a ms: this favours direct). Bridge and Postfix: whole sessions.
    const directNoHold = d.messagesPerSecAfterGreeting;
    const vsD = b.messagesPerSec / directNoHold;
    const vsP = p ? b.messagesPerSec / p.messagesPerSec : undefined;
    const vsPx = px ? b.messagesPerSec / px.messagesPerSec : undefined;
    const met = [vsD >= 0.9, vsP === undefined ? undefined : vsP >= 1.0, vsPx === undefined ? undefined : vsPx >= 1.0];
    results.printer = {
      ...summary,
      directWithoutGreetingHoldPerSec: directNoHold,
      ratioVsDirect: vsD,
      ratioVsDirectWithHold: b.messagesPerSec / d.messagesPerSec,
      ratioVsPostfix: vsP,
      ratioVsPostfixXoauth2: vsPx,
      targets: { vsDirectWithoutHold: 0.9, vsPostfix: 1.0, vsPostfixXoauth2: 1.0 },
      pass: met.every((m) => m !== false),
    };
    const ms = (s?: { p50: number; p99: number }) => (s ? `${f(s.p50, 2)} / ${f(s.p99, 2)}` : 'n/a');
    row(1, {
      scenario: `printer: new conn + EHLO + AUTH + 10 KB + QUIT, sequential, msg/s (N=${P.printerN}; direct without its 100 ms greeting hold)`,
      bridge: f(b.messagesPerSec),
      postfix: f(p?.messagesPerSec),
      postfixX: f(px?.messagesPerSec),
      direct: f(directNoHold),
      vsDirect: x(b.messagesPerSec, directNoHold),
      vsPostfix:
        x(b.messagesPerSec, p?.messagesPerSec) + (px ? ` (XOAUTH2 ${x(b.messagesPerSec, px.messagesPerSec)})` : ''),
      target: '>= 0.9x direct (no hold), >= 1.0x Postfix',
      met,
    });
    row(1.1, {
      scenario: 'printer: connect -> 220 greeting p50 ms',
      bridge: f(b.greetingMs.p50, 2),
      postfix: f(p?.greetingMs.p50, 2),
      postfixX: f(px?.greetingMs.p50, 2),
      direct: f(d.greetingMs.p50, 2),
      vsDirect: '',
      vsPostfix: '',
      target: '',
    });
    row(1.2, {
      scenario: 'printer: msg/s, every column without the greeting wait',
      bridge: f(b.messagesPerSecAfterGreeting),
      postfix: f(p?.messagesPerSecAfterGreeting),
      postfixX: f(px?.messagesPerSecAfterGreeting),
      direct: f(d.messagesPerSecAfterGreeting),
      vsDirect: x(b.messagesPerSecAfterGreeting, d.messagesPerSecAfterGreeting),
      vsPostfix: x(b.messagesPerSecAfterGreeting, p?.messagesPerSecAfterGreeting),
      target: '',
    });
    row(1.3, {
      scenario: 'printer: end of DATA -> 250 p50 / p99 ms',
      bridge: ms(b.timeTo250Ms),
      postfix: ms(p?.timeTo250Ms),
      postfixX: px ? ms(px.timeTo250Ms) : '',
      direct: ms(d.timeTo250Ms),
      vsDirect: x(b.timeTo250Ms.p50, d.timeTo250Ms.p50),
      vsPostfix: x(b.timeTo250Ms.p50, p?.timeTo250Ms.p50),
      target: '',
    });
    if (fsyncOff) {
      const o = summary['bridge-nofsync'];
      const cost = b.messagesPerSec / o.messagesPerSec;
      results.durability = {
        fsync: b,
        noFsync: o,
        throughputRatio: cost,
        throughputRatioAfterGreeting: b.messagesPerSecAfterGreeting / o.messagesPerSecAfterGreeting,
        timeTo250P50Ratio: b.timeTo250Ms.p50 / o.timeTo250Ms.p50,
        timeTo250P99Ratio: b.timeTo250Ms.p99 / o.timeTo250Ms.p99,
      };
      row(9, {
        scenario: 'durability: printer msg/s, bridge without fsync (direct column)',
        bridge: f(b.messagesPerSec),
        postfix: '',
        direct: f(o.messagesPerSec),
        vsDirect: x(b.messagesPerSec, o.messagesPerSec),
        vsPostfix: '',
        target: '',
      });
      row(9.1, {
        scenario: 'durability: end of DATA -> 250 p50 ms, without fsync (direct column)',
        bridge: f(b.timeTo250Ms.p50, 2),
        postfix: '',
        direct: f(o.timeTo250Ms.p50, 2),
        vsDirect: x(b.timeTo250Ms.p50, o.timeTo250Ms.p50),
        vsPostfix: '',
        target: '',
      });
    }
  } finally {
    await pf?.stop();
    await pfx?.stop();
    for (const pr of procs) await pr.stop();
    bodies.stop();
    await world.close();
  }
}

// ---------------------------------------------------------------- scenario 2 (+ 4a)

interface ClientsRun {
  acceptedMs: number;
  deliveredMs: number;
  t250: number[];
  auths: number;
  cpuSec: number;
  /** This process's CPU over the run: the clients and the fake Gmail receiving. */
  harnessCpuSec: number;
}

/**
 * CLIENTS connections, each authenticating once and sending its share of `n` messages back to
 * back (a pooled client: an app server, a system MTA). Timed until the fake Gmail has them all.
 */
async function clientsRun(
  world: FakeWorld,
  t: Target,
  n: number,
  body: Buffer,
  cpu: () => Promise<number>,
  clients = CLIENTS,
): Promise<ClientsRun> {
  const base = world.gmail.messages.length;
  const auths0 = world.gmail.auths.length;
  const cpu0 = await cpu();
  const own0 = process.cpuUsage();
  const t250: number[] = [];
  const t0 = now();
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const k = Math.floor(n / clients) + (i < n % clients ? 1 : 0);
      if (!k) return;
      const c = await SmtpClient.open(t.conn);
      await c.hello(t.auth);
      for (let j = 0; j < k; j++) t250.push(await c.send(FROM, TO, body));
      await c.quit();
    }),
  );
  const acceptedMs = now() - t0;
  await world.gmail.waitForMessages(base + n, 300_000);
  const deliveredMs = now() - t0;
  const own = process.cpuUsage(own0);
  return {
    acceptedMs,
    deliveredMs,
    t250,
    auths: world.gmail.auths.length - auths0,
    cpuSec: (await cpu()) - cpu0,
    harnessCpuSec: (own.user + own.system) / 1e6,
  };
}

async function concurrent(): Promise<void> {
  const world = await startFakeWorld();
  const bodies = releaseBodies(world);
  let bridge: BridgeProc | undefined;
  let pf: PostfixInstance | null = null;
  let pfx: PostfixInstance | null = null;
  try {
    const token = await fetchAccessToken(world);
    bridge = await startBridgeProc(world, 'concurrent', { noFsync: !!process.env.BENCH_DIAG_NOFSYNC });
    pf = await maybePostfix(world);
    pfx = await maybePostfix(world, true);
    const body = makeMessage(SMALL, FROM, TO, 'concurrent');
    const bpid = bridge.pid;
    const who = {
      direct: { t: directTarget(world, token), cpu: async () => NaN },
      bridge: { t: bridgeTarget(world, bridge, 'bridge'), cpu: async () => processCpuSeconds(bpid) },
      ...(pf ? { postfix: { t: postfixTarget(world, pf), cpu: () => pf!.cpuSeconds() } } : {}),
      ...(pfx
        ? { 'postfix-xoauth2': { t: postfixTarget(world, pfx, 'postfix-xoauth2'), cpu: () => pfx!.cpuSeconds() } }
        : {}),
    } as Record<'direct' | 'bridge' | 'postfix' | 'postfix-xoauth2', { t: Target; cpu: () => Promise<number> }>;
    const names = Object.keys(who) as Array<keyof typeof who>;
    type Acc = {
      n: number;
      acceptedMs: number;
      deliveredMs: number;
      auths: number;
      cpuSec: number;
      harnessCpuSec: number;
      t250: number[];
    };
    const acc = Object.fromEntries(
      names.map((k) => [
        k,
        { n: 0, acceptedMs: 0, deliveredMs: 0, auths: 0, cpuSec: 0, harnessCpuSec: 0, t250: [] } as Acc,
      ]),
    ) as Record<string, Acc>;
    // Warm every path (JIT, the bridge's upstream pool and token); not timed, its AUTHs are
    // reported apart: the measured runs show the steady state of a running relay.
    const warmAuths: Record<string, number> = {};
    for (const k of names) warmAuths[k] = (await clientsRun(world, who[k].t, 50, body, who[k].cpu)).auths;
    const half = Math.floor(P.concN / 2);
    const tokenReq0 = world.tokens.requests.length;
    // ABC CBA halves so drift on a shared machine cancels out.
    const order: Array<[keyof typeof who, number]> = [
      ...names.map((k) => [k, half] as [keyof typeof who, number]),
      ...[...names].reverse().map((k) => [k, P.concN - half] as [keyof typeof who, number]),
    ];
    for (const [k, n] of order) {
      const r = await clientsRun(world, who[k].t, n, body, who[k].cpu);
      const a = acc[k];
      a.n += n;
      a.acceptedMs += r.acceptedMs;
      a.deliveredMs += r.deliveredMs;
      a.auths += r.auths;
      a.cpuSec += r.cpuSec;
      a.harnessCpuSec += r.harnessCpuSec;
      a.t250.push(...r.t250);
    }
    const summary = Object.fromEntries(
      names.map((k) => {
        const a = acc[k];
        return [
          k,
          {
            messages: a.n,
            acceptedPerSec: a.n / (a.acceptedMs / 1000),
            deliveredPerSec: a.n / (a.deliveredMs / 1000),
            data250Ms: { p50: quantile(a.t250, 0.5), p99: quantile(a.t250, 0.99) },
            cpuSecPer1000: (a.cpuSec / a.n) * 1000,
            harnessCpuSecPer1000: (a.harnessCpuSec / a.n) * 1000,
            upstreamAuths: a.auths,
            upstreamAuthsWarmup: warmAuths[k],
            authsPer1000: (a.auths / a.n) * 1000,
          },
        ];
      }),
    ) as Record<
      string,
      {
        messages: number;
        acceptedPerSec: number;
        deliveredPerSec: number;
        data250Ms: { p50: number; p99: number };
        cpuSecPer1000: number;
        harnessCpuSecPer1000: number;
        upstreamAuths: number;
        upstreamAuthsWarmup: number;
        authsPer1000: number;
      }
    >;
    const b = summary.bridge;
    const d = summary.direct;
    const p = summary.postfix as (typeof summary)['bridge'] | undefined;
    const px = summary['postfix-xoauth2'] as (typeof summary)['bridge'] | undefined;
    const vsD = b.deliveredPerSec / d.deliveredPerSec;
    const vsP = p ? b.deliveredPerSec / p.deliveredPerSec : undefined;
    const vsPx = px ? b.deliveredPerSec / px.deliveredPerSec : undefined;
    const deliveredMet = [
      vsD >= 0.8,
      vsP === undefined ? undefined : vsP >= 1.5,
      vsPx === undefined ? undefined : vsPx >= 1.5,
    ];
    const latency = b.data250Ms.p50 / d.data250Ms.p50;
    const tokenRequests = world.tokens.requests.length - tokenReq0;
    // Clients, fake Gmail and relay share this machine's cores, so CPU caps delivered/s at
    // cores / (harness + relay CPU per message). Turned around: the relay CPU per message that
    // the >= 0.8x direct target leaves, to set beside what the bare client and fake cost.
    const cores = cpus().length;
    const ceiling = (k: 'bridge' | 'postfix') => {
      const s = summary[k];
      return s ? cores / ((s.harnessCpuSecPer1000 + s.cpuSecPer1000) / 1000) : undefined;
    };
    const bridgeCeiling = ceiling('bridge')!;
    const budgetPer1000 = (cores / (0.8 * d.deliveredPerSec)) * 1000 - b.harnessCpuSecPer1000;
    results.concurrent = {
      clients: CLIENTS,
      messagesPerTarget: P.concN,
      messageBytes: body.length,
      client: `${CLIENTS} raw SMTP connections, one AUTH each, messages back to back`,
      ...summary,
      deliveredRatioVsDirect: vsD,
      deliveredRatioVsPostfix: vsP,
      deliveredRatioVsPostfixXoauth2: vsPx,
      data250P50RatioVsDirect: latency,
      targets: {
        deliveredVsDirect: 0.8,
        deliveredVsPostfix: 1.5,
        data250P50VsDirect: 2,
        cpuSecPer1000: 1.5,
        authsPer1000: 10,
      },
      tokenRequestsDuringRun: tokenRequests,
      cpuCeiling: {
        cores,
        bridgePerSec: bridgeCeiling,
        postfixPerSec: ceiling('postfix'),
        relayCpuSecPer1000For08xDirect: budgetPer1000,
      },
    };
    const scen = `${CLIENTS} clients, ${P.concN} x 10 KB in all`;
    row(2, {
      scenario: `${scen}: delivered/s end to end`,
      bridge: f(b.deliveredPerSec),
      postfix: f(p?.deliveredPerSec),
      postfixX: f(px?.deliveredPerSec),
      direct: f(d.deliveredPerSec),
      vsDirect: x(b.deliveredPerSec, d.deliveredPerSec),
      vsPostfix:
        x(b.deliveredPerSec, p?.deliveredPerSec) + (px ? ` (XOAUTH2 ${x(b.deliveredPerSec, px.deliveredPerSec)})` : ''),
      target: '>= 0.8x direct, >= 1.5x Postfix',
      met: deliveredMet,
    });
    row(2.1, {
      scenario: `${scen}: accepted/s`,
      bridge: f(b.acceptedPerSec),
      postfix: f(p?.acceptedPerSec),
      postfixX: f(px?.acceptedPerSec),
      direct: f(d.acceptedPerSec),
      vsDirect: x(b.acceptedPerSec, d.acceptedPerSec),
      vsPostfix: x(b.acceptedPerSec, p?.acceptedPerSec),
      // Issue 28 target 3: delivery keeps up with acceptance.
      target: 'delivered >= 0.9x accepted',
      met: [b.deliveredPerSec >= 0.9 * b.acceptedPerSec],
    });
    row(3, {
      scenario: `${scen}: end of DATA -> 250 p50 ms`,
      bridge: f(b.data250Ms.p50, 2),
      postfix: f(p?.data250Ms.p50, 2),
      postfixX: f(px?.data250Ms.p50, 2),
      direct: f(d.data250Ms.p50, 2),
      vsDirect: x(b.data250Ms.p50, d.data250Ms.p50),
      vsPostfix: x(b.data250Ms.p50, p?.data250Ms.p50),
      target: '<= 2x direct',
      met: [latency <= 2],
    });
    row(4, {
      scenario: `${scen}: CPU seconds per 1,000 messages`,
      bridge: f(b.cpuSecPer1000, 2),
      postfix: f(p?.cpuSecPer1000, 2),
      postfixX: f(px?.cpuSecPer1000, 2),
      direct: '-',
      vsDirect: '',
      vsPostfix: x(b.cpuSecPer1000, p?.cpuSecPer1000),
      // Issue 28 target 3: 1.5 ms of the daemon's CPU per message.
      target: '<= 1.5 (1.5 ms/msg)',
      met: [b.cpuSecPer1000 <= 1.5],
    });
    row(4.1, {
      scenario: `${scen}: harness CPU s per 1,000 (clients + fake Gmail)`,
      bridge: f(b.harnessCpuSecPer1000, 2),
      postfix: f(p?.harnessCpuSecPer1000, 2),
      direct: f(d.harnessCpuSecPer1000, 2),
      vsDirect: '',
      vsPostfix: '',
      target: '',
    });
    row(4.2, {
      scenario: `${scen}: CPU ceiling, ${cores} cores / (harness + relay CPU), msg/s`,
      bridge: f(bridgeCeiling),
      postfix: f(ceiling('postfix')),
      direct: f(d.deliveredPerSec),
      vsDirect: x(bridgeCeiling, d.deliveredPerSec),
      vsPostfix: x(bridgeCeiling, ceiling('postfix')),
      target: '',
    });
    row(4.3, {
      scenario: `${scen}: relay CPU s per 1,000 that 0.8x direct leaves`,
      bridge: f(budgetPer1000, 2),
      postfix: '',
      direct: f(d.harnessCpuSecPer1000, 2),
      vsDirect: x(budgetPer1000, d.harnessCpuSecPer1000),
      vsPostfix: '',
      target: '',
    });
    row(5, {
      scenario: `${scen}: upstream AUTHs per 1,000 messages`,
      bridge: f(b.authsPer1000),
      postfix: f(p?.authsPer1000),
      postfixX: f(px?.authsPer1000),
      direct: f(d.authsPer1000),
      vsDirect: '',
      vsPostfix: '',
      target: '<= 10',
      met: [b.authsPer1000 <= 10],
    });
    row(5.1, {
      scenario: `${scen}: token requests during the run (1-h tokens)`,
      bridge: String(tokenRequests),
      postfix: '-',
      direct: '-',
      vsDirect: '',
      vsPostfix: '',
      target: '0',
      met: [tokenRequests === 0],
    });
  } finally {
    await pf?.stop();
    await pfx?.stop();
    await bridge?.stop();
    bodies.stop();
    await world.close();
  }
}

// ---------------------------------------------------------------- scenario 8: growth curve

const GROWTH_CLIENTS = [1, 4, 16, 64];
/** Message size -> messages per cell (at least one per client): a fixed count keeps the run bounded. */
const GROWTH_SIZES: Array<{ label: string; bytes: number; count: number }> = QUICK
  ? [
      { label: '1 KB', bytes: 1024, count: 128 },
      { label: '100 KB', bytes: 100 * 1024, count: 64 },
      { label: '10 MB', bytes: 10 * 2 ** 20, count: 8 },
    ]
  : [
      { label: '1 KB', bytes: 1024, count: 1000 },
      { label: '100 KB', bytes: 100 * 1024, count: 400 },
      { label: '10 MB', bytes: 10 * 2 ** 20, count: 64 },
    ];

/**
 * Delivered/s and end of DATA -> 250 p50/p99 at 1, 4, 16 and 64 concurrent clients (each one
 * connection, one AUTH, its share of the cell's messages back to back) for 1 KB, 100 KB and
 * 10 MB messages: how the bridge grows with load, to size a machine. Bridge only, one daemon.
 */
async function growth(): Promise<void> {
  const world = await startFakeWorld();
  const bodies = releaseBodies(world);
  let bridge: BridgeProc | undefined;
  try {
    bridge = await startBridgeProc(world, 'growth', { listener: { maxConnectionsPerIp: 128, maxClients: 200 } });
    const t = bridgeTarget(world, bridge, 'bridge');
    const bpid = bridge.pid;
    await clientsRun(world, t, 20, makeMessage(SMALL, FROM, TO, 'warm'), async () => 0, 4);
    const cells: Array<Record<string, unknown>> = [];
    let i = 0;
    for (const size of GROWTH_SIZES) {
      const body = makeMessage(size.bytes, FROM, TO, 'growth');
      for (const clients of GROWTH_CLIENTS) {
        const n = Math.max(size.count, clients);
        const r = await clientsRun(world, t, n, body, async () => processCpuSeconds(bpid), clients);
        const cell = {
          clients,
          messageBytes: body.length,
          messages: n,
          acceptedPerSec: n / (r.acceptedMs / 1000),
          deliveredPerSec: n / (r.deliveredMs / 1000),
          deliveredMBps: mb(body.length * n) / (r.deliveredMs / 1000),
          data250Ms: { p50: quantile(r.t250, 0.5), p99: quantile(r.t250, 0.99) },
          cpuMsPerMessage: (r.cpuSec / n) * 1000,
        };
        cells.push(cell);
        row(12 + i++ / 100, {
          scenario: `growth: ${size.label} x ${n}, ${clients} client${clients > 1 ? 's' : ''}: delivered/s (accepted/s), 250 p50 / p99 ms`,
          bridge: `${f(cell.deliveredPerSec)} (${f(cell.acceptedPerSec)}), ${f(cell.data250Ms.p50, 1)} / ${f(cell.data250Ms.p99, 1)}`,
          postfix: '-',
          direct: '-',
          vsDirect: '',
          vsPostfix: '',
          // Issue 28 target 3 names 16 and 64 clients; fewer clients are for sizing only.
          ...(clients >= 16
            ? {
                target: 'delivered >= 0.9x accepted',
                met: [cell.deliveredPerSec >= 0.9 * cell.acceptedPerSec],
              }
            : { target: 'report' }),
        });
      }
    }
    results.growth = { sizes: GROWTH_SIZES, clients: GROWTH_CLIENTS, cells };
  } finally {
    await bridge?.stop();
    bodies.stop();
    await world.close();
  }
}

// ---------------------------------------------------------------- scenario 3

/** Baseline: the same bytes, same concurrency, through plain TLS sockets into a counting sink. */
async function tlsCopy(world: FakeWorld, n: number, payload: Buffer): Promise<number> {
  const server = tls.createServer({ key: world.pki.key, cert: world.pki.cert, minVersion: 'TLSv1.2' }, (s) => {
    let got = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= payload.length) s.end('250 ok\r\n');
    });
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const t0 = now();
  await Promise.all(
    Array.from({ length: n }, async () => {
      const s = tls.connect({ port, host: '127.0.0.1', ca: world.pki.caCert, servername: 'localhost' });
      await once(s, 'secureConnect');
      const done = once(s, 'data');
      for (let i = 0; i < payload.length; i += 256 * 1024) {
        if (!s.write(payload.subarray(i, i + 256 * 1024))) await once(s, 'drain');
      }
      await done;
      s.destroy();
    }),
  );
  const ms = now() - t0;
  server.close();
  return ms;
}

/** n concurrent sessions of one large message each; peak RSS sampled every 50 ms. */
async function largeRun(
  world: FakeWorld,
  t: Target,
  n: number,
  msg: Buffer,
  rss: () => Promise<number>,
): Promise<{ deliveredMs: number; acceptedMs: number; peakRss: number }> {
  let peakRss = await rss();
  const poll = setInterval(() => {
    rss().then(
      (r) => {
        peakRss = Math.max(peakRss, r);
      },
      () => {},
    );
  }, 50);
  const base = world.gmail.messages.length;
  const t0 = now();
  let acceptedMs = 0;
  try {
    await Promise.all(
      Array.from({ length: n }, async () => {
        const c = await SmtpClient.open(t.conn);
        await c.hello(t.auth);
        await c.send(FROM, `big@example.org`, msg);
        acceptedMs = Math.max(acceptedMs, now() - t0);
        await c.quit();
      }),
    );
    await world.gmail.waitForMessages(base + n, 600_000);
  } finally {
    clearInterval(poll);
  }
  return { deliveredMs: now() - t0, acceptedMs, peakRss: Math.max(peakRss, await rss()) };
}

async function large(): Promise<void> {
  const world = await startFakeWorld();
  const bodies = releaseBodies(world);
  let bridge: BridgeProc | undefined;
  let pf: PostfixInstance | null = null;
  try {
    bridge = await startBridgeProc(world, 'large');
    const t = bridgeTarget(world, bridge, 'bridge');
    // Warm the whole path with one small message first, like a running daemon.
    await printerSession(t, makeMessage(SMALL, FROM, TO, 'warm'));
    await world.gmail.waitForMessages(1, 30_000);
    const idle = await procStatus(bridge.pid);
    const idleHeap = await bridge.memory();
    // Postfix runs beside the bridge, its runs between the bridge's (bridge, Postfix, Postfix,
    // bridge; direct before and after): on a shared machine the load drifts within a minute,
    // and one run of each, a minute apart, gave Postfix ratios from 0.5x to 2.0x.
    let pfIdleRss: number | undefined;
    pf = await maybePostfix(world);
    const pt = pf ? postfixTarget(world, pf) : undefined;
    if (pf && pt) {
      const before = world.gmail.messages.length;
      await printerSession(pt, makeMessage(SMALL, FROM, TO, 'warm'));
      await world.gmail.waitForMessages(before + 1, 30_000);
      pfIdleRss = await pf.rss();
    }
    const pid = bridge.pid;
    /** n concurrent messages of `msg`, interleaved: direct, bridge, Postfix, Postfix, bridge, direct. */
    const measure = async (n: number, msg: Buffer) => {
      const br = { deliveredMs: 0, acceptedMs: 0, peakRss: 0 };
      const pfr = pf && pt ? { deliveredMs: 0, peakRss: 0 } : undefined;
      let cpuSec = 0;
      const bridgeRun = async () => {
        const cpu0 = processCpuSeconds(pid);
        const r = await largeRun(world, t, n, msg, async () => (await procStatus(pid)).rss);
        cpuSec += processCpuSeconds(pid) - cpu0;
        br.deliveredMs += r.deliveredMs;
        br.acceptedMs += r.acceptedMs;
        br.peakRss = Math.max(br.peakRss, r.peakRss);
      };
      const postfixRun = async () => {
        if (!pf || !pt || !pfr) return;
        const r = await largeRun(world, pt, n, msg, () => pf!.rss());
        pfr.deliveredMs += r.deliveredMs;
        pfr.peakRss = Math.max(pfr.peakRss, r.peakRss);
      };
      let baselineMs = await tlsCopy(world, n, msg);
      await bridgeRun();
      await postfixRun();
      await postfixRun();
      await bridgeRun();
      baselineMs += await tlsCopy(world, n, msg);
      // Two runs of each: MB/s over both, CPU per run.
      const totalMB = mb(msg.length * n) * 2;
      return {
        n,
        msgBytes: msg.length,
        br,
        pfr,
        cpuSec: cpuSec / 2,
        bridgeMBs: totalMB / (br.deliveredMs / 1000),
        acceptMBs: totalMB / (br.acceptedMs / 1000),
        baseMBs: totalMB / (baselineMs / 1000),
        pfMBs: pfr ? totalMB / (pfr.deliveredMs / 1000) : undefined,
      };
    };
    // 10 x 10 MB first: the 20 x 20 MB run is the one the peak and the return figures are about.
    const ten = await measure(10, makeMessage(10 * 1024 * 1024, FROM, TO, 'large10'));
    const big = await measure(P.largeN, makeMessage(LARGE, FROM, TO, 'large'));
    const { n, br } = big;
    const pfr = big.pfr && pfIdleRss !== undefined ? { ...big.pfr, idleRss: pfIdleRss } : undefined;
    const end = await procStatus(pid);
    const peak = Math.max(end.hwm, br.peakRss);
    // Memory that returns: the daemon idles 60 s after the burst, then its RSS is compared
    // with the idle figure from before it (issue 28 item 2).
    await sleep(RETURN_WAIT_MS);
    const after = await procStatus(pid);
    const afterHeap = await bridge.memory();
    await bridge.stop();
    const { cpuSec, bridgeMBs, baseMBs, pfMBs } = big;
    const sizesOk = bodies.bytes >= (ten.msgBytes * ten.n + big.msgBytes * n) * 2 * (pfr ? 2 : 1);
    results.large = {
      messages: n,
      messageMB: mb(big.msgBytes),
      bridgeIdleRssMB: mb(idle.rss),
      bridgeIdleRssAnonFileMB: [mb(idle.anon), mb(idle.file)],
      bridgeIdleHeapMB: {
        heapTotal: mb(idleHeap.heapTotal),
        heapUsed: mb(idleHeap.heapUsed),
        external: mb(idleHeap.external),
        arrayBuffers: mb(idleHeap.arrayBuffers),
      },
      bridgeRssAfterIdleSec: RETURN_WAIT_MS / 1000,
      bridgeRssAfterMB: mb(after.rss),
      bridgeRssAfterAnonFileMB: [mb(after.anon), mb(after.file)],
      bridgeHeapAfterMB: {
        heapTotal: mb(afterHeap.heapTotal),
        heapUsed: mb(afterHeap.heapUsed),
        external: mb(afterHeap.external),
        arrayBuffers: mb(afterHeap.arrayBuffers),
      },
      targetReturnMB: 30,
      targetIdleRssMB: 70,
      bridgePeakRssMB: mb(peak),
      postfixIdleRssMBAllProcesses: pfr ? mb(pfr.idleRss) : undefined,
      postfixPeakRssMBAllProcesses: pfr ? mb(pfr.peakRss) : undefined,
      targetRssMB: 150,
      pass: mb(peak) <= 150,
      bridgeMBps: bridgeMBs,
      bridgeCpuSec: cpuSec,
      bridgeAcceptMBps: big.acceptMBs,
      postfixMBps: pfMBs,
      baselineTlsCopyMBps: baseMBs,
      throughputRatio: bridgeMBs / baseMBs,
      tenByTenMB: {
        bridgeMBps: ten.bridgeMBs,
        bridgeCpuSec: ten.cpuSec,
        postfixMBps: ten.pfMBs,
        baselineTlsCopyMBps: ten.baseMBs,
      },
      targetVsPostfix: 1.2,
      targetVsDirect: 0.5,
      deliveredBytesOk: sizesOk,
    };
    row(6, {
      scenario: `${n} x 20 MB concurrent: peak RSS MB (Postfix: PSS sum; idle: bridge ${f(mb(idle.rss))}${pfr ? `, Postfix ${f(mb(pfr.idleRss))}` : ''})`,
      bridge: f(mb(peak)),
      postfix: pfr ? f(mb(pfr.peakRss)) : 'n/a',
      direct: '-',
      vsDirect: '',
      vsPostfix: pfr ? x(peak, pfr.peakRss) : '',
      target: '<= 150',
      met: [mb(peak) <= 150],
    });
    const heap = (m: DaemonMemory) => `heap ${f(mb(m.heapUsed))}/${f(mb(m.heapTotal))}, external ${f(mb(m.external))}`;
    row(6.2, {
      scenario: `idle RSS MB after one small message (${heap(idleHeap)} MB)`,
      bridge: f(mb(idle.rss)),
      postfix: pfr ? f(mb(pfr.idleRss)) : 'n/a',
      direct: '-',
      vsDirect: '',
      vsPostfix: '',
      target: '<= 70',
      met: [mb(idle.rss) <= 70],
    });
    row(6.3, {
      scenario: `RSS MB ${RETURN_WAIT_MS / 1000} s after the ${n} x 20 MB run (${heap(afterHeap)} MB)`,
      bridge: `${f(mb(after.rss))} (idle +${f(mb(after.rss - idle.rss))})`,
      postfix: '-',
      direct: '-',
      vsDirect: '',
      vsPostfix: '',
      target: '<= idle + 30',
      met: [after.rss - idle.rss <= 30 * 2 ** 20],
    });
    // Issue 28 target 1: >= 1.2x Postfix and >= 0.5x direct, for both sizes.
    for (const [k, m] of [
      [6.1, big],
      [6.05, ten],
    ] as const)
      row(k, {
        scenario: `${m.n} x ${mb(m.msgBytes).toFixed(0)} MB: MB/s end to end, 2 runs each (direct = plain TLS copy; bridge CPU ${f(m.cpuSec, 2)} s per run)`,
        bridge: f(m.bridgeMBs),
        postfix: f(m.pfMBs),
        direct: f(m.baseMBs),
        vsDirect: x(m.bridgeMBs, m.baseMBs),
        vsPostfix: x(m.bridgeMBs, m.pfMBs),
        target: '>= 1.2x Postfix, >= 0.5x direct',
        met: [m.pfMBs === undefined ? undefined : m.bridgeMBs >= 1.2 * m.pfMBs, m.bridgeMBs >= 0.5 * m.baseMBs],
      });
  } finally {
    await pf?.stop();
    await bridge?.stop();
    bodies.stop();
    await world.close();
  }
}

// ---------------------------------------------------------------- scenario 6: queue drain

/** Time to drain 1,000 vs 10,000 queued messages (in this process: the scheduler, not SMTP). */
async function drainScaling(): Promise<void> {
  const [small, big] = await drain([1000, 10_000]);
  const ratio = big.perMessageMs / small.perMessageMs;
  results.drain = { small, big, perMessageRatio: ratio };
  row(20, {
    scenario: 'drain: 1,000 / 10,000 queued messages, ms (per-message ratio)',
    bridge: `${f(small.ms, 0)} / ${f(big.ms, 0)} (${f(ratio, 2)}x)`,
    postfix: '-',
    direct: '-',
    vsDirect: '',
    vsPostfix: '',
    target: '<= 1.5x per message (linear)',
    met: [ratio <= 1.5],
  });
}

// ---------------------------------------------------------------- scenario 4b: token requests

/**
 * Token requests per account-hour, measured in compressed time: the fake endpoint issues
 * tokens living T s instead of Google's 3,600 s, and the bridge's refresh schedule is scaled
 * by the same factor (refreshAhead 10 min -> T/6 s, cron every 5 min -> every T/12 s). Under
 * steady load we measure the mean interval between refresh_token grants; requests per token
 * lifetime = T / interval, which is requests per hour with Google's one-hour tokens.
 */
async function tokenRate(): Promise<void> {
  const T = P.tokenTtlSec;
  const world = await startFakeWorld({ accessTokenTtlSec: T });
  const bodies = releaseBodies(world);
  let bridge: BridgeProc | undefined;
  try {
    const cronEvery = Math.max(1, Math.round(T / 12));
    const tokens = { refreshCron: `*/${cronEvery} * * * * *`, refreshAhead: `${Math.round((T / 6) * 1000)}ms` };
    bridge = await startBridgeProc(world, 'tokens', { tokens });
    const t = nodemailer.createTransport({
      pool: true,
      maxConnections: 4,
      maxMessages: Infinity,
      host: '127.0.0.1',
      port: bridge.port,
      secure: false,
      ignoreTLS: true,
      auth: { user: world.user.username, pass: world.user.password },
      authMethod: 'PLAIN',
    } as never);
    const raw = makeMessage(SMALL, FROM, TO, 'tokens');
    const base = world.gmail.messages.length;
    const auths0 = world.gmail.auths.length;
    const t0 = Date.now();
    let sent = 0;
    // A steady moderate load (about 4 messages every 50 ms), not a flood: the rate of token
    // requests must not depend on traffic, only on token lifetime.
    while (Date.now() - t0 < P.tokenLoadSec * 1000) {
      await Promise.all(Array.from({ length: 4 }, () => t.sendMail({ envelope: { from: FROM, to: [TO] }, raw })));
      sent += 4;
      await sleep(50);
    }
    t.close();
    await world.gmail.waitForMessages(base + sent, 120_000);
    const t1 = Date.now();
    const grants = world.tokens.requests.filter((r) => r.grantType === 'refresh_token').map((r) => r.at);
    const ok = world.tokens.requests.filter((r) => r.grantType === 'refresh_token' && r.ok).length;
    const gaps = grants.slice(1).map((x, i) => x - grants[i]);
    const meanGapSec = gaps.length ? gaps.reduce((a, b) => a + b, 0) / gaps.length / 1000 : NaN;
    const windowSec = (t1 - t0) / 1000;
    const inWindow = grants.filter((x) => x >= t0 && x <= t1).length;
    const perLifetimeGap = T / meanGapSec;
    const perLifetimeCount = inWindow / (windowSec / T);
    const perHour = gaps.length ? perLifetimeGap : perLifetimeCount;
    const failedAuths = world.gmail.auths.slice(auths0).filter((a) => !a.ok).length;
    // With refreshAhead = 1/6 of the lifetime and a cron every 1/12, the earliest refresh is at
    // 5/6 to 11/12 of the lifetime: 1.09-1.2 per lifetime is "once per token", the design floor.
    const pass = perHour <= 1.25 && failedAuths === 0;
    results.tokens = {
      compressedTokenLifetimeSec: T,
      scaledSchedule: tokens,
      loadSec: windowSec,
      messages: sent,
      refreshGrants: grants.length,
      refreshGrantsOk: ok,
      refreshGrantsInLoadWindow: inWindow,
      meanIntervalSec: meanGapSec,
      requestsPerTokenLifetime: perHour,
      requestsPerAccountHourAtGoogleTtl: perHour,
      estimateByCount: perLifetimeCount,
      failedUpstreamAuths: failedAuths,
      upstreamAuthsPer1000: ((world.gmail.auths.length - auths0) / sent) * 1000,
      target: '1 per token lifetime (<= 1.25 allowing the 10-min refresh-ahead)',
      pass,
    };
    row(8, {
      scenario: `token requests per account-hour (compressed: T=${T}s x${(windowSec / T).toFixed(1)})`,
      bridge: f(perHour, 2),
      postfix: '-',
      direct: '-',
      vsDirect: '',
      vsPostfix: '',
      target: '<= 1.25',
      met: [pass],
    });
    if (failedAuths)
      row(8.1, {
        scenario: 'upstream AUTHs refused (stale token)',
        bridge: String(failedAuths),
        postfix: '-',
        direct: '-',
        vsDirect: '',
        vsPostfix: '',
        target: '0',
        met: [false],
      });
  } finally {
    await bridge?.stop();
    bodies.stop();
    await world.close();
  }
}

// ---------------------------------------------------------------- main

function printTable(): void {
  const head: Row = {
    scenario: 'scenario',
    bridge: 'bridge',
    postfix: 'Postfix',
    postfixX: 'Postfix XOAUTH2',
    direct: 'direct',
    vsDirect: 'ratio vs direct',
    vsPostfix: 'ratio vs Postfix',
    target: 'target',
    met: 'met?',
  };
  // The XOAUTH2 column only when its plugin was given (the notes say how).
  const keys = (Object.keys(head) as (keyof Row)[]).filter(
    (k) => k !== 'postfixX' || (SASL_XOAUTH2 && !postfixMissing),
  );
  // Rows are added as scenarios finish; show them in table order.
  const sorted = [...rows].sort((a, b) => a.order - b.order);
  const w = keys.map((k) => Math.max(...[head, ...sorted].map((r) => r[k].length)));
  const line = (r: Row) => keys.map((k, i) => r[k].padEnd(w[i])).join(' | ');
  console.log(line(head));
  console.log(w.map((n) => '-'.repeat(n)).join('-|-'));
  for (const r of sorted) console.log(line(r));
}

async function main(): Promise<void> {
  const m = machine();
  console.log(`xoauth2-bridge bench${QUICK ? ' (--quick)' : ''}`);
  console.log(
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memGB} GB, node ${m.node}, ${m.os}; tmpdir ${m.tmpdir} on ${m.tmpdirFs}; load ${(m.loadavgAtStart as number[]).join(' ')}`,
  );
  console.log(
    `bridge: upstream maxConnections ${BRIDGE.upstreamMaxConnections}, maxMessages ${BRIDGE.upstreamMaxMessages}, queue.concurrency ${BRIDGE.queueConcurrency}, log warn; client pool ${CLIENTS} connections`,
  );
  await prepareDaemon();
  const unitEnv =
    Object.entries(UNIT_ENV)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ') || 'none (BENCH_NO_UNIT_ENV=1)';
  console.log(`daemon: ${daemonMode}; environment from the systemd unit: ${unitEnv}\n`);
  const t0 = now();
  const scenarios: Array<[number, string, () => Promise<void>]> = [
    [1, 'printer + durability', printerAndDurability],
    [2, 'concurrent', concurrent],
    [3, 'large', large],
    [4, 'token rate', tokenRate],
    [6, 'drain', drainScaling],
    [7, 'kdf flood', kdfFlood],
    [8, 'growth curve', growth],
  ];
  for (const [n, name, fn] of scenarios) {
    if (!want(n) && !(n === 1 && want(5))) continue;
    const s0 = now();
    const logsBefore = started.length;
    process.stdout.write(`running ${n} ${name} ... `);
    try {
      await fn();
      console.log(`${((now() - s0) / 1000).toFixed(1)} s`);
    } catch (e) {
      const msg = (e as Error).stack ?? String(e);
      errors[name] = msg;
      console.log(`FAILED\n${msg}`);
      for (const b of started.slice(logsBefore)) {
        if (b.stderr.length) console.log(`bridge ${b.name} log (last 20 lines):\n${b.stderr.slice(-20).join('\n')}`);
      }
      row(n * 10, {
        scenario: `${name}: FAILED: ${(e as Error).message.split('\n')[0].slice(0, 60)}`,
        bridge: '',
        postfix: '',
        direct: '',
        vsDirect: '',
        vsPostfix: '',
        target: '',
        met: [false],
      });
    }
  }
  console.log('');
  printTable();
  const total = (now() - t0) / 1000;
  console.log(
    [
      '',
      'notes:',
      '- columns: bridge = this daemon; Postfix = a private Debian Postfix (' +
        (postfixVersion || 'not run') +
        ') on loopback relaying to the same',
      '  fake Gmail over verified implicit TLS with SASL PLAIN (a fixed app password), NOT XOAUTH2 (Postfix needs a',
      '  SASL XOAUTH2 plugin for that; PLAIN is cheaper, so this favours Postfix); clients AUTH PLAIN to both;',
      '  direct = the same client talking XOAUTH2/TLS to the fake Gmail itself (no relay).',
      ...(postfixMissing ? [`  Postfix was not run: ${postfixMissing}.`] : []),
      ...(SASL_XOAUTH2 && !postfixMissing
        ? [
            `  Postfix XOAUTH2 = a second private Postfix with upstream AUTH XOAUTH2 through sasl-xoauth2 (${SASL_XOAUTH2}), a fresh token.`,
          ]
        : [
            "  Postfix XOAUTH2 column skipped: set XOAUTH2_BRIDGE_BENCH_SASL_XOAUTH2 to sasl-xoauth2's plugin (github.com/tarickb/sasl-xoauth2,",
            '  e.g. /usr/lib/x86_64-linux-gnu/sasl2/libsasl-xoauth2.so, with /etc/sasl-xoauth2.conf; not packaged in Debian 12).',
          ]),
      '- printer: the fake Gmail (smtp-server) holds every 220 greeting 100 ms (early-talker check); the bridge (greetingDelay 0)',
      '  and Postfix do not. Row 1 compares with direct WITHOUT that wait (its connect -> 220 time taken out of each',
      '  session); "without the greeting wait" takes the greeting out of every column.',
      `- ${CLIENTS} clients: ${CLIENTS} raw SMTP connections, one AUTH each, messages back to back, runs interleaved`,
      '  (direct, bridge, Postfix, Postfix, bridge, direct); delivered/s is timed until the fake Gmail has every message.',
      '  CPU: bridge = its process (/proc/PID/stat utime+stime); Postfix = master + every child, exited ones included.',
      '  AUTHs per 1,000 leave out the warm-up (results.json has it); the bridge reuses pooled upstream connections',
      '  (maxMessages 100 puts the floor at 10), Postfix opens one per message. CPU and AUTHs: the measured runs only.',
      '  Harness CPU = this process (clients, fake Gmail) over each run. Clients, fake and relay share the cores, so CPU',
      '  caps delivered/s at cores / (harness + relay CPU per message): the "CPU ceiling" row. The row after it is the',
      '  relay CPU per message that ">= 0.8x direct" leaves (cores / (0.8 x direct) - harness), beside what the bare',
      '  client and fake Gmail spend together in the direct run: a relay receives and sends every message, as they do.',
      '- 10 and 20 MB: Postfix memory is the PSS summed over its processes (RSS would count shared libraries once per',
      '  process); direct = the same bytes through plain TLS sockets into a counting sink. Runs interleaved: direct,',
      '  bridge, Postfix, Postfix, bridge, direct; MB/s over both runs of each; 10 x 10 MB runs first, so the peak RSS',
      '  row covers both sizes.',
      `- memory: idle = the daemon's RSS after one small message; the bridge then idles ${RETURN_WAIT_MS / 1000} s after the 20 MB run and its RSS`,
      '  must be back within 30 MB of idle. Heap figures are process.memoryUsage() inside the daemon (bench/serve.ts, SIGUSR2).',
      '  The daemon runs bench/serve.ts, not bin/xoauth2-bridge.js: BENCH_NO_UNIT_ENV=1 measures it with no tuning at all.',
      '- token rate in compressed time: tokens live T s, the refresh schedule is scaled by T/3600 (refreshAhead T/6,',
      '  cron every T/12 s); T / (mean interval between refresh grants) = requests per hour with 1-hour tokens.',
      '  With a 10-minute refresh-ahead and a 5-minute cron, one refresh per token is 1.09-1.2 per hour.',
      `- growth: one bridge; at 1, 4, 16 and 64 clients (one connection and AUTH each, messages back to back) a fixed`,
      `  count per cell (${GROWTH_SIZES.map((g) => `${g.label}: ${g.count}`).join(', ')}; at least one per client); delivered/s is timed`,
      '  until the fake Gmail has every message; accepted/s until the last 250. Bridge only: no baselines in these rows.',
      '- drain: N messages spooled (fsync off), then one worker drains them through an upstream that accepts at once:',
      '     the cost of picking due messages (a due-time heap); the per-message time should not grow with N.',
      `- the daemon ran as ${daemonMode}; fake Gmail, token endpoint and clients run in this process.`,
    ].join('\n'),
  );
  console.log(`\ntotal ${total.toFixed(1)} s; results in bench/results.json`);
  const out = {
    generatedAt: new Date().toISOString(),
    quick: QUICK,
    machine: { ...m, loadavgAtEnd: loadavg().map((x) => +x.toFixed(2)) },
    params: { ...P, smallBytes: SMALL, largeBytes: LARGE, clients: CLIENTS },
    bridgeConfig: BRIDGE,
    daemon: daemonMode,
    daemonUnitEnvironment: UNIT_ENV,
    postfix: postfixVersion
      ? { version: postfixVersion, upstreamAuth: 'SASL PLAIN over verified implicit TLS (not XOAUTH2)' }
      : { skipped: postfixMissing },
    postfixXoauth2:
      SASL_XOAUTH2 && !postfixMissing
        ? { plugin: SASL_XOAUTH2 }
        : { skipped: postfixMissing ?? 'XOAUTH2_BRIDGE_BENCH_SASL_XOAUTH2 not set' },
    results,
    table: rows,
    errors,
    totalSec: total,
  };
  writeFileSync(join(ROOT, 'bench', 'results.json'), JSON.stringify(out, null, 2) + '\n');
}

await main();
