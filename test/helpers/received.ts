// The bridge prepends one Received: trace header to every message it accepts; tests that
// compare bytes check that header and then compare everything after it byte for byte.
import assert from 'node:assert/strict';

const RECEIVED =
  /^Received: from (\S+) \((\[[^\]\r\n]+\])\)\r\n\tby \S+ \(xoauth2-bridge, listener ([^)\r\n]+)\) with (SMTP|ESMTPS?A?) id ([A-Za-z0-9_-]+);\r\n\t[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n/;

export interface ReceivedFields {
  helo: string;
  client: string;
  listener: string;
  protocol: string;
  id: string;
}

/** Asserts `raw` starts with exactly one bridge Received: header and returns its fields and the rest of the bytes. */
export function splitReceived<T extends string | Buffer>(
  raw: T,
  expect: Partial<ReceivedFields> = {},
): { fields: ReceivedFields; rest: T } {
  const text: string = Buffer.isBuffer(raw) ? raw.toString('latin1') : (raw as string);
  const m = RECEIVED.exec(text);
  assert.ok(m, `message does not start with the bridge's Received: header:\n${text.slice(0, 300)}`);
  const fields: ReceivedFields = { helo: m[1], client: m[2], listener: m[3], protocol: m[4], id: m[5] };
  for (const [k, v] of Object.entries(expect)) assert.equal(fields[k as keyof ReceivedFields], v, `Received: ${k}`);
  const rest = (Buffer.isBuffer(raw) ? raw.subarray(Buffer.byteLength(m[0], 'latin1')) : text.slice(m[0].length)) as T;
  assert.ok(
    !/^Received: [^\r\n]*\r\n\tby \S+ \(xoauth2-bridge/.test(
      Buffer.isBuffer(rest) ? rest.toString('latin1') : (rest as string),
    ),
    'only one bridge Received: header',
  );
  return { fields, rest };
}
