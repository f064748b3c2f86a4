// Alerts: a local HTTPS webhook receiver (signed by the test CA, trusted through
// alerts.caFile) gets exactly one notice when an episode starts and one when it ends, with
// short test thresholds; the alert mail goes out through the bridge's own account.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { startBridge, sendThroughBridge, message, secretsOf, assertNoSecrets } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

interface Notice {
  alert: string;
  status: 'firing' | 'resolved';
  account?: string;
  summary: string;
  text: string;
  /** When the receiver got it (epoch ms). */
  receivedAt: number;
}

async function webhookReceiver(
  world: FakeWorld,
): Promise<{ url: string; events: Notice[]; raw: string[]; close(): Promise<void> }> {
  const events: Notice[] = [];
  const raw: string[] = [];
  const server = https.createServer({ cert: world.pki.cert, key: world.pki.key }, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      raw.push(body);
      events.push({ ...(JSON.parse(body) as Notice), receivedAt: Date.now() });
      res.writeHead(204).end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `https://localhost:${(server.address() as AddressInfo).port}/hook`,
    events,
    raw,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const count = (events: Notice[], alert: string, status: string) =>
  events.filter((e) => e.alert === alert && e.status === status).length;

test('webhook: needs-reauth and queue-age fire once each while the grant is dead and resolve once after the fix', {
  timeout: 60_000,
}, async () => {
  const world = await startFakeWorld();
  const hook = await webhookReceiver(world);
  const b = await startBridge(
    world,
    {
      http: { port: 0 },
      alerts: { webhook: hook.url, caFile: world.caFile, queueAgeWarn: '1s', checkInterval: '100ms' },
    },
    { http: true },
  );
  try {
    world.tokens.revoke(world.account.refreshToken);
    world.tokens.expireAccessTokens();
    const sent = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['x@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'x@example.org' }),
    });
    assert.match(sent.response, /^250 /);
    await waitFor(() => count(hook.events, 'needs-reauth', 'firing') === 1, 15_000, 'needs-reauth alert');
    // queue-age needs the held message to be 1 s old: by then needs-reauth has been seen by ~10 checks.
    await waitFor(() => count(hook.events, 'queue-age', 'firing') === 1, 15_000, 'queue-age alert');
    const firing = hook.events.find((e) => e.alert === 'needs-reauth')!;
    assert.equal(firing.account, 'office');
    assert.match(firing.summary, /xoauth2-bridge authorize office/);
    assert.match(firing.text, /^\[xoauth2-bridge .+\] account office needs re-authorization/);
    const m = (await (await fetch(`http://127.0.0.1:${b.bridge.httpAddress!.port}/metrics`)).text()).split('\n');
    assert.ok(m.includes('xoauth2_bridge_alert_firing{alert="needs-reauth"} 1'), 'the same fact on /metrics');
    assert.ok(
      b.logs.some((l) => l.includes('"alert: account office needs re-authorization')),
      'and in the log',
    );

    const fresh = `1//0g-new-${Date.now()}`;
    world.tokens.addRefreshToken(fresh, { clientId: world.account.clientId, email: world.account.email });
    await b.bridge.tokens.importRefreshToken('office', fresh);
    await world.gmail.waitForMessages(1, 15_000);
    await waitFor(
      () => count(hook.events, 'needs-reauth', 'resolved') === 1 && count(hook.events, 'queue-age', 'resolved') === 1,
      15_000,
      'recovery notices',
    );
    // More checks after the recovery (besides the ~10 during the episode): nothing repeats.
    await b.bridge.alerts.check();
    await b.bridge.alerts.check();
    await b.bridge.alerts.flush();
    assert.deepEqual(hook.events.map((e) => `${e.alert}:${e.status}`).sort(), [
      'needs-reauth:firing',
      'needs-reauth:resolved',
      'queue-age:firing',
      'queue-age:resolved',
    ]);
    const resolved = hook.events.find((e) => e.alert === 'needs-reauth' && e.status === 'resolved')!;
    assert.match(resolved.text, /RESOLVED: account office is authorized again/);
    assertNoSecrets(hook.raw.join('\n') + b.logs.join('\n'), [...secretsOf(world), fresh]);
  } finally {
    await b.stop();
    await hook.close();
    await world.close();
  }
});

test('upstream failing longer than upstreamFailingFor: one webhook alert, one recovery, and both as mail through the account', {
  timeout: 60_000,
}, async () => {
  const world = await startFakeWorld();
  const hook = await webhookReceiver(world);
  const b = await startBridge(
    world,
    // The periodic check is a minute away: the alert and its recovery come from the attempts' results.
    {
      http: { port: 0 },
      alerts: {
        webhook: hook.url,
        caFile: world.caFile,
        email: 'admin@example.org',
        upstreamFailingFor: '1s',
        checkInterval: '60s',
      },
    },
    { http: true },
  );
  try {
    world.gmail.script({
      stage: 'mail',
      reply: '451 4.3.0 Mail server temporarily rejected message.',
      count: Infinity,
    });
    await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['y@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'y@example.org' }),
    });
    await waitFor(() => count(hook.events, 'upstream-failing', 'firing') === 1, 20_000, 'upstream-failing alert');
    assert.match(
      hook.events.find((e) => e.alert === 'upstream-failing')!.summary,
      /account office: upstream failing for \d+s/,
    );
    world.gmail.clearScript();
    await waitFor(() => count(hook.events, 'upstream-failing', 'resolved') === 1, 20_000, 'upstream recovery');
    // The alert mails were spooled while Gmail refused mail, and are delivered now.
    const toAdmin = () => world.gmail.messages.filter((msg) => msg.rcptTo.includes('admin@example.org'));
    await waitFor(() => toAdmin().length === 2, 20_000, 'two alert mails to the admin');
    const subjects = toAdmin()
      .map((msg) => /^Subject: (.*)$/m.exec(msg.raw.toString('utf8'))?.[1] ?? '')
      .sort();
    assert.match(subjects[0], /^\[xoauth2-bridge .+\] RESOLVED: account office: upstream works again/);
    assert.match(subjects[1], /^\[xoauth2-bridge .+\] account office: upstream failing for/);
    assert.equal(count(hook.events, 'upstream-failing', 'firing'), 1);
  } finally {
    await b.stop();
    await hook.close();
    await world.close();
  }
});

