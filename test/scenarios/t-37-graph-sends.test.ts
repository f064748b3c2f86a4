// transport graph end to end: a real bridge (real SMTP in) in front of the fake Microsoft
// identity platform and the fake Microsoft Graph (HTTPS; token audience, scp/roles, access
// policy, mailbox, 4 MB limit, per-mailbox concurrency and Retry-After checked there).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startFakeWorld, startFakeGraphTenant, type FakeWorld, type FakeGraphTenant } from '../../src/fakes/world.js';
import { GRAPH_SEND_SCOPE } from '../../src/providers/microsoft/clouds.js';
import { headerValues } from '../../src/listener/filter.js';
import {
  startBridge,
  sendThroughBridge,
  message,
  CLI,
  assertNoSecrets,
  type RunningBridge,
} from '../helpers/bridge.js';
import { splitReceived } from '../helpers/received.js';
import { waitFor } from '../helpers/wait.js';
import { RawSmtp } from '../helpers/listener.js';

const run = promisify(execFile);
const MAILBOX = 'printer@contoso.com';

type Ctx = {
  w: FakeWorld;
  t: FakeGraphTenant;
  b: RunningBridge;
  send: (to: string[], raw?: Buffer, from?: string) => Promise<string>;
};

function logged(
  b: RunningBridge,
  msg: string,
  match: (j: Record<string, unknown>) => boolean = () => true,
): Record<string, unknown> | undefined {
  for (const l of b.logs) {
    try {
      const j = JSON.parse(l) as Record<string, unknown>;
      if (j.message === msg && match(j)) return j;
    } catch {
      /* not JSON */
    }
  }
  return undefined;
}

async function waitLogged(
  b: RunningBridge,
  msg: string,
  match?: (j: Record<string, unknown>) => boolean,
  ms = 20_000,
): Promise<Record<string, unknown>> {
  await waitFor(() => logged(b, msg, match) !== undefined, ms, `log line "${msg}"`);
  return logged(b, msg, match)!;
}

async function withGraph(
  type: 'user' | 'app',
  fn: (x: Ctx) => Promise<void>,
  opts: {
    account?: Record<string, unknown> | ((t: FakeGraphTenant, w: FakeWorld) => Record<string, unknown>);
    queue?: Record<string, unknown>;
    allowedSenders?: string[];
    before?: (t: FakeGraphTenant) => void;
    listeners?: Record<string, unknown>[];
  } = {},
): Promise<void> {
  const w = await startFakeWorld();
  const t = await startFakeGraphTenant(w, { mailbox: MAILBOX });
  opts.before?.(t);
  let b: RunningBridge | undefined;
  try {
    b = await startBridge(
      w,
      {
        queue: { retry: ['300ms'], ...opts.queue },
        ...(opts.listeners ? { listeners: opts.listeners } : {}),
        accounts: [t.account('m365', type, typeof opts.account === 'function' ? opts.account(t, w) : opts.account)],
        users: [
          {
            username: w.user.username,
            passwordHash: w.user.passwordHash,
            account: 'm365',
            ...(opts.allowedSenders ? { allowedSenders: opts.allowedSenders } : {}),
          },
        ],
      },
      { importToken: false },
    );
    if (type === 'user')
      await b.bridge.tokens.importRefreshToken(
        'm365',
        t.identity.issueRefreshToken(t.clientId, MAILBOX, [GRAPH_SEND_SCOPE]),
      );
    const bb = b;
    const send = async (to: string[], raw?: Buffer, from = MAILBOX) => {
      const r = await sendThroughBridge({
        port: bb.port,
        user: w.user.username,
        pass: w.user.password,
        from,
        to,
        raw: raw ?? message({ from, to: to.join(', ') }),
      });
      const id = /queued as (\S+)/.exec(r.response)?.[1];
      assert.ok(id, r.response);
      return id;
    };
    await fn({ w, t, b, send });
    assertNoSecrets(b.logs.join('\n'), [t.secret, w.user.password]);
  } finally {
    await b?.stop();
    await t.close();
    await w.close();
  }
}

