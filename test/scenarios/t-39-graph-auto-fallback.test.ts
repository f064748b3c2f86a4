// transport auto on an app-only Microsoft account: SMTP while Exchange takes it; when SMTP
// AUTH is refused for the mailbox (535 5.7.139), the message goes through Microsoft Graph with
// the app's Graph token, and so do the account's next messages (no SMTP AUTH tried meanwhile).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld, startFakeGraphTenant, type FakeWorld, type FakeGraphTenant } from '../../src/fakes/world.js';
import { FakeExchange } from '../../src/fakes/exchange.js';
import { startBridge, sendThroughBridge, message, type RunningBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const MAILBOX = 'printer@contoso.com';

async function withAuto(
  fn: (x: {
    w: FakeWorld;
    t: FakeGraphTenant;
    exo: FakeExchange;
    b: RunningBridge;
    send: (to: string) => Promise<void>;
  }) => Promise<void>,
  before: (t: FakeGraphTenant, exo: FakeExchange) => void = () => {},
): Promise<void> {
  const w = await startFakeWorld();
  const t = await startFakeGraphTenant(w, { mailbox: MAILBOX });
  const exo = await FakeExchange.start({ pki: w.pki, identity: t.identity });
  t.identity.allowMailbox(t.clientId, MAILBOX);
  before(t, exo);
  const acct = t.account('m365', 'app', {
    transport: 'auto',
    upstream: { host: 'localhost', port: exo.port, caFile: w.caFile, apiUrl: t.graph.url },
  });
  const b = await startBridge(
    w,
    {
      queue: { retry: ['300ms'] },
      accounts: [acct],
      users: [{ username: w.user.username, passwordHash: w.user.passwordHash, account: 'm365' }],
    },
    { importToken: false },
  );
  const send = async (to: string) =>
    void (await sendThroughBridge({
      port: b.port,
      user: w.user.username,
      pass: w.user.password,
      from: MAILBOX,
      to: [to],
      raw: message({ from: MAILBOX, to }),
    }));
  try {
    await fn({ w, t, exo, b, send });
  } finally {
    await b.stop();
    await exo.close();
    await t.close();
    await w.close();
  }
}

test('auto (Microsoft, app-only): SMTP while Exchange takes it; Graph is not used', { timeout: 60_000 }, () =>
  withAuto(async ({ t, exo, send }) => {
    await send('a@example.org');
    await waitFor(() => exo.messages.length === 1, 15_000, 'delivered over SMTP');
    assert.equal(t.graph.requests.length, 0);
  }),
);

test(
  'auto (Microsoft, app-only): SMTP AUTH disabled (5.7.139) sends through Graph, and the next message goes to Graph directly',
  { timeout: 60_000 },
  () =>
    withAuto(
      async ({ t, exo, b, send }) => {
        await send('a@example.org');
        await t.graph.waitForMessages(1, 15_000);
        assert.equal(t.graph.messages[0].caller, `app:${t.clientId}`, "with the app's Graph token");
        assert.equal(exo.messages.length, 0);
        assert.ok(
          b.logs.some((l) =>
            l.includes('Exchange refused SMTP AUTH for account m365; sending through Microsoft Graph'),
          ),
        );
        assert.ok(!b.logs.some((l) => l.includes('account m365 is held')), 'the account was not held');
        const auths = exo.auths.length;
        await send('b@example.org');
        await t.graph.waitForMessages(2, 15_000);
        assert.equal(exo.auths.length, auths, 'no SMTP AUTH tried for the second message');
      },
      (_t, exo) => exo.smtpAuthDisabled.add(MAILBOX),
    ),
);
