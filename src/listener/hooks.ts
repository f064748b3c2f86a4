// The places where the listener reaches into smtp-server's internals, and the start-up
// check that they are still what these hooks expect. smtp-server has no public way to
// keep our own enhanced status codes, refuse AUTH before the credentials cross a
// cleartext link, answer a client that half-closed (Exim), start the session without
// its fixed 100 ms "early talker" pause, or find the end of DATA without a byte loop in
// JavaScript (feedDataStream); package.json pins the version these were read
// from, and `smtpServerHookProblems` refuses anything else instead of silently running
// without them.
import net from 'node:net';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

/** The smtp-server release the hooks below were written against (pinned in package.json). */
export const SMTP_SERVER_VERSION = '3.21.6';

export type Conn = SMTPConnection;
type Send = SMTPConnection['send'];

export interface HookTargets {
  server: object;
  connection: object;
  /** The DATA parser's prototype (feedDataStream); default SMTPStream.prototype. */
  stream?: object;
  /** Builds a connection object (never started) to look for the instance fields. */
  probe?: () => object;
}

const defaultTargets = (): HookTargets => ({
  server: SMTPServer.prototype,
  connection: SMTPConnection.prototype,
  probe: () =>
    new SMTPConnection(new SMTPServer({ logger: false, disabledCommands: ['STARTTLS'] }), new net.Socket(), {
      id: 'hook-probe',
    }),
});

