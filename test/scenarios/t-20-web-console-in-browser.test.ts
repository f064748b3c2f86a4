// The web console in a real browser (headless Chromium) against a bridge and the fakes: log
// in through a one-time `console-link` link, watch an account turn needs-reauth after its
// grant is revoked, re-authorize through the paste flow, see the held message leave the
// queue; CSRF refusals from the page itself. A Microsoft account signs in with a device code
// instead, the page following the sign-in by itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { startFakeWorld } from '../../src/fakes/world.js';
import { startBridge, sendThroughBridge, message, secretsOf, assertNoSecrets, CLI } from '../helpers/bridge.js';
import { browserMissing, launchBrowser, screenshotPaths } from '../helpers/browser.js';
import { waitFor } from '../helpers/wait.js';
import { startMicrosoftConsole, MS_MAILBOX } from '../helpers/microsoft-console.js';
import type { Page } from 'playwright-core';

const skip = browserMissing() ?? false;
const run = promisify(execFile);

async function shoot(page: Page, name: string): Promise<void> {
  for (const path of await screenshotPaths(name)) await page.screenshot({ path, fullPage: true });
}

async function reloadUntil(page: Page, cond: () => Promise<boolean>, what: string): Promise<void> {
  await waitFor(
    async () => {
      await page.reload();
      return cond();
    },
    15_000,
    what,
  );
}

test('browser: log in with a console-link link, revoked grant -> needs-reauth, Authorize with the pasted redirect URL, held mail leaves the queue', {
  skip,
  timeout: 120_000,
}, async () => {
  const world = await startFakeWorld();
  const b = await startBridge(world, { http: { port: 0, console: true } }, { http: true });
  const browser = await launchBrowser();
  try {
    const base = `http://127.0.0.1:${b.bridge.httpAddress!.port}`;
    const page = await browser.context.newPage();
    const bodies: string[] = [];
    page.on('response', (r) => {
      if (r.url().startsWith(base))
        void r.text().then(
          (t) => bodies.push(t),
          () => {},
        );
    });

    // No password: without a session the page says how to get in, and nothing else.
    await page.goto(`${base}/accounts`);
    assert.match((await page.textContent('main')) ?? '', /xoauth2-bridge console-link/);
    assert.equal(await page.locator('#accounts').count(), 0);
    // The owner asks the daemon for a link (the real CLI over the control socket) and opens it.
    const link = (await run(process.execPath, [...CLI, 'console-link', '-c', b.configFile])).stdout.trim();
    await page.goto(link);
    assert.match(page.url(), /\/accounts$/);
    // The link worked once: opened again (here without the browser's cookie) it opens nothing.
    const reused = await fetch(link, { redirect: 'manual' });
    assert.equal(reused.status, 401);
    assert.match(await reused.text(), /used already or expired/);
    assert.equal(reused.headers.get('set-cookie'), null);
    const stateCell = () => page.textContent('tr[data-account="office"] td.state');
    assert.equal((await stateCell())?.trim(), 'ok');
    assert.equal(await page.locator('#attention').count(), 0, 'no banner while all is well');

    // Google revokes the grant; the next message finds out and is held.
    world.tokens.revoke(world.account.refreshToken);
    world.tokens.expireAccessTokens();
    const sent = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['boss@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'boss@example.org', subject: 'scan' }),
    });
    assert.match(sent.response, /^250 /);
    await reloadUntil(
      page,
      async () => (await stateCell())?.trim() === 'needs-reauth',
      'account needs-reauth on the page',
    );
    assert.match((await page.textContent('#attention')) ?? '', /account office needs re-authorization/);
    assert.match((await page.textContent('tr[data-account="office"] td.held')) ?? '', /1 held \(needs-reauth\)/);
    await shoot(page, 'console-accounts');

    await page.goto(`${base}/queue`);
    assert.match((await page.textContent('#counts [data-state="held"]')) ?? '', /^1 held/);
    const row = page.locator('#messages tbody tr');
    assert.equal(await row.count(), 1);
    assert.match((await row.locator('td.state').textContent()) ?? '', /held.*needs-reauth/s);
    await shoot(page, 'console-queue');

    // CSRF: the page's own form, cookie and origin, but the token removed / replaced.
    // (Strings, not functions: tsx's name helpers do not exist inside the page.)
    const authorizeButton = 'tr[data-account="office"] button:has-text("Authorize")';
    for (const tamper of [
      `document.querySelector('tr[data-account="office"] input[name=csrf]').remove()`,
      `document.querySelector('tr[data-account="office"] input[name=csrf]').value = 'wrong-token'`,
    ]) {
      await page.goto(`${base}/accounts`);
      await page.evaluate(tamper);
      const res = page.waitForResponse((r) => r.request().method() === 'POST');
      await page.click(authorizeButton);
      assert.equal((await res).status(), 403);
      assert.match((await page.textContent('main')) ?? '', /CSRF check failed/);
    }

    // Re-authorize: Authorize -> consent URL -> the fake Google -> redirect to 127.0.0.1:<port>.
    await page.goto(`${base}/accounts`);
    await page.click(authorizeButton);
    assert.match(page.url(), /\/accounts\/office\/authorize$/);
    const consentUrl = (await page.getAttribute('#consent-url', 'href'))!;
    const redirectUri = new URL(new URL(consentUrl).searchParams.get('redirect_uri')!);
    // Nothing listens on that port (the user's browser is usually on another machine): the
    // page fails to load, and the address bar holds the code.
    world.tokens.consentEmail = world.account.email;
    const other = await browser.context.newPage();
    const failed = other.waitForEvent('requestfailed');
    await other.goto(consentUrl).catch((e: Error) => assert.match(e.message, /ERR_CONNECTION_REFUSED/));
    // What the address bar shows: the URL of the navigation that failed.
    const landed = (await failed).url();
    assert.equal(new URL(landed).origin, redirectUri.origin);
    assert.match(landed, /[?&]code=/);
    await other.close();

    await page.fill('#redirect', 'not the address');
    await page.click('#complete');
    assert.match((await page.textContent('#flash')) ?? '', /does not look like the redirect address/);
    await page.fill('#redirect', landed);
    await page.click('#complete');
    assert.match(page.url(), /\/accounts$/);
    assert.match((await page.textContent('#flash')) ?? '', /Account office authorized/);
    assert.equal((await stateCell())?.trim(), 'ok');

    // The held message flows within seconds.
    await world.gmail.waitForMessages(1, 15_000);
    assert.equal(world.gmail.messages[0].rcptTo[0], 'boss@example.org');
    await page.goto(`${base}/queue`);
    await reloadUntil(page, async () => (await page.locator('#no-waiting').count()) === 1, 'queue page empty');
    assert.match((await page.textContent('#counts [data-state="held"]')) ?? '', /^0 held/);
    assert.equal(await page.locator('#attention').count(), 0, 'banner gone');

    const newRt = world.tokens.refreshTokensFor(world.account.email).filter((t) => t !== world.account.refreshToken);
    assertNoSecrets(bodies.join('\n') + b.logs.join('\n'), [
      ...secretsOf(world),
      new URL(link).searchParams.get('link')!,
      ...newRt,
    ]);
  } finally {
    await browser.close();
    await b.stop();
    await world.close();
  }
});

