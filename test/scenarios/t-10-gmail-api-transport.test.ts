// transport gmail-api / auto end to end: a real bridge in front of the fake token endpoint,
// the fake Gmail API (HTTPS, bearer and scope checked) and the fake Gmail SMTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { GMAIL_SEND_SCOPE } from '../../src/fakes/tokenEndpoint.js';
import {
  startBridge,
  sendThroughBridge,
  message,
  CLI,
  secretsOf,
  assertNoSecrets,
  importToken,
  type RunningBridge,
} from '../helpers/bridge.js';
import { splitReceived } from '../helpers/received.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const FROM = 'scanner@example.com';

async function cli(b: RunningBridge, ...args: string[]): Promise<string> {
  const r = await run(process.execPath, [...CLI, ...args, '-c', b.configFile]);
  return r.stdout;
}

function logged(
  b: RunningBridge,
  message: string,
  match: (j: Record<string, unknown>) => boolean = () => true,
): Record<string, unknown> | undefined {
  for (const l of b.logs) {
    try {
      const j = JSON.parse(l) as Record<string, unknown>;
      if (j.message === message && match(j)) return j;
    } catch {
      /* not JSON */
    }
  }
  return undefined;
}

async function waitLogged(
  b: RunningBridge,
  message: string,
  match?: (j: Record<string, unknown>) => boolean,
  ms = 15_000,
): Promise<Record<string, unknown>> {
  try {
    await waitFor(() => logged(b, message, match) !== undefined, ms, `log line "${message}"`);
  } catch (e) {
    // What the bridge did instead (its logs are secret-free; the tests assert so).
    (e as Error).message += `\nlast log lines:\n${b.logs.slice(-40).join('\n')}`;
    throw e;
  }
  return logged(b, message, match)!;
}

async function send(b: RunningBridge, w: FakeWorld, to: string[], raw: Buffer): Promise<string> {
  const r = await sendThroughBridge({
    port: b.port,
    user: w.user.username,
    pass: w.user.password,
    from: FROM,
    to,
    raw,
  });
  const id = /queued as (\S+)/.exec(r.response)?.[1];
  assert.ok(id, r.response);
  return id;
}

async function withWorld(transport: 'gmail-api' | 'auto', fn: (w: FakeWorld) => Promise<void>): Promise<void> {
  const w = await startFakeWorld({ transport });
  try {
    await fn(w);
  } finally {
    await w.close();
  }
}

test(
  'gmail-api: sent with users.messages.send and a gmail.send-only token; after the Received: line the bytes are exactly what the client sent',
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      const b = await startBridge(w);
      try {
        const raw = Buffer.from(
          message({
            from: FROM,
            to: 'Alice <alice@example.org>',
            subject: 'Grüße',
            body: 'line one\r\n.leading dot\r\n\tтекст 8bit',
          }),
        );
        const id = await send(b, w, ['alice@example.org'], raw);
        await w.gmailApi!.waitForMessages(1);
        const got = w.gmailApi!.messages[0];
        assert.ok(splitReceived(got.raw, { id }).rest.equals(raw), 'bytes after the Received: line');
        assert.deepEqual(got.recipients, ['alice@example.org']);
        assert.deepEqual(got.bcc, []);
        assert.equal(got.user, FROM);
        // The grant asked for (and the token carries) only gmail.send: Gmail SMTP would refuse it.
        const refresh = w.tokens.requests.filter((r) => r.grantType === 'refresh_token' && r.ok);
        assert.ok(refresh.length >= 1);
        for (const r of refresh) assert.equal(r.scope, GMAIL_SEND_SCOPE);
        assert.equal(w.gmail.messages.length, 0, 'nothing over SMTP');
        const d = await waitLogged(b, 'delivered', (j) => j.id === id);
        assert.match(String(d.reply), /^200 gmail-api messages\.send ok id=/);
        assertNoSecrets(b.logs.join('\n'), secretsOf(w));
      } finally {
        await b.stop();
      }
    }),
);

