// The checksum a queue file keeps of its message bytes, checked when a spool is opened after a
// stop or crash (a torn or damaged file goes to corrupt/ instead of being sent).
//
// CRC-32 since wave 3: it is there to catch damage, not forgery (whoever can write the spool can
// rewrite the envelope too), and zlib's runs at about 2.3x the speed of SHA-256 here. SHA-256
// was 11% of the daemon's main thread in the 20 x 20 MB bench. Files written before keep their
// SHA-256 and are still checked with it. zlib.crc32 came in Node 22.2: on 22.0/22.1 new files
// keep SHA-256.
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import type { SpooledEnvelope } from '../types.js';

type Sums = Pick<SpooledEnvelope, 'crc32' | 'sha256'>;

const crc32 = (zlib as { crc32?: (data: Buffer, value?: number) => number }).crc32;

const hex8 = (n: number) => n.toString(16).padStart(8, '0');

/** A running checksum of a message as it is received; `fields()` is what its envelope keeps. */
export function newChecksum(): { update(b: Buffer): void; fields(): Sums } {
  if (!crc32) {
    const h = createHash('sha256');
    return { update: (b) => void h.update(b), fields: () => ({ sha256: h.digest('hex') }) };
  }
  let value = 0;
  return { update: (b) => void (value = crc32(b, value)), fields: () => ({ crc32: hex8(value) }) };
}

/**
 * Whether `chunks` are the bytes the envelope's checksum was taken of. True when there is none
 * to check: version-2 files, and a CRC-32 on a Node without zlib.crc32 (a downgrade).
 */
export async function matchesChecksum(env: Sums, chunks: AsyncIterable<Buffer>): Promise<boolean> {
  if (env.crc32 !== undefined && crc32) {
    let value = 0;
    for await (const c of chunks) value = crc32(c, value);
    return hex8(value) === env.crc32;
  }
  if (env.sha256 !== undefined) {
    const h = createHash('sha256');
    for await (const c of chunks) h.update(c);
    return h.digest('hex') === env.sha256;
  }
  return true;
}
