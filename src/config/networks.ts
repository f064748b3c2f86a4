// Client addresses and trusted networks, in ONE implementation used by the listener (is
// this client trusted?) and by the config's open-relay guard (does this list cover every
// address?). ipaddr.js parses every spelling (::ffff:0:0, ::ffff:0.0.0.0,
// 0:0:0:0:0:ffff:0:0, ...); everything after parsing is interval arithmetic on BigInts.
//
// IPv4-mapped IPv6 (::ffff:a.b.c.d, what a dual-stack socket reports for an IPv4 peer) is
// IPv4: a mapped client is judged as its IPv4 address, and the part of a configured IPv6
// range that lies inside ::ffff:0:0/96 is judged as the IPv4 range it covers. So a list
// either trusts an IPv4 client or not, whichever way either side is spelled.
import ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';

type Family = 4 | 6;
const WIDTH: Record<Family, bigint> = { 4: 32n, 6: 128n };
const MAPPED_START = 0xffffn << 32n; // ::ffff:0.0.0.0
const MAPPED_END = MAPPED_START + 0xffffffffn;

interface Interval {
  start: bigint;
  end: bigint;
}

function toBigInt(bytes: number[]): bigint {
  return bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
}

/** A client address as (family, number), mapped IPv6 folded to IPv4; null when not an IP. */
function parseAddress(ip: string): { family: Family; n: bigint } | null {
  const s = ip.trim();
  if (!isIP(s)) return null; // node's strict check: no "127.1" or hex IPv4 shorthands
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.process(s); // process() turns ::ffff:a.b.c.d into a.b.c.d
  } catch {
    return null;
  }
  return { family: a.kind() === 'ipv4' ? 4 : 6, n: toBigInt(a.toByteArray()) };
}

/** Parsed networks of one entry: an IPv6 range overlapping the mapped block yields an IPv4 part too. */
function parseNetwork(entry: string): Array<{ family: Family; range: Interval }> | null {
  const s = entry.trim();
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const fam = isIP(addr);
  if (!fam) return null;
  let bits: number;
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    if (slash < 0) {
      parsed = ipaddr.parse(addr);
      bits = fam === 4 ? 32 : 128;
    } else {
      if (!/^\d{1,3}$/.test(s.slice(slash + 1))) return null;
      [parsed, bits] = ipaddr.parseCIDR(s);
    }
  } catch {
    return null;
  }
  const family: Family = parsed.kind() === 'ipv4' ? 4 : 6;
  const host = WIDTH[family] - BigInt(bits);
  const start = (toBigInt(parsed.toByteArray()) >> host) << host;
  const range = { start, end: start + (1n << host) - 1n };
  const out = [{ family, range }];
  if (family === 6 && range.start <= MAPPED_END && range.end >= MAPPED_START) {
    const lo = range.start > MAPPED_START ? range.start : MAPPED_START;
    const hi = range.end < MAPPED_END ? range.end : MAPPED_END;
    out.push({ family: 4, range: { start: lo - MAPPED_START, end: hi - MAPPED_START } });
  }
  return out;
}

/** True when `entry` is an address or CIDR (192.168.1.0/24, fd00::/8, ::ffff:10.0.0.0/104). */
export function isNetwork(entry: string): boolean {
  return parseNetwork(entry) !== null;
}

/** Sorted, non-overlapping, non-adjacent intervals. */
function merge(ranges: Interval[]): Interval[] {
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Interval[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r.start <= last.end + 1n) {
      if (r.end > last.end) last.end = r.end;
    } else out.push({ ...r });
  }
  return out;
}

/** Drops the IPv4-mapped prefix a dual-stack socket reports for IPv4 peers (for logs and keys). */
export function normalizeIp(ip: string): string {
  const a = parseAddress(ip);
  if (!a) return ip.trim().toLowerCase();
  const s = ip.trim();
  return a.family === 4 && isIP(s) === 6 ? ipaddr.process(s).toString() : s.toLowerCase();
}

export class NetworkList {
  private readonly byFamily: Record<Family, Interval[]>;
  readonly size: number;

  /** `cidrs`: addresses or CIDRs (validated by the config schema; a bad entry throws). */
  constructor(cidrs: readonly string[]) {
    const ranges: Record<Family, Interval[]> = { 4: [], 6: [] };
    for (const c of cidrs) {
      const parts = parseNetwork(c);
      if (!parts) throw new Error(`not an IP network: ${c}`);
      for (const p of parts) ranges[p.family].push(p.range);
    }
    this.byFamily = { 4: merge(ranges[4]), 6: merge(ranges[6]) };
    this.size = cidrs.length;
  }

  has(ip: string): boolean {
    const a = parseAddress(ip);
    if (!a) return false;
    const list = this.byFamily[a.family];
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (a.n < list[mid].start) hi = mid - 1;
      else if (a.n > list[mid].end) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** The families ("IPv4", "IPv6") whose every address the list trusts. */
  coveredFamilies(): string[] {
    return ([4, 6] as const)
      .filter((f) => {
        const l = this.byFamily[f];
        return l.length === 1 && l[0].start === 0n && l[0].end === (1n << WIDTH[f]) - 1n;
      })
      .map((f) => `IPv${f}`);
  }
}

const LOOPBACK = new NetworkList(['127.0.0.0/8', '::1/128']);

export function isLoopback(ip: string): boolean {
  return LOOPBACK.has(ip);
}

/** A listener bound to a loopback address (only local processes can connect). */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || isLoopback(host);
}

/**
 * Why a listener would relay unauthenticated mail from anywhere, or null. Only a listener
 * that local processes alone can reach, with no PROXY headers, may trust every address:
 * behind PROXY the client addresses are whatever the proxy forwards from the network.
 */
export function openRelayReason(l: {
  name: string;
  host: string;
  proxyProtocol?: boolean;
  trustedNetworks: readonly string[];
}): string | null {
  if (isLoopbackHost(l.host) && !l.proxyProtocol) return null;
  const covered = new NetworkList(l.trustedNetworks.filter(isNetwork)).coveredFamilies();
  if (!covered.length) return null;
  const where = l.proxyProtocol ? `${l.host} with proxyProtocol (client addresses come from PROXY headers)` : l.host;
  return `listener "${l.name}" on ${where} would relay unauthenticated mail from any ${covered.join(' and ')} address (open relay); narrow trustedNetworks to your LAN, e.g. [192.168.1.0/24]`;
}

/** The listener's trusted networks; refuses an open relay even if a config skipped the schema. */
export function trustedNetworksOf(l: Parameters<typeof openRelayReason>[0]): NetworkList {
  const relay = openRelayReason(l);
  if (relay) throw new Error(`refusing to start: ${relay}`);
  return new NetworkList(l.trustedNetworks);
}

/**
 * The unit a client is judged in for failed logins: its IPv4 address (IPv4-mapped folded),
 * or its IPv6 /64 (one site's subnet: a host there picks any of 2^64 addresses at will).
 */
export function clientKey(ip: string): string {
  const a = parseAddress(ip);
  if (!a) return ip.trim().toLowerCase();
  if (a.family === 4) return ipaddr.fromByteArray(toBytes(a.n, 4)).toString();
  const prefix = (a.n >> 64n) << 64n;
  return `${ipaddr.fromByteArray(toBytes(prefix, 16)).toString()}/64`;
}

function toBytes(n: bigint, len: number): number[] {
  const out: number[] = [];
  for (let i = len - 1; i >= 0; i--) out.push(Number((n >> BigInt(8 * i)) & 0xffn));
  return out;
}
