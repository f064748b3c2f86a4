// systemd readiness and watchdog (sd_notify(3)): READY=1 once the listeners are bound and the
// spool recovered, WATCHDOG=1 from an event-loop timer (a wedged loop stops it and systemd
// restarts the daemon), STOPPING=1 when the drain starts.
//
// Why `systemd-notify` and not a library: $NOTIFY_SOCKET is a unix *datagram* socket, which
// Node core cannot send to, and the npm bindings (sd-notify, sd-daemon) are native addons built
// against libsystemd: a compiler and libsystemd-dev at install time and a .node file per Node
// ABI that the single-file bundle of the .deb and the image cannot carry. systemd-notify comes
// with systemd itself (present wherever $NOTIFY_SOCKET is set), waits until the manager has
// read each message (BARRIER=1, so the sender exiting early is no race) and costs a few ms
// per message: READY and STOPPING once, WATCHDOG=1 every WatchdogSec/2. As the sender is a
// child, the unit says NotifyAccess=all.
import { spawn } from 'node:child_process';
import type { Logger } from '../log/logger.js';

/**
 * The heartbeat period in ms (half of $WATCHDOG_USEC), or null when systemd watches no
 * watchdog for this process ($WATCHDOG_PID names another one, e.g. a wrapper's).
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number = process.pid): number | null {
  if (!env.NOTIFY_SOCKET) return null;
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return null;
  return Math.max(1, Math.floor(usec / 2000));
}

export class SystemdNotifier {
  private timer: NodeJS.Timeout | null = null;
  private beating = false;
  private warned = false;

  constructor(
    private readonly log: Logger,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  get enabled(): boolean {
    return Boolean(this.env.NOTIFY_SOCKET);
  }

  /** Sends KEY=VALUE assignments; resolves when systemd-notify is done (never rejects). */
  send(...assignments: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    return new Promise((resolve) => {
      const child = spawn('systemd-notify', assignments, { stdio: ['ignore', 'ignore', 'pipe'], env: this.env });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const fail = (why: string) => {
        // Once: a missing tool or socket would otherwise log every heartbeat.
        if (!this.warned)
          this.log.warn('systemd notification failed', { message: assignments.join(' '), error: why.trim() });
        this.warned = true;
      };
      child.on('error', (e) => {
        fail(e.message);
        resolve();
      });
      child.on('close', (code) => {
        if (code !== 0) fail(err || `systemd-notify exited ${code}`);
        resolve();
      });
    });
  }

  /** READY=1 and, when systemd asks for it, the watchdog heartbeat. */
  async ready(status: string): Promise<void> {
    await this.send('READY=1', `STATUS=${status}`);
    const every = watchdogIntervalMs(this.env);
    if (every === null || this.timer) return;
    this.timer = setInterval(() => {
      // One at a time: a slow systemd-notify must not pile up children.
      if (this.beating) return;
      this.beating = true;
      void this.send('WATCHDOG=1').finally(() => (this.beating = false));
    }, every);
    this.timer.unref();
  }

  stopping(): Promise<void> {
    return this.send('STOPPING=1', 'STATUS=draining: finishing sessions and deliveries in flight');
  }

  /** Ends the heartbeat (after the drain: systemd still watches during it). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
