// `doctor`'s upstream check: resolve each account's upstream, connect, and verify its TLS the
// way the daemon will (hostname + chain, TLS >= 1.2, caFile as extra anchors), without AUTH:
// a mistyped host (ENOTFOUND) or a blocked port shows here, not as deferred mail later.
// SMTP: greeting, EHLO, STARTTLS on 587 (required), QUIT. API transports: a TLS handshake
// with the apiUrl's host (no request is sent).
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import tls, { rootCertificates } from 'node:tls';
import nodemailer from 'nodemailer';
import type { AccountConfig } from '../config/schema.js';

export interface ProbeResult {
  /** Key path of what was checked (accounts[0].upstream). */
  key: string;
  account: string;
  target: string;
  ok: boolean;
  /** What worked (address, TLS version, time) or what failed, with the fix when there is one. */
  detail: string;
}

const TIMEOUT_MS = 10_000;

function anchors(caFile: string | undefined): string[] | undefined {
  return caFile ? [...rootCertificates, readFileSync(caFile, 'utf8')] : undefined;
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException & { response?: string };
  return [err.code, err.response ?? err.message].filter(Boolean).join(': ');
}

async function resolveHost(host: string): Promise<{ address: string } | { error: string }> {
  try {
    return { address: (await lookup(host)).address };
  } catch (e) {
    return { error: `cannot resolve ${host} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
}

async function probeSmtp(a: AccountConfig): Promise<string> {
  const up = a.upstream;
  const host = up.host!;
  const port = up.port!;
  const implicit = (up.tls ?? (port === 465 ? 'implicit' : 'starttls')) === 'implicit';
  const t0 = Date.now();
  const transport = nodemailer.createTransport({
    host,
    port,
    secure: implicit,
    requireTLS: !implicit,
    connectionTimeout: TIMEOUT_MS,
    greetingTimeout: TIMEOUT_MS,
    socketTimeout: TIMEOUT_MS,
    tls: {
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      servername: host,
      ...(up.caFile ? { ca: anchors(up.caFile) } : {}),
    },
  });
  try {
    await transport.verify();
  } finally {
    transport.close();
  }
  return `${implicit ? 'implicit TLS' : 'STARTTLS'} verified, ${Date.now() - t0} ms`;
}

function probeHttps(apiUrl: string, caFile: string | undefined): Promise<string> {
  const u = new URL(apiUrl);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || 443);
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host,
        port,
        servername: host,
        minVersion: 'TLSv1.2',
        rejectUnauthorized: true,
        ca: anchors(caFile),
        ALPNProtocols: ['http/1.1'],
      },
      () => {
        const version = socket.getProtocol();
        socket.end();
        resolve(`HTTPS ${version ?? 'TLS'} verified, ${Date.now() - t0} ms`);
      },
    );
    socket.setTimeout(TIMEOUT_MS, () =>
      socket.destroy(Object.assign(new Error(`no TLS handshake within ${TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })),
    );
    socket.once('error', reject);
  });
}

async function probeOne(
  key: string,
  a: AccountConfig,
  target: string,
  host: string,
  run: () => Promise<string>,
  fixKey: string,
): Promise<ProbeResult> {
  const r = await resolveHost(host);
  if ('error' in r) return { key, account: a.name, target, ok: false, detail: `${r.error}: check ${fixKey}` };
  try {
    return { key, account: a.name, target, ok: true, detail: `${r.address}, ${await run()}` };
  } catch (e) {
    return { key, account: a.name, target, ok: false, detail: `${r.address}: ${errText(e)}` };
  }
}

/** Every upstream each account uses: SMTP, the Gmail API, or both for transport auto. */
export function probeUpstreams(accounts: AccountConfig[]): Promise<ProbeResult[]> {
  const probes: Promise<ProbeResult>[] = [];
  accounts.forEach((a, i) => {
    const key = `accounts[${i}].upstream`;
    const up = a.upstream;
    if (a.transport !== 'gmail-api')
      probes.push(probeOne(key, a, `${up.host}:${up.port}`, up.host!, () => probeSmtp(a), `${key}.host`));
    if (a.transport === 'gmail-api' || a.transport === 'auto') {
      let host: string;
      try {
        host = new URL(up.apiUrl).hostname.replace(/^\[|\]$/g, '');
      } catch {
        host = up.apiUrl;
      }
      probes.push(
        probeOne(`${key}.apiUrl`, a, up.apiUrl, host, () => probeHttps(up.apiUrl, up.caFile), `${key}.apiUrl`),
      );
    }
  });
  return Promise.all(probes);
}
