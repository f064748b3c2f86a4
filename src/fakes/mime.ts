// What the fake mail APIs (Gmail API, Graph) read from a submitted MIME message, as the real
// services do: the recipients named in its header, and what a recipient sees (no Bcc).
import addressparser from 'nodemailer/lib/addressparser';
import { headerValues } from '../listener/filter.js';

export interface SubmittedMime {
  /** Offset of the blank line ending the header (-1: no body). */
  end: number;
  /** The addresses in every `field` header of the message. */
  addresses(field: string): string[];
}

export function readSubmitted(raw: Buffer): SubmittedMime {
  const end = raw.indexOf('\r\n\r\n');
  const header = raw.subarray(0, end < 0 ? raw.length : end + 2).toString('utf8');
  return {
    end,
    addresses: (field) =>
      headerValues(header, field).flatMap((v) =>
        addressparser(v, { flatten: true })
          .map((a) => a.address)
          .filter((a): a is string => !!a),
      ),
  };
}

/** The message as delivered: every Bcc field (with its continuation lines) removed from the header. */
export function withoutBcc(raw: Buffer, headerEnd: number): Buffer {
  const end = headerEnd < 0 ? raw.length : headerEnd + 2;
  const lines = raw
    .subarray(0, end)
    .toString('latin1')
    .split(/(?<=\r\n)/);
  const kept: string[] = [];
  let skipping = false;
  for (const line of lines) {
    if (skipping && /^[ \t]/.test(line)) continue;
    skipping = /^bcc\s*:/i.test(line);
    if (!skipping) kept.push(line);
  }
  return Buffer.concat([Buffer.from(kept.join(''), 'latin1'), raw.subarray(end)]);
}
