// transport graph in the config and its scopes: the key-path errors, upstream.apiUrl's
// default, the scopes derived for delegated / app-only / shared mailbox, `authorize` asking
// for Graph's Mail.Send and refusing a grant without it (nothing stored), and the Bcc quoting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../../src/config/schema.js';
import { TokenService } from '../../src/oauth/service.js';
import { scopesFor } from '../../src/providers/index.js';
import { nullLogger } from '../../src/log/logger.js';
import { graphBccField } from '../../src/upstream/graph/envelope.js';
import { quoteLocalPart } from '../../src/upstream/addressQuote.js';
import { maxMessageBytes } from '../../src/upstream/router.js';
import { GRAPH_MAX_MESSAGE, GRAPH_MAX_REQUEST } from '../../src/upstream/graph/size.js';
import { GMAIL_API_MAX_BYTES } from '../../src/upstream/gmail-api/index.js';
import {
  authorizeManually,
  configIssues as issues,
  fakeMicrosoftApp,
  MS_CONFIG_BASE as base,
  msAccount,
} from '../helpers/microsoft.js';

test('config: graph is for Microsoft, gmail-api/auto for Google, each refused elsewhere with its key path; apiUrl defaults per provider', () => {
  assert.deepEqual(issues({ ...base, accounts: [msAccount({ transport: 'graph' })] }), []);
  const cfg = configSchema.parse({ ...base, accounts: [msAccount({ transport: 'graph' })] });
  assert.equal(cfg.accounts[0].upstream.apiUrl, 'https://graph.microsoft.com');
  assert.equal(
    configSchema.parse({
      ...base,
      accounts: [msAccount({ transport: 'graph', upstream: { apiUrl: 'https://graph.microsoft.us' } })],
    }).accounts[0].upstream.apiUrl,
    'https://graph.microsoft.us',
  );
  assert.deepEqual(issues({ ...base, accounts: [msAccount({ transport: 'gmail-api' })] }), [
    'accounts.0.transport: transport gmail-api is for Google accounts only; Microsoft accounts send over SMTP (transport smtp) or Microsoft Graph (transport graph)',
  ]);
  const google = {
    name: 'g',
    email: 'a@example.com',
    transport: 'graph',
    oauth: { type: 'user', clientId: 'x', clientSecret: 'y' },
  };
  assert.deepEqual(issues({ ...base, accounts: [google] }), [
    'accounts.0.transport: transport graph is Microsoft Graph, for provider microsoft; a Google account uses smtp, gmail-api or auto',
  ]);
  assert.equal(
    configSchema.parse({ ...base, accounts: [{ ...google, transport: 'gmail-api' }] }).accounts[0].upstream.apiUrl,
    'https://gmail.googleapis.com',
  );
  assert.deepEqual(issues({ ...base, accounts: [msAccount({ mailbox: 'info@contoso.com' })] }), [
    'accounts.0.mailbox: mailbox (send from another mailbox) is for transport graph, or app-only (oauth.type app) Microsoft SMTP; remove it or set transport: graph',
  ]);
  assert.deepEqual(
    issues({
      ...base,
      accounts: [
        msAccount({
          mailbox: 'info@contoso.com',
          oauth: { type: 'app', tenant: 'contoso.com', clientId: 'abc', clientSecret: 's' },
        }),
      ],
    }),
    [],
    'app-only SMTP may name another mailbox',
  );
  assert.deepEqual(
    issues({ ...base, accounts: [msAccount({ transport: 'graph', upstream: { largeMessages: 'yes' } })] }).length,
    1,
  );
});

