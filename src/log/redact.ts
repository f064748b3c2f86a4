// Scrubs secrets from anything about to be logged. Every log call passes through here,
// so a token inside an error object (google-auth-library puts the refresh token in
// err.config) never reaches a log line, whatever the caller passed.

// Keys whose value is always a secret, and keys that hold request objects (gaxios
// config/headers carry the refresh token and client secret) which are dropped whole.
const SECRET_KEYS = /^(pass|password|passwordHash|secret|clientSecret|client_secret|token|accessToken|access_token|refreshToken|refresh_token|id_token|authorization|credentials|assertion|private_key|privateKey|code_verifier)$/i;
const OBJECT_KEYS = /^(config|request|headers|auth|options)$/i;

// Token shapes: Google access tokens (ya29.), refresh tokens (1//), bearer values,
// XOAUTH2 SASL strings, and form-encoded secrets inside URLs/bodies.
const PATTERNS: [RegExp, string][] = [
  [/ya29\.[A-Za-z0-9._\-]+/g, 'ya29.[redacted]'],
  [/1\/\/[A-Za-z0-9._\-]+/g, '1//[redacted]'],
  [/(Bearer\s+)[A-Za-z0-9._~+\/\-]+=*/gi, '$1[redacted]'],
  [/(auth=Bearer\s*)[^\x01\s]+/gi, '$1[redacted]'],
  [/\b(refresh_token|access_token|client_secret|code|code_verifier|assertion|password|id_token)=([^&\s"']+)/gi, '$1=[redacted]'],
  [/("(?:refresh_token|access_token|client_secret|id_token|private_key|password)"\s*:\s*")[^"]*"/gi, '$1[redacted]"'],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g, '[redacted private key]'],
];

/** Extra literal secrets (passwords typed at runtime, configured client secrets) to scrub anywhere. */
const literals = new Set<string>();

export function addSecret(s: string | undefined | null): void {
  if (s && s.length >= 6) literals.add(s);
}

export function redactString(s: string): string {
  let out = s;
  for (const lit of literals) if (out.includes(lit)) out = out.split(lit).join('[redacted]');
  for (const [re, rep] of PATTERNS) out = out.replace(re, rep);
  return out;
}

/** Deep copy with secret-named keys dropped and secret-shaped strings scrubbed. */
export function redact(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth > 6 || seen.has(value)) return '[…]';
  seen.add(value);
  if (value instanceof Error) {
    // Only what is safe and useful: message, code, status, Google's error/error_description.
    const e = value as Error & { code?: unknown; status?: unknown; response?: { status?: unknown; data?: unknown }; responseCode?: unknown };
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
    else out[k] = redact(v, depth + 1, seen);
  }
  return out;
}
