// transport auto on a delegated Microsoft account (oauth.type user): the config takes it, the
// sign-in consents to SMTP and Graph at once, each token request names one resource, and the
// token service spends the one rotating refresh token for both resources one request at a
// time (the fake makes each refresh token usable once, so a race shows as invalid_grant).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../../src/config/schema.js';
import { NeedsReauthError, TokenService } from '../../src/oauth/service.js';
import { scopesFor, signInScopesFor } from '../../src/providers/index.js';
import { createLogger } from '../../src/log/logger.js';
import { collect } from '../helpers/oauth.js';
import {
  authorizeManually,
  configIssues as issues,
  fakeMicrosoftApp,
  MS_CONFIG_BASE as base,
  MS_MAILBOX,
  msAccount,
} from '../helpers/microsoft.js';

const MAILBOX = MS_MAILBOX;
const SMTP = 'https://outlook.office.com/SMTP.Send';
const GRAPH = 'https://graph.microsoft.com/Mail.Send';
/** What a delegated sign-in adds so its id_token names who signed in (never in a refresh). */
const OPENID = ['openid', 'profile', 'email'];
/** The delegated transport auto account these checks are about. */
const autoAccount = (extra: Record<string, unknown>) => msAccount({ transport: 'auto', ...extra });

test('config: transport auto is accepted for a delegated Microsoft account; the sign-in asks for SMTP and Graph, each token for one', {
  timeout: 30_000,
}, () => {
  assert.deepEqual(issues({ ...base, accounts: [autoAccount({})] }), []);
  const a = configSchema.parse({ ...base, accounts: [autoAccount({})] }).accounts[0];
  assert.deepEqual(signInScopesFor(a), [SMTP, GRAPH, 'offline_access', ...OPENID]);
  assert.deepEqual(scopesFor(a), [SMTP, 'offline_access'], 'the token the cache holds is the SMTP one');
  const gov = configSchema.parse({ ...base, accounts: [autoAccount({ cloud: 'usgov' })] }).accounts[0];
  assert.deepEqual(signInScopesFor(gov), [SMTP, 'https://graph.microsoft.us/Mail.Send', 'offline_access', ...OPENID]);
  // SMTP with a delegated token cannot send as another mailbox, so auto keeps refusing mailbox:.
  assert.match(
    issues({ ...base, accounts: [autoAccount({ mailbox: 'info@contoso.com' })] }).join('\n'),
    /^accounts\.0\.mailbox: /,
  );
  // Other transports keep their single-resource sign-in.
  const smtp = configSchema.parse({ ...base, accounts: [autoAccount({ transport: 'smtp' })] }).accounts[0];
  assert.deepEqual(signInScopesFor(smtp), [SMTP, 'offline_access', ...OPENID]);
});

async function world() {
  const app = await fakeMicrosoftApp({ name: 'msauto', clientId: '00000000-1111-2222-3333-777777777777' });
  const sink = collect();
  const log = createLogger({ level: 'debug', format: 'json', stream: sink.stream });
  const config = configSchema.parse({
    stateDir: app.stateDir,
    listeners: [{ name: 'local', host: '127.0.0.1', port: 2525 }],
    accounts: [autoAccount({ oauth: app.oauth('user') })],
  });
  return {
    ...app,
    config,
    log,
    logs: sink.text,
    authorize: () => authorizeManually(app, config),
    /** A token service for m365 holding a grant consented for `scopes` (its first refresh token: rt0), stopped after `fn`. */
    withService: async (scopes: string[], fn: (svc: TokenService, rt0: string) => Promise<void>) => {
      const rt0 = app.ms.issueRefreshToken(app.clientId, MAILBOX, scopes);
      const svc = new TokenService({ config, log });
      await svc.init();
      await svc.importRefreshToken('m365', rt0);
      try {
        await fn(svc, rt0);
      } finally {
        svc.stop();
      }
    },
    /** A raw token request to the fake, as any client could send it. */
    tokenRequest: (form: Record<string, string>) =>
      app.post(app.ms.tokenUrl, { client_id: app.clientId, client_secret: app.secret!, ...form }),
  };
}

