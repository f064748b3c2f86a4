// Wires the stages together: listener -> spool -> delivery -> upstream, with the token
// service beside them. `serve` and `demo` both run a Bridge; tests start one in-process.
import { mkdir } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { loadConfig } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { Spool } from '../spool/spool.js';
import { DeliveryWorker } from '../delivery/worker.js';
import { TransportRouter, maxMessageBytes } from '../upstream/router.js';
import { TokenService } from '../oauth/service.js';
import { Listeners } from '../listener/server.js';
import { acquireStateLock, type StateLock } from '../control/stateLock.js';
import { ControlServer } from '../control/server.js';
import { Operations } from '../control/ops.js';
import type { SpooledEnvelope } from '../types.js';
import { Metrics } from '../metrics/metrics.js';
import { readFileSync } from 'node:fs';
import { HttpEndpoint, spoolWritable, accountNotReadyReason, type Readiness } from '../http/server.js';
import { WebConsole } from '../http/console/console.js';
import { consoleOps } from '../http/console/ops.js';
import { AlertMonitor } from '../alerts/monitor.js';
import { UpstreamHealth } from '../alerts/upstream.js';
import { UpstreamReadiness } from './upstreamReadiness.js';
import { MailSender, WebhookSender, type AlertSender } from '../alerts/send.js';
import type { DeliveryMetrics } from '../delivery/worker.js';

export interface BridgeOptions {
  config: Config;
  /** Where SIGHUP re-reads the config from. */
  configFile?: string;
  log: Logger;
  env?: NodeJS.ProcessEnv;
  /** Measurement only (bench): skip fsync. Never a config key. */
  unsafeNoFsync?: boolean;
  /** Tests: bind the HTTP endpoint on a random port even when http.port is 0. */
  httpEphemeral?: boolean;
  /** Tests: how long an upstream must fail every attempt before /readyz says so (default 5 min). */
  upstreamNotReadyAfterMs?: number;
}

export class Bridge {
  config: Config;
  readonly log: Logger;
  readonly spool: Spool;
  readonly tokens: TokenService;
  readonly upstream: TransportRouter;
  readonly worker: DeliveryWorker;
  readonly listeners: Listeners;
  readonly metrics: Metrics;
  readonly http: HttpEndpoint;
  readonly alerts: AlertMonitor;
  readonly console: WebConsole | null;
  readonly upstreamHealth = new UpstreamHealth();
  private readonly upstreamReadiness: UpstreamReadiness;
  /** Every operation on live state (control socket, console): one owner, one set of answers. */
  readonly ops: Operations;
  private readonly control: ControlServer;
  private lock?: StateLock;
  httpAddress: { host: string; port: number } | null = null;
  bound: Array<{ name: string; host: string; port: number }> = [];
  private draining = false;
  private readonly configFile?: string;

