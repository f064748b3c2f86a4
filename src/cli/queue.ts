// `queue list|show|retry|delete|hold|release`: inspect and steer the spool from the command
// line. Each asks the owner of the state directory (the running daemon over its control
// socket, or this process holding the state lock when no daemon runs) and prints its answer;
// a refusal exits 1.
import type { Config } from '../config/schema.js';
import { callOwner } from '../control/client.js';
import type { QueueRow, RetryAllResult, ShowResult } from '../control/ops.js';
import type { CommandResult } from '../delivery/worker.js';
import { formatAge, formatSize } from '../log/format.js';

type Out = NodeJS.WritableStream;

/** The NEXT TRY column: when, or why not (`held: needs-reauth`, `in flight`, `failed`, `corrupt`). */
function nextTry(r: QueueRow, now: number): string {
  if (r.state === 'held') return `held: ${r.reason ?? '?'}`;
  if (r.state === 'in-flight') return 'in flight';
  if (r.waiting) return `waiting: ${r.waiting}`;
  if (r.state === 'failed' || r.state === 'corrupt') return r.state;
  const at = r.nextAttemptAt ? Date.parse(r.nextAttemptAt) : 0;
  return at <= now ? 'now' : `in ${formatAge(at - now)}`;
}

function sender(from: string | null): string {
  return from === null ? '?' : from === '' ? '<>' : from;
}

function oneLine(s: string | null | undefined, max: number): string {
  if (!s) return '';
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i])))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** `queue list [--json]`: one line per message (queued, failed and corrupt ones). */
export async function queueList(config: Config, opts: { json: boolean }, out: Out): Promise<number> {
  const rows = (await callOwner(config, 'queue.list')).result as QueueRow[];
  const now = Date.now();
  if (opts.json) {
    out.write(JSON.stringify(rows, null, 2) + '\n');
    return 0;
  }
  if (!rows.length) {
    out.write('queue is empty\n');
    return 0;
  }
  const t = [['ID', 'ACCOUNT', 'FROM', 'RCPTS', 'SIZE', 'AGE', 'ATTEMPTS', 'NEXT TRY', 'LAST REPLY']];
  for (const r of rows) {
    const first = r.rcpts[0]?.address ?? '';
    const rcpts = r.rcpts.length > 1 ? `${first} (+${r.rcpts.length - 1})` : first;
    const age = r.ageMs === null ? '-' : formatAge(r.ageMs);
    const last = r.state === 'corrupt' ? `${r.file}: ${r.error}` : r.state === 'failed' ? r.failReason : r.lastReply;
    t.push([
      r.id,
      r.account ?? '?',
      sender(r.from),
      rcpts,
      formatSize(r.size),
      age,
      String(r.attempts),
      nextTry(r, now),
      oneLine(last, 60),
    ]);
  }
  out.write(table(t));
  const queued = rows.filter((r) => r.state !== 'failed' && r.state !== 'corrupt');
  const failed = rows.filter((r) => r.state === 'failed').length;
  const corrupt = rows.filter((r) => r.state === 'corrupt').length;
  let summary = `-- ${plural(queued.length, 'message')} queued, ${formatSize(queued.reduce((n, r) => n + r.size, 0))}`;
  if (failed) summary += `; ${failed} failed (\`queue show ID\`, \`queue retry ID\`)`;
  if (corrupt) summary += `; ${corrupt} corrupt (in spool/corrupt/)`;
  out.write(summary + '\n');
  return 0;
}

/** `queue show ID`: the envelope, each recipient's status and the message headers. */
export async function queueShow(config: Config, id: string, out: Out, err: Out = process.stderr): Promise<number> {
  const s = (await callOwner(config, 'queue.show', { id })).result as ShowResult | null;
  if (!s) {
    err.write(`queue show: no message with id ${id}\n`);
    return 1;
  }
  const r = s.row;
  const now = Date.now();
  const lines: [string, string][] = [
    ['id', r.id],
    ['state', r.state === 'held' ? `held (${r.reason})` : r.state],
  ];
  if (r.state === 'corrupt') lines.push(['file', r.file ?? '?'], ['error', r.error ?? '?']);
  else {
    lines.push(
      ['account', r.account ?? '?'],
      ['user', r.user ?? '(trusted network)'],
      ['client', s.client ?? '?'],
      ['from', sender(r.from)],
    );
    for (const x of r.rcpts)
      lines.push(['to', `${x.address} [${x.status}]${x.reply ? ` ${oneLine(x.reply, 200)}` : ''}`]);
    lines.push(
      ['size', `${r.size} bytes`],
      ['body', `${s.bodyType}${s.smtputf8 ? ', SMTPUTF8' : ''}`],
      ['received', `${r.receivedAt} (${formatAge(r.ageMs ?? 0)} ago)`],
      ['attempts', String(r.attempts)],
    );
    if (r.nextAttemptAt && r.state !== 'failed') lines.push(['next try', `${r.nextAttemptAt} (${nextTry(r, now)})`]);
    if (r.lastReply) lines.push(['last reply', oneLine(r.lastReply, 500)]);
    if (r.isBounce) lines.push(['bounce', 'yes (never bounced itself)']);
    if (r.state === 'failed') lines.push(['failed', `${r.failedAt}: ${oneLine(r.failReason, 500)}`]);
  }
  const w = Math.max(...lines.map(([k]) => k.length)) + 1;
  out.write(lines.map(([k, v]) => `${(k + ':').padEnd(w)} ${v}`).join('\n') + '\n\n');
  out.write(s.headers);
  if (s.headers.length && !s.headers.endsWith('\n')) out.write('\n');
  return 0;
}

function answer(r: CommandResult, cmd: string, out: Out, err: Out): number {
  if (r.ok) out.write(r.message + '\n');
  else err.write(`queue ${cmd}: ${r.message}\n`);
  return r.ok ? 0 : 1;
}

/**
 * `queue retry ID|--all [--force]`: due now. One ID also goes through its account's quota
 * hold; `--all` only with `--force`. A message in flight is retried after that attempt, for
 * the recipients still pending; a failed one is re-queued for the recipients that failed.
 */
export async function queueRetry(
  config: Config,
  target: { id?: string; all?: boolean; force?: boolean },
  out: Out,
  err: Out = process.stderr,
): Promise<number> {
  if (target.all) {
    const r = (await callOwner(config, 'queue.retryAll', { force: target.force === true })).result as RetryAllResult;
    out.write(r.message + '\n');
    return 0;
  }
  return answer(
    (await callOwner(config, 'queue.retry', { id: target.id ?? '' })).result as CommandResult,
    'retry',
    out,
    err,
  );
}

/** `queue delete ID`: drop a message (queued, failed or corrupt) without delivering or bouncing it. */
export async function queueDelete(config: Config, id: string, out: Out, err: Out = process.stderr): Promise<number> {
  return answer((await callOwner(config, 'queue.delete', { id })).result as CommandResult, 'delete', out, err);
}

/** `queue hold ID`: state held, reason operator, until `queue release`. */
export async function queueHold(config: Config, id: string, out: Out, err: Out = process.stderr): Promise<number> {
  return answer((await callOwner(config, 'queue.hold', { id })).result as CommandResult, 'hold', out, err);
}

/** `queue release ID`: an operator-held message is due now. */
export async function queueRelease(config: Config, id: string, out: Out, err: Out = process.stderr): Promise<number> {
  return answer((await callOwner(config, 'queue.release', { id })).result as CommandResult, 'release', out, err);
}
