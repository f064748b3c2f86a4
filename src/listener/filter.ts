// The Transform between smtp-server's DATA stream and the spool: normalises bare LF line
// endings to CRLF, counts the bytes the client sent against the size limit, and captures
// the header section (only the start of the message is ever buffered) so the From header
// can be checked before the message is accepted.
import { Transform, type TransformCallback } from 'node:stream';
import { collectYoung } from './gc.js';

/** A refusal that ends the transaction with this reply at the end of DATA. */
export class SmtpReply extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'SmtpReply';
  }
}

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');

/** Replaces every From field with `from` (a complete field value) and adds `Reply-To: replyTo` when there is none. */
export interface HeaderEdit {
  from: string;
  replyTo?: string;
}

export interface MessageFilterOptions {
  /** Largest message, in bytes the client sent; beyond it the message is refused with 552. */
  maxBytes: number;
  /** The 552 text when maxBytes is exceeded (default: the listener's fixed-limit wording). */
  tooBigText?: string;
  /** How much header may precede the blank line before the message is refused. */
  maxHeaderBytes?: number;
  /**
   * Inspects the header section (CRLF lines, unfolded by the caller): a reply refuses the
   * message, a HeaderEdit rewrites it, null passes it on unchanged.
   */
  inspectHeaders?: (header: string) => SmtpReply | HeaderEdit | null;
  /** Runs first when it returns a promise: what inspectHeaders needs is loaded on demand. */
  prepareHeaders?: (header: string) => Promise<void> | null;
  /** Called once, synchronously, when the message is refused; the filter then errors with it. */
  onReject: (reply: SmtpReply) => void;
}

export class MessageFilter extends Transform {
  /** Bytes received from the client (before normalisation). */
  received = 0;
  rejection: SmtpReply | null = null;
  private lastByte = -1;
  private header: Buffer[] | null = [];
  private headerLen = 0;
  private readonly maxHeaderBytes: number;

  constructor(private readonly opts: MessageFilterOptions) {
    super();
    this.maxHeaderBytes = opts.maxHeaderBytes ?? 256 * 1024;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.rejection) return cb();
    this.received += chunk.length;
    if (this.received > this.opts.maxBytes) {
      this.reject(new SmtpReply(552, this.opts.tooBigText ?? '5.3.4 Message size exceeds fixed maximum message size'));
      return cb();
    }
    const out = this.normalise(chunk);
    // The header section is held back until it is complete: it may be refused or rewritten.
    const pending = this.header ? this.captureHeader(out) : (this.push(out), undefined);
    if (pending) pending.then(() => cb(), cb);
    else cb();
  }

  override _flush(cb: TransformCallback): void {
    // A message without a blank line is all header; it still gets inspected.
    const done = () => (this.rejection ? cb(this.rejection) : cb());
    if (this.header && !this.rejection) {
      const all = Buffer.concat(this.header, this.headerLen);
      this.header = null;
      const pending = this.finishHeader(all, all.length);
      if (pending) return void pending.then(done, cb);
    }
    done();
  }

  private reject(reply: SmtpReply): void {
    if (this.rejection) return;
    this.rejection = reply;
    this.header = null;
    this.opts.onReject(reply);
    this.destroy(reply);
  }

  /** Bare LF -> CRLF; a CR split from its LF across chunks is remembered in lastByte. */
  private normalise(chunk: Buffer): Buffer {
    let i = chunk.indexOf(LF);
    if (i < 0) {
      this.lastByte = chunk[chunk.length - 1];
      return chunk;
    }
    const parts: Buffer[] = [];
    let start = 0;
    while (i >= 0) {
      const prev = i > 0 ? chunk[i - 1] : this.lastByte;
      if (prev !== CR) {
        parts.push(chunk.subarray(start, i), CRLF);
        start = i + 1;
      }
      i = chunk.indexOf(LF, i + 1);
    }
    this.lastByte = chunk[chunk.length - 1];
    if (start === 0) return chunk;
    parts.push(chunk.subarray(start));
    return Buffer.concat(parts);
  }

  /** Collects header bytes until the blank line, then inspects them and passes them on. */
  private captureHeader(out: Buffer): Promise<void> | undefined {
    const header = this.header!;
    const before = this.headerLen;
    header.push(out);
    this.headerLen += out.length;
    const all = header.length === 1 ? out : Buffer.concat(header, this.headerLen);
    if (header.length > 1) {
      header.length = 0;
      header.push(all);
    }
    let end: number;
    if (all.length >= 2 && all[0] === CR && all[1] === LF)
      end = 0; // no header at all
    else {
      const at = all.indexOf(HEADER_END, Math.max(0, before - 3));
      end = at < 0 ? -1 : at + 2;
    }
    if (end < 0) {
      if (this.headerLen > this.maxHeaderBytes)
        this.reject(new SmtpReply(552, '5.3.4 Message header section too large'));
      return;
    }
    this.header = null;
    return this.finishHeader(all, end);
  }

  /** `all[0, end)` is the header section (ending in CRLF), the rest is body. */
  private finishHeader(all: Buffer, end: number): Promise<void> | undefined {
    const text = all.subarray(0, end).toString('utf8');
    const ready = this.opts.prepareHeaders?.(text);
    if (ready) return ready.then(() => this.judgeHeader(all, end, text));
    this.judgeHeader(all, end, text);
    return undefined;
  }

  private judgeHeader(all: Buffer, end: number, text: string): void {
    if (this.rejection || this.destroyed) return;
    const verdict = this.opts.inspectHeaders?.(text) ?? null;
    if (verdict instanceof SmtpReply) return this.reject(verdict);
    if (verdict) {
      this.push(editHeader(all.subarray(0, end), verdict));
      this.push(all.subarray(end));
    } else this.push(all);
  }
}