  constructor(opts: BridgeOptions) {
    this.config = opts.config;
    this.configFile = opts.configFile;
    this.log = opts.log;
    this.metrics = new Metrics({ log: this.log, ...names(this.config) });
    const metrics = this.metrics;
    this.upstreamReadiness = new UpstreamReadiness(this.upstreamHealth, { afterMs: opts.upstreamNotReadyAfterMs });
    this.upstreamReadiness.register(metrics.registry, () => this.config.accounts.map((a) => a.name));
    this.spool = new Spool(this.config.stateDir, this.log, {
      fsync: !opts.unsafeNoFsync,
      onCorrupt: () => metrics.corruptEnvelope(),
    });
    this.tokens = new TokenService({ config: this.config, log: this.log, env: opts.env, metrics });
    this.upstream = new TransportRouter({ config: this.config, log: this.log, tokens: this.tokens });
    // The alert monitor learns how long each upstream has been failing from the same results.
    const delivery: DeliveryMetrics = {
      delivered: (a, n) => metrics.delivered(a, n),
      deferred: (a) => metrics.deferred(a),
      bounced: (a) => metrics.bounced(a),
      dataLost: (a) => metrics.dataLost(a),
      upstreamReply: (a, o) => {
        metrics.upstreamReply(a, o);
        this.upstreamHealth.record(a, o);
        this.upstreamReadiness.record(a, o);
      },
    };
    this.worker = new DeliveryWorker({
      config: this.config,
      log: this.log,
      spool: this.spool,
      upstream: this.upstream,
      health: this.tokens,
      metrics: delivery,
    });
    this.listeners = new Listeners({
      config: this.config,
      log: this.log,
      spool: this.spool,
      metrics,
      onQueued: (env) => {
        metrics.received(env.account, env.size);
        // The listener sees the envelope as the upstream would; it is the spool's full envelope.
        this.worker.notify(env as SpooledEnvelope);
      },
      transportLimit: maxMessageBytes,
    });
    this.tokens.onChange((account, state) => metrics.accountState(account, state));
    metrics.setQueueSource(() => {
      const st = this.worker.stats();
      return { size: st.queued, oldestAgeSeconds: st.oldestAgeMs === null ? 0 : st.oldestAgeMs / 1000 };
    });
    this.alerts = new AlertMonitor({
      config: () => this.config,
      log: this.log.child({ component: 'alerts' }),
      registry: metrics.registry,
      senders: () => this.alertSenders(),
      facts: {
        accounts: () => {
          const st = new Map(this.tokens.status().map((s) => [s.account, s]));
          return this.config.accounts.flatMap((config) =>
            st.has(config.name) ? [{ config, status: st.get(config.name)! }] : [],
          );
        },
        oldestQueuedMs: () => this.worker.stats().oldestAgeMs,
        upstream: this.upstreamHealth,
        stateDir: () => this.config.stateDir,
        onAccountChange: (l) => this.tokens.onChange(l),
      },
    });
    const h = this.config.http;
    const tls =
      h.certFile && h.keyFile
        ? { cert: readPem(h.certFile, 'http.certFile'), key: readPem(h.keyFile, 'http.keyFile') }
        : undefined;
    this.console = h.console
      ? new WebConsole({
          config: () => this.config,
          ops: consoleOps({ ops: () => this.ops, config: () => this.config, held: () => this.worker.stats().held }),
          log: this.log.child({ component: 'console' }),
          tls: Boolean(tls),
          attention: () => this.alerts.active(),
          env: opts.env,
        })
      : null;
    this.http = new HttpEndpoint({
      host: h.host,
      port: h.port,
      metrics,
      log: this.log,
      ready: () => this.readiness(),
      ephemeral: opts.httpEphemeral,
      tls,
      console: this.console ?? undefined,
    });
    this.ops = new Operations({
      config: () => this.config,
      spool: this.spool,
      worker: this.worker,
      tokens: this.tokens,
      reload: () => this.reload(),
      consoleLink: () => this.console?.mintLink(this.httpAddress) ?? null,
      live: true,
      upstream: this.upstream,
      log: this.log,
    });
    this.control = new ControlServer(this.config.stateDir, this.ops, this.log);
  }

  private senderCache?: { key: string; senders: AlertSender[] };

  /** Built from the current config (SIGHUP may change alerts:). */
  private alertSenders(): AlertSender[] {
    const a = this.config.alerts;
    const key = JSON.stringify([a.webhook, a.caFile, a.email, a.emailAccount]);
    if (this.senderCache?.key === key) return this.senderCache.senders;
    const senders: AlertSender[] = [];
    const log = this.log.child({ component: 'alerts' });
    if (a.webhook) senders.push(new WebhookSender(a.webhook, a.caFile, log));
    if (a.email)
      senders.push(
        new MailSender({
          to: a.email,
          account: a.emailAccount ?? null,
          accounts: () => this.tokens.status().map((s) => ({ name: s.account, email: s.email, state: s.state })),
          enqueue: async (raw, meta) => {
            const env = await this.spool.receive([raw], {
              ...meta,
              user: null,
              clientIp: '127.0.0.1',
              bodyType: '8bitmime',
              smtputf8: false,
            });
            this.metrics.received(env.account, env.size);
            this.worker.notify(env);
            return env;
          },
        }),
      );
    this.senderCache = { key, senders };
    return senders;
  }

