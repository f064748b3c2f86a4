// Starts a bridge in front of a fake world, in-process or as a real `serve` child process,
// and captures its log lines so tests can assert on them and scan them for secrets.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import nodemailer from 'nodemailer';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { Bridge } from '../../src/daemon/bridge.js';
import { bridgeConfig, startFakeWorld, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The command line after `node` that runs the CLI. Under `npm test` (test/run.mjs) it is the
// compiled CLI, built once per run the way it ships in the npm package (a spawn costs a
// third of a tsx one); a test file run alone gets the sources through tsx's loader. Node
// itself with the loader, not tsx's CLI: that one runs the program in a second process and
// does not pass SIGHUP/SIGKILL on, and /proc/PID would measure the wrapper.
export const CLI = process.env.XOAUTH2_BRIDGE_TEST_CLI
  ? [process.env.XOAUTH2_BRIDGE_TEST_CLI]
  : [
      '--import',
      pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href,
      join(ROOT, 'src', 'cli', 'main.ts'),
    ];

export interface RunningBridge {
  bridge: Bridge;
  port: number;
  configFile: string;
  logs: string[];
  stop(): Promise<void>;
}

export async function startBridge(
  world: FakeWorld,
  overrides: Record<string, unknown> = {},
  opts: { importToken?: boolean; http?: boolean } = {},
): Promise<RunningBridge> {
  const configFile = await writeBridgeConfig(world, bridgeConfig(world, overrides));
  const config = parseConfig(await readFile(configFile, 'utf8'), configFile);
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...String(chunk).split('\n').filter(Boolean));
      cb();
    },
  });
  const log = createLogger({ level: 'debug', format: 'json', stream });
  const bridge = new Bridge({ config, configFile, log, httpEphemeral: opts.http });
  if (opts.importToken !== false) {
    // Import before start, the way an operator runs `token import` before `serve`.
    const { TokenService } = await import('../../src/oauth/service.js');
    const t = new TokenService({ config, log });
    await t.init();
    await t.importRefreshToken(world.account.name, world.account.refreshToken);
    t.stop();
  }
  await bridge.start();
  return { bridge, port: bridge.bound[0].port, configFile, logs, stop: () => bridge.stop(5000) };
}

/** `token import` through the real CLI, the way an operator provisions the account. */
/** A fresh fake world with a bridge in front of it (retries after 300 ms); both stopped afterwards. */
export async function withBridge(
  fn: (world: FakeWorld, b: RunningBridge) => Promise<void>,
  overrides: Record<string, unknown> = {},
): Promise<void> {
  const world = await startFakeWorld();
  const b = await startBridge(world, { queue: { retry: ['300ms'] }, ...overrides });
  try {
    await fn(world, b);
  } finally {
    await b.stop();
    await world.close();
  }
}

/** The scanner sends one message to `to` through the bridge, as the world's user. */
export const sendAsScanner = (world: FakeWorld, b: RunningBridge, to: string[], subject = 'test') =>
  sendThroughBridge({
    port: b.port,
    user: world.user.username,
    pass: world.user.password,
    from: 'scanner@example.com',
    to,
    raw: message({ from: 'scanner@example.com', to: to.join(', '), subject }),
  });

export function importToken(configFile: string, world: FakeWorld): void {
  execFileSync(process.execPath, [...CLI, 'token', 'import', world.account.name, '-c', configFile], {
    input: world.account.refreshToken + '\n',
  });
}

export interface SpawnedBridge {
  child: ChildProcess;
  ports: Record<string, number>;
  stderr: string[];
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Runs `xoauth2-bridge serve` as a real process; resolves once its listeners are bound
 * (read from its 'xoauth2-bridge started' line: the config's log level must be info or debug, format json). */
export async function spawnBridge(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<SpawnedBridge> {
  const child = spawn(process.execPath, [...CLI, 'serve', '-c', configFile], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const ports = await new Promise<Record<string, number>>((resolve, reject) => {
    let buf = '';
    // Generous: with four test files at once on a loaded 2-core machine a start took over 20 s.
    const timer = setTimeout(
      () => reject(new Error('bridge did not start within 60 s:\n' + stderr.join('\n'))),
      60_000,
    );
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        stderr.push(line);
        try {
          const j = JSON.parse(line) as { message?: string; listeners?: string[] };
          if (j.message === 'xoauth2-bridge started' && j.listeners) {
            clearTimeout(timer);
            resolve(Object.fromEntries(j.listeners.map((l) => [l.split('=')[0], Number(l.split(':').pop())])));
          }
        } catch {
          /* text line */
        }
      }
    });
    void exited.then((code) => reject(new Error(`bridge exited (${code}) before starting:\n` + stderr.join('\n'))));
  });
  return { child, ports, stderr, exited };
}

export interface SendOptions {
  port: number;
  user?: string;
  pass?: string;
  from: string;
  to: string[];
  raw: Buffer | string;
  host?: string;
  localAddress?: string;
}

/** One SMTP session (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) with nodemailer as the client. */
export async function sendThroughBridge(o: SendOptions): Promise<{ response: string }> {
  const t = nodemailer.createTransport({
    host: o.host ?? '127.0.0.1',
    port: o.port,
    secure: false,
    ignoreTLS: true,
    localAddress: o.localAddress,
    ...(o.user ? { auth: { user: o.user, pass: o.pass ?? '' }, authMethod: 'PLAIN' } : {}),
  });
  try {
    const info = await t.sendMail({ envelope: { from: o.from, to: o.to }, raw: o.raw });
    return { response: info.response };
  } finally {
    t.close();
  }
}

export function message(opts: { from: string; to: string; subject?: string; body?: string }): Buffer {
  return Buffer.from(
    [
      `From: ${opts.from}`,
      `To: ${opts.to}`,
      `Subject: ${opts.subject ?? 'test'}`,
      `Message-ID: <${Math.random().toString(36).slice(2)}@test.local>`,
      '',
      opts.body ?? 'hello',
      '',
    ].join('\r\n'),
  );
}

/** Every secret of the world that must never appear in logs or output. */
export function secretsOf(world: FakeWorld, extra: string[] = []): string[] {
  return [world.account.clientSecret, world.account.refreshToken, world.user.password, ...extra].filter(Boolean);
}

export function assertNoSecrets(text: string, secrets: string[]): void {
  for (const s of secrets) {
    if (text.includes(s)) throw new Error(`a secret leaked into logs/output: ${s.slice(0, 4)}…`);
  }
  const tokenShape = /ya29\.(?!\[redacted\])[A-Za-z0-9_-]{8,}/.exec(text);
  if (tokenShape) throw new Error('an access token (ya29.…) leaked into logs/output');
}
