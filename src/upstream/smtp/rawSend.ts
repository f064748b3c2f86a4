// Hands a spooled message file to nodemailer's SMTP pool byte for byte. nodemailer's Mail layer
// (`transport.sendMail({ raw })`) would wrap the same bytes in a MIME tree, generate a
// Message-ID with random bytes, parse every envelope address and pipe the file through extra
// stream stages for each message, only to send what is on disk. The pool's transport contract
// (`send(mail, cb)` with `mail.data` and `mail.message`) is all it needs; nodemailer 10.6.1
// calls getEnvelope, messageId, getHeader('message-id') and createReadStream on the message.
import { createRequire } from 'node:module';
import { openMessage } from '../../spool/message.js';
import type { MessageSource } from '../../types.js';
import SMTPPool from 'nodemailer/lib/smtp-pool/index.js';
import MimeNode from 'nodemailer/lib/mime-node/index.js';
import PoolResource from 'nodemailer/lib/smtp-pool/pool-resource.js';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';

export { SMTPPool };

/** The nodemailer release this contract was read from (pinned in package.json). */
export const NODEMAILER_VERSION = '10.6.1';
/** What our stand-in message offers; the pool must not ask for anything else. */
const MESSAGE_METHODS = new Set(['getEnvelope', 'messageId', 'getHeader', 'createReadStream']);

/**
 * The pool code that handles a queued mail, as source text: every SMTPPool method and
 * PoolResource.send (nodemailer has no public way to hand a pool raw bytes).
 */
function poolSources(): string[] {
  const protos: object[] = [SMTPPool.prototype, (PoolResource as unknown as { prototype: object }).prototype];
  const out: string[] = [];
  for (const proto of protos)
    for (const name of Object.getOwnPropertyNames(proto)) {
      const f = Object.getOwnPropertyDescriptor(proto, name)?.value as unknown;
      if (typeof f === 'function') out.push(Function.prototype.toString.call(f));
    }
  return out;
}

/** One sentence per way the pool's use of `mail.message` differs from what sendRaw provides. */
export function rawSendProblems(sources: string[] = poolSources()): string[] {
  const used = new Set<string>();
  let opaque = false;
  for (const src of sources) {
    for (const m of src.matchAll(/\bmail\.message\b(\.(\w+))?/g)) {
      if (m[2]) used.add(m[2]);
      else opaque = true;
    }
  }
  const problems: string[] = [];
  if (!used.has('createReadStream'))
    problems.push('the pool no longer reads the message through mail.message.createReadStream()');
  for (const u of used)
    if (!MESSAGE_METHODS.has(u))
      problems.push(`the pool calls mail.message.${u}(), which the raw message does not provide`);
  if (opaque) problems.push('the pool hands mail.message on as a whole');
  return problems;
}

/** Throws one clear error at start-up instead of failing each delivery later. */
export function assertRawSendContract(sources?: string[]): void {
  const problems = [...rawSendProblems(sources), ...dotStuffingProblems()];
  if (!problems.length) {
    installFastDotStuffing();
    return;
  }
  let version = '(unknown version)';
  try {
    version = (createRequire(import.meta.url)('nodemailer/package.json') as { version: string }).version;
  } catch {
    /* keep unknown */
  }
  throw new Error(
    `nodemailer ${version} does not relay raw messages the way the upstream expects (written for ${NODEMAILER_VERSION}): ` +
      `${problems.join('; ')}. Install nodemailer ${NODEMAILER_VERSION} exactly (npm ci uses the pinned version).`,
  );
}

// ---- dot-stuffing -------------------------------------------------------------------------
// nodemailer's DataStream (the Transform between the message stream and the socket) looks at
// every byte in JavaScript to stuff leading dots and turn bare CR / bare LF into CRLF: in a
// profile of 20 concurrent 20 MB messages it was the daemon's largest cost (1.8 s of 7.8 s of
// CPU). A spooled message is almost always clean CRLF text without a line starting with '.',
// and such a chunk leaves DataStream unchanged: the fast path below proves that with one
// native regular-expression scan and passes the chunk on as it is. Every other chunk goes
// through nodemailer's own code, so the bytes on the wire are exactly what DataStream writes.

interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  lastByte: number | false;
  push(chunk: Buffer): boolean;
}
type TransformFn = (this: DataStreamState, chunk: unknown, encoding: string, done: () => void) => void;
type FlushFn = (this: DataStreamState, done: () => void) => void;

const dataStreamProto = DataStream.prototype as unknown as { _transform: TransformFn; _flush: FlushFn };
const originalTransform = dataStreamProto._transform;
const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
/**
 * Inside a chunk: a bare CR, a bare LF or a dot at the start of a line (each needs an insert).
 * Every branch starts with CR or LF, so the scan skips other bytes quickly (3x faster than
 * `[^\r]\n`). A chunk that starts with the LF of a CRLF split across chunks matches too and
 * takes the slow path: slower, still exact.
 */
const NEEDS_CHANGE = /\r[^\n]|(?<!\r)\n|\n\./;

/** DataStream._transform, with clean chunks passed on without a byte loop. */
export function fastDotStuff(this: DataStreamState, chunk: unknown, encoding: string, done: () => void): void {
  if (!Buffer.isBuffer(chunk) || chunk.length < 2) return originalTransform.call(this, chunk, encoding, done);
  // The first byte is judged against the last one of the previous chunk (false: none yet).
  const prev = this.lastByte;
  const first = chunk[0];
  const edge = prev === CR ? first !== LF : first === LF || (first === DOT && (prev === LF || prev === false));
  if (edge || NEEDS_CHANGE.test(chunk.toString('latin1'))) return originalTransform.call(this, chunk, encoding, done);
  this.inByteCount += chunk.length;
  this.outByteCount += chunk.length;
  this.push(chunk);
  this.lastByte = chunk[chunk.length - 1];
  done();
}