test(
  "graph, delegated: sendMail with base64 MIME and a Graph Mail.Send token; after the Received: line the bytes are exactly the client's",
  { timeout: 60_000 },
  () =>
    withGraph('user', async ({ t, b, send }) => {
      const raw = Buffer.from(
        message({
          from: MAILBOX,
          to: 'Alice <alice@example.org>',
          subject: 'Grüße',
          body: 'line one\r\n.leading dot\r\n\tтекст 8bit',
        }),
      );
      const id = await send(['alice@example.org'], raw);
      await t.graph.waitForMessages(1, 15_000);
      const m = t.graph.messages[0];
      assert.equal(m.caller, MAILBOX, 'the delegated token speaks for the mailbox');
      assert.equal(m.mailbox, MAILBOX);
      assert.deepEqual(m.recipients, ['alice@example.org']);
      assert.ok(splitReceived(m.raw).rest.equals(raw), 'byte-exact after Received:');
      const req = t.graph.sendMailRequests()[0];
      assert.equal(req.path, `/v1.0/users/${encodeURIComponent(MAILBOX)}/sendMail`);
      assert.equal(req.bytes, 4 * Math.ceil(m.raw.length / 3), 'the body was base64 of the message');
      await waitLogged(b, 'delivered', (j) => j.id === id);
      // The token asked for Graph's delegated scope, not SMTP's (one resource per token).
      assert.ok(t.identity.requests.some((r) => r.grantType === 'refresh_token' && r.ok));
    }),
);

test(
  'graph, app-only: client credentials for https://graph.microsoft.com/.default with the Mail.Send role',
  { timeout: 60_000 },
  () =>
    withGraph('app', async ({ t, send }) => {
      await send(['bob@example.org']);
      await t.graph.waitForMessages(1, 15_000);
      assert.equal(t.graph.messages[0].caller, `app:${t.clientId}`);
      assert.ok(t.identity.requests.some((r) => r.grantType === 'client_credentials' && r.ok));
    }),
);

test('graph: an envelope-only recipient goes as Bcc; the others never see it', { timeout: 60_000 }, () =>
  withGraph('user', async ({ t, send }) => {
    const raw = message({ from: MAILBOX, to: 'Alice <alice@example.org>' });
    await send(['alice@example.org', 'hidden@example.net'], raw);
    await t.graph.waitForMessages(1, 15_000);
    const m = t.graph.messages[0];
    assert.deepEqual(m.recipients.sort(), ['alice@example.org', 'hidden@example.net']);
    assert.deepEqual(m.bcc, ['hidden@example.net']);
    const visible = m.visible.toString('utf8');
    const header = visible.slice(0, visible.indexOf('\r\n\r\n') + 2);
    assert.deepEqual(headerValues(header, 'bcc'), [], 'no Bcc field in what recipients see');
    assert.ok(!visible.includes('hidden@example.net'), 'the Bcc address is nowhere in the delivered copy');
    assert.deepEqual(
      headerValues(header, 'to').map((v) => v.trim()),
      ['Alice <alice@example.org>'],
    );
    // After our Bcc field and Received: line, the client's bytes are untouched.
    const afterBcc = m.raw.subarray(m.raw.indexOf('Received:'));
    assert.ok(splitReceived(afterBcc).rest.equals(raw));
  }),
);

test(
  'graph: a header recipient outside the envelope holds the message (reason transport); nothing is sent',
  { timeout: 60_000 },
  () =>
    withGraph('user', async ({ t, b, send }) => {
      const id = await send(
        ['alice@example.org'],
        message({ from: MAILBOX, to: 'alice@example.org, split-off@example.org' }),
      );
      const held = await waitLogged(b, 'held', (j) => j.id === id);
      assert.equal(held.reason, 'transport');
      assert.match(String(held.reply), /Microsoft Graph would also send to split-off@example\.org/);
      // Canary: a later message is delivered, so the held one had its chance.
      await send(['c@example.org']);
      await t.graph.waitForMessages(1, 15_000);
      assert.deepEqual(
        t.graph.messages.map((m) => m.recipients),
        [['c@example.org']],
      );
    }),
);

