// Test helpers for the inbound listener: a raw SMTP client over net/tls sockets (for the
// protocol-level cases nodemailer would paper over, and for exact control of the bytes on the
// wire: streaming a large body, timing DATA end -> 250) and a config builder.
import net from 'node:net';
import tls from 'node:tls';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { stringify } from 'yaml';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { Writable } from 'node:stream';
import { Listeners, type SpoolSink, type ListenerMetrics } from '../../src/listener/server.js';
import { createLogger } from '../../src/log/logger.js';
import { Spool, readMessage } from '../../src/spool/spool.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { AuthFailures } from '../../src/listener/limits.js';
import type { Envelope } from '../../src/types.js';

export interface Reply {
  code: number;
  text: string;
  lines: string[];
}

export class RawSmtp {
  private buf = '';
  private replies: Reply[] = [];
  private waiters: Array<(r: Reply) => void> = [];
  private pendingLines: string[] = [];
  closed = false;
  private closeWaiters: Array<() => void> = [];

  private constructor(public socket: net.Socket | tls.TLSSocket) {
    this.attach(socket);
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters.splice(0)) w();
    });
  }

  static async connect(
    port: number,
    opts: {
      localAddress?: string;
      proxy?: string | Buffer;
      implicitTls?: tls.ConnectionOptions;
      greeting?: boolean;
    } = {},
  ): Promise<RawSmtp> {
    let socket: net.Socket | tls.TLSSocket;
    if (opts.implicitTls) {
      socket = tls.connect({ host: '127.0.0.1', port, ...opts.implicitTls });
      await new Promise<void>((resolve, reject) => {
        (socket as tls.TLSSocket).once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
    } else {
      socket = net.connect({ host: '127.0.0.1', port, localAddress: opts.localAddress });
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('error', reject);
      });
    }
    const c = new RawSmtp(socket);
    if (opts.proxy) socket.write(opts.proxy);
    if (opts.greeting !== false) {
      const g = await c.read();
      if (g.code !== 220) throw new Error(`greeting: ${g.lines.join(' | ')}`);
    }
    return c;
  }

  private onData(d: Buffer): void {
    this.buf += d.toString('utf8');
    let i: number;
    while ((i = this.buf.indexOf('\r\n')) >= 0) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 2);
      this.pendingLines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        const lines = this.pendingLines;
        this.pendingLines = [];
        const reply = { code: Number(line.slice(0, 3)), text: line.slice(4), lines };
        const w = this.waiters.shift();
        if (w) w(reply);
        else this.replies.push(reply);
      }
    }
  }

  read(timeoutMs = 10_000): Promise<Reply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timed out waiting for a reply')), timeoutMs);
      this.waiters.push((reply) => {
        clearTimeout(t);
        resolve(reply);
      });
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async cmd(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(line + '\r\n');
    return this.read(timeoutMs);
  }

  /** Streams a (dot-stuffed, CRLF) body with backpressure, without ending the socket. */
  async pipeFrom(src: Readable): Promise<void> {
    await pipeline(src, this.socket, { end: false });
  }

  async ehlo(name = 'client.test'): Promise<Reply> {
    return this.cmd(`EHLO ${name}`);
  }

  async authPlain(user: string, pass: string): Promise<Reply> {
    return this.cmd('AUTH PLAIN ' + Buffer.from(`\0${user}\0${pass}`).toString('base64'));
  }

  async authLogin(user: string, pass: string): Promise<Reply> {
    const r1 = await this.cmd('AUTH LOGIN');
    if (r1.code !== 334) return r1;
    const r2 = await this.cmd(Buffer.from(user).toString('base64'));
    if (r2.code !== 334) return r2;
    return this.cmd(Buffer.from(pass).toString('base64'));
  }

  /** MAIL, RCPTs, DATA and the raw payload (which must end the data itself). Returns the final reply. */
  async sendRaw(from: string, to: string[], payload: string | Buffer, mailArgs = ''): Promise<Reply> {
    const m = await this.cmd(`MAIL FROM:<${from}>${mailArgs ? ' ' + mailArgs : ''}`);
    if (m.code !== 250) return m;
    for (const r of to) {
      const rr = await this.cmd(`RCPT TO:<${r}>`);
      if (rr.code !== 250) return rr;
    }
    const d = await this.cmd('DATA');
    if (d.code !== 354) return d;
    this.write(payload);
    return this.read();
  }

  async starttls(opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) throw new Error(`STARTTLS: ${r.lines.join(' | ')}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain, ...opts });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return secure;
  }

  waitClosed(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('socket did not close')), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  async quit(): Promise<void> {
    if (this.closed) return;
    try {
      this.write('QUIT\r\n');
    } catch {
      /* already gone */
    }
    this.socket.end();
    await this.waitClosed().catch(() => this.socket.destroy());
  }
}

export const ACCOUNT = {
  name: 'office',
  email: 'scanner@example.com',
  oauth: { type: 'user', clientId: 'cid', clientSecret: 'csecret' },
};

/** A validated Config from a plain object, through the real schema (defaults included). */
export function makeConfig(dir: string, partial: Record<string, unknown>): Config {
  const raw = { stateDir: dir, accounts: [ACCOUNT], log: { level: 'debug' }, ...partial };
  return parseConfig(stringify(raw), join(dir, 'config.yaml'));
}

/** A message with CRLF line ends, terminated for DATA. */
export function message(from: string, to: string, body = 'Hello from the test.', extraHeaders = ''): string {
  return `From: ${from}\r\nTo: ${to}\r\nSubject: test\r\n${extraHeaders}\r\n${body}\r\n.\r\n`;
}

export interface ListenerHarness {
  listeners: Listeners;
  port: (name?: string) => number;
  queued: Envelope[];
  /** Parsed JSON log lines so far. */
  logs: () => Array<Record<string, unknown>>;
  stop: () => Promise<void>;
}

/** Real listeners on port 0 in front of a real spool, logging JSON into memory. */
export async function startListeners(
  config: Config,
  spool: SpoolSink,
  extra: { metrics?: ListenerMetrics; authFailures?: AuthFailures } = {},
): Promise<ListenerHarness> {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const log = createLogger({ level: 'debug', format: 'json', stream });
  const queued: Envelope[] = [];
  const listeners = new Listeners({ config, log, spool, onQueued: (env) => queued.push(env), ...extra });
  const bound = await listeners.start();
  return {
    listeners,
    port: (name) => bound.find((b) => !name || b.name === name)!.port,
    queued,
    logs: () => lines.map((x) => JSON.parse(x) as Record<string, unknown>),
    stop: () => listeners.stop(),
  };
}

/** A temp stateDir with a real spool, removed by `cleanup`. */
export async function tempSpool(
  prefix: string,
  fsync = false,
): Promise<{ dir: string; spool: Spool; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const spool = new Spool(dir, createLogger({ silent: true }), { fsync });
  await spool.init();
  return { dir, spool, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The bytes of a spooled message, as the delivery worker would send them. */
export async function spooledMessage(spool: Spool, id: string): Promise<Buffer> {
  const env = await spool.get(id);
  if (!env) throw new Error(`${id} is not in the spool`);
  return readMessage(spool.message(env));
}