/** What `transform` turns `parts` into (then DataStream's own end of data), run synchronously. */
function stuffWith(transform: TransformFn, parts: Buffer[]): Buffer {
  const out: Buffer[] = [];
  const st: DataStreamState = {
    inByteCount: 0,
    outByteCount: 0,
    lastByte: false,
    push: (b) => (out.push(Buffer.from(b)), true),
  };
  for (const p of parts) transform.call(st, p, 'buffer', () => {});
  dataStreamProto._flush.call(st, () => {});
  return Buffer.concat(out);
}

/** Inputs where every rule of DataStream applies, at the start, the end and across chunks. */
const STUFFING_CASES = [
  'a\r\nb\r\n',
  '.a\r\n..b\r\n.\r\nc',
  'x\ny\rz\r\n.\n.\r.\r\r\n\n\n',
  '\r\n.\r\n',
  'line\r',
  'line\n',
  '\n.x',
  'ab\r\r.\r\n',
];

/** Empty when the fast path writes what nodemailer's DataStream writes for every case and every split. */
export function dotStuffingProblems(transform: TransformFn = originalTransform): string[] {
  for (const text of STUFFING_CASES) {
    const all = Buffer.from(text, 'latin1');
    for (let cut = 0; cut <= all.length; cut++) {
      const parts = [all.subarray(0, cut), all.subarray(cut)].filter((p) => p.length);
      const want = stuffWith(transform, parts);
      const got = stuffWith(fastDotStuff, parts);
      if (!want.equals(got))
        return [
          `nodemailer's DataStream no longer writes what the fast dot-stuffing writes (${JSON.stringify(text)} split at ${cut})`,
        ];
    }
  }
  return [];
}

function installFastDotStuffing(): void {
  dataStreamProto._transform = fastDotStuff;
}

export interface RawEnvelope {
  /** '' is the null sender. */
  from: string;
  to: string[];
  use8BitMime: boolean;
  size: number;
}

export interface RawSendInfo {
  response: string;
  accepted: string[];
  rejected: string[];
  rejectedErrors?: Array<Error & { recipient?: string }>;
}

/** Addresses nodemailer sends unchanged except for a lower-cased domain (its normalisation). */
const PLAIN =
  /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/**
 * The address as nodemailer's Mail layer would put it on the wire (IDN domains punycoded,
 * odd local parts quoted); the cheap path covers the everyday ASCII address.
 */
export function wireAddress(address: string): string {
  if (address === '') return '';
  if (PLAIN.test(address)) {
    const at = address.lastIndexOf('@');
    return address.slice(0, at + 1) + address.slice(at + 1).toLowerCase();
  }
  const env = new MimeNode().setEnvelope({ from: address, to: [] }).getEnvelope();
  return typeof env.from === 'string' && env.from ? env.from : address;
}

/**
 * One transaction through the pool. Recipients in the result (and in a thrown error's
 * rejectedErrors) are spelled as in `env.to`, whatever went on the wire, so the caller can
 * match them against its envelope.
 */
export function sendRaw(pool: SMTPPool, id: string, env: RawEnvelope, msg: MessageSource): Promise<RawSendInfo> {
  const original = new Map<string, string>();
  const to: string[] = [];
  for (const r of env.to) {
    const w = wireAddress(r);
    if (original.has(w)) continue; // one RCPT per address, as the Mail layer dedupes
    original.set(w, r);
    to.push(w);
  }
  const back = (a: unknown): string => {
    const s = typeof a === 'string' ? a : String((a as { address?: string })?.address ?? '');
    return original.get(s) ?? s;
  };
  const fixRecipients = (x: {
    accepted?: unknown[];
    rejected?: unknown[];
    rejectedErrors?: Array<{ recipient?: string }>;
  }): void => {
    if (x.accepted) x.accepted = x.accepted.map(back);
    if (x.rejected) x.rejected = x.rejected.map(back);
    for (const e of x.rejectedErrors ?? []) if (e.recipient !== undefined) e.recipient = back(e.recipient);
  };
  const envelope = { from: wireAddress(env.from), to, use8BitMime: env.use8BitMime, size: env.size };
  const message = {
    getEnvelope: () => envelope,
    // The queue id stands in for a Message-ID in nodemailer's log lines; the message's own
    // header travels untouched inside the bytes.
    messageId: () => id,
    getHeader: (key: string) => (key.toLowerCase() === 'message-id' ? id : undefined),
    // 32 KB reads, not the default 64 KB: 20 concurrent 20 MB messages peaked at 131-136 MB RSS
    // instead of 137 MB (`npm run bench -- --only 3`), at 76-89 MB/s against 83 (run to run
    // noise). Small messages come from memory and are not read at all.
    createReadStream: () => openMessage(msg, { highWaterMark: 32 * 1024 }),
  };
  return new Promise((resolve, reject) => {
    pool.send({ data: {}, message } as never, (err: Error | null, info?: unknown) => {
      if (err) {
        fixRecipients(err as never);
        reject(err);
        return;
      }
      const i = info as RawSendInfo;
      fixRecipients(i as never);
      resolve(i);
    });
  });
}
