// Inbound SMTP: one smtp-server per configured listener. Decides who may relay (AUTH or a
// trusted network), as whom (allowed senders, checked on MAIL FROM and the From header),
// how much (size, recipients, connections), then streams the message into the spool and
// answers 250 only once the spool has made it durable (DATA itself: listener/data.ts).
// Over 400 lines on purpose: the servers' lifecycle and each session's policy (connect, AUTH,
// MAIL FROM, RCPT TO) share the per-connection state (slots, logins, transactions, live
// connections), and their order is the security argument; split, it would be read in pieces.
import { hostname } from 'node:os';
import {
  SMTPServer,
  type SMTPServerOptions,
  type SMTPServerSession,
  type SMTPServerAuthentication,
  type SMTPServerAuthenticationResponse,
  type SMTPServerAddress,
  type SMTPServerDataStream,
} from 'smtp-server';
import type { Config, ListenerConfig, UserConfig, AccountConfig } from '../config/schema.js';
import type { Envelope, TransportSizeLimit } from '../types.js';
import { bunyanAdapter, type Logger } from '../log/logger.js';
import { addressForLog } from '../log/redact.js';
import type { NewMessage } from '../spool/spool.js';
import { Logins } from './logins.js';
import { type DataContext, receiveData, type SpoolSink, type Transaction, tighter, tooBigText } from './data.js';
import { type NetworkList, isLoopback, trustedNetworksOf, clientKey } from '../config/networks.js';
import { SenderPolicy } from './senders.js';
import { SmtpReply } from './filter.js';
import { type AuthFailures, ConnectionCounter, SlotShare, preAuthDeadline, type AuthLimits } from './limits.js';
import { loadKeyPair } from './certs.js';
import { collectYoung } from './gc.js';
import { acceptProxyV2 } from './proxyV2.js';
import { notePeer, isLocalPeer } from './peer.js';
import {
  assertSmtpServerHooks,
  hookServer,
  sendToHalfClosed,
  closeAfterClientEof,
  greetAfter,
  type Conn,
} from './hooks.js';

export type { NewMessage, SpoolSink };

export interface ListenersOptions {
  config: Config;
  log: Logger;
  spool: SpoolSink;
  onQueued: (env: Envelope) => void;
  metrics?: ListenerMetrics;
  /** Failed-login table (tests pass one in to flood it directly); default: a fresh one. */
  authFailures?: AuthFailures;
  /**
   * The account's transport size limit (the daemon passes the upstream router's), so a message
   * its transport cannot send is refused with 552 instead of bounced later; absent: none.
   */
  transportLimit?: (account: AccountConfig) => TransportSizeLimit | null;
}

/** The counters this stage feeds (implemented by src/metrics). */
export interface ListenerMetrics {
  authFailure(listener: string): void;
  lockout(listener: string): void;
  /** A connection of `listener` opened (+1) or ended (-1): the live-connection gauge. */
  connectionsOpen?(listener: string, delta: 1 | -1): void;
}

export interface BoundListener {
  name: string;
  host: string;
  port: number;
}

interface Running {
  cfg: ListenerConfig;
  trusted: NetworkList;
  slots: SlotShare;
  server: SMTPServer;
  bound?: BoundListener;
}

/** Connections ended between two young-generation collections. */
const GC_EVERY_CONNECTIONS = 256;

// Replies that carry their own enhanced status code ("553 5.7.1 ...").
const HAS_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}(?: |$)/;

const LEGACY_TLS_CIPHERS = 'DEFAULT:@SECLEVEL=0';

/** Usernames are attacker-chosen: keep log lines single-token and short. */
function safeUser(u: string): string {
  return u.replace(/[^A-Za-z0-9._@+-]/g, '?').slice(0, 64);
}