test(
  'gmail-api: an envelope-only recipient is delivered through Bcc, which header recipients never see',
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      const b = await startBridge(w);
      try {
        const raw = message({ from: FROM, to: 'alice@example.org', subject: 'minutes' });
        // Alice's domain in another case is still Alice; hidden@ is only in the envelope.
        await send(b, w, ['alice@EXAMPLE.org', 'hidden@example.net'], raw);
        await w.gmailApi!.waitForMessages(1);
        const got = w.gmailApi!.messages[0];
        assert.deepEqual(got.bcc, ['hidden@example.net']);
        assert.deepEqual(got.recipients.sort(), ['alice@example.org', 'hidden@example.net']);
        // What recipients see: a Received: line, then exactly the client's bytes (no Bcc, no hidden@).
        assert.ok(splitReceived(got.visible).rest.equals(raw));
        assert.ok(!got.visible.toString('latin1').includes('hidden@example.net'));
        assert.match(got.raw.toString('latin1'), /^Bcc: <hidden@example\.net>\r\nReceived: /);
      } finally {
        await b.stop();
      }
    }),
);

test(
  'gmail-api: a header-only recipient is never sent to: held (transport) with the reason in queue list; after switching to auto, queue retry sends it over SMTP to exactly the envelope',
  { timeout: 90_000 },
  () =>
    withWorld('auto', async (w) => {
      // The grant has both scopes (as authorize asks for auto); the account starts on gmail-api.
      const cfg = bridgeConfig(w);
      const acct = (cfg.accounts as Record<string, unknown>[])[0];
      const b = await startBridge(w, { accounts: [{ ...acct, transport: 'gmail-api' }] });
      try {
        const raw = message({ from: FROM, to: 'alice@example.org, bob@example.org' });
        const id = await send(b, w, ['alice@example.org'], raw);
        const held = await waitLogged(b, 'held', (j) => j.id === id);
        assert.equal(held.reason, 'transport');
        const rows = JSON.parse(await cli(b, 'queue', 'list', '--json')) as Array<{
          id: string;
          state: string;
          reason: string;
          lastReply: string;
        }>;
        const row = rows.find((r) => r.id === id)!;
        assert.equal(row.state, 'held');
        assert.equal(row.reason, 'transport');
        assert.match(row.lastReply, /bob@example\.org.*not contain/);
        assert.equal(w.gmailApi!.requests.length, 0, 'the API was not called');
        assert.equal(w.gmail.messages.length, 0);

        await writeBridgeConfig(w, bridgeConfig(w)); // transport auto
        assert.equal(await b.bridge.reload(), true);
        assert.match(await cli(b, 'queue', 'retry', id), /scheduled for immediate retry/);
        await w.gmail.waitForMessages(1, 15_000);
        assert.deepEqual(w.gmail.messages[0].rcptTo, ['alice@example.org']);
        assert.ok(splitReceived(w.gmail.messages[0].raw, { id }).rest.equals(raw));
        await waitLogged(b, 'delivered', (j) => j.id === id);
        assert.equal(w.gmailApi!.messages.length, 0, 'bob was never sent to');
      } finally {
        await b.stop();
      }
    }),
);

test(
  'auto: a message the API can express goes through the API; one whose Cc names an address outside the envelope goes over SMTP',
  { timeout: 60_000 },
  () =>
    withWorld('auto', async (w) => {
      const b = await startBridge(w);
      try {
        await send(b, w, ['alice@example.org'], message({ from: FROM, to: 'alice@example.org', subject: 'api' }));
        await w.gmailApi!.waitForMessages(1);
        const split = Buffer.from(
          `From: ${FROM}\r\nTo: alice@example.org\r\nCc: carol@example.org\r\nSubject: split by an MTA\r\n\r\nhi\r\n`,
        );
        const id = await send(b, w, ['alice@example.org'], split);
        await w.gmail.waitForMessages(1, 15_000);
        assert.deepEqual(w.gmail.messages[0].rcptTo, ['alice@example.org']);
        assert.ok(splitReceived(w.gmail.messages[0].raw, { id }).rest.equals(split));
        assert.equal(w.gmailApi!.messages.length, 1);
      } finally {
        await b.stop();
      }
    }),
);

