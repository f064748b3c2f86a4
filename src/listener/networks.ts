// Client address helpers: trusted-network CIDR matching (IPv4 and IPv6) and loopback
// detection. Built on node's net.BlockList, which does the prefix arithmetic.
import { BlockList, isIP } from 'node:net';

/** Drops the IPv4-mapped prefix a dual-stack socket reports for IPv4 peers. */
export function normalizeIp(ip: string): string {
  const s = ip.trim().toLowerCase();
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  return m ? m[1] : s;
}

export class NetworkList {
  private readonly list = new BlockList();
  readonly size: number;

  /** `cidrs`: addresses or CIDRs like 192.168.1.0/24, fd00::/8 (validated by the config schema). */
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const [addr, bitsText] = c.split('/');
      const ip = normalizeIp(addr);
      const fam = isIP(ip);
      if (!fam) throw new Error(`not an IP network: ${c}`);
      const type = fam === 4 ? 'ipv4' : 'ipv6';
      // ::ffff:a.b.c.d/120 is the IPv4 network a.b.c.d/24.
      const bits = bitsText === undefined ? undefined : Math.max(0, Number(bitsText) - (isIP(addr) === 6 && fam === 4 ? 96 : 0));
      if (bits === undefined) this.list.addAddress(ip, type);
      else this.list.addSubnet(ip, bits, type);
    }
    this.size = cidrs.length;
  }

  has(ip: string): boolean {
    if (!this.size) return false;
    const a = normalizeIp(ip);
    const fam = isIP(a);
    if (!fam) return false;
    return this.list.check(a, fam === 4 ? 'ipv4' : 'ipv6');
  }
}

const LOOPBACK = new NetworkList(['127.0.0.0/8', '::1/128']);

export function isLoopback(ip: string): boolean {
  return LOOPBACK.has(ip);
}

function ipToBigInt(ip: string): bigint | null {
  const fam = isIP(ip);
  if (fam === 4) return ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  if (fam !== 6) return null;
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipToBigInt(v4[1])!;
    s = s.slice(0, -v4[1].length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/**
 * True when the networks together cover every IPv4 or every IPv6 address (0.0.0.0/0, but
 * also 0.0.0.0/1 + 128.0.0.0/1 and the like): trusting them makes an open relay.
 */
export function coversAllAddresses(cidrs: readonly string[]): boolean {
  for (const [fam, width] of [[4, 32n], [6, 128n]] as const) {
    const ranges: Array<[bigint, bigint]> = [];
    for (const c of cidrs) {
      const [addr, bitsText] = c.split('/');
      const ip = normalizeIp(addr);
      if (isIP(ip) !== fam) continue;
      const n = ipToBigInt(ip);
      if (n === null) continue;
      const mapped = isIP(addr) === 6 && fam === 4 ? 96 : 0;
      const bits = bitsText === undefined ? width : BigInt(Math.max(0, Number(bitsText) - mapped));
      const hostBits = width - bits;
      const start = (n >> hostBits) << hostBits;
      ranges.push([start, start + (1n << hostBits) - 1n]);
    }
    ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    let next = 0n; // first address not yet covered
    for (const [start, end] of ranges) {
      if (start > next) break;
      if (end + 1n > next) next = end + 1n;
    }
    if (next === 1n << width) return true;
  }
  return false;
}
