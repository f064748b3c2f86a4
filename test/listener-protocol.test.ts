// Protocol-level behaviour of the inbound listener with real sockets on loopback and the
// real spool: what reaches the debug log of an AUTH exchange, half-closing clients (Exim),
// encoded From display names, the Received trace header, the smtp-server hook guard,
// the greeting delay and PROXY protocol v2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Listeners } from '../src/listener/server.js';
import { hashPassword } from '../src/listener/passwords.js';
import { Spool } from '../src/spool/spool.js';
import { createLogger } from '../src/log/logger.js';
import type { Envelope } from '../src/types.js';
import { RawSmtp, makeConfig, message } from './helpers/listener.js';
import { waitFor } from './helpers/wait.js';

const PASSWORD = 'tr0ub4dor&3 secret';
const b64 = (s: string) => Buffer.from(s).toString('base64');
let dir: string;
let spool: Spool;
let hash: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xb-protocol-'));
  spool = new Spool(dir, createLogger({ silent: true }), { fsync: true });
  await spool.init();
  hash = await hashPassword(PASSWORD);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Harness {
  port: () => number;
  queued: Envelope[];
  lines: string[];
  logs: () => Array<Record<string, unknown>>;
  stop: () => Promise<void>;
}

async function start(listener: Record<string, unknown> = {}, over: Record<string, unknown> = {}): Promise<Harness> {
  const config = makeConfig(dir, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, tls: 'none', ...listener }],
    users: [{ username: 'printer', passwordHash: hash, account: 'office' }],
    ...over,
  });
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const log = createLogger({ level: 'debug', format: 'json', stream });
  const queued: Envelope[] = [];
  const l = new Listeners({ config, log, spool, onQueued: (env) => queued.push(env) });
  const bound = await l.start();
  return {
    port: () => bound[0].port,
    queued,
    lines,
    logs: () => lines.map((x) => JSON.parse(x) as Record<string, unknown>),
    stop: () => l.stop(),
  };
}

test('debug log: no AUTH payload, whatever precedes the AUTH verb on the line (bare CR, arguments) and no continuation line', async () => {
  const h = await start();
  try {
    const plain = b64(`\0printer\0${PASSWORD}`);
    const c = await RawSmtp.connect(h.port());
    await c.ehlo();
    // smtp-server splits commands on LF only: each of these is one command line to it.
    await c.cmd(`NOOP\rAUTH PLAIN ${plain}`);
    await c.cmd(`EHLO x\rAUTH PLAIN ${plain}\rMAIL FROM:<scanner@example.com>`);
    await c.cmd(`NOOP AUTH PLAIN ${plain}`);
    await c.cmd(`RSET\r\rauth plain ${plain}`);
    assert.equal((await c.cmd('AUTH PLAIN')).code, 334);
    assert.equal((await c.cmd(plain)).code, 235, 'continuation line of AUTH PLAIN');
    await c.quit();
    const c2 = await RawSmtp.connect(h.port());
    await c2.ehlo();
    assert.equal((await c2.authLogin('printer', PASSWORD)).code, 235);
    assert.equal((await c2.authPlain('printer', PASSWORD)).code, 503, 'already authenticated');
    await c2.quit();
    const c3 = await RawSmtp.connect(h.port());
    await c3.ehlo();
    assert.equal((await c3.cmd(`AUTH PLAIN ${plain}`)).code, 235);
    await c3.quit();

    const all = h.lines.join('\n');
    for (const secret of [plain, PASSWORD, b64(PASSWORD), plain.slice(0, 24), b64(PASSWORD).slice(0, 12)])
      assert.ok(!all.includes(secret), `log leaks ${secret}`);
    // The sessions are logged at debug (the test would pass vacuously otherwise).
    assert.ok(h.logs().some((l) => l.message === 'C: NOOP \\r AUTH [redacted]'), 'the NOOP line is logged, redacted');
    assert.ok(h.logs().some((l) => l.message === 'C: EHLO x \\r AUTH [redacted] \\r MAIL FROM:<scanner@example.com>'), all);
  } finally {
    await h.stop();
  }
});
