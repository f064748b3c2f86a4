// PROXY protocol v2 (the binary header AWS NLB, pfSense and HAProxy's send-proxy-v2 send)
// next to smtp-server's own v1 parser. The header is framed here (16 fixed bytes, then the
// length they announce) and decoded by proxy-protocol-js; anything that does not start
// with the v2 signature goes to smtp-server's v1 handling unchanged, so `proxyFrom`
// (smtp-server's useProxy list) decides for both who may send a header at all.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import pp from 'proxy-protocol-js';
import type { SMTPServer } from 'smtp-server';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const FIXED = 16;

export interface ProxiedPeer {
  /** null for a LOCAL command or an unspecified/unix family: the connection's own address counts. */
  address: string | null;
  port: number | null;
}

/** The client from a complete v2 header (exactly 16 + length bytes); throws on a malformed one. */
export function decodeProxyV2(header: Buffer): ProxiedPeer {
  const p = pp.V2ProxyProtocol.parse(new Uint8Array(header));
  if (p.command !== pp.Command.PROXY) return { address: null, port: null };
  const a = p.proxyAddress;
  if (a instanceof pp.IPv4ProxyAddress) return { address: a.sourceAddress.address.join('.'), port: a.sourcePort };
  if (a instanceof pp.IPv6ProxyAddress) {
    const b = a.sourceAddress.address;
    const groups = [];
    for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
    // Canonical text form (compressed zeros, ::ffff:a.b.c.d for mapped IPv4).
    const address = new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
    return { address, port: a.sourcePort };
  }
  return { address: null, port: null };
}

/** Length of the whole header once its fixed part is in, else null; throws if `buf` cannot be a v2 header. */
function headerLength(buf: Buffer): number | null {
  const n = Math.min(buf.length, SIGNATURE.length);
  if (!buf.subarray(0, n).equals(SIGNATURE.subarray(0, n))) throw new Error('Invalid PROXY v2 signature');
  if (buf.length < FIXED) return null;
  return FIXED + buf.readUInt16BE(14);
}

type SocketOptions = { id: string; remoteAddress?: string; remotePort?: number };

/**
 * Hooks smtp-server's PROXY header handling (SMTPServer._handleProxy, checked at start-up
 * in hooks.ts) so a v2 header is read before smtp-server looks for a v1 line.
 */
export function acceptProxyV2(server: SMTPServer, onHeader?: (peer: ProxiedPeer, socket: net.Socket) => void): void {
  const v1 = server._handleProxy.bind(server);
  server._handleProxy = (socket, callback) => {
    if (!server._expectsProxyHeader(socket)) return v1(socket, callback);
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', onGone);
      socket.removeListener('end', onGone);
      socket.removeListener('close', onGone);
      fn();
    };
    const fail = (err: Error) =>
      finish(() => {
        socket.on('error', () => {});
        socket.destroy();
        callback(err);
      });
    const onGone = () => fail(new Error('Socket closed before the PROXY header was received'));
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        if (buf[0] !== SIGNATURE[0]) {
          // Not v2: give every byte back and let smtp-server read its v1 line.
          const all = buf;
          return finish(() => {
            socket.unshift(all);
            v1(socket, callback);
          });
        }
        let total: number | null;
        try {
          total = headerLength(buf);
        } catch (err) {
          return fail(err as Error);
        }
        if (total === null || buf.length < total) continue;
        let peer: ProxiedPeer;
        try {
          peer = decodeProxyV2(buf.subarray(0, total));
        } catch (err) {
          return fail(new Error(`Invalid PROXY v2 header: ${(err as Error).message}`));
        }
        const rest = buf.subarray(total);
        return finish(() => {
          if (rest.length) socket.unshift(rest);
          onHeader?.(peer, socket);
          const opts: SocketOptions = { id: sessionId() };
          if (peer.address) {
            opts.remoteAddress = peer.address;
            if (peer.port !== null) opts.remotePort = peer.port;
          }
          callback(null, opts);
        });
      }
    };
    socket.on('readable', onReadable);
    socket.on('error', onGone);
    socket.on('end', onGone);
    socket.on('close', onGone);
  };
}

/** The same shape of session id smtp-server gives its connections. */
function sessionId(): string {
  return BigInt('0x' + randomBytes(10).toString('hex'))
    .toString(32)
    .padStart(16, '0');
}
