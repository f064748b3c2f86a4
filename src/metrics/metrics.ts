// Prometheus metrics for the bridge. A private Registry (not prom-client's global one) so
// several bridges in one process (tests, demo) never share or double-register series.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { HealthState, Outcome } from '../types.js';
import type { Logger } from '../log/logger.js';
import { kdfGate } from '../listener/passwords.js';

const P = 'xoauth2_bridge_';

export interface QueueStats {
  /** Messages in the spool waiting for delivery (all accounts). */
  size: number;
  /** Age of the oldest waiting message, 0 when the queue is empty. */
  oldestAgeSeconds: number;
  /** Waiting messages per account; accounts absent here are reported as 0. */
  perAccount?: Record<string, number>;
}

export type QueueSource = () => QueueStats | Promise<QueueStats>;

export interface MetricsOptions {
  /** Account and listener names from the config; see configure(). */
  accounts?: string[];
  listeners?: string[];
  /** Where a failing queue source is reported (the scrape still succeeds). */
  log?: Logger;
}

const ACCOUNT_STATES: readonly HealthState[] = ['ok', 'needs-reauth', 'error'];
const OUTCOMES: readonly Outcome[] = ['ok', 'transient', 'permanent', 'quota', 'auth', 'transport'];
/** Label value for a name that is not in the configured set (keeps cardinality bounded). */
export const OTHER = '_other';

export class Metrics {
  readonly registry = new Registry();
  private accounts: Set<string> | null = null;
  private listeners: Set<string> | null = null;
  private queueSource: QueueSource | null = null;
  private readonly log?: Logger;
  private lastAccountStates = new Map<string, HealthState>();

  private readonly cReceived: Counter<'account'>;
  private readonly cReceivedBytes: Counter<'account'>;
  private readonly cDelivered: Counter<'account'>;
  private readonly cDeliveredRcpts: Counter<'account'>;
  private readonly cDeferred: Counter<'account'>;
  private readonly cBounced: Counter<'account'>;
  private readonly cReplies: Counter<'account' | 'class'>;
  private readonly cRefreshes: Counter<'account' | 'result'>;
  private readonly gAccountState: Gauge<'account' | 'state'>;
  private readonly cAuthFailures: Counter<'listener'>;
  private readonly cLockouts: Counter<'listener'>;
  private readonly gConnections: Gauge<'listener'>;
  private readonly cCorrupt: Counter;
  private readonly cDataLost: Counter<'account'>;
  private readonly gQueueSize: Gauge;
  private readonly gQueueOldest: Gauge;
  private readonly gQueueAccount: Gauge<'account'>;

