// A daemon with the web console, a Google account (`office`, the fake world's) and a Microsoft
// delegated account (`m365`, fake Exchange over SMTP, SMTP user `copier`) whose stored grant
// the identity platform no longer knows: its first message turns it needs-reauth and is held.
// For the console's device-code sign-in (t-19 over HTTP, t-20 in a browser).
import { startFakeWorld, bridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { FakeMicrosoftIdentity } from '../../src/fakes/microsoftIdentity.js';
import { FakeExchange } from '../../src/fakes/exchange.js';
import { message, sendThroughBridge, startBridge, type RunningBridge } from './bridge.js';

export const MS_MAILBOX = 'printer@contoso.com';

export interface MicrosoftConsole {
  world: FakeWorld;
  ms: FakeMicrosoftIdentity;
  exo: FakeExchange;
  /** `stop()` may be called by the test and again by close(). */
  b: RunningBridge;
  /** Refresh tokens the identity platform issued (to scan pages and logs for). */
  refreshTokens: string[];
  /** The copier sends one message as the mailbox to boss@example.org; resolves the reply to DATA. */
  sendAsCopier(subject: string): Promise<string>;
  close(): Promise<void>;
}

export async function startMicrosoftConsole(): Promise<MicrosoftConsole> {
  const world = await startFakeWorld();
  const ms = await FakeMicrosoftIdentity.start({ pki: world.pki });
  const exo = await FakeExchange.start({ pki: world.pki, identity: ms });
  ms.deviceIntervalSec = 1;
  ms.consentEmail = MS_MAILBOX;
  const clientId = '00000000-aaaa-bbbb-cccc-0000000000d1';
  const secret = `Dv8Q~${Math.random().toString(36).slice(2)}`;
  ms.registerApp(clientId, secret);
  const refreshTokens: string[] = [];
  ms.on('issued', (e: { refreshToken?: string }) => {
    if (e.refreshToken) refreshTokens.push(e.refreshToken);
  });
  const b = await startBridge(
    world,
    {
      http: { port: 0, console: true },
      queue: { retry: ['300ms'] },
      accounts: [
        (bridgeConfig(world).accounts as Record<string, unknown>[])[0],
        {
          name: 'm365',
          provider: 'microsoft',
          email: MS_MAILBOX,
          oauth: ms.accountOAuth('user', clientId, { clientSecret: secret }, world.caFile),
          upstream: { host: 'localhost', port: exo.port, caFile: world.caFile },
        },
      ],
      users: [
        { username: world.user.username, passwordHash: world.user.passwordHash, account: world.account.name },
        { username: 'copier', passwordHash: world.user.passwordHash, account: 'm365' },
      ],
    },
    { http: true },
  );
  const stopOnce = b.stop;
  let stopping: Promise<void> | undefined;
  b.stop = () => (stopping ??= stopOnce());
  const close = async () => {
    await b.stop();
    await exo.close();
    await ms.close();
    await world.close();
  };
  try {
    await b.bridge.tokens.importRefreshToken('m365', 'M.C5_BAY.grant-the-platform-no-longer-knows');
  } catch (e) {
    await close();
    throw e;
  }
  const sendAsCopier = async (subject: string) =>
    (
      await sendThroughBridge({
        port: b.port,
        user: 'copier',
        pass: world.user.password,
        from: MS_MAILBOX,
        to: ['boss@example.org'],
        raw: message({ from: MS_MAILBOX, to: 'boss@example.org', subject }),
      })
    ).response;
  return { world, ms, exo, b, refreshTokens, sendAsCopier, close };
}
