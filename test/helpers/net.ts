// A TCP port on 127.0.0.1 that was free a moment ago, for peers that must be configured with
// a port before they start (HAProxy, Postfix, a daemon restarted on the same port).
import net from 'node:net';
import { once } from 'node:events';

export async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