  constructor(opts: MetricsOptions = {}) {
    this.log = opts.log;
    // Standard process_*/nodejs_* names (unprefixed) so stock Node dashboards work.
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new Counter<L>({ name: P + name, help, labelNames, registers });

    this.cReceived = counter('messages_received_total', 'Messages accepted into the spool (250 sent).', ['account']);
    this.cReceivedBytes = counter('received_bytes_total', 'Bytes of messages accepted into the spool.', ['account']);
    this.cDelivered = counter(
      'messages_delivered_total',
      'Upstream transactions that delivered a message (some or all recipients).',
      ['account'],
    );
    this.cDeliveredRcpts = counter('recipients_delivered_total', 'Recipients accepted by the upstream.', ['account']);
    this.cDeferred = counter('messages_deferred_total', 'Delivery attempts that left a message queued for a retry.', [
      'account',
    ]);
    this.cDataLost = counter(
      'messages_data_lost_total',
      'Acknowledged messages whose queue file was gone: moved to failed/ (data-lost), sender notified.',
      ['account'],
    );
    this.cBounced = counter(
      'messages_bounced_total',
      'Messages (or recipients of a message) that failed permanently and were bounced.',
      ['account'],
    );
    this.cReplies = counter(
      'upstream_replies_total',
      'Upstream attempt results by class (ok, transient, permanent, quota, auth, transport).',
      ['account', 'class'],
    );
    this.cRefreshes = counter('token_refreshes_total', 'OAuth access-token refreshes by result (ok, error).', [
      'account',
      'result',
    ]);
    this.cAuthFailures = counter('auth_failures_total', 'Failed SMTP AUTH attempts on a listener.', ['listener']);
    this.cCorrupt = counter(
      'spool_corrupt_envelopes_total',
      'Unreadable spool envelopes moved to spool/corrupt/ with their message.',
      [],
    );
    this.cLockouts = counter('lockouts_total', 'Client IPs locked out after too many AUTH failures.', ['listener']);
    this.gConnections = new Gauge({
      name: P + 'smtp_connections',
      help: 'Open inbound SMTP connections per listener (from accept until the socket closed).',
      labelNames: ['listener'],
      registers,
    });
    this.gAccountState = new Gauge({
      name: P + 'account_state',
      help: 'Account state: 1 for the current state (ok, needs-reauth, error), 0 for the others.',
      labelNames: ['account', 'state'],
      registers,
    });

    // Password KDF work (issue 10 item 16), read from the process-wide gate at scrape time.
    new Counter({
      name: P + 'kdf_runs_total',
      help: 'Password KDF (scrypt) runs started.',
      registers,
      collect() {
        this.reset();
        this.inc(kdfGate.stats.runs);
      },
    });
    new Gauge({
      name: P + 'kdf_queue',
      help: 'Password checks waiting for a KDF slot.',
      registers,
      collect() {
        this.set(kdfGate.queued);
      },
    });
    new Gauge({
      name: P + 'kdf_in_flight',
      help: 'Password KDF runs in progress.',
      registers,
      collect() {
        this.set(kdfGate.inFlight);
      },
    });

    // Queue gauges are read from the spool at scrape time instead of being kept in step
    // with every enqueue/dequeue, so they cannot drift.
    const self = this;
    let pending: Promise<QueueStats | null> | null = null;
    // One source call per scrape even though three gauges ask for it.
    const stats = () =>
      (pending ??= (async () => {
        if (!self.queueSource) return null;
        try {
          return await self.queueSource();
        } catch (err) {
          self.log?.warn('metrics: queue statistics unavailable', { err });
          return null;
        }
      })().finally(() => {
        pending = null;
      }));
    this.gQueueSize = new Gauge({
      name: P + 'queue_size',
      help: 'Messages waiting in the spool.',
      registers,
      async collect() {
        const s = await stats();
        // NaN = unknown (source missing or failing); 0 would claim an empty queue.
        this.set(s ? s.size : NaN);
      },
    });
    this.gQueueOldest = new Gauge({
      name: P + 'queue_oldest_age_seconds',
      help: 'Age in seconds of the oldest message waiting in the spool (0 when empty).',
      registers,
      async collect() {
        const s = await stats();
        this.set(s ? s.oldestAgeSeconds : NaN);
      },
    });
    this.gQueueAccount = new Gauge({
      name: P + 'queue_account_size',
      help: 'Messages waiting in the spool per account.',
      labelNames: ['account'],
      registers,
      async collect() {
        const s = await stats();
        this.reset();
        if (!s?.perAccount) return;
        const sums = new Map<string, number>();
        for (const a of self.accounts ?? []) sums.set(a, 0);
        for (const [a, n] of Object.entries(s.perAccount)) {
          const key = self.acct(a);
          sums.set(key, (sums.get(key) ?? 0) + n);
        }
        for (const [account, n] of sums) this.set({ account }, n);
      },
    });

    if (opts.accounts || opts.listeners)
      this.configure({ accounts: opts.accounts ?? [], listeners: opts.listeners ?? [] });
  }

