// Maps an upstream failure (a nodemailer error, or ours) to what the delivery worker does
// with the message. Gmail's replies are the reference: https://support.google.com/a/answer/3726730
import type { Outcome } from '../types.js';

/**
 * How long an account stays held for a fix only an operator can make (a missing scope, an
 * access policy, a mailbox permission) before it is tried again: one value for every transport.
 */
export const OPERATOR_HOLD_MS = 15 * 60_000;

export interface UpstreamError {
  code?: string;
  responseCode?: number;
  response?: string;
  message?: string;
}

export function replyText(err: UpstreamError): string {
  const text = err.response ?? (err.responseCode ? `${err.responseCode}` : '');
  return (text || `${err.code ?? 'ERROR'}: ${err.message ?? 'unknown error'}`).replace(/\s+/g, ' ').trim();
}

/** A reply is an SMTP reply only if it starts with a valid code (RFC 5321 §4.2: 2yz to 5yz, y 0 to 5). */
export function wellFormed(text: string): boolean {
  return /^[2-5][0-5]\d(?:[ -]|$)/.test(text);
}

export function classifyReply(code: number | undefined, text: string): Outcome {
  if (code === undefined) return 'transient'; // connection refused/reset/timeout, TLS failure, DNS
  // Anything that is not a valid SMTP reply ("999 …", "2x0 huh") says nothing reliable: retry.
  if (!(code >= 200 && code <= 559) || (text && /^\d/.test(text) && !wellFormed(text))) return 'transient';
  if (code >= 200 && code < 300) return 'ok';
  // 550 5.4.5 (and 4.7.x "daily user sending limit") is Gmail's quota: hold, don't bounce.
  if (/\b5\.4\.5\b/.test(text) || /sending limit|quota exceeded/i.test(text)) return 'quota';
  if (code === 535 || code === 534 || code === 530) return 'auth';
  if (code >= 400 && code < 500) return 'transient';
  return 'permanent';
}

export function classifyError(err: UpstreamError): Outcome {
  if (err.code === 'EAUTH' && err.responseCode === undefined) return 'transient'; // could not get a token (endpoint down)
  return classifyReply(err.responseCode, err.response ?? '');
}
