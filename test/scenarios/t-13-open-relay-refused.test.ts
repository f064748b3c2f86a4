// Open-relay guard and trusted-network matching (issue 10 items 1 and 2): the config check,
// `serve` at start-up and the listener all judge a network list with the same matcher, so
// every spelling of "all of IPv4" or "all of IPv6" is refused and an IPv4-mapped client is
// judged as its IPv4 address.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Spool } from '../../src/spool/spool.js';
import { createLogger } from '../../src/log/logger.js';
import { Listeners } from '../../src/listener/server.js';
import { CLI } from '../helpers/bridge.js';
import { RawSmtp, makeConfig, message, startListeners, ACCOUNT, tempSpool } from '../helpers/listener.js';
import { proxyV2 } from '../helpers/proxy.js';
import { hashPassword } from '../../src/listener/passwords.js';
import { FAKE_SCRYPT_COST } from '../../src/fakes/world.js';

let dir: string;
let spool: Spool;

let cleanup: () => Promise<void>;

before(async () => {
  ({ dir, spool, cleanup } = await tempSpool('xb-trust-'));
});
after(() => cleanup());

// Each of these covers all of IPv4 or all of IPv6; three of them passed the old guard.
const OPEN_LISTS: string[][] = [
  ['0.0.0.0/0'],
  ['::/0'],
  ['::ffff:0:0/96'],
  ['::ffff:0.0.0.0/96'],
  ['0:0:0:0:0:ffff:0:0/96'],
  ['0000:0000:0000:0000:0000:FFFF:0000:0000/96'],
  ['0.0.0.0/1', '128.0.0.0/1'],
  ['::/1', '8000::/1'],
  ['::ffff:0:0/97', '128.0.0.0/1'],
  ['0.0.0.0/1', '::ffff:128.0.0.0/97'],
  ['10.0.0.0/8', '0.0.0.0/5', '8.0.0.0/5', '16.0.0.0/4', '32.0.0.0/3', '64.0.0.0/2', '128.0.0.0/1'],
  ['::/80'], // contains ::ffff:0:0/96, so every IPv4 client
];