  /**
   * Set the account/listener names from the config (call again after a reload). Their
   * series are created at 0 so rate() and alerts work before the first event; any other
   * name is counted under "_other" so label cardinality stays bounded by the config.
   */
  configure(names: { accounts: string[]; listeners: string[] }): void {
    this.accounts = new Set(names.accounts);
    this.listeners = new Set(names.listeners);
    for (const account of this.accounts) {
      for (const c of [
        this.cReceived,
        this.cReceivedBytes,
        this.cDelivered,
        this.cDeliveredRcpts,
        this.cDeferred,
        this.cBounced,
      ])
        c.inc({ account }, 0);
      for (const klass of OUTCOMES) this.cReplies.inc({ account, class: klass }, 0);
      for (const result of ['ok', 'error']) this.cRefreshes.inc({ account, result }, 0);
    }
    for (const listener of this.listeners) {
      this.cAuthFailures.inc({ listener }, 0);
      this.cLockouts.inc({ listener }, 0);
      this.gConnections.inc({ listener }, 0);
    }
    // A removed account has no current state; drop its gauge series rather than report a stale one.
    for (const account of [...this.lastAccountStates.keys()]) {
      if (this.accounts.has(account)) continue;
      for (const state of ACCOUNT_STATES) this.gAccountState.remove({ account, state });
      this.lastAccountStates.delete(account);
    }
  }

  received(account: string, bytes: number): void {
    const a = this.acct(account);
    this.cReceived.inc({ account: a });
    if (bytes > 0) this.cReceivedBytes.inc({ account: a }, bytes);
  }

  /** One upstream transaction delivered `rcpts` recipients of a message. */
  delivered(account: string, rcpts: number): void {
    const a = this.acct(account);
    this.cDelivered.inc({ account: a });
    if (rcpts > 0) this.cDeliveredRcpts.inc({ account: a }, rcpts);
  }

  /** An unreadable envelope was moved to spool/corrupt/. */
  corruptEnvelope(): void {
    this.cCorrupt.inc();
  }

  /** An acknowledged message's data was gone (moved to failed/ with reason data-lost). */
  dataLost(account: string): void {
    this.cDataLost.inc({ account: this.acct(account) });
  }

  deferred(account: string): void {
    this.cDeferred.inc({ account: this.acct(account) });
  }

  bounced(account: string): void {
    this.cBounced.inc({ account: this.acct(account) });
  }

  upstreamReply(account: string, klass: Outcome): void {
    // Guard against a stray string from an untyped caller turning into a new series.
    const c = OUTCOMES.includes(klass) ? klass : OTHER;
    this.cReplies.inc({ account: this.acct(account), class: c });
  }

  tokenRefresh(account: string, ok: boolean): void {
    this.cRefreshes.inc({ account: this.acct(account), result: ok ? 'ok' : 'error' });
  }

  accountState(account: string, state: HealthState): void {
    // An unconfigured account has no meaningful state series (and must not add one).
    if (this.accounts && !this.accounts.has(account)) return;
    for (const s of ACCOUNT_STATES) this.gAccountState.set({ account, state: s }, s === state ? 1 : 0);
    this.lastAccountStates.set(account, state);
  }

  authFailure(listener: string): void {
    this.cAuthFailures.inc({ listener: this.lsn(listener) });
  }

  lockout(listener: string): void {
    this.cLockouts.inc({ listener: this.lsn(listener) });
  }

  /** The raw name (running listeners only; a reload never adds one): opens and closes stay paired. */
  connectionsOpen(listener: string, delta: 1 | -1): void {
    this.gConnections.inc({ listener }, delta);
  }

  /** Where queue_size / queue_oldest_age_seconds / queue_account_size are read at scrape time. */
  setQueueSource(fn: QueueSource): void {
    this.queueSource = fn;
  }

  private acct(name: string): string {
    return !this.accounts || this.accounts.has(name) ? name : OTHER;
  }

  private lsn(name: string): string {
    return !this.listeners || this.listeners.has(name) ? name : OTHER;
  }
}