test('scopes: one resource per token; delegated Mail.Send (+ Mail.Send.Shared for another mailbox), app-only graph .default', () => {
  const parse = (extra: Record<string, unknown>) =>
    configSchema.parse({ ...base, accounts: [msAccount(extra)] }).accounts[0];
  assert.deepEqual(scopesFor(parse({ transport: 'graph' })), [
    'https://graph.microsoft.com/Mail.Send',
    'offline_access',
  ]);
  assert.deepEqual(scopesFor(parse({ transport: 'graph', mailbox: 'info@contoso.com' })), [
    'https://graph.microsoft.com/Mail.Send.Shared',
    'offline_access',
  ]);
  assert.deepEqual(scopesFor(parse({ transport: 'graph', upstream: { largeMessages: true } })), [
    'https://graph.microsoft.com/Mail.Send',
    'https://graph.microsoft.com/Mail.ReadWrite',
    'offline_access',
  ]);
  assert.deepEqual(
    scopesFor(
      parse({ transport: 'graph', oauth: { type: 'app', tenant: 'contoso.com', clientId: 'abc', clientSecret: 's' } }),
    ),
    ['https://graph.microsoft.com/.default'],
  );
  assert.deepEqual(scopesFor(parse({})), ['https://outlook.office.com/SMTP.Send', 'offline_access']);
  assert.deepEqual(
    scopesFor(parse({ oauth: { type: 'app', tenant: 'contoso.com', clientId: 'abc', clientSecret: 's' } })),
    ['https://outlook.office365.com/.default'],
  );
});

async function msWorld() {
  const app = await fakeMicrosoftApp({ name: 'graphauth', clientId: '00000000-1111-2222-3333-666666666666' });
  const config = app.config('user', { transport: 'graph' });
  return { ...app, config, run: () => authorizeManually(app, config) };
}

test('authorize with transport graph asks for Graph Mail.Send; the stored grant gets a token for https://graph.microsoft.com', async () => {
  const w = await msWorld();
  try {
    const url = await w.run();
    assert.equal(
      new URL(url).searchParams.get('scope'),
      'https://graph.microsoft.com/Mail.Send offline_access openid profile email',
    );
    assert.match((await w.stored()).refreshToken ?? '', /^M\.C5/);
    const svc = new TokenService({ config: w.config, log: nullLogger });
    await svc.init();
    try {
      const claims = w.ms.tokenClaims(await svc.getAccessToken('m365', { force: true }));
      assert.equal(claims?.aud, 'https://graph.microsoft.com');
      assert.equal(claims?.scp, 'Mail.Send');
    } finally {
      svc.stop();
    }
  } finally {
    await w.close();
  }
});

test('authorize refuses a grant without the Graph scope and stores nothing', async () => {
  const w = await msWorld();
  try {
    w.ms.withheldScopes.add('https://graph.microsoft.com/Mail.Send');
    await assert.rejects(w.run(), /the grant lacks https:\/\/graph\.microsoft\.com\/Mail\.Send .*nothing was stored/);
    assert.equal(await w.stored(), undefined);
  } finally {
    await w.close();
  }
});

