// winston logger with a redaction stage that every entry passes through, plus an adapter
// for the bunyan-style loggers smtp-server and nodemailer expect.
import winston from 'winston';
import { redact, redactString, protocolBlobs, hostForLog, addressForLog } from './redact.js';
import { isJournalStream, defaultLogFormat, PRIORITY } from './journal.js';
import type { Level } from './level.js';

export type { Level };
export type Meta = Record<string, unknown>;

export interface Logger {
  error(msg: string, meta?: Meta): void;
  warn(msg: string, meta?: Meta): void;
  info(msg: string, meta?: Meta): void;
  debug(msg: string, meta?: Meta): void;
  child(meta: Meta): Logger;
  /** Whether a line at this level would be written (lets callers skip building it). */
  enabled?(level: Level): boolean;
}

const scrub = winston.format((info) => {
  const clean = redact({ ...info }) as winston.Logform.TransformableInfo;
  // winston keeps level/message under symbols too; copy them over the cleaned object.
  for (const sym of Object.getOwnPropertySymbols(info))
    (clean as unknown as Record<symbol, unknown>)[sym] = (info as unknown as Record<symbol, unknown>)[sym];
  clean.message = typeof info.message === 'string' ? redactString(info.message) : redact(info.message);
  return clean;
});

export interface LogOptions {
  level?: Level;
  format?: 'json' | 'text';
  /** Where lines go; default stderr (journald picks it up). */
  stream?: NodeJS.WritableStream;
  silent?: boolean;
}

const MESSAGE = Symbol.for('message');
/** Last stage: <N> before the finished line, for journald (src/log/journal.ts). */
const journalPrefix = winston.format((info) => {
  const line = info as unknown as Record<symbol, unknown>;
  line[MESSAGE] = `<${PRIORITY[info.level as Level] ?? 6}>${String(line[MESSAGE])}`;
  return info;
});

export function createLogger(opts: LogOptions = {}): Logger {
  const journal = !opts.stream && isJournalStream(2);
  const textLine = (info: winston.Logform.TransformableInfo) => {
    const { timestamp, level, message, ...rest } = info;
    const kv = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
      .join(' ');
    // One entry, one line (a multi-line SMTP reply would otherwise split into entries without a
    // priority); the journal stores time and priority with each line: not repeated in the text.
    const msg = String(message).replace(/\r/g, '\\r').replace(/\n/g, '\\n');
    return `${journal ? '' : `${String(timestamp)} ${level}: `}${msg}${kv ? ' ' + kv : ''}`;
  };
  const lineFormat =
    (opts.format ?? defaultLogFormat()) === 'text'
      ? winston.format.combine(scrub(), winston.format.timestamp(), winston.format.printf(textLine))
      : winston.format.combine(scrub(), winston.format.timestamp(), winston.format.json());
  const format = journal ? winston.format.combine(lineFormat, journalPrefix()) : lineFormat;
  const transport = opts.stream
    ? new winston.transports.Stream({ stream: opts.stream })
    : new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] });
  const w = winston.createLogger({ level: opts.level ?? 'info', format, transports: [transport], silent: opts.silent });
  return wrap(w);
}

function wrap(w: winston.Logger): Logger {
  return {
    // Level check first: winston would format (and redact) an entry before dropping it.
    error: (m, meta) => void (w.isLevelEnabled('error') && w.error(m, meta)),
    warn: (m, meta) => void (w.isLevelEnabled('warn') && w.warn(m, meta)),
    info: (m, meta) => void (w.isLevelEnabled('info') && w.info(m, meta)),
    debug: (m, meta) => void (w.isLevelEnabled('debug') && w.debug(m, meta)),
    child: (meta) => wrap(w.child(meta)),
    enabled: (level) => w.isLevelEnabled(level),
  };
}

/** A logger that drops everything (CLI commands that print their own output). */
export const nullLogger: Logger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
  child: () => nullLogger,
  enabled: () => false,
};

/**
 * bunyan-style adapter for smtp-server/nodemailer: they call logger.info(meta, fmt, ...args).
 * Everything they say goes to debug, their warnings and errors too (marked libLevel): the
 * listener and the delivery worker log each outcome once themselves (a refused upstream
 * connection is one "deferred" warning, not three lines), and we never enable their raw data logging.
 */
