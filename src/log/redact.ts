// Scrubs secrets from anything about to be logged. Every log call passes through here,
// so a token inside an error object (google-auth-library puts the refresh token in
// err.config) never reaches a log line, whatever the caller passed.

// Keys whose value is always a secret, and keys that hold request objects (gaxios
// config/headers carry the refresh token and client secret) which are dropped whole.
const SECRET_KEYS =
  /^(pass|password|passwordHash|secret|clientSecret|client_secret|token|accessToken|access_token|refreshToken|refresh_token|id_token|authorization|credentials|assertion|private_key|privateKey|code_verifier)$/i;
const OBJECT_KEYS = /^(config|request|headers|auth|options)$/i;

// Token shapes: Google access tokens (ya29.), refresh tokens (1//, also URL-encoded as
// 1%2F%2F), bearer values, XOAUTH2 SASL strings, and secrets inside form-encoded or
// URL-encoded bodies (a token endpoint that echoes the request) and JSON (also escaped,
// also cut off before the closing quote).
const SECRET_PARAMS =
  'refresh_token|access_token|client_secret|code|code_verifier|assertion|client_assertion|password|id_token|device_code';
const PATTERNS: [RegExp, string][] = [
  [/ya29\.[A-Za-z0-9._-]+/g, 'ya29.[redacted]'],
  [/1\/\/[A-Za-z0-9._-]+/g, '1//[redacted]'],
  [/1%2F%2F[A-Za-z0-9._\-%]+/gi, '1%2F%2F[redacted]'],
  [/(Bearer\s+)[A-Za-z0-9._~+/-]+=*/gi, '$1[redacted]'],
  [/(auth=Bearer\s*)[^\x01\s]+/gi, '$1[redacted]'],
  [new RegExp(`\\b(${SECRET_PARAMS})(=|%3D)([^&\\s"']+)`, 'gi'), '$1$2[redacted]'],
  [
    new RegExp(`(\\\\?"(?:${SECRET_PARAMS}|private_key)\\\\?"\\s*:\\s*\\\\?")(?:[^"\\\\]|\\\\(?!"))*(\\\\?"|$)`, 'gi'),
    '$1[redacted]$2',
  ],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g, '[redacted private key]'],
];

/**
 * Literal secrets to scrub anywhere, with the spellings they take in a form body, a URL
 * or a JSON string. Only live secrets are kept: a named slot (e.g. `access:office`) holds
 * one value and a new one replaces it, and an entry with an expiry is dropped once it has
 * passed, so the scan per log line stays as long as the number of accounts.
 */
interface Entry {
  forms: string[];
  expiresAt?: number;
}
const entries = new Map<string, Entry>();
let nextPrune = 0;

function spellings(s: string): string[] {
  const forms = new Set([
    s,
    encodeURIComponent(s),
    new URLSearchParams({ v: s }).toString().slice(2),
    JSON.stringify(s).slice(1, -1),
  ]);
  return [...forms].filter((f) => f.length >= 6);
}

/**
 * Registers a secret to scrub. With `slot`, the value replaces what the slot held (the
 * previous access token of an account is no longer live); `expiresAt` (ms) drops it after.
 */
export function addSecret(s: string | undefined | null, opts: { slot?: string; expiresAt?: number } = {}): void {
  if (!s || s.length < 6) return;
  entries.set(opts.slot ?? `lit:${s}`, { forms: spellings(s), expiresAt: opts.expiresAt });
}

/** Forgets a slot's secret (account removed, grant replaced). */
export function dropSecret(slot: string): void {
  entries.delete(slot);
}

/** How many secrets the redactor scans for (bounded by the live ones; exported for tests and metrics). */
export function secretRegistrySize(): number {
  prune(Date.now());
  return entries.size;
}

/** Whether a value is one of the live secrets the redactor scans for (for tests: a replaced token is not). */
export function isLiveSecret(s: string): boolean {
  prune(Date.now());
  for (const e of entries.values()) if (e.forms.includes(s)) return true;
  return false;
}

function prune(now: number): void {
  if (now < nextPrune) return;
  nextPrune = now + 1000;
  for (const [k, e] of entries) if (e.expiresAt !== undefined && e.expiresAt <= now) entries.delete(k);
}

// A run of base64 characters (also inside a longer token: a blob spliced onto a host name).
const BASE64_RUN = /[A-Za-z0-9+/]{8,}={0,2}/g;
// Decoded SASL credentials: PLAIN's `authzid\0authcid\0password` and XOAUTH2's `user=…\x01auth=…`.
const SASL_DECODED = /\0[^\0-\x1f]{1,255}\0|\x01auth=/i;

