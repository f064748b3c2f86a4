// The places where the listener reaches into smtp-server's internals, and the start-up
// check that they are still what these hooks expect. smtp-server has no public way to
// keep our own enhanced status codes, refuse AUTH before the credentials cross a
// cleartext link, answer a client that half-closed (Exim), or start the session without
// its fixed 100 ms "early talker" pause; package.json pins the version these were read
// from, and `smtpServerHookProblems` refuses anything else instead of silently running
// without them.
import net from 'node:net';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/** The smtp-server release the hooks below were written against (pinned in package.json). */
export const SMTP_SERVER_VERSION = '3.21.6';

export type Conn = SMTPConnection;
type Send = SMTPConnection['send'];

export interface HookTargets {
  server: object;
  connection: object;
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
  if (!problems.length) return;
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
