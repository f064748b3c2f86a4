// The Gmail API transport's pure rules: which envelope the headers can express (the Bcc it
// needs, or why not) and how an API answer is classified. End to end in t-10-gmail-api-transport.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planRecipients, headerRecipients, mailboxKey, bccField } from '../../src/upstream/apiEnvelope.js';
import { classifyApiAnswer } from '../../src/upstream/gmail-api/classify.js';

const H = (lines: string[]) => lines.join('\r\n') + '\r\n';

test('header recipients: To, Cc and Bcc, folded lines, groups and display names; From and Reply-To are not recipients', () => {
  const header = H([
    'From: Scanner <scanner@example.com>',
    'Reply-To: desk@example.com',
    'To: "Doe, Jane" <jane@example.org>,',
    '\tbob@example.org',
    'cc: team: carol@example.org, dave@example.org;',
    'BCC: =?UTF-8?B?w4Rnb24=?= <agon@example.org>',
    'To: undisclosed-recipients:;',
  ]);
  assert.deepEqual(headerRecipients(header), [
    'jane@example.org',
    'bob@example.org',
    'carol@example.org',
    'dave@example.org',
    'agon@example.org',
  ]);
});

test('plan: envelope-only recipients become Bcc (once each); a header-only one refuses the API and is named', () => {
  assert.deepEqual(
    planRecipients(['a@example.org', 'b@example.org', 'b@Example.ORG'], ['a@example.org'], 100, 'the Gmail API'),
    {
      ok: true,
      bcc: ['b@example.org'],
    },
  );
  assert.deepEqual(
    planRecipients(['a@example.org'], [], 100, 'the Gmail API'),
    { ok: true, bcc: ['a@example.org'] },
    'no recipient headers at all: everything goes as Bcc',
  );
  const no = planRecipients(['a@example.org'], ['a@example.org', 'x@example.org'], 100, 'the Gmail API');
  assert.equal(no.ok, false);
  assert.match(!no.ok ? no.reason : '', /would also send to x@example\.org/);
  assert.match(bccField(['b@example.org', 'c@example.org']), /^Bcc: <b@example\.org>,\r\n <c@example\.org>\r\n$/);
});

test('plan: domains compare case-insensitively and as punycode, local parts exactly', () => {
  assert.equal(mailboxKey('Jane@Example.ORG'), 'Jane@example.org');
  assert.equal(mailboxKey('jane@bücher.example'), mailboxKey('jane@xn--bcher-kva.example'));
  assert.deepEqual(planRecipients(['jane@EXAMPLE.org'], ['jane@example.org'], 100, 'the Gmail API'), {
    ok: true,
    bcc: [],
  });
  assert.equal(
    planRecipients(['jane@example.org'], ['Jane@example.org'], 100, 'the Gmail API').ok,
    false,
    'another local part may be another mailbox',
  );
});

test('plan: more recipients than recipientsPerMessage cannot be split through the API', () => {
  const many = Array.from({ length: 101 }, (_, i) => `r${i}@example.org`);
  const p = planRecipients(many, many, 100, 'the Gmail API');
  assert.equal(p.ok, false);
  assert.match(!p.ok ? p.reason : '', /limits\.recipientsPerMessage \(100\)/);
});

test('plan: every refusal names the transport it was planned for, never another', () => {
  const many = Array.from({ length: 3 }, (_, i) => `r${i}@example.org`);
  for (const name of ['the Gmail API', 'Microsoft Graph']) {
    const reasons = [
      planRecipients(['a@example.org'], ['a@example.org', 'x@example.org'], 100, name),
      planRecipients(many, many, 2, name),
      planRecipients(['x@dest,test'], [], 100, name),
    ].map((p) => (p.ok ? '' : p.reason));
    assert.deepEqual(
      reasons.map((r) => r.slice(0, name.length + 1)),
      [`${name} `, `${name} `, `${name} `],
      reasons.join('\n'),
    );
    const other = name === 'Microsoft Graph' ? /Gmail/ : /Graph/;
    for (const r of reasons) assert.doesNotMatch(r, other);
  }
});

test('API answers: backoff, quota, fresh token, hold with the fix, bounce', () => {
  const body = (code: number, status: string, reason: string, message: string) => ({
    error: { code, status, message, errors: [{ reason, domain: 'global', message }] },
  });
  const c = (code: number, status: string, reason: string, message = 'x') =>
    classifyApiAnswer(code, body(code, status, reason, message));
  assert.equal(c(429, 'RESOURCE_EXHAUSTED', 'rateLimitExceeded').outcome, 'transient');
  assert.equal(c(403, 'PERMISSION_DENIED', 'userRateLimitExceeded').outcome, 'transient');
  assert.equal(c(503, 'UNAVAILABLE', 'backendError').outcome, 'transient');
  assert.equal(
    c(
      429,
      'RESOURCE_EXHAUSTED',
      'rateLimitExceeded',
      'User-rate limit exceeded.  Retry after 2026-12-02T05:00:00Z (Mail sending)',
    ).outcome,
    'quota',
  );
  assert.equal(c(403, 'PERMISSION_DENIED', 'dailyLimitExceeded').outcome, 'quota');
  assert.deepEqual(
    [c(401, 'UNAUTHENTICATED', 'authError').outcome, c(401, 'UNAUTHENTICATED', 'authError').refresh],
    ['auth', true],
  );
  const scope = c(
    403,
    'PERMISSION_DENIED',
    'insufficientPermissions',
    'Request had insufficient authentication scopes.',
  );
  assert.equal(scope.outcome, 'transient');
  assert.match(scope.hold ?? '', /gmail\.send scope: run xoauth2-bridge authorize ACCOUNT/);
  assert.match(c(403, 'PERMISSION_DENIED', 'accessNotConfigured').hold ?? '', /enable it/);
  const bad = c(400, 'INVALID_ARGUMENT', 'invalidArgument', 'Invalid To header');
  assert.equal(bad.outcome, 'permanent');
  assert.equal(bad.response, '400 INVALID_ARGUMENT (invalidArgument): Invalid To header [gmail-api]');
  assert.equal(classifyApiAnswer(undefined, undefined, 'ECONNRESET socket hang up').outcome, 'transient');
  assert.equal(classifyApiAnswer(502, '<html>Bad Gateway</html>').outcome, 'transient');
  assert.equal(
    classifyApiAnswer(404, { error: { code: 404, message: 'Not Found' } }).outcome,
    'transient',
    'a wrong apiUrl does not bounce mail',
  );
});