export class Listeners {
  private config: Config;
  private readonly log: Logger;
  private readonly spool: SpoolSink;
  private readonly onQueued: (env: Envelope) => void;
  private readonly metrics?: ListenerMetrics;
  private readonly running: Running[] = [];
  private readonly logins: Logins;
  private readonly connections = new ConnectionCounter();
  /**
   * Every connection from accept to socket close (smtp-server's onClose), with what must
   * end with it: timers that would otherwise keep the connection object alive.
   */
  private readonly live = new Map<string, { conn: Conn; listener: string; stops: Array<() => void> }>();
  private endedSinceGc = 0;
  /** session id -> ip, for connections counted against the per-IP cap. */
  private readonly counted = new Map<string, string>();
  private readonly transactions = new WeakMap<SMTPServerSession, Transaction>();
  /** Sessions inside DATA (stop() lets them finish). */
  private readonly inData = new Set<SMTPServerSession>();
  private readonly pending = new Set<Promise<void>>();
  private users = new Map<string, UserConfig>();
  private accounts = new Map<string, AccountConfig>();
  private policies = new Map<string, SenderPolicy>();
  private stopping = false;
  private readonly transportLimitOf: (account: AccountConfig) => TransportSizeLimit | null;
  /** Our name in the greeting and in Received: headers. */
  private readonly hostName = hostname();
  /** What DATA needs of this stage (listener/data.ts). */
  private readonly data: DataContext;

  constructor(opts: ListenersOptions) {
    this.config = opts.config;
    this.log = opts.log.child({ component: 'listener' });
    this.spool = opts.spool;
    this.onQueued = opts.onQueued;
    this.metrics = opts.metrics;
    this.transportLimitOf = opts.transportLimit ?? (() => null);
    this.data = {
      log: this.log,
      spool: this.spool,
      hostName: this.hostName,
      onQueued: this.onQueued,
      transportLimitOf: this.transportLimitOf,
    };
    this.logins = new Logins(opts.authFailures);
    this.index(opts.config);
  }

