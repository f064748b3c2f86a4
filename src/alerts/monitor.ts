// The alert monitor: every alerts.checkInterval it evaluates the conditions a person must
// hear about, and tells the configured senders once when an episode starts and once when
// it ends. The same facts stay in /metrics (xoauth2_bridge_alert_firing), the log and
// /readyz, so nothing depends on a webhook or the console.
import { statfs } from 'node:fs/promises';
import { Gauge, type Registry } from 'prom-client';
import type { AccountConfig, Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { AccountStatus } from '../oauth/service.js';
import { formatAge } from '../cli/queue.js';
import { redactString } from '../log/redact.js';
import { grantRisk } from './grants.js';
import type { AlertNotice, AlertSender } from './send.js';
import type { UpstreamHealth } from './upstream.js';

export const ALERTS = ['needs-reauth', 'grant-expiring', 'queue-age', 'upstream-failing', 'disk-low'] as const;
export type AlertName = (typeof ALERTS)[number];

export interface AlertFacts {
  accounts(): Array<{ config: AccountConfig; status: AccountStatus }>;
  /** Age of the oldest queued message, null when the queue is empty. */
  oldestQueuedMs(): number | null;
  upstream: UpstreamHealth;
  stateDir: () => string;
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
  private running?: Promise<void>;
  private readonly gauge?: Gauge<'alert'>;
  private readonly diskGauge?: Gauge;
  private readonly now: () => number;
  private deliveries: Promise<void> = Promise.resolve();

  constructor(private readonly opts: MonitorOptions) {
    this.now = opts.now ?? Date.now;
    if (opts.registry) {
      this.gauge = new Gauge({ name: 'xoauth2_bridge_alert_firing', help: 'Alert episodes in progress, by alert.', labelNames: ['alert'], registers: [opts.registry] });
      for (const a of ALERTS) this.gauge.set({ alert: a }, 0);
      this.diskGauge = new Gauge({ name: 'xoauth2_bridge_state_disk_free_bytes', help: 'Free bytes on the file system holding stateDir (as of the last alert check).', registers: [opts.registry] });
    }
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      void this.check();
      this.timer = setTimeout(tick, this.opts.config().alerts.checkInterval);
      this.timer.unref();
    };
    tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
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

  private async evaluate(): Promise<void> {
    const now = this.now();
    const current = await this.conditions(now);
    const seen = new Set<string>();
    for (const c of current) {
      seen.add(c.key);
      if (this.firing.has(c.key)) continue;
      this.firing.set(c.key, { ...c, since: now });
      this.opts.log.warn(`alert: ${c.summary}`, { alert: c.alert, ...(c.account ? { account: c.account } : {}) });
      this.notify({ alert: c.alert, status: 'firing', account: c.account, summary: c.summary, at: new Date(now).toISOString() });
    }
    for (const [key, e] of this.firing) {
      if (seen.has(key)) continue;
      this.firing.delete(key);
      const summary = `${recoveryText(e)} (after ${formatAge(now - e.since)})`;
      this.opts.log.info(`alert resolved: ${summary}`, { alert: e.alert, ...(e.account ? { account: e.account } : {}) });
      this.notify({ alert: e.alert, status: 'resolved', account: e.account, summary, at: new Date(now).toISOString(), since: new Date(e.since).toISOString() });
    }
    if (this.gauge) for (const a of ALERTS) this.gauge.set({ alert: a }, [...this.firing.values()].filter((e) => e.alert === a).length);
  }

  private async conditions(now: number): Promise<Condition[]> {
    const cfg = this.opts.config().alerts;
    const out: Condition[] = [];
    for (const { config: acct, status: st } of this.opts.facts.accounts()) {
      const name = acct.name;
      if (st.state === 'needs-reauth')
        out.push({
          key: `needs-reauth:${name}`,
          alert: 'needs-reauth',
          account: name,
          summary: `account ${name} needs re-authorization; its mail is held. Fix: xoauth2-bridge authorize ${name} (or Authorize in the web console)`,
        });
      else {
        const risk = grantRisk(acct, st, now, cfg.grantExpiryWarn);
        if (risk.level === 'warn') out.push({ key: `grant-expiring:${name}`, alert: 'grant-expiring', account: name, summary: `account ${name}: grant about to expire: ${risk.text}` });
      }
      const since = this.opts.facts.upstream.failingSince(name);
      if (since !== null && now - since >= cfg.upstreamFailingFor)
        out.push({
          key: `upstream-failing:${name}`,
          alert: 'upstream-failing',
          account: name,
          summary: `account ${name}: upstream failing for ${formatAge(now - since)}${st.lastError ? ` (last token error: ${redactString(st.lastError)})` : ''}; see the log`,
        });
    }
    const oldest = this.opts.facts.oldestQueuedMs();
    if (oldest !== null && oldest >= cfg.queueAgeWarn)
      out.push({ key: 'queue-age', alert: 'queue-age', summary: `oldest queued message is ${formatAge(oldest)} old (alerts.queueAgeWarn: ${formatAge(cfg.queueAgeWarn)})` });
    const disk = await this.disk();
    if (disk) {
      const w = cfg.diskFreeWarn;
      const low = w.percent !== undefined ? (disk.free / disk.total) * 100 < w.percent : disk.free < (w.bytes ?? 0);
      if (low)
        out.push({
          key: 'disk-low',
          alert: 'disk-low',
          summary: `disk almost full: ${(disk.free / 1024 ** 2).toFixed(0)} MB free of ${(disk.total / 1024 ** 2).toFixed(0)} MB under ${this.opts.facts.stateDir()}`,
        });
    }
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
          s.send(n).catch((e: unknown) => this.opts.log.error(`alert could not be sent by ${s.name}`, { alert: n.alert, status: n.status, error: (e as Error).message })),
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
