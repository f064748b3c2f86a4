// Fake smtp.gmail.com for tests and `demo`: real TLS (test CA), SASL XOAUTH2 checked against
// the fake token endpoint, Gmail's reply texts, and scriptable failures per SMTP stage.
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { TestPki } from './ca.js';
import type { FakeTokenEndpoint } from './tokenEndpoint.js';

export const GMAIL_MAX_SIZE = 35882577;

export type ScriptStage = 'connect' | 'mail' | 'rcpt' | 'data' | 'auth';

export interface ScriptRule {
  stage: ScriptStage;
  /** Full reply line, e.g. '451 4.3.0 Mail server temporarily rejected message.' */
  reply: string;
  /** How many times it fires (default 1; Infinity ok). */
  count?: number;
  /** Stage 'rcpt' only: fire only for this recipient. */
  rcpt?: string;
  /** Answer only after this long (a slow server), e.g. to order events across two connections. */
  delayMs?: number;
}

export interface ReceivedMessage {
  mailFrom: string;
  rcptTo: string[];
  /** DATA bytes exactly as received (after dot-unstuffing, without the final '.'). */
  raw: Buffer;
  authUser: string;
  secure: boolean;
  tlsProtocol?: string;
  bodyType?: string;
  smtputf8: boolean;
  connectionId: string;
}

interface ReplyError extends Error {
  responseCode: number;
}

const BAD_CREDENTIALS = [
  '5.7.8 Username and Password not accepted. For more information, go to',
  '5.7.8  https://support.google.com/mail/?p=BadCredentials fake - gsmtp',
];

function gsmtpId(): string {
  return randomBytes(6).toString('hex');
}

/**
 * Turns a reply line like '421 4.7.0 Try again later' into the error smtp-server sends
 * verbatim. A broken server's malformed code ('2x0 huh') is passed through as text.
 */
function replyError(reply: string): ReplyError {
  const m = /^(\S{3})[ -]?(.*)$/s.exec(reply.trim());
  if (!m) throw new Error(`bad scripted reply: ${reply}`);
  const err = new Error(m[2]) as ReplyError;
  err.responseCode = (/^\d{3}$/.test(m[1]) ? Number(m[1]) : m[1]) as number;
  return err;
}

// Private smtp-server internals used to send Gmail's two-line 535 after the XOAUTH2
// error challenge; smtp-server itself only offers a fixed one-line text there.
interface ConnectionInternals {
  session: SMTPServerSession;
  _nextHandler: ((data: unknown, cb: () => void) => void) | false;
  send(code: number, data: string | string[]): void;
}

export class FakeGmail {
  readonly host = '127.0.0.1';
  readonly port: number;
  readonly mode: 'implicit' | 'starttls';
  readonly messages: ReceivedMessage[] = [];
  readonly auths: Array<{ user: string; ok: boolean }> = [];
  /** Total SMTP sessions accepted (after the TLS handshake in implicit mode). */
  connections = 0;
  /** Server-side errors (e.g. failed TLS handshakes), for debugging tests. */
  readonly errors: Error[] = [];
  readonly maxMessagesPerConnection: number;

  private readonly smtp: SMTPServer;
  private readonly tokens: FakeTokenEndpoint;
  private rules: Array<ScriptRule & { remaining: number }> = [];
  private readonly sockets = new Set<Socket>();
  private readonly perConnection = new Map<string, number>();
  private isDown = false;
  /** Users allowed to AUTH PLAIN/LOGIN with a fixed password (the bench's Postfix baseline). */
  private readonly passwords = new Map<string, string>();
  private waiters: Array<() => void> = [];
  /**
   * Delays of the replies to failed AUTHs, in order (the last one repeats): Dovecot waits 6 s,
   * then 17 s before it answers a refused login. Empty: answer at once.
   */
  authFailureDelaysMs: number[] = [];
  private authFailures = 0;
  /** Refuse every XOAUTH2 token, valid or not (Gmail withdrew the account's access); false accepts valid tokens again. */
  refuseTokens = false;
  /** Refuse a token with a bare 535 (no 334 error challenge first), as some servers do. */
  bareAuthFailure = false;
  private dataGates: Array<{ reached: () => void; wait: Promise<void> }> = [];

  private constructor(
    smtp: SMTPServer,
    tokens: FakeTokenEndpoint,
    port: number,
    mode: 'implicit' | 'starttls',
    maxPerConn: number,
  ) {
    this.smtp = smtp;
    this.tokens = tokens;
    this.port = port;
    this.mode = mode;
    this.maxMessagesPerConnection = maxPerConn;
  }

