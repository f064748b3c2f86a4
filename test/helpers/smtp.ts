// A bare SMTP client over a socket, for tests that need exact control of the bytes on the
// wire (timing DATA end -> 250, streaming a large body, protocol edge cases).
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';

export class SmtpSession {
  private buf = '';
  private waiters: Array<() => void> = [];
  private constructor(readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.waiters.splice(0).forEach((w) => w());
    });
    socket.on('close', () => this.waiters.splice(0).forEach((w) => w()));
  }

  static async connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<SmtpSession> {
    const socket = connect({ port, host, localAddress });
    await once(socket, 'connect');
    const s = new SmtpSession(socket);
    await s.reply();
    return s;
  }

  /** The next complete (possibly multi-line) reply. */
  async reply(timeoutMs = 30_000): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[0].length);
        return m[0].trimEnd();
      }
      if (this.socket.destroyed) throw new Error(`connection closed; pending: ${JSON.stringify(this.buf)}`);
      if (Date.now() > end) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  /** Sends a command line and checks the reply code. */
  async cmd(line: string, expect?: number): Promise<string> {
    this.socket.write(line + '\r\n');
    const r = await this.reply();
    if (expect !== undefined && !r.startsWith(String(expect))) throw new Error(`"${line.slice(0, 40)}" -> ${r}`);
    return r;
  }

  /** Writes raw bytes (no line ending added). */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Streams a (dot-stuffed, CRLF) body without ending the socket. */
  async pipeFrom(src: Readable): Promise<void> {
    await pipeline(src, this.socket, { end: false });
  }

  close(): void {
    this.socket.destroy();
  }
}
