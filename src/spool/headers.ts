// Reads only the header block of a spooled message (up to the first empty line), streaming,
// so bounces and `queue show` never load a 25 MB body.
import type { MessageSource } from '../types.js';
import { openMessage } from './message.js';

/** The header block without the separating empty line; at most `maxBytes` (a cut header block ends at the last full line). */
export async function readHeaderBlock(msg: MessageSource, maxBytes = 256 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  const stream = openMessage(msg, { highWaterMark: 16 * 1024 });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      parts.push(chunk);
      total += chunk.length;
      const buf = Buffer.concat(parts);
      const end = headerEnd(buf);
      if (end >= 0) return buf.subarray(0, end);
      if (total >= maxBytes) {
        const cut = buf.subarray(0, maxBytes);
        const lastNl = cut.lastIndexOf(0x0a);
        return lastNl >= 0 ? cut.subarray(0, lastNl + 1) : cut;
      }
      parts.length = 0;
      parts.push(buf);
    }
    return Buffer.concat(parts); // a message with no body
  } finally {
    stream.destroy();
  }
}

/** Index just after the last header line (CRLF or LF endings), or -1. */
function headerEnd(buf: Buffer): number {
  if (buf.length && (buf[0] === 0x0a || (buf[0] === 0x0d && buf[1] === 0x0a))) return 0;
  for (let i = buf.indexOf(0x0a); i >= 0 && i < buf.length - 1; i = buf.indexOf(0x0a, i + 1)) {
    if (buf[i + 1] === 0x0a) return i + 1;
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i + 1;
  }
  return -1;
}