test('alerts config: webhook must be https, emailAccount must exist, diskFreeWarn takes a size or a percentage', async () => {
  const { parseConfig } = await import('../../src/config/load.js');
  const world = await startFakeWorld();
  try {
    const { bridgeConfig } = await import('../../src/fakes/world.js');
    const { stringify } = await import('yaml');
    const bad = stringify(bridgeConfig(world, { alerts: { webhook: 'http://hooks.example/x', diskFreeWarn: 'lots' } }));
    assert.throws(
      () => parseConfig(bad, 'c.yaml'),
      (e: Error) => {
        assert.match(e.message, /alerts\.webhook: expected an https:\/\/ URL/);
        assert.match(e.message, /alerts\.diskFreeWarn: expected a size like 500MB or a percentage like 5%/);
        return true;
      },
    );
    assert.throws(
      () => parseConfig(stringify(bridgeConfig(world, { alerts: { emailAccount: 'nope' } })), 'c.yaml'),
      /alerts\.emailAccount: no account named "nope"/,
    );
    const ok = parseConfig(stringify(bridgeConfig(world, { alerts: { diskFreeWarn: '500MB' } })), 'c.yaml');
    assert.deepEqual(ok.alerts.diskFreeWarn, { bytes: 500 * 1024 * 1024 });
    assert.deepEqual(parseConfig(stringify(bridgeConfig(world)), 'c.yaml').alerts.diskFreeWarn, { percent: 5 });
  } finally {
    await world.close();
  }
});

test('grant-expiring: a Google grant warns at day 5 (Testing apps are revoked at day 7), once, and clears after re-authorization', async () => {
  const { AlertMonitor } = await import('../../src/alerts/monitor.js');
  const { UpstreamHealth } = await import('../../src/alerts/upstream.js');
  const { parseConfig } = await import('../../src/config/load.js');
  const { bridgeConfig } = await import('../../src/fakes/world.js');
  const { stringify } = await import('yaml');
  const { nullLogger } = await import('../../src/log/logger.js');
  const world = await startFakeWorld();
  try {
    const config = parseConfig(stringify(bridgeConfig(world)), 'c.yaml');
    const DAY = 86400e3;
    const issued = Date.parse('2026-01-01T00:00:00Z');
    let now = issued + 4 * DAY;
    const status = {
      account: 'office',
      email: world.account.email,
      state: 'ok' as const,
      accessTokenExpiresAt: null,
      lastRefreshAt: new Date(issued).toISOString(),
      lastError: null,
      refreshTokenIssuedAt: new Date(issued).toISOString(),
      refreshTokenExpiresAt: null as string | null,
    };
    const sent: Array<{ alert: string; status: string; summary: string }> = [];
    const monitor = new AlertMonitor({
      config: () => config,
      log: nullLogger,
      now: () => now,
      senders: () => [{ name: 'test', send: async (n) => void sent.push(n) }],
      facts: {
        accounts: () => [
          { config: config.accounts[0], status: { ...status, lastRefreshAt: new Date(now - 3600e3).toISOString() } },
        ],
        oldestQueuedMs: () => null,
        upstream: new UpstreamHealth(),
        stateDir: () => world.dir,
      },
    });
    await monitor.check();
    assert.equal(sent.length, 0, 'day 4: nothing yet');
    now = issued + 5 * DAY + 60e3;
    await monitor.check();
    now += 3600e3;
    await monitor.check();
    await monitor.flush();
    assert.equal(sent.length, 1);
    assert.equal(sent[0].alert, 'grant-expiring');
    assert.match(sent[0].summary, /"Testing" status, Google revokes this grant at 2026-01-08T00:00:00\.000Z/);
    // Re-authorized: a fresh grant.
    status.refreshTokenIssuedAt = new Date(now).toISOString();
    await monitor.check();
    await monitor.flush();
    assert.deepEqual(
      sent.map((n) => `${n.alert}:${n.status}`),
      ['grant-expiring:firing', 'grant-expiring:resolved'],
    );
    // A known expiry (refresh_token_expires_in) within grantExpiryWarn (2 days) fires too.
    status.refreshTokenExpiresAt = new Date(now + DAY).toISOString();
    await monitor.check();
    await monitor.flush();
    assert.equal(sent.length, 3);
    assert.match(sent[2].summary, /time-limited grant expires/);
  } finally {
    await world.close();
  }
});

