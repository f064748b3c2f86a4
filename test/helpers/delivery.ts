// Shared pieces for the delivery tests: a scripted implementation of our own narrow
// `Upstream` interface, a small AccountHealth, a recording logger and a config builder.
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { Logger, Meta } from '../../src/log/logger.js';
import type { NewMessage } from '../../src/spool/spool.js';
import type { AccountHealth, HealthState, Envelope, MessageSource, SendResult, Upstream } from '../../src/types.js';
import { readMessage } from '../../src/spool/message.js';

export interface Call {
  id: string;
  account: string;
  mailFrom: string;
  rcptTo: string[];
  isBounce: boolean;
  body: Buffer;
  at: number;
}

export type Script = (env: Envelope, call: Call, n: number) => SendResult | Promise<SendResult>;

export const ok = (env: Envelope, response = '250 2.0.0 OK 1700000000 x1-20020a'): SendResult => ({
  outcome: 'ok',
  response,
  accepted: [...env.rcptTo],
  rejected: [],
});
export const fail = (outcome: SendResult['outcome'], response: string): SendResult => ({
  outcome,
  response,
  accepted: [],
  rejected: [],
});

export class ScriptedUpstream implements Upstream {
  calls: Call[] = [];
  inFlight = 0;
  maxInFlight = 0;
  closed = false;
  constructor(public script: Script = (env) => ok(env)) {}

  async send(env: Envelope, message: MessageSource): Promise<SendResult> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const call: Call = {
        id: env.id,
        account: env.account,
        mailFrom: env.mailFrom,
        rcptTo: [...env.rcptTo],
        isBounce: env.isBounce === true,
        body: await readMessage(message),
        at: Date.now(),
      };
      this.calls.push(call);
      return await this.script(env, call, this.calls.length);
    } finally {
      this.inFlight--;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  callsFor(id: string): Call[] {
    return this.calls.filter((c) => c.id === id);
  }

  bounces(): Call[] {
    return this.calls.filter((c) => c.isBounce);
  }
}

export class TestHealth implements AccountHealth {
  states = new Map<string, HealthState>();
  reauth: { account: string; reason: string }[] = [];
  private listeners: ((account: string, state: HealthState) => void)[] = [];
  state(account: string): HealthState {
    return this.states.get(account) ?? 'ok';
  }
  markNeedsReauth(account: string, reason: string): void {
    this.reauth.push({ account, reason });
    this.set(account, 'needs-reauth');
  }
  onChange(listener: (account: string, state: HealthState) => void): void {
    this.listeners.push(listener);
  }
  set(account: string, state: HealthState): void {
    this.states.set(account, state);
    for (const l of this.listeners) l(account, state);
  }
}

export interface LogEntry {
  level: string;
  msg: string;
  meta: Meta;
}

export function recordingLogger(): Logger & { entries: LogEntry[]; events(msg: string): Meta[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: string) =>
    (msg: string, meta: Meta = {}) =>
      void entries.push({ level, msg, meta });
  const log = {
    entries,
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    child: () => log,
    events: (msg: string) => entries.filter((e) => e.msg === msg).map((e) => e.meta),
  };
  return log;
}

export async function tempState(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'delivery-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function testConfig(
  stateDir: string,
  queue: Record<string, unknown> = {},
  limits: Record<string, unknown> = {},
): Config {
  const q = { retry: ['50ms', '150ms'], maxAge: '5d', concurrency: 4, ...queue };
  const yamlQueue = Object.entries(q)
    .map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`)
    .join('\n');
  const lim = Object.keys(limits).length ? `\n    limits: ${JSON.stringify(limits)}` : '';
  const text = `
stateDir: ${JSON.stringify(stateDir)}
listeners:
  - { name: local, host: 127.0.0.1, port: 0 }
accounts:
  - name: office
    email: scanner@example.com
    oauth: { type: user, clientId: test-client, clientSecret: test-secret-value }${lim}
  - name: other
    email: other@example.net
    oauth: { type: user, clientId: test-client, clientSecret: test-secret-value }
users: []
queue:
${yamlQueue}
`;
  return parseConfig(text, join(stateDir, 'config.yaml'));
}

export const MESSAGE = Buffer.from(
  'From: Scanner <scanner@example.com>\r\nTo: a@example.org\r\nSubject: Scan of invoice 42\r\nMessage-ID: <scan42@example.com>\r\n\r\nPDF attached.\r\n',
);

/** Spool metadata for MESSAGE: one user's mail to two recipients through the office account. */
export const MESSAGE_META: NewMessage = {
  user: 'printer',
  account: 'office',
  mailFrom: 'scanner@example.com',
  rcptTo: ['a@example.org', 'b@example.org'],
  clientIp: '127.0.0.1',
  bodyType: '7bit',
  smtputf8: false,
};

/** Header fields of one header block (folded lines joined), names lower-cased. */
export function parseFields(block: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of block.replace(/\r\n[ \t]+/g, ' ').split(/\r\n/)) {
    const m = /^([^:\s]+):\s*(.*)$/.exec(line);
    if (m) out[m[1].toLowerCase()] = m[2];
  }
  return out;
}

/** Splits a multipart/report DSN into its top headers and parts (headers + body each). */
export function parseDsn(raw: Buffer): {
  headers: Record<string, string>;
  parts: { headers: Record<string, string>; body: string }[];
} {
  const text = raw.toString('latin1');
  const sep = text.indexOf('\r\n\r\n');
  const headers = parseFields(text.slice(0, sep));
  const boundary = /boundary="([^"]+)"/.exec(headers['content-type'] ?? '')?.[1];
  if (!boundary) throw new Error('no boundary in DSN');
  const body = text.slice(sep + 4);
  const chunks = body.split(`--${boundary}`);
  const parts = chunks.slice(1, -1).map((c) => {
    const p = c.replace(/^\r\n/, '');
    const i = p.indexOf('\r\n\r\n');
    return { headers: parseFields(p.slice(0, i)), body: p.slice(i + 4) };
  });
  if (!chunks[chunks.length - 1].startsWith('--')) throw new Error('DSN has no closing boundary');
  return { headers, parts };
}

/** The per-message and per-recipient field groups of a message/delivery-status body. */
export function statusGroups(body: string): Record<string, string>[] {
  return body
    .trim()
    .split(/\r\n\r\n/)
    .map(parseFields);
}
