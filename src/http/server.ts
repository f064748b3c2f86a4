// Operator HTTP endpoint: /healthz (process up), /readyz (able to take and relay mail),
// /metrics (Prometheus): read-only, GET/HEAD only, plain-text answers. Every other path
// goes to the web console when it is on (src/http/console). HTTPS with http.certFile/keyFile.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { open, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Metrics } from '../metrics/metrics.js';
import type { Logger } from '../log/logger.js';
import type { HealthState } from '../types.js';
import { redactString } from '../log/redact.js';
import { send } from './respond.js';

export interface Readiness {
  ok: boolean;
  /** Why the bridge is not ready, one operator-readable sentence each (shown one per line). */
  reasons: string[];
}

export interface HttpEndpointOptions {
  host: string;
  /** From `http.port`: 0 means the endpoint is off (start() resolves null). */
  port: number;
  metrics: Metrics;
  ready: () => Promise<Readiness>;
  log: Logger;
  /**
   * Bind an OS-chosen free port instead of `port` (tests, demo). Kept separate from
   * `port` because in the config 0 already means "off", not "any port".
   */
  ephemeral?: boolean;
  /** A readiness check slower than this (e.g. a hung disk) answers 503. Default 5 s. */
  readyTimeoutMs?: number;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  /** The web console, for every path the endpoint does not serve itself. */
  console?: { handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void>; close(): void };
}

const OWN_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

export class HttpEndpoint {
  private server: http.Server | null = null;

  constructor(private readonly opts: HttpEndpointOptions) {}

  /** Starts listening; resolves the bound address, or null when the endpoint is disabled. */
  async start(): Promise<{ host: string; port: number } | null> {
    const { host, ephemeral, log } = this.opts;
    if (this.server) throw new Error('http endpoint already started');
    if (this.opts.port === 0 && !ephemeral) {
      if (this.opts.console)
        log.warn(
          'http.console is true but http.port is 0, which turns the HTTP endpoint and so the console off; set http.port (e.g. 9465)',
        );
      else log.info('http endpoint disabled (http.port is 0)');
      return null;
    }
    const port = ephemeral ? 0 : this.opts.port;
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handle(req, res).catch((err) => {
        log.error('http: request failed', { err, path: safePath(req.url) });
        if (!res.headersSent) send(res, req, 500, 'internal error\n');
        else res.destroy();
      });
    };
    const tls = this.opts.tls;
    const server: http.Server = tls
      ? https.createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, onRequest)
      : http.createServer(onRequest);
    // Scrapers and probes send tiny requests; don't let a slow client hold a socket.
    server.headersTimeout = 10_000;
    server.requestTimeout = 15_000;
    server.keepAliveTimeout = 5_000;
    server.maxHeadersCount = 50;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening);
        reject(new Error(`http endpoint: cannot listen on ${host}:${port}: ${err.code ?? err.message}`));
      };
      const onListening = () => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(port, host);
    });
    server.on('error', (err) => log.error('http endpoint error', { err }));
    this.server = server;
    const addr = server.address() as AddressInfo;
    log.info('http endpoint listening', {
      host: addr.address,
      port: addr.port,
      tls: Boolean(tls),
      console: Boolean(this.opts.console),
    });
    return { host: addr.address, port: addr.port };
  }

  /** Stops listening and drops open (keep-alive) connections. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    this.opts.console?.close();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const p = safePath(req.url);
    if (this.opts.console && !OWN_PATHS.has(p)) return this.opts.console.handle(req, res, p);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send(res, req, 405, 'method not allowed\n');
    }
    switch (p) {
      case '/healthz':
        return send(res, req, 200, 'ok\n');
      case '/readyz': {
        const r = await this.readiness();
        if (r.ok) return send(res, req, 200, 'ready\n');
        // One reason per line; newlines inside a reason would break that, and reasons
        // may quote upstream/token-endpoint text, so scrub secrets once more here.
        const lines = (r.reasons.length ? r.reasons : ['not ready']).map((s) =>
          redactString(s.replace(/[\r\n]+/g, ' ')),
        );
        return send(res, req, 503, lines.join('\n') + '\n');
      }
      case '/metrics': {
        const reg = this.opts.metrics.registry;
        const body = await reg.metrics();
        return send(res, req, 200, body, reg.contentType);
      }
      default:
        return send(res, req, 404, 'not found\n');
    }
  }

  private async readiness(): Promise<Readiness> {
    const ms = this.opts.readyTimeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Readiness>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, reasons: [`readiness check did not finish within ${ms} ms`] }), ms);
    });
    try {
      return await Promise.race([this.opts.ready(), timeout]);
    } catch (err) {
      // The error text is logged (redacted), not returned: it may carry internals.
      this.opts.log.error('http: readiness check failed', { err });
      return { ok: false, reasons: ['readiness check failed (see log)'] };
    } finally {
      clearTimeout(timer);
    }
  }
}

function safePath(url: string | undefined): string {
  // Only the path matters (ignore ?query); never echo the raw URL back.
  const p = (url ?? '/').split('?')[0];
  return p.length > 200 ? p.slice(0, 200) : p;
}

/**
 * Readiness probe for the spool: create, write, fsync and remove a file in `dir`.
 * Returns null when that works, otherwise a one-line reason (e.g. disk full, read-only).
 */
export async function spoolWritable(dir: string): Promise<string | null> {
  const file = path.join(dir, `.ready-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  let created = false;
  try {
    const fh = await open(file, 'wx', 0o600);
    created = true;
    try {
      await fh.writeFile('probe\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await unlink(file);
    created = false;
    return null;
  } catch (err) {
    if (created) await unlink(file).catch(() => {});
    const e = err as NodeJS.ErrnoException;
    return `spool ${dir} is not writable: ${e.code ?? e.message}${e.code && ERRNO_HINT[e.code] ? ` (${ERRNO_HINT[e.code]})` : ''}`;
  }
}

const ERRNO_HINT: Record<string, string> = {
  ENOSPC: 'disk full',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOENT: 'directory does not exist',
  EIO: 'I/O error',
};

/**
 * The /readyz line for an account that cannot relay, or null when it can. Kept here so
 * the wording (and the command that fixes it) is the same everywhere it is shown.
 */
export function accountNotReadyReason(account: string, state: HealthState, detail?: string): string | null {
  if (state === 'ok') return null;
  if (state === 'needs-reauth') return `account ${account}: needs-reauth — run: xoauth2-bridge authorize ${account}`;
  return `account ${account}: error${detail ? ` (${detail})` : ''} — see: xoauth2-bridge token status`;
}