  static async start(opts: {
    pki: TestPki;
    tokens: FakeTokenEndpoint;
    mode?: 'implicit' | 'starttls';
    maxMessagesPerConnection?: number;
  }): Promise<FakeGmail> {
    const mode = opts.mode ?? 'implicit';
    // Handlers are bound after construction; `self` is set before any connection can arrive.
    let self: FakeGmail | undefined;
    const me = (): FakeGmail => self!;
    const smtp = new SMTPServer({
      secure: mode === 'implicit',
      key: opts.pki.key,
      cert: opts.pki.cert,
      minVersion: 'TLSv1.2',
      name: 'smtp.gmail.com',
      banner: `${gsmtpId()} - gsmtp`,
      heloResponse: '%s at your service, [%s]',
      hideSTARTTLS: false,
      // AUTH before STARTTLS is refused in onAuth with Gmail's own 530 text instead of smtp-server's 538.
      allowInsecureAuth: true,
      authMethods: ['LOGIN', 'PLAIN', 'XOAUTH2'],
      authRequiredMessage:
        '5.7.0 Authentication Required. For more information, go to https://support.google.com/mail/?p=WantAuthError fake - gsmtp',
      size: GMAIL_MAX_SIZE,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      hidePIPELINING: false,
      logger: false,
      disableReverseLookup: true,
      closeTimeout: 100,
      onConnect: (session, cb) => me().onConnect(session, cb),
      onAuth: (auth, session, cb) => me().onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => me().onMailFrom(address.address, session, cb),
      onRcptTo: (address, session, cb) => me().onRcptTo(address.address, session, cb),
      onData: (stream, session, cb) => me().onData(stream, session, cb),
      onClose: (session) => me().perConnection.delete(session.id),
    });
    await new Promise<void>((resolve, reject) => {
      smtp.once('error', reject);
      smtp.listen(0, '127.0.0.1', () => {
        smtp.off('error', reject);
        resolve();
      });
    });
    const port = (smtp.server.address() as { port: number }).port;
    self = new FakeGmail(smtp, opts.tokens, port, mode, opts.maxMessagesPerConnection ?? Infinity);
    const fake = self;
    smtp.on('error', (err: Error) => fake.errors.push(err));
    smtp.server.on('connection', (socket: Socket) => {
      fake.sockets.add(socket);
      socket.on('close', () => fake.sockets.delete(socket));
    });
    return fake;
  }

  script(rule: ScriptRule): void {
    replyError(rule.reply); // validate now, not mid-session
    this.rules.push({ ...rule, remaining: rule.count ?? 1 });
  }

  /**
   * Lets `user` authenticate with PLAIN or LOGIN and this password, as Gmail does for app
   * passwords. Only the bench uses it: its Postfix baseline has no XOAUTH2.
   */
  acceptPassword(user: string, password: string): void {
    this.passwords.set(user.toLowerCase(), password);
  }