test(
  'graph: a 429 storm is respected: no request for the mailbox before Retry-After, from any message',
  { timeout: 60_000 },
  () =>
    withGraph('user', async ({ t, b, send }) => {
      t.graph.storm(3, 1);
      const first = await send(['storm@example.org']);
      await waitFor(() => t.graph.sendMailRequests().length >= 1, 15_000, 'the first 429');
      // Two more messages for the same mailbox arrive while Graph has asked us to wait.
      const more = [await send(['two@example.org']), await send(['three@example.org'])];
      await t.graph.waitForMessages(3, 30_000);
      for (const id of [first, ...more]) await waitLogged(b, 'delivered', (j) => j.id === id);
      const reqs = t.graph.sendMailRequests();
      assert.deepEqual(reqs.map((r) => r.status).slice(0, 3), [429, 429, 429]);
      assert.equal(reqs.length, 6, 'three 429s, then one request per message');
      // queue.retry is 300 ms: only Retry-After (1 s) explains the gaps after each 429.
      for (let i = 1; i < reqs.length; i++) {
        const last429 = reqs
          .slice(0, i)
          .filter((r) => r.status === 429)
          .at(-1)!;
        assert.ok(
          reqs[i].at - last429.at >= 950,
          `request ${i} came ${reqs[i].at - last429.at} ms after a 429 with Retry-After: 1`,
        );
      }
      const d = await waitLogged(b, 'deferred', (j) => j.id === first);
      assert.ok(Number(d.retryIn) >= 950, `retryIn ${String(d.retryIn)}`);
    }),
);

for (const kind of ['unavailable503', 'gateway504'] as const)
  test(`graph: ${kind} defers honouring Retry-After, then delivered`, { timeout: 60_000 }, () =>
    withGraph('user', async ({ t, b, send }) => {
      t.graph.failNext(1, kind, 1);
      const id = await send(['x@example.org']);
      const d = await waitLogged(b, 'deferred', (j) => j.id === id);
      assert.match(String(d.reply), kind === 'unavailable503' ? /^503 ServiceUnavailable/ : /^504 /);
      assert.ok(Number(d.retryIn) >= 950);
      await t.graph.waitForMessages(1, 15_000);
      const reqs = t.graph.sendMailRequests();
      assert.ok(reqs[1].at - reqs[0].at >= 950);
    }),
  );

test(
  'graph: a 401 gets one fresh token and the message goes; two 401s make the account needs-reauth',
  { timeout: 60_000 },
  () =>
    withGraph('user', async ({ t, b, send }) => {
      t.graph.failNext(1, 'unauthorized');
      await send(['a@example.org']);
      await t.graph.waitForMessages(1, 15_000);
      assert.deepEqual(
        t.graph.sendMailRequests().map((r) => r.status),
        [401, 202],
      );
      t.graph.failNext(2, 'unauthorized');
      const id = await send(['b@example.org']);
      const held = await waitLogged(b, 'held', (j) => j.id === id);
      assert.equal(held.reason, 'needs-reauth');
      await waitFor(() => b.bridge.tokens.state('m365') === 'needs-reauth', 5000, 'needs-reauth');
      assert.equal(t.graph.messages.length, 1);
    }),
);

