// mailbox: on an app-only Microsoft account over SMTP: Exchange takes the shared mailbox as
// the XOAUTH2 user (the app's service principal has rights on it), and allowedSenders keeps
// judging the From.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeWorld } from '../../src/fakes/world.js';
import { FakeMicrosoftIdentity } from '../../src/fakes/microsoftIdentity.js';
import { FakeExchange } from '../../src/fakes/exchange.js';
import { startBridge, sendThroughBridge, message } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

test('app-only SMTP with mailbox: the XOAUTH2 user is the shared mailbox; a From outside allowedSenders is refused', {
  timeout: 60_000,
}, async () => {
  const world = await startFakeWorld();
  const ms = await FakeMicrosoftIdentity.start({ pki: world.pki });
  const exo = await FakeExchange.start({ pki: world.pki, identity: ms });
  const clientId = '00000000-aaaa-bbbb-cccc-000000000777';
  const secret = `Xy8Q~${Math.random().toString(36).slice(2)}`;
  ms.registerApp(clientId, secret);
  // The service principal has rights on the shared mailbox only, not on the account's email.
  ms.allowMailbox(clientId, 'info@contoso.com');
  const b = await startBridge(
    world,
    {
      queue: { retry: ['300ms'] },
      accounts: [
        {
          name: 'm365',
          provider: 'microsoft',
          email: 'printer@contoso.com',
          mailbox: 'info@contoso.com',
          oauth: ms.accountOAuth('app', clientId, { clientSecret: secret }, world.caFile),
          upstream: { host: 'localhost', port: exo.port, caFile: world.caFile },
        },
      ],
      users: [
        {
          username: 'copier',
          passwordHash: world.user.passwordHash,
          account: 'm365',
          allowedSenders: ['info@contoso.com'],
        },
      ],
    },
    { importToken: false },
  );
  try {
    const from = 'info@contoso.com';
    await sendThroughBridge({
      port: b.port,
      user: 'copier',
      pass: world.user.password,
      from,
      to: ['a@example.org'],
      raw: message({ from, to: 'a@example.org' }),
    });
    await waitFor(() => exo.messages.length === 1, 15_000, 'delivered over SMTP');
    assert.equal(exo.messages[0].authUser, 'info@contoso.com');
    await assert.rejects(
      sendThroughBridge({
        port: b.port,
        user: 'copier',
        pass: world.user.password,
        from: 'ceo@contoso.com',
        to: ['a@example.org'],
        raw: message({ from: 'ceo@contoso.com', to: 'a@example.org' }),
      }),
      /5\.7\.1|553|550/,
    );
  } finally {
    await b.stop();
    await exo.close();
    await ms.close();
    await world.close();
  }
});
