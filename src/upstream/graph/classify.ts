// Maps a Microsoft Graph answer to what the delivery worker does with the message, as
// classifyApi.ts does for the Gmail API. Graph's error body: {"error": {"code", "message"}}
// (https://learn.microsoft.com/graph/errors); Exchange's codes (ErrorAccessDenied,
// ErrorSendAsDenied, ...) arrive in error.code. The README's "Microsoft Graph" table lists each row.
import type { Outcome } from '../../types.js';

export interface GraphVerdict {
  outcome: Outcome;
  /** One line for logs, `queue list` and bounces: status, code and Graph's message, never request data. */
  response: string;
  /** 401: get a fresh token (force) and try once more before calling the account needs-reauth. */
  refresh?: boolean;
  /** Only an operator can fix it (access policy, mailbox): hold the account's mail with this fix. */
  hold?: string;
  /** 429/503/504: how long Graph asked us to wait (Retry-After), in ms. */
  retryAfterMs?: number;
  /** 400 ErrorInvalidRecipients naming one recipient: bounce that one, retry the rest. */
  badRecipient?: string;
}

/** What the fix texts need to name. */
export interface GraphContext {
  mailbox: string;
  /** app: client credentials (application permission); user: delegated. */
  grant: 'app' | 'user';
  clientId: string;
}

const QUOTA = new Set(['ErrorQuotaExceeded', 'ErrorExceededMessageLimit', 'ErrorMessageSubmissionBlocked']);
const UNKNOWN_MAILBOX = new Set(['ErrorInvalidUser', 'ResourceNotFound', 'ErrorNonExistentMailbox', 'MailboxNotFound']);

/** Retry-After as Graph sends it: delta-seconds, or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** The exact fix for a 403 ErrorAccessDenied: app-only (access policy / RBAC for Applications) or delegated (consent, shared mailbox rights). */
export function accessFix(c: GraphContext): string {
  if (c.grant === 'app')
    return (
      `Microsoft Graph refused app ${c.clientId} for the mailbox ${c.mailbox}: grant the app the Mail.Send application permission with admin consent, and let it reach this mailbox. ` +
      `With an application access policy: add ${c.mailbox} to the policy's mail-enabled security group, or New-ApplicationAccessPolicy -AppId ${c.clientId} -PolicyScopeGroupId GROUP_CONTAINING_${c.mailbox} -AccessRight RestrictAccess -Description "xoauth2-bridge" (check: Test-ApplicationAccessPolicy -Identity ${c.mailbox} -AppId ${c.clientId}). ` +
      `With RBAC for Applications: New-ManagementRoleAssignment -App SERVICE_PRINCIPAL_OBJECT_ID -Role "Application Mail.Send" -CustomResourceScope SCOPE_CONTAINING_${c.mailbox}. ` +
      'Then run: xoauth2-bridge token refresh ACCOUNT'
    );
  return (
    `Microsoft Graph refused the signed-in user for the mailbox ${c.mailbox}: consent to Mail.Send for app ${c.clientId} (a shared mailbox also needs Mail.Send.Shared and Send As: Add-RecipientPermission -Identity ${c.mailbox} -Trustee SIGNED_IN_USER -AccessRights SendAs), ` +
    'then run: xoauth2-bridge authorize ACCOUNT'
  );
}

/** `status` undefined: no HTTP answer (connection refused/reset, TLS, timeout) described by `netError`. */
export function classifyGraphAnswer(
  status: number | undefined,
  data: unknown,
  headers: Record<string, string | string[] | undefined>,
  c: GraphContext,
  netError?: string,
): GraphVerdict {
  if (status === undefined)
    return { outcome: 'transient', response: `graph: no answer: ${netError ?? 'connection failed'}` };
  const e =
    data && typeof data === 'object' ? (data as { error?: { code?: unknown; message?: unknown } }).error : undefined;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = (typeof e?.message === 'string' ? e.message : typeof data === 'string' ? data : '')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 300);
  const response = `${status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''} [graph]`;
  const ra = headers['retry-after'];
  const retryAfterMs = parseRetryAfter(Array.isArray(ra) ? ra[0] : ra);
  const wait = retryAfterMs !== undefined ? { retryAfterMs } : {};
  if (QUOTA.has(code)) return { outcome: 'quota', response, ...wait };
  if (status === 429 || status === 503 || status === 504) return { outcome: 'transient', response, ...wait };
  if (status === 401) return { outcome: 'auth', response, refresh: true };
  if (code === 'ErrorSendAsDenied')
    return {
      outcome: 'permanent',
      response: `${response} (the mailbox ${c.mailbox} may not send as this message's From: grant it Send As on that address, e.g. Add-RecipientPermission -Identity FROM_ADDRESS -Trustee ${c.mailbox} -AccessRights SendAs, or send from ${c.mailbox})`,
    };
  if (
    status === 403 &&
    (code === 'ErrorAccessDenied' ||
      code === 'Authorization_RequestDenied' ||
      code === 'AccessDenied' ||
      /AccessPolicy|RAOP/i.test(message))
  )
    return { outcome: 'transient', response, hold: accessFix(c) };
  if (code === 'MailboxNotEnabledForRESTAPI')
    return {
      outcome: 'transient',
      response,
      hold: `the mailbox ${c.mailbox} is not enabled for the Graph REST API (inactive, soft-deleted or on-premises): Graph sends only from Exchange Online mailboxes; use a cloud mailbox or transport smtp, then run: xoauth2-bridge token refresh ACCOUNT`,
    };
  if (UNKNOWN_MAILBOX.has(code))
    return {
      outcome: 'transient',
      response,
      hold: `Microsoft Graph does not know the mailbox ${c.mailbox} (${code}): check the account's mailbox/email key, then run: xoauth2-bridge token refresh ACCOUNT`,
    };
  if (status === 403)
    return {
      outcome: 'transient',
      response,
      hold: `Microsoft Graph refused this account (${response}); fix it, then run: xoauth2-bridge token refresh ACCOUNT`,
    };
  if (status === 400 && code === 'ErrorInvalidRecipients') {
    const bad = /Recipient '([^']+)'/.exec(message)?.[1];
    return { outcome: 'permanent', response, ...(bad ? { badRecipient: bad } : {}) };
  }
  if (status >= 500) return { outcome: 'transient', response, ...wait };
  // A wrong upstream.apiUrl or a proxy in the way: the message is fine, retry.
  if (status === 404 || status === 405 || status === 408) return { outcome: 'transient', response };
  if (status >= 400) return { outcome: 'permanent', response }; // 413 too large, 400 invalid MIME: bounce
  return { outcome: 'transient', response: `unexpected answer: ${response}` };
}
