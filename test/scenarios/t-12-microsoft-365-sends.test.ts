// Microsoft 365 end to end: the bridge relays through the fake Exchange Online (587
// STARTTLS, XOAUTH2) with tokens from the fake Microsoft identity platform, next to a
// Google account in the same daemon; 535 5.7.139 holds the account's mail with the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeWorld, type FakeWorld } from '../../src/fakes/world.js';
import { createAppCertificate } from '../../src/fakes/ca.js';
import { FakeMicrosoftIdentity } from '../../src/fakes/microsoftIdentity.js';
import { FakeExchange } from '../../src/fakes/exchange.js';
import { startBridge, sendThroughBridge, message, CLI, type RunningBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const MAILBOX = 'printer@contoso.com';

type Ctx = {
  world: FakeWorld;
  ms: FakeMicrosoftIdentity;
  exo: FakeExchange;
  b: RunningBridge;
  clientId: string;
  send: (user: string, from: string, to: string | string[]) => Promise<string>;
};

/** credential: a client secret, a certificate uploaded to the app registration, or one that was not. */
async function withMs(
  type: 'user' | 'app',
  fn: (x: Ctx) => Promise<void>,
  opts: {
    credential?: 'secret' | 'certificate' | 'unregistered-certificate';
    mailboxPermission?: boolean;
    limits?: Record<string, number>;
    allowedSenders?: string[];
  } = {},
): Promise<void> {
  const world = await startFakeWorld();
  const ms = await FakeMicrosoftIdentity.start({ pki: world.pki });
  const exo = await FakeExchange.start({ pki: world.pki, identity: ms });
  const clientId = '00000000-aaaa-bbbb-cccc-000000000001';
  const secret = `Xy8Q~${Math.random().toString(36).slice(2)}`;
  const credential = opts.credential ?? 'secret';
  ms.registerApp(clientId, credential === 'secret' ? secret : null);
  let creds: Record<string, string> = { clientSecret: secret };
  if (credential !== 'secret') {
    const mine = await createAppCertificate();
    ms.uploadCertificate(
      clientId,
      credential === 'certificate' ? mine.cert : (await createAppCertificate('someone else')).cert,
    );
    creds = { certificateFile: join(world.dir, 'app.crt'), privateKeyFile: join(world.dir, 'app.key') };
    await writeFile(creds.certificateFile, mine.cert);
    await writeFile(creds.privateKeyFile, mine.key, { mode: 0o600 });
  }
  if (type === 'app' && opts.mailboxPermission !== false) ms.allowMailbox(clientId, MAILBOX);
  const b = await startBridge(world, {
    queue: { retry: ['300ms'] },
    accounts: [
      {
        name: world.account.name,
        email: world.account.email,
        oauth: {
          type: 'user',
          clientId: world.account.clientId,
          clientSecret: world.account.clientSecret,
          tokenUrl: world.tokens.url,
          caFile: world.caFile,
        },
        upstream: { host: 'localhost', port: world.gmail.port, tls: world.gmail.mode, caFile: world.caFile },
      },
      {
        name: 'm365',
        provider: 'microsoft',
        email: MAILBOX,
        oauth: ms.accountOAuth(type, clientId, creds, world.caFile),
        upstream: { host: 'localhost', port: exo.port, caFile: world.caFile },
        ...(opts.limits ? { limits: opts.limits } : {}),
      },
    ],
    users: [
      { username: world.user.username, passwordHash: world.user.passwordHash, account: world.account.name },
      {
        username: 'copier',
        passwordHash: world.user.passwordHash,
        account: 'm365',
        ...(opts.allowedSenders ? { allowedSenders: opts.allowedSenders } : {}),
      },
    ],
  });
  if (type === 'user') await b.bridge.tokens.importRefreshToken('m365', ms.issueRefreshToken(clientId, MAILBOX));
  const send = async (user: string, from: string, to: string | string[]) => {
    const rcpts = Array.isArray(to) ? to : [to];
    return (
      await sendThroughBridge({
        port: b.port,
        user,
        pass: world.user.password,
        from,
        to: rcpts,
        raw: message({ from, to: rcpts.join(', ') }),
      })
    ).response
      .split(' ')
      .pop()!;
  };
  try {
    await fn({ world, ms, exo, b, clientId, send });
  } finally {
    await b.stop();
    await exo.close();
    await ms.close();
    await world.close();
  }
}

test('delegated Microsoft account and a Google account in one daemon: each user relays through its own', {
  timeout: 60_000,
}, async () => {
  await withMs('user', async ({ world, exo, send }) => {
    await send('copier', MAILBOX, 'to-ms@example.org');
    await send(world.user.username, world.account.email, 'to-google@example.org');
    await waitFor(
      () => exo.messages.length === 1 && world.gmail.messages.length === 1,
      15_000,
      'one message at each provider',
    );
    assert.deepEqual(exo.messages[0].rcptTo, ['to-ms@example.org']);
    assert.equal(exo.messages[0].authUser, MAILBOX);
    assert.deepEqual(world.gmail.messages[0].rcptTo, ['to-google@example.org']);
  });
});

test('app-only Microsoft account relays; 535 5.7.139 holds its mail and queue list says why', {
  timeout: 60_000,
}, async () => {
  await withMs('app', async ({ exo, b, send }) => {
    await send('copier', MAILBOX, 'first@example.org');
    await waitFor(() => exo.messages.length === 1, 15_000, 'delivered with a client-credentials token');
    exo.smtpAuthDisabled.add(MAILBOX);
    await b.bridge.upstream.close(); // a new connection must AUTH again
    const id = await send('copier', MAILBOX, 'held@example.org');
    await waitFor(
      () => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('Set-CASMailbox')),
      15_000,
      'held with the fix',
    );
    const list = await run(process.execPath, [...CLI, 'queue', 'list', '--json', '-c', b.configFile]).catch(
      (e: { stdout: string }) => e,
    );
    const row = (
      JSON.parse(list.stdout) as {
        id: string;
        reason?: string | null;
        lastReply?: string | null;
        lastError?: string | null;
      }[]
    ).find((r) => r.id === id);
    assert.ok(row, 'listed');
    assert.match(
      JSON.stringify(row),
      /5\.7\.139.*Set-CASMailbox -Identity printer@contoso\.com -SmtpClientAuthenticationDisabled \$false/,
    );
    assert.equal(exo.messages.length, 1, 'nothing more was sent');
  });
});