test('browser: Microsoft account, Sign in with a code: read the code off the page, approve it at the identity platform, the page turns to success by itself', {
  skip,
  timeout: 120_000,
}, async () => {
  const x = await startMicrosoftConsole();
  const browser = await launchBrowser();
  try {
    const base = `http://127.0.0.1:${x.b.bridge.httpAddress!.port}`;
    const page = await browser.context.newPage();
    const bodies: string[] = [];
    const cspViolations: string[] = [];
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    page.on('response', (r) => {
      if (r.url().startsWith(base))
        void r.text().then(
          (t) => bodies.push(t),
          () => {},
        );
    });
    const link = (await run(process.execPath, [...CLI, 'console-link', '-c', x.b.configFile])).stdout.trim();
    await page.goto(link);
    assert.match(page.url(), /\/accounts$/);

    // m365's grant is gone: its next message is held, the account needs re-authorization.
    assert.match(await x.sendAsCopier('scan'), /^250 /);
    const stateCell = () => page.textContent('tr[data-account="m365"] td.state');
    await reloadUntil(page, async () => (await stateCell())?.trim() === 'needs-reauth', 'm365 needs-reauth');

    await page.click('tr[data-account="m365"] button:has-text("Authorize")');
    assert.match(page.url(), /\/accounts\/m365\/authorize$/);
    await page.click('#device-start');
    assert.match(page.url(), /\/accounts\/m365\/authorize\/device$/);
    const userCode = ((await page.textContent('#user-code')) ?? '').trim();
    assert.match(userCode, /^[A-Z0-9]{6,}$/);
    assert.equal(await page.getAttribute('#verification-url', 'href'), x.ms.deviceLoginUrl);
    assert.equal(((await page.textContent('#device-status')) ?? '').trim(), 'Waiting for you to enter the code…');
    await shoot(page, 'console-device-code');
    // The page checks again by itself (no script: a refresh the CSP allows).
    await page.waitForEvent('framenavigated', { timeout: 15_000 });
    assert.equal(((await page.textContent('#user-code')) ?? '').trim(), userCode, 'the same code after a refresh');

    // The user enters the code at Microsoft's device login (the fake's) on another device.
    const approved = await new Promise<number>((resolve, reject) => {
      const req = https.request(
        x.ms.deviceLoginUrl,
        {
          method: 'POST',
          ca: readFileSync(x.world.caFile),
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end(new URLSearchParams({ user_code: userCode }).toString());
    });
    assert.equal(approved, 200);
    // Nobody touches the page: it turns to success on its own.
    await page.waitForSelector('#device-status.ok-banner', { timeout: 30_000 });
    assert.equal(
      ((await page.textContent('#device-status')) ?? '').trim(),
      'Account m365 authorized as printer@contoso.com; its held mail is being sent.',
    );
    await shoot(page, 'console-device-done');

    await waitFor(() => x.exo.messages.length === 1, 20_000, 'the held message at Exchange');
    assert.equal(x.exo.messages[0].authUser, MS_MAILBOX);
    await page.goto(`${base}/accounts`);
    assert.equal((await stateCell())?.trim(), 'ok');
    assert.deepEqual(cspViolations, []);

    const deviceCodes = x.ms.requests.filter((r) => r.grantType === 'devicecode').map((r) => r.deviceCode!);
    assert.equal(deviceCodes.length, 1);
    assertNoSecrets(bodies.join('\n') + x.b.logs.join('\n'), [
      ...deviceCodes,
      ...x.refreshTokens,
      ...secretsOf(x.world),
      new URL(link).searchParams.get('link')!,
    ]);
  } finally {
    await browser.close();
    await x.close();
  }
});
