// Throwaway PKI for tests and the `demo` command: a CA plus a localhost server certificate
// signed by it, so clients can verify TLS for real (with `ca`) instead of disabling checks.
import { mkdir, writeFile, chmod } from 'node:fs/promises';
import https from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { generate } from 'selfsigned';

export interface TestPki {
  caCert: string;
  caKey: string;
  cert: string;
  key: string;
}

export async function createTestPki(): Promise<TestPki> {
  const now = new Date();
  // Backdate a little so clock skew between processes never makes the cert "not yet valid".
  const notBeforeDate = new Date(now.getTime() - 60 * 60 * 1000);
  const notAfterDate = new Date(now.getTime() + 365 * 24 * 60 * 60 * 1000);
  const ca = await generate([{ name: 'commonName', value: 'xoauth2-bridge test CA' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  const leaf = await generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  return { caCert: ca.cert, caKey: ca.private, cert: leaf.cert, key: leaf.private };
}

/** Writes ca.pem, cert.pem and key.pem (key mode 0600) into dir, creating it if needed. */
export async function writePki(
  pki: TestPki,
  dir: string,
): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  await mkdir(dir, { recursive: true });
  const caFile = join(dir, 'ca.pem');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await writeFile(caFile, pki.caCert);
  await writeFile(certFile, pki.cert);
  await writeFile(keyFile, pki.key, { mode: 0o600 });
  // writeFile's mode only applies on creation; enforce it when overwriting too.
  await chmod(keyFile, 0o600);
  return { caFile, certFile, keyFile };
}

/** A self-signed RSA certificate and its key, as an admin makes one for an app registration's certificate credential. */
export async function createAppCertificate(commonName = 'xoauth2-bridge app'): Promise<{ cert: string; key: string }> {
  const now = Date.now();
  const c = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'rsa',
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 3600e3),
    notAfterDate: new Date(now + 365 * 24 * 3600e3),
  });
  return { cert: c.cert, key: c.private };
}

/** An HTTPS fake's server, listening; the fake adds its own 'request' handler. */
export interface HttpsListener {
  server: https.Server;
  port: number;
  /** Stops listening and drops every connection, a stalled upload's included. */
  close(): Promise<void>;
}

/** An HTTPS server on 127.0.0.1:<random port> with the PKI's localhost certificate (TLS >= 1.2). */
export async function listenHttps(pki: TestPki): Promise<HttpsListener> {
  const server = https.createServer({ cert: pki.cert, key: pki.key, minVersion: 'TLSv1.2' });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A client that gives up on the handshake (a test verifying the CA) is not the fake's error.
  server.on('tlsClientError', () => {});
  return {
    server,
    port: (server.address() as { port: number }).port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await closed;
    },
  };
}
