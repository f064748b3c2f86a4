// The alert monitor's upstream-failing timer: a streak is announced once, so the check that
// finds it not yet due must look again. Node's timers run on the loop's clock, which is
// coarser than Date.now(): a timer may fire a millisecond before the monitor's clock says it
// is due (about 1 in 4 timers on this machine did).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AlertMonitor } from '../../src/alerts/monitor.js';
import { UpstreamHealth } from '../../src/alerts/upstream.js';
import { configSchema } from '../../src/config/schema.js';
import { nullLogger } from '../../src/log/logger.js';
import { waitFor } from '../helpers/wait.js';

test('upstream-failing fires even when its timer runs before the clock says the streak is old enough', async () => {
  const config = configSchema.parse({
    stateDir: '/nonexistent/alerts-monitor-test',
    listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
    accounts: [
      {
        name: 'office',
        email: 'office@example.com',
        oauth: { type: 'user', clientId: 'id.apps.googleusercontent.com', clientSecret: 'not-used' },
      },
    ],
    alerts: { upstreamFailingFor: '1s', checkInterval: '60s' },
  });
  const upstream = new UpstreamHealth();
  // The monitor's clock: from the failing streak's start on, 50 ms behind the streak's own, as
  // the loop's clock is behind Date.now() when a timer fires early.
  let lag = 0;
  const monitor = new AlertMonitor({
    config: () => config,
    log: nullLogger,
    senders: () => [],
    facts: {
      accounts: () => [],
      oldestQueuedMs: () => null,
      upstream,
      stateDir: () => config.stateDir,
    },
    now: () => Date.now() - lag,
  });
  monitor.start();
  try {
    upstream.record('office', 'transient');
    lag = 50;
    await waitFor(
      () => monitor.active().some((s) => s.startsWith('account office: upstream failing for')),
      5000,
      'the upstream-failing alert',
    );
    upstream.record('office', 'ok');
    assert.deepEqual(monitor.active(), [], 'the recovery ends the episode');
  } finally {
    await monitor.stop();
  }
});
