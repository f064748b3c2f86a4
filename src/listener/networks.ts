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
      const [addr, bits] = c.split('/');
      const ip = normalizeIp(addr);
      const fam = isIP(ip);
      if (!fam) throw new Error(`not an IP network: ${c}`);
      const type = fam === 4 ? 'ipv4' : 'ipv6';
      if (bits === undefined) this.list.addAddress(ip, type);
      else this.list.addSubnet(ip, Number(bits), type);
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
