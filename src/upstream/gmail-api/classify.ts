// Maps a Gmail API answer to what the delivery worker does with the message, as classify.ts
// does for SMTP replies. Google's error body: {error: {code, message, status, errors: [{reason}]}}
// (https://developers.google.com/workspace/gmail/api/guides/handle-errors).
import type { Outcome } from '../../types.js';

export interface ApiVerdict {
  outcome: Outcome;
  /** One line for logs, `queue list` and bounces: status, reason and Google's message, never request data. */
  response: string;
  /** 401: get a fresh token (force) and try once more before calling the account needs-reauth. */
  refresh?: boolean;
  /** Only an operator can fix it (scope, API disabled): hold the account's mail with this fix. */
  hold?: string;
}

interface GoogleError {
  code?: number;
  message?: string;
  status?: string;
  errors?: Array<{ reason?: string; message?: string; domain?: string }>;
  details?: Array<{ reason?: string }>;
}

const RATE = new Set(['rateLimitExceeded', 'userRateLimitExceeded', 'backendError', 'concurrentLimitExceeded']);
const QUOTA = new Set(['dailyLimitExceeded']);
const SCOPE = new Set(['insufficientPermissions', 'ACCESS_TOKEN_SCOPE_INSUFFICIENT']);
const DISABLED = new Set(['accessNotConfigured', 'SERVICE_DISABLED']);

export const SCOPE_FIX =
  'the token lacks the gmail.send scope: run xoauth2-bridge authorize ACCOUNT (with transport gmail-api or auto it asks for https://www.googleapis.com/auth/gmail.send; a service account needs that scope in its domain-wide delegation), then xoauth2-bridge token refresh ACCOUNT';
const DISABLED_FIX =
  'the Gmail API is not enabled in the Google Cloud project of this OAuth client: enable it in the Cloud console (APIs & Services), then run xoauth2-bridge token refresh ACCOUNT';

function googleError(data: unknown): GoogleError {
  const e = data && typeof data === 'object' ? (data as { error?: unknown }).error : undefined;
  return e && typeof e === 'object' ? (e as GoogleError) : {};
}

/** A 2xx answer: Gmail took the message (its id is worth logging). */
export function acceptedText(status: number, data: unknown): string {
  const id = data && typeof data === 'object' ? (data as { id?: unknown }).id : undefined;
  return `${status} gmail-api messages.send ok${typeof id === 'string' ? ` id=${id}` : ''}`;
}

/** `status` undefined: no HTTP answer (connection refused/reset, TLS, timeout) described by `netError`. */
export function classifyApiAnswer(status: number | undefined, data: unknown, netError?: string): ApiVerdict {
  if (status === undefined)
    return { outcome: 'transient', response: `gmail-api: no answer: ${netError ?? 'connection failed'}` };
  const g = googleError(data);
  const reasons = [...(g.errors ?? []).map((e) => e.reason), ...(g.details ?? []).map((d) => d.reason)].filter(
    (r): r is string => typeof r === 'string',
  );
  const has = (set: Set<string>) => reasons.some((r) => set.has(r));
  const message = (g.message ?? (typeof data === 'string' ? data : '')).replace(/\s+/g, ' ').trim().slice(0, 300);
  const response = `${status}${g.status ? ` ${g.status}` : ''}${reasons.length ? ` (${[...new Set(reasons)].join(', ')})` : ''}${message ? `: ${message}` : ''} [gmail-api]`;
  // Gmail's daily sending limit arrives as 429 "User-rate limit exceeded. Retry after … (Mail sending)" (for hours), or 403 dailyLimitExceeded.
  if (has(QUOTA) || /daily (user )?sending (quota|limit)|sending limit|mail sending/i.test(message))
    return { outcome: 'quota', response };
  if (status === 429 || has(RATE) || status >= 500) return { outcome: 'transient', response };
  if (status === 401) return { outcome: 'auth', response, refresh: true };
  if (status === 403 && (has(SCOPE) || /insufficient authentication scopes/i.test(message)))
    return { outcome: 'transient', response, hold: SCOPE_FIX };
  if (status === 403 && has(DISABLED)) return { outcome: 'transient', response, hold: DISABLED_FIX };
  // Any other refusal of the account (delegation denied, a domain policy) also waits for a person, not a bounce.
  if (status === 403)
    return {
      outcome: 'transient',
      response,
      hold: `the Gmail API refused this account (${response}); fix it, then run xoauth2-bridge token refresh ACCOUNT`,
    };
  // A wrong upstream.apiUrl or a proxy in the way: the message is fine, retry.
  if (status === 404 || status === 405 || status === 408) return { outcome: 'transient', response };
  if (status >= 400) return { outcome: 'permanent', response }; // 400 invalidArgument, 413 too large: bounce
  return { outcome: 'transient', response: `unexpected answer: ${response}` };
}
