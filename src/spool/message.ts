// Reading a spooled message: exactly its bytes, whatever follows them in the file (a queue
// file keeps its envelope after the message). Every reader goes through these.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import type { MessageSource } from '../types.js';

export function openMessage(msg: MessageSource, opts: { highWaterMark?: number } = {}): Readable {
  if (msg.size <= 0) return Readable.from([]);
  if (msg.bytes) return Readable.from([msg.bytes], { objectMode: false });
  return createReadStream(msg.path, { start: 0, end: msg.size - 1, ...opts });
}

/** The whole message in memory (small messages, tests). */
export async function readMessage(msg: MessageSource): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of openMessage(msg)) parts.push(c as Buffer);
  return Buffer.concat(parts);
}
