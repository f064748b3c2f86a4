// What Microsoft's answers mean: token-endpoint AADSTS codes (dead grant, bad client
// credential) and Exchange Online SMTP replies that need an operator or a clearer bounce.
import * as oauth from 'oauth4webapi';
import { redactString } from '../../log/redact.js';
import type { ClassifiedError, SmtpReplyClass } from '../provider.js';

// AADSTS codes that mean the grant is gone and a person must sign in again.
const REAUTH_CODES: Record<string, string> = {
  '70008': 'the refresh token expired or was revoked',
  '700082': 'the refresh token expired after 90 days without use',
  '700084': 'the refresh token expired (single-page-app lifetime)',
  '50173': 'the grant was revoked (password changed or sessions revoked)',
  '50076': 'multi-factor authentication is now required',
  '50079': 'multi-factor authentication enrolment is required',
  '50078': 'multi-factor authentication expired',
  '70043': 'a Conditional Access sign-in frequency requires a new sign-in',
  '65001': 'the user or an admin has not consented to SMTP.Send for this app',
  '50126': 'invalid user name or password',
  '54005': 'the authorization code was already redeemed',
};
const CLIENT_CODES: Record<string, string> = {
  '7000215': "the client secret is wrong (use the secret's Value, not its ID)",
  '7000222':
    'the client secret has expired: create a new one under App registrations > Certificates & secrets and update oauth.clientSecret(File)',
  '700027': 'the certificate assertion was refused (certificate not uploaded to the app registration, or expired)',
  '700024': 'the client assertion is outside its valid time range (check the clock)',
  '700023': 'the client assertion has the wrong audience (tenant or authorityHost mismatch)',
  '700021': 'the client assertion names another application than oauth.clientId',
  '7000218':
    'the app registration requires a client secret or certificate (or enable "Allow public client flows" for a delegated account without one)',
  '700016': 'the application (client ID) was not found in this tenant',
  '90002': 'the tenant was not found',
};

/**
 * The grant lacks consent for scopes the bridge asked for (AADSTS65001 names none, so the
 * refresher that asked says which). A dead grant: only a new sign-in with consent helps.
 */
export class MicrosoftConsentError extends Error {
  constructor(readonly scopes: readonly string[]) {
    const wanted = scopes.filter((sc) => sc !== 'offline_access').join(' and ');
    super(
      `the grant has no consent for ${wanted} (AADSTS65001): grant it in Entra ID (admin consent if required), then run authorize again`,
    );
    this.name = 'MicrosoftConsentError';
  }
}

/** AADSTS65001 from a token request that asked for `scopes`: the consent error naming them; else the error as it was. */
export function consentErrorFor(err: unknown, scopes: readonly string[]): unknown {
  if (err instanceof oauth.ResponseBodyError && /AADSTS65001\b/.test(err.error_description ?? ''))
    return new MicrosoftConsentError(scopes);
  return err;
}

/**
 * Microsoft's token-endpoint errors keep their AADSTS code in the message. A dead grant or
 * a dead client credential (wrong/expired secret) needs a person: needs-reauth.
 */
export function classifyMicrosoftError(err: unknown): ClassifiedError | null {
  if (err instanceof MicrosoftConsentError) return { dead: true, code: 'AADSTS65001', message: err.message };
  if (!(err instanceof oauth.ResponseBodyError)) return null;
  const desc = (err.error_description ?? '').split(/\r?\n/)[0];
  const aadsts = /AADSTS(\d+)/.exec(desc)?.[1];
  const known = aadsts ? (REAUTH_CODES[aadsts] ?? CLIENT_CODES[aadsts]) : undefined;
  const dead =
    err.error === 'invalid_grant' ||
    err.error === 'interaction_required' ||
    (aadsts !== undefined && aadsts in CLIENT_CODES) ||
    err.error === 'unauthorized_client';
  const what = known ? `${known} (AADSTS${aadsts})` : desc;
  return {
    dead,
    code: aadsts ? `AADSTS${aadsts}` : err.error,
    message: redactString(`token endpoint ${err.status} ${err.error}: ${what}`).slice(0, 400),
  };
}

/**
 * Exchange Online replies that need more than the generic SMTP classes: a hold with the
 * exact fix (SMTP AUTH disabled; app-only without mailbox rights), or a permanent refusal
 * with a clear bounce reason (send-as denied).
 */
export function exchangeReply(text: string, o: { type: string }, mailbox: string): SmtpReplyClass | null {
  if (/SubmissionQuotaExceeded/i.test(text))
    return {
      quota: true,
      explain: `Exchange Online's sending limit for ${mailbox} is reached (10,000 recipients a day); the mail waits`,
    };
  if (/\b5\.7\.139\b/.test(text))
    return {
      smtpAuthRefused: true,
      hold: `SMTP AUTH is disabled for ${mailbox} (or tenant-wide). Fix: Set-CASMailbox -Identity ${mailbox} -SmtpClientAuthenticationDisabled $false   (and check Security Defaults), then run: xoauth2-bridge token refresh ACCOUNT`,
    };
  if (/\b5\.7\.3\b/.test(text) && o.type === 'app')
    return {
      smtpAuthRefused: true,
      hold: `Exchange refused the app's token for ${mailbox} (535 5.7.3): register the Exchange service principal (New-ServicePrincipal -AppId CLIENT_ID -ObjectId ENTERPRISE_APP_OBJECT_ID) and grant it the mailbox (Add-MailboxPermission -Identity ${mailbox} -User SERVICE_PRINCIPAL_ID -AccessRights FullAccess), then run: xoauth2-bridge token refresh ACCOUNT`,
    };
  // Delegated 5.7.3: a wrong user's token, or SMTP AUTH off (Security Defaults answer so too).
  if (/\b5\.7\.3\b/.test(text))
    return {
      smtpAuthRefused: true,
      explain: `Exchange refused the token for ${mailbox}: run xoauth2-bridge authorize ACCOUNT and sign in as ${mailbox}; if it persists, check that SMTP AUTH is enabled for the mailbox (Set-CASMailbox -Identity ${mailbox} -SmtpClientAuthenticationDisabled $false) and that Security Defaults do not block it`,
    };
  if (/\b5\.7\.60\b|\b5\.2\.252\b/.test(text))
    return {
      explain: `the mailbox ${mailbox} may not send as this sender (grant Send As, or send from the mailbox's own address)`,
    };
  return null;
}