test('fake identity: one refresh token serves every consented resource; a token request naming two resources is refused with AADSTS28000', {
  timeout: 30_000,
}, async () => {
  const w = await world();
  try {
    const rt = w.ms.issueRefreshToken(w.clientId, MAILBOX, [SMTP, GRAPH]);
    const both = await w.tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: rt,
      scope: `${SMTP} ${GRAPH} offline_access`,
    });
    assert.equal(both.status, 400);
    assert.equal(both.body.error, 'invalid_scope');
    assert.match(String(both.body.error_description), /^AADSTS28000: .*more than one resource/);
    // OpenID scopes may go beside one resource, not beside two.
    const withOpenId = await w.tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: rt,
      scope: `${SMTP} ${GRAPH} offline_access openid profile email`,
    });
    assert.match(String(withOpenId.body.error_description), /^AADSTS28000: /);
    // The refused request did not spend the token.
    const smtp = await w.tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: rt,
      scope: `${SMTP} offline_access`,
    });
    assert.equal(smtp.status, 200, JSON.stringify(smtp.body));
    assert.equal(w.ms.tokenClaims(String(smtp.body.access_token))?.aud, 'https://outlook.office.com');
    const graph = await w.tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: String(smtp.body.refresh_token),
      scope: `${GRAPH} offline_access`,
    });
    assert.equal(graph.status, 200, JSON.stringify(graph.body));
    assert.equal(w.ms.tokenClaims(String(graph.body.access_token))?.aud, 'https://graph.microsoft.com');
    assert.equal(graph.body.scope, `${GRAPH} offline_access`, 'the answer lists the redeemed resource only');
    // The rotation keeps the whole consent: SMTP again from the Graph answer's refresh token.
    const again = await w.tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: String(graph.body.refresh_token),
      scope: `${SMTP} offline_access`,
    });
    assert.equal(again.status, 200, JSON.stringify(again.body));
  } finally {
    await w.close();
  }
});

test('authorize (auto, delegated): consents to SMTP.Send and Graph Mail.Send at once, redeems for SMTP only, checks the Graph consent, stores one refresh token', {
  timeout: 30_000,
}, async () => {
  const w = await world();
  const asked: string[] = [];
  w.ms.on('request', (r: { grantType: string; scope?: string }) => asked.push(`${r.grantType} ${r.scope ?? ''}`));
  try {
    const url = await w.authorize();
    assert.equal(new URL(url).searchParams.get('scope'), `${SMTP} ${GRAPH} offline_access openid profile email`);
    // The redemption names one resource plus the OpenID scopes; the Graph refresh, one resource only.
    assert.deepEqual(asked, [
      `authorization_code ${SMTP} offline_access openid profile email`,
      `refresh_token ${GRAPH} offline_access`,
    ]);
    const rec = await w.stored();
    assert.match(rec?.refreshToken ?? '', /^M\.C5/);
    const svc = new TokenService({ config: w.config, log: w.log });
    await svc.init();
    try {
      assert.equal(
        w.ms.tokenClaims(await svc.getAccessToken('m365', { force: true }))?.aud,
        'https://outlook.office.com',
      );
      const g = w.ms.tokenClaims(await svc.getAccessToken('m365', { resource: 'graph' }));
      assert.deepEqual([g?.aud, g?.scp], ['https://graph.microsoft.com', 'Mail.Send']);
    } finally {
      svc.stop();
    }
    assert.equal(w.ms.requests.filter((r) => !r.ok).length, 0, 'no token request failed');
  } finally {
    await w.close();
  }
});

test('authorize (auto, delegated) refuses a grant without the Graph consent, or without SMTP.Send, and stores nothing', {
  timeout: 30_000,
}, async () => {
  for (const withheld of [GRAPH, SMTP]) {
    const w = await world();
    try {
      w.ms.withheldScopes.add(withheld);
      await assert.rejects(w.authorize(), new RegExp(`${withheld.replace(/[./]/g, '\\$&')}.*nothing was stored`));
      assert.equal(await w.stored(), undefined);
    } finally {
      await w.close();
    }
  }
});

