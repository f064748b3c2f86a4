// Scenario 6: how the delivery scheduler scales with the queue's length. N messages are
// spooled first (fsync off: this measures scheduling, not the disk), then one worker drains
// them through an upstream that accepts at once. A scheduler that rescans the queue after
// every completion is quadratic in N; the due-time heap keeps the time per message flat.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import { nullLogger } from '../src/log/logger.js';
import { Spool } from '../src/spool/spool.js';
import { DeliveryWorker } from '../src/delivery/worker.js';
import type { AccountHealth, Envelope, SendResult, Upstream } from '../src/types.js';

const MESSAGE = Buffer.from('From: scanner@example.com\r\nTo: a@example.org\r\nSubject: drain\r\n\r\nhello\r\n');

export interface DrainResult {
  n: number;
  ms: number;
  perMessageMs: number;
}

async function drainOnce(n: number, concurrency: number): Promise<DrainResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-drain-'));
  try {
    const config = parseConfig(
      `stateDir: ${JSON.stringify(dir)}
listeners: [{ name: local, host: 127.0.0.1, port: 0 }]
accounts:
  - name: office
    email: scanner@example.com
    oauth: { type: user, clientId: bench, clientSecret: bench-secret }
    limits: { messagesPerDay: 10000000 }
users: []
queue: { concurrency: ${concurrency} }
`,
      join(dir, 'config.yaml'),
    );
    const spool = new Spool(dir, nullLogger, { fsync: false });
    await spool.init();
    for (let i = 0; i < n; i++) {
      await spool.receive([MESSAGE], {
        user: 'printer',
        account: 'office',
        mailFrom: 'scanner@example.com',
        rcptTo: [`r${i}@example.org`],
        clientIp: '127.0.0.1',
        bodyType: '7bit',
        smtputf8: false,
      });
    }
    let sent = 0;
    const upstream: Upstream = {
      async send(env: Envelope): Promise<SendResult> {
        sent++;
        return { outcome: 'ok', response: '250 2.0.0 OK', accepted: [...env.rcptTo], rejected: [] };
      },
      async close() {},
    };
    const health: AccountHealth = { state: () => 'ok', markNeedsReauth: () => {}, onChange: () => {} };
    const worker = new DeliveryWorker({ config, log: nullLogger, spool, upstream, health });
    const t0 = performance.now();
    await worker.start();
    while (sent < n || worker.stats().queued > 0) await new Promise((r) => setTimeout(r, 2));
    const ms = performance.now() - t0;
    await worker.stop(1000);
    return { n, ms, perMessageMs: ms / n };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function drain(sizes: number[], concurrency = 4): Promise<DrainResult[]> {
  const out: DrainResult[] = [];
  for (const n of sizes) out.push(await drainOnce(n, concurrency));
  return out;
}
