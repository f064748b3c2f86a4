// A minimal SMTP client over a raw socket (plain or implicit TLS), so the bench can time
// exactly what a device sees (end of DATA -> 250) and talk to the bridge and to the fake
// Gmail with the very same code.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { once } from 'node:events';

export interface ConnectOptions {
  port: number;
  host?: string;
  /** Source address (the KDF-flood scenario uses many loopback addresses). */
  localAddress?: string;
  /** Implicit TLS, verified against this CA. */
  tls?: { ca: string; servername: string };
}

export type Auth = { plain: { user: string; pass: string } } | { xoauth2: { user: string; token: string } };

export class SmtpClient {
  private buf = '';
  private wake: (() => void) | null = null;
  private closed = false;
  /** Milliseconds from connect() to the transport being up (TCP, or TCP + TLS handshake). */
  connectMs = 0;
  /** Milliseconds from then to the 220 greeting. */
  greetingMs = 0;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.setNoDelay(true);
    socket.on('data', (d: string) => {
      this.buf += d;
      this.poke();
    });
    socket.on('close', () => {
      this.closed = true;
      this.poke();
    });
    socket.on('error', () => {});
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  static async open(o: ConnectOptions): Promise<SmtpClient> {
    const host = o.host ?? '127.0.0.1';
    const socket = o.tls
      ? tlsConnect({ port: o.port, host, ca: o.tls.ca, servername: o.tls.servername, minVersion: 'TLSv1.2' })
      : netConnect({ port: o.port, host, localAddress: o.localAddress });
    const t0 = performance.now();
    await once(socket, o.tls ? 'secureConnect' : 'connect');
    const up = performance.now();
    const c = new SmtpClient(socket);
    await c.expect(220);
    c.connectMs = up - t0;
    c.greetingMs = performance.now() - up;
    return c;
  }

  /** The next complete (possibly multi-line) reply. */
  async reply(): Promise<{ code: number; text: string }> {
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[0].length);
        return { code: Number(m[1]), text: m[0].trimEnd() };
      }
      if (this.closed) throw new Error(`connection closed; pending: ${JSON.stringify(this.buf.slice(0, 200))}`);
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  async expect(code: number): Promise<string> {
    const r = await this.reply();
    if (r.code !== code) throw new Error(`expected ${code}, got: ${r.text.slice(0, 200)}`);
    return r.text;
  }

  async cmd(line: string, code: number): Promise<string> {
    this.socket.write(line + '\r\n');
    return this.expect(code);
  }

  async hello(auth: Auth, name = 'bench.local'): Promise<void> {
    await this.cmd(`EHLO ${name}`, 250);
    if ('plain' in auth) {
      await this.cmd(`AUTH PLAIN ${Buffer.from(`\0${auth.plain.user}\0${auth.plain.pass}`).toString('base64')}`, 235);
    } else {
      const x = Buffer.from(`user=${auth.xoauth2.user}\x01auth=Bearer ${auth.xoauth2.token}\x01\x01`).toString(
        'base64',
      );
      await this.cmd(`AUTH XOAUTH2 ${x}`, 235);
    }
  }

  /**
   * One transaction. `body` must be CRLF text ending in CRLF with no line starting with '.'.
   * Returns milliseconds from writing the final '.' to the 250.
   */
  async send(from: string, to: string, body: Buffer): Promise<number> {
    await this.cmd(`MAIL FROM:<${from}>`, 250);
    await this.cmd(`RCPT TO:<${to}>`, 250);
    await this.cmd('DATA', 354);
    await this.writeBody(body);
    const t0 = performance.now();
    this.socket.write('.\r\n');
    await this.expect(250);
    return performance.now() - t0;
  }

  /** Writes in slices, honouring backpressure, so a 20 MB body is not queued in user space. */
  private async writeBody(body: Buffer): Promise<void> {
    const slice = 256 * 1024;
    for (let i = 0; i < body.length; i += slice) {
      if (!this.socket.write(body.subarray(i, i + slice))) await once(this.socket, 'drain');
    }
  }

  async quit(): Promise<void> {
    try {
      await this.cmd('QUIT', 221);
    } finally {
      this.socket.destroy();
    }
  }
}

/** A CRLF message of about `bytes` bytes (base64-looking lines, none starting with '.'). */
export function makeMessage(bytes: number, from: string, to: string, tag = 'bench'): Buffer {
  const head = Buffer.from(
    `From: ${from}\r\nTo: ${to}\r\nSubject: ${tag}\r\nMessage-ID: <${tag}.${Date.now()}.${Math.random().toString(36).slice(2)}@bench.local>\r\n` +
      'MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n',
  );
  const line = Buffer.from('QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n');
  const n = Math.max(1, Math.ceil((bytes - head.length) / line.length));
  const body = Buffer.allocUnsafe(n * line.length);
  for (let i = 0; i < n; i++) line.copy(body, i * line.length);
  return Buffer.concat([head, body]);
}