// What a client command line may show in the debug log (issue 24 item 5): only the verb and
// the arguments up to their syntactic end, each checked against its grammar. Whatever else
// a client puts on a line (an AUTH payload spliced into EHLO, a password after NOOP, an
// unknown verb's arguments) is dropped and shown as `[…]`; a kept argument that looks like
// an encoded blob is replaced too, see protocolBlobs.
const VERB_ONLY = /^(DATA|QUIT|RSET|NOOP|STARTTLS)(?=\s|$)/i;
const HELLO = /^(EHLO|HELO|LHLO)(?=\s|$)\s*(\S*)(.*)$/i;
const PATH_COMMAND = /^(MAIL\s+FROM|RCPT\s+TO)\s*:\s*(.*)$/i;
const BDAT = /^BDAT\s+\d{1,15}(?:\s+LAST)?\s*$/i;
// A path: <> or <address> (no source route, no quoted string); the address is judged by addressForLog.
const PATH = /^<([^<>\s"]{0,320})>$/;
// MAIL/RCPT parameters whose values cannot carry free text; anything else is dropped.
const PARAM =
  /^(?:SIZE=\d{1,15}|BODY=(?:7BIT|8BITMIME|BINARYMIME)|SMTPUTF8|REQUIRETLS|RET=(?:FULL|HDRS)|NOTIFY=(?:NEVER|SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*)$/i;
// An AUTH verb anywhere in a segment, with everything after it (the mechanism's initial response).
const AUTH_ANYWHERE = /\bAUTH\b[\s\S]*$/i;
const DROPPED = '[…]';

/** One command with its arguments cut to their syntax, or null for a verb not listed here. */
function commandForLog(s: string): string | null {
  let m = VERB_ONLY.exec(s);
  if (m) return m[1].toUpperCase() + (s.slice(m[0].length).trim() ? ' ' + DROPPED : '');
  if ((m = HELLO.exec(s)))
    return `${m[1].toUpperCase()}${m[2] ? ' ' + hostForLog(m[2]) : ''}${m[3].trim() ? ' ' + DROPPED : ''}`;
  if ((m = PATH_COMMAND.exec(s))) {
    const verb = m[1].toUpperCase().replace(/\s+/, ' ');
    const [path = '', ...params] = m[2].trim().split(/\s+/);
    const inner = PATH.exec(path)?.[1];
    const shown = inner === undefined ? '<[not a path]>' : `<${inner && addressForLog(inner)}>`;
    const kept = params.filter((p) => PARAM.test(p));
    return `${verb}:${shown}${kept.length ? ' ' + kept.join(' ') : ''}${kept.length < params.length ? ' ' + DROPPED : ''}`;
  }
  if (BDAT.test(s)) return s.trim().toUpperCase();
  if (/^BDAT(?=\s|$)/i.test(s)) return 'BDAT ' + DROPPED;
  return null;
}

/**
 * The loggable form of a client command line, or null to drop it. smtp-server splits
 * commands on LF only, so `NOOP\rAUTH PLAIN <base64>` arrives as one line that starts
 * with a harmless verb: every CR/LF-separated segment is judged on its own, and an AUTH
 * verb anywhere (also as an argument, `NOOP AUTH PLAIN …`) loses everything after it.
 */
export function clientLineForLog(line: string): string | null {
  const segments = line.split(/[\r\n]+/).filter((s) => s.trim() !== '');
  const kept = segments.map((seg) => {
    const s = seg.trim();
    const auth = AUTH_ANYWHERE.exec(s);
    if (!auth) return commandForLog(s);
    const head = s.slice(0, auth.index).trim();
    return head ? `${commandForLog(head) ?? '[unlisted command]'} AUTH [redacted]` : 'AUTH [redacted]';
  });
  if (!kept.length || kept.every((s) => s === null)) return null;
  return kept.map((s) => s ?? '[unlisted command]').join(' \\r ');
}

export function bunyanAdapter(log: Logger, component: string) {
  const fmt = (args: unknown[]): [string, Meta] => {
    let meta: Meta = {};
    if (args.length && args[0] && typeof args[0] === 'object' && !(args[0] instanceof Error))
      meta = args.shift() as Meta;
    const [f, ...rest] = args;
    let i = 0;
    let msg = String(f ?? '').replace(/%[sdjo]/g, () => String(rest[i++] ?? ''));
    // Arguments without a placeholder are appended, as util.format does ('S:', line).
    if (i < rest.length)
      msg +=
        ' ' +
        rest
          .slice(i)
          .map((a) => String(a).trimEnd())
          .join(' ');
    // Only the transaction kind and connection id: other fields may hold addresses or payloads.
    const { tnx, cid } = meta as Meta & { tnx?: unknown; cid?: unknown };
    return [msg, { component, ...(tnx ? { tnx } : {}), ...(cid ? { cid } : {}) }];
  };
  const lvl =
    (libLevel: Level) =>
    (...args: unknown[]) => {
      // Protocol traces arrive for every command and reply; do not format the dropped ones.
      if (log.enabled && !log.enabled('debug')) return;
      const [m, base] = fmt(args);
      const meta = libLevel === 'warn' || libLevel === 'error' ? { ...base, libLevel } : base;
      if (m.startsWith('C:')) {
        const line = clientLineForLog(m.slice(2));
        if (line === null) return;
        return log.debug(`C: ${line}`, meta);
      }
      // The library's other inbound lines may quote client input (a MAIL FROM domain it could
      // not decode); not our replies (queue ids look like blobs) nor the connection id.
      if (component === 'smtp-in' && !m.startsWith('S:')) {
        const cid = typeof meta.cid === 'string' && meta.cid ? meta.cid : null;
        return log.debug(cid ? m.split(cid).map(protocolBlobs).join(cid) : protocolBlobs(m), meta);
      }
      log.debug(m, meta);
    };
  return {
    trace: lvl('debug'),
    debug: lvl('debug'),
    info: lvl('debug'),
    warn: lvl('warn'),
    error: lvl('error'),
    fatal: lvl('error'),
    child: () => bunyanAdapter(log, component),
  };
}
