// transport auto on a Microsoft account: SMTP while Exchange takes it; when SMTP AUTH is
// refused for the mailbox (535 5.7.139; delegated: 5.7.3 for a fresh token too), the message goes through Microsoft Graph (app-only:
// the app's Graph token; delegated: a Graph token from the account's one refresh token), and
// so do the account's next messages (no SMTP AUTH tried meanwhile).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld, startFakeGraphTenant, type FakeWorld, type FakeGraphTenant } from '../../src/fakes/world.js';
import { FakeExchange } from '../../src/fakes/exchange.js';
import { startBridge, sendThroughBridge, message, type RunningBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';
import { TokenStore } from '../../src/oauth/store.js';

const MAILBOX = 'printer@contoso.com';

async function withAuto(
  fn: (x: {
    w: FakeWorld;
    t: FakeGraphTenant;
    exo: FakeExchange;
    b: RunningBridge;
    send: (to: string) => Promise<string>;
  }) => Promise<void>,
  before: (t: FakeGraphTenant, exo: FakeExchange) => void = () => {},
  /** Delegated: the scopes the imported grant was consented for. */
  delegated?: string[],
): Promise<void> {
  const w = await startFakeWorld();
  const t = await startFakeGraphTenant(w, { mailbox: MAILBOX });
  const exo = await FakeExchange.start({ pki: w.pki, identity: t.identity });
  t.identity.allowMailbox(t.clientId, MAILBOX);
  before(t, exo);
  const acct = t.account('m365', delegated ? 'user' : 'app', {
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
  if (delegated)
    await b.bridge.tokens.importRefreshToken('m365', t.identity.issueRefreshToken(t.clientId, MAILBOX, delegated));
  const send = async (to: string) => {
    const r = await sendThroughBridge({
      port: b.port,
      user: w.user.username,
      pass: w.user.password,
      from: MAILBOX,
      to: [to],
      raw: message({ from: MAILBOX, to }),
    });
    const id = /queued as (\S+)/.exec(r.response)?.[1];
    assert.ok(id, r.response);
    return id;
  };
  try {
    await fn({ w, t, exo, b, send });
  } finally {
    await b.stop();
    await exo.close();
    await t.close();
    await w.close();
  }
}

type Auto = Parameters<Parameters<typeof withAuto>[0]>[0];

/** One message to a@example.org reaches Graph as `caller`, never Exchange, and the switch is logged. */
async function sentThroughGraph({ t, exo, b, send }: Auto, caller: string, what?: string): Promise<void> {
  await send('a@example.org');
  await t.graph.waitForMessages(1, 15_000);
  assert.equal(t.graph.messages[0].caller, caller, what);
  assert.equal(exo.messages.length, 0);
  assert.ok(
    b.logs.some((l) => l.includes('Exchange refused SMTP AUTH for account m365; sending through Microsoft Graph')),
  );
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
      async (x) => {
        const { t, exo, b, send } = x;
        await sentThroughGraph(x, `app:${t.clientId}`, "with the app's Graph token");
        assert.ok(!b.logs.some((l) => l.includes('account m365 is held')), 'the account was not held');
        const auths = exo.auths.length;
        await send('b@example.org');
        await t.graph.waitForMessages(2, 15_000);
        assert.equal(exo.auths.length, auths, 'no SMTP AUTH tried for the second message');
      },
      (_t, exo) => exo.smtpAuthDisabled.add(MAILBOX),
    ),
);

/** Waits for account m365's needs-reauth line naming `what`, then for message `id` held for it; returns the line. */
async function heldForReauth(b: RunningBridge, id: string, what: string): Promise<string> {
  const line = () => b.logs.find((l) => l.includes('account m365 needs re-authorization') && l.includes(what));
  await waitFor(() => line() !== undefined, 15_000, `needs-reauth naming ${what}`);
  await waitFor(
    () => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('needs-reauth')),
    15_000,
    'the message is held for re-authorization',
  );
  return line()!;
}

const SMTP_SEND = 'https://outlook.office.com/SMTP.Send';
const GRAPH_SEND = 'https://graph.microsoft.com/Mail.Send';

test(
  'auto (Microsoft, delegated): SMTP AUTH disabled sends through Graph once with a Graph token from the same grant; the rotated refresh token is saved and SMTP refreshes go on',
  { timeout: 60_000 },
  () =>
    withAuto(
      async (x) => {
        const { t, exo, b, send } = x;
        await sentThroughGraph(x, MAILBOX, "with the user's delegated Graph token");
        assert.ok(
          exo.auths.some((a) => !a.ok && /5\.7\.139/.test(a.reply ?? '')),
          'SMTP AUTH was tried and refused',
        );
        // The next message goes to Graph directly; then a canary proves the first was sent once.
        await send('b@example.org');
        await t.graph.waitForMessages(2, 15_000);
        assert.deepEqual(
          t.graph.messages.map((m) => m.recipients.join(',')),
          ['a@example.org', 'b@example.org'],
          'each message reached Graph once',
        );
        const refreshes = t.identity.requests.filter((r) => r.grantType === 'refresh_token');
        assert.ok(refreshes.length >= 2, 'an SMTP and a Graph refresh');
        assert.equal(refreshes.filter((r) => !r.ok).length, 0, 'no refresh token was spent twice');
        const stored = async () =>
          (await new TokenStore({ stateDir: b.bridge.config.stateDir, key: null }).load()).accounts.m365;
        const before = (await stored())?.refreshToken;
        await b.bridge.tokens.refresh('m365');
        const after = (await stored())?.refreshToken;
        assert.ok(
          before && after && before !== after,
          'the SMTP refresh spent the saved rotated token and saved the next',
        );
        assert.equal(t.identity.requests.filter((r) => !r.ok).length, 0);
      },
      (_t, exo) => exo.smtpAuthDisabled.add(MAILBOX),
      [SMTP_SEND, GRAPH_SEND],
    ),
);

test(
  'auto (Microsoft, delegated): a fresh token refused with 535 5.7.3 too sends through Graph, not needs-reauth',
  { timeout: 60_000 },
  () =>
    withAuto(
      async (x) => {
        const { exo, b } = x;
        await sentThroughGraph(x, MAILBOX);
        assert.equal(
          exo.auths.filter((a) => !a.ok && /5\.7\.3\b/.test(a.reply ?? '')).length,
          2,
          'SMTP AUTH refused twice: the first token, then a fresh one',
        );
        assert.equal(b.bridge.tokens.state('m365'), 'ok', 'the grant is not marked needs-reauth');
      },
      (_t, exo) => exo.refuseTokens.add(MAILBOX),
      [SMTP_SEND, GRAPH_SEND],
    ),
);

test(
  'auto (Microsoft, delegated): a grant without Graph consent holds the mail as needs-reauth naming Mail.Send; nothing is delivered',
  { timeout: 60_000 },
  () =>
    withAuto(
      async ({ t, exo, b, send }) => {
        const id = await send('a@example.org');
        assert.match(await heldForReauth(b, id, GRAPH_SEND), /AADSTS65001/);
        assert.equal(b.bridge.tokens.state('m365'), 'needs-reauth');
        assert.match(b.bridge.tokens.status().find((s) => s.account === 'm365')?.lastError ?? '', /Mail\.Send/);
        assert.equal(exo.messages.length, 0);
        assert.equal(t.graph.requests.length, 0, 'Graph was never called without a token');
        assert.equal(t.graph.messages.length, 0);
      },
      (_t, exo) => exo.smtpAuthDisabled.add(MAILBOX),
      [SMTP_SEND],
    ),
);

test(
  'auto (Microsoft, app-only): the client secret expires before the Graph token is asked for: needs-reauth naming AADSTS7000222, the mail held, not bounced',
  { timeout: 60_000 },
  () =>
    withAuto(
      async ({ t, exo, b, send }) => {
        const id = await send('a@example.org');
        await heldForReauth(b, id, 'AADSTS7000222');
        assert.equal(b.bridge.tokens.state('m365'), 'needs-reauth', 'the account is held, not only this message');
        assert.match(b.bridge.tokens.status().find((s) => s.account === 'm365')?.lastError ?? '', /AADSTS7000222/);
        assert.ok(
          exo.auths.some((a) => !a.ok && /5\.7\.139/.test(a.reply ?? '')),
          'SMTP AUTH was tried first and refused',
        );
        assert.ok(!b.logs.some((l) => l.includes('"message":"bounced"')), 'nothing bounced');
        assert.equal(t.graph.requests.length, 0, 'Graph was never called without a token');
        assert.equal(exo.messages.length + t.graph.messages.length, 0);
        assert.ok(!b.logs.some((l) => l.includes(t.secret)), 'the client secret is in no log line');
        // The Graph token request is a refresh like any other: counted, the SMTP one and the failed Graph one.
        const refreshes = async (result: string) =>
          Number(
            (await b.bridge.metrics.registry.metrics())
              .split('\n')
              .find((l) => l.startsWith('xoauth2_bridge_token_refreshes_total{') && l.includes(`result="${result}"`))
              ?.split(' ')
              .pop() ?? 0,
          );
        assert.deepEqual([await refreshes('ok'), await refreshes('error')], [1, 1]);
      },
      (t, exo) => {
        exo.smtpAuthDisabled.add(MAILBOX);
        // The SMTP token is the last one the secret buys: the Graph token request finds it expired.
        const expire = (r: { grantType: string; ok: boolean }) => {
          if (r.grantType !== 'client_credentials' || !r.ok) return;
          t.identity.expireSecret(t.clientId);
          t.identity.off('request', expire);
        };
        t.identity.on('request', expire);
      },
    ),
);
