// The one answer to "is this client on this host?" (loopback privileges: cleartext AUTH,
// the reserved share of maxClients). It judges the socket's real peer, never an address
// claimed in a PROXY header: a connection from which a header is expected (proxyProtocol,
// limited to proxyFrom when set) is a proxied one, whatever address the header names, and
// a proxy's own LOCAL connections are proxied ones too.
import type { SMTPServerSession } from 'smtp-server';
import type { Conn } from './hooks.js';
import { isLoopback } from './networks.js';

const local = new WeakMap<SMTPServerSession, boolean>();

/** Records who is really connected; call once per connection, before its session starts (hookServer). */
export function notePeer(conn: Conn): void {
  const socket = conn._socket;
  local.set(conn.session, !conn._server._expectsProxyHeader(socket) && isLoopback(socket.remoteAddress ?? ''));
}

/** True only for a client that connected from this host without a PROXY header. */
export function isLocalPeer(session: SMTPServerSession): boolean {
  return local.get(session) === true;
}