test(
  'graph, app-only: 403 ErrorAccessDenied from an application access policy holds the mail with the exact fix',
  { timeout: 60_000 },
  () =>
    withGraph(
      'app',
      async ({ t, b, send }) => {
        const id = await send(['a@example.org']);
        const d = await waitLogged(b, 'deferred', (j) => j.id === id);
        assert.match(String(d.reply), /^403 ErrorAccessDenied: Access to OData is disabled: \[RAOP\]/);
        assert.match(
          String(d.reply),
          new RegExp(
            `New-ApplicationAccessPolicy -AppId ${t.clientId} -PolicyScopeGroupId \\S+ -AccessRight RestrictAccess`,
          ),
        );
        assert.match(String(d.reply), /New-ManagementRoleAssignment -App \S+ -Role "Application Mail\.Send"/);
        await waitFor(
          () => b.logs.some((l) => l.includes('account m365 is held: Microsoft Graph refused app')),
          5000,
          'hold log line',
        );
        assert.equal(logged(b, 'bounced'), undefined);
        assert.equal(t.graph.messages.length, 0);
      },
      { before: (t) => t.graph.restrictApp(t.clientId, ['someone-else@contoso.com']) },
    ),
);

test('graph: ErrorSendAsDenied fails the message with the send-as reason', { timeout: 60_000 }, () =>
  withGraph(
    'user',
    async ({ b, send }) => {
      const id = await send(
        ['a@example.org'],
        message({ from: 'ceo@contoso.com', to: 'a@example.org' }),
        'ceo@contoso.com',
      );
      const bounced = await waitLogged(b, 'bounced', (j) => j.id === id);
      assert.match(
        String(bounced.reply),
        /403 ErrorSendAsDenied.*may not send as this message's From: grant it Send As/,
      );
    },
    { allowedSenders: [MAILBOX, 'ceo@contoso.com'] },
  ),
);

for (const [kind, pattern] of [
  ['notRestEnabled', /MailboxNotEnabledForRESTAPI.*not enabled for the Graph REST API/],
  ['unknown mailbox', /ErrorInvalidUser.*does not know the mailbox nobody@contoso\.com/],
] as const)
  test(`graph: ${kind} holds the account's mail with the reason`, { timeout: 60_000 }, () =>
    withGraph(
      'app',
      async ({ t, b, send }) => {
        if (kind === 'notRestEnabled') t.graph.failNext(1, 'notRestEnabled');
        const id = await send(
          ['a@example.org'],
          message({ from: kind === 'notRestEnabled' ? MAILBOX : 'nobody@contoso.com', to: 'a@example.org' }),
          kind === 'notRestEnabled' ? MAILBOX : 'nobody@contoso.com',
        );
        const d = await waitLogged(b, 'deferred', (j) => j.id === id);
        assert.match(String(d.reply), pattern);
        await waitFor(() => b.logs.some((l) => l.includes('account m365 is held')), 5000, 'hold log line');
        assert.equal(logged(b, 'bounced'), undefined);
        assert.equal(t.graph.messages.length, 0);
      },
      kind === 'unknown mailbox' ? { account: { email: 'nobody@contoso.com' } } : {},
    ),
  );

test('graph: 400 ErrorInvalidRecipients bounces that recipient; the others are delivered', { timeout: 60_000 }, () =>
  withGraph('user', async ({ t, b, send }) => {
    t.graph.invalidRecipients.add('ghost@example.net');
    const id = await send(
      ['alice@example.org', 'ghost@example.net'],
      message({ from: MAILBOX, to: 'alice@example.org' }),
    );
    const bounced = await waitLogged(b, 'bounced', (j) => j.id === id);
    assert.match(String(bounced.reply), /ErrorInvalidRecipients.*ghost@example\.net/);
    await waitLogged(b, 'delivered', (j) => j.id === id);
    const toAlice = t.graph.messages.find((m) => m.recipients.includes('alice@example.org'));
    assert.ok(toAlice);
    assert.deepEqual(toAlice.recipients, ['alice@example.org'], 'sent again without the refused recipient');
  }),
);

