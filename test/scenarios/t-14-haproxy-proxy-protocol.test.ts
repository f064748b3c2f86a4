// Scale-out behind a real HAProxy (Debian's haproxy, started here on loopback): two bridge
// `serve` processes with their own stateDirs, send-proxy-v2 and health checks on /readyz.
// One instance is killed with SIGKILL in the middle of the load and started again: every
// message acknowledged to the client is delivered, the other instance keeps accepting
// meanwhile, and the bridges log the client's real address from the PROXY header.
// Locally a missing haproxy skips the test unless XOAUTH2_BRIDGE_REQUIRE_INTEROP=1 (CI).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { spawnBridge, importToken, type SpawnedBridge } from '../helpers/bridge.js';
import { RawSmtp } from '../helpers/listener.js';
import { freePort } from '../helpers/net.js';
import { waitFor, sleep } from '../helpers/wait.js';

const HAPROXY = '/usr/sbin/haproxy';
const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';
// Messages in the load, as the issue asks: 2,000 took 55 s on the shared 2-core machine at
// load average 20 (600 took 31 s), well inside the timeout.
const N = 2000;
const CLIENTS = 6;
const CLIENT_IP = '127.0.0.2';

/** The HAProxy configuration (README "Scaling out" shows the same one). */
export function haproxyConfig(front: number, backends: Array<{ name: string; smtp: number; http: number }>): string {
  return [
    'global',
    '  maxconn 2000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 60s',
    '  timeout server 60s',
    // A connection refused by a dead instance is retried on another one.
    '  retries 3',
    '  option redispatch',
    'frontend smtp',
    `  bind 127.0.0.1:${front}`,
    '  default_backend bridges',
    'backend bridges',
    '  balance leastconn',
    '  option httpchk GET /readyz',
    '  http-check expect status 200',
    '  default-server inter 250ms fall 1 rise 2 send-proxy-v2',
    ...backends.map((b) => `  server ${b.name} 127.0.0.1:${b.smtp} check port ${b.http}`),
    '',
  ].join('\n');
}

interface Instance {
  name: string;
  smtp: number;
  http: number;
  configFile: string;
  proc?: SpawnedBridge;
}

async function startInstance(world: FakeWorld, name: string): Promise<Instance> {
  const [smtp, http] = [await freePort(), await freePort()];
  const cfg = bridgeConfig(world, {
    stateDir: join(world.dir, `state-${name}`),
    // allowInsecureAuth: the proxied client (127.0.0.2 in the header) gets no loopback exemption for cleartext AUTH.
    listeners: [
      {
        name: 'lb',
        host: '127.0.0.1',
        port: smtp,
        tls: 'none',
        proxyProtocol: true,
        proxyFrom: ['127.0.0.1'],
        allowInsecureAuth: true,
        maxConnectionsPerIp: 200,
      },
    ],
    http: { host: '127.0.0.1', port: http },
    log: { level: 'info', format: 'json' },
  });
  const configFile = await writeBridgeConfig(world, cfg, `${name}.yaml`);
  importToken(configFile, world);
  const inst: Instance = { name, smtp, http, configFile };
  inst.proc = await spawnBridge(configFile);
  return inst;
}

function receivedLines(i: Instance): Array<{ ip?: string; id?: string }> {
  return (i.proc?.stderr ?? []).flatMap((l) => {
    try {
      const j = JSON.parse(l) as { message?: string; ip?: string; id?: string };
      return j.message === 'received' ? [j] : [];
    } catch {
      return [];
    }
  });
}

/** One printer-style session through HAProxy; resolves with the 250 or throws. */
async function sendOne(port: number, world: FakeWorld, n: number): Promise<void> {
  const c = await RawSmtp.connect(port, { localAddress: CLIENT_IP });
  try {
    if ((await c.ehlo('client.test')).code !== 250) throw new Error('EHLO');
    if ((await c.authPlain(world.user.username, world.user.password)).code !== 235) throw new Error('AUTH');
    const body = `From: scanner@example.com\r\nTo: lb@example.org\r\nSubject: lb ${n}\r\nMessage-ID: <lb.${n}@haproxy.test>\r\n\r\nmessage ${n}\r\n.\r\n`;
    const r = await c.sendRaw('scanner@example.com', ['lb@example.org'], body);
    if (r.code !== 250) throw new Error(r.lines.join(' '));
  } finally {
    await c.quit().catch(() => {});
    c.socket.destroy();
  }
}