test('token service (auto, delegated): SMTP and Graph tokens asked for at once never race on the refresh token; one chain, saved, and SMTP refreshes go on', {
  timeout: 30_000,
}, async () => {
  const w = await world();
  try {
    const issued: string[] = [];
    await w.withService([SMTP, GRAPH], async (svc, rt0) => {
      issued.push(rt0);
      w.ms.on('issued', (e: { refreshToken?: string }) => e.refreshToken && issued.push(e.refreshToken));
      // Round 1: a forced SMTP refresh, two Graph callers and one SMTP caller, all at once.
      const [, graph, graph2, smtp] = await Promise.all([
        svc.refresh('m365'),
        svc.getAccessToken('m365', { resource: 'graph' }),
        svc.getAccessToken('m365', { resource: 'graph' }),
        svc.getAccessToken('m365'),
      ]);
      assert.equal(w.ms.tokenClaims(smtp)?.aud, 'https://outlook.office.com');
      assert.equal(w.ms.tokenClaims(graph)?.aud, 'https://graph.microsoft.com');
      assert.equal(graph2, graph, 'concurrent Graph callers share one refresh');
      // Round 2: Graph refused its token (force) while SMTP refreshes again.
      const [, graph3] = await Promise.all([
        svc.refresh('m365'),
        svc.getAccessToken('m365', { resource: 'graph', force: true }),
      ]);
      assert.notEqual(graph3, graph);
      assert.equal(w.ms.tokenClaims(graph3)?.aud, 'https://graph.microsoft.com');
      assert.equal(w.ms.tokenClaims(await svc.getAccessToken('m365'))?.aud, 'https://outlook.office.com');
      const refreshes = w.ms.requests.filter((r) => r.grantType === 'refresh_token');
      assert.equal(refreshes.filter((r) => !r.ok).length, 0, 'no invalid_grant: never the same refresh token twice');
      assert.equal(refreshes.length, 4, 'one SMTP and one Graph refresh per round');
      assert.equal(issued.length, 5, 'one chain: each refresh spent the token the previous one issued');
      assert.equal((await w.stored())?.refreshToken, issued.at(-1), 'the last rotated refresh token is on disk');
      await svc.refresh('m365');
      assert.equal((await w.stored())?.refreshToken, issued.at(-1));
      assert.equal(w.ms.requests.filter((r) => !r.ok).length, 0);
    });
    assert.ok(!issued.some((rt) => w.logs().includes(rt)), 'no refresh token in the logs');
  } finally {
    await w.close();
  }
});

test('token service (auto, delegated): a grant without Graph consent -> needs-reauth naming the missing consent; the refresh token is not lost', {
  timeout: 30_000,
}, async () => {
  const w = await world();
  try {
    await w.withService([SMTP], async (svc) => {
      await svc.getAccessToken('m365');
      const kept = (await w.stored())?.refreshToken;
      await assert.rejects(
        svc.getAccessToken('m365', { resource: 'graph' }),
        (e: Error) =>
          e instanceof NeedsReauthError &&
          /https:\/\/graph\.microsoft\.com\/Mail\.Send/.test(e.message) &&
          /AADSTS65001/.test(e.message),
      );
      assert.equal(svc.state('m365'), 'needs-reauth');
      const rec = await w.stored();
      assert.equal(rec?.state, 'needs-reauth');
      assert.match(rec?.lastError ?? '', /Mail\.Send/);
      assert.equal(rec?.refreshToken, kept, 'the stored grant stays for authorize to replace');
      assert.match(
        w.logs(),
        /account m365 needs re-authorization: .*graph\.microsoft\.com\/Mail\.Send.*authorize m365/,
      );
    });
  } finally {
    await w.close();
  }
});

test('token service (auto, delegated): an SMTP refresh queued behind a Graph refresh that finds no consent does not run, nor undo needs-reauth', {
  timeout: 30_000,
}, async () => {
  const w = await world();
  try {
    await w.withService([SMTP], async (svc) => {
      const [graph, smtp] = await Promise.allSettled([
        svc.getAccessToken('m365', { resource: 'graph' }),
        svc.getAccessToken('m365'),
      ]);
      assert.equal(graph.status, 'rejected');
      assert.equal(smtp.status, 'rejected', 'the SMTP refresh waited for the Graph one and did not ask');
      assert.ok((smtp as PromiseRejectedResult).reason instanceof NeedsReauthError);
      assert.equal(w.ms.requests.length, 1, 'one token request: the Graph refresh');
      assert.equal(svc.state('m365'), 'needs-reauth');
      assert.equal((await w.stored())?.state, 'needs-reauth');
    });
  } finally {
    await w.close();
  }
});