for (const kind of ['quota', 'messageLimit'] as const)
  test(
    `graph: ${kind === 'quota' ? 'ErrorQuotaExceeded' : 'ErrorExceededMessageLimit'} is a quota hold`,
    { timeout: 60_000 },
    () =>
      withGraph('user', async ({ t, b, send }) => {
        t.graph.failNext(1, kind);
        const id = await send(['a@example.org']);
        const held = await waitLogged(b, 'held', (j) => j.id === id);
        assert.equal(held.reason, 'quota');
        assert.match(String(held.reply), kind === 'quota' ? /ErrorQuotaExceeded/ : /ErrorExceededMessageLimit/);
        assert.equal(logged(b, 'bounced'), undefined);
      }),
  );

test(
  'graph: at most 4 requests per mailbox at once, kept by the transport (no MailboxConcurrency 429)',
  { timeout: 90_000 },
  () =>
    withGraph(
      'app',
      async ({ t, send }) => {
        t.graph.delayMs = 300;
        await Promise.all(Array.from({ length: 10 }, (_, i) => send([`r${i}@example.org`])));
        await t.graph.waitForMessages(10, 60_000);
        const max = t.graph.maxConcurrent.get(MAILBOX)!;
        assert.ok(max <= 4, `max concurrent ${max}`);
        assert.ok(max >= 2, `the queue's concurrency (8) was in use: max ${max}`);
        assert.deepEqual(
          t.graph.sendMailRequests().filter((r) => r.status !== 202),
          [],
          'no refusals',
        );
      },
      { queue: { concurrency: 8 } },
    ),
);