test('HAProxy (send-proxy-v2, /readyz checks) in front of two instances: kill -9 one mid-load, every acknowledged message is delivered', {
  timeout: 240_000,
}, async (t) => {
  try {
    await access(HAPROXY, constants.X_OK);
  } catch {
    if (REQUIRE) assert.fail('haproxy is not installed (CI must install it)');
    return t.skip('haproxy not installed');
  }
  const world = await startFakeWorld();
  let haproxy: ChildProcess | undefined;
  const instances: Instance[] = [];
  try {
    instances.push(await startInstance(world, 'b1'), await startInstance(world, 'b2'));
    const front = await freePort();
    const cfgFile = join(world.dir, 'haproxy.cfg');
    await writeFile(cfgFile, haproxyConfig(front, instances));
    haproxy = spawn(HAPROXY, ['-db', '-f', cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const hlog: string[] = [];
    haproxy.stdout!.on('data', (d: Buffer) => hlog.push(d.toString()));
    haproxy.stderr!.on('data', (d: Buffer) => hlog.push(d.toString()));
    await waitFor(
      () =>
        sendOne(front, world, -1).then(
          () => true,
          () => false,
        ),
      15_000,
      `HAProxy on ${front}\n${hlog.join('')}`,
    );

    const acked = new Set<number>();
    let next = 0;
    let failures = 0;
    let killedAt: number | null = null;
    let restartedAt: number | null = null;
    const ackedDuringOutage: number[] = [];
    const worker = async () => {
      for (;;) {
        const n = next++;
        if (n >= N) return;
        // A client retries a message whose session failed (as an MTA does), until acknowledged.
        for (let attempt = 0; ; attempt++) {
          try {
            await sendOne(front, world, n);
            acked.add(n);
            if (killedAt !== null && restartedAt === null) ackedDuringOutage.push(n);
            break;
          } catch {
            failures++;
            if (attempt > 50) throw new Error(`message ${n} never acknowledged`);
            await sleep(50);
          }
        }
      }
    };
    const load = Promise.all(Array.from({ length: CLIENTS }, worker));
    const b1 = instances[0];
    await waitFor(() => acked.size >= N / 3, 120_000, 'a third of the load acknowledged');
    b1.proc!.child.kill('SIGKILL');
    await b1.proc!.exited;
    killedAt = acked.size;
    await waitFor(() => acked.size >= killedAt! + N / 6, 120_000, 'the other instance keeps accepting');
    b1.proc = await spawnBridge(b1.configFile);
    restartedAt = acked.size;
    await load;
    assert.equal(acked.size, N);

    // Every acknowledged message reaches Gmail: b1's spooled mail is sent once it is back.
    const delivered = () =>
      new Set(
        world.gmail.messages
          .flatMap((m) => /Message-ID: <lb\.(\d+)@haproxy\.test>/.exec(m.raw.toString('latin1'))?.[1] ?? [])
          .map(Number),
      );
    await waitFor(() => [...acked].every((n) => delivered().has(n)), 60_000, 'every acknowledged message delivered');
    const copies = new Map<number, number>();
    for (const m of world.gmail.messages) {
      const n = /Message-ID: <lb\.(\d+)@haproxy\.test>/.exec(m.raw.toString('latin1'))?.[1];
      if (n !== undefined && Number(n) >= 0) copies.set(Number(n), (copies.get(Number(n)) ?? 0) + 1);
    }
    const duplicates = [...copies.values()].reduce((a, c) => a + c - 1, 0);
    t.diagnostic(
      `${N} messages, ${CLIENTS} clients: kill at ${killedAt} acks, restart at ${restartedAt}; ${ackedDuringOutage.length} acknowledged during the outage; ` +
        `${failures} failed sessions retried by the client; ${duplicates} duplicates (sessions cut by the kill after the spool had the message)`,
    );
    assert.ok(ackedDuringOutage.length >= N / 6, 'the surviving instance accepted during the outage');
    // A duplicate can only be a message the killed instance had spooled but not acknowledged: at most one per client session in flight.
    assert.ok(duplicates <= CLIENTS, `${duplicates} duplicates for ${CLIENTS} sessions in flight at the kill`);
    // Both instances saw the client's real address from the PROXY v2 header, not HAProxy's.
    const lines = instances.flatMap((i) => receivedLines(i));
    assert.ok(receivedLines(instances[1]).length > 0 && lines.length > 0);
    assert.ok(
      lines.every((l) => l.ip === CLIENT_IP),
      `client addresses: ${[...new Set(lines.map((l) => l.ip))].join(', ')}`,
    );
  } finally {
    haproxy?.kill('SIGKILL');
    for (const i of instances) if (i.proc && i.proc.child.exitCode === null) i.proc.child.kill('SIGKILL');
    await world.close();
  }
});
