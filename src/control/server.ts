// The daemon's end of the control socket (stateDir/control.sock, mode 0660 in a 0750 stateDir:
// the service's group may steer it; the file modes are the access check). Each connection
// carries one request line and gets one answer line; a connection that sends no complete line
// within IDLE_MS is answered with an error and closed. Request arguments (a refresh token for
// `token import`) are never logged.
import { createServer, type Server, type Socket } from 'node:net';
import { chmod } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { unlinkQuiet } from '../fs/safeWrite.js';
import type { Operations } from './ops.js';
import { dispatch, RequestError, socketPath, type Request, type Response } from './protocol.js';

const MAX_REQUEST = 64 * 1024;
/** How long a connection may stay without a complete request line. */
export const IDLE_MS = 60_000;
const NOT_AN_OBJECT = 'request must be a JSON object like {"op": "queue.list"}';
const READS = new Set(['queue.list', 'queue.show', 'token.status']);

export class ControlServer {
  readonly path: string;
  private server?: Server;
  private readonly sockets = new Set<Socket>();

  private readonly idleMs: number;

  constructor(
    stateDir: string,
    private readonly ops: Operations,
    private readonly log: Logger,
    opts: { idleMs?: number } = {},
  ) {
    this.path = socketPath(stateDir);
    this.idleMs = opts.idleMs ?? IDLE_MS;
  }

  /** Call while holding the state lock: a socket file left by a dead daemon is removed. */
  async start(): Promise<void> {
    await unlinkQuiet(this.path);
    const server = createServer((s) => this.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error('control socket error', { err }));
    await chmod(this.path, 0o660);
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    const closed = new Promise<void>((r) => s.close(() => r()));
    for (const c of this.sockets) c.destroy();
    await closed;
    await unlinkQuiet(this.path).catch(() => {});
  }

  private onConnection(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    let done = false;
    sock.setEncoding('utf8');
    // Only until the request line is in: the operation itself may take as long as it needs.
    sock.setTimeout(this.idleMs, () => {
      if (done) return void sock.destroy(); // answered long ago and the client still holds on
      done = true;
      this.answer(sock, { ok: false, error: `idle for ${this.idleMs / 1000} s without a complete request line` });
    });
    sock.on('data', (chunk: string) => {
      if (done) return;
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_REQUEST) {
          done = true;
          this.answer(sock, { ok: false, error: 'request too long' });
        }
        return;
      }
      done = true;
      sock.setTimeout(0);
      void this.handle(sock, buf.slice(0, nl));
    });
  }

  private async handle(sock: Socket, line: string): Promise<void> {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
    } catch {
      return this.answer(sock, { ok: false, error: 'request is not JSON' });
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req))
      return this.answer(sock, { ok: false, error: NOT_AN_OBJECT });
    const op = typeof req?.op === 'string' ? req.op : '?';
    // Changes are logged (audit); reads only at debug. Arguments are never logged (token import carries a secret).
    const id = typeof req?.args?.id === 'string' ? { id: req.args.id } : {};
    if (READS.has(op)) this.log.debug('control request', { op });
    else this.log.info('control request', { op, ...id });
    try {
      const result = await dispatch(this.ops, req);
      this.answer(sock, { ok: true, result: result ?? null });
    } catch (err) {
      if (!(err instanceof RequestError)) this.log.error('control request failed', { op, err });
      this.answer(sock, { ok: false, error: (err as Error).message });
    }
  }

  private answer(sock: Socket, res: Response): void {
    if (!sock.destroyed) sock.end(JSON.stringify(res) + '\n');
  }
}
