// HTTP to token endpoints, shared by every provider: the trust anchors (oauth.caFile on top of
// the system roots, never instead of them), the default timeout, and what a failed token
// request may say in a log (a provider classifies its own error codes first).
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { redactString } from '../log/redact.js';
import type { ClassifiedError, HttpOptions } from './provider.js';

/**
 * Per-attempt timeout of a token request unless the caller sets one (Google answers in well
 * under a second; a timed-out request is not retried, see retryTokenRequest).
 */
export const DEFAULT_TIMEOUT_MS = 10_000;

const agents = new Map<string, https.Agent>();

/**
 * caFile adds trust anchors on top of the system roots (never replaces or disables
 * verification). gaxios 8 uses node-fetch in Node, which honours an https.Agent.
 */
export function tokenAgent(caFile: string | undefined): https.Agent | undefined {
  if (!caFile) return undefined;
  let extra: string;
  try {
    extra = readFileSync(caFile, 'utf8');
  } catch (e) {
    throw new Error(`cannot read oauth.caFile ${caFile}: ${(e as Error).message}`);
  }
  const key = `${caFile}\0${extra}`;
  let agent = agents.get(key);
  if (!agent) {
    agent = new https.Agent({ ca: [...tls.rootCertificates, extra], keepAlive: true, minVersion: 'TLSv1.2' });
    agents.set(key, agent);
  }
  return agent;
}

/** A 2xx answer that is not the JSON object OAuth requires (an HTML error page, a cut-off body). */
export class InvalidTokenResponse extends Error {
  constructor(
    readonly status: number,
    readonly contentType: string,
    readonly bytes: number,
  ) {
    super(
      `token endpoint sent invalid JSON in the response (HTTP ${status}, ${contentType || 'no content type'}, ${bytes} bytes)`,
    );
    this.name = 'InvalidTokenResponse';
  }
}

const DEAD_GRANT = new Set(['invalid_grant', 'unauthorized_client']);

/**
 * Reduces a token-endpoint failure to what we may log: no config, no request body, and
 * every text the endpoint sent passed through the redactor (a broken endpoint may echo
 * the request with the refresh token and client secret in it). The message names what
 * happened: an OAuth error, an HTTP status, invalid JSON, a timeout, a network error.
 */
export function classifyTokenError(err: unknown, http: HttpOptions = {}): ClassifiedError {
  const c = classifyRaw(err, http);
  return { ...c, message: redactString(c.message).replace(/\s+/g, ' ').trim().slice(0, 400) };
}

function classifyRaw(err: unknown, http: HttpOptions): ClassifiedError {
  const e = err as {
    name?: string;
    message?: string;
    code?: unknown;
    status?: number;
    cause?: unknown;
    response?: { status?: number; data?: unknown; headers?: { get?(k: string): string | null } };
  };
  if (err instanceof InvalidTokenResponse) return { dead: false, code: 'invalid_response', message: err.message };
  const cause = e?.cause as { name?: string; code?: unknown } | undefined;
  if (cause instanceof InvalidTokenResponse) return { dead: false, code: 'invalid_response', message: cause.message };
  const data = e?.response?.data;
  const status = e?.response?.status ?? e?.status;
  if (data && typeof data === 'object' && typeof (data as { error?: unknown }).error === 'string') {
    const d = data as { error: string; error_description?: unknown };
    const desc = typeof d.error_description === 'string' ? `: ${d.error_description}` : '';
    return {
      dead: DEAD_GRANT.has(d.error),
      code: d.error,
      message: `token endpoint ${status ?? ''} ${d.error}${desc}`,
    };
  }
  if (status) {
    // A non-OAuth body (gaxios' errorRedactor already replaced its text): name its type only.
    const type = (e?.response?.headers?.get?.('content-type') ?? '').split(';')[0];
    return {
      dead: false,
      code: String(status),
      message: `token endpoint answered HTTP ${status}${type ? ` (${type}, not an OAuth error)` : ''}`,
    };
  }
  // gaxios aborts the request when its timeout fires; nothing else here aborts one.
  if (
    e?.name === 'TimeoutError' ||
    e?.name === 'AbortError' ||
    cause?.name === 'AbortError' ||
    cause?.name === 'TimeoutError'
  ) {
    const ms = http.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return {
      dead: false,
      code: 'ETIMEDOUT',
      message: `token endpoint timed out after ${ms % 1000 ? ms / 1000 : Math.round(ms / 1000)} s`,
    };
  }
  const code = typeof e?.code === 'string' ? e.code : typeof cause?.code === 'string' ? cause.code : undefined;
  const msg = (e?.message ?? String(err)).split('\n')[0] ?? 'unknown error';
  return {
    dead: false,
    code,
    message: `token endpoint unreachable: ${code && !msg.includes(code) ? code + ' ' : ''}${msg}`,
  };
}
