// `send-test`: one message straight through an account's token and Gmail connection,
// bypassing the spool, so an operator sees at once whether the upstream side works.
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { createLogger } from '../log/logger.js';
import { TokenService } from '../oauth/service.js';
import { TransportRouter } from '../upstream/router.js';
import type { Envelope } from '../types.js';

export async function sendTestCommand(config: Config, opts: { to: string; account?: string }, out: NodeJS.WritableStream): Promise<number> {
  const acct = opts.account ? config.accounts.find((a) => a.name === opts.account) : config.accounts[0];
  if (!acct) {
    out.write(`send-test: no account named "${opts.account}"\n`);
    return 2;
  }
  const log = createLogger({ level: 'warn', format: 'text' });
  const tokens = new TokenService({ config, log });
  await tokens.init();
  const upstream = new TransportRouter({ config, log, tokens });
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-bridge-test-'));
  try {
    const id = randomUUID();
    const file = join(dir, 'message.eml');
    const now = new Date();
    const text = Buffer.from(
      [
        `From: ${acct.email}`,
        `To: ${opts.to}`,
        `Subject: xoauth2-bridge test message`,
        `Date: ${now.toUTCString().replace('GMT', '+0000')}`,
        `Message-ID: <${id}@${hostname()}>`,
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=utf-8',
        '',
        `This is a test message sent by xoauth2-bridge on ${hostname()} through account "${acct.name}".`,
        '',
      ].join('\r\n'),
    );
    await writeFile(file, text);
    const env: Envelope = {
      id,
      user: null,
      account: acct.name,
      mailFrom: acct.email,
      rcptTo: [opts.to],
      size: text.length,
      clientIp: '127.0.0.1',
      bodyType: '7bit',
      smtputf8: false,
      receivedAt: now.toISOString(),
    };
    const res = await upstream.send(env, { path: file, size: text.length });
    out.write(`${res.outcome === 'ok' ? 'sent' : 'failed'} via ${upstream.describe(acct.name)} as ${acct.email}: ${res.outcome} ${res.response}\n`);
    return res.outcome === 'ok' ? 0 : 1;
  } finally {
    await upstream.close();
    tokens.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