/** Values of every header field named `name` (case-insensitive), unfolded. */
export function headerValues(header: string, name: string): string[] {
  const out: string[] = [];
  const lower = name.toLowerCase();
  let current: string | null = null;
  // A bare CR counts as a line break too: the upstream client turns it into CRLF, so a
  // header hidden behind one would otherwise reach Gmail unchecked.
  for (const line of header.split(/\r\n|\r|\n/)) {
    if (/^[ \t]/.test(line)) {
      if (current !== null) current += ' ' + line.trim();
      continue;
    }
    if (current !== null) out.push(current);
    current = null;
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === lower) current = line.slice(colon + 1).trim();
  }
  if (current !== null) out.push(current);
  return out;
}

/**
 * Applies a HeaderEdit to raw header bytes. Only the From field(s) are replaced; every other
 * byte is kept as the client sent it (latin1 round-trips arbitrary 8-bit bytes).
 */
export function editHeader(header: Buffer, edit: HeaderEdit): Buffer {
  const lines = header.toString('latin1').split('\r\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const out: string[] = [];
  let skipping = false;
  let replaced = false;
  let hasReplyTo = false;
  const field = (v: string) => Buffer.from(v, 'utf8').toString('latin1');
  for (const line of lines) {
    if (skipping && /^[ \t]/.test(line)) continue; // continuation of a replaced From
    skipping = false;
    if (/^from\s*:/i.test(line)) {
      skipping = true;
      if (!replaced) out.push(`From: ${field(edit.from)}`);
      replaced = true;
      continue;
    }
    if (/^reply-to\s*:/i.test(line)) hasReplyTo = true;
    out.push(line);
  }
  if (!replaced) out.unshift(`From: ${field(edit.from)}`);
  if (edit.replyTo && !hasReplyTo) out.push(`Reply-To: ${field(edit.replyTo)}`);
  return Buffer.from(out.join('\r\n') + '\r\n', 'latin1');
}

/** Bytes of a refused message read between two young-generation collections. */
const DISCARD_GC_BYTES = 4 * 2 ** 20;
const discarding = new WeakSet<object>();

/**
 * Reads the rest of a refused message and drops it (the reply is owed at the end of DATA).
 * Nothing is kept, but each chunk is a fresh buffer (a socket read, copied once more by
 * smtp-server's DATA parser) and dropping it allocates next to nothing on the JS heap, so
 * V8 would only collect these buffers when their external memory hits its 64 MB soft
 * limit: refusing 200 MB peaked 56 MB above the start. A minor GC every 4 MiB read frees
 * them as they go.
 */
export function discardRest(stream: NodeJS.ReadableStream): void {
  if (discarding.has(stream)) return;
  discarding.add(stream);
  let since = 0;
  stream.on('data', (chunk: Buffer) => {
    since += chunk.length;
    if (since < DISCARD_GC_BYTES) return;
    since = 0;
    collectYoung();
  });
  stream.resume();
}