/** `queue list --json` through the real CLI (the daemon answers over its control socket). */
async function listed(b: RunningBridge, id: string): Promise<Record<string, unknown>> {
  const list = await run(process.execPath, [...CLI, 'queue', 'list', '--json', '-c', b.configFile]).catch(
    (e: { stdout: string }) => e,
  );
  const row = (JSON.parse(list.stdout) as { id: string }[]).find((r) => r.id === id);
  assert.ok(row, `${id} listed`);
  return row as Record<string, unknown>;
}

test('app-only with a certificate: the fake verifies the signed client assertion; the message is delivered', {
  timeout: 60_000,
}, async () => {
  await withMs(
    'app',
    async ({ ms, exo, send }) => {
      await send('copier', MAILBOX, 'cert@example.org');
      await waitFor(() => exo.messages.length === 1, 15_000, 'delivered with a certificate-signed token request');
      const reqs = ms.requests.filter((r) => r.grantType === 'client_credentials');
      assert.ok(reqs.length >= 1 && reqs.every((r) => r.clientAuth === 'assertion' && r.ok), JSON.stringify(reqs));
    },
    { credential: 'certificate' },
  );
});

test('app-only with a certificate not uploaded to the app: AADSTS700027 in the message, needs-reauth, mail held', {
  timeout: 60_000,
}, async () => {
  await withMs(
    'app',
    async ({ exo, b, send }) => {
      const id = await send('copier', MAILBOX, 'nocert@example.org');
      await waitFor(() => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id)), 15_000, 'held');
      assert.equal(b.bridge.tokens.state('m365'), 'needs-reauth');
      assert.match(
        b.bridge.tokens.status().find((s) => s.account === 'm365')?.lastError ?? '',
        /certificate assertion was refused .*\(AADSTS700027\)/,
      );
      const row = await listed(b, id);
      assert.equal(row.state, 'held');
      assert.equal(row.reason, 'needs-reauth');
      assert.equal(exo.auths.length, 0, 'never reached Exchange');
    },
    { credential: 'unregistered-certificate' },
  );
});

