// Microsoft 365 end to end: the bridge relays through the fake Exchange Online (587
// STARTTLS, XOAUTH2) with tokens from the fake Microsoft identity platform, next to a
// Google account in the same daemon; 535 5.7.139 holds the account's mail with the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startFakeWorld, type FakeWorld } from '../src/fakes/world.js';
import { FakeMicrosoftIdentity } from '../src/fakes/microsoftIdentity.js';
import { FakeExchange } from '../src/fakes/exchange.js';
import { startBridge, sendThroughBridge, message, CLI, type RunningBridge } from './helpers/bridge.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);
const MAILBOX = 'printer@contoso.com';

async function withMs(type: 'user' | 'app', fn: (x: { world: FakeWorld; ms: FakeMicrosoftIdentity; exo: FakeExchange; b: RunningBridge; send: (user: string, from: string, to: string) => Promise<string> }) => Promise<void>): Promise<void> {
  const world = await startFakeWorld();
  const ms = await FakeMicrosoftIdentity.start({ pki: world.pki });
  const exo = await FakeExchange.start({ pki: world.pki, identity: ms });
  const clientId = '00000000-aaaa-bbbb-cccc-000000000001';
  const secret = `Xy8Q~${Math.random().toString(36).slice(2)}`;
  ms.registerApp(clientId, secret);
  if (type === 'app') ms.allowMailbox(clientId, MAILBOX);
  const b = await startBridge(world, {
    queue: { retry: ['300ms'] },
    accounts: [
      { name: world.account.name, email: world.account.email, oauth: { type: 'user', clientId: world.account.clientId, clientSecret: world.account.clientSecret, tokenUrl: world.tokens.url, caFile: world.caFile }, upstream: { host: 'localhost', port: world.gmail.port, tls: world.gmail.mode, caFile: world.caFile } },
      { name: 'm365', provider: 'microsoft', email: MAILBOX, oauth: { type, tenant: ms.tenant, authorityHost: ms.authorityHost, clientId, clientSecret: secret, caFile: world.caFile }, upstream: { host: 'localhost', port: exo.port, caFile: world.caFile } },
    ],
    users: [
      { username: world.user.username, passwordHash: world.user.passwordHash, account: world.account.name },
      { username: 'copier', passwordHash: world.user.passwordHash, account: 'm365' },
    ],
  });
  if (type === 'user') await b.bridge.tokens.importRefreshToken('m365', ms.issueRefreshToken(clientId, MAILBOX));
  const send = async (user: string, from: string, to: string) =>
    (await sendThroughBridge({ port: b.port, user, pass: world.user.password, from, to: [to], raw: message({ from, to }) })).response.split(' ').pop()!;
  try {
    await fn({ world, ms, exo, b, send });
  } finally {
    await b.stop();
    await exo.close();
    await ms.close();
    await world.close();
  }
}

test('delegated Microsoft account and a Google account in one daemon: each user relays through its own', { timeout: 60_000 }, async () => {
  await withMs('user', async ({ world, exo, send }) => {
    await send('copier', MAILBOX, 'to-ms@example.org');
    await send(world.user.username, world.account.email, 'to-google@example.org');
    await waitFor(() => exo.messages.length === 1 && world.gmail.messages.length === 1, 15_000, 'one message at each provider');
    assert.deepEqual(exo.messages[0].rcptTo, ['to-ms@example.org']);
    assert.equal(exo.messages[0].authUser, MAILBOX);
    assert.deepEqual(world.gmail.messages[0].rcptTo, ['to-google@example.org']);
  });
});

test('app-only Microsoft account relays; 535 5.7.139 holds its mail and queue list says why', { timeout: 60_000 }, async () => {
  await withMs('app', async ({ exo, b, send }) => {
    await send('copier', MAILBOX, 'first@example.org');
    await waitFor(() => exo.messages.length === 1, 15_000, 'delivered with a client-credentials token');
    exo.smtpAuthDisabled.add(MAILBOX);
    await b.bridge.upstream.close(); // a new connection must AUTH again
    const id = await send('copier', MAILBOX, 'held@example.org');
    await waitFor(() => b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('Set-CASMailbox')), 15_000, 'held with the fix');
    const list = await run(process.execPath, [...CLI, 'queue', 'list', '--json', '-c', b.configFile]).catch((e: { stdout: string }) => e);
    const row = (JSON.parse(list.stdout) as { id: string; reason?: string | null; lastReply?: string | null; lastError?: string | null }[]).find((r) => r.id === id);
    assert.ok(row, 'listed');
    assert.match(JSON.stringify(row), /5\.7\.139.*Set-CASMailbox -Identity printer@contoso\.com -SmtpClientAuthenticationDisabled \$false/);
    assert.equal(exo.messages.length, 1, 'nothing more was sent');
  });
});
