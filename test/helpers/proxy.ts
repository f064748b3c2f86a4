// PROXY protocol v2 headers for tests, built by hand from the spec (haproxy.org
// proxy-protocol.txt, section 2.2) rather than by the library the listener decodes with.

/** A v2 header: PROXY from `src:sport` to the loopback address of its family, or a LOCAL command. */
export function proxyV2(src: string, sport: number, opts: { local?: boolean; tlv?: Buffer } = {}): Buffer {
  const sig = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
  if (opts.local) return Buffer.concat([sig, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  const v6 = src.includes(':');
  const ip = (a: string) => (v6 ? Buffer.from(expand6(a), 'hex') : Buffer.from(a.split('.').map(Number)));
  const addr = Buffer.concat([ip(src), ip(v6 ? '::1' : '127.0.0.1'), Buffer.from([sport >> 8, sport & 255, 0, 25])]);
  const tlv = opts.tlv ?? Buffer.alloc(0);
  const len = addr.length + tlv.length;
  return Buffer.concat([sig, Buffer.from([0x21, v6 ? 0x21 : 0x11, len >> 8, len & 255]), addr, tlv]);
}

function expand6(a: string): string {
  const [head, tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  return [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => g.padStart(4, '0')).join('');
}