test('Bcc for Graph: local parts that are not dot-atoms are quoted (RFC 5322)', () => {
  assert.equal(quoteLocalPart('plain.name'), 'plain.name');
  assert.equal(quoteLocalPart('john doe'), '"john doe"');
  assert.equal(quoteLocalPart('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(quoteLocalPart('x..y'), '"x..y"');
  assert.equal(
    graphBccField(['john doe@example.org', 'b@example.org']),
    'Bcc: <"john doe"@example.org>,\r\n <b@example.org>\r\n',
  );
});

test('cloud: one table sets the sign-in host, the Graph host and the Graph scopes; explicit keys win; Microsoft only', () => {
  const parse = (extra: Record<string, unknown>) =>
    configSchema.parse({ ...base, accounts: [msAccount({ transport: 'graph', ...extra })] }).accounts[0];
  const expect = {
    global: ['https://login.microsoftonline.com', 'https://graph.microsoft.com'],
    usgov: ['https://login.microsoftonline.us', 'https://graph.microsoft.us'],
    dod: ['https://login.microsoftonline.us', 'https://dod-graph.microsoft.us'],
    china: ['https://login.chinacloudapi.cn', 'https://microsoftgraph.chinacloudapi.cn'],
  };
  for (const [cloud, [login, graph]] of Object.entries(expect)) {
    const a = parse({ cloud });
    assert.equal(a.oauth.type === 'user' && a.oauth.tokenUrl, `${login}/contoso.com/oauth2/v2.0/token`, cloud);
    assert.equal(a.oauth.type === 'user' && a.oauth.authUrl, `${login}/contoso.com/oauth2/v2.0/authorize`, cloud);
    assert.equal(a.upstream.apiUrl, graph, cloud);
    assert.deepEqual(scopesFor(a), [`${graph}/Mail.Send`, 'offline_access'], cloud);
    assert.deepEqual(
      scopesFor(parse({ cloud, oauth: { type: 'app', tenant: 'contoso.com', clientId: 'abc', clientSecret: 's' } })),
      [`${graph}/.default`],
      cloud,
    );
  }
  const own = parse({
    cloud: 'usgov',
    oauth: { type: 'user', tenant: 'contoso.com', clientId: 'abc', authorityHost: 'https://127.0.0.1:9' },
    upstream: { apiUrl: 'https://localhost:8' },
  });
  assert.equal(own.oauth.type === 'user' && own.oauth.tokenUrl, 'https://127.0.0.1:9/contoso.com/oauth2/v2.0/token');
  assert.equal(own.upstream.apiUrl, 'https://localhost:8');
  assert.deepEqual(issues({ ...base, accounts: [msAccount({ cloud: 'mars' })] }).length, 1);
  assert.deepEqual(
    issues({
      ...base,
      accounts: [
        {
          name: 'g',
          email: 'a@example.com',
          cloud: 'usgov',
          oauth: { type: 'user', clientId: 'x', clientSecret: 'y' },
        },
      ],
    }),
    ['accounts.0.cloud: cloud (Microsoft national clouds) is for provider microsoft only; remove it'],
  );
});

test('config: transport auto on a Microsoft account takes delegated and app-only sign-in', () => {
  assert.deepEqual(issues({ ...base, accounts: [msAccount({ transport: 'auto' })] }), []);
  assert.deepEqual(
    issues({
      ...base,
      accounts: [
        msAccount({
          transport: 'auto',
          oauth: { type: 'app', tenant: 'contoso.com', clientId: 'abc', clientSecret: 's' },
        }),
      ],
    }),
    [],
  );
});

test('maxMessageBytes: graph takes what fits 4 MB as base64 (150 MB with largeMessages), gmail-api its API limit, SMTP none', () => {
  const acct = (a: Record<string, unknown>) => configSchema.parse({ ...base, accounts: [a] }).accounts[0];
  const google = { name: 'g', email: 'a@example.com', oauth: { type: 'user', clientId: 'x', clientSecret: 'y' } };
  const graph = maxMessageBytes(acct(msAccount({ transport: 'graph' })));
  assert.equal(graph?.bytes, 3 * 1024 * 1024);
  assert.ok(4 * Math.ceil(graph!.bytes / 3) <= GRAPH_MAX_REQUEST, 'the limit fits the request as base64');
  assert.match(
    graph!.reason,
    /Microsoft Graph sendMail limit 3145728 bytes; upstream\.largeMessages raises it to 150 MB/,
  );
  const large = maxMessageBytes(acct(msAccount({ transport: 'graph', upstream: { largeMessages: true } })));
  assert.equal(large?.bytes, GRAPH_MAX_MESSAGE);
  assert.equal(maxMessageBytes(acct({ ...google, transport: 'gmail-api' }))?.bytes, GMAIL_API_MAX_BYTES);
  assert.equal(maxMessageBytes(acct(msAccount({ transport: 'smtp' }))), null);
  assert.equal(maxMessageBytes(acct({ ...google, transport: 'auto' })), null);
});