function writeConfig(file: string, listeners: Record<string, unknown>[]): Promise<void> {
  return writeFile(file, stringify({ stateDir: join(dir, 'state'), listeners, accounts: [ACCOUNT] }));
}

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('check-config refuses every spelling of "all IPv4" or "all IPv6" in trustedNetworks, naming the key', async () => {
  const file = join(dir, 'open.yaml');
  // One listener per list: one CLI run reports every problem with its key path.
  await writeConfig(
    file,
    OPEN_LISTS.map((nets, i) => ({
      name: `lan${i}`,
      host: '0.0.0.0',
      port: 2600 + i,
      tls: 'starttls',
      trustedNetworks: nets,
      trustedAccount: 'office',
    })),
  );
  const r = cli(['check-config', '-c', file]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  OPEN_LISTS.forEach((nets, i) => {
    const line = r.stderr.split('\n').find((l) => l.includes(`listeners[${i}].trustedNetworks:`));
    assert.ok(line, `no problem reported for ${JSON.stringify(nets)}:\n${r.stderr}`);
    assert.match(line, /open relay/);
    assert.match(line, new RegExp(`listener "lan${i}"`));
  });

  // Narrow lists, in plain and IPv4-mapped spelling, pass.
  const ok = join(dir, 'narrow.yaml');
  await writeConfig(ok, [
    {
      name: 'lan',
      host: '0.0.0.0',
      port: 2700,
      tls: 'starttls',
      trustedNetworks: ['192.168.1.0/24', 'fd00::/8', '::ffff:10.1.0.0/112'],
      trustedAccount: 'office',
    },
  ]);
  const good = cli(['check-config', '-c', ok]);
  assert.equal(good.code, 0, good.stderr);
});

test('a loopback listener with proxyProtocol gets no loopback exemption: check-config and serve refuse it', async () => {
  const file = join(dir, 'proxied.yaml');
  const proxied = {
    name: 'haproxy',
    host: '127.0.0.1',
    port: 0,
    proxyProtocol: true,
    trustedNetworks: ['0.0.0.0/0', '::/0'],
    trustedAccount: 'office',
  };
  await writeConfig(file, [proxied]);
  const r = cli(['check-config', '-c', file]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /listeners\[0\]\.trustedNetworks: .*proxyProtocol.*open relay/);

  const serve = cli(['serve', '-c', file]);
  assert.notEqual(serve.code, 0, 'serve must refuse to start');
  assert.match(serve.stderr + serve.stdout, /listeners\[0\]\.trustedNetworks: .*open relay/);

  // Without PROXY headers only local processes reach it: trusting everything stays allowed.
  const plain = join(dir, 'loopback.yaml');
  await writeConfig(plain, [{ ...proxied, proxyProtocol: false }]);
  assert.equal(cli(['check-config', '-c', plain]).code, 0);
});

test('a non-loopback listener with proxyProtocol needs proxyFrom, trusted networks or not: check-config and serve exit 2 naming the key', async () => {
  const file = join(dir, 'proxy-anyone.yaml');
  // No trustedNetworks: the header still picks the address lockouts and logs judge.
  const lan = { name: 'lan', host: '0.0.0.0', port: 0, tls: 'starttls', proxyProtocol: true };
  await writeConfig(file, [lan]);
  for (const cmd of ['check-config', 'serve']) {
    const r = cli([cmd, '-c', file]);
    assert.equal(r.code, 2, `${cmd}: ${r.stdout}${r.stderr}`);
    const line = r.stderr.split('\n').find((l) => l.includes('listeners[0].proxyFrom:'));
    assert.ok(line, `${cmd} names listeners[0].proxyFrom:\n${r.stderr}`);
    assert.match(line, /listener "lan".*any client.*proxyFrom: \[/);
  }
  const fixed = join(dir, 'proxy-from.yaml');
  await writeConfig(fixed, [{ ...lan, proxyFrom: ['192.0.2.10'] }]);
  const ok = cli(['check-config', '-c', fixed]);
  assert.equal(ok.code, 0, ok.stderr);
  // On loopback only local processes can send a header: allowed, and judged as proxied (below).
  const local = join(dir, 'proxy-local.yaml');
  await writeConfig(local, [{ ...lan, host: '127.0.0.1' }]);
  assert.equal(cli(['check-config', '-c', local]).code, 0);
});

test('listener: an address claimed in a PROXY header never gets loopback privileges (cleartext AUTH); the real loopback peer does', async () => {
  const PASSWORD = 'proxy claim password';
  const users = [
    { username: 'printer', passwordHash: await hashPassword(PASSWORD, FAKE_SCRYPT_COST), account: 'office' },
  ];
  // The balancer is 127.0.0.2 (on this host); a direct client on 127.0.0.1 sends no header.
  const config = makeConfig(dir, {
    listeners: [{ name: 'lb', host: '127.0.0.1', port: 0, tls: 'none', proxyProtocol: true, proxyFrom: ['127.0.0.2'] }],
    users,
  });
  const h = await startListeners(config, spool);
  const auth = async (opts: { proxy?: string | Buffer; localAddress?: string }) => {
    const c = await RawSmtp.connect(h.port(), opts);
    await c.ehlo();
    const r = await c.authPlain('printer', PASSWORD);
    await c.quit();
    return r.lines.join();
  };
  const REFUSED = '538 5.7.11 Encryption required for requested authentication mechanism';
  try {
    const claims: Array<[string, string | Buffer]> = [
      ['v2 127.0.0.1', proxyV2('127.0.0.1', 40000)],
      ['v2 ::1', proxyV2('::1', 40001)],
      ['v2 ::ffff:127.0.0.1', proxyV2('::ffff:7f00:1', 40002)], // IPv4-mapped, in the hex spelling the builder takes
      ['v1 127.0.0.1', 'PROXY TCP4 127.0.0.1 127.0.0.1 40003 25\r\n'],
      ['v1 ::1', 'PROXY TCP6 ::1 ::1 40004 25\r\n'],
    ];
    for (const [what, proxy] of claims) assert.equal(await auth({ proxy, localAddress: '127.0.0.2' }), REFUSED, what);
    // A proxy's own LOCAL connection is a proxied connection too.
    assert.equal(
      await auth({ proxy: proxyV2('', 0, { local: true }), localAddress: '127.0.0.2' }),
      REFUSED,
      'v2 LOCAL',
    );
    // The same machine without a header (127.0.0.1 is not in proxyFrom) is a local client.
    assert.match(await auth({}), /^235 /);
    assert.ok(
      h.logs().some((l) => l.message === 'auth ok' && l.ip === '127.0.0.1'),
      'canary: the direct login was judged',
    );
  } finally {
    await h.stop();
  }
  // Only allowInsecureAuth lets a proxied client log in without TLS.
  const insecure = makeConfig(dir, {
    listeners: [
      {
        name: 'lb',
        host: '127.0.0.1',
        port: 0,
        tls: 'none',
        proxyProtocol: true,
        proxyFrom: ['127.0.0.2'],
        allowInsecureAuth: true,
      },
    ],
    users,
  });
  const h2 = await startListeners(insecure, spool);
  try {
    const c = await RawSmtp.connect(h2.port(), { proxy: proxyV2('127.0.0.1', 40005), localAddress: '127.0.0.2' });
    await c.ehlo();
    assert.equal((await c.authPlain('printer', PASSWORD)).code, 235);
    await c.quit();
  } finally {
    await h2.stop();
  }
});

test('listener: a config that skipped the schema with an open list is refused at start; nothing listens', async () => {
  for (const nets of [['::ffff:0:0/96'], ['0:0:0:0:0:ffff:0:0/96']]) {
    const config = makeConfig(dir, {
      listeners: [
        {
          name: 'proxied',
          host: '127.0.0.1',
          port: 0,
          proxyProtocol: true,
          trustedNetworks: ['198.51.100.0/24'],
          trustedAccount: 'office',
        },
      ],
    });
    config.listeners[0].trustedNetworks = nets;
    const l = new Listeners({
      config,
      log: createLogger({ silent: true }),
      spool,
      onQueued: () => assert.fail('nothing may be queued'),
    });
    try {
      await assert.rejects(l.start(), /open relay/);
    } finally {
      await l.stop();
    }
  }
});

test('listener: PROXY claiming 203.0.113.7 is not trusted by a narrow (IPv4-mapped) list; the LAN address is, in either spelling', async () => {
  const config = makeConfig(dir, {
    listeners: [
      {
        name: 'proxied',
        host: '127.0.0.1',
        port: 0,
        proxyProtocol: true,
        trustedNetworks: ['::ffff:198.51.100.0/120'],
        trustedAccount: 'office',
      },
    ],
  });
  const h = await startListeners(config, spool);
  try {
    const relay = async (proxy: string) => {
      const c = await RawSmtp.connect(h.port(), { proxy });
      await c.ehlo();
      const r = await c.sendRaw(
        'scanner@example.com',
        ['victim@example.org'],
        message('scanner@example.com', 'victim@example.org'),
      );
      await c.quit();
      return r;
    };
    for (const proxy of [
      'PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n',
      'PROXY TCP6 ::ffff:203.0.113.7 ::1 40000 25\r\n',
    ]) {
      const r = await relay(proxy);
      assert.equal(r.lines.join(), '530 5.7.0 Authentication required', proxy);
    }
    assert.equal(h.queued.length, 0);
    for (const proxy of [
      'PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n',
      'PROXY TCP6 ::ffff:198.51.100.8 ::1 40000 25\r\n',
    ]) {
      const r = await relay(proxy);
      assert.equal(r.code, 250, `${proxy}: ${r.lines.join()}`);
    }
    assert.deepEqual(
      h.queued.map((e) => [e.clientIp, e.user]),
      [
        ['198.51.100.7', null],
        ['198.51.100.8', null],
      ],
    );
  } finally {
    await h.stop();
  }
});

test('listener: a listener on an IPv4-mapped address (dual-stack socket) trusts a plain IPv4 entry', async () => {
  const config = makeConfig(dir, {
    listeners: [
      { name: 'dual', host: '::ffff:127.0.0.1', port: 0, trustedNetworks: ['127.0.0.2/32'], trustedAccount: 'office' },
    ],
  });
  const h = await startListeners(config, spool);
  try {
    const trusted = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.2' });
    await trusted.ehlo();
    assert.equal(
      (await trusted.sendRaw('scanner@example.com', ['x@example.net'], message('scanner@example.com', 'x@example.net')))
        .code,
      250,
    );
    await trusted.quit();
    assert.equal(h.queued[0].clientIp, '127.0.0.2'); // smtp-server drops the mapped prefix from the socket address
    const other = await RawSmtp.connect(h.port(), { localAddress: '127.0.0.3' });
    await other.ehlo();
    assert.equal((await other.cmd('MAIL FROM:<scanner@example.com>')).code, 530);
    await other.quit();
  } finally {
    await h.stop();
  }
});
