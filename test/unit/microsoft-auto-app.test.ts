// transport auto on an app-only Microsoft account (oauth.type app): its Graph token comes from
// the token service like every other token (getAccessToken with resource 'graph'), by client
// credentials for Graph's .default with the account's own secret: one request for many callers,
// a forced refresh after a 401 shared, an expired secret -> needs-reauth, every request counted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NeedsReauthError, TokenService } from '../../src/oauth/service.js';
import { createLogger } from '../../src/log/logger.js';
import { isLiveSecret } from '../../src/log/redact.js';
import { collect } from '../helpers/oauth.js';
import { fakeMicrosoftApp, MS_MAILBOX } from '../helpers/microsoft.js';

const MAILBOX = MS_MAILBOX;
const SMTP_APP = 'https://outlook.office365.com/.default';
const GRAPH_APP = 'https://graph.microsoft.com/.default';

async function world(opts: { certificate?: boolean } = {}) {
  const app = await fakeMicrosoftApp({
    name: 'msautoapp',
    clientId: '00000000-1111-2222-3333-888888888888',
    certificate: opts.certificate,
  });
  const { ms, dir } = app;
  ms.allowMailbox(app.clientId, MAILBOX);
  const sink = collect();
  const log = createLogger({ level: 'debug', format: 'json', stream: sink.stream });
  const configFor = (extra: Record<string, unknown> = {}) => app.config('app', { transport: 'auto', ...extra });
  const config = configFor();
  const counted: string[] = [];
  const svc = new TokenService({
    config,
    log,
    metrics: { tokenRefresh: (account, ok) => counted.push(`${account} ${ok ? 'ok' : 'failed'}`) },
  });
  await svc.init();
  const graphRequests = () => ms.requests.filter((r) => r.grantType === 'client_credentials' && r.scope === GRAPH_APP);
  return {
    ms,
    clientId: app.clientId,
    secret: app.secret,
    svc,
    counted,
    graphRequests,
    configFor,
    privateKey: () => readFile(join(dir, 'app.key'), 'utf8'),
    logs: sink.text,
    stored: app.stored,
    close: async () => {
      svc.stop();
      await app.close();
    },
  };
}

/** Runs a test in its own world, closed whatever the outcome. */
const inWorld =
  (fn: (w: Awaited<ReturnType<typeof world>>) => Promise<void>, opts?: { certificate?: boolean }) => async () => {
    const w = await world(opts);
    try {
      await fn(w);
    } finally {
      await w.close();
    }
  };

test(
  'token service (auto, app-only): 50 Graph token requests at once make one client-credentials request for Graph; SMTP keeps its own token',
  {
    timeout: 30_000,
  },
  inWorld(async (w) => {
    const tokens = await Promise.all(
      Array.from({ length: 50 }, () => w.svc.getAccessToken('m365', { resource: 'graph' })),
    );
    assert.equal(new Set(tokens).size, 1, 'every caller got the same token');
    assert.equal(w.graphRequests().length, 1, 'one client-credentials request for 50 callers');
    assert.equal(w.ms.requests.length, 1, 'and no other token request');
    const g = w.ms.tokenClaims(tokens[0]);
    assert.deepEqual([g?.aud, g?.roles], ['https://graph.microsoft.com', ['Mail.Send']], "the app's Graph token");
    assert.ok(isLiveSecret(tokens[0]), 'the Graph token is registered with the redactor');
    // Cached: a later caller gets it without a request.
    assert.equal(await w.svc.getAccessToken('m365', { resource: 'graph' }), tokens[0]);
    // The SMTP token is the account's primary one, for Exchange's own resource.
    const smtp = await w.svc.getAccessToken('m365');
    assert.notEqual(smtp, tokens[0]);
    assert.equal(w.ms.tokenClaims(smtp)?.aud, 'https://outlook.office365.com');
    assert.deepEqual(
      w.ms.requests.map((r) => `${r.grantType} ${r.scope} ${r.ok}`),
      [`client_credentials ${GRAPH_APP} true`, `client_credentials ${SMTP_APP} true`],
    );
    assert.deepEqual(w.counted, ['m365 ok', 'm365 ok'], 'both refreshes counted in the metrics');
    assert.equal(w.svc.state('m365'), 'ok');
    assert.ok(!w.logs().includes(tokens[0]) && !w.logs().includes(w.secret!), 'no token or secret in the logs');
  }),
);

test(
  'token service (auto, app-only): a forced Graph refresh (Graph answered 401) is one request, shared by every caller that forces at the same time or just after',
  {
    timeout: 30_000,
  },
  inWorld(async (w) => {
    const first = await w.svc.getAccessToken('m365', { resource: 'graph' });
    const forced = await Promise.all(
      Array.from({ length: 20 }, () => w.svc.getAccessToken('m365', { resource: 'graph', force: true })),
    );
    assert.equal(new Set(forced).size, 1, 'the forced callers share one new token');
    assert.notEqual(forced[0], first, 'a new token, whatever the age of the old one');
    assert.equal(w.graphRequests().length, 2, 'one request for the first token, one for all the forced callers');
    // Another connection that saw the 401 a moment later gets the token just forced, not a third request.
    assert.equal(await w.svc.getAccessToken('m365', { resource: 'graph', force: true }), forced[0]);
    assert.equal(w.graphRequests().length, 2);
    assert.equal(await w.svc.getAccessToken('m365', { resource: 'graph' }), forced[0]);
    assert.ok(!isLiveSecret(first) && isLiveSecret(forced[0]), 'the redactor keeps the live Graph token only');
  }),
);