test('gmail-api: 429 rateLimitExceeded is deferred with backoff, then delivered once', { timeout: 60_000 }, () =>
  withWorld('gmail-api', async (w) => {
    const b = await startBridge(w);
    try {
      w.gmailApi!.failNext(1, 'rate429');
      const id = await send(b, w, ['alice@example.org'], message({ from: FROM, to: 'alice@example.org' }));
      const d = await waitLogged(b, 'deferred', (j) => j.id === id);
      assert.match(String(d.reply), /^429 RESOURCE_EXHAUSTED \(rateLimitExceeded\)/);
      await waitLogged(b, 'delivered', (j) => j.id === id);
      assert.equal(w.gmailApi!.messages.length, 1);
      assert.deepEqual(
        w.gmailApi!.requests.map((r) => r.status),
        [429, 200],
      );
      // The same metrics as over SMTP: one transient and one ok attempt, one recipient delivered.
      const m = await b.bridge.metrics.registry.metrics();
      assert.match(m, /xoauth2_bridge_upstream_replies_total\{account="office",class="transient"\} 1\n/);
      assert.match(m, /xoauth2_bridge_upstream_replies_total\{account="office",class="ok"\} 1\n/);
      assert.match(m, /xoauth2_bridge_recipients_delivered_total\{account="office"\} 1\n/);
    } finally {
      await b.stop();
    }
  }),
);

test(
  "gmail-api: Gmail's sending limit (429 Mail sending) holds the account's mail (quota), no bounce",
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      const b = await startBridge(w);
      try {
        w.gmailApi!.failNext(1, 'quota');
        const id = await send(b, w, ['alice@example.org'], message({ from: FROM, to: 'alice@example.org' }));
        const held = await waitLogged(b, 'held', (j) => j.id === id);
        assert.equal(held.reason, 'quota');
        assert.match(String(held.reply), /Mail sending/);
        const rows = JSON.parse(await cli(b, 'queue', 'list', '--json')) as Array<{
          id: string;
          state: string;
          reason: string;
        }>;
        assert.deepEqual(
          rows.map((r) => [r.id, r.state, r.reason]),
          [[id, 'held', 'quota']],
        );
        assert.equal(logged(b, 'bounced'), undefined);
        assert.equal(w.gmailApi!.messages.length, 0);
      } finally {
        await b.stop();
      }
    }),
);

test(
  'gmail-api: a 401 gets one fresh token and the message goes; two 401s turn the account needs-reauth and hold its mail',
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      const b = await startBridge(w);
      try {
        await send(b, w, ['a@example.org'], message({ from: FROM, to: 'a@example.org' }));
        await w.gmailApi!.waitForMessages(1);
        const refreshes = () => w.tokens.requests.filter((r) => r.grantType === 'refresh_token').length;
        const before = refreshes();
        w.tokens.expireAccessTokens(); // Google revoked the cached token early
        await send(b, w, ['b@example.org'], message({ from: FROM, to: 'b@example.org' }));
        await w.gmailApi!.waitForMessages(2);
        assert.equal(refreshes(), before + 1, 'exactly one forced refresh');
        assert.deepEqual(
          w.gmailApi!.requests.map((r) => r.status),
          [200, 401, 200],
        );

        w.gmailApi!.failNext(2, 'unauthorized');
        const id = await send(b, w, ['c@example.org'], message({ from: FROM, to: 'c@example.org' }));
        const held = await waitLogged(b, 'held', (j) => j.id === id);
        assert.equal(held.reason, 'needs-reauth');
        await waitFor(() => b.bridge.tokens.state('office') === 'needs-reauth', 5000, 'needs-reauth');
        assert.equal(w.gmailApi!.messages.length, 2);
      } finally {
        await b.stop();
      }
    }),
);