  async start(): Promise<BoundListener[]> {
    assertSmtpServerHooks();
    try {
      for (const cfg of this.config.listeners) {
        this.warnAboutCleartext(cfg);
        const rt = { cfg, trusted: trustedNetworksOf(cfg), slots: new SlotShare() } as Running;
        rt.server = await this.createServer(rt);
        this.running.push(rt);
        await this.listen(rt);
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    return this.running.map((r) => r.bound!);
  }

  /** SIGHUP: users, senders, accounts, trusted networks, limits and certificates; sessions keep going. */
  async reload(config: Config): Promise<void> {
    this.config = config;
    this.index(config);
    this.logins.cache.clear();
    for (const rt of this.running) {
      const next = config.listeners.find((l) => l.name === rt.cfg.name);
      if (!next) {
        this.log.warn('listener removed from the config keeps running until restart', { listener: rt.cfg.name });
        continue;
      }
      if (next.host !== rt.cfg.host || next.port !== rt.cfg.port || next.tls !== rt.cfg.tls)
        this.log.warn('listener host/port/tls changes need a restart', { listener: next.name });
      const effective: ListenerConfig = { ...next, host: rt.cfg.host, port: rt.cfg.port, tls: rt.cfg.tls };
      if (effective.tls !== 'none') {
        try {
          await this.applyTls(rt.server, effective);
        } catch (err) {
          this.log.error('listener certificate reload failed, keeping the old one', { listener: next.name, err });
          effective.certFile = rt.cfg.certFile;
          effective.keyFile = rt.cfg.keyFile;
          effective.minTlsVersion = rt.cfg.minTlsVersion;
        }
      }
      Object.assign(rt.server.options, this.sessionOptions(effective));
      rt.cfg = effective;
      rt.trusted = trustedNetworksOf(effective);
    }
    for (const l of config.listeners)
      if (!this.running.some((r) => r.cfg.name === l.name))
        this.log.warn('new listener starts after a restart', { listener: l.name });
  }

  /** Stops accepting; sessions in DATA may finish (bounded by closeTimeout), the rest get 421. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.running.map(
        (rt) =>
          new Promise<void>((resolve) => {
            if (!rt.bound) return resolve();
            rt.server.close(() => resolve());
            for (const conn of rt.server.connections) {
              if (!this.inData.has(conn.session)) conn.send(421, '4.3.2 Service shutting down, try again later');
            }
          }),
      ),
    );
    await Promise.allSettled([...this.pending]);
    this.running.length = 0;
  }

  // ---- setup -------------------------------------------------------------------------

  private warnAboutCleartext(l: ListenerConfig): void {
    const loopbackOnly = isLoopback(l.host) || l.host === 'localhost';
    if (l.tls !== 'none' || loopbackOnly) return;
    if (l.allowInsecureAuth)
      this.log.warn('passwords may cross the network in cleartext on this listener', { listener: l.name });
    else if (!l.proxyProtocol)
      this.log.warn(
        'cleartext listener: AUTH from non-loopback clients is refused (538); set tls or allowInsecureAuth',
        { listener: l.name },
      );
  }

  private index(config: Config): void {
    this.users = new Map(config.users.map((u) => [u.username, u]));
    this.accounts = new Map(config.accounts.map((a) => [a.name, a]));
    this.policies = new Map(
      config.users.map((u) => [
        u.username,
        new SenderPolicy(u.allowedSenders ?? [this.accounts.get(u.account)?.email ?? ''].filter(Boolean)),
      ]),
    );
  }

  /** Options that can change on reload without rebinding. */
  private sessionOptions(l: ListenerConfig): Partial<SMTPServerOptions> {
    return {
      size: l.maxMessageSize,
      maxClients: l.maxClients,
      useProxy: l.proxyProtocol ? (l.proxyFrom?.length ? l.proxyFrom : true) : false,
      socketTimeout: l.socketTimeout,
      closeTimeout: l.closeTimeout,
    };
  }

  private async tlsOptions(l: ListenerConfig): Promise<Partial<SMTPServerOptions>> {
    const pair = await loadKeyPair(l, this.config.stateDir, this.log);
    const legacy = l.minTlsVersion === 'TLSv1' || l.minTlsVersion === 'TLSv1.1';
    if (legacy)
      this.log.warn('listener allows legacy TLS versions', { listener: l.name, minTlsVersion: l.minTlsVersion });
    return {
      key: pair.key,
      cert: pair.cert,
      minVersion: l.minTlsVersion,
      // OpenSSL 3 refuses TLS 1.0/1.1 handshakes at its default security level.
      ciphers: legacy ? LEGACY_TLS_CIPHERS : undefined,
    };
  }

  private async applyTls(server: SMTPServer, l: ListenerConfig): Promise<void> {
    server.updateSecureContext(await this.tlsOptions(l));
  }

  /** The handlers read `rt.cfg` at call time, so a reload applies to the next command. */
  private async createServer(rt: Running): Promise<SMTPServer> {
    const l = rt.cfg;
    const tls = l.tls === 'none' ? {} : await this.tlsOptions(l);
    const options: SMTPServerOptions = {
      name: this.hostName,
      banner: 'xoauth2-bridge',
      secure: l.tls === 'implicit',
      disabledCommands: l.tls === 'none' ? ['STARTTLS'] : [],
      hideENHANCEDSTATUSCODES: false,
      hideDSN: true,
      authMethods: ['PLAIN', 'LOGIN'],
      // Trusted networks relay without AUTH; MAIL FROM enforces it for everyone else.
      authOptional: true,
      // Checked per client in the AUTH hook (loopback is fine without TLS).
      allowInsecureAuth: true,
      disableReverseLookup: true,
      // Exim sends `.` and QUIT in one write and half-closes: its replies must still go out.
      allowHalfOpen: true,
      logger: bunyanAdapter(this.log, 'smtp-in'),
      ...this.sessionOptions(l),
      ...tls,
      onConnect: (session, cb) => this.onConnect(rt, session, cb),
      onAuth: (auth, session, cb) => {
        this.onAuth(rt, auth, session, cb).catch((err) => {
          this.log.error('auth handler failed', { err });
          cb(new SmtpReply(454, '4.7.0 Temporary authentication failure'));
        });
      },
      onMailFrom: (address, session, cb) => this.onMailFrom(rt, address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(rt, address, session, cb),
      onData: (stream, session, cb) => {
        let answered = false;
        const once: typeof cb = (err, msg) => {
          if (answered) return;
          answered = true;
          cb(err, msg);
        };
        this.track(
          this.onData(rt, stream, session, once).catch((err) => {
            this.log.error('message handling failed', { err });
            stream.resume();
            once(new SmtpReply(451, '4.3.0 Local error in processing'));
          }),
        );
      },
      onClose: (session) => {
        rt.slots.release(session.id);
        this.onClose(session);
        this.ended(session.id);
      },
    };
    const server = new SMTPServer(options);
    hookServer(
      server,
      (conn) => this.hookConnection(rt, conn),
      // Every slot taken (the reserve too): an unauthenticated session makes room, so
      // smtp-server's own maxClients check does not turn the newcomer away.
      () => {
        if (server.connections.size < rt.cfg.maxClients) return;
        const evicted = rt.slots.evictOldest();
        if (evicted !== null)
          this.log.warn('pre-auth session closed to make room', {
            listener: rt.cfg.name,
            ip: this.counted.get(evicted),
            reason: 'every slot taken',
          });
      },
    );
    // PROXY v2 as well as smtp-server's v1 (only where useProxy asks for a header at all).
    acceptProxyV2(server);
    server.on('error', (err: Error & { remoteAddress?: string; meta?: { remoteAddress?: string } }) => {
      const ip = err.remoteAddress ?? err.meta?.remoteAddress;
      if (ip) this.log.info('smtp session error', { listener: rt.cfg.name, ip, err });
      else this.log.error('smtp listener error', { listener: rt.cfg.name, err });
    });
    return server;
  }

  private listen(rt: Running): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) =>
        reject(new Error(listenFailure(rt.cfg, this.config.listeners.indexOf(rt.cfg), err)));
      rt.server.server.once('error', onError);
      rt.server.listen(rt.cfg.port, rt.cfg.host, () => {
        rt.server.server.removeListener('error', onError);
        const addr = rt.server.server.address();
        const port = addr && typeof addr === 'object' ? addr.port : rt.cfg.port;
        rt.bound = { name: rt.cfg.name, host: rt.cfg.host, port };
        this.log.info('listening', { listener: rt.cfg.name, host: rt.cfg.host, port, tls: rt.cfg.tls });
        resolve();
      });
    });
  }

  /**
   * Per-connection hooks (see hooks.ts): (1) replies whose text starts with an enhanced
   * status code keep exactly that code (smtp-server would prefix its generic one per reply
   * code), and replies reach a client that half-closed; (2) AUTH is refused before any
   * credential is exchanged when encryption is required (onAuth only runs after the client
   * sent them); (3) the client's EOF ends the session once its replies are out; (4) the
   * greeting goes out without smtp-server's fixed pause.
   */
  private hookConnection(rt: Running, conn: Conn): void {
    notePeer(conn);
    const send = sendToHalfClosed(conn, conn.send.bind(conn));
    conn.send = (code, data, context) => {
      if (
        code === 552 &&
        typeof data === 'string' &&
        data.startsWith('Error: message exceeds fixed maximum message size')
      )
        data = '5.3.4 Message size exceeds fixed maximum message size';
      if (typeof data === 'string' && HAS_ENHANCED.test(data)) context = false;
      send(code, data, context);
    };
    const auth = conn.handler_AUTH.bind(conn);
    conn.handler_AUTH = (command, callback) => {
      if (!conn.session.secure && !isLocalPeer(conn.session) && !rt.cfg.allowInsecureAuth) {
        conn.send(538, '5.7.11 Encryption required for requested authentication mechanism');
        return callback();
      }
      auth(command, callback);
    };
    closeAfterClientEof(conn);
    const stops = [
      greetAfter(conn, rt.cfg.greetingDelay),
      preAuthDeadline(conn, rt.cfg.preAuthTimeout, () =>
        this.log.info('pre-auth timeout, connection closed', {
          listener: rt.cfg.name,
          ip: conn.session.remoteAddress,
          timeoutMs: rt.cfg.preAuthTimeout,
        }),
      ),
    ];
    this.live.set(conn.id, { conn, listener: rt.cfg.name, stops });
    this.metrics?.connectionsOpen?.(rt.cfg.name, 1);
  }

  /** The socket of connection `id` closed: its timers and bookkeeping end with it. */
  private ended(id: string): void {
    const c = this.live.get(id);
    if (!c) return;
    this.live.delete(id);
    for (const stop of c.stops) stop();
    this.metrics?.connectionsOpen?.(c.listener, -1);
    // Each connection leaves its socket's read buffers behind, and a storm of short sessions
    // allocates little else: collect them before the young generation fills with them
    // (default Node flags: RSS stayed +125 MB after 10,000 sessions, see collectYoung).
    if (++this.endedSinceGc >= GC_EVERY_CONNECTIONS) {
      this.endedSinceGc = 0;
      collectYoung();
    }
  }

  /** Connections whose socket has not closed yet (all listeners). */
  liveConnections(): number {
    return this.live.size;
  }

  private track(p: Promise<void>): void {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  // ---- SMTP handlers -------------------------------------------------------------------

  private onConnect(rt: Running, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const ip = session.remoteAddress;
    if (this.stopping) return cb(new SmtpReply(421, '4.3.2 Service shutting down, try again later'));
    if (!this.connections.acquire(ip, rt.cfg.maxConnectionsPerIp)) {
      this.log.warn('too many connections from one address', {
        listener: rt.cfg.name,
        ip,
        limit: rt.cfg.maxConnectionsPerIp,
      });
      return cb(new SmtpReply(421, '4.7.0 Too many connections from your address, try again later'));
    }
    const reserved = rt.cfg.reservedClients ?? Math.floor(rt.cfg.maxClients / 10);
    const evicted = rt.slots.admit(session.id, rt.trusted.has(ip), rt.cfg.maxClients - reserved, () =>
      this.evict(session.id),
    );
    if (evicted !== null)
      this.log.warn('pre-auth session closed to make room', {
        listener: rt.cfg.name,
        ip: this.counted.get(evicted),
        for: ip,
        reason: 'unauthenticated share full',
      });
    this.counted.set(session.id, ip);
    cb();
  }

  /** Closes a session that has not authenticated, to give its slot to a newer connection. */
  private evict(id: string): void {
    const conn = this.live.get(id)?.conn;
    if (!conn || conn._closing || conn._closed) return;
    conn.send(421, '4.7.0 Too many connections, try again later');
  }

  private onClose(session: SMTPServerSession): void {
    const ip = this.counted.get(session.id);
    if (ip === undefined) return;
    this.counted.delete(session.id);
    this.connections.release(ip);
  }

  private authLimits(l: ListenerConfig): AuthLimits {
    return { limit: l.authFailLimit, windowMs: l.authFailWindow, lockoutMs: l.authLockout };
  }

  private async onAuth(
    rt: Running,
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): Promise<void> {
    const ip = session.remoteAddress;
    const username = auth.username ?? '';
    const password = auth.password ?? '';
    // We do not support acting on behalf of another identity (RFC 4616 authzid): such a
    // login is checked like an unknown user's (same cost, never succeeds).
    const proxyAttempt = auth.method === 'PLAIN' && !!auth.authzid && !!auth.authcid && auth.authzid !== auth.authcid;
    const user = proxyAttempt ? undefined : this.users.get(username);
    const limits = this.authLimits(rt.cfg);
    const verdict = await this.logins.check(ip, username, password, user?.passwordHash, limits);
    if (verdict.result === 'ok' && user) {
      this.log.debug('auth ok', { listener: rt.cfg.name, ip, user: user.username });
      rt.slots.authenticated(session.id);
      return cb(null, { user: user.username });
    }
    if (verdict.failed) {
      // Stable lines for fail2ban (config/fail2ban/filter.d/xoauth2-bridge.conf): the same
      // whether or not the user exists, and never the password.
      this.log.warn(`auth failed ip=${ip}`, {
        ip,
        listener: rt.cfg.name,
        method: auth.method,
        user: safeUser(username),
      });
      this.metrics?.authFailure(rt.cfg.name);
    }
    if (verdict.lockoutStarted) {
      this.metrics?.lockout(rt.cfg.name);
      this.log.warn(`auth lockout ip=${ip}`, {
        ip,
        scope: clientKey(ip),
        listener: rt.cfg.name,
        failures: limits.limit,
        lockoutSeconds: Math.round(limits.lockoutMs / 1000),
      });
    }
    if (verdict.result === 'locked') return cb(new SmtpReply(454, '4.7.0 Too many authentication failures, try later'));
    cb(new SmtpReply(535, '5.7.8 Authentication credentials invalid'));
  }

  private onMailFrom(
    rt: Running,
    address: SMTPServerAddress,
    session: SMTPServerSession,
    cb: (err?: Error | null) => void,
  ): void {
    const ip = session.remoteAddress;
    let tx: Transaction | undefined;
    if (session.user) {
      const user = this.users.get(session.user as string);
      const account = user && this.accounts.get(user.account);
      const policy = user && this.policies.get(user.username);
      // The user may have been removed by a reload since it authenticated.
      if (user && account && policy) tx = { user: user.username, account, policy, owner: `user ${user.username}` };
    } else if (rt.cfg.trustedAccount && rt.trusted.has(ip)) {
      const account = this.accounts.get(rt.cfg.trustedAccount);
      if (account)
        tx = {
          user: null,
          account,
          policy: new SenderPolicy(rt.cfg.trustedSenders ?? [account.email]),
          owner: `trusted account ${account.name}`,
        };
    }
    if (!tx) return cb(new SmtpReply(530, '5.7.0 Authentication required'));
    // The null sender (bounces relayed by an MTA) owns no address; the From header is still checked.
    if (address.address !== '' && !tx.policy.allows(address.address)) {
      this.log.info('sender rejected', {
        listener: rt.cfg.name,
        ip,
        user: tx.user,
        from: addressForLog(address.address),
      });
      return cb(new SmtpReply(553, `5.7.1 Sender address rejected: not owned by ${tx.owner}`));
    }
    // The client announced the size: refuse now what the account's transport cannot send.
    const limit = tighter(this.transportLimitOf(tx.account), rt.cfg.maxMessageSize);
    const announced = Number(address.args ? address.args.SIZE : undefined);
    if (limit && announced > limit.bytes) {
      this.log.info('message too big', {
        listener: rt.cfg.name,
        ip,
        user: tx.user,
        limit: limit.bytes,
        size: announced,
      });
      return cb(new SmtpReply(552, tooBigText(limit)));
    }
    this.transactions.set(session, tx);
    cb();
  }

  private onRcptTo(
    rt: Running,
    address: SMTPServerAddress,
    session: SMTPServerSession,
    cb: (err?: Error | null) => void,
  ): void {
    const rcpts = session.envelope.rcptTo;
    const repeated = rcpts.some((r) => r.address.toLowerCase() === address.address.toLowerCase());
    if (!repeated && rcpts.length >= rt.cfg.maxRecipients) return cb(new SmtpReply(452, '4.5.3 Too many recipients'));
    cb();
  }

  private async onData(
    rt: Running,
    stream: SMTPServerDataStream,
    session: SMTPServerSession,
    cb: (err?: Error | null, message?: string) => void,
  ): Promise<void> {
    const tx = this.transactions.get(session);
    const mailFrom = session.envelope.mailFrom;
    if (!tx || !mailFrom) {
      stream.resume();
      return cb(new SmtpReply(503, '5.5.1 Bad sequence of commands'));
    }
    this.inData.add(session);
    try {
      await receiveData(this.data, rt.cfg, tx, { stream, session, mailFrom: mailFrom.address }, cb);
    } finally {
      this.inData.delete(session);
    }
  }
}

/** Why a listener could not bind, naming its config key and the fix for the common causes. */
function listenFailure(cfg: ListenerConfig, index: number, err: NodeJS.ErrnoException): string {
  const key = `listeners[${index}].port`;
  const head = `${key}: listener "${cfg.name}" cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`;
  if (err.code === 'EADDRINUSE')
    return `${head}. Another process holds the port (\`ss -ltnp 'sport = :${cfg.port}'\` shows which): stop it, or set ${key} to a free port`;
  if (err.code === 'EACCES' && cfg.port < 1024)
    return `${head}. Ports below 1024 need CAP_NET_BIND_SERVICE: start the daemon through its systemd unit (\`systemctl start xoauth2-bridge\`; the unit grants it with AmbientCapabilities=), or set ${key} to a port above 1023`;
  if (err.code === 'EADDRNOTAVAIL')
    return `${head}. No interface has the address ${cfg.host}: fix listeners[${index}].host`;
  return head;
}