test(
  'token service (auto, app-only): an expired client secret while on Graph -> needs-reauth naming AADSTS7000222, counted, and no more requests',
  {
    timeout: 30_000,
  },
  inWorld(async (w) => {
    await w.svc.getAccessToken('m365');
    w.ms.expireSecret(w.clientId);
    await assert.rejects(
      w.svc.getAccessToken('m365', { resource: 'graph' }),
      (e: Error) => e instanceof NeedsReauthError && /AADSTS7000222/.test(e.message),
    );
    assert.equal(w.svc.state('m365'), 'needs-reauth', 'the account is held, as for a delegated Graph refresh');
    assert.match(w.svc.status()[0].lastError ?? '', /client secret has expired.*\(AADSTS7000222\)/);
    const rec = await w.stored();
    assert.equal(rec?.state, 'needs-reauth');
    assert.match(rec?.lastError ?? '', /AADSTS7000222/);
    assert.match(w.logs(), /account m365 needs re-authorization: .*AADSTS7000222.*Its mail is held \(not bounced\)/);
    assert.deepEqual(w.counted, ['m365 ok', 'm365 failed'], 'the failed Graph refresh counted in the metrics');
    // A dead grant is not asked again until it is fixed.
    const asked = w.ms.requests.length;
    await assert.rejects(w.svc.getAccessToken('m365', { resource: 'graph', force: true }), NeedsReauthError);
    assert.equal(w.ms.requests.length, asked);
    assert.ok(!w.logs().includes(w.secret!), 'the client secret never reaches the logs');
  }),
);

test(
  'token service (auto, app-only): the Graph endpoint failing backs off like any refresh; the cached token is used meanwhile',
  {
    timeout: 30_000,
  },
  inWorld(async (w) => {
    const g = await w.svc.getAccessToken('m365', { resource: 'graph' });
    await w.ms.close(); // the token endpoint is gone: a network error, not a dead grant
    await assert.rejects(w.svc.getAccessToken('m365', { resource: 'graph', force: true }), /m365/);
    assert.deepEqual(w.counted, ['m365 ok', 'm365 failed']);
    assert.notEqual(w.svc.state('m365'), 'needs-reauth');
    // Backing off: a forced caller is told when the next attempt is, without a request...
    await assert.rejects(w.svc.getAccessToken('m365', { resource: 'graph', force: true }), /next attempt in \d+s/);
    assert.deepEqual(w.counted, ['m365 ok', 'm365 failed'], 'no second request during the backoff');
    // ...and a plain caller keeps the still-valid token.
    assert.equal(await w.svc.getAccessToken('m365', { resource: 'graph' }), g);
  }),
);

test(
  "token service (auto, app-only): a reload that moves the account to another cloud drops the Graph token; the next is asked for that cloud's Graph",
  {
    timeout: 30_000,
  },
  inWorld(async (w) => {
    const g = await w.svc.getAccessToken('m365', { resource: 'graph' });
    assert.equal(await w.svc.getAccessToken('m365', { resource: 'graph' }), g, 'cached while the config stays');
    // oauth is unchanged (authorityHost is explicit): only the Graph the token is for moves.
    w.svc.reload(w.configFor({ cloud: 'usgov' }));
    // The fake identity knows the global Graph only, so the request is refused; what it asked for is the point.
    await assert.rejects(w.svc.getAccessToken('m365', { resource: 'graph' }), /AADSTS1002012/);
    assert.deepEqual(
      w.ms.requests.map((r) => r.scope),
      [GRAPH_APP, 'https://graph.microsoft.us/.default'],
      "a new request, for the US Government cloud's Graph",
    );
  }),
);

test(
  'token service (auto, app-only) with a certificate: the Graph token is asked for with the same signed client assertion as the SMTP one',
  {
    timeout: 30_000,
  },
  inWorld(
    async (w) => {
      const g = await w.svc.getAccessToken('m365', { resource: 'graph' });
      const smtp = await w.svc.getAccessToken('m365');
      assert.equal(w.ms.tokenClaims(g)?.aud, 'https://graph.microsoft.com');
      assert.equal(w.ms.tokenClaims(smtp)?.aud, 'https://outlook.office365.com');
      assert.deepEqual(
        w.ms.requests.map((r) => `${r.scope} ${r.clientAuth} ${r.ok}`),
        [`${GRAPH_APP} assertion true`, `${SMTP_APP} assertion true`],
      );
      const key = (await w.privateKey()).split('\n')[1];
      assert.ok(key && !w.logs().includes(key), 'the private key never reaches the logs');
    },
    { certificate: true },
  ),
);