test(
  'gmail-api: 403 insufficient scope holds the account with the fix (authorize with gmail.send), nothing bounced',
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      // A grant without any send scope (someone consented to read-only access).
      const readOnly = '1//0gReadOnlyGrant' + Math.random().toString(36).slice(2);
      w.tokens.addRefreshToken(readOnly, {
        clientId: w.account.clientId,
        email: w.account.email,
        scope: 'https://www.googleapis.com/auth/gmail.readonly',
      });
      w.account.refreshToken = readOnly;
      const b = await startBridge(w);
      try {
        const id = await send(b, w, ['alice@example.org'], message({ from: FROM, to: 'alice@example.org' }));
        const d = await waitLogged(b, 'deferred', (j) => j.id === id);
        assert.match(
          String(d.reply),
          /^403 PERMISSION_DENIED \(insufficientPermissions, ACCESS_TOKEN_SCOPE_INSUFFICIENT\)/,
        );
        assert.match(
          String(d.reply),
          /held: the token lacks the gmail\.send scope: run xoauth2-bridge authorize office/,
        );
        await waitFor(
          () => b.logs.some((l) => l.includes('account office is held: the token lacks the gmail.send scope')),
          5000,
          'hold log line',
        );
        const rows = JSON.parse(await cli(b, 'queue', 'list', '--json')) as Array<{ id: string; lastReply: string }>;
        assert.match(
          rows.find((r) => r.id === id)!.lastReply,
          /gmail\.send scope: run xoauth2-bridge authorize office/,
        );
        assert.equal(logged(b, 'bounced'), undefined);
        assert.equal(w.gmailApi!.messages.length, 0);
      } finally {
        await b.stop();
      }
    }),
);

test(
  'gmail-api: 400 invalidArgument is permanent: the message fails and the sender gets a bounce',
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      const b = await startBridge(w);
      try {
        w.gmailApi!.failNext(1, 'invalid400');
        const id = await send(b, w, ['alice@example.org'], message({ from: FROM, to: 'alice@example.org' }));
        await waitLogged(b, 'bounced', (j) => j.id === id);
        // The bounce itself went through the API, to the sender only.
        await w.gmailApi!.waitForMessages(1);
        assert.deepEqual(w.gmailApi!.messages[0].recipients, [FROM]);
        assert.match(
          w.gmailApi!.messages[0].raw.toString('utf8'),
          /400 INVALID_ARGUMENT \(invalidArgument\): Invalid To header/,
        );
      } finally {
        await b.stop();
      }
    }),
);

test(
  'send-test through a gmail-api account: sent via the Gmail API with the gmail.send token',
  { timeout: 60_000 },
  () =>
    withWorld('gmail-api', async (w) => {
      const configFile = await writeBridgeConfig(w, bridgeConfig(w));
      importToken(configFile, w);
      const r = await run(process.execPath, [...CLI, 'send-test', '--to', 'ops@example.org', '-c', configFile]);
      assert.match(
        r.stdout,
        new RegExp(`^sent via ${w.gmailApi!.url} \\(Gmail API\\) as ${FROM}: ok 200 gmail-api messages\\.send ok id=`),
      );
      await w.gmailApi!.waitForMessages(1);
      assert.deepEqual(w.gmailApi!.messages[0].recipients, ['ops@example.org']);
      assert.equal(w.gmail.messages.length, 0);
    }),
);

test('demo --transport gmail-api relays one message through the fake Gmail API and says so', {
  timeout: 60_000,
}, async () => {
  const r = await run(process.execPath, [...CLI, 'demo', '--transport', 'gmail-api']);
  assert.match(r.stdout, /fake Gmail API received it:/);
  assert.match(r.stdout, /token scope https:\/\/www\.googleapis\.com\/auth\/gmail\.send \(Bearer/);
  assert.match(r.stdout, /a Received: header, then exactly what the printer sent/);
  assert.match(r.stdout, /spool after delivery: 0 message\(s\) left/);
});