test('delegated 535 5.7.3: one fresh token, then needs-reauth with the Microsoft fix (authorize, SMTP AUTH, Security Defaults)', {
  timeout: 60_000,
}, async () => {
  await withMs('user', async ({ ms, exo, b, send }) => {
    exo.refuseTokens.add(MAILBOX);
    const id = await send('copier', MAILBOX, 'refused@example.org');
    await waitFor(
      () => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('needs-reauth')),
      15_000,
      'held for re-authorization',
    );
    assert.deepEqual(
      exo.auths.map((a) => a.reply?.slice(0, 9)),
      ['535 5.7.3', '535 5.7.3'],
      'the token, then one fresh token',
    );
    assert.equal(
      ms.requests.filter((r) => r.grantType === 'refresh_token' && r.ok).length,
      2,
      'exactly one forced refresh after the first refusal',
    );
    assert.equal(b.bridge.tokens.state('m365'), 'needs-reauth');
    const why = b.bridge.tokens.status().find((s) => s.account === 'm365')?.lastError ?? '';
    assert.match(
      why,
      /535 5\.7\.3 .*run xoauth2-bridge authorize m365 and sign in as printer@contoso\.com.*Set-CASMailbox -Identity printer@contoso\.com -SmtpClientAuthenticationDisabled \$false.*Security Defaults/,
    );
    const row = await listed(b, id);
    assert.equal(row.reason, 'needs-reauth');
    assert.equal(exo.messages.length, 0);
  });
});

test('app-only 535 5.7.3 (no mailbox permission for the service principal): one fresh token, then held with the Add-MailboxPermission fix', {
  timeout: 60_000,
}, async () => {
  await withMs(
    'app',
    async ({ ms, exo, b, send }) => {
      const id = await send('copier', MAILBOX, 'noperm@example.org');
      await waitFor(
        () =>
          b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('Add-MailboxPermission')),
        15_000,
        'held with the fix',
      );
      assert.equal(exo.auths.length, 2, 'the token, then one fresh token');
      assert.equal(ms.requests.filter((r) => r.grantType === 'client_credentials' && r.ok).length, 2);
      const row = await listed(b, id);
      assert.match(
        JSON.stringify(row),
        /New-ServicePrincipal -AppId CLIENT_ID .*Add-MailboxPermission -Identity printer@contoso\.com -User SERVICE_PRINCIPAL_ID -AccessRights FullAccess.*token refresh m365/,
      );
      assert.notEqual(b.bridge.tokens.state('m365'), 'needs-reauth', 'app-only: held, not needs-reauth');
    },
    { mailboxPermission: false },
  );
});

test('Exchange counts recipients per day: with recipientsPerDay 5, a second 3-recipient message waits (queue list says why), a 2-recipient one fits', {
  timeout: 60_000,
}, async () => {
  await withMs(
    'user',
    async ({ exo, b, send }) => {
      const three = (p: string) => [1, 2, 3].map((n) => `${p}${n}@example.org`);
      await send('copier', MAILBOX, three('a'));
      await waitFor(() => exo.messages.length === 1, 15_000, 'the first three-recipient message delivered');
      const id = await send('copier', MAILBOX, three('b'));
      await waitFor(
        () => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('rate-limit')),
        15_000,
        'the second waits',
      );
      const row = await listed(b, id);
      assert.match(
        String(row.waiting),
        /^limits\.recipientsPerDay 5: 3 sent in 24 h, this message has 3; waits until \d{4}-/,
      );
      const list = await run(process.execPath, [...CLI, 'queue', 'list', '-c', b.configFile]);
      assert.match(list.stdout, new RegExp(`${id}.*waiting: limits\\.recipientsPerDay 5`));
      // Two more recipients still fit the day's five: counted by recipients, not messages.
      await send('copier', MAILBOX, ['c1@example.org', 'c2@example.org']);
      await waitFor(() => exo.messages.length === 2, 15_000, 'the two-recipient message delivered');
      assert.deepEqual(exo.messages[1].rcptTo, ['c1@example.org', 'c2@example.org']);
      assert.ok(!exo.messages.some((m) => m.rcptTo.includes('b1@example.org')), 'the held one was not sent');
    },
    { limits: { recipientsPerDay: 5 } },
  );
});

