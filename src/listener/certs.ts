// Certificates for TLS listeners: the configured certFile/keyFile, or a self-signed one
// generated once into stateDir/tls/<listener>.{crt,key} and reused on later starts.
import { readFile, mkdir } from 'node:fs/promises';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { ListenerConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { safeWrite } from '../fs/safeWrite.js';

export interface KeyPair {
  key: string;
  cert: string;
  /** Where it came from, for log lines. */
  certPath: string;
  selfSigned: boolean;
}

export function selfSignedPaths(stateDir: string, listener: string): { cert: string; key: string } {
  const dir = join(stateDir, 'tls');
  return { cert: join(dir, `${listener}.crt`), key: join(dir, `${listener}.key`) };
}

/** Throws with a readable message when the pair is unusable (wrong key, not PEM, expired). */
function validate(pair: { key: string; cert: string }, what: string): X509Certificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pair.cert);
    createSecureContext({ key: pair.key, cert: pair.cert });
    if (!x509.checkPrivateKey(createPrivateKey(pair.key))) throw new Error('key does not match certificate');
  } catch (e) {
    throw new Error(`${what}: unusable certificate/key: ${(e as Error).message}`);
  }
  return x509;
}

type SelfsignedModule = typeof import('selfsigned');

/**
 * selfsigned is CommonJS: imported from the sources or dist/ its exports are named, but in the
 * standalone bundle (.deb, image) esbuild's chunk has the module as its default export only.
 */
function selfsignedGenerate(mod: SelfsignedModule | { default: SelfsignedModule }): SelfsignedModule['generate'] {
  const generate =
    'generate' in mod && typeof mod.generate === 'function'
      ? mod.generate
      : (mod as { default?: SelfsignedModule }).default?.generate;
  if (typeof generate !== 'function') throw new Error('the selfsigned module has no generate() (a packaging defect)');
  return generate;
}

async function generateSelfSigned(l: ListenerConfig): Promise<{ key: string; cert: string }> {
  const cn = hostname() || 'localhost';
  const altNames: Array<{ type: 2; value: string } | { type: 7; ip: string }> = [
    { type: 2, value: cn },
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
    { type: 7, ip: '::1' },
  ];
  if (isIP(l.host) && l.host !== '0.0.0.0' && l.host !== '::' && l.host !== '127.0.0.1')
    altNames.push({ type: 7, ip: l.host });
  const now = Date.now();
  // RSA rather than EC: old printers that need TLSv1 rarely speak ECDSA.
  // Loaded only when a certificate is generated: it is the heaviest dependency at start.
  const generate = selfsignedGenerate(await import('selfsigned'));
  const pems = await generate([{ name: 'commonName', value: cn }], {
    keyType: 'rsa',
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 3600e3),
    notAfterDate: new Date(now + 5 * 365 * 86400e3),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

export async function loadKeyPair(l: ListenerConfig, stateDir: string, log: Logger): Promise<KeyPair> {
  if (l.certFile && l.keyFile) {
    const [cert, key] = await Promise.all([readFile(l.certFile, 'utf8'), readFile(l.keyFile, 'utf8')]).catch(
      (e: Error) => {
        throw new Error(`listener "${l.name}": cannot read its certFile/keyFile: ${e.message}`);
      },
    );
    const x509 = validate({ key, cert }, `listener "${l.name}" (${l.certFile})`);
    if (new Date(x509.validTo).getTime() < Date.now())
      log.warn('listener certificate has expired', { listener: l.name, certFile: l.certFile, validTo: x509.validTo });
    return { key, cert, certPath: l.certFile, selfSigned: false };
  }
  const paths = selfSignedPaths(stateDir, l.name);
  let pair: { key: string; cert: string } | null = null;
  try {
    const [cert, key] = await Promise.all([readFile(paths.cert, 'utf8'), readFile(paths.key, 'utf8')]);
    const x509 = validate({ key, cert }, paths.cert);
    // Renew a month ahead so a long-running daemon never serves an expired one after a reload.
    if (new Date(x509.validTo).getTime() > Date.now() + 30 * 86400e3) pair = { key, cert };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      log.warn('regenerating the self-signed certificate', { listener: l.name, reason: (e as Error).message });
  }
  if (!pair) {
    try {
      pair = await generateSelfSigned(l);
      await mkdir(join(stateDir, 'tls'), { recursive: true, mode: 0o700 });
      await safeWrite(paths.key, pair.key, { mode: 0o600 });
      await safeWrite(paths.cert, pair.cert, { mode: 0o644 });
    } catch (e) {
      // The start failure must say which listener and what to do, not only the library's words.
      throw new Error(
        `listener "${l.name}": cannot create its self-signed certificate in ${join(stateDir, 'tls')}: ${(e as Error).message}; ` +
          `set certFile/keyFile on this listener, or make stateDir writable by the daemon's user`,
      );
    }
  }
  const fingerprint = new X509Certificate(pair.cert).fingerprint256;
  log.warn('TLS listener uses a self-signed certificate; set certFile/keyFile for clients that verify certificates', {
    listener: l.name,
    cert: paths.cert,
    sha256: fingerprint,
  });
  return { ...pair, certPath: paths.cert, selfSigned: true };
}
