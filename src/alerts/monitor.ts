// The alert monitor: tells the configured senders once when an episode of a condition a
// person must hear about starts and once when it ends. State changes alert at once, from the
// events that report them: an account turning needs-reauth (or usable again) from the token
// service, an upstream failing for alerts.upstreamFailingFor from the delivery results (a
// timer set when the failing streak starts), free disk space crossing alerts.diskFreeWarn from
// a statfs every DISK_WATCH_MS. Only age-based conditions (queue age, grant expiry) wait for
// the periodic check every alerts.checkInterval, which also re-reads every state as a safety
// net. The same facts stay in /metrics (xoauth2_bridge_alert_firing), the log and /readyz, so
// nothing depends on a webhook or the console.
import { statfs } from 'node:fs/promises';
import { Gauge, type Registry } from 'prom-client';
import type { AccountConfig, Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { AccountStatus } from '../oauth/service.js';
import { formatAge } from '../log/format.js';
import { redactString } from '../log/redact.js';
import { grantRisk } from './grants.js';
import type { AlertNotice, AlertSender } from './send.js';
import type { UpstreamHealth } from './upstream.js';
import type { HealthState } from '../types.js';

/** How often free disk space is read: a crossing of diskFreeWarn alerts within this long. */
const DISK_WATCH_MS = 2_000;

export const ALERTS = ['needs-reauth', 'grant-expiring', 'queue-age', 'upstream-failing', 'disk-low'] as const;
export type AlertName = (typeof ALERTS)[number];
/** Judged by age, so only the periodic check sees them; the others are state changes, alerted at once. */
const AGE_BASED: ReadonlySet<AlertName> = new Set(['grant-expiring', 'queue-age']);

export interface AlertFacts {
  accounts(): Array<{ config: AccountConfig; status: AccountStatus }>;
  /** Age of the oldest queued message, null when the queue is empty. */
  oldestQueuedMs(): number | null;
  upstream: UpstreamHealth;
  stateDir: () => string;
  /** Subscribes to account state changes (the token service's onChange): needs-reauth alerts at once. */
  onAccountChange?(listener: (account: string, state: HealthState) => void): void;
}

interface Condition {
  key: string;
  alert: AlertName;
  account?: string;
  summary: string;
}

interface Episode extends Condition {
  since: number;
}

export interface MonitorOptions {
  config: () => Config;
  log: Logger;
  facts: AlertFacts;
  senders: () => AlertSender[];
  registry?: Registry;
  now?: () => number;
}

export class AlertMonitor {
  private readonly firing = new Map<string, Episode>();
  private timer?: NodeJS.Timeout;
  private diskTimer?: NodeJS.Timeout;
  private diskRunning?: Promise<void>;
  private readonly upstreamTimers = new Map<string, NodeJS.Timeout>();
  private started = false;
  private running?: Promise<void>;
  private readonly gauge?: Gauge<'alert'>;
  private readonly diskGauge?: Gauge;
  private readonly now: () => number;
  private deliveries: Promise<void> = Promise.resolve();

  constructor(private readonly opts: MonitorOptions) {
    this.now = opts.now ?? Date.now;
    if (opts.registry) {
      this.gauge = new Gauge({
        name: 'xoauth2_bridge_alert_firing',
        help: 'Alert episodes in progress, by alert.',
        labelNames: ['alert'],
        registers: [opts.registry],
      });
      for (const a of ALERTS) this.gauge.set({ alert: a }, 0);
      this.diskGauge = new Gauge({
        name: 'xoauth2_bridge_state_disk_free_bytes',
        help: 'Free bytes on the file system holding stateDir (as of the last alert check).',
        registers: [opts.registry],
      });
    }
    opts.facts.onAccountChange?.((account) => {
      if (this.started) this.accountChanged(account);
    });
    // A failing streak started or ended.
    opts.facts.upstream.onChange((account) => {
      if (this.started) this.upstreamCheck(account);
    });
  }

  start(): void {
    if (this.timer) return;
    this.started = true;
    const tick = () => {
      void this.check();
      this.timer = setTimeout(tick, this.opts.config().alerts.checkInterval);
      this.timer.unref();
    };
    tick();
    const watch = () => {
      this.diskTimer = setTimeout(
        () => {
          void this.checkDisk();
          watch();
        },
        Math.min(DISK_WATCH_MS, this.opts.config().alerts.checkInterval),
      );
      this.diskTimer.unref();
    };
    watch();
  }

  async stop(): Promise<void> {
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.diskTimer) clearTimeout(this.diskTimer);
    this.diskTimer = undefined;
    for (const t of this.upstreamTimers.values()) clearTimeout(t);
    this.upstreamTimers.clear();
    await this.running;
    await this.diskRunning;
  }

  /** Open episodes, one line each (the console's banner). */
  active(): string[] {
    return [...this.firing.values()].map((e) => e.summary);
  }

  /** One evaluation pass; passes never overlap. */
  check(): Promise<void> {
    if (this.running) return this.running;
    const p = this.evaluate()
      .catch((err) => this.opts.log.error('alert check failed', { err }))
      .finally(() => {
        this.running = undefined;
      });
    this.running = p;
    return p;
  }

  /**
   * The periodic pass: age-based conditions, and every state condition read again (a safety
   * net for a missed event, and the start: an account may be needs-reauth already). Each kind
   * is read and applied without an await in between, so a pass never undoes a newer event.
   */
  private async evaluate(): Promise<void> {
    const now = this.now();
    const periodic = this.ageConditions(now);
    const seen = new Set(periodic.map((c) => c.key));
    for (const c of periodic) this.raise(c, now);
    for (const e of [...this.firing.values()]) if (AGE_BASED.has(e.alert) && !seen.has(e.key)) this.clear(e.key, now);
    for (const { config: acct } of this.opts.facts.accounts()) {
      this.accountChanged(acct.name);
      this.upstreamCheck(acct.name);
    }
    await this.checkDisk();
  }

  /** Opens an episode (once) and tells the senders. */
  private raise(c: Condition, now = this.now()): void {
    if (this.firing.has(c.key)) return;
    this.firing.set(c.key, { ...c, since: now });
    this.opts.log.warn(`alert: ${c.summary}`, { alert: c.alert, ...(c.account ? { account: c.account } : {}) });
    this.notify({
      alert: c.alert,
      status: 'firing',
      account: c.account,
      summary: c.summary,
      at: new Date(now).toISOString(),
    });
    this.updateGauge();
  }

  /** Ends an episode (if one is open) with one recovery notice. */
  private clear(key: string, now = this.now()): void {
    const e = this.firing.get(key);
    if (!e) return;
    this.firing.delete(key);
    const summary = `${recoveryText(e)} (after ${formatAge(now - e.since)})`;
    this.opts.log.info(`alert resolved: ${summary}`, { alert: e.alert, ...(e.account ? { account: e.account } : {}) });
    this.notify({
      alert: e.alert,
      status: 'resolved',
      account: e.account,
      summary,
      at: new Date(now).toISOString(),
      since: new Date(e.since).toISOString(),
    });
    this.updateGauge();
  }

  private updateGauge(): void {
    if (this.gauge)
      for (const a of ALERTS)
        this.gauge.set({ alert: a }, [...this.firing.values()].filter((e) => e.alert === a).length);
  }

  private statusOf(account: string): { config: AccountConfig; status: AccountStatus } | undefined {
    return this.opts.facts.accounts().find((a) => a.config.name === account);
  }

  /** An account's state changed (or is read again): needs-reauth opens its episode at once, any other state ends it. */
  private accountChanged(account: string): void {
    const a = this.statusOf(account);
    const key = `needs-reauth:${account}`;
    if (a?.status.state === 'needs-reauth')
      this.raise({
        key,
        alert: 'needs-reauth',
        account,
        summary: `account ${account} needs re-authorization; its mail is held. Fix: xoauth2-bridge authorize ${account} (or Authorize in the web console)`,
      });
    else this.clear(key);
  }

  /**
   * Alerts when the account's failing streak has lasted upstreamFailingFor; a streak not that
   * old yet is checked again when it will be. Re-armed here, not only when the streak starts:
   * a timer may fire a millisecond before Date.now() says it is due (the loop's clock is
   * coarser), and a streak is announced once, so a timer that found it not yet due must try again.
   */
  private upstreamCheck(account: string): void {
    clearTimeout(this.upstreamTimers.get(account));
    this.upstreamTimers.delete(account);
    const now = this.now();
    const key = `upstream-failing:${account}`;
    const since = this.opts.facts.upstream.failingSince(account);
    if (since === null) return this.clear(key, now);
    const left = since + this.opts.config().alerts.upstreamFailingFor - now;
    if (left > 0) {
      if (!this.started) return;
      const t = setTimeout(() => this.upstreamCheck(account), left + 1);
      t.unref();
      this.upstreamTimers.set(account, t);
      return;
    }
    const lastError = this.statusOf(account)?.status.lastError;
    this.raise(
      {
        key,
        alert: 'upstream-failing',
        account,
        summary: `account ${account}: upstream failing for ${formatAge(now - since)}${lastError ? ` (last token error: ${redactString(lastError)})` : ''}; see the log`,
      },
      now,
    );
  }

  /** Reads free space; crossing diskFreeWarn either way opens or ends the episode. Reads never overlap. */
  private checkDisk(): Promise<void> {
    if (this.diskRunning) return this.diskRunning;
    const p = (async () => {
      const disk = await this.disk();
      if (!disk) return;
      const w = this.opts.config().alerts.diskFreeWarn;
      const low = w.percent !== undefined ? (disk.free / disk.total) * 100 < w.percent : disk.free < (w.bytes ?? 0);
      if (low)
        this.raise({
          key: 'disk-low',
          alert: 'disk-low',
          summary: `disk almost full: ${(disk.free / 1024 ** 2).toFixed(0)} MB free of ${(disk.total / 1024 ** 2).toFixed(0)} MB under ${this.opts.facts.stateDir()}`,
        });
      else this.clear('disk-low');
    })()
      .catch((err) => this.opts.log.error('disk check failed', { err }))
      .finally(() => {
        this.diskRunning = undefined;
      });
    this.diskRunning = p;
    return p;
  }

  /** Conditions judged by age, evaluated by the periodic check only. */
  private ageConditions(now: number): Condition[] {
    const cfg = this.opts.config().alerts;
    const out: Condition[] = [];
    for (const { config: acct, status: st } of this.opts.facts.accounts()) {
      if (st.state === 'needs-reauth') continue;
      const name = acct.name;
      const risk = grantRisk(acct, st, now, cfg.grantExpiryWarn);
      if (risk.level === 'warn')
        out.push({
          key: `grant-expiring:${name}`,
          alert: 'grant-expiring',
          account: name,
          summary: `account ${name}: grant about to expire: ${risk.text}`,
        });
    }
    const oldest = this.opts.facts.oldestQueuedMs();
    if (oldest !== null && oldest >= cfg.queueAgeWarn)
      out.push({
        key: 'queue-age',
        alert: 'queue-age',
        summary: `oldest queued message is ${formatAge(oldest)} old (alerts.queueAgeWarn: ${formatAge(cfg.queueAgeWarn)})`,
      });
    return out;
  }

  private async disk(): Promise<{ free: number; total: number } | null> {
    try {
      const s = await statfs(this.opts.facts.stateDir());
      const free = s.bavail * s.bsize;
      this.diskGauge?.set(free);
      return { free, total: s.blocks * s.bsize };
    } catch (err) {
      this.opts.log.warn('alert check: cannot read free disk space', { err });
      return null;
    }
  }

  /** Sends in order (a recovery never overtakes its alert); a failed sender is logged. */
  private notify(n: AlertNotice): void {
    const senders = this.opts.senders();
    this.deliveries = this.deliveries.then(() =>
      Promise.all(
        senders.map((s) =>
          s.send(n).catch((e: unknown) =>
            this.opts.log.error(`alert could not be sent by ${s.name}`, {
              alert: n.alert,
              status: n.status,
              error: (e as Error).message,
            }),
          ),
        ),
      ).then(() => {}),
    );
  }

  /** Waits until every notice so far was handed to the senders (tests, shutdown). */
  flush(): Promise<void> {
    return this.deliveries;
  }
}

function recoveryText(e: Episode): string {
  switch (e.alert) {
    case 'needs-reauth':
      return `account ${e.account} is authorized again; its held mail is being sent`;
    case 'grant-expiring':
      return `account ${e.account}: grant no longer about to expire`;
    case 'queue-age':
      return 'queue caught up: no message older than alerts.queueAgeWarn';
    case 'upstream-failing':
      return `account ${e.account}: upstream works again`;
    case 'disk-low':
      return 'disk space back above alerts.diskFreeWarn';
  }
}