const source = (o: object, name: string): string | null => {
  const f = (o as Record<string, unknown>)[name];
  // Quotes normalised: a bundler (the .deb and image run an esbuild bundle) reprints 'x' as "x".
  return typeof f === 'function' ? Function.prototype.toString.call(f).replace(/"/g, "'") : null;
};

/**
 * What the hooks expect of smtp-server, as one sentence per mismatch (empty when all is
 * well). Methods we replace or wrap must exist; where a hook relies on how a method is
 * written (the write guard in send, the greeting timer in init), that code must be there.
 */
export function smtpServerHookProblems(t: HookTargets = defaultTargets()): string[] {
  const problems: string[] = [];
  const need = (o: object, owner: string, name: string, mustContain?: string, why?: string) => {
    const src = source(o, name);
    if (src === null) problems.push(`${owner}.${name}() is missing`);
    else if (mustContain && !src.includes(mustContain))
      problems.push(`${owner}.${name}() no longer contains \`${mustContain}\` (${why})`);
  };
  need(t.server, 'SMTPServer', 'connect');
  need(t.server, 'SMTPServer', '_handleProxy');
  need(t.server, 'SMTPServer', '_expectsProxyHeader');
  need(t.connection, 'SMTPConnection', 'send', "readyState === 'open'", 'replies to a half-closed client');
  need(t.connection, 'SMTPConnection', 'handler_AUTH');
  need(t.connection, 'SMTPConnection', 'close');
  need(t.connection, 'SMTPConnection', 'connectionReady');
  need(t.connection, 'SMTPConnection', 'init', 'this.connectionReady()', 'greetingDelay');
  need(t.connection, 'SMTPConnection', 'upgrade', 'this._createParser()', 'half-close after STARTTLS');
  need(t.connection, 'SMTPConnection', '_createParser');
  // feedDataStream replaces _feedDataStream and calls the rest as the original does.
  const stream = t.stream ?? SMTPStream.prototype;
  for (const marker of FEED_MARKERS)
    need(stream, 'SMTPStream', '_feedDataStream', marker, 'feedDataStream is a copy of it');
  need(stream, 'SMTPStream', '_endDataMode', 'this._continueCallback', 'feedDataStream');
  need(stream, 'SMTPStream', '_countDataBytes', 'this._atDataStart = false', 'feedDataStream');
  if (t.probe && !problems.length) {
    let c: Record<string, unknown>;
    try {
      c = t.probe() as Record<string, unknown>;
    } catch (err) {
      return [...problems, `a connection cannot be built for inspection: ${(err as Error).message}`];
    }
    if (!(c._socket instanceof net.Socket)) problems.push('SMTPConnection has no _socket');
    else c._socket.destroy();
    if (!(c._parser instanceof Writable)) problems.push('SMTPConnection has no _parser stream');
    if (typeof c.session !== 'object' || c.session === null) problems.push('SMTPConnection has no session');
    if (typeof (c._server as Record<string, unknown> | undefined)?._expectsProxyHeader !== 'function')
      problems.push('SMTPConnection has no _server (peer.ts)');
    for (const f of ['_closing', '_closed', '_upgrading'])
      if (typeof c[f] !== 'boolean') problems.push(`SMTPConnection has no boolean ${f}`);
  }
  return problems;
}

/** Throws one clear error naming every mismatch; the listener refuses to start on it. */
export function assertSmtpServerHooks(t?: HookTargets, version = installedVersion()): void {
  const problems = smtpServerHookProblems(t);
  if (!problems.length) {
    if (!t) (SMTPStream.prototype as unknown as Parser)._feedDataStream = feedDataStream;
    return;
  }
  throw new Error(
    `smtp-server ${version} does not have the internals the listener hooks into (written for ${SMTP_SERVER_VERSION}): ` +
      `${problems.join('; ')}. Install smtp-server ${SMTP_SERVER_VERSION} exactly (npm ci uses the pinned version).`,
  );
}

function installedVersion(): string {
  try {
    return (createRequire(import.meta.url)('smtp-server/package.json') as { version: string }).version;
  } catch {
    return '(unknown version)';
  }
}

/**
 * Runs `onConnection` on every connection smtp-server creates (it has no factory option),
 * right after init(); `beforeConnect` runs first, before init() checks maxClients.
 */
export function hookServer(
  server: SMTPServer,
  onConnection: (conn: Conn) => void,
  beforeConnect: () => void = () => {},
): void {
  const connect = server.connect.bind(server);
  const hooked = new WeakSet<object>();
  server.connect = (socket, socketOptions) => {
    beforeConnect();
    connect(socket, socketOptions);
    for (const conn of server.connections) {
      if (hooked.has(conn)) continue;
      hooked.add(conn);
      onConnection(conn);
    }
  };
}

/**
 * smtp-server only writes while the socket's readyState is 'open'. With allowHalfOpen a
 * client that sent its last commands and then half-closed (Exim: `.` and QUIT in one
 * write, then shutdown) is 'writeOnly': the reply is still owed and can still be sent.
 */
export function sendToHalfClosed(conn: Conn, send: Send): Send {
  return (code, data, context) => {
    const socket = conn._socket as net.Socket & { readyState: string };
    if (socket.readyState !== 'writeOnly') return send(code, data, context);
    Object.defineProperty(socket, 'readyState', { value: 'open', configurable: true });
    try {
      send(code, data, context);
    } finally {
      delete (socket as { readyState?: string }).readyState;
    }
  };
}

/**
 * Once a half-closed client's input has all been processed (the command parser finished,
 * so every reply it was owed is written), end our side too, as Postfix's smtpd does;
 * otherwise the socket would linger until the idle timeout.
 */
export function closeAfterClientEof(conn: Conn): void {
  const watch = (parser: Conn['_parser']) => {
    if (!parser) return;
    parser.once('finish', () => {
      if (!conn._closing && !conn._closed) conn.close();
    });
  };
  watch(conn._parser);
  // STARTTLS gives the TLS session a new parser.
  const create = conn._createParser.bind(conn);
  conn._createParser = () => {
    const parser = create();
    watch(parser);
    return parser;
  };
}

/**
 * Starts the session (onConnect, greeting) after `delayMs` instead of smtp-server's fixed
 * 100 ms: its timer in init() calls `this.connectionReady()`, which from now on does
 * nothing. Must run right after init() (hookServer does). Returns the cancel function for
 * when the connection ends first.
 */
export function greetAfter(conn: Conn, delayMs: number): () => void {
  const ready = conn.connectionReady.bind(conn);
  conn.connectionReady = () => {};
  if (conn._closing || conn._closed) return () => {}; // refused in init (maxClients)
  if (delayMs <= 0) {
    ready();
    return () => {};
  }
  const timer = setTimeout(() => ready(), delayMs);
  timer.unref();
  return () => clearTimeout(timer);
}

// ---- end of DATA ---------------------------------------------------------------------------
// smtp-server's _feedDataStream looks at every byte of a message in JavaScript for a dot at
// the start of a line (the end of DATA, or an escape dot to drop): in a profile of 20
// concurrent 20 MB messages it was 14.5% of the daemon's CPU. feedDataStream below is the
// same function, statement for statement, except that the search for "\n." is one native
// Buffer.indexOf per chunk; it keeps the original's bounds (a dot at index 2 .. len - 3 of the
// chunk joined to the bytes kept from the last one), so chunking, smuggling guards
// (_atDataStart) and emitted bytes stay the same. test/unit/listener-protocol.test.ts runs the
// two side by side on the same inputs.

/** Statements of SMTPStream._feedDataStream (3.21.6) that feedDataStream copies (survive a bundler's reprint). */
const FEED_MARKERS = [
  'this._lastBytes',
  'this._atDataStart',
  'this._countDataBytes(',
  'this._endDataMode(',
  'setImmediate(',
  "dataStream.once('drain'",
];

type Callback = (err?: Error | null) => void;
type Parser = SMTPStream & {
  _feedDataStream(chunk: Buffer, done: Callback): void;
  _endDataMode(chunk: Buffer | false, remainder: Buffer, callback: Callback): void;
};

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const LF_DOT = Buffer.from('\n.');

/** The original _feedDataStream (kept for the side-by-side test). */
export const originalFeedDataStream = (SMTPStream.prototype as unknown as Parser)._feedDataStream;

/** SMTPStream._feedDataStream of smtp-server 3.21.6 with a native search for "\n.". */
export function feedDataStream(this: Parser, chunk: Buffer, done: Callback): void {
  // only called in data mode, which always has a stream
  const dataStream = this._dataStream!;
  const last = this._lastBytes;
  if (last !== false && last.length) {
    chunk = Buffer.concat([last, chunk], last.length + chunk.length);
    this._lastBytes = false;
  }
  let len = chunk.length;
  // A terminator as the very first line ends DATA (see the original on _atDataStart).
  if (this._atDataStart && len >= 3 && chunk[0] === DOT && chunk[1] === CR && chunk[2] === LF) {
    this._endDataMode(false, chunk.subarray(3), done);
    return;
  }
  if (this._atDataStart && len >= 2 && chunk[0] === DOT && chunk[1] === DOT) {
    chunk = chunk.subarray(1);
    len--;
    this._atDataStart = false;
  }
  // The original's loop: the first i in [2, len - 3] with chunk[i - 1] LF and chunk[i] a dot.
  for (let p = chunk.indexOf(LF_DOT, 1); p >= 0 && p + 1 < len - 2; p = chunk.indexOf(LF_DOT, p + 1)) {
    const i = p + 1;
    if (chunk[i - 2] === CR && chunk[i + 1] === CR && chunk[i + 2] === LF) {
      const buf = chunk.subarray(0, i);
      this._countDataBytes(buf.length);
      this._endDataMode(buf, chunk.subarray(i + 3), done);
      return;
    }
    if (chunk[i + 1] === DOT) {
      const buf = chunk.subarray(0, i);
      this._lastBytes = false;
      this._countDataBytes(buf.length);
      if (dataStream.writable) dataStream.write(buf);
      const rest = chunk.subarray(i + 1);
      setImmediate(() => this._feedDataStream(rest, done));
      return;
    }
  }
  // keep the last bytes
  this._lastBytes = chunk.length < 4 ? chunk : chunk.subarray(chunk.length - 4);
  if (this._lastBytes.length < chunk.length) {
    const buf = chunk.subarray(0, chunk.length - this._lastBytes.length);
    this._countDataBytes(buf.length);
    if (!dataStream.writable) return done();
    const handled = dataStream.write(buf);
    if (handled || dataStream.destroyed) return done();
    // a stream that the application destroys never drains, it only closes
    const onDrain = () => {
      dataStream.removeListener('drain', onDrain);
      dataStream.removeListener('close', onDrain);
      done();
    };
    dataStream.once('drain', onDrain);
    dataStream.once('close', onDrain);
    return;
  }
  done();
}