  /** /readyz: listeners bound, spool writable, every account's token usable and upstream not failing. */
  async readiness(): Promise<Readiness> {
    const reasons: string[] = [];
    if (this.draining)
      reasons.push('draining: the bridge is stopping; sessions and deliveries in flight are finishing');
    else if (!this.bound.length) reasons.push('listeners not bound yet');
    const spool = await spoolWritable(this.spool.dir);
    if (spool) reasons.push(spool);
    for (const st of this.tokens.status()) {
      const r = accountNotReadyReason(st.account, st.state, st.lastError ?? undefined);
      if (r) reasons.push(r);
    }
    for (const a of this.config.accounts) {
      const r = this.upstreamReadiness.reason(a.name);
      if (r) reasons.push(r);
    }
    return { ok: reasons.length === 0, reasons };
  }

  async start(): Promise<void> {
    // One owner per state directory: a second daemon is refused here, naming the first one's PID.
    await mkdir(this.config.stateDir, { recursive: true, mode: 0o750 });
    this.lock = await acquireStateLock(this.config.stateDir, 'daemon');
    await this.spool.init();
    await this.tokens.init();
    await this.worker.start();
    for (const st of this.tokens.status()) this.metrics.accountState(st.account, st.state);
    this.tokens.startSchedule();
    this.bound = await this.listeners.start();
    this.httpAddress = await this.http.start();
    this.alerts.start();
    // CLI commands (queue, token, authorize, reload) ask over stateDir/control.sock.
    await this.control.start();
    this.log.info('xoauth2-bridge started', {
      listeners: this.bound.map((b) => `${b.name}=${b.host}:${b.port}`),
      http: this.httpAddress ? `${this.httpAddress.host}:${this.httpAddress.port}` : 'off',
      accounts: this.config.accounts.map((a) => a.name),
      stateDir: this.config.stateDir,
    });
  }

  /** SIGHUP: re-read the config; an invalid one is logged and the running one kept. */
  async reload(): Promise<boolean> {
    if (!this.configFile) return false;
    let next: Config;
    try {
      next = loadConfig(this.configFile);
    } catch (err) {
      this.log.error('reload rejected, keeping the running config', { err });
      return false;
    }
    if (next.stateDir !== this.config.stateDir) {
      this.log.error('reload rejected: stateDir cannot change while running, restart instead');
      return false;
    }
    this.config = next;
    this.metrics.configure(names(next));
    this.tokens.reload(next);
    this.upstream.reload(next);
    this.worker.reload(next);
    await this.listeners.reload(next);
    this.log.info('config reloaded', { users: next.users.length, accounts: next.accounts.length });
    return true;
  }

  /** SIGTERM: stop accepting, let in-flight sends finish (bounded), keep the rest spooled. */
  async stop(timeoutMs = 30_000): Promise<void> {
    // /readyz answers 503 from now on, while the listeners drain: a balancer stops sending at once.
    this.draining = true;
    await this.control.stop();
    await this.alerts.stop();
    await this.listeners.stop();
    await this.worker.stop(timeoutMs);
    this.tokens.stop();
    await this.upstream.close();
    await this.http.stop();
    await this.spool.close();
    await this.lock?.release();
    this.lock = undefined;
    this.log.info('xoauth2-bridge stopped');
  }
}

function readPem(file: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new Error(`${key}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function names(c: Config): { accounts: string[]; listeners: string[] } {
  return { accounts: c.accounts.map((a) => a.name), listeners: c.listeners.map((l) => l.name) };
}
