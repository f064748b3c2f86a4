import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtemp, rm, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Metrics, OTHER } from '../../src/metrics/metrics.js';
import { HttpEndpoint, spoolWritable, accountNotReadyReason, type Readiness } from '../../src/http/server.js';
import { nullLogger } from '../../src/log/logger.js';
import { readFile } from 'node:fs/promises';
import { parseConfig } from '../../src/config/load.js';
import { Bridge } from '../../src/daemon/bridge.js';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../../src/fakes/world.js';
import { importToken, sendThroughBridge, message } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(port: number, urlPath: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Samples of the Prometheus text exposition: `name{a="x",b="y"}` -> value. */
function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed exposition line: ${line}`);
    // Normalise label order so lookups do not depend on prom-client's ordering.
    const labels = [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => `${l[1]}="${l[2]}"`).sort();
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

function key(name: string, labels: Record<string, string> = {}): string {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  return `xoauth2_bridge_${name}{${l.join(',')}}`;
}

let readiness: Readiness = { ok: true, reasons: [] };
let queue = { size: 0, oldestAgeSeconds: 0, perAccount: {} as Record<string, number> };
const metrics = new Metrics({ accounts: ['office', 'home'], listeners: ['local', 'lan'] });
metrics.setQueueSource(async () => queue);
const endpoint = new HttpEndpoint({
  host: '127.0.0.1',
  port: 0,
  ephemeral: true,
  metrics,
  log: nullLogger,
  ready: async () => readiness,
});
let port = 0;

before(async () => {
  const addr = await endpoint.start();
  assert.ok(addr);
  assert.equal(addr.host, '127.0.0.1');
  port = addr.port;
});
after(() => endpoint.stop());

test('GET /healthz answers 200 ok', async () => {
  const r = await request(port, '/healthz');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok\n');
  assert.match(String(r.headers['content-type']), /^text\/plain/);
});

test('/readyz is 200 when ready and 503 with one reason per line when not', async () => {
  readiness = { ok: true, reasons: [] };
  let r = await request(port, '/readyz');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ready\n');

  readiness = {
    ok: false,
    reasons: [accountNotReadyReason('office', 'needs-reauth')!, 'listener lan: not bound\n(EADDRINUSE)'],
  };
  r = await request(port, '/readyz');
  assert.equal(r.status, 503);
  assert.deepEqual(r.body.trimEnd().split('\n'), [
    'account office: needs-reauth — run: xoauth2-bridge authorize office',
    'listener lan: not bound (EADDRINUSE)',
  ]);

  // Flipping back (e.g. after `token import`) makes it ready again without a restart.
  readiness = { ok: true, reasons: [] };
  r = await request(port, '/readyz');
  assert.equal(r.status, 200);
});

test('/readyz never echoes a token that slipped into a reason', async () => {
  const token = 'ya29.a0AfB_byC' + 'x'.repeat(40);
  readiness = { ok: false, reasons: [`account office: error (refresh failed: ${token})`] };
  const r = await request(port, '/readyz');
  readiness = { ok: true, reasons: [] };
  assert.equal(r.status, 503);
  assert.match(r.body, /^account office: error/);
  assert.ok(!r.body.includes(token), r.body);
});

test('/readyz answers 503 when the check throws or hangs', async () => {
  const log: string[] = [];
  const capture = { ...nullLogger, error: (m: string) => void log.push(m), child: () => capture };
  let mode: 'throw' | 'hang' = 'throw';
  const ep = new HttpEndpoint({
    host: '127.0.0.1',
    port: 0,
    ephemeral: true,
    metrics,
    log: capture,
    readyTimeoutMs: 200,
    ready: () => (mode === 'throw' ? Promise.reject(new Error('boom')) : new Promise<Readiness>(() => {})),
  });
  const addr = await ep.start();
  try {
    let r = await request(addr!.port, '/readyz');
    assert.equal(r.status, 503);
    assert.equal(r.body, 'readiness check failed (see log)\n');
    assert.deepEqual(log, ['http: readiness check failed']);
    mode = 'hang';
    r = await request(addr!.port, '/readyz');
    assert.equal(r.status, 503);
    assert.equal(r.body, 'readiness check did not finish within 200 ms\n');
  } finally {
    await ep.stop();
  }
});

test('/metrics reports counters after a known sequence of events', async () => {
  for (let i = 0; i < 3; i++) metrics.received('office', 1000);
  metrics.received('home', 250);
  metrics.delivered('office', 2);
  metrics.delivered('office', 1);
  metrics.deferred('office');
  metrics.bounced('home');
  metrics.upstreamReply('office', 'ok');
  metrics.upstreamReply('office', 'ok');
  metrics.upstreamReply('office', 'transient');
  metrics.upstreamReply('home', 'permanent');
  metrics.tokenRefresh('office', true);
  metrics.tokenRefresh('office', true);
  metrics.tokenRefresh('home', false);
  metrics.accountState('office', 'ok');
  metrics.accountState('home', 'ok');
  metrics.accountState('home', 'needs-reauth');
  for (let i = 0; i < 5; i++) metrics.authFailure('lan');
  metrics.lockout('lan');
  // Names outside the config are folded into one series instead of growing new ones.
  metrics.received('ghost-1', 10);
  metrics.received('ghost-2', 10);
  metrics.authFailure('nope');

  const r = await request(port, '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], metrics.registry.contentType);
  const m = parseExposition(r.body);
  const expect: Array<[string, number]> = [
    [key('messages_received_total', { account: 'office' }), 3],
    [key('messages_received_total', { account: 'home' }), 1],
    [key('messages_received_total', { account: OTHER }), 2],
    [key('received_bytes_total', { account: 'office' }), 3000],
    [key('received_bytes_total', { account: 'home' }), 250],
    [key('messages_delivered_total', { account: 'office' }), 2],
    [key('recipients_delivered_total', { account: 'office' }), 3],
    [key('messages_delivered_total', { account: 'home' }), 0],
    [key('messages_deferred_total', { account: 'office' }), 1],
    [key('messages_deferred_total', { account: 'home' }), 0],
    [key('messages_bounced_total', { account: 'home' }), 1],
    [key('messages_bounced_total', { account: 'office' }), 0],
    [key('upstream_replies_total', { account: 'office', class: 'ok' }), 2],
    [key('upstream_replies_total', { account: 'office', class: 'transient' }), 1],
    [key('upstream_replies_total', { account: 'office', class: 'quota' }), 0],
    [key('upstream_replies_total', { account: 'home', class: 'permanent' }), 1],
    [key('token_refreshes_total', { account: 'office', result: 'ok' }), 2],
    [key('token_refreshes_total', { account: 'office', result: 'error' }), 0],
    [key('token_refreshes_total', { account: 'home', result: 'error' }), 1],
    [key('account_state', { account: 'office', state: 'ok' }), 1],
    [key('account_state', { account: 'office', state: 'needs-reauth' }), 0],
    [key('account_state', { account: 'home', state: 'ok' }), 0],
    [key('account_state', { account: 'home', state: 'needs-reauth' }), 1],
    [key('account_state', { account: 'home', state: 'error' }), 0],
    [key('auth_failures_total', { listener: 'lan' }), 5],
    [key('auth_failures_total', { listener: 'local' }), 0],
    [key('auth_failures_total', { listener: OTHER }), 1],
    [key('lockouts_total', { listener: 'lan' }), 1],
    [key('lockouts_total', { listener: 'local' }), 0],
  ];
  for (const [k, v] of expect) assert.equal(m.get(k), v, k);
  for (const k of m.keys())
    assert.ok(!k.includes('ghost') && !k.includes('nope'), `unconfigured name leaked into ${k}`);
  // Default process metrics come from this registry too.
  assert.ok(
    m.has('process_resident_memory_bytes{}') || m.has('process_cpu_seconds_total{}'),
    'process metrics missing',
  );
  assert.ok(m.has('nodejs_eventloop_lag_seconds{}'));
});

test('/metrics queue gauges come from the queue source at scrape time', async () => {
  queue = { size: 4, oldestAgeSeconds: 95.5, perAccount: { office: 3, home: 1 } };
  let m = parseExposition((await request(port, '/metrics')).body);
  assert.equal(m.get(key('queue_size')), 4);
  assert.equal(m.get(key('queue_oldest_age_seconds')), 95.5);
  assert.equal(m.get(key('queue_account_size', { account: 'office' })), 3);
  assert.equal(m.get(key('queue_account_size', { account: 'home' })), 1);

  queue = { size: 0, oldestAgeSeconds: 0, perAccount: {} };
  m = parseExposition((await request(port, '/metrics')).body);
  assert.equal(m.get(key('queue_size')), 0);
  assert.equal(m.get(key('queue_oldest_age_seconds')), 0);
  // Configured accounts with nothing queued still report 0.
  assert.equal(m.get(key('queue_account_size', { account: 'office' })), 0);
});

test('queue source: called once per scrape; a failing source gives NaN, not a fake empty queue', async () => {
  const mx = new Metrics({ accounts: ['a'], listeners: [] });
  let calls = 0;
  let fail = false;
  mx.setQueueSource(() => {
    calls++;
    if (fail) throw new Error('spool gone');
    return { size: 7, oldestAgeSeconds: 1 };
  });
  let m = parseExposition(await mx.registry.metrics());
  assert.equal(calls, 1);
  assert.equal(m.get(key('queue_size')), 7);
  fail = true;
  m = parseExposition(await mx.registry.metrics());
  assert.ok(Number.isNaN(m.get(key('queue_size'))));
  assert.ok(Number.isNaN(m.get(key('queue_oldest_age_seconds'))));
});

test('configure() after a reload drops a removed account from account_state', async () => {
  const mx = new Metrics({ accounts: ['a', 'b'], listeners: [] });
  mx.accountState('a', 'ok');
  mx.accountState('b', 'error');
  mx.configure({ accounts: ['a', 'c'], listeners: [] });
  mx.accountState('c', 'ok');
  const m = parseExposition(await mx.registry.metrics());
  assert.equal(m.get(key('account_state', { account: 'b', state: 'error' })), undefined);
  assert.equal(m.get(key('account_state', { account: 'a', state: 'ok' })), 1);
  assert.equal(m.get(key('account_state', { account: 'c', state: 'ok' })), 1);
  assert.equal(m.get(key('messages_received_total', { account: 'c' })), 0);
});

test('unknown paths are 404, other methods 405, HEAD has no body', async () => {
  let r = await request(port, '/nope');
  assert.equal(r.status, 404);
  r = await request(port, '/metrics/../readyz?x=1');
  assert.equal(r.status, 404);
  r = await request(port, '/healthz?probe=1');
  assert.equal(r.status, 200);
  r = await request(port, '/healthz', 'POST');
  assert.equal(r.status, 405);
  assert.equal(r.headers.allow, 'GET, HEAD');
  r = await request(port, '/healthz', 'HEAD');
  assert.equal(r.status, 200);
  assert.equal(r.body, '');
  assert.equal(r.headers['content-length'], '3');
});

test('port 0 without ephemeral means disabled; a taken port fails start() clearly', async () => {
  const off = new HttpEndpoint({ host: '127.0.0.1', port: 0, metrics, log: nullLogger, ready: async () => readiness });
  assert.equal(await off.start(), null);
  await off.stop();

  const clash = new HttpEndpoint({ host: '127.0.0.1', port, metrics, log: nullLogger, ready: async () => readiness });
  await assert.rejects(clash.start(), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
});

test('stop() closes the port and keep-alive connections', async () => {
  const ep = new HttpEndpoint({
    host: '127.0.0.1',
    port: 0,
    ephemeral: true,
    metrics,
    log: nullLogger,
    ready: async () => readiness,
  });
  const addr = await ep.start();
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) =>
    http
      .get({ host: '127.0.0.1', port: addr!.port, path: '/healthz', agent }, (res) => res.resume().on('end', resolve))
      .on('error', reject),
  );
  const t0 = Date.now();
  await ep.stop();
  assert.ok(Date.now() - t0 < 2000, 'stop() waited for the idle keep-alive socket');
  await assert.rejects(request(addr!.port, '/healthz'), /ECONNREFUSED/);
  agent.destroy();
});

test('spoolWritable: null for a writable dir (and leaves nothing behind), a reason otherwise', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'xb-http-'));
  try {
    assert.equal(await spoolWritable(dir), null);
    assert.deepEqual(await readdir(dir), []);
    assert.match(
      (await spoolWritable(path.join(dir, 'missing')))!,
      /spool .*missing is not writable: ENOENT \(directory does not exist\)/,
    );
    // A path that is not a directory (works the same when the tests run as root).
    await writeFile(path.join(dir, 'file'), 'x');
    assert.match((await spoolWritable(path.join(dir, 'file')))!, /is not writable: ENOTDIR/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('/readyz: an account whose upstream failed every attempt (at least 3, for the window) is not ready, with the reason and xoauth2_bridge_upstream_failing; ready again once it delivers', async () => {
  const world = await startFakeWorld();
  try {
    const configFile = await writeBridgeConfig(world, bridgeConfig(world, { queue: { retry: ['100ms'] } }));
    importToken(configFile, world);
    const config = parseConfig(await readFile(configFile, 'utf8'), configFile);
    // A zero window: the attempt count alone decides here (the daemon's default window is 5 min).
    const bridge = new Bridge({ config, configFile, log: nullLogger, httpEphemeral: true, upstreamNotReadyAfterMs: 0 });
    await bridge.start();
    try {
      const hport = bridge.httpAddress!.port;
      const failing = async () =>
        parseExposition((await request(hport, '/metrics')).body).get(key('upstream_failing', { account: 'office' }));
      assert.equal((await request(hport, '/readyz')).status, 200);
      assert.equal(await failing(), 0);

      world.gmail.down(true);
      await sendThroughBridge({
        port: bridge.bound[0].port,
        user: world.user.username,
        pass: world.user.password,
        from: world.account.email,
        to: ['r@example.org'],
        raw: message({ from: world.account.email, to: 'r@example.org' }),
      });
      let r: Reply = { status: 0, headers: {}, body: '' };
      await waitFor(async () => (r = await request(hport, '/readyz')).status === 503, 30_000, '/readyz to turn 503');
      const m = /^account office: upstream failing — all (\d+) attempts in the last \d+ s failed/m.exec(r.body);
      assert.ok(m, r.body);
      assert.ok(Number(m[1]) >= 3, `not ready after ${m[1]} attempts; 3 are needed`);
      assert.equal(await failing(), 1);

      world.gmail.down(false);
      await waitFor(async () => (await request(hport, '/readyz')).status === 200, 30_000, '/readyz to turn 200 again');
      assert.equal(world.gmail.messages.length, 1, 'ready again because the message went through');
      assert.equal(await failing(), 0);
    } finally {
      await bridge.stop(5000);
    }
  } finally {
    await world.close();
  }
});
