// `queue list|show|retry|delete`: inspect and steer the spool from the command line. Works
// on the files directly, so it also works while the daemon runs; commands that change the
// queue signal the daemon (notifyDaemon), which rescans within seconds.
import type { Config } from '../config/schema.js';
import { nullLogger } from '../log/logger.js';
import { Spool, type FailedEnvelope } from '../spool/spool.js';
import { readHeaderBlock } from '../spool/headers.js';
import { notifyDaemon } from '../control/notify.js';
import type { Envelope } from '../types.js';

type Out = NodeJS.WritableStream;

function spoolOf(config: Config): Spool {
  return new Spool(config.stateDir, nullLogger);
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  const d = Math.floor(h / 24);
  return `${d}d${h % 24 ? `${h % 24}h` : ''}`;
}

export function formatSize(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}K`;
  return `${(n / 1024 / 1024).toFixed(1)}M`;
}

function nextTry(env: Envelope, now: number): string {
  const at = Date.parse(env.nextAttemptAt);
  return at <= now ? 'now' : `in ${formatAge(at - now)}`;
}

function sender(env: Envelope): string {
  return env.mailFrom === '' ? '<>' : env.mailFrom;
}

function oneLine(s: string | undefined, max: number): string {
  if (!s) return '';
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

/** `queue list [--json]`: one line per queued message. */
export async function queueList(config: Config, opts: { json: boolean }, out: Out): Promise<number> {
  const spool = spoolOf(config);
  const now = Date.now();
  const envs = await spool.list();
  const failed = await spool.listFailed();
  if (opts.json) {
    const rows = envs.map((e) => ({
      id: e.id,
      account: e.account,
      user: e.user,
      from: e.mailFrom,
      rcpts: e.rcptTo,
      delivered: e.delivered,
      size: e.size,
      receivedAt: e.receivedAt,
      ageMs: Math.max(0, now - Date.parse(e.receivedAt)),
      attempts: e.attempts,
      nextAttemptAt: e.nextAttemptAt,
      lastError: e.lastError ?? null,
      isBounce: e.isBounce === true,
    }));
    out.write(JSON.stringify(rows, null, 2) + '\n');
    return 0;
  }
  if (!envs.length) out.write('queue is empty\n');
  else {
    const rows = [['ID', 'ACCOUNT', 'FROM', 'RCPTS', 'SIZE', 'AGE', 'ATTEMPTS', 'NEXT TRY', 'LAST ERROR']];
    for (const e of envs) {
      const rcpts = e.rcptTo.length === 1 ? e.rcptTo[0] : `${e.rcptTo[0] ?? ''} (+${e.rcptTo.length - 1})`;
      rows.push([e.id, e.account, sender(e), rcpts, formatSize(e.size), formatAge(now - Date.parse(e.receivedAt)), String(e.attempts), nextTry(e, now), oneLine(e.lastError, 60)]);
    }
    out.write(table(rows));
    const total = envs.reduce((n, e) => n + e.size, 0);
    out.write(`-- ${envs.length} message${envs.length === 1 ? '' : 's'} queued, ${formatSize(total)}\n`);
  }
  if (failed.length) out.write(`-- ${failed.length} message${failed.length === 1 ? '' : 's'} in ${spool.failedDir} (see \`queue show ID\`)\n`);
  return 0;
}

/** `queue show ID`: the envelope and the message headers (queued or failed). */
export async function queueShow(config: Config, id: string, out: Out, err: Out = process.stderr): Promise<number> {
  const spool = spoolOf(config);
  const env: Envelope | null = await spool.get(id);
  const failed: FailedEnvelope | null = env ? null : await spool.getFailed(id);
  const e = env ?? failed;
  if (!e) {
    err.write(`queue show: no message with id ${id}\n`);
    return 1;
  }
  const now = Date.now();
  const lines: [string, string][] = [
    ['id', e.id],
    ['state', failed ? 'failed' : 'queued'],
    ['account', e.account],
    ['user', e.user ?? '(trusted network)'],
    ['client', e.clientIp],
    ['from', sender(e)],
    ['to', e.rcptTo.join(', ') || '(none)'],
    ...(e.delivered.length ? ([['delivered', e.delivered.join(', ')]] as [string, string][]) : []),
    ['size', `${e.size} bytes`],
    ['body', `${e.bodyType}${e.smtputf8 ? ', SMTPUTF8' : ''}`],
    ['received', `${e.receivedAt} (${formatAge(now - Date.parse(e.receivedAt))} ago)`],
    ['attempts', String(e.attempts)],
    ...(failed ? ([] as [string, string][]) : ([['next try', `${e.nextAttemptAt} (${nextTry(e, now)})`]] as [string, string][])),
    ...(e.lastError ? ([['last error', oneLine(e.lastError, 500)]] as [string, string][]) : []),
    ...(e.isBounce ? ([['bounce', 'yes (never bounced itself)']] as [string, string][]) : []),
    ...(failed ? ([['failed', `${failed.failedAt}: ${oneLine(failed.failReason, 500)}`]] as [string, string][]) : []),
  ];
  const w = Math.max(...lines.map(([k]) => k.length)) + 1;
  out.write(lines.map(([k, v]) => `${(k + ':').padEnd(w)} ${v}`).join('\n') + '\n\n');
  const file = failed ? spool.failedMessagePath(id) : spool.messagePath(id);
  try {
    const headers = await readHeaderBlock(file);
    out.write(headers);
    if (headers.length && headers[headers.length - 1] !== 0x0a) out.write('\n');
  } catch (e2) {
    err.write(`queue show: cannot read the message file: ${(e2 as Error).message}\n`);
    return 1;
  }
  return 0;
}

/** `queue retry ID|--all`: make messages due now; the daemon tries them within seconds. */
export async function queueRetry(config: Config, target: { id?: string; all?: boolean }, out: Out, err: Out = process.stderr): Promise<number> {
  const spool = spoolOf(config);
  const now = new Date().toISOString();
  let envs: Envelope[];
  if (target.all) envs = await spool.list();
  else {
    const env = target.id ? await spool.get(target.id) : null;
    if (!env) {
      const failed = target.id ? await spool.getFailed(target.id) : null;
      err.write(failed ? `queue retry: ${target.id} failed permanently and is kept in ${spool.failedDir} for inspection; it is not retried\n` : `queue retry: no queued message with id ${target.id ?? ''}\n`);
      return 1;
    }
    envs = [env];
  }
  let n = 0;
  for (const env of envs) {
    env.nextAttemptAt = now;
    if (await spool.update(env)) n++;
  }
  if (!target.all && n === 0) {
    err.write(`queue retry: ${target.id} left the queue meanwhile\n`);
    return 1;
  }
  notifyDaemon(config.stateDir, 'queue');
  out.write(target.all ? `${n} message${n === 1 ? '' : 's'} scheduled for immediate retry\n` : `${target.id}: scheduled for immediate retry\n`);
  return 0;
}

/** `queue delete ID`: drop a queued (or failed) message without delivering or bouncing it. */
export async function queueDelete(config: Config, id: string, out: Out, err: Out = process.stderr): Promise<number> {
  const spool = spoolOf(config);
  if (await spool.get(id)) {
    await spool.remove(id);
    notifyDaemon(config.stateDir, 'queue');
    out.write(`${id}: deleted from the queue\n`);
    return 0;
  }
  if (await spool.getFailed(id)) {
    await spool.removeFailed(id);
    out.write(`${id}: deleted from failed/\n`);
    return 0;
  }
  err.write(`queue delete: no message with id ${id}\n`);
  return 1;
}
