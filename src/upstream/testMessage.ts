// `send-test`'s message: one short text message straight through an account's upstream
// (token + Gmail SMTP or API), bypassing the spool, so an operator sees at once whether the
// upstream side works. Run by the owner of the state directory (the daemon, or the CLI
// holding the state lock), since getting a token may refresh and write the token store.
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { Envelope } from '../types.js';
import type { TransportRouter } from './router.js';
import { addrSpec } from './addressQuote.js';

export interface TestSendResult {
  ok: boolean;
  message: string;
}

export async function sendTestMessage(
  config: Config,
  upstream: TransportRouter,
  log: Logger,
  opts: { to: string; account?: string },
): Promise<TestSendResult> {
  const acct = opts.account ? config.accounts.find((a) => a.name === opts.account) : config.accounts[0];
  if (!acct)
    return {
      ok: false,
      message: `send-test: no account named "${opts.account}" (configured: ${config.accounts.map((a) => a.name).join(', ')})`,
    };
  // One address, written into the To: header: nothing that could add a header line or a second recipient.
  const to = addrSpec(opts.to);
  if (to === null) return { ok: false, message: `send-test: --to ${JSON.stringify(opts.to)} is not one email address` };
  const dir = await mkdtemp(join(tmpdir(), 'xoauth2-bridge-test-'));
  try {
    const id = randomUUID();
    const file = join(dir, 'message.eml');
    const now = new Date();
    const text = Buffer.from(
      [
        `From: ${acct.email}`,
        `To: <${to}>`,
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
    const ok = res.outcome === 'ok';
    const meta = { account: acct.name, rcpts: 1, outcome: res.outcome, reply: res.response };
    if (ok) log.info('send-test sent', meta);
    else log.warn('send-test failed', meta);
    return {
      ok,
      message: `${ok ? 'sent' : 'failed'} via ${upstream.describe(acct.name)} as ${acct.email}: ${res.outcome} ${res.response}`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