test('Exchange throttling (432 4.3.2) is retried with backoff; SendAsDenied (5.2.252) fails the message with a clear reason', {
  timeout: 60_000,
}, async () => {
  await withMs(
    'user',
    async ({ exo, b, send }) => {
      exo.mailReplies.push({
        code: 432,
        text: '4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=SN4PR0601MB3712.namprd06.prod.outlook.com]',
      });
      const throttled = await send('copier', MAILBOX, 'later@example.org');
      await waitFor(
        () => b.logs.some((l) => l.includes('"message":"deferred"') && l.includes(throttled) && l.includes('4.3.2')),
        15_000,
        'deferred on 4.3.2',
      );
      await waitFor(
        () => exo.messages.some((m) => m.rcptTo.includes('later@example.org')),
        15_000,
        'delivered on the next try',
      );

      const denied = await send('copier', 'someone.else@contoso.com', 'x@example.org');
      await waitFor(
        () => b.logs.some((l) => l.includes(denied) && l.includes('"message":"bounced"')),
        15_000,
        'failed and bounced',
      );
      const row = await listed(b, denied);
      assert.equal(row.state, 'failed');
      assert.match(String(row.failReason ?? row.lastReply), /5\.2\.252 SendAsDenied.*may not send as this sender/);
      assert.ok(!exo.messages.some((m) => m.rcptTo.includes('x@example.org')));
    },
    { allowedSenders: ['*@contoso.com'] },
  );
});

test("Exchange's own daily limit (554 5.2.0 SubmissionQuotaExceededException) holds the mail as quota, no bounce", {
  timeout: 60_000,
}, async () => {
  await withMs('user', async ({ exo, b, send }) => {
    exo.mailReplies.push({
      code: 554,
      text: '5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.',
    });
    const id = await send('copier', MAILBOX, 'tomorrow@example.org');
    await waitFor(
      () => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('"reason":"quota"')),
      15_000,
      'held for the quota',
    );
    const row = await listed(b, id);
    assert.deepEqual([row.state, row.reason], ['held', 'quota']);
    assert.match(
      String(row.lastReply),
      /SubmissionQuotaExceededException.*sending limit for printer@contoso\.com is reached/,
    );
    assert.ok(!b.logs.some((l) => l.includes('"message":"bounced"')), 'no bounce');
    assert.equal(exo.messages.length, 0);
  });
});

test('app-only with an expired client secret: needs-reauth saying so with AADSTS7000222, mail held, nothing leaks', {
  timeout: 60_000,
}, async () => {
  await withMs('app', async ({ ms, exo, b, send, clientId }) => {
    ms.expireSecret(clientId);
    const id = await send('copier', MAILBOX, 'expired@example.org');
    await waitFor(() => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id)), 15_000, 'held');
    assert.equal(b.bridge.tokens.state('m365'), 'needs-reauth');
    const why = b.bridge.tokens.status().find((s) => s.account === 'm365')?.lastError ?? '';
    assert.match(why, /AADSTS7000222/);
    assert.match(why, /secret/i);
    const row = await listed(b, id);
    assert.equal(row.state, 'held');
    assert.equal(row.reason, 'needs-reauth');
    assert.equal(exo.auths.length, 0, 'never reached Exchange');
    assert.ok(!b.logs.some((l) => l.includes('Xy8Q~')), 'the client secret is in no log line');
  });
});
