// The queue file format on disk: ID.msg = the client's bytes, the envelope as JSON, and a
// footer naming the envelope's length (written last: no footer, no 250). Older spools keep
// ID.eml + ID.json, read as they are; version-1 envelopes are migrated on read.
import { type FileHandle, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Recipient, SpooledEnvelope } from '../types.js';
import { isQueueId } from './ids.js';
import { matchesChecksum } from './checksum.js';
import { openMessage } from './message.js';

/** The footer that ends every queue file: "\nXB3 <length of the envelope JSON before it>\n". */
export const FOOTER_RE = /\nXB3 (\d{1,10})\n$/;
const FOOTER_MAX = 16;

/** What a queue file's tail says (see readQueueFile). */
export type QueueFileRead =
  | { kind: 'ok'; env: SpooledEnvelope }
  | { kind: 'incomplete' }
  | { kind: 'corrupt'; error: string };

/** The footer for an envelope of `jsonLength` bytes. */
export function footer(jsonLength: number): Buffer {
  return Buffer.from(`\nXB3 ${jsonLength}\n`, 'latin1');
}

/** Message files of both spool formats: the queue file (version 3) and an older spool's ID.eml. */
export const MESSAGE_EXTS = ['msg', 'eml'];

export function messageFileName(env: SpooledEnvelope): string {
  return `${env.id}.${env.version === 3 ? 'msg' : 'eml'}`;
}

/** Queue ids named by the envelope or queue files in a folder listing, oldest first. */
export function idsIn(names: string[]): string[] {
  const ids = new Set<string>();
  for (const n of names) {
    const m = /^(.+)\.(json|msg)$/.exec(n);
    if (m && isQueueId(m[1])) ids.add(m[1]);
  }
  return [...ids].sort();
}

export async function renameAll(id: string, from: string, to: string): Promise<void> {
  for (const ext of [...MESSAGE_EXTS, 'json']) {
    try {
      await rename(join(from, `${id}.${ext}`), join(to, `${id}.${ext}`));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}

/**
 * Reads a queue file's envelope from its tail. 'incomplete' = no footer (a receive that never
 * reached its fsync); 'corrupt' = a footer but an envelope that does not parse or does not
 * match the bytes before it (with `verify`, their SHA-256 is checked too).
 */
export async function readQueueFileAt(
  path: string,
  opts: { verify: boolean },
): Promise<QueueFileRead | { kind: 'missing' }> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    throw e;
  }
  try {
    const { size: len } = await fh.stat();
    const tailLen = Math.min(len, FOOTER_MAX);
    const tail = Buffer.alloc(tailLen);
    await fh.read(tail, 0, tailLen, len - tailLen);
    const m = FOOTER_RE.exec(tail.toString('latin1'));
    if (!m) return { kind: 'incomplete' };
    const footerLen = m[0].length;
    const jsonLen = Number(m[1]);
    const start = len - footerLen - jsonLen;
    if (start < 0) return { kind: 'corrupt', error: 'queue file footer names more bytes than the file has' };
    const json = Buffer.alloc(jsonLen);
    await fh.read(json, 0, jsonLen, start);
    let env: SpooledEnvelope;
    try {
      env = migrateEnvelope(JSON.parse(json.toString('utf8')), false);
    } catch (e) {
      return { kind: 'corrupt', error: `queue file envelope: ${(e as Error).message}` };
    }
    if (env.version !== 3 || env.size !== start || !path.endsWith(`${env.id}.msg`))
      return { kind: 'corrupt', error: 'queue file envelope does not match the file' };
    if (opts.verify && !(await matchesChecksum(env, openMessage({ path, size: start }))))
      return {
        kind: 'corrupt',
        error: `message bytes do not match the ${env.crc32 !== undefined ? 'CRC-32' : 'SHA-256'} in the queue file`,
      };
    return { kind: 'ok', env };
  } finally {
    await fh.close();
  }
}

/** The first envelope format: `rcptTo` = recipients still to deliver, `delivered` = accepted ones. */
interface EnvelopeV1 {
  id: string;
  rcptTo: string[];
  delivered?: string[];
  attempts?: number;
  lastError?: string;
  failReason?: string;
}

/** Accepts a version-2 or -3 envelope as is and turns a version-1 one into version 2; throws on anything else. */
export function migrateEnvelope(raw: unknown, inFailed: boolean): SpooledEnvelope {
  const o = raw as Partial<SpooledEnvelope> & Partial<EnvelopeV1>;
  if (!o || typeof o !== 'object' || typeof o.id !== 'string' || !isQueueId(o.id) || !Array.isArray(o.rcptTo))
    throw new Error('not an envelope');
  if (o.version === 2 || o.version === 3) {
    if (!Array.isArray(o.rcpts) || typeof o.state !== 'string') throw new Error('envelope without rcpts/state');
    return o as SpooledEnvelope;
  }
  const v1 = o as EnvelopeV1 & Omit<SpooledEnvelope, 'rcptTo' | 'rcpts' | 'state' | 'reason' | 'version'>;
  const tried = (v1.attempts ?? 0) > 0;
  const left: Recipient['status'] = inFailed ? 'rejected' : tried ? 'deferred' : 'pending';
  const reply = v1.failReason ?? v1.lastError;
  const { delivered = [], lastError, ...rest } = v1;
  return {
    ...rest,
    version: 2,
    rcptTo: [...delivered, ...v1.rcptTo],
    rcpts: [
      ...delivered.map((address): Recipient => ({ address, status: 'accepted' })),
      ...v1.rcptTo.map(
        (address): Recipient => ({ address, status: left, ...(reply && left !== 'pending' ? { reply } : {}) }),
      ),
    ],
    state: inFailed ? 'failed' : tried ? 'deferred' : 'queued',
    reason: null,
    attempts: v1.attempts ?? 0,
    ...(lastError ? { lastReply: lastError } : {}),
  };
}