test('disk-low: fires while free space is under diskFreeWarn and resolves after a reload raises the headroom', {
  timeout: 30_000,
}, async () => {
  const world = await startFakeWorld();
  const hook = await webhookReceiver(world);
  // The periodic check is a minute away: the recovery comes from the disk watch (every 2 s).
  const alerts = { webhook: hook.url, caFile: world.caFile, checkInterval: '60s' };
  const b = await startBridge(
    world,
    { http: { port: 0 }, alerts: { ...alerts, diskFreeWarn: '99999GB' } },
    { http: true },
  );
  try {
    await waitFor(() => count(hook.events, 'disk-low', 'firing') === 1, 10_000, 'disk-low alert');
    assert.match(hook.events[0].summary, /^disk almost full: \d+ MB free of \d+ MB under /);
    const { bridgeConfig, writeBridgeConfig } = await import('../../src/fakes/world.js');
    await writeBridgeConfig(
      world,
      bridgeConfig(world, { http: { port: 0 }, alerts: { ...alerts, diskFreeWarn: '1MB' } }),
    );
    assert.equal(await b.bridge.reload(), true);
    await waitFor(() => count(hook.events, 'disk-low', 'resolved') === 1, 10_000, 'disk-low recovery');
    await b.bridge.alerts.check();
    await b.bridge.alerts.flush();
    assert.deepEqual(
      hook.events.map((e) => `${e.alert}:${e.status}`),
      ['disk-low:firing', 'disk-low:resolved'],
    );
  } finally {
    await b.stop();
    await hook.close();
    await world.close();
  }
});

test('needs-reauth alerts within 5 s of the line that marks it (checkInterval 60 s), and a short episode yields one alert and one recovery', {
  timeout: 60_000,
}, async (t) => {
  const world = await startFakeWorld();
  const hook = await webhookReceiver(world);
  const b = await startBridge(
    world,
    { http: { port: 0 }, alerts: { webhook: hook.url, caFile: world.caFile, checkInterval: '60s' } },
    { http: true },
  );
  try {
    world.tokens.revoke(world.account.refreshToken);
    world.tokens.expireAccessTokens();
    await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['x@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'x@example.org' }),
    });
    await waitFor(() => count(hook.events, 'needs-reauth', 'firing') === 1, 15_000, 'needs-reauth alert');
    const marked = b.logs
      .map((l) => JSON.parse(l) as { level: string; message: string; timestamp: string })
      .find((j) => j.level === 'error' && j.message.startsWith('account office needs re-authorization'));
    assert.ok(marked, 'the line that marks needs-reauth');
    const latency = hook.events.find((e) => e.alert === 'needs-reauth')!.receivedAt - Date.parse(marked.timestamp);
    t.diagnostic(`needs-reauth alert ${latency} ms after the line that marks it`);
    assert.ok(latency < 5000, `alert ${latency} ms after the needs-reauth line (periodic check: 60 s)`);

    // Re-authorized well within the check interval: the episode still ends with one recovery.
    const fresh = `1//0g-new-${Date.now()}`;
    world.tokens.addRefreshToken(fresh, { clientId: world.account.clientId, email: world.account.email });
    await b.bridge.tokens.importRefreshToken('office', fresh);
    await waitFor(() => count(hook.events, 'needs-reauth', 'resolved') === 1, 15_000, 'recovery notice');
    await world.gmail.waitForMessages(1, 15_000);
    // A periodic pass now (the safety net) repeats nothing.
    await b.bridge.alerts.check();
    await b.bridge.alerts.flush();
    assert.deepEqual(
      hook.events.map((e) => `${e.alert}:${e.status}`),
      ['needs-reauth:firing', 'needs-reauth:resolved'],
    );
  } finally {
    await b.stop();
    await hook.close();
    await world.close();
  }
});