  /**
   * The next DATA stops after the message's last byte, before Gmail's reply, until
   * `release()`: a send that is in flight for as long as a test needs. `reached` resolves
   * when a DATA got there.
   */
  holdNextData(): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let release!: () => void;
    const r = new Promise<void>((res) => (reached = res));
    this.dataGates.push({ reached, wait: new Promise<void>((res) => (release = res)) });
    return { reached: r, release };
  }

  /** Drops every scripted rule. */
  clearScript(): void {
    this.rules = [];
  }

  /**
   * down(true): drop every open connection and close each new one at once (Gmail unreachable).
   * The port stays bound: closing the listener and binding again later could fail when another
   * process's outgoing connection took the free port as its local one meanwhile (it is in the
   * ephemeral range), and the fake would then stay down. maxConnections 0 makes Node close each
   * accepted connection before smtp-server sees it. down(false): accept again.
   */
  down(flag: boolean): void {
    if (flag === this.isDown) return;
    this.isDown = flag;
    if (flag) {
      this.smtp.server.maxConnections = 0;
      for (const s of this.sockets) s.destroy();
      this.sockets.clear();
    } else {
      this.smtp.server.maxConnections = Infinity;
    }
  }

  waitForMessages(n: number, timeoutMs = 10_000): Promise<void> {
    if (this.messages.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.messages.length >= n) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== check);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`FakeGmail: ${this.messages.length} of ${n} messages after ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(check);
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.smtp.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  private connectionOpen(session: SMTPServerSession): boolean {
    return [...(this.smtp.connections as Set<unknown>)].some((c) => (c as ConnectionInternals).session === session);
  }

  // ---- handlers ----

  /** Returns the reply of the first live rule for this stage (and recipient), consuming one use. */
  private take(stage: ScriptStage, rcpt?: string): ReplyError | null {
    return this.takeRule(stage, rcpt)?.err ?? null;
  }

  /** Like take(), but waits the rule's delayMs first. */
  private async takeDelayed(stage: ScriptStage, rcpt?: string): Promise<ReplyError | null> {
    const r = this.takeRule(stage, rcpt);
    if (r?.delayMs) await new Promise((resolve) => setTimeout(resolve, r.delayMs));
    return r?.err ?? null;
  }

  private takeRule(stage: ScriptStage, rcpt?: string): { err: ReplyError; delayMs?: number } | null {
    const rule = this.rules.find(
      (r) =>
        r.stage === stage &&
        r.remaining > 0 &&
        (r.rcpt === undefined || (rcpt !== undefined && r.rcpt.toLowerCase() === rcpt.toLowerCase())),
    );
    if (!rule) return null;
    rule.remaining -= 1;
    this.rules = this.rules.filter((r) => r.remaining > 0);
    return { err: replyError(rule.reply), delayMs: rule.delayMs };
  }

  private onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    this.connections += 1;
    cb(this.take('connect'));
  }

  private onAuth(
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: { user?: unknown; data?: object }) => void,
  ): void {
    const user = auth.username ?? '';
    if (!session.secure) {
      this.auths.push({ user, ok: false });
      return cb(replyError('530 5.7.0 Must issue a STARTTLS command first. fake - gsmtp'));
    }
    const scripted = this.take('auth');
    if (scripted) {
      this.auths.push({ user, ok: false });
      return cb(scripted);
    }
    if (auth.method !== 'XOAUTH2') {
      const pass = this.passwords.get(user.toLowerCase());
      if (pass !== undefined && auth.password === pass) {
        this.auths.push({ user, ok: true });
        return cb(null, { user });
      }
      // Gmail refuses app passwords for OAuth-only setups; catch a client configured for passwords.
      this.auths.push({ user, ok: false });
      return cb(replyError(`535 ${BAD_CREDENTIALS.join(' ')}`));
    }
    const info = auth.accessToken && !this.refuseTokens ? this.tokens.tokenInfo(auth.accessToken) : null;
    // Gmail SMTP takes only the full-mailbox scope: a gmail.send token is refused like a bad one.
    if (
      info &&
      info.email.toLowerCase() === user.toLowerCase() &&
      info.scope.split(' ').includes('https://mail.google.com/')
    ) {
      this.auths.push({ user, ok: true });
      return cb(null, { user });
    }
    this.auths.push({ user, ok: false });
    const delays = this.authFailureDelaysMs;
    const delay = delays.length ? delays[Math.min(this.authFailures++, delays.length - 1)] : 0;
    if (this.bareAuthFailure) {
      setTimeout(() => cb(replyError(`535 ${BAD_CREDENTIALS.join(' ')}`)), delay);
      return;
    }
    cb(null, { data: { status: '400', schemes: 'Bearer', scope: 'https://mail.google.com/' } });
    // smtp-server has now sent the 334 challenge; answer the client's empty line like Gmail.
    const conn = [...(this.smtp.connections as Set<unknown>)].find(
      (c) => (c as ConnectionInternals).session === session,
    ) as ConnectionInternals | undefined;
    if (conn && conn._nextHandler) {
      conn._nextHandler = (_data, done) => {
        setTimeout(() => {
          conn.send(535, BAD_CREDENTIALS);
          done();
        }, delay);
      };
    }
  }

  private onMailFrom(address: string, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    if ((this.perConnection.get(session.id) ?? 0) >= this.maxMessagesPerConnection) {
      return cb(replyError('421 4.7.0 Try again later, closing connection. (MAIL) fake - gsmtp'));
    }
    cb(this.take('mail'));
  }

  private onRcptTo(address: string, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    void this.takeDelayed('rcpt', address).then((err) => cb(err));
  }

  private onData(
    stream: NodeJS.ReadableStream & { sizeExceeded?: boolean },
    session: SMTPServerSession,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', async () => {
      const gate = this.dataGates.shift();
      if (gate) {
        gate.reached();
        await gate.wait;
        if (!this.connectionOpen(session)) return; // the client went away meanwhile: nothing was received
      }
      const scripted = this.take('data');
      if (scripted) return cb(scripted);
      if (stream.sizeExceeded) {
        return cb(
          replyError(
            "552 5.3.4 Your message exceeded Google's message size limits. For more information, visit https://support.google.com/mail/?p=MaxSizeError fake - gsmtp",
          ),
        );
      }
      const env = session.envelope;
      const tls = session.tlsOptions;
      const msg: ReceivedMessage = {
        mailFrom: env.mailFrom ? env.mailFrom.address : '',
        rcptTo: env.rcptTo.map((r) => r.address),
        raw: Buffer.concat(chunks),
        authUser: String(session.user ?? ''),
        secure: session.secure,
        smtputf8: Boolean(env.smtpUtf8),
        connectionId: session.id,
      };
      if (tls && tls.version) msg.tlsProtocol = tls.version;
      if (env.bodyType) msg.bodyType = env.bodyType;
      this.messages.push(msg);
      this.perConnection.set(session.id, (this.perConnection.get(session.id) ?? 0) + 1);
      for (const w of [...this.waiters]) w();
      cb(null, `2.0.0 OK  ${Math.floor(Date.now() / 1000)} ${gsmtpId()} - gsmtp`);
    });
  }
}
