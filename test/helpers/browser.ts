// Headless Chromium from Debian (/usr/bin/chromium) driven by playwright-core. Never
// downloads a browser. Where chromium is missing the browser tests skip, except in CI
// (XOAUTH2_BRIDGE_REQUIRE_INTEROP=1), where they fail like the other tool-driven tests.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { ROOT } from './bridge.js';

export const CHROMIUM = '/usr/bin/chromium';
export const REQUIRE = process.env.XOAUTH2_BRIDGE_REQUIRE_INTEROP === '1';

/** Why the browser tests cannot run here (then they skip), or null. Throws in CI. */
export function browserMissing(): string | null {
  if (existsSync(CHROMIUM)) return null;
  if (REQUIRE)
    throw new Error(`${CHROMIUM} is missing (apt-get install chromium); XOAUTH2_BRIDGE_REQUIRE_INTEROP=1 requires it`);
  return `${CHROMIUM} not installed`;
}

export async function launchBrowser(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = await mkdtemp(join(tmpdir(), 'xoauth2-bridge-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    // The fake consent page is signed by the throwaway test CA.
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 640 },
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Screenshots of every run go to test-output/screenshots/ (ignored by git); with
 * XOAUTH2_BRIDGE_DOCS_SCREENSHOTS=1 (`npm run screenshots`) the README's copies in docs/ too. */
export async function screenshotPaths(name: string): Promise<string[]> {
  const dir = join(ROOT, 'test-output', 'screenshots');
  await mkdir(dir, { recursive: true });
  const paths = [join(dir, `${name}.png`)];
  if (process.env.XOAUTH2_BRIDGE_DOCS_SCREENSHOTS === '1') {
    await mkdir(join(ROOT, 'docs'), { recursive: true });
    paths.push(join(ROOT, 'docs', `${name}.png`));
  }
  return paths;
}