/** Whether a base64 run, read from any of its four alignments, decodes to SASL credentials. */
function decodesToCredentials(run: string): boolean {
  const body = run.replace(/=+$/, '');
  for (let off = 0; off < 4 && body.length - off >= 8; off++) {
    const part = body.slice(off, off + Math.floor((body.length - off) / 4) * 4);
    if (SASL_DECODED.test(Buffer.from(part, 'base64').toString('latin1'))) return true;
  }
  return false;
}

/** AUTH payloads in base64 (PLAIN, XOAUTH2) wherever they appear, in any log line. */
function redactSaslBlobs(s: string): string {
  return s.replace(BASE64_RUN, (run) => (decodesToCredentials(run) ? '[redacted]' : run));
}

/**
 * For what a client sent (SMTP command arguments): also every long base64 run, whatever it
 * decodes to (a password may be encoded alone, or in hex, which is a base64 run too). Not
 * for every log line: queue ids and hashes have the same shape.
 */
export function protocolBlobs(s: string): string {
  return redactSaslBlobs(s).replace(/[A-Za-z0-9+/]{16,}={0,2}/g, '[blob]');
}

// A host name (labels of letters, digits, hyphens) or an address literal.
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$|^\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]$/;
const LOCAL_PART = /^[A-Za-z0-9._+-]{1,64}$/;

/** A client-given host name as a log may show it (a name, or a note that it was not one). */
export function hostForLog(name: string): string {
  return name.length <= 255 && HOST.test(name) ? protocolBlobs(name) : '[not a host name]';
}

/**
 * A client-given mail address as a log may show it: a plain local part (letters, digits,
 * `._+-`) and a host name; anything else in their place (a password has other characters,
 * an encoded one is a blob) is replaced by a note.
 */
export function addressForLog(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return LOCAL_PART.test(address) ? protocolBlobs(address) : '[not a plain address]';
  const local = address.slice(0, at);
  return `${LOCAL_PART.test(local) ? protocolBlobs(local) : '[not a plain local part]'}@${hostForLog(address.slice(at + 1))}`;
}

export function redactString(s: string): string {
  return redactSaslBlobs(redactKnown(s));
}

/** The live secrets and the well-known secret shapes, without the SASL-blob heuristic. */
function redactKnown(s: string): string {
  let out = s;
  prune(Date.now());
  for (const e of entries.values()) for (const f of e.forms) if (out.includes(f)) out = out.split(f).join('[redacted]');
  for (const [re, rep] of PATTERNS) out = out.replace(re, rep);
  return out;
}

// An `id` field holds an identifier the daemon made (a queue id, a session id), never client
// input; about 1 queue id in 500 reads as a PLAIN blob in some alignment, so the heuristic
// would hide the one thing an operator greps the log for.
const OWN_ID = /^[0-9A-Za-z_-]{1,64}$/;

/** Deep copy with secret-named keys dropped and secret-shaped strings scrubbed. */
export function redact(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth > 6 || seen.has(value)) return '[…]';
  seen.add(value);
  if (value instanceof Error) {
    // Only what is safe and useful: message, code, status, Google's error/error_description.
    const e = value as Error & {
      code?: unknown;
      status?: unknown;
      response?: { status?: unknown; data?: unknown };
      responseCode?: unknown;
    };
    const out: Record<string, unknown> = { message: redactString(e.message) };
    if (e.code !== undefined) out.code = e.code;
    if (e.responseCode !== undefined) out.responseCode = e.responseCode;
    const status = e.status ?? e.response?.status;
    if (status !== undefined) out.status = status;
    const data = e.response?.data as { error?: unknown; error_description?: unknown } | undefined;
    if (data && typeof data === 'object') {
      if (typeof data.error === 'string') out.error = redactString(data.error);
      if (typeof data.error_description === 'string') out.error_description = redactString(data.error_description);
    }
    return out;
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1, seen));
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (SECRET_KEYS.test(k) || (OBJECT_KEYS.test(k) && v !== null && typeof v === 'object')) out[k] = '[redacted]';
    else if (k === 'id' && typeof v === 'string' && OWN_ID.test(v)) out[k] = redactKnown(v);
    else out[k] = redact(v, depth + 1, seen);
  }
  return out;
}