test(
  'graph: a message the listener took that our Received: line puts over the 4 MB sendMail limit (as base64) bounces naming the limit',
  { timeout: 60_000 },
  () =>
    withGraph('user', async ({ t, b, send }) => {
      // 10 bytes under the 3 MiB the listener lets through (4 MB as base64); the Received: line adds more.
      const head = message({ from: MAILBOX, to: 'a@example.org', body: '' });
      const fill = 3 * 1024 * 1024 - 10 - head.length;
      const line = 'x'.repeat(998) + '\r\n';
      const tail = 'y'.repeat((fill % 1000) + 998) + '\r\n'; // under 2 KB: the bridge does not police line length
      const raw = Buffer.concat([head, Buffer.from(line.repeat(Math.floor(fill / 1000) - 1) + tail)]);
      assert.equal(raw.length, 3 * 1024 * 1024 - 10);
      const id = await send(['a@example.org'], raw);
      const bounced = await waitLogged(b, 'bounced', (j) => j.id === id);
      assert.match(String(bounced.reply), /552 5\.3\.4 .* over Microsoft Graph's sendMail limit of 4194304 bytes/);
      assert.equal(t.graph.sendMailRequests().filter((r) => r.bytes > 4194304).length, 0, 'never sent over the limit');
    }),
);

test(
  'graph without largeMessages: a message over the sendMail limit gets 552 at end of DATA (and at MAIL FROM with SIZE=), nothing spooled',
  { timeout: 90_000 },
  () =>
    withGraph('user', async ({ w, t, b, send }) => {
      const line = 'x'.repeat(998) + '\r\n';
      // 5 MB: over the 4 MB request as base64 and as MIME.
      const big = message({ from: MAILBOX, to: 'a@example.org', body: line.repeat(5000) });
      await assert.rejects(send(['a@example.org'], big), (err: Error) => {
        assert.match(err.message, /552 5\.3\.4 .*Microsoft Graph sendMail limit 3145728 bytes.*largeMessages/);
        return true;
      });
      assert.deepEqual(await b.bridge.spool.list(), [], 'nothing spooled');
      // The client announced the size: refused at MAIL FROM, before any DATA.
      const s = await RawSmtp.connect(b.port);
      assert.equal((await s.cmd('EHLO client.example')).code, 250);
      assert.equal((await s.authPlain(w.user.username, w.user.password)).code, 235);
      const mail = await s.cmd(`MAIL FROM:<${MAILBOX}> SIZE=${5 * 1024 * 1024}`);
      assert.equal(mail.code, 552, mail.text);
      assert.match(mail.text, /^5\.3\.4 .*Microsoft Graph sendMail limit 3145728 bytes/);
      // Under the limit the same session goes on.
      assert.equal((await s.cmd(`MAIL FROM:<${MAILBOX}> SIZE=1000`)).code, 250);
      await s.cmd('QUIT');
      // A 1 MB message still goes through, and it is the only thing the fake Graph got.
      const id = await send(
        ['a@example.org'],
        message({ from: MAILBOX, to: 'a@example.org', body: line.repeat(1000) }),
      );
      await waitLogged(b, 'delivered', (j) => j.id === id);
      assert.equal(t.graph.sendMailRequests().length, 1, 'the fake Graph got only the 1 MB message');
      assert.ok(logged(b, 'message too big'), 'the refusal is logged');
    }),
);

test(
  'graph with largeMessages: the listener takes a 5 MB message (the limit is 150 MB); SIZE= over 150 MB is refused',
  { timeout: 60_000 },
  () =>
    withGraph(
      'user',
      async ({ w, b }) => {
        const s = await RawSmtp.connect(b.port);
        assert.equal((await s.cmd('EHLO client.example')).code, 250);
        assert.equal((await s.authPlain(w.user.username, w.user.password)).code, 235);
        assert.equal((await s.cmd(`MAIL FROM:<${MAILBOX}> SIZE=${5 * 1024 * 1024}`)).code, 250);
        await s.cmd('RSET');
        const over = await s.cmd(`MAIL FROM:<${MAILBOX}> SIZE=${150 * 1024 * 1024 + 1}`);
        assert.equal(over.code, 552, over.text);
        assert.match(over.text, /^5\.3\.4 .*157286400 bytes/);
        await s.cmd('QUIT');
      },
      {
        account: (t, w) => ({ upstream: { apiUrl: t.graph.url, caFile: w.caFile, largeMessages: true } }),
        listeners: [{ name: 'local', host: '127.0.0.1', port: 0, tls: 'none', maxMessageSize: 200 * 1024 * 1024 }],
      },
    ),
);

test(
  'graph: mailbox: sends from a shared mailbox through /users/{mailbox}/sendMail; allowedSenders still judges the From',
  { timeout: 60_000 },
  () =>
    withGraph(
      'app',
      async ({ t, b, send }) => {
        await send(['a@example.org'], message({ from: 'info@contoso.com', to: 'a@example.org' }), 'info@contoso.com');
        await t.graph.waitForMessages(1, 15_000);
        assert.equal(t.graph.messages[0].mailbox, 'info@contoso.com');
        assert.equal(
          t.graph.sendMailRequests()[0].path,
          `/v1.0/users/${encodeURIComponent('info@contoso.com')}/sendMail`,
        );
        assert.match(
          b.bridge.upstream.describe('m365'),
          /\/v1\.0\/users\/info@contoso\.com\/sendMail \(Microsoft Graph\)/,
        );
        // A From outside allowedSenders is refused at DATA, as for every transport.
        await assert.rejects(
          send(['a@example.org'], message({ from: 'ceo@contoso.com', to: 'a@example.org' }), 'ceo@contoso.com'),
          /553|550|5\.7\.1/,
        );
      },
      {
        account: { mailbox: 'info@contoso.com' },
        allowedSenders: ['info@contoso.com'],
        before: (t) => t.graph.addMailbox('info@contoso.com'),
      },
    ),
);

test('demo --provider microsoft --transport graph relays one message through the fake Graph and prints its arrival', {
  timeout: 60_000,
}, async () => {
  const r = await run(process.execPath, [...CLI, 'demo', '--provider', 'microsoft', '--transport', 'graph']);
  assert.match(r.stdout, /fake Microsoft Graph received it:/);
  assert.match(
    r.stdout,
    /authenticated as {4}printer@contoso\.com, token audience https:\/\/graph\.microsoft\.com, scp Mail\.Send/,
  );
  assert.match(r.stdout, /a Received: header, then exactly what the printer sent/);
  assert.match(r.stdout, /spool after delivery: 0 message\(s\) left/);
});
